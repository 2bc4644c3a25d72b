#!/usr/bin/env python3
"""Whole training runs against PyTorch: ferrotron's trainer, step by step, against the same recipe
written out in plain torch (float64) from ferrotron's documented contract.

check-hf compares one forward, backward and AdamW step with transformers. This compares what a
user sees over many steps: the data pipeline (documents split on the eos text or blank lines, bos
where the tokenizer adds one, rows cut from each file's token stream with or without packing, the
held-out tail, chat and alpaca examples with their loss masks and best-fit-decreasing packing, the
ChaCha8 epoch permutations of src/data/sampler.rs), the loss (mean over the global batch's target
tokens, however the batch is cut into micro-batches), the learning-rate schedule
(src/train/schedule.rs), gradient clipping (torch's clip_grad_norm_: factor
min(1, max / (norm + 1e-6))), the weight-decay groups (matrices and embeddings decay, norms and
biases do not unless optim.decay_norms_and_biases), AdamW (torch.optim.AdamW) and evaluations.

The reference trainer, for every step s = 1..steps:
    rows   = the next global_batch row ids of the sampler (epoch e: Fisher-Yates over ChaCha8
             seeded by train.seed, stream e)
    loss   = sum over the rows' segments of transformers' cross-entropy sum over the segment's
             targets (each segment run alone, positions from 0: segments never attend to each
             other) / the global batch's number of targets
    loss.backward(); norm = clip_grad_norm_(params, clip_norm); lr = lr_at(s); AdamW step
    every eval_every steps and at the last: the loss over the first
             min(held-out rows, eval_batches x global_batch) held-out rows
and the per-step loss, grad_norm, lr and evaluations are compared with ferrotron's metrics.jsonl
(f32, CPU, one rank). A case over the tolerance is explained, not counted as a finding, when
torch's own float32 run drifts at least a third as far ("ill-conditioned"), or when ferrotron's
weights before that step are no further from the reference's than torch's own float32 weights
(per tensor, within 3x) and its step is exact for them in float64 ("drift-amplified"); never when
a learning rate differs.

Cases are random (models, tokenizers and text as scripts/fuzz_layouts.py makes them; chat and
alpaca records; tokenizers styled like Llama 3's and Qwen2.5's; several files; random optimizer
settings, schedules, micro-batches, packing, evaluation); `--write-fixture DIR` stores one case
(model, tokenizer, data, recipe and the reference trajectory) where tests/train_vs_torch.rs runs
it. `--mutate NAME` breaks the reference on purpose, to show that such a mistake is caught.

Usage:
  python3 scripts/trajectory_vs_torch.py --cases 12 --seed 1 [--steps 16] [--out /tmp/traj]
        [--formats text,chat,alpaca] [--styles plain,llama3,qwen] [--text-variants]
        [--first N] [--mutate NAME] [--families F,F,...]
  --families: draw the model family from this comma list (a repeat weighs double) instead of
  fuzz_layouts' default llama,llama,qwen2,qwen3,mistral,gpt2,gpt2 (which recorded seeds need);
  phi3 (Phi-3: fused projections, sliding window, partial rotary, longrope, a pad token in the
  data), smollm3 (SmolLM3: NoPE layers from no_rope_layers or no_rope_layer_interval, windows
  from layer_types or on the NoPE layers, a pad token), granite (Granite 3.x: embedding,
  residual and attention multipliers, logits_scaling, a pad token) and gemma, gemma2,
  gemma3_text (Gemma 1/2/3: x(1 + w) norms, GeGLU, the sqrt(hidden) embedding scale, sandwich
  norms, query_pre_attn_scalar, softcaps, sliding windows by layer type, Gemma 3's q/k norms and
  per-layer-type rotary tables, a pad token or the class default 0; fuzz_layouts.make_gemma) are
  drawn only this way, e.g. --families phi3 or --families smollm3,granite or
  --families gemma,gemma2,gemma3_text. Cases with a pad_token_id print (and
  results.json records) how often it is an input of the trained batches, and how often one with
  a trained target after it in its segment (only those test padding_idx: an eos pad ends its
  segment, so its row gets no gradient either way). --mutate pad-grad shows such cases fail.
  python3 scripts/trajectory_vs_torch.py --recipe recipes/quickstart.toml --steps 16
  python3 scripts/trajectory_vs_torch.py --cases 1 --first N --seed S --write-fixture \
        tests/fixtures/trajectories/NAME
"""
import argparse
import json
import math
import os
import random
import re
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fuzz_layouts as fl  # noqa: E402  (model, tokenizer and text makers; ferrotron runner)

M32 = 0xFFFFFFFF
M64 = 0xFFFFFFFFFFFFFFFF
LOSS_TOL = 2e-5     # relative, per step: f32 training against the f64 reference
NORM_TOL = 1e-4
PAD_GRADIENT = False   # --mutate pad-grad: lookups of pad_token_id train its embedding row too


# ----------------------------------------------------------------------------- the sampler
def _pcg32_seed(state):
    """rand_core 0.9 `SeedableRng::seed_from_u64`: eight PCG32 outputs are the 32-byte seed."""
    words = []
    for _ in range(8):
        state = (state * 6364136223846793005 + 11634580027462260723) & M64
        xorshifted = (((state >> 18) ^ state) >> 27) & M32
        rot = state >> 59
        words.append(((xorshifted >> rot) | (xorshifted << ((32 - rot) & 31))) & M32)
    return words


def _chacha_block(key, counter, stream, double_rounds=4):
    def rotl(v, c):
        return ((v << c) & M32) | (v >> (32 - c))

    def qr(x, a, b, c, d):
        x[a] = (x[a] + x[b]) & M32; x[d] = rotl(x[d] ^ x[a], 16)
        x[c] = (x[c] + x[d]) & M32; x[b] = rotl(x[b] ^ x[c], 12)
        x[a] = (x[a] + x[b]) & M32; x[d] = rotl(x[d] ^ x[a], 8)
        x[c] = (x[c] + x[d]) & M32; x[b] = rotl(x[b] ^ x[c], 7)

    s = [0x61707865, 0x3320646E, 0x79622D32, 0x6B206574] + key + [
        counter & M32, counter >> 32, stream & M32, stream >> 32]
    x = list(s)
    for _ in range(double_rounds):
        qr(x, 0, 4, 8, 12); qr(x, 1, 5, 9, 13); qr(x, 2, 6, 10, 14); qr(x, 3, 7, 11, 15)
        qr(x, 0, 5, 10, 15); qr(x, 1, 6, 11, 12); qr(x, 2, 7, 8, 13); qr(x, 3, 4, 9, 14)
    return [(x[i] + s[i]) & M32 for i in range(16)]


