"""Attention correctness cases for ferrotron's FlashAttention kernels (run on the GPU machine).

For every case (causal / non-causal, sliding window, GQA / MQA / MHA, head dim 64 / 128, ragged
and packed varlen batches) this draws FRESH random bf16 inputs (seed from the clock unless --seed), computes
  * the fp64 reference O, lse, dQ, dK, dV (per segment, math attention, autograd in float64),
  * PyTorch SDPA in bf16 on the same inputs (per segment; K/V expanded for GQA) and its error
    against the reference (max |x - ref| and ||x - ref|| / ||ref||),
and writes one .safetensors per case: inputs q, k, v, do (bf16, token-major [N, heads, Dh]),
cu_seqlens (i32), ref_o/ref_dq/ref_dk/ref_dv (f32), ref_lse [H, N] (f32), and the dims and
SDPA errors as metadata. kernels/tests/flash_attn.rs then runs our kernels on them and asserts
our error <= 2x SDPA's (FlashAttention's test rule).
Usage: python3 attention_vs_sdpa.py --out DIR [--seed S]
"""
import argparse
import math
import os
import time

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

CASES = []  # (name, seqlens, heads, kv_heads, head_dim, causal, window: 0 = none)
for d in (64, 128):
    for causal in (True, False):
        c = "causal" if causal else "full"
        CASES += [
            (f"gqa16x4_d{d}_{c}_varlen", [1, 17, 129, 1000], 16, 4, d, causal, 0),
            (f"mqa8x1_d{d}_{c}_ragged", [333], 8, 1, d, causal, 0),
            (f"mha4_d{d}_{c}_varlen", [1000, 1, 129, 17, 64], 4, 4, d, causal, 0),
            (f"gqa8x2_d{d}_{c}_long", [2048 + 77], 8, 2, d, causal, 0),
        ]
    # sliding window (causal: key j seen by query i iff i - w < j <= i), below and above a tile
    CASES += [
        (f"gqa16x4_d{d}_window50_varlen", [1, 17, 129, 1000], 16, 4, d, True, 50),
        (f"gqa8x2_d{d}_window700_long", [2048 + 77], 8, 2, d, True, 700),
    ]


def window_mask(n, window, device):
    """[n, n] bool, True where key j is hidden from query i: j > i, or j <= i - window."""
    i = torch.arange(n, device=device)[:, None]
    j = torch.arange(n, device=device)[None, :]
    hidden = j > i
    if window:
        hidden |= j <= i - window
    return hidden


def ref_attention(q, k, v, causal, scale, window=0):
    """q [S, H, D], k/v [S, Hkv, D] float64 -> o [S, H, D], lse [H, S]."""
    g = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(g, dim=1)
    v = v.repeat_interleave(g, dim=1)
    s = torch.einsum("qhd,khd->hqk", q, k) * scale
    if causal:
        s = s.masked_fill(window_mask(q.shape[0], window, q.device), float("-inf"))
    lse = torch.logsumexp(s, dim=-1)
    p = torch.softmax(s, dim=-1)
    return torch.einsum("hqk,khd->qhd", p, v), lse


def sdpa_bf16(q, k, v, causal, scale, window=0):
    g = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(g, dim=1)
    v = v.repeat_interleave(g, dim=1)
    args = (q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None])
    if window:
        # SDPA has no window flag: an explicit boolean mask (True = attend)
        keep = ~window_mask(q.shape[0], window, q.device)
        o = F.scaled_dot_product_attention(*args, attn_mask=keep, scale=scale)
    else:
        o = F.scaled_dot_product_attention(*args, is_causal=causal, scale=scale)
    return o[0].transpose(0, 1)


def run_case(name, seqlens, h, hkv, d, causal, window, out_dir, gen):
    n = sum(seqlens)
    dev = "cuda"
    mk = lambda *shape: torch.randn(*shape, generator=gen, device=dev).to(torch.bfloat16)
    q, k, v, do = mk(n, h, d), mk(n, hkv, d), mk(n, hkv, d), mk(n, h, d)
    scale = 1.0 / math.sqrt(d)
    cu = [0]
    for s in seqlens:
        cu.append(cu[-1] + s)
    refs = {key: [] for key in ("o", "dq", "dk", "dv", "lse")}
    pts = {key: [] for key in ("o", "dq", "dk", "dv")}
    for i in range(len(seqlens)):
        a, b = cu[i], cu[i + 1]
        # fp64 reference
        q64, k64, v64 = (t[a:b].double().requires_grad_() for t in (q, k, v))
        o64, lse64 = ref_attention(q64, k64, v64, causal, scale, window)
        o64.backward(do[a:b].double())
        for key, t in (("o", o64), ("dq", q64.grad), ("dk", k64.grad), ("dv", v64.grad), ("lse", lse64)):
            refs[key].append(t.detach())
        # PyTorch SDPA in bf16
        qb, kb, vb = (t[a:b].clone().requires_grad_() for t in (q, k, v))
        ob = sdpa_bf16(qb, kb, vb, causal, scale, window)
        ob.backward(do[a:b])
        for key, t in (("o", ob), ("dq", qb.grad), ("dk", kb.grad), ("dv", vb.grad)):
            pts[key].append(t.detach())
    meta = dict(name=name, heads=str(h), kv_heads=str(hkv), head_dim=str(d), causal=str(int(causal)),
                window=str(window),
                scale=repr(scale), segments=str(len(seqlens)), max_seqlen=str(max(seqlens)),
                seqlens=",".join(map(str, seqlens)))
    tensors = dict(q=q.contiguous(), k=k.contiguous(), v=v.contiguous(), do=do.contiguous(),
                   cu_seqlens=torch.tensor(cu, dtype=torch.int32))
    for key in ("o", "dq", "dk", "dv"):
        ref = torch.cat(refs[key], 0)
        pt = torch.cat(pts[key], 0).double()
        meta[f"sdpa_maxabs_{key}"] = repr((pt - ref).abs().max().item())
        meta[f"sdpa_rel_{key}"] = repr(((pt - ref).norm() / ref.norm()).item())
        tensors[f"ref_{key}"] = ref.float().contiguous()
    tensors["ref_lse"] = torch.cat(refs["lse"], 1).float().contiguous()  # [H, N]
    save_file({k_: t.cpu() for k_, t in tensors.items()}, os.path.join(out_dir, f"{name}.safetensors"), meta)
    print(f"{name:28s} N={n:5d} sdpa max|err| o {meta['sdpa_maxabs_o'][:9]} dq {meta['sdpa_maxabs_dq'][:9]}"
          f" dk {meta['sdpa_maxabs_dk'][:9]} dv {meta['sdpa_maxabs_dv'][:9]}", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else time.time_ns() % (2**31)
    print(f"seed {seed}")
    os.makedirs(args.out, exist_ok=True)
    gen = torch.Generator(device="cuda").manual_seed(seed)
    for case in CASES:
        run_case(*case, args.out, gen)


if __name__ == "__main__":
    main()
