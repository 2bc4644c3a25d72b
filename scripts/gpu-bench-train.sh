#!/usr/bin/env bash
# Training throughput on one GPU: ferrotron beside the PyTorch baseline, in one run on one machine.
#   usage (repository root, GPU machine): scripts/gpu-bench-train.sh [PACK_DIR]   (default .gpu/pack)
# Needs PACK_DIR from scripts/gpu-pack.sh (the binary, and train_bench.py copied from
# ../shared/baselines) and data-cache/{shakespeare,gpt2,tokens} (scripts/fetch-data.sh).
#
# Both sides train the same two shapes (ferrotron the Llama shape also with full activation
# checkpointing): GPT-2 124M at 16 x 1024 tokens and the Llama-3.2-1B shape
# (16 layers, d 2048, GQA 32/8, ffn 8192, vocab 128256, tied) at 4 x 2048; bf16 compute, fp32
# master weights and AdamW, clipping at 1.0. ferrotron runs recipes/gpu-bench.toml (15 steps: 3
# warm-up, the median of steps 4-13, each timed on the host around the whole step including its
# final wait; steps 14-15 run under the per-kernel profile, whose table, profile.md, is appended
# to the record for each run); PyTorch runs train_bench.py (eager and torch.compile; 3 warm-up steps, the median of
# 10, CUDA events). MFU is (6·N_matmul + 12·L·d·S) FLOPs per token over 989.5 TFLOP/s for both
# (ours from metrics.jsonl's tflops_per_device, src/model/transformer/flops.rs).
# Memory: ours is the largest nvidia-smi reading during the run minus the reading before it (it
# includes the CUDA context); PyTorch's is torch.cuda.max_memory_allocated (tensors only).
# Order: GPT-2 ours, GPT-2 PyTorch, Llama ours, Llama PyTorch, Llama ours with checkpointing; each
# under a cap (TRAIN_BENCH_OURS_CAP_S, default 150 s; TRAIN_BENCH_TORCH_CAP_S, 240 s: eager and
# compile of one model in one process) within the deadline of scripts/gpu-budget.sh when a caller
# set one; a run stopped or not started is a "failed: ..." row and the others still run.
# Prints a markdown table; with $OUT set also writes $OUT/train-bench.md, $OUT/train-bench.json and
# the runs' logs under $OUT/train-bench-logs/. Exit status 1 when any run failed.
set -uo pipefail
. "$(dirname "$0")/gpu-env.sh" "${1:-.gpu/pack}"
. "$(dirname "$0")/gpu-budget.sh"
pack="$(cd "${1:-.gpu/pack}" && pwd)"
work="$(mktemp -d)"
# name, model config, seq_len, sequences per step (the baseline's CONFIGS) [, one more --set]
configs=(
  "gpt2-124m recipes/models/gpt2-124m.json 1024 16"
  "llama-1b recipes/models/llama-1b-shape.json 2048 4"
  "llama-1b recipes/models/llama-1b-shape.json 2048 4 train.activation_checkpointing=full"
)
# TRAIN_BENCH_EXTRA_SETS="k=v ...": --set after the bench's own, for every ferrotron run (the dry run
# uses it for a CPU smoke run of this script: train.device=cpu and a tiny batch; never for figures).
extra_sets=()
for kv in ${TRAIN_BENCH_EXTRA_SETS:-}; do extra_sets+=(--set "$kv"); done
gpu_mem() { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1; }
# One ferrotron run: configs[$1], under a cap, GPU memory polled beside it.
ours() {
  local i=$1 name model seq batch extra run before poll
  read -r name model seq batch extra <<< "${configs[$i]}"
  run="$i-$name"
  before="$(gpu_mem)"
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > "$work/$run.mem" &
  poll=$!
  capped "${TRAIN_BENCH_OURS_CAP_S:-150}" "$FERROTRON_BIN" train recipes/gpu-bench.toml \
    --set "model.config=$model" --set "data.seq_len=$seq" --set "train.global_batch=$batch" \
    --set "train.out_dir=$work/$run" --set checkpoint.enabled=false \
    ${extra:+--set "$extra"} "${extra_sets[@]}" > "$work/$run.log" 2>&1
  echo "$? $before" > "$work/$run.status"
  kill "$poll" 2>/dev/null
  wait "$poll" 2>/dev/null
  echo "ferrotron $name ${extra}: exit $(cut -d' ' -f1 "$work/$run.status"); $(tail -1 "$work/$run.log")"
}
# The PyTorch baseline for one config, eager then compile, in a process of its own.
torch_bench() {
  if [ ! -f "$pack/train_bench.py" ]; then
    echo "gpu-bench-train: $pack/train_bench.py is missing (gpu-pack.sh copies it from ../shared/baselines)" >&2
    echo 2 > "$work/torch-$1.status"
    return
  fi
  capped "${TRAIN_BENCH_TORCH_CAP_S:-240}" env LD_LIBRARY_PATH="$GPU_ENV_HOST_LD_LIBRARY_PATH" python3 "$pack/train_bench.py" --configs "$1" \
    --modes eager,compile --out "$work/torch-$1.json" > "$work/torch-$1.log" 2>&1
  echo $? > "$work/torch-$1.status"
  grep -v Warning "$work/torch-$1.log" | tail -4
}
# Model by model, each ours then PyTorch's, so a call cut short still holds whole comparisons.
# TRAIN_BENCH_ONLY=NAME runs that model's rows alone (the dry run's CPU smoke run: gpt2-124m).
want() { [ -z "${TRAIN_BENCH_ONLY:-}" ] || [ "$TRAIN_BENCH_ONLY" = "$1" ]; }
if want gpt2-124m; then
  ours 0
  torch_bench gpt2-124m