def _u64_stream(seed, stream):
    """ChaCha8Rng::seed_from_u64(seed) after set_stream(stream): its next_u64 values."""
    key = _pcg32_seed(seed)
    counter = 0
    while True:
        w = _chacha_block(key, counter, stream)
        counter += 1
        for i in range(0, 16, 2):
            yield w[i] | (w[i + 1] << 32)


def permutation(n, seed, epoch):
    """src/data/sampler.rs `permutation`."""
    rng = _u64_stream(seed, epoch)
    p = list(range(n))
    for i in range(n - 1, 0, -1):
        j = next(rng) % (i + 1)
        p[i], p[j] = p[j], p[i]
    return p


class Sampler:
    def __init__(self, n, seed):
        self.n, self.seed, self.epoch, self.cursor = n, seed, 0, 0
        self.perm = permutation(n, seed, 0)

    def next_global_batch(self, g):
        out = []
        while len(out) < g:
            if self.cursor == self.n:
                self.epoch += 1
                self.cursor = 0
                self.perm = permutation(self.n, self.seed, self.epoch)
            out.append(self.perm[self.cursor])
            self.cursor += 1
        return out


# ----------------------------------------------------------------------------- data
def leading_bos(tok):
    """src/tokenizer `leading_bos`: the bos id when the post-processor puts it first."""
    first = tok.encode("a", add_special_tokens=True).ids[:1]
    plain = tok.encode("a", add_special_tokens=False).ids[:1]
    return first[0] if first and first != plain and first[0] != tok.token_to_id(fl.EOT) else None


def split_documents(text, split, eos_text):
    """src/data/text.rs `split_documents`: on the eos text, or runs of non-blank lines."""
    if split == "eos":
        docs = text.split(eos_text)
    else:
        docs, start, pos = [], None, 0
        for line in re.findall(r"[^\n]*\n|[^\n]+$", text):
            blank = not line.strip()
            if blank and start is not None:
                docs.append(text[start:pos])
                start = None
            elif not blank and start is None:
                start = pos
            pos += len(line)
        if start is not None:
            docs.append(text[start:])
    return [d for d in docs if d.strip()]


def token_stream(tokenizer_json, text, eos_text, split="eos"):
    """src/data/text.rs: documents (whitespace-only ones dropped), each encoded without special
    tokens, preceded by bos when the tokenizer's post-processor adds one (Llama style) and
    followed by eos."""
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(tokenizer_json)
    eos = tok.token_to_id(eos_text)
    bos = leading_bos(tok)
    out = []
    for doc in split_documents(text, split, eos_text):
        out += ([bos] if bos is not None else []) + tok.encode(doc, add_special_tokens=False).ids + [eos]
    return out, eos


def text_rows(toks, eos, seq_len, packing):
    """src/data/mod.rs `text_rows`: (start, len, cont) windows."""
    rows = []

    def push(start, end, doc_end):
        s = start
        while s < end:
            e = min(s + seq_len, end)
            rows.append([s, e - s, e < doc_end])
            s = e
    if packing:
        push(0, len(toks), len(toks))
    else:
        start = 0
        for i, t in enumerate(toks):
            if t == eos:
                push(start, i + 1, i + 1)
                start = i + 1
        push(start, len(toks), len(toks))
    return rows


def row_segments(toks, eos, row):
    """src/data/rowset.rs `text_row`: (ids, targets) per segment; a segment ends after each eos
    and at the row's end; targets -100 at an eos and at a cut row end without `cont`."""
    start, n, cont = row
    r = toks[start:start + n]
    nxt = toks[start + n] if cont and start + n < len(toks) else -100
    segs, seg = [], 0
    for t in range(n):
        if r[t] == eos or t + 1 == n:
            tg = [-100 if r[i] == eos else (r[i + 1] if i + 1 < n else nxt) for i in range(seg, t + 1)]
            segs.append((r[seg:t + 1], tg))
            seg = t + 1
    return segs


CHAT_SPLIT_SEED = 0x5EED5917    # src/data/mod.rs SPLIT_SEED: which examples are held out
ALPACA_PROMPT_INPUT = ("Below is an instruction that describes a task, paired with an input that "
                       "provides further context. Write a response that appropriately completes "
                       "the request.\n\n### Instruction:\n{instruction}\n\n### Input:\n{input}"
                       "\n\n### Response:\n")
ALPACA_PROMPT = ("Below is an instruction that describes a task. Write a response that "
                 "appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n"
                 "### Response:\n")


def chatml(msgs, add_generation_prompt):
    """src/tokenizer/chat_template.rs CHATML, the template of a tokenizer that has none."""
    out = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in msgs)
    return out + ("<|im_start|>assistant\n" if add_generation_prompt else "")


def chat_renderer(hf_dir):
    """The tokenizer's own chat template rendered by transformers (apply_chat_template), or
    ChatML when it has none (ferrotron's default)."""
    cfg = json.load(open(os.path.join(hf_dir, "tokenizer_config.json")))
    if not cfg.get("chat_template"):
        return chatml
    from transformers import AutoTokenizer
    hft = AutoTokenizer.from_pretrained(hf_dir)
    return lambda msgs, gen: hft.apply_chat_template(msgs, tokenize=False,
                                                     add_generation_prompt=gen)


def chat_example(tok, msgs, render=chatml):
    """src/data/sft.rs `chat_example`: a token is trained when its byte range overlaps an
    assistant turn (from the render up to the turn with the generation prompt to the render
    through it)."""
    full = render(msgs, False)
    nbytes = lambda x: len(x.encode("utf-8"))  # noqa: E731
    spans = [(nbytes(render(msgs[:i], True)), nbytes(render(msgs[:i + 1], False)))
             for i, m in enumerate(msgs) if m["role"] == "assistant"]
    at = [0]
    for ch in full:
        at.append(at[-1] + nbytes(ch))
    enc = tok.encode(full, add_special_tokens=False)
    label = [any(at[a] < e and at[b] > s for s, e in spans) for a, b in enc.offsets]
    return enc.ids, label


def alpaca_example(tok, eos, rec):
    """src/data/sft.rs `alpaca_example`: the prompt (untrained), then output + eos (trained)."""
    inp = rec.get("input") or ""
    prompt = (ALPACA_PROMPT_INPUT.replace("{instruction}", rec["instruction"]).replace("{input}", inp)
              if inp else ALPACA_PROMPT.replace("{instruction}", rec["instruction"]))
    ids = tok.encode(prompt, add_special_tokens=True).ids
    n_prompt = len(ids)
    ids += tok.encode(rec["output"], add_special_tokens=False).ids + [eos]
    return ids, [i >= n_prompt for i in range(len(ids))]


