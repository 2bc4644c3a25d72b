"""torch.mm (MKL/oneDNN) on the 75M Llama's products for one 4 x 256-token step, the same shapes,
order and thread count as kernels/tests/bench_cpu.rs `bench_llama75m_products`: per product
best-of-5 GFLOP/s (forward, dx, dW) and the step's total GEMM time.
    python3 scripts/torch_llama75m_products.py [threads]"""
import sys
import time

import torch

torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
N = 1024
LAYERS = [("qkv", 1024, 512, 8), ("o", 512, 512, 8), ("gate+up", 2816, 512, 8), ("down", 512, 1408, 8)]


def best(f, reps=5):
    for _ in range(2):
        f()
    t = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        f()
        t = min(t, time.perf_counter() - t0)
    return t


total = 0.0
flops = 0.0
for name, out, inp, count in LAYERS:
    x, w, dy = torch.randn(N, inp), torch.randn(out, inp), torch.randn(N, out)
    f = 2.0 * N * inp * out
    times = (best(lambda: x @ w.t()), best(lambda: dy @ w), best(lambda: dy.t() @ x))
    total += count * sum(times)
    flops += count * 3 * f
    print(f"{name:8} [{N}x{inp}]x[{inp}x{out}]: fwd {f / times[0] / 1e9:.0f} dx {f / times[1] / 1e9:.0f} dW {f / times[2] / 1e9:.0f} GFLOP/s")
print(f"layers: {total * 1e3:.0f} ms a step, {flops / total / 1e9:.0f} GFLOP/s")
