# shellcheck shell=bash
# Sourced on the GPU machine (by gpu-check.sh, or by hand) from the repository root:
#   . scripts/gpu-env.sh [PACK_DIR]     (default .gpu/pack, made by scripts/gpu-pack.sh)
# Puts the CUDA toolkit, NCCL and the packed Open MPI runtime on the paths, and points prebuilt
# test executables at this tree (FERROTRON_REPO) and the packed binary (FERROTRON_BIN).
pack="$(cd "${1:-.gpu/pack}" && pwd)"
# The library path as it was before this file first ran (kept when sourced again): the PyTorch
# scripts run with it (env LD_LIBRARY_PATH="$GPU_ENV_HOST_LD_LIBRARY_PATH" python3 ...), so the
# packed Open MPI's Debian libraries (libudev, libnuma, libhwloc, ...) never shadow the image's own.
export GPU_ENV_HOST_LD_LIBRARY_PATH="${GPU_ENV_HOST_LD_LIBRARY_PATH-${LD_LIBRARY_PATH:-}}"
# cudarc dlopens libcuda / libnvrtc / libcublasLt / libnccl by name: the toolkit's first, then
# (last on the path, for an image without /usr/local/cuda) the CUDA 13 wheels PyTorch brings.
wheel_dir() { python3 -c "import os, $1 as m; print(os.path.join(list(m.__path__)[0], '$2'))" 2>/dev/null || true; }
cu13="$(wheel_dir nvidia.cu13 lib)"
[ -n "$cu13" ] && [ -d "$cu13" ] && export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$cu13"
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
  [ -d "$d" ] && export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
done
if [ -d /usr/local/cuda/include ]; then
  export FERROTRON_NVRTC_INCLUDE="${FERROTRON_NVRTC_INCLUDE:-/usr/local/cuda/include}"
elif [ -n "$cu13" ] && [ -d "${cu13%/lib}/include" ]; then
  export FERROTRON_NVRTC_INCLUDE="${FERROTRON_NVRTC_INCLUDE:-${cu13%/lib}/include}"
fi
# NCCL: pip's nvidia-nccl wheel ships libnccl.so.2; cudarc asks for libnccl.so.
links="$pack/links"
mkdir -p "$links"
nccl="$(wheel_dir nvidia.nccl lib)"
for d in "$nccl" /usr/lib/x86_64-linux-gnu /usr/local/cuda/lib64; do
  if [ -n "$d" ] && [ -e "$d/libnccl.so.2" ]; then ln -sf "$d/libnccl.so.2" "$links/libnccl.so"; break; fi
done
export LD_LIBRARY_PATH="$links${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# Open MPI, relocated.
if [ -d "$pack/ompi" ]; then
  o="$pack/ompi"
  export OPAL_PREFIX="$o" OPAL_EXEC_PREFIX="$o" OPAL_BINDIR="$o/bin" OPAL_LIBDIR="$o/lib" \
    OPAL_PKGLIBDIR="$o/plugins" OPAL_PKGDATADIR="$o/share" OPAL_DATADIR="$o/share" \
    OPAL_SYSCONFDIR="$o/etc"
  export PATH="$o/bin:$PATH" LD_LIBRARY_PATH="$o/lib:$LD_LIBRARY_PATH"
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
export FERROTRON_REPO="$PWD" FERROTRON_BIN="$pack/bin/ferrotron"
