#!/usr/bin/env bash
# Builds, on the dev machine, everything scripts/gpu-check.sh runs on a GPU machine that has no
# cargo, and puts it under .gpu/pack (git-ignored; carry it to the GPU machine):
#   bin/ferrotron           release binary, stripped
#   tests/<name>            GPU test executables, stripped (kernels cuda_ops, cuda_optimizer, cuda_flash_backend,
#                           flash_attn; gpu_training, gpu_tensor_parallel)
#   ompi/                   the Open MPI runtime the binary links (libmpi.so.40) and mpirun needs,
#                           relocated through OPAL_* variables by gpu-check.sh (the GPU image has
#                           no Open MPI of this ABI)
#   attention_vs_sdpa.py, and from ../shared/baselines (when present) attention_bench.py and
#                           train_bench.py: the PyTorch side of the GPU checks and benches
#   COMMIT                  the commit packed (and whether the tree had uncommitted changes)
#   usage: scripts/gpu-pack.sh [extra test names of the root package...]
set -euo pipefail
cd "$(dirname "$0")/.."
pack=.gpu/pack
rm -rf "$pack"
mkdir -p "$pack/bin" "$pack/tests" "$pack/ompi/lib" "$pack/ompi/bin"

cargo build --release --bin ferrotron
install -m 755 target/release/ferrotron "$pack/bin/ferrotron"
strip "$pack/bin/ferrotron"

# Test executables: their paths from cargo's JSON messages.
executables() {
  cargo test --no-run --message-format=json "$@" 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["target"]["name"], m["executable"])'
}
{
  executables -p ferrotron-kernels --test cuda_ops --test cuda_optimizer --test cuda_flash_backend --test flash_attn
  executables -p ferrotron --test gpu_training --test gpu_tensor_parallel "${@/#/--test=}"
} | while read -r name exe; do
  install -m 755 "$exe" "$pack/tests/$name"
  strip "$pack/tests/$name"
done

# Open MPI 4.1 runtime (Debian's openmpi-bin / libopenmpi3): libraries the binary, mpirun and the
# MCA plugins load (minus the C runtime every Linux has), the plugins, help texts and config.
ompi=/usr/lib/x86_64-linux-gnu/openmpi
for f in target/release/ferrotron /usr/bin/orterun /usr/bin/orted "$ompi"/lib/openmpi3/*.so "$ompi"/lib/*.so; do
  ldd "$f" 2>/dev/null | awk '/=>/ {print $3}'
done | sort -u | grep -v -E '/(libc|libm|libgcc_s|ld-linux|libstdc\+\+|libpthread|libdl|librt|libz)\.so' |
  while read -r lib; do cp -L "$lib" "$pack/ompi/lib/"; done
cp -rL "$ompi/lib/openmpi3" "$pack/ompi/plugins"
cp -r /usr/share/openmpi "$pack/ompi/share"
cp -r /etc/openmpi "$pack/ompi/etc"
cp -L /usr/bin/orterun "$pack/ompi/bin/mpirun"
cp -L /usr/bin/orted "$pack/ompi/bin/orted"
# The PyTorch side of the attention checks: fresh cases with SDPA errors (flash_attn test) and the
# SDPA timings `ferrotron bench attention --sdpa-json` prints beside ours.
cp scripts/attention_vs_sdpa.py "$pack/"
# The PyTorch training-step baseline scripts/gpu-bench-train.sh runs beside ours.
for f in attention_bench.py train_bench.py; do
  [ -f "../shared/baselines/$f" ] && cp "../shared/baselines/$f" "$pack/"
done
# What was packed, for the run records gpu-check.sh and gpu-bench-train.sh write.
echo "$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . ':!.gpu' || echo ' (with uncommitted changes)')" > "$pack/COMMIT"
du -sh "$pack"/* | sed 's/^/gpu-pack: /'