fi
if want llama-1b; then
  ours 1
  torch_bench llama-1b
  ours 2
fi
{
  echo "# gpu-bench-train $(date -u +%Y-%m-%d)"
  echo
  echo "- command: \`bash scripts/gpu-bench-train.sh${1:+ $1}\`"
  echo "- commit: $(cat "$pack/COMMIT" 2>/dev/null || echo unknown)"
  echo "- device: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)"
  echo
} | tee "${OUT:-$work}/train-bench.md"
python3 - "$work" "${configs[@]}" <<'EOF' | tee -a "${OUT:-$work}/train-bench.md"
import json, os, statistics, sys

work, configs = sys.argv[1], [c.split() for c in sys.argv[2:]]
PEAK = 989.5e12

rows = []
for i, (name, model, seq, batch, *extra) in enumerate(configs):
    seq, batch, run = int(seq), int(batch), f"{work}/{i}-{name}"
    if not os.path.exists(f"{run}.status"):
        continue  # not asked for (TRAIN_BENCH_ONLY)
    status = open(f"{run}.status").read().split()
    framework = "ferrotron" + "".join(f" ({e.split('.')[-1].replace('=', ' ')})" for e in extra)
    row = dict(config=name, framework=framework, exit=int(status[0]))
    recs = []
    path = f"{run}/metrics.jsonl"
    if os.path.exists(path):
        recs = [r for r in map(json.loads, open(path)) if "step_time_s" in r]
    timed = [r["step_time_s"] for r in recs[3:13]]  # steps 4-13: 14-15 are profiled
    if timed:
        t = statistics.median(timed)
        tok = recs[0]["tokens"] / t  # tokens per step (step 1 starts from 0)
        # ferrotron's own model FLOPs per token (Transformer::flops_per_token, the same formula).
        fpt = recs[-1]["tflops_per_device"] * 1e12 / recs[-1]["tokens_per_s"]
        mem = [int(x) for x in open(f"{run}.mem").read().split() if x.isdigit()]
        row.update(step_ms=t * 1e3, tokens_per_s=tok, mfu=tok * fpt / PEAK,
                   peak_gib=(max(mem) - int(status[1])) / 1024 if mem else None,
                   loss=f"{recs[0]['loss']:.3f} -> {recs[min(12, len(recs) - 1)]['loss']:.3f} (step {recs[min(12, len(recs) - 1)]['step']})",
                   steps=len(recs))
    rows.append(row)