def pack(lengths, cap):
    """src/data/packing.rs: best-fit decreasing, ties by lower index."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    rows, room = [], []
    for i in order:
        fits = [r for r in range(len(rows)) if room[r] >= lengths[i]]
        if fits:
            r = min(fits, key=lambda r: (room[r], r))
        else:
            rows.append([])
            room.append(cap)
            r = len(rows) - 1
        rows[r].append(i)
        room[r] -= lengths[i]
    return [sorted(r) for r in rows]


def example_rows(hf_dir, data_path, fmt, seq_len, val_fraction, packing):
    """src/data/mod.rs `load_examples`: examples truncated to seq_len, those with no trained
    token after the first dropped, a held-out share by a fixed permutation, rows packed or one
    example each. Returns the training and held-out rows as lists of (ids, targets) segments."""
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(hf_dir, "tokenizer.json"))
    eos = tok.token_to_id(fl.EOT)
    render = chat_renderer(hf_dir) if fmt == "chat" else None
    examples = []
    for line in open(data_path, encoding="utf-8"):
        if not line.strip():
            continue
        rec = json.loads(line)
        ids, label = chat_example(tok, rec["messages"], render) if fmt == "chat" \
            else alpaca_example(tok, eos, rec)
        ids, label = ids[:seq_len], label[:seq_len]
        if any(label[1:]):
            examples.append((ids, label))
    k = 0 if val_fraction == 0 else math.ceil(len(examples) * val_fraction)
    perm = permutation(len(examples), CHAT_SPLIT_SEED, 0)

    def segment(i):
        ids, label = examples[i]
        return ids, [ids[t + 1] if t + 1 < len(ids) and label[t + 1] else -100 for t in range(len(ids))]

    def rows(ix):
        ix = sorted(ix)
        if not packing:
            return [[segment(i)] for i in ix]
        return [[segment(ix[j]) for j in r] for r in pack([len(examples[i][0]) for i in ix], seq_len)]
    return rows(perm[k:]), rows(perm[:k])


def training_rows(hf_dir, data_path, r):
    """Every training and held-out row of recipe `r` as lists of (ids, targets) segments."""
    tokenizer_json = os.path.join(hf_dir, "tokenizer.json")
    if r.get("format", "text") != "text":
        return example_rows(hf_dir, data_path, r["format"], r["seq_len"],
                            r["val_fraction"], r["packing"])
    # data.paths: each file its own token stream and rows, in order; the held-out rows are the
    # last ones over all files.
    rows = []
    for path in (data_path if isinstance(data_path, list) else [data_path]):
        text = open(path, encoding="utf-8").read()
        toks, eos = token_stream(tokenizer_json, text, fl.EOT, r.get("text_split", "eos"))
        rows += [(toks, row) for row in text_rows(toks, eos, r["seq_len"], r["packing"])]
    k = 0 if r["val_fraction"] == 0 else math.ceil(len(rows) * r["val_fraction"])
    train, val = rows[:len(rows) - k], rows[len(rows) - k:]
    train[-1][1][2] = False   # the next token belongs to the held-out split
    return ([row_segments(t, eos, row) for t, row in train],
            [row_segments(t, eos, row) for t, row in val])


# ----------------------------------------------------------------------------- the trainer
def lr_at(o, step, total):
    """src/train/schedule.rs."""
    mx, mn = o["lr"], o["lr"] * o["min_lr_ratio"]
    w = o["warmup_steps"]
    if w > 0 and step <= w:
        return mx * step / w
    span = max(total - w, 1)
    p = min(max((step - min(w, step)) / span, 0.0), 1.0)
    if o["schedule"] == "constant":
        return mx
    if o["schedule"] == "linear":
        return mx - (mx - mn) * p
    return mn + (mx - mn) * 0.5 * (1.0 + math.cos(math.pi * p))


def decays(name, decay_all):
    """src/model/layout.rs `decays_by_default` by HF name: matrices and embeddings decay; norm
    weights (RMSNorm / LayerNorm, Qwen3's q/k norms) and every bias do not."""
    if decay_all:
        return True
    leaf = name.split(".")[-2] if name.endswith(".weight") else ""
    norm = "norm" in leaf or leaf in ("ln_1", "ln_2", "ln_f")
    return not (name.endswith(".bias") or norm)


def segments_loss(model, segs, backward):
    """(cross-entropy summed over the targets of every (ids, targets) segment, target count),
    each segment run alone with positions from 0; with `backward`, the gradient of sum / count
    accumulates into the model's parameters."""
    import torch
    import torch.nn.functional as F
    n = sum(1 for _, tg in segs for t in tg if t != -100)
    total = 0.0
    for ids, tg in segs:
        ls = F.cross_entropy(model(input_ids=torch.tensor([ids])).logits[0], torch.tensor(tg),
                             ignore_index=-100, reduction="sum")
        if backward:
            (ls / n).backward()
        total += ls.item()
    return total, n


def grad_norm(params):
    return math.sqrt(sum(float((p.grad ** 2).sum()) for p in params if p.grad is not None))


def gemma_norms_in_model_dtype():
    """transformers' Gemma, Gemma 2 and Gemma 3 RMSNorms compute in float32 whatever the model's
    dtype (`self._norm(x.float()) * (1.0 + self.weight.float())`), so a float64 reference would
    carry float32 norms, which torch's own float32 run (the noise floor) shares bit for bit
    wherever its inputs round alike, and ferrotron does not: seen as a q/k-norm weight drift 4-5x
    torch f32's on a gemma3_text case. Here they compute in the input's dtype: the same operations,
    so float32 runs are unchanged, and the float64 reference is float64 throughout."""
    from transformers.models.gemma import modeling_gemma
    from transformers.models.gemma2 import modeling_gemma2
    from transformers.models.gemma3 import modeling_gemma3

    def forward(self, x):
        return (self._norm(x) * (1.0 + self.weight.to(x.dtype))).type_as(x)
    for cls in (modeling_gemma.GemmaRMSNorm, modeling_gemma2.Gemma2RMSNorm,
                modeling_gemma3.Gemma3RMSNorm):
        cls.forward = forward


def reference_trajectory(hf_dir, data_path, r, dtype="float64", weights_after=None):
    """The per-step (loss, grad_norm, lr) of recipe dict `r` trained in torch (float64; float32
    gives torch's own round-off trajectory, the noise floor an f32 trainer is judged against).
    With `weights_after` = k, also the weights after step k (name -> tensor)."""
    import torch
    from transformers import AutoModelForCausalLM
    gemma_norms_in_model_dtype()
    torch.manual_seed(0)
    rows, val_rows = training_rows(hf_dir, data_path, r)
    # src/train/eval.rs: the first min(held-out rows, eval_batches x global_batch) rows.
    val_rows = val_rows[:r["eval_batches"] * r["global_batch"]]
    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=getattr(torch, dtype))
    if PAD_GRADIENT:                               # --mutate pad-grad
        model.get_input_embeddings().padding_idx = None
    model.train()
    o = r["optim"]
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in named if decays(n, o["decay_norms_and_biases"])],
         "weight_decay": o["weight_decay"]},
        {"params": [p for n, p in named if not decays(n, o["decay_norms_and_biases"])],
         "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=o["lr"],
                            betas=(o["beta1"], o["beta2"]), eps=o["eps"], foreach=False)
    sampler = Sampler(len(rows), r["seed"])
    out = []
    for step in range(1, r["steps"] + 1):
        segs = [s for i in sampler.next_global_batch(r["global_batch"]) for s in rows[i]]
        opt.zero_grad(set_to_none=True)
        loss_sum, n_targets = segments_loss(model, segs, backward=True)
        params = [p for _, p in named]
        if o["clip_norm"] > 0:
            norm = torch.nn.utils.clip_grad_norm_(params, o["clip_norm"]).item()
        else:
            norm = grad_norm(params)
        lr = lr_at(o, step, r["steps"])
        for g in opt.param_groups:
            g["lr"] = lr
        opt.step()
        if step == weights_after:
            weights = {n: p.detach().clone() for n, p in named}
        rec = {"step": step, "loss": loss_sum / n_targets, "grad_norm": norm, "lr": lr,
               "targets": n_targets}
        if val_rows and ((r["eval_every"] and step % r["eval_every"] == 0) or step == r["steps"]):
            with torch.no_grad():
                total, n = segments_loss(model, [s for row in val_rows for s in row], False)
            rec.update(eval_loss=total / n, eval_rows=len(val_rows), eval_tokens=n)
        out.append(rec)
    return (out, weights) if weights_after else out


