#!/usr/bin/env bash
# CPU training speed on the quickstart recipe: the median step time of steps 4..N (3 warm-up
# steps), with the release binary, no evaluation and no checkpoints.
#   usage: scripts/bench-quickstart.sh [N (default 16)] [--set key=value ...]
# Prints one line: median step time, tokens/s, the last step's loss, and the first step's
# activations_bytes. Needs data-cache/ (scripts/fetch-data.sh) and target/release/ferrotron.
set -euo pipefail
cd "$(dirname "$0")/.."
steps="${1:-16}"
shift || true
out="$(mktemp -d)"
target/release/ferrotron train recipes/quickstart.toml --set "train.steps=$steps" \
  --set train.eval_every=0 --set checkpoint.enabled=false --set "train.out_dir=$out" "$@" > /dev/null
python3 - "$out/metrics.jsonl" <<'PY'
import json, statistics, sys
recs = [r for r in map(json.loads, open(sys.argv[1])) if "step_time_s" in r]
t = statistics.median(r["step_time_s"] for r in recs[3:])
print(f"median step {t:.3f} s, {recs[0]['tokens'] / t:.0f} tokens/s, step {len(recs)} loss "
      f"{recs[-1]['loss']:.4f}, activations kept {recs[0]['activations_bytes']} B")
PY
rm -rf "$out"
