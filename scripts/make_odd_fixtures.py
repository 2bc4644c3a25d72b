"""Reference fixtures at odd shapes, computed by Hugging Face transformers in float64.

The six tiny-* fixtures share round sizes (vocab 512, hidden 64, 4 heads, batch 2 x 16). These
use sizes no tile, vector width or head split divides: a vocabulary of 301, 3 or 6 heads with
3:1 grouped-query or 5:1 multi-query attention, 3 x 37 / 3 x 29 / 2 x 33 token batches, an
intermediate size of 200. Written in the layout `ferrotron check-hf` reads
(tests/fixtures/README.md): config.json and model.safetensors from save_pretrained;
reference.safetensors with input_ids, labels (the first S/4 of row 0 ignored), logits and loss
(f64), grad.<param> (f64) and adamw1.<param> (f64) after one AdamW(lr 1e-3, betas (0.9, 0.95),
eps 1e-8, weight decay 0.1) step; reference.json.
Usage: python3 scripts/make_odd_fixtures.py tests/fixtures/hf
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import (GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, Qwen2Config,
                          Qwen2ForCausalLM)

ODD = {
    "odd-llama": (LlamaForCausalLM, LlamaConfig(
        vocab_size=301, hidden_size=72, intermediate_size=200, num_hidden_layers=3,
        num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=128,
        rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=False,
        bos_token_id=0, eos_token_id=1), (3, 37)),
    "odd-gpt2": (GPT2LMHeadModel, GPT2Config(
        vocab_size=301, n_embd=48, n_layer=3, n_head=3, n_positions=64, resid_pdrop=0.0,
        embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=1), (3, 29)),
    "odd-qwen2": (Qwen2ForCausalLM, Qwen2Config(
        vocab_size=301, hidden_size=80, intermediate_size=144, num_hidden_layers=2,
        num_attention_heads=5, num_key_value_heads=1, max_position_embeddings=128,
        rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True,
        bos_token_id=0, eos_token_id=1), (2, 33)),
}


def write_fixture(out_dir, name, model_class, config, batch_shape):
    torch.manual_seed(4321)
    config._attn_implementation = "eager"
    model = model_class(config).eval()
    target = os.path.join(out_dir, name)
    os.makedirs(target, exist_ok=True)
    model.save_pretrained(target, safe_serialization=True)
    model = model.double()
    batch, seq = batch_shape
    gen = torch.Generator().manual_seed(77)
    input_ids = torch.randint(0, config.vocab_size, (batch, seq), generator=gen)
    labels = input_ids.clone()
    labels[0, : seq // 4] = -100
    result = model(input_ids=input_ids, labels=labels)
    result.loss.backward()
    tensors = {"input_ids": input_ids, "labels": labels,
               "logits": result.logits.detach().contiguous(),
               "loss": result.loss.detach().reshape(1)}
    names = [n for n, _ in model.named_parameters()]
    for n, p in model.named_parameters():
        tensors["grad." + n] = p.grad.detach().clone().contiguous()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), eps=1e-8,
                                  weight_decay=0.1)
    optimizer.step()
    for n, p in model.named_parameters():
        tensors["adamw1." + n] = p.detach().clone().contiguous()
    save_file(tensors, os.path.join(target, "reference.safetensors"))
    loss = float(result.loss.detach())
    with open(os.path.join(target, "reference.json"), "w") as f:
        json.dump({"batch": batch, "seq": seq, "loss": loss, "params": names,
                   "transformers_class": model_class.__name__}, f, indent=1)
    print(name, "loss", loss, "parameters", len(names))


if __name__ == "__main__":
    for fixture_name, (cls, cfg, shape) in ODD.items():
        write_fixture(sys.argv[1], fixture_name, cls, cfg, shape)
