#!/usr/bin/env bash
# shellcheck disable=SC2319  # verdict $? reads the test just before it, on purpose
# Dry run of scripts/gpu-session.sh on the CPU machine, so that the first lent GPU call cannot fail
# on a path, a missing library, a file name or a record-writing step.
#   usage: bash scripts/gpu-session-dryrun.sh [MODE]     (MODE as gpu-session.sh's; default all)
# Needs .gpu/ship/pack.tar.xz from scripts/gpu-pack.sh. Runs as root (a private mount namespace).
#
# It reproduces a device call as closely as a CPU machine can:
#   - the tree that travels (tracked and untracked-not-ignored files, no .git, no target/) plus the
#     carried .gpu/ship, copied to a fresh directory, gpu-session.sh run there with $OUT set;
#   - a private mount namespace (unshare) in which the host's Open MPI (libraries, plugins, help
#     files, config, mpirun/orted) and ../shared are hidden, so the packed Open MPI must be found
#     through LD_LIBRARY_PATH and relocated through OPAL_PREFIX, and the baselines come from the pack;
#   - scripts/dryrun/bin/nvidia-smi (answers queries for "NVIDIA DRYRUN-STUB") and
#     scripts/dryrun/python/torch (importable, fails on any device use) first on the paths; a fresh
#     NVRTC cache; RAYON_NUM_THREADS=1 (the CPU machine is shared).
# The real test executables and the real ferrotron binary run: with no GPU every GPU test must
# FAIL (the dry run checks that none was ignored or skipped), every part must still run and every
# record must be written. Then, in the same namespace, two ranks of a tiny ZeRO-1 training on the
# CPU through the packed mpirun and libmpi (what the GPU tests' 2-rank runs need of Open MPI, with
# the pml and btl components it selected logged). Then it checks the records and prints a verdict
# per check.
# DRYRUN_BUDGET_S sets the session's budget (default: gpu-session.sh's own for MODE).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
mode="${1:-all}"
[ -f .gpu/ship/pack.tar.xz ] || { echo "dryrun: no .gpu/ship/pack.tar.xz: run scripts/gpu-pack.sh first" >&2; exit 1; }
t="$(mktemp -d /tmp/gpu-dryrun.XXXXXX)"
mkdir -p "$t/repo/.gpu" "$t/out" "$t/empty" "$t/cache" "$t/mpi"
case "$mode" in all | bench | train) mkdir -p "$t/smoke" ;; esac
: > "$t/empty-file"

# 1. What a device call sends.
git ls-files -z --cached --others --exclude-standard |
  while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
  tar -cf - --null -T - | tar -xf - -C "$t/repo"
cp -r .gpu/ship "$t/repo/.gpu/"
echo "dryrun: sandbox $t/repo ($(du -sh "$t/repo" | cut -f1) with the carried .gpu/ship)"

# 2. What the namespace hides: the host's Open MPI, every library the pack carries a copy of, and
# ../shared (a user's machine has none of it; the GPU machine neither).
hide_dirs=(/usr/lib/x86_64-linux-gnu/openmpi /etc/openmpi /usr/share/openmpi)
[ -d ../shared ] && hide_dirs+=("$(cd ../shared && pwd)")
hide_files=("$(readlink -f /usr/bin/orterun)" "$(readlink -f /usr/bin/orted)")
tar -tJf .gpu/ship/pack.tar.xz | sed -n 's#^\.gpu/pack/ompi/lib/##p' | while read -r lib; do
  [ -n "$lib" ] && [ -e "/usr/lib/x86_64-linux-gnu/$lib" ] && readlink -f "/usr/lib/x86_64-linux-gnu/$lib"
done > "$t/hide-libs"
mapfile -t hide_libs < "$t/hide-libs"
hide_files+=("${hide_libs[@]}")
echo "dryrun: hiding ${#hide_dirs[@]} directories and ${#hide_files[@]} files of the host (Open MPI, ../shared)"