# ----------------------------------------------------------------------------- cases
def draw_recipe(rng, s):
    gb = rng.choice([4, 6, 8, 12])
    return {
        "seq_len": s["seq_len"],
        "packing": rng.random() < 0.6,
        "val_fraction": rng.choice([0.0, 0.05, 0.1]),
        "global_batch": gb,
        "micro_batch": rng.choice([None, 1, 2, gb // 2, gb]),
        "seed": rng.randint(0, 2**40),
        "steps": s["steps"],
        "optim": {
            "lr": rng.choice([1e-3, 3e-3, 1e-2]),
            "min_lr_ratio": rng.choice([0.0, 0.1, 0.5]),
            "warmup_steps": rng.choice([0, 1, 3, s["steps"] // 2]),
            "schedule": rng.choice(["cosine", "linear", "constant"]),
            "beta1": rng.choice([0.9, 0.8]),
            "beta2": rng.choice([0.95, 0.999]),
            "eps": rng.choice([1e-8, 1e-6]),
            "weight_decay": rng.choice([0.0, 0.1, 0.5]),
            "decay_norms_and_biases": rng.random() < 0.3,
            "clip_norm": rng.choice([0.0, 1.0, 0.3]),
        },
        "eval_every": rng.choice([0, 4, 8]),
        "eval_batches": rng.choice([1, 2]),
    }


# Tokenizers in the style of real checkpoints: special tokens, a chat template of their own
# (written here in the manner of Llama 3.x's and Qwen2.5's: whitespace control, a default or
# trimmed system message, `loop.first`, `a + b | trim`), and for "llama3" a post-processor that
# puts <|begin_of_text|> first (so text documents and alpaca prompts start with bos).
LLAMA3_STYLE = (
    "{{- bos_token }}\n"
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {%- set system_message = messages[0]['content']|trim %}\n"
    "    {%- set messages = messages[1:] %}\n"
    "{%- else %}\n"
    "    {%- set system_message = \"\" %}\n"
    "{%- endif %}\n"
    "{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}\n"
    "{{- \"Cutting Knowledge Date: December 2023\\n\\n\" }}\n"
    "{{- system_message }}\n"
    "{{- \"<|eot_id|>\" }}\n"
    "{%- for message in messages %}\n"
    "    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n"
    "{%- endif %}\n")
QWEN_STYLE = (
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n"
    "{%- else %}\n"
    "    {{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}\n"
    "{%- endif %}\n"
    "{%- for message in messages %}\n"
    "    {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) or (message.role == \"assistant\") %}\n"
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|im_start|>assistant\\n' }}\n"
    "{%- endif %}\n")
STYLES = {
    "llama3": (LLAMA3_STYLE, ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                              "<|eot_id|>"], "<|begin_of_text|>"),
    "qwen": (QWEN_STYLE, ["<|im_start|>", "<|im_end|>"], None),
}


def restyle_tokenizer(hf_dir, style, model_vocab):
    """Gives hf_dir's tokenizer `style`'s special tokens, template and bos; returns the style
    applied ("plain" when the model's vocabulary has no room for the tokens)."""
    from tokenizers import AddedToken, Tokenizer, processors
    if style == "plain":
        return style
    template, specials, bos = STYLES[style]
    path = os.path.join(hf_dir, "tokenizer.json")
    tok = Tokenizer.from_file(path)
    if tok.get_vocab_size() + len(specials) > model_vocab:
        return "plain"
    tok.add_special_tokens([AddedToken(t, special=True) for t in specials])
    if bos:
        bid = tok.token_to_id(bos)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bid)])
    tok.save(path)
    cfg_path = os.path.join(hf_dir, "tokenizer_config.json")
    cfg = json.load(open(cfg_path))
    cfg["chat_template"] = template
    if bos:
        cfg["bos_token"] = bos
    with open(cfg_path, "w") as f:
        json.dump(cfg, f, indent=1)
    return style


