#!/usr/bin/env bash
# One lent GPU session, prepared: the GPU test suite, the training bench beside PyTorch and the
# attention bench beside SDPA, from what scripts/gpu-pack.sh built on the CPU machine (the GPU
# machine has no cargo), each part under a time cap, every record written under $OUT.
#
#   usage (repository root, GPU machine): bash scripts/gpu-session.sh [all|check|bench|train|attention]
#     check      scripts/gpu-check.sh .gpu/pack/tests       (every GPU test executable)
#     bench      train, then attention
#     train      scripts/gpu-bench-train.sh                 (GPT-2 124M, Llama-1B shape +- checkpointing,
#                                                            PyTorch eager and torch.compile)
#     attention  scripts/gpu-bench-attention.sh             (ours beside SDPA flash and cuDNN)
#     all        (default) check, train, attention
#
# The device calls (the `run` tool; carry the one compressed file gpu-pack.sh made; device time is
# 15 minutes a session including the machine's start, at most 10 minutes a call):
#   1. command `bash scripts/gpu-session.sh check`, carry [".gpu/ship"], timeout_s 380
#   2. command `bash scripts/gpu-session.sh bench`, carry [".gpu/ship"], timeout_s 440 (less, with
#      SESSION_BUDGET_S = timeout_s - 40, when the machine's start took more than 90 s)
# (or, when only one call fits, `bash scripts/gpu-session.sh all` with timeout_s 590). Before them,
# on the CPU machine: `bash scripts/gpu-pack.sh` and `bash scripts/gpu-session-dryrun.sh`.
#
# Time: the whole script keeps within SESSION_BUDGET_S seconds (default: check 330, bench 400,
# train 320, attention 100, all 540), measured from its start. Each part gets at most its own cap
# (check 330, train 320, attention 90) and never the time the parts after it need at least
# (train 180, attention 60); inside a part every run has a cap of its own (the part scripts' headers
# say which), so a hung or slow test is stopped, recorded, and the next one runs. A part that fails
# never stops the session. Caps are enforced by scripts/gpu-budget.sh (timeout in a session of its
# own; whatever a stopped run left behind is killed before the next part).
#
# $OUT (default runs/gpu-session) receives, after every part (so a call cut short still returns
# what was done), records ready for docs/gpu-runs/ (DEV = the GPU's model, e.g. h200):
#   gpu-session-MODE-DEV-DATE.md        the parts, their exit status and time, the environment seen
#                                       (GPU, driver, torch, which libcuda/libnvrtc/libnccl/libmpi
#                                       loaded, mpirun), the packed commit, the command
#   gpu-check-DEV-DATE.md               scripts/gpu-check.sh's record (op table, GPU-TRAIN lines)
#   train-bench-DEV-DATE.md             the training table, ferrotron beside PyTorch
#   attention-bench-DEV-DATE.md         the attention table, ours beside SDPA flash and cuDNN
#   gpu-session-MODE-logs.tar.gz        every log and JSON (test output, training logs, metrics)
# (at most 8 files come back from a call: these are 5). Exit status: 0 when every part passed.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
mode="${1:-all}"
case "$mode" in
  all) parts=(check train attention) budget=540 ;;
  check) parts=(check) budget=330 ;;
  bench) parts=(train attention) budget=400 ;;
  train) parts=(train) budget=320 ;;
  attention) parts=(attention) budget=100 ;;
  *) echo "usage: bash scripts/gpu-session.sh [all|check|bench|train|attention]" >&2; exit 2 ;;
esac
budget="${SESSION_BUDGET_S:-$budget}"
declare -A part_cap=([check]=330 [train]=320 [attention]=90)
declare -A least=([check]=120 [train]=180 [attention]=60)
declare -A script=([check]="scripts/gpu-check.sh .gpu/pack/tests" [train]="scripts/gpu-bench-train.sh"
  [attention]="scripts/gpu-bench-attention.sh")