# 3. The session, in the namespace, with the stubs first on the paths.
start=$(date +%s)
unshare --mount --propagation private -- bash -c '
  set -u
  t=$1 stubs=$2 mode=$3
  shift 3
  n_dirs=$1
  shift
  for ((i = 0; i < n_dirs; i++)); do mount --bind "$t/empty" "$1" || exit 90; shift; done
  for f in "$@"; do mount --bind "$t/empty-file" "$f" || exit 91; done
  # Proof the host Open MPI is gone: the host mpirun is now an empty file.
  if /usr/bin/mpirun --version >/dev/null 2>&1; then echo "dryrun: the host mpirun still runs" >&2; exit 92; fi
  cd "$t/repo"
  export PATH="$stubs/bin:$PATH" PYTHONPATH="$stubs/python" OUT="$t/out" XDG_CACHE_HOME="$t/cache" \
    RAYON_NUM_THREADS=1 ${DRYRUN_BUDGET_S:+SESSION_BUDGET_S=$DRYRUN_BUDGET_S}
  bash scripts/gpu-session.sh "$mode"
  rc=$?
  # The training table from real metrics: the same script, ferrotron on the CPU with a tiny batch
  # (GPT-2 124M, 4 steps of 1 x 64 tokens), so the success path of the table is exercised too.
  if [ -d "$t/smoke" ]; then
    TRAIN_BENCH_ONLY=gpt2-124m OUT="$t/smoke" BUDGET_DEADLINE=$(($(date +%s) + 600)) TRAIN_BENCH_OURS_CAP_S=400 \
      TRAIN_BENCH_EXTRA_SETS="train.device=cpu train.precision=f32 data.seq_len=64 train.global_batch=1 train.steps=4 train.profile_steps=0" \
      bash scripts/gpu-bench-train.sh > "$t/smoke/console" 2>&1
  fi
  # Two ranks through the packed Open MPI alone (MPI_Init, the collectives, point-to-point): a
  # ZeRO-1 tiny training on the CPU, started as the GPU tests start theirs (tests/common/mod.rs),
  # with the components Open MPI selects logged.
  (
    . scripts/gpu-env.sh .gpu/pack
    OMPI_MCA_btl_vader_single_copy_mechanism=none OMPI_MCA_pml_base_verbose=10 OMPI_MCA_btl_base_verbose=10 \
      timeout 300 mpirun -np 2 --oversubscribe --bind-to none "$FERROTRON_BIN" train tests/recipes/tiny-dp.toml \
      --set train.steps=2 --set train.eval_every=0 --set checkpoint.enabled=false \
      --set parallel.zero_stage=1 --set train.out_dir="$t/mpi/run" > "$t/mpi/console" 2>&1
    echo $? > "$t/mpi/rc"
  )
  exit $rc
' dryrun "$t" "$t/repo/scripts/dryrun" "$mode" "${#hide_dirs[@]}" "${hide_dirs[@]}" "${hide_files[@]}" \
  > "$t/session.console" 2>&1
session_rc=$?
echo "dryrun: gpu-session.sh $mode exit $session_rc after $(($(date +%s) - start)) s (console: $t/session.console)"

# 4. Checks on what came back.
pass=0 fail=0
verdict() { # OK? what
  if [ "$1" = 0 ]; then pass=$((pass + 1)); echo "  ok    $2"; else fail=$((fail + 1)); echo "  FAIL  $2"; fi
}
day="$(date -u +%Y-%m-%d)"
echo "dryrun: checks"
[ "$session_rc" -lt 90 ] && [ "$session_rc" -ne 0 ]
verdict $? "gpu-session.sh ended with a failure status (no GPU), not a namespace error ($session_rc)"
ls "$t/out"
n=$(find "$t/out" -type f | wc -l)
[ "$n" -le 8 ]
verdict $? "$n files under \$OUT (a call returns at most 8)"
bad_names=$(find "$t/out" -type f -printf '%f\n' | grep -v -E '^[A-Za-z0-9._-]+$' | wc -l)
[ "$bad_names" = 0 ]
verdict $? "every file name in letters, digits, '.', '_', '-'"
session_md="$t/out/gpu-session-$mode-dryrun-stub-$day.md"
[ -s "$session_md" ]
verdict $? "session record $(basename "$session_md")"
logs="$t/out/gpu-session-$mode-logs.tar.gz"
mkdir -p "$t/logs" && tar -xzf "$logs" -C "$t/logs" 2>/dev/null
verdict $? "logs archive $(basename "$logs")"
grep -q "libmpi.so.40 => $t/repo/.gpu/pack/ompi/lib/libmpi.so.40" "$session_md"
verdict $? "ferrotron loads libmpi.so.40 from the pack"
grep -q "mpirun: $t/repo/.gpu/pack/ompi/bin/mpirun" "$session_md" && grep -q "OPAL_PREFIX=$t/repo/.gpu/pack/ompi" "$session_md"
verdict $? "mpirun is the packed one, relocated by OPAL_PREFIX"
grep -q "mpirun -np 2 --oversubscribe true: ok" "$session_md"
verdict $? "the packed mpirun starts 2 ranks"
grep -q "data: .*gpt2.*shakespeare" "$session_md" && grep -q "baselines: .*attention_bench.py.*train_bench.py" "$session_md"
verdict $? "data-cache and the PyTorch baselines unpacked from the ship"
# data-cache/gpt2 (from the ship, or copied from tests/data/gpt2 by gpu-session.sh): the files
# scripts/fetch-data.sh fetches, by their SHA-256.
gpt2_ok=0
for f in encoder.json:ENCODER_SHA vocab.bpe:VOCAB_SHA; do
  want=$(sed -n "s/^${f#*:}=//p" scripts/fetch-data.sh)
  [ -n "$want" ] && [ "$(sha256sum < "$t/repo/data-cache/gpt2/${f%%:*}" 2>/dev/null | cut -d' ' -f1)" = "$want" ] || gpt2_ok=1