def make_records(rng, case_dir, full, fmt):
    """Short chat ({"messages": [...]}) or alpaca ({instruction, input?, output}) records of
    Shakespeare word runs, so that most fit the context of a small model's tokenizer."""
    start = rng.randint(0, len(full) - 100_000)
    words = full[start:start + 100_000].split()
    at = 0

    def take(lo, hi):
        nonlocal at
        n = rng.randint(lo, hi)
        at += n
        return " ".join(words[at - n:at])
    path = os.path.join(case_dir, f"{fmt}.jsonl")
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(rng.randint(80, 200)):
            if fmt == "chat":
                msgs = [{"role": "system", "content": take(1, 2)}] if rng.random() < 0.15 else []
                for _turn in range(rng.choice([1, 1, 2])):
                    msgs += [{"role": "user", "content": take(1, 3)},
                             {"role": "assistant", "content": take(1, 5)}]
                rec = {"messages": msgs}
            else:
                rec = {"instruction": take(1, 4), "output": take(1, 8)}
                if rng.random() < 0.4:
                    rec["input"] = take(1, 3)
            f.write(json.dumps(rec) + "\n")
    return path


def with_context(n):
    """fuzz_layouts' config maker with the context widened to n positions (chat and alpaca
    records need more than its short text rows)."""
    orig = fl.make_config

    def wrapped(rng, *a, **k):
        family, cfg, s = orig(rng, *a, **k)
        s["seq_len"] = n
        if family == "gpt2":
            cfg.n_positions = max(cfg.n_positions, n)
        else:
            cfg.max_position_embeddings = max(cfg.max_position_embeddings, n)
        if family == "phi3" and s.get("rope") == "longrope" and s["original_max_pos"] < n:
            # ferrotron refuses rows longer than original_max_position_embeddings under longrope:
            # widen it too, keeping max_position_embeddings / original (the attention factor)
            ratio = s["max_pos"] / s["original_max_pos"]
            cfg.original_max_position_embeddings = n
            cfg.rope_parameters["original_max_position_embeddings"] = n
            cfg.max_position_embeddings = max(cfg.max_position_embeddings, math.ceil(n * ratio))
            s.update(original_max_pos=n, max_pos=cfg.max_position_embeddings)
        return family, cfg, s
    return wrapped


def data_keys(data):
    if isinstance(data, list):
        return "paths = [" + ", ".join(f'"{p}"' for p in data) + "]"
    return f'path = "{data}"'


def split_text_file(rng, path, n):
    """Cuts the text into n files at document breaks (data.paths)."""
    pieces = open(path, encoding="utf-8").read().split(fl.EOT)
    cuts = sorted(rng.sample(range(1, len(pieces)), n - 1))
    out = []
    for j, (a, b) in enumerate(zip([0] + cuts, cuts + [len(pieces)])):
        p = path.replace(".txt", f"-{j + 1}.txt")
        with open(p, "w", encoding="utf-8") as f:
            f.write(fl.EOT.join(pieces[a:b]))
        out.append(p)
    return out


def recipe_toml(hf, data, r, out_dir, cache_dir):
    o = r["optim"]
    mb = f"micro_batch = {r['micro_batch']}\n" if r["micro_batch"] else ""
    b = lambda v: "true" if v else "false"  # noqa: E731
    return f"""[model]
hf_dir = "{hf}"

[data]
format = "{r.get('format', 'text')}"
{data_keys(data)}
{'text_split = "' + r['text_split'] + '"' if r.get('text_split', 'eos') != 'eos' else ''}
{'cache_dir = "' + cache_dir + '"' if r.get('format', 'text') == 'text' else ''}
seq_len = {r['seq_len']}
val_fraction = {r['val_fraction']}
packing = {b(r['packing'])}

[optim]
lr = {o['lr']}
min_lr_ratio = {o['min_lr_ratio']}
warmup_steps = {o['warmup_steps']}
schedule = "{o['schedule']}"
beta1 = {o['beta1']}
beta2 = {o['beta2']}
eps = {o['eps']}
weight_decay = {o['weight_decay']}
decay_norms_and_biases = {b(o['decay_norms_and_biases'])}
clip_norm = {o['clip_norm']}

[train]
steps = {r['steps']}
global_batch = {r['global_batch']}
{mb}seed = {r['seed']}
out_dir = "{out_dir}"
log_every = 1
eval_every = {r['eval_every']}
eval_batches = {r['eval_batches']}

[checkpoint]
enabled = false
"""


def ferrotron_trajectory(recipe_path, out_dir, log):
    shutil.rmtree(out_dir, ignore_errors=True)
    rc, _, err, dt = fl.run([fl.FERRO, "train", recipe_path], log)
    if rc != 0:
        return rc, fl.last_line(err), None
    return 0, "", ferrotron_metrics(out_dir)


def ferrotron_metrics(out_dir):
    """Per-step records (loss, grad_norm, lr, and the evaluation's when there is one)."""
    steps, evals, extra = fl.read_metrics(out_dir)
    out = []
    for k in sorted(steps):
        rec = {"step": k, "loss": steps[k], "grad_norm": extra[k][0], "lr": extra[k][2]}
        if k in evals:
            rec.update(eval_loss=evals[k][0], eval_rows=evals[k][1], eval_tokens=evals[k][2])
        out.append(rec)
    return out


def compare(ours, ref):
    """(worst loss rel diff (training and evaluation), worst grad-norm rel diff, worst lr rel
    diff, first step over tol)."""
    if ours is None or len(ours) != len(ref):
        return math.inf, math.inf, math.inf, 1
    wl = wn = wr = 0.0
    first_bad = None
    for a, b in zip(ours, ref):
        dl, dn, dr = fl.rel(a["loss"], b["loss"]), fl.rel(a["grad_norm"], b["grad_norm"]), \
            fl.rel(a["lr"], b["lr"]) if b["lr"] else abs(a["lr"])
        # evaluations: at the same steps over the same rows and tokens, the loss as close
        if ("eval_loss" in a) != ("eval_loss" in b) or any(
                a.get(k) != b.get(k) for k in ("eval_rows", "eval_tokens")):
            dl = math.inf
        elif "eval_loss" in b:
            dl = max(dl, fl.rel(a["eval_loss"], b["eval_loss"]))
        wl, wn, wr = max(wl, dl), max(wn, dn), max(wr, dr)
        if first_bad is None and (dl > LOSS_TOL or dn > NORM_TOL or dr > 1e-12):
            first_bad = a["step"]
    return wl, wn, wr, first_bad


