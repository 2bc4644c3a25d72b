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
# Time: each executable runs under a cap (GPU_CHECK_EXE_CAP_S, default 240 s; making the cases 120
# s) within the deadline of scripts/gpu-budget.sh when a caller set one (scripts/gpu-session.sh);
# one that is stopped, or not started for lack of time, is recorded as such and the rest still run.
# The log grows in $OUT/gpu-check.log as the tests run, so a call cut short still returns it.
# Exit status: non-zero when any executable fails, is stopped or not run, or DIR holds none.
set -uo pipefail
dir="${1:?usage: scripts/gpu-check.sh DIR [libtest args]}"
shift
# CUDA, NCCL and the packed Open MPI on the paths; tests find this tree and the packed binary.
. "$(dirname "$0")/gpu-env.sh" "${FERROTRON_PACK:-.gpu/pack}"
. "$(dirname "$0")/gpu-budget.sh"
export FERROTRON_REQUIRE_NVRTC=1
exe_cap="${GPU_CHECK_EXE_CAP_S:-240}"
# The FlashAttention correctness test reads fresh cases (random inputs, fp64 reference, SDPA's bf16
# errors) that PyTorch makes on this GPU; make them unless FLASH_CASES names a set already.
if [ -z "${FLASH_CASES:-}" ]; then
  export FLASH_CASES="$(mktemp -d)"
  if capped 120 env LD_LIBRARY_PATH="$GPU_ENV_HOST_LD_LIBRARY_PATH" python3 "$(dirname "$0")/attention_vs_sdpa.py" --out "$FLASH_CASES" > "$FLASH_CASES/make.log" 2>&1; then
    head -1 "$FLASH_CASES/make.log"
  else
    echo "gpu-check: could not make FlashAttention cases (python3 with torch needed): $(tail -1 "$FLASH_CASES/make.log")" >&2
  fi
fi
[ -n "${OUT:-}" ] && [ -f "$FLASH_CASES/make.log" ] && cp "$FLASH_CASES/make.log" "$OUT/flash-cases.log"
log="$(mktemp)"
table=/dev/null
if [ -n "${OUT:-}" ]; then
  log="$OUT/gpu-check.log"
  table="$OUT/gpu-check.md"
  : > "$log"
fi
failed=()
stopped=()
skipped=()
ran=0
# Quick kernel-level executables first, so that a session short of time still gets them; the
# training runs next; the benchmark last. Executables not named here follow in name order.
# GPU_CHECK_ONLY="name ...": those executables alone (a re-run of what a session changed).
order=(cuda_ops cuda_optimizer cuda_flash_backend flash_attn gpu_tensor_parallel gpu_training train_vs_torch cuda_bench)
exes=()
for n in "${order[@]}"; do [ -f "$dir/$n" ] && exes+=("$dir/$n"); done
for exe in "$dir"/*; do
  case " ${exes[*]} " in *" $exe "*) ;; *) exes+=("$exe") ;; esac
done
if [ -n "${GPU_CHECK_ONLY:-}" ]; then
  only=()
  for exe in "${exes[@]}"; do
    case " $GPU_CHECK_ONLY " in *" $(basename "$exe") "*) only+=("$exe") ;; esac
  done
  exes=("${only[@]}")
fi
for exe in "${exes[@]}"; do
  [ -f "$exe" ] && [ -x "$exe" ] || continue
  ran=$((ran + 1))
  name="$(basename "$exe")"
  echo "=== $name" | tee -a "$log"
  start=$(date +%s)
  capped "$exe_cap" "$exe" --include-ignored --test-threads=1 --nocapture "$@" 2>&1 | tee -a "$log"
  rc=${PIPESTATUS[0]}
  echo "=== $name: exit $rc after $(($(date +%s) - start)) s" | tee -a "$log"
  case "$rc" in
    0) ;;
    124 | 137) stopped+=("$name") ;;
    125) skipped+=("$name") ;;
    *) failed+=("$name") ;;
  esac
done
bad=$((${#failed[@]} + ${#stopped[@]} + ${#skipped[@]}))
pack_dir="${FERROTRON_PACK:-.gpu/pack}"
{
  echo "# gpu-check $(date -u +%Y-%m-%d)"
  echo
  echo "- command: \`${GPU_CHECK_ONLY:+GPU_CHECK_ONLY=\"$GPU_CHECK_ONLY\" }bash scripts/gpu-check.sh $dir${*:+ $*}\` (executables from scripts/gpu-pack.sh)"
  echo "- commit: $(cat "$pack_dir/COMMIT" 2>/dev/null || echo unknown)"
  echo "- device: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)"
  echo "- result: $ran executable(s), ${#failed[@]} failed${failed[*]:+: ${failed[*]}}${stopped[*]:+; stopped at the time cap: ${stopped[*]}}${skipped[*]:+; not run, time budget spent: ${skipped[*]}}"
  echo "- FlashAttention cases: $(ls "$FLASH_CASES"/*.safetensors 2>/dev/null | wc -l) made by attention_vs_sdpa.py" \
    "($(head -1 "$FLASH_CASES/make.log" 2>/dev/null); last line: $(tail -1 "$FLASH_CASES/make.log" 2>/dev/null))"
  echo
  echo "| op | dtype | rel. error |"
  echo "| --- | --- | --- |"
  grep -o 'CUDA-OP .*' "$log" | awk '{sub("rel=", "", $4); print "| " $2 " | " $3 " | " $4 " |"}'
  echo
  grep -o 'CUDA-BENCH .*' "$log" | sed 's/^CUDA-BENCH /bench: /'
  echo
  grep -o 'GPU-TRAIN .*' "$log" | sed 's/^GPU-TRAIN /- /'
  echo
  echo "Per executable (exit status, time, libtest summary) and the failing tests:"
  echo
  echo '```'
  grep -E '^=== .*: exit|^test result:' "$log"
  # libtest's closing "failures:" list names each failed test (4-space indent); with --nocapture
  # that is the only place the name and the verdict meet.
  awk '/^=== / && !/: exit/ { exe = $2 } /^failures:$/ { f = 1; next }
       f && /^    [^ ]+$/ { print "FAILED " exe " " $1; next } { f = 0 }' "$log"
  echo '```'
} | tee "$table"
if [ "$ran" -eq 0 ]; then echo "gpu-check: no test executables in $dir" >&2; exit 1; fi
if [ "$bad" -gt 0 ]; then echo "gpu-check: FAILED: ${failed[*]} ${stopped[*]} ${skipped[*]}" >&2; exit 1; fi
echo "gpu-check: all $ran executable(s) passed"