done
[ "$gpt2_ok" = 0 ]
verdict $? "data-cache/gpt2 in place with fetch-data.sh's SHA-256s ($(tar -tJf .gpu/ship/pack.tar.xz | grep -c '^data-cache/gpt2/.' | sed 's/^0$/copied from tests\/data\/gpt2/; s/^[1-9][0-9]*$/shipped/'))"
mpi_pml=$(grep -o -E 'select: component [a-z0-9]+ selected' "$t/mpi/console" 2>/dev/null | awk '{print $3}' | sort | uniq -c | xargs)
mpi_btl=$(grep -o -E 'select: init of component [a-z0-9]+ returned success' "$t/mpi/console" 2>/dev/null | awk '{print $5}' | sort -u | xargs)
[ "$(cat "$t/mpi/rc" 2>/dev/null)" = 0 ] && [ "$mpi_pml" = "2 ob1" ] && grep -q "^trained 2 steps" "$t/mpi/console"
verdict $? "2 ranks through the packed Open MPI alone: a ZeRO-1 tiny training on the CPU (exit $(cat "$t/mpi/rc" 2>/dev/null); pml per rank: $mpi_pml; btl: $mpi_btl)"
for p in $(case "$mode" in all) echo check train attention ;; bench) echo train attention ;; *) echo "$mode" ;; esac); do
  rec=$(case "$p" in check) echo gpu-check ;; train) echo train-bench ;; attention) echo attention-bench ;; esac)
  [ -s "$t/out/$rec-dryrun-stub-$day.md" ] && grep -q "^- commit: " "$t/out/$rec-dryrun-stub-$day.md" &&
    grep -q "^- device: NVIDIA DRYRUN-STUB" "$t/out/$rec-dryrun-stub-$day.md"
  verdict $? "$p: record $rec-dryrun-stub-$day.md with its command, commit and device"
  grep -q "^| $p | .* | [0-9]" "$session_md"
  verdict $? "$p: ran, its exit status in the session record"
done
if [ -f "$t/logs/out/gpu-check.log" ]; then
  log="$t/logs/out/gpu-check.log"
  echo "dryrun: gpu-check executables (exit, libtest summary):"
  grep -E '^=== .*: exit' "$log" | sed 's/^/    /'
  grep -E '^test result:' "$log" | sed 's/^/    /'
  ! grep -E '^test result:' "$log" | grep -v -q ' 0 ignored'
  verdict $? "gpu-check: no test ignored (--include-ignored ran them all)"
  ran=$(grep -c -E '^=== .*: exit' "$log")
  failed=$(grep -E '^=== .*: exit' "$log" | grep -c -v ': exit 0 ')
  [ "$ran" -gt 0 ] && [ "$failed" = "$ran" ]
  verdict $? "gpu-check: every executable ran and FAILED without a GPU ($failed of $ran)"
  nodev=$(grep -c "no NVIDIA driver/libcuda was found" "$log")
  [ "$nodev" -gt 0 ] && grep -q "^FAILED " "$t/out/gpu-check-dryrun-stub-$day.md"
  verdict $? "gpu-check: the tests fail on the missing device ($nodev lines say no driver), the record names them"
fi
if [ -f "$t/logs/out/train-bench.md" ]; then
  grep -q "^| gpt2-124m | ferrotron | failed" "$t/logs/out/train-bench.md" &&
    grep -q "^| llama-1b | PyTorch eager | failed: stub torch" "$t/logs/out/train-bench.md"
  verdict $? "train-bench: ferrotron and PyTorch rows recorded as failed (no GPU), table written"
fi
if [ -d "$t/smoke" ]; then
  echo "dryrun: CPU smoke run of gpu-bench-train.sh (GPT-2 124M on the CPU, 4 steps of 1 x 64 tokens):"
  grep '^| gpt2' "$t/smoke/train-bench.md" | sed 's/^/    /'
  grep -q -E '^\| gpt2-124m \| ferrotron \| [0-9.]+ \| [0-9,]+ \| [0-9.]+% \| [0-9.]+ \| [0-9.]+ -> [0-9.]+ \(step [0-9]+\) \|' "$t/smoke/train-bench.md"
  verdict $? "train-bench table from real metrics.jsonl (step, tokens/s, MFU, memory, loss) on the CPU"
fi
if [ -f "$t/logs/out/attention-bench.md" ]; then
  grep -q "ferrotron bench attention\` exit [1-9]" "$t/logs/out/attention-bench.md"
  verdict $? "attention-bench: ours ran and failed without a GPU, record written"
fi
echo "dryrun: $pass checks ok, $fail failed; records and logs under $t/out"
[ "$fail" = 0 ]