def own_weights_check(case_dir, recipe, hf, data, r, ours, step, log, sets=()):
    """Whether ferrotron's step `step` is right for the weights it had, and those weights are the
    reference's up to round-off: ferrotron saves its weights after step - 1 (a checkpoint,
    exported to HF f32); transformers computes that step's loss and gradient norm from them in
    float64. Returns (loss rel diff, grad-norm rel diff) against ferrotron's record, the worst
    per-tensor ‖w − w_ref‖ / ‖w_ref‖ after step - 1, and the same for torch's own float32 run, or
    None. An exact step and weights no further from the reference than torch's f32 weights mean
    the gap comes from f32 round-off in the weights, amplified by the model at that step."""
    import torch
    from transformers import AutoModelForCausalLM
    out = os.path.join(case_dir, "run-own")
    shutil.rmtree(out, ignore_errors=True)
    extra = [a for x in sets for a in ("--set", x)]
    rc, _, _, _ = fl.run([fl.FERRO, "train", recipe, "--set", f"train.out_dir={out}",
                          "--set", "checkpoint.enabled=true", "--set", f"checkpoint.every={step - 1}",
                          "--set", "checkpoint.keep_last=100"] + extra, log, timeout=3600)
    ckpt = os.path.join(out, "checkpoints", f"step-{step - 1:08d}")
    hf_own = os.path.join(out, "hf")
    if rc != 0 or fl.run([fl.FERRO, "export", ckpt, "--hf", hf_own, "--dtype", "f32"], log)[0]:
        return None
    rows, _ = training_rows(hf, data, r)
    sampler = Sampler(len(rows), r["seed"])
    for _ in range(step):
        segs = [sg for i in sampler.next_global_batch(r["global_batch"]) for sg in rows[i]]
    model = AutoModelForCausalLM.from_pretrained(hf_own, dtype=torch.float64)
    loss, n_targets = segments_loss(model, segs, backward=True)
    norm = grad_norm(model.parameters())
    a = ours[step - 1]
    _, ref_w = reference_trajectory(hf, data, r, weights_after=step - 1)
    _, f32_w = reference_trajectory(hf, data, r, "float32", weights_after=step - 1)

    def drift(ws):
        return max(float((ws[n].detach().double() - w).norm() / max(float(w.norm()), 1e-30))
                   for n, w in ref_w.items())
    return (fl.rel(a["loss"], loss / n_targets), fl.rel(a["grad_norm"], norm),
            drift(dict(model.named_parameters())), drift(f32_w))


def pad_occurrences(hf_dir, data_path, r):
    """How often the model's pad_token_id (nn.Embedding padding_idx: no gradient to its row from
    lookups) is an input token, or a target, in the rows the steps train on; None without one."""
    cfg = json.load(open(os.path.join(hf_dir, "config.json")))
    # an absent key takes the class default: 0 for the Gemma classes
    pad = cfg.get("pad_token_id", 0 if cfg.get("model_type") in fl.GEMMA_FAMILIES else None)
    if pad is None:
        return None
    rows, _ = training_rows(hf_dir, data_path, r)
    sampler = Sampler(len(rows), r["seed"])
    n_in = n_live = n_tg = 0
    for _ in range(r["steps"]):
        for i in sampler.next_global_batch(r["global_batch"]):
            for ids, tg in rows[i]:
                n_in += sum(1 for t in ids if t == pad)
                n_tg += sum(1 for t in tg if t == pad)
                # with a trained target at or after it in its segment (so its row would get a
                # gradient without padding_idx; an eos ending its segment never has one)
                n_live += sum(1 for k, t in enumerate(ids)
                              if t == pad and any(x != -100 for x in tg[k:]))
    return {"pad_token_id": pad, "inputs": n_in, "inputs_upstream_of_a_target": n_live,
            "targets": n_tg}


def explanation(wl, wn, floor, own):
    """Why a run over the tolerance is not a finding, or None. `floor`: torch f32's worst (loss,
    grad norm) against the reference; `own`: own_weights_check's figures."""
    if floor and wl <= 3 * floor[0] and wn <= 3 * floor[1]:
        return "ill-conditioned"
    if own and own[0] <= 1e-6 and own[1] <= 1e-5 and own[2] <= 3 * own[3]:
        return "drift-amplified"
    return None


def run_case(i, args, full_text):
    rng = random.Random(args.seed * 1_000_003 + i)
    case_dir = os.path.join(args.out, f"case-{i:03d}")
    shutil.rmtree(case_dir, ignore_errors=True)
    os.makedirs(case_dir)
    log = os.path.join(case_dir, "runs.log")
    # The data format has its own generator, so text cases draw what they drew before --formats.
    fmt_rng = random.Random(args.seed * 7919 + i + 1)
    fmt = fmt_rng.choice(args.formats.split(","))
    if fmt == "text":
        hf, s = fl.make_model_dir(rng, case_dir, full_text)
    else:
        orig, fl.make_config = fl.make_config, with_context(128 if fmt == "chat" else 256)
        try:
            hf, s = fl.make_model_dir(rng, case_dir, full_text)
        finally:
            fl.make_config = orig
    # The tokenizer's style has a generator of its own too.
    style = random.Random(args.seed * 104729 + i).choice(args.styles.split(","))
    s["style"] = restyle_tokenizer(hf, style, s["vocab"])
    data = fl.make_text(rng, case_dir, full_text)
    if fmt != "text":
        data = make_records(fmt_rng, case_dir, full_text, fmt)
    s["steps"] = args.steps
    r = draw_recipe(rng, s)
    r["format"] = fmt
    if fmt == "text" and args.text_variants:
        # several files (data.paths) and blank-line documents, from a generator of their own
        vrng = random.Random(args.seed * 15485863 + i)
        n_files = vrng.choice([1, 2, 3])
        r["text_split"] = vrng.choice(["eos", "blank_line"])
        if n_files > 1:
            data = split_text_file(vrng, data, n_files)
    recipe = os.path.join(case_dir, "recipe.toml")
    with open(recipe, "w") as f:
        f.write(recipe_toml(hf, data, r, os.path.join(case_dir, "run"),
                            os.path.join(case_dir, "tokcache")))
    rc, msg, ours = ferrotron_trajectory(recipe, os.path.join(case_dir, "run"), log)
    ref = reference_trajectory(hf, data, r)
    pad = pad_occurrences(hf, data, r)
    wl, wn, wr, bad = compare(ours, ref)
    verdict = "pass" if bad is None else ("FAIL" if rc == 0 else f"exit {rc}: {msg}")
    floor = own = None
    if verdict == "FAIL" and wr <= 1e-12:
        # Over many Adam steps round-off can grow: torch in float32 against the same float64
        # reference shows how far any f32 trainer drifts on this case.
        floor = compare(reference_trajectory(hf, data, r, "float32"), ref)[:2]
        verdict = explanation(wl, wn, floor, None) or verdict
    if verdict == "FAIL" and bad > 1 and wr <= 1e-12:
        own = own_weights_check(case_dir, recipe, hf, data, r, ours, bad, log)
        verdict = explanation(wl, wn, floor, own) or verdict
    rec = {"case": i, "model": s, "recipe": r, "verdict": verdict, "worst_loss_rel": wl,
           "worst_grad_norm_rel": wn, "worst_lr_rel": wr, "first_step_over": bad,
           "torch_f32_worst_loss_and_grad_norm_rel": floor,
           "own_weights_loss_and_grad_norm_rel": own, "pad_in_training_inputs": pad,
           "ours": ours, "reference": ref}
    short = {k: s[k] for k in ("family", "vocab", "layers", "heads", "kv", "seq_len", "style")
             if k in s}
    ro = r["optim"]
    print(f"[case {i}] {verdict:5s} {fmt:6s} loss {wl:.2e} gnorm {wn:.2e} lr {wr:.1e}  {short} "
          f"gb {r['global_batch']} mb {r['micro_batch']} packing {r['packing']} "
          f"{ro['schedule']} lr {ro['lr']} wd {ro['weight_decay']} "
          f"decay_all {ro['decay_norms_and_biases']} clip {ro['clip_norm']}"
          + (f"  (torch f32: loss {floor[0]:.2e} gnorm {floor[1]:.2e})" if floor else "")
          + (f"  (f64 at ferrotron's own weights, step {bad}: loss {own[0]:.2e} gnorm {own[1]:.2e};"
             f" weights vs the reference's: ours {own[2]:.2e}, torch f32 {own[3]:.2e})"
             if own else "")
          + (f"  pad id {pad['pad_token_id']}: {pad['inputs']} times an input of the trained "
             f"batches ({pad['inputs_upstream_of_a_target']} before a trained target)"
             if pad else ""), flush=True)
    if bad is not None and ours:
        for a, b in zip(ours, ref):
            ev = (f" eval {a.get('eval_loss')} ({a.get('eval_rows')} rows, {a.get('eval_tokens')}) "
                  f"ref {b.get('eval_loss')} ({b.get('eval_rows')}, {b.get('eval_tokens')})"
                  if "eval_loss" in a or "eval_loss" in b else "")
            print(f"     step {a['step']:3d} loss {a['loss']:.9f} ref {b['loss']:.9f} "
                  f"gnorm {a['grad_norm']:.6g} ref {b['grad_norm']:.6g} lr {a['lr']:.6g} "
                  f"ref {b['lr']:.6g}{ev}", flush=True)
    return rec, hf, data, r