declare -A record=([check]=gpu-check [train]=train-bench [attention]=attention-bench)
t0=$(date +%s)
unset BUDGET_DEADLINE
. scripts/gpu-budget.sh
budget_start "$budget"
# Parts are given time up to 20 s before the end, so a part script stuck past its own deadline
# is still stopped (and its record written by this script) within the budget.
parts_deadline=$((BUDGET_DEADLINE - 20))
out="${OUT:-$PWD/runs/gpu-session}"
mkdir -p "$out"
work="$(mktemp -d)"
mkdir -p "$work/out"
day="$(date -u +%Y-%m-%d)"

# 1. The pack: unpack the carried archive (pack + data-cache) over the tree.
if [ -f .gpu/ship/pack.tar.xz ]; then
  rm -rf .gpu/pack
  python3 -c 'import sys, tarfile
with tarfile.open(sys.argv[1]) as t:
    t.extractall(".", **({"filter": "tar"} if hasattr(tarfile, "tar_filter") else {}))' .gpu/ship/pack.tar.xz ||
    tar -xJf .gpu/ship/pack.tar.xz
  echo "gpu-session: unpacked .gpu/ship/pack.tar.xz in $(($(date +%s) - t0)) s"
fi
# data-cache/gpt2: gpu-pack.sh ships it only when it differs from the tracked tests/data/gpt2 (the
# same GPT-2 BPE files); otherwise it comes from the tree.
if [ ! -f data-cache/gpt2/vocab.bpe ] && [ -f tests/data/gpt2/vocab.bpe ]; then
  rm -rf data-cache/gpt2 && mkdir -p data-cache && cp -r tests/data/gpt2 data-cache/gpt2 &&
    echo "gpu-session: data-cache/gpt2 copied from tests/data/gpt2"
fi
if [ ! -x .gpu/pack/bin/ferrotron ]; then
  echo "gpu-session: no .gpu/pack/bin/ferrotron: run scripts/gpu-pack.sh on the CPU machine and carry .gpu/ship" >&2
  exit 1
fi
. scripts/gpu-env.sh .gpu/pack
dev="$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | awk '{print tolower($2)}' | tr -c 'a-z0-9\n-' -)"
dev="${dev:-nogpu}"
session_md="$out/gpu-session-$mode-$dev-$day.md"

# 2. What this machine offers, for the record: read before any part, costs a few seconds.
{
  echo "- GPU: $(nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv,noheader 2>&1 | head -1)"
  echo "- python3: $(command -v python3); $(capped 60 env LD_LIBRARY_PATH="$GPU_ENV_HOST_LD_LIBRARY_PATH" python3 -c 'import torch; c = torch.cuda.is_available(); print("torch", torch.__version__, "CUDA", torch.version.cuda, "available", c, torch.cuda.get_device_name(0) if c else "")' 2>&1 | tail -1)"
  echo "- libraries cudarc opens (dlopen by name through LD_LIBRARY_PATH):"
  python3 - <<'EOF' 2>&1
import ctypes
for names in (["libcuda.so", "libcuda.so.1"], ["libnvrtc.so", "libnvrtc.so.13"],
              ["libcublasLt.so", "libcublasLt.so.13"], ["libcublas.so", "libcublas.so.13"],
              ["libnccl.so"]):
    for n in names:
        try:
            ctypes.CDLL(n)
        except OSError:
            continue
        path = next((l.split()[-1] for l in open("/proc/self/maps") if "/" + n.split(".so")[0] + ".so" in l), "?")
        print(f"  - {names[0]}: {n} -> {path}")
        break
    else:
        print(f"  - {names[0]}: NOT FOUND as {' / '.join(names)}")
EOF
  echo "- NVRTC include: ${FERROTRON_NVRTC_INCLUDE:-none set (NVRTC then looks in /usr/local/cuda/include)}"
  echo "- ferrotron links: $(ldd "$FERROTRON_BIN" 2>&1 | grep -E 'libmpi|not found' | sed 's/ (0x[0-9a-f]*)//' | xargs)"
  echo "- mpirun: $(command -v mpirun) ($(mpirun --version 2>&1 | head -1)); OPAL_PREFIX=${OPAL_PREFIX:-unset}"
  echo "- Open MPI point-to-point components packed: $(cd .gpu/pack/ompi/plugins 2>/dev/null && ls mca_pml_* mca_mtl_* mca_btl_* 2>/dev/null | sed 's/^mca_//; s/\.so$//' | xargs); RDMA devices: $(ls /dev/infiniband 2>/dev/null | xargs | grep . || echo none)"
  echo "- mpirun -np 2 --oversubscribe true: $(capped 30 mpirun -np 2 --oversubscribe true > "$work/out/mpirun-probe.log" 2>&1 && echo ok || echo "FAILED: $(tail -3 "$work/out/mpirun-probe.log" | xargs)")"
  echo "- data: $(cd data-cache 2>&1 && echo *); baselines: $(cd .gpu/pack && echo *.py)"
} > "$work/env.md"

