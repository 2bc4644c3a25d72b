"""Compile kernels/cuda/flash_attn.cu with NVRTC (no GPU needed): PTX for sm_80/sm_90 and a
sm_90 cubin with the ptxas resource report (registers, spills, smem) per kernel.
Usage: LIBNVRTC=/path/libnvrtc.so.13 python3 scripts/nvrtc_check.py [kernels/cuda/flash_attn.cu]"""
import ctypes
import os
import sys

lib = ctypes.CDLL(os.environ.get("LIBNVRTC", "libnvrtc.so"))
src_path = sys.argv[1] if len(sys.argv) > 1 else "kernels/cuda/flash_attn.cu"
src = open(src_path, "rb").read()


def compile_(opts, cubin):
    prog = ctypes.c_void_p()
    assert lib.nvrtcCreateProgram(ctypes.byref(prog), src, b"flash_attn.cu", 0, None, None) == 0
    arr = (ctypes.c_char_p * len(opts))(*[o.encode() for o in opts])
    rc = lib.nvrtcCompileProgram(prog, len(opts), arr)
    n = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(n))
    log = ctypes.create_string_buffer(n.value)
    lib.nvrtcGetProgramLog(prog, log)
    size = ctypes.c_size_t()
    if rc == 0:
        (lib.nvrtcGetCUBINSize if cubin else lib.nvrtcGetPTXSize)(prog, ctypes.byref(size))
    return rc, log.value.decode(errors="replace"), size.value


ok = True
for d in (64, 128):
    for arch, cubin in (("compute_80", False), ("compute_90", False), ("sm_90", True)):
        opts = [f"-DHEAD_DIM={d}", "--std=c++17", "--use_fast_math", f"--gpu-architecture={arch}"]
        if cubin:
            opts.append("--ptxas-options=-v")
        rc, log, size = compile_(opts, cubin)
        print(f"D={d} {arch}: rc={rc} bytes={size}")
        if log.strip():
            print(log)
        ok &= rc == 0
sys.exit(0 if ok else 1)