def write_fixture(dest, hf, data, r, ref):
    """tests/fixtures/trajectories/NAME: hf/ (config, weights, tokenizer), data.txt, recipe.toml
    (paths relative to the fixture; the test sets out_dir and cache_dir) and reference.json."""
    shutil.rmtree(dest, ignore_errors=True)
    os.makedirs(dest)
    shutil.copytree(hf, os.path.join(dest, "hf"))
    if isinstance(data, list):
        name = [os.path.basename(p) for p in data]
        for p in data:
            shutil.copy(p, os.path.join(dest, os.path.basename(p)))
    else:
        name = "data.txt" if r.get("format", "text") == "text" else f"{r['format']}.jsonl"
        shutil.copy(data, os.path.join(dest, name))
    with open(os.path.join(dest, "recipe.toml"), "w") as f:
        f.write(recipe_toml("hf", name, r, "run", "tokcache"))
    with open(os.path.join(dest, "reference.json"), "w") as f:
        json.dump({"made_by": "scripts/trajectory_vs_torch.py (torch float64 reference trainer)",
                   "recipe": r, "steps": ref}, f, indent=1)


def recipe_case(path, steps, out):
    """--recipe: a recipe of the repository (text data, one rank) for `steps` steps. ferrotron
    saves its initial weights (checkpoint.save_initial), exported to HF f32 as the reference's
    start; the reference reads the data, the tokenizer ferrotron saved with the checkpoint and
    the recipe's settings (with ferrotron's defaults)."""
    import tomllib
    rec = tomllib.load(open(path, "rb"))
    run = os.path.join(out, "recipe-run")
    shutil.rmtree(run, ignore_errors=True)
    log = os.path.join(out, "recipe-runs.log")
    rc, _, err, _ = fl.run([fl.FERRO, "train", path, "--set", f"train.steps={steps}",
                            "--set", f"train.out_dir={run}", "--set", "train.log_every=1",
                            "--set", "checkpoint.enabled=true", "--set", "checkpoint.every=0",
                            "--set", "checkpoint.save_initial=true"], log, timeout=3600)
    if rc:
        sys.exit(f"ferrotron train {path}: exit {rc}: {fl.last_line(err)}")
    hf0 = os.path.join(run, "hf-step0")
    rc, _, err, _ = fl.run([fl.FERRO, "export", os.path.join(run, "checkpoints", "step-00000000"),
                            "--hf", hf0, "--dtype", "f32"], log)
    if rc:
        sys.exit(f"ferrotron export: exit {rc}: {fl.last_line(err)}")
    d, t, o = rec["data"], rec["train"], rec.get("optim", {})
    if d.get("format", "text") != "text":
        sys.exit("--recipe: text data only")
    defaults = {"lr": 3e-4, "min_lr_ratio": 0.1, "warmup_steps": 0, "schedule": "cosine",
                "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "weight_decay": 0.1,
                "decay_norms_and_biases": False, "clip_norm": 1.0}   # src/recipe.rs
    r = {"format": "text", "seq_len": d["seq_len"], "packing": d.get("packing", True),
         "val_fraction": d.get("val_fraction", 0.05), "text_split": d.get("text_split", "eos"),
         "global_batch": t["global_batch"], "micro_batch": t.get("micro_batch"),
         "seed": t.get("seed", 1234), "steps": steps, "optim": {**defaults, **o},
         "eval_every": t.get("eval_every", 0), "eval_batches": t.get("eval_batches", 8)}
    data = d.get("paths") or d["path"]
    ours = ferrotron_metrics(run)
    ref = reference_trajectory(hf0, data, r)
    wl, wn, wr, bad = compare(ours, ref)
    verdict = "pass" if bad is None else f"over the tolerance from step {bad}"
    if bad is not None and bad > 1 and wr <= 1e-12:
        # the same two explanations as for random cases
        floor = compare(reference_trajectory(hf0, data, r, "float32"), ref)
        own = own_weights_check(out, path, hf0, data, r, ours, bad, log,
                                sets=[f"train.steps={steps}"])
        print(f"torch f32 against the reference: worst loss {floor[0]:.2e}, grad norm "
              f"{floor[1]:.2e}, from step {floor[3]}; at ferrotron's own weights (step {bad}): "
              f"loss {own[0]:.2e}, grad norm {own[1]:.2e}; weights after step {bad - 1} against "
              f"the reference's: ours {own[2]:.2e}, torch f32 {own[3]:.2e}" if own else
              "own-weights check failed to run")
        verdict += ": " + (explanation(wl, wn, floor, own) or "FINDING")
    print(f"{path}, {steps} steps: worst loss rel diff {wl:.2e}, worst grad-norm rel diff "
          f"{wn:.2e}, worst lr rel diff {wr:.1e} -> {verdict}")
    for a, b in zip(ours, ref):
        ev = (f"  eval {a['eval_loss']:.9f} ref {b['eval_loss']:.9f}" if "eval_loss" in a
              and "eval_loss" in b else "")
        print(f"  step {a['step']:3d} loss {a['loss']:.9f} ref {b['loss']:.9f} gnorm "
              f"{a['grad_norm']:.7f} ref {b['grad_norm']:.7f}{ev}")
    return "FINDING" not in verdict


