#!/usr/bin/env python3
"""PyTorch side of scripts/bench_cpu_vs_torch.py: trains the model of an HF config.json (GPT-2 or
Llama, written here in plain torch) from random init with the work of one ferrotron CPU step, and
reports its speed. Same work per step as `ferrotron train recipes/quickstart.toml`: fp32, rows of
SEQ tokens read from ferrotron's token cache (data-cache/tokens/*.tok: 8 bytes `FTTOKv01`, u64 LE
count, u32 LE tokens) at stride SEQ, target = next token, -100 after an eos; causal attention
(SDPA), logits over the whole vocabulary, mean cross-entropy; AdamW (betas 0.9/0.95, eps 1e-8,
weight decay on matrices only), ferrotron's warmup + cosine schedule, global-norm clip 1.0.

  --compile : torch.compile of forward+loss (inductor), the optimizer step stays eager

Prints one line `RESULT {json}`: median step time over the steps after --warmup-timing, tokens/s.
"""
import argparse, glob, json, math, statistics, time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ap = argparse.ArgumentParser()
ap.add_argument("--config", required=True, help="HF config.json (model_type gpt2 or llama)")
ap.add_argument("--batch", type=int, default=8)
ap.add_argument("--seq", type=int, default=128)
ap.add_argument("--steps", type=int, default=20)
ap.add_argument("--warmup-timing", type=int, default=5, help="steps left out of the median")
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--compile", action="store_true")
ap.add_argument("--lr", type=float, default=3e-3)
ap.add_argument("--lr-warmup", type=int, default=40)
ap.add_argument("--seed", type=int, default=1234)
args = ap.parse_args()

torch.set_num_threads(args.threads)
torch.set_num_interop_threads(1)
torch.manual_seed(args.seed)
cfg = json.load(open(args.config))


def token_stream():
    caches = sorted(glob.glob("data-cache/tokens/shakespeare-*.tok"))
    if not caches:
        raise SystemExit("no data-cache/tokens/shakespeare-*.tok: run one ferrotron quickstart step first")
    raw = np.fromfile(caches[0], dtype=np.uint8)
    if raw[:8].tobytes() != b"FTTOKv01":
        raise SystemExit(f"{caches[0]}: not a ferrotron token cache")
    count = int(raw[8:16].view("<u8")[0])
    return raw[16:16 + 4 * count].view("<u4").astype(np.int64)


TOKENS = token_stream()
EOS = cfg.get("eos_token_id", 50256)
TRAIN_ROWS = (len(TOKENS) - 1) // args.seq - max(1, round(len(TOKENS) / args.seq * 0.01))
rng = np.random.default_rng(args.seed)


def next_batch():
    starts = rng.integers(0, TRAIN_ROWS, size=args.batch) * args.seq
    x = np.stack([TOKENS[s:s + args.seq] for s in starts])
    y = np.stack([TOKENS[s + 1:s + args.seq + 1] for s in starts])
    return torch.from_numpy(x), torch.from_numpy(np.where(x == EOS, -100, y))


def attention(q, k, v):  # q [B, H, T, Dh], k/v [B, Hkv, T, Dh]
    groups = q.shape[1] // k.shape[1]
    if groups > 1:
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


class Gpt2Layer(nn.Module):
    def __init__(self, d, heads, ffn, eps):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(d, eps=eps), nn.LayerNorm(d, eps=eps)
        self.qkv, self.out = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.up, self.down = nn.Linear(d, ffn), nn.Linear(ffn, d)

    def forward(self, x):
        b, t, d = x.shape
        split = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, d // self.heads)
        q, k, v = split.permute(2, 0, 3, 1, 4)
        x = x + self.out(attention(q, k, v).transpose(1, 2).reshape(b, t, d))
        return x + self.down(F.gelu(self.up(self.norm2(x)), approximate="tanh"))


class RmsNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(d)), eps

    def forward(self, x):
        return self.weight * x * torch.rsqrt(x.square().mean(-1, keepdim=True) + self.eps)


class LlamaLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c["hidden_size"]
        self.heads, self.kv_heads = c["num_attention_heads"], c["num_key_value_heads"]
        self.dh = c.get("head_dim") or d // self.heads
        self.norm1, self.norm2 = RmsNorm(d, c["rms_norm_eps"]), RmsNorm(d, c["rms_norm_eps"])
        self.q = nn.Linear(d, self.heads * self.dh, bias=False)
        self.k = nn.Linear(d, self.kv_heads * self.dh, bias=False)
        self.v = nn.Linear(d, self.kv_heads * self.dh, bias=False)
        self.o = nn.Linear(self.heads * self.dh, d, bias=False)
        self.gate = nn.Linear(d, c["intermediate_size"], bias=False)
        self.up = nn.Linear(d, c["intermediate_size"], bias=False)
        self.down = nn.Linear(c["intermediate_size"], d, bias=False)

    def forward(self, x, cos, sin):
        b, t, _ = x.shape
        h = self.norm1(x)

        def heads(lin, n):
            return lin(h).view(b, t, n, self.dh).transpose(1, 2)

        def rope(z):  # HF rotate-half
            lo, hi = z.chunk(2, dim=-1)
            return z * cos + torch.cat([-hi, lo], dim=-1) * sin

        q, k, v = rope(heads(self.q, self.heads)), rope(heads(self.k, self.kv_heads)), heads(self.v, self.kv_heads)
        x = x + self.o(attention(q, k, v).transpose(1, 2).reshape(b, t, -1))
        h = self.norm2(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class Model(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.gpt2 = c["model_type"] == "gpt2"
        if self.gpt2:
            d, eps = c["n_embd"], c["layer_norm_epsilon"]
            self.embed = nn.Embedding(c["vocab_size"], d)
            self.positions = nn.Embedding(c["n_positions"], d)
            self.layers = nn.ModuleList(Gpt2Layer(d, c["n_head"], c.get("n_inner") or 4 * d, eps)
                                        for _ in range(c["n_layer"]))
            self.norm = nn.LayerNorm(d, eps=eps)
            self.head = None  # tied
        else:
            d = c["hidden_size"]
            self.embed = nn.Embedding(c["vocab_size"], d)
            self.layers = nn.ModuleList(LlamaLayer(c) for _ in range(c["num_hidden_layers"]))
            self.norm = RmsNorm(d, c["rms_norm_eps"])
            tied = c.get("tie_word_embeddings", False)
            self.head = None if tied else nn.Parameter(torch.empty(c["vocab_size"], d))
            theta = (c.get("rope_parameters") or {}).get("rope_theta", c.get("rope_theta", 10000.0))
            dh = self.layers[0].dh
            angle = torch.outer(torch.arange(args.seq, dtype=torch.float64),
                                theta ** (-torch.arange(0, dh, 2, dtype=torch.float64) / dh))
            angle = torch.cat([angle, angle], dim=-1)
            self.register_buffer("cos", angle.cos().float(), persistent=False)
            self.register_buffer("sin", angle.sin().float(), persistent=False)
        for name, w in self.named_parameters():
            if w.dim() >= 2:
                nn.init.normal_(w, std=0.02)
            elif "bias" in name:
                nn.init.zeros_(w)

    def forward(self, tokens):
        x = self.embed(tokens)
        if self.gpt2:
            x = x + self.positions(torch.arange(tokens.shape[1]))
            for layer in self.layers:
                x = layer(x)
        else:
            for layer in self.layers:
                x = layer(x, self.cos, self.sin)
        return F.linear(self.norm(x), self.embed.weight if self.head is None else self.head)


model = Model(cfg)


def forward_loss(x, y):
    logits = model(x)
    return F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=-100)


step_loss = torch.compile(forward_loss) if args.compile else forward_loss
params = list(model.parameters())
opt = torch.optim.AdamW([{"params": [w for w in params if w.dim() >= 2], "weight_decay": 0.1},
                         {"params": [w for w in params if w.dim() < 2], "weight_decay": 0.0}],
                        lr=args.lr, betas=(0.9, 0.95), eps=1e-8)


def lr_at(step):  # src/train/schedule.rs: linear warmup, cosine to 0.1 x lr, 1-based steps
    if step <= args.lr_warmup:
        return args.lr * step / args.lr_warmup
    progress = min((step - args.lr_warmup) / max(args.steps - args.lr_warmup, 1), 1.0)
    return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


times, loss = [], float("nan")
for step in range(1, args.steps + 1):
    t0 = time.perf_counter()
    for group in opt.param_groups:
        group["lr"] = lr_at(step)
    x, y = next_batch()
    out = step_loss(x, y)
    out.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    loss = out.item()
    times.append(time.perf_counter() - t0)

median = statistics.median(times[args.warmup_timing:])
print("RESULT " + json.dumps({"arch": cfg["model_type"], "compile": args.compile, "steps": args.steps,
                              "median_step_s": median, "tokens_per_s": args.batch * args.seq / median,
                              "loss_last": loss}), flush=True)
