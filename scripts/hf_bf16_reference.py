"""PyTorch's own bf16 error on a check-hf fixture, for comparison with `ferrotron check-hf --dtype bf16`.

Loads the HF model of a fixture directory (tests/fixtures/hf/NAME), runs its reference batch on the
GPU in fp32 and under torch.autocast(bfloat16), takes one AdamW step (lr 1e-3, betas 0.9/0.95,
eps 1e-8, weight decay 0.1 on every parameter: the fixture's rule) and prints, per mode, the loss
and the relative error ||ours - ref|| / ||ref|| of every parameter after the step against the
fixture's fp64 `adamw1.*` tensors, worst first, and the rows over 2e-2.

Usage (on a GPU machine with torch and transformers): python3 hf_bf16_reference.py DIR [DIR ...]
"""
import sys

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM


def run(d, autocast):
    ref = load_file(f"{d}/reference.safetensors")
    model = AutoModelForCausalLM.from_pretrained(d).float().cuda().eval()
    ids, labels = ref["input_ids"].cuda(), ref["labels"].cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
        loss = model(input_ids=ids, labels=labels).loss
    loss.backward()
    grads = {n: p.grad.detach().double().clone() for n, p in model.named_parameters()}
    opt.step()
    rows, grow = [], []
    for n, p in model.named_parameters():
        r = ref.get("adamw1." + n)
        if r is not None:
            r = r.double().cuda()
            rows.append(((p.detach().double() - r).norm().item() / r.norm().item(), n))
        g = ref.get("grad." + n)
        if g is not None:
            g = g.double().cuda()
            grow.append(((grads[n] - g).norm().item() / g.norm().item(), n))
    rows.sort(reverse=True)
    grow.sort(reverse=True)
    mode = "autocast-bf16" if autocast else "fp32"
    print(f"{d} {mode}: loss {loss.item():.6f}; worst grad {grow[0][1]} {grow[0][0]:.3e}")
    print(f"  adamw worst: " + ", ".join(f"{n} {e:.3e}" for e, n in rows[:4]))
    print(f"  adamw rows over 2e-2: {[(n, round(e, 4)) for e, n in rows if e > 2e-2]}")


for d in sys.argv[1:]:
    for autocast in (False, True):
        run(d, autocast)
