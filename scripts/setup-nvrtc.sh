#!/usr/bin/env bash
# Installs NVRTC (the CUDA run-time compiler) and the CUDA headers from PyPI into a private
# directory, for machines without a CUDA toolkit (CI, the CPU dev machine). Needs no GPU.
# Prints the two lines to eval:  export LD_LIBRARY_PATH=...  export FERROTRON_NVRTC_INCLUDE=...
#   usage: eval "$(scripts/setup-nvrtc.sh)"      (dir: $FERROTRON_NVRTC_DIR or ~/.cache/ferrotron/nvrtc)
set -euo pipefail
dir="${FERROTRON_NVRTC_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ferrotron/nvrtc}"
lib="$dir/nvidia/cu13/lib"
inc="$dir/nvidia/cu13/include"
if [ ! -e "$lib/libnvrtc.so.13" ] || [ ! -e "$inc/cuda_runtime.h" ]; then
  python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$dir" \
    nvidia-cuda-nvrtc==13.0.88 nvidia-cuda-runtime==13.0.96 >&2
fi
[ -e "$lib/libnvrtc.so.13" ] || { echo "setup-nvrtc: libnvrtc.so.13 missing under $lib" >&2; exit 1; }
# cudarc dlopens "libnvrtc.so" first; give it the unversioned name too.
[ -e "$lib/libnvrtc.so" ] || ln -s libnvrtc.so.13 "$lib/libnvrtc.so"
echo "export LD_LIBRARY_PATH=$lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
echo "export FERROTRON_NVRTC_INCLUDE=$inc"
