#!/usr/bin/env bash
# Runs the GPU test suite from prebuilt test executables (the GPU machine has no cargo), in the
# repository root.
#   usage: scripts/gpu-check.sh DIR [extra libtest args...]     (DIR: e.g. .gpu/pack/tests)
#   FLASH_CASES=DIR: FlashAttention cases from scripts/attention_vs_sdpa.py (made here when unset)
# Build them on the dev machine with scripts/gpu-pack.sh (also packs the release binary and the
# Open MPI runtime it links; scripts/gpu-env.sh puts them on the paths).
# Each executable runs with --include-ignored --test-threads=1 --nocapture; the "CUDA-OP" lines the
# tests print become a markdown table, under a header naming the command, the packed commit, the
# device and the result (on stdout, and in $OUT/gpu-check.md when $OUT is set: a docs/gpu-runs
# record as it stands).
# Exit status: non-zero when any executable fails or DIR holds none.
set -uo pipefail
dir="${1:?usage: scripts/gpu-check.sh DIR [libtest args]}"
shift
# CUDA, NCCL and the packed Open MPI on the paths; tests find this tree and the packed binary.
. "$(dirname "$0")/gpu-env.sh" "${FERROTRON_PACK:-.gpu/pack}"
export FERROTRON_REQUIRE_NVRTC=1
# The FlashAttention correctness test reads fresh cases (random inputs, fp64 reference, SDPA's bf16
# errors) that PyTorch makes on this GPU; make them unless FLASH_CASES names a set already.
if [ -z "${FLASH_CASES:-}" ]; then
  export FLASH_CASES="$(mktemp -d)"
  if python3 "$(dirname "$0")/attention_vs_sdpa.py" --out "$FLASH_CASES" > "$FLASH_CASES/make.log" 2>&1; then
    head -1 "$FLASH_CASES/make.log"
  else
    echo "gpu-check: could not make FlashAttention cases (python3 with torch needed): $(tail -1 "$FLASH_CASES/make.log")" >&2
  fi
fi
log="$(mktemp)"
table=/dev/null
[ -n "${OUT:-}" ] && table="$OUT/gpu-check.md"
failed=()
ran=0
for exe in "$dir"/*; do
  [ -f "$exe" ] && [ -x "$exe" ] || continue
  ran=$((ran + 1))
  echo "=== $(basename "$exe")"
  if ! "$exe" --include-ignored --test-threads=1 --nocapture "$@" 2>&1 | tee -a "$log"; then
    failed+=("$(basename "$exe")")
  fi
done
pack_dir="${FERROTRON_PACK:-.gpu/pack}"
{
  echo "# gpu-check $(date -u +%Y-%m-%d)"
  echo
  echo "- command: \`bash scripts/gpu-check.sh $dir${*:+ $*}\` (executables from scripts/gpu-pack.sh)"
  echo "- commit: $(cat "$pack_dir/COMMIT" 2>/dev/null || echo unknown)"
  echo "- device: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)"
  echo "- result: $ran executable(s), ${#failed[@]} failed${failed[*]:+: ${failed[*]}}"
  echo
  echo "| op | dtype | rel. error |"
  echo "| --- | --- | --- |"
  grep -o 'CUDA-OP .*' "$log" | awk '{sub("rel=", "", $4); print "| " $2 " | " $3 " | " $4 " |"}'
  echo
  grep -o 'CUDA-BENCH .*' "$log" | sed 's/^CUDA-BENCH /bench: /'
  echo
  grep -o 'GPU-TRAIN .*' "$log" | sed 's/^GPU-TRAIN /- /'
  echo
  grep -E '^test result:|^test .* FAILED|panicked' "$log"
} | tee "$table"
[ -n "${OUT:-}" ] && cp "$log" "$OUT/gpu-check.log"
if [ "$ran" -eq 0 ]; then echo "gpu-check: no test executables in $dir" >&2; exit 1; fi
if [ "${#failed[@]}" -gt 0 ]; then echo "gpu-check: FAILED: ${failed[*]}" >&2; exit 1; fi
echo "gpu-check: all $ran executable(s) passed"
