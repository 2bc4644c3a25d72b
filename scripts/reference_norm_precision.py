#!/usr/bin/env python3
"""How far a fixture's float64 reference is from an all-float64 computation, because transformers
computes some RMSNorms in float32 inside a float64 model (Gemma, Gemma 2, Gemma 3:
`self._norm(x.float()) * (1.0 + self.weight.float())`; OLMo-2: `hidden_states.to(torch.float32)`).

Reruns the fixture's forward and backward in float64 with those norms patched to stay in float64,
and prints the worst relative gradient difference ‖g − g_ref‖ / ‖g_ref‖ over the parameters and
the loss difference: the floor of any f64 comparison with that reference
(tests/check_hf.rs's tolerance for these fixtures; docs/cpu-runs/gemma-olmo2-2026-12-03.md).

With --torch-f32 it instead runs transformers' own float32 model (norms as shipped) against the
same reference: how far f32 round-off alone moves these gradients. With --torch-bf16, that f32
model under torch.autocast(bfloat16) (PyTorch's mixed precision: f32 residual stream); with
--torch-bf16-pure, the model cast to bfloat16 (bf16 activations throughout, as ferrotron's bf16
mode keeps them). The larger of the two is PyTorch's own bf16 error, which tests/gpu_training.rs
holds ferrotron's CUDA bf16 check-hf to (times 1.5) where it exceeds 2e-2.

Usage: python3 scripts/reference_norm_precision.py [--torch-f32 | --torch-bf16 | --torch-bf16-pure] DIR [...]
"""
import sys

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM
from transformers.models.gemma import modeling_gemma
from transformers.models.gemma2 import modeling_gemma2
from transformers.models.gemma3 import modeling_gemma3
from transformers.models.olmo2 import modeling_olmo2


def gemma_norm(self, x):
    return self._norm(x) * (1.0 + self.weight)


def olmo2_norm(self, h):
    v = h.pow(2).mean(-1, keepdim=True)
    return self.weight * (h * torch.rsqrt(v + self.variance_epsilon))


torch_bf16 = "--torch-bf16" in sys.argv
torch_bf16_pure = "--torch-bf16-pure" in sys.argv
torch_f32 = "--torch-f32" in sys.argv or torch_bf16 or torch_bf16_pure
if not torch_f32:
    modeling_gemma.GemmaRMSNorm.forward = gemma_norm
    modeling_gemma2.Gemma2RMSNorm.forward = gemma_norm
    modeling_gemma3.Gemma3RMSNorm.forward = gemma_norm
    modeling_olmo2.Olmo2RMSNorm.forward = olmo2_norm
what = ("transformers' f32 model under autocast(bf16)" if torch_bf16
        else "transformers' model cast to bf16" if torch_bf16_pure
        else "transformers' f32 model" if torch_f32 else "all-f64 norms")
dtype = torch.bfloat16 if torch_bf16_pure else torch.float32 if torch_f32 else torch.float64

for d in [a for a in sys.argv[1:] if not a.startswith("--torch-")]:
    ref = load_file(d + "/reference.safetensors")
    m = AutoModelForCausalLM.from_pretrained(d, dtype=dtype, attn_implementation="eager")
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=torch_bf16):
        out = m(input_ids=ref["input_ids"], labels=ref["labels"])
    out.loss.float().backward()
    worst = max((((p.grad.double() - ref["grad." + n]).norm() / ref["grad." + n].norm()).item(), n)
                for n, p in m.named_parameters() if p.grad is not None)
    loss = abs(out.loss.item() - ref["loss"].item()) / abs(ref["loss"].item())
    print(f"{d}: {what} vs reference: loss {loss:.2e}, worst gradient {worst[0]:.2e} ({worst[1]})")