# 3. The parts, each under its cap; records copied to $OUT after each one.
declare -A rc secs
write_session() {
  {
    echo "# GPU session $day: \`bash scripts/gpu-session.sh $mode\`"
    echo
    echo "- command: device \`run\`, \`bash scripts/gpu-session.sh $mode\`, carry [\".gpu/ship\"] (made by scripts/gpu-pack.sh)"
    echo "- commit packed: $(cat .gpu/pack/COMMIT 2>/dev/null || echo unknown)"
    echo "- time budget: $budget s; used $(($(date +%s) - t0)) s"
    echo
    echo "| part | command | exit | seconds | record |"
    echo "| --- | --- | --- | --- | --- |"
    for p in "${parts[@]}"; do
      local r="${rc[$p]:-not started}"
      case "$r" in 124 | 137) r="$r (stopped at its cap)" ;; 125) r="125 (not run: budget spent)" ;; esac
      echo "| $p | \`bash ${script[$p]}\` | $r | ${secs[$p]:-} | ${record[$p]}-$dev-$day.md |"
    done
    echo
    echo "## Environment seen"
    echo
    cat "$work/env.md"
  } > "$session_md"
  tar -czf "$out/gpu-session-$mode-logs.tar.gz" -C "$work" out 2>/dev/null
}
write_session
for i in "${!parts[@]}"; do
  p="${parts[$i]}"
  later=0
  for q in "${parts[@]:$((i + 1))}"; do later=$((later + least[$q])); done
  left=$((parts_deadline - $(date +%s)))
  c=$((left - later))
  [ "$c" -gt "${part_cap[$p]}" ] && c=${part_cap[$p]}
  echo "gpu-session: $p (cap ${c} s of ${left} s left): bash ${script[$p]}"
  start=$(date +%s)
  # The part's own runs end by its deadline; the outer cap (20 s more) only catches a stuck script.
  # shellcheck disable=SC2086
  capped $((c + 20)) env BUDGET_DEADLINE=$((start + c)) BUDGET_RESERVE_S=0 OUT="$work/out" \
    bash ${script[$p]} > "$work/out/$p.console" 2>&1
  rc[$p]=$?
  secs[$p]=$(($(date +%s) - start))
  [ -f "$work/out/${record[$p]}.md" ] && cp "$work/out/${record[$p]}.md" "$out/${record[$p]}-$dev-$day.md"
  echo "gpu-session: $p exit ${rc[$p]} after ${secs[$p]} s; last lines:"
  tail -4 "$work/out/$p.console" | sed 's/^/    /'
  write_session
done
echo
cat "$session_md"
echo
ls -l "$out" | sed 's/^/gpu-session: /'
for p in "${parts[@]}"; do [ "${rc[$p]}" = 0 ] || exit 1; done
