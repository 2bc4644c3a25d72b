#!/usr/bin/env bash
# The main job: set up, fetch the real Shakespeare text and GPT-2 BPE, train the quickstart GPT on
# the CPU, and print a sample. Extra arguments go to `ferrotron train` (e.g. --set train.steps=50).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
bash scripts/fetch-data.sh data-cache
cargo build --release --bin ferrotron
./target/release/ferrotron train recipes/quickstart.toml "$@"