def break_reference(name):
    """--mutate: one deliberate mistake in the reference trainer, to show that the comparison
    catches mistakes of that kind (ferrotron is left as it is; the case should then fail)."""
    global decays, permutation, lr_at, text_rows, alpaca_example, chat_example, CHAT_SPLIT_SEED
    global pack, PAD_GRADIENT
    if name == "decay-norms":                      # weight decay on norms and biases too
        decays = lambda n, a: True  # noqa: E731
    elif name == "next-epoch":                     # the order of the next epoch
        orig_perm = permutation
        permutation = lambda n, seed, e: orig_perm(n, seed, e + 1)  # noqa: E731
    elif name == "lr-late":                        # the schedule one step late
        orig_lr = lr_at
        lr_at = lambda o, step, total: orig_lr(o, max(step - 1, 1), total)  # noqa: E731
    elif name == "no-cont":                        # no target across a row cut
        orig_rows = text_rows
        text_rows = lambda *a: [[st, n, False] for st, n, _ in orig_rows(*a)]  # noqa: E731
    elif name == "alpaca-prompt":                  # prompt tokens trained too
        orig_alpaca = alpaca_example
        alpaca_example = lambda tok, eos, rec: (lambda e: (e[0], [True] * len(e[0])))(  # noqa
            orig_alpaca(tok, eos, rec))
    elif name == "chat-end-of-turn":               # the last token of each turn untrained
        orig_chat = chat_example

        def chat_example(tok, msgs, render=chatml):
            ids, label = orig_chat(tok, msgs, render)
            return ids, [lab and k + 1 < len(label) and label[k + 1] for k, lab in enumerate(label)]
    elif name == "split-seed":                     # another held-out split
        CHAT_SPLIT_SEED += 1
    elif name == "no-pack":                        # examples one per row despite packing
        pack = lambda lengths, cap: [[i] for i in range(len(lengths))]  # noqa: E731
    elif name == "pad-grad":                       # nn.Embedding without padding_idx
        PAD_GRADIENT = True
    else:
        sys.exit(f"--mutate {name}: unknown")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/trajectory-vs-torch")
    ap.add_argument("--cases", type=int, default=12)
    ap.add_argument("--first", type=int, default=0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--styles", default="plain",
                    help="tokenizer styles to draw from: plain (no template, no bos), llama3 "
                         "(bos post-processor and a Llama-3-like template), qwen (Qwen2.5-like "
                         "template); e.g. plain,llama3,qwen")
    ap.add_argument("--text-variants", action="store_true",
                    help="text cases also draw data.paths (2-3 files) and text_split = blank_line")
    ap.add_argument("--formats", default="text",
                    help="data formats to draw from, e.g. text,chat,alpaca (text alone by default)")
    ap.add_argument("--families", default="",
                    help="model families to draw from instead of fuzz_layouts' default "
                         "(llama,llama,qwen2,qwen3,mistral,gpt2,gpt2), e.g. phi3 or "
                         "smollm3,granite or gemma,gemma2,gemma3_text")
    ap.add_argument("--write-fixture", help="store the (single) case here for tests/train_vs_torch.rs")
    ap.add_argument("--mutate", help="break the reference on purpose (a sensitivity check): "
                    "decay-norms, next-epoch, lr-late, no-cont, alpaca-prompt, "
                    "chat-end-of-turn, split-seed, no-pack, pad-grad")
    ap.add_argument("--recipe", help="instead of random cases: this recipe (text data, one "
                    "rank) for --steps steps, from ferrotron's own initial weights")
    args = ap.parse_args()
    fl.set_families(args.families)
    if args.mutate:
        break_reference(args.mutate)
    if args.recipe:
        os.makedirs(args.out, exist_ok=True)
        sys.exit(0 if recipe_case(args.recipe, args.steps, args.out) else 1)
    os.makedirs(args.out, exist_ok=True)
    if not os.path.exists(fl.FERRO):
        sys.exit(f"{fl.FERRO} is missing: cargo build --release")
    full_text = open(fl.TEXT, encoding="utf-8").read()
    recs = []
    for i in range(args.first, args.first + args.cases):
        rec, hf, data, r = run_case(i, args, full_text)
        recs.append(rec)
        if args.write_fixture:
            write_fixture(args.write_fixture, hf, data, r, rec["reference"])
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(recs, f, indent=1)
    n_pass = sum(r["verdict"] == "pass" for r in recs)
    n_ill = sum(r["verdict"] in ("ill-conditioned", "drift-amplified") for r in recs)
    worst = max((r["worst_loss_rel"] for r in recs if r["verdict"] == "pass"), default=0.0)
    worst_n = max((r["worst_grad_norm_rel"] for r in recs if r["verdict"] == "pass"), default=0.0)
    print(f"{n_pass}/{len(recs)} pass, {n_ill} ill-conditioned (torch's own f32 run drifts as "
          f"far, or ferrotron's step is exact for its own weights), {len(recs) - n_pass - n_ill} "
          f"findings; passing cases' worst loss rel diff "
          f"{worst:.2e}, worst grad-norm rel diff {worst_n:.2e} (tolerances {LOSS_TOL:g} / "
          f"{NORM_TOL:g})")
    sys.exit(0 if n_pass + n_ill == len(recs) else 1)


if __name__ == "__main__":
    main()
