#!/usr/bin/env bash
# FlashAttention speed on one GPU: ferrotron's kernels beside PyTorch SDPA's flash and cuDNN
# backends, in one run on one machine.
#   usage (repository root, GPU machine): scripts/gpu-bench-attention.sh [PACK_DIR]  (default .gpu/pack)
# Needs PACK_DIR from scripts/gpu-pack.sh (the binary, and attention_bench.py copied from
# ../shared/baselines). First attention_bench.py (flash and cuDNN backends only; its shapes
# B16 H16 S1024 D64 ... B1 H16 S16384 D128, causal and not; the median of 20 after 5 warm-ups,
# CUDA events) writes sdpa.json; then `ferrotron bench attention --sdpa-json sdpa.json` times ours
# on the same shapes and prints the three side by side (TFLOP/s by the FlashAttention convention:
# forward 4·B·H·S²·D, halved when causal; backward 2.5x forward).
# Caps: ATTN_BENCH_SDPA_CAP_S (default 120 s) and ATTN_BENCH_OURS_CAP_S (90 s), within the deadline
# of scripts/gpu-budget.sh when a caller set one. Without the SDPA figures ours still runs.
# Prints the record; with $OUT set also writes $OUT/attention-bench.md and $OUT/sdpa.json.
# Exit status 1 when either side failed.
set -uo pipefail
. "$(dirname "$0")/gpu-env.sh" "${1:-.gpu/pack}"
. "$(dirname "$0")/gpu-budget.sh"
pack="$(cd "${1:-.gpu/pack}" && pwd)"
work="$(mktemp -d)"
sdpa_rc=2
if [ -f "$pack/attention_bench.py" ]; then
  capped "${ATTN_BENCH_SDPA_CAP_S:-120}" env LD_LIBRARY_PATH="$GPU_ENV_HOST_LD_LIBRARY_PATH" python3 -c '
import sys
sys.path.insert(0, sys.argv[1])
import attention_bench as ab
ab.BACKENDS = {k: ab.BACKENDS[k] for k in ("flash", "cudnn")}
sys.argv = ["attention_bench.py", "--out", sys.argv[2]]
ab.main()' "$pack" "$work/sdpa.json" > "$work/sdpa.log" 2>&1
  sdpa_rc=$?
else
  echo "gpu-bench-attention: $pack/attention_bench.py is missing (gpu-pack.sh copies it from ../shared/baselines)" > "$work/sdpa.log"
fi
sdpa_arg=()
[ -s "$work/sdpa.json" ] && sdpa_arg=(--sdpa-json "$work/sdpa.json")
capped "${ATTN_BENCH_OURS_CAP_S:-90}" "$FERROTRON_BIN" bench attention "${sdpa_arg[@]}" > "$work/ours.log" 2>&1
ours_rc=$?
{
  echo "# gpu-bench-attention $(date -u +%Y-%m-%d)"
  echo
  echo "- command: \`bash scripts/gpu-bench-attention.sh${1:+ $1}\`"
  echo "- commit: $(cat "$pack/COMMIT" 2>/dev/null || echo unknown)"
  echo "- device: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)"
  echo "- result: PyTorch SDPA (attention_bench.py, flash and cuDNN) exit $sdpa_rc; \`ferrotron bench attention\` exit $ours_rc"
  echo
  echo '```'
  cat "$work/ours.log"
  echo '```'
  echo
  echo "PyTorch SDPA, as attention_bench.py printed it:"
  echo
  echo '```'
  grep -v Warning "$work/sdpa.log"
  echo '```'
} | tee "${OUT:-$work}/attention-bench.md"
[ -n "${OUT:-}" ] && [ -f "$work/sdpa.json" ] && cp "$work/sdpa.json" "$OUT/sdpa.json"
[ "$sdpa_rc" = 0 ] && [ "$ours_rc" = 0 ]
