#!/usr/bin/env bash
# Installs what ferrotron needs to build and test on a fresh Debian/Ubuntu machine (run as root):
# a C toolchain, Open MPI (the CPU communicator), libclang (bindgen for the MPI bindings), Python
# pip (NVRTC wheels for the kernel compile test), and Rust if cargo is missing.
set -euo pipefail

need_apt=()
command -v cc >/dev/null 2>&1 || need_apt+=(build-essential)
command -v mpicc >/dev/null 2>&1 || need_apt+=(libopenmpi-dev openmpi-bin)
# bindgen (clang-sys) loads libclang.so or libclang-<version>.so; Debian 12 ships libclang-cpp.so.14
# without them, so look for exactly those names.
have_libclang() {
  compgen -G '/usr/lib/llvm-*/lib/libclang.so*' >/dev/null ||
    compgen -G '/usr/lib/*/libclang-[0-9]*.so*' >/dev/null ||
    compgen -G '/usr/lib/libclang.so*' >/dev/null
}
have_libclang || need_apt+=(libclang-dev)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
command -v curl >/dev/null 2>&1 || need_apt+=(curl ca-certificates)
python3 -m pip --version >/dev/null 2>&1 || need_apt+=(python3 python3-pip)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${need_apt[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
  [ -x "$HOME/.cargo/bin/cargo" ] || {
    echo "setup: installing Rust with rustup"
    curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
  }
fi
