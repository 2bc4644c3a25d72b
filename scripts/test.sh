#!/usr/bin/env bash
# The test command: sets up what the tests need, builds, and runs the whole test suite.
# GPU tests are #[ignore]d here; scripts/gpu-check.sh runs them on a GPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
# mpirun refuses root unless told; tests spawn it with --oversubscribe on small machines.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
if [ -f scripts/setup-nvrtc.sh ]; then
  # NVRTC without a GPU, so every .cu kernel is compile-checked for sm_80 and sm_90.
  eval "$(bash scripts/setup-nvrtc.sh)"
fi
cargo test --workspace --no-fail-fast 2>&1