for name in dict.fromkeys(c[0] for c in configs):
    torch_json, status = f"{work}/torch-{name}.json", f"{work}/torch-{name}.status"
    if not os.path.exists(status):
        continue  # not asked for (TRAIN_BENCH_ONLY)
    if not os.path.exists(torch_json):
        code = int(open(status).read())
        rows.append(dict(config=name, framework="PyTorch", exit=code))
        continue
    for r in json.load(open(torch_json)):
        r["framework"] = f"PyTorch {r.pop('mode')}"
        if "loss" in r:
            r["loss"] = f"{r['loss']:.3f} (step 13)"
        rows.append(r)
print("| model | framework | step (ms) | tokens/s | MFU | peak memory (GiB) | loss |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for r in sorted(rows, key=lambda r: r["config"]):  # stable: ferrotron rows first
    if "tokens_per_s" not in r:
        why = r.get("error") or {124: "stopped at its time cap", 137: "stopped at its time cap",
                                 125: "not run: time budget spent"}.get(r.get("exit"), f"exit {r.get('exit')}")
        print(f"| {r['config']} | {r['framework']} | failed: {why} | | | | |")
        continue
    mem = "" if r.get("peak_gib") is None else f"{r['peak_gib']:.1f}"
    print(f"| {r['config']} | {r['framework']} | {r['step_ms']:.1f} | {r['tokens_per_s']:,.0f} | "
          f"{100 * r['mfu']:.1f}% | {mem} | {r.get('loss', '')} |")
print()
print("ferrotron memory: nvidia-smi peak minus the reading before the run (includes the CUDA context);"
      " PyTorch memory: torch.cuda.max_memory_allocated (tensors only). GPT-2 vocabulary: ferrotron"
      " 50257, the PyTorch baseline 50304 (MFU counts each model's own).")
json.dump(rows, open(f"{work}/rows.json", "w"), indent=1)
# Where ferrotron's time goes: each run's kernel profile (train.profile_steps), its head.
for i, (name, model, seq, batch, *extra) in enumerate(configs):
    path = f"{work}/{i}-{name}/profile.md"
    if os.path.exists(path):
        lines = open(path).read().splitlines()
        print()
        print(f"## Kernel profile, ferrotron {name} {' '.join(extra)}".rstrip())
        print()
        print("\n".join(lines[2:] if lines and lines[0].startswith("#") else lines))
EOF
[ -n "${OUT:-}" ] && cp "$work/rows.json" "$OUT/train-bench.json"
bad=0
for i in "${!configs[@]}"; do
  read -r name _ <<< "${configs[$i]}"
  [ -f "$work/$i-$name.status" ] || continue
  [ "$(cut -d' ' -f1 "$work/$i-$name.status")" = 0 ] ||
    { echo "gpu-bench-train: ferrotron ${configs[$i]} failed:" >&2; tail -5 "$work/$i-$name.log" >&2; bad=1; }
done
for f in "$work"/torch-*.status; do
  [ -f "$f" ] || continue
  [ "$(cat "$f")" = 0 ] || { echo "gpu-bench-train: PyTorch $(basename "$f" .status) failed (exit $(cat "$f"))" >&2; bad=1; }
done
# The logs (ours and PyTorch's) for the session's archive.
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT/train-bench-logs" && cp "$work"/*.log "$work"/*.json "$OUT/train-bench-logs/" 2>/dev/null
  for d in "$work"/*/; do
    [ -f "$d/profile.md" ] && cp "$d/profile.md" "$OUT/train-bench-logs/profile-$(basename "$d").md"
    [ -f "$d/metrics.jsonl" ] && cp "$d/metrics.jsonl" "$OUT/train-bench-logs/metrics-$(basename "$d").jsonl"
  done
fi
exit "$bad"
