#!/usr/bin/env bash
# Runs the GPU test suite from prebuilt test executables (the GPU machine has no cargo).
#   usage: scripts/gpu-check.sh DIR [extra libtest args...]
# Build them on the dev machine:  cargo test -p ferrotron-kernels --no-run  (the test profile is
# opt-level 3), copy target/debug/deps/<test>-<hash> into DIR (e.g. cuda_ops, nvrtc_compile).
# Each executable runs with --include-ignored --test-threads=1 --nocapture; the "CUDA-OP" lines the
# tests print become a markdown table (on stdout, and in $OUT/gpu-check.md when $OUT is set).
# Exit status: non-zero when any executable fails or DIR holds none.
set -uo pipefail
dir="${1:?usage: scripts/gpu-check.sh DIR [libtest args]}"
shift
# cudarc dlopens libcuda / libnvrtc / libcublasLt by name: put the toolkit's libraries on the path.
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
  [ -d "$d" ] && export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
done
[ -d /usr/local/cuda/include ] && export FERROTRON_NVRTC_INCLUDE="${FERROTRON_NVRTC_INCLUDE:-/usr/local/cuda/include}"
export FERROTRON_REQUIRE_NVRTC=1
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
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | sed 's/^/device: /'
{
  echo "| op | dtype | rel. error |"
  echo "| --- | --- | --- |"
  grep -o 'CUDA-OP .*' "$log" | awk '{sub("rel=", "", $4); print "| " $2 " | " $3 " | " $4 " |"}'
  echo
  grep -o 'CUDA-BENCH .*' "$log" | sed 's/^CUDA-BENCH /bench: /'
  echo
  grep -E '^test result:|^test .* FAILED|panicked' "$log"
} | tee "$table"
[ -n "${OUT:-}" ] && cp "$log" "$OUT/gpu-check.log"
if [ "$ran" -eq 0 ]; then echo "gpu-check: no test executables in $dir" >&2; exit 1; fi
if [ "${#failed[@]}" -gt 0 ]; then echo "gpu-check: FAILED: ${failed[*]}" >&2; exit 1; fi
echo "gpu-check: all $ran executable(s) passed"
