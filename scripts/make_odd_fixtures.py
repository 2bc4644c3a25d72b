"""Reference fixtures at odd shapes, computed by Hugging Face transformers in float64.

The six tiny-* fixtures share round sizes (vocab 512, hidden 64, 4 heads, batch 2 x 16). These
use sizes no tile, vector width or head split divides: a vocabulary of 301, 3 or 6 heads with
3:1 grouped-query or 5:1 multi-query attention, 3 x 37 / 3 x 29 / 2 x 33 token batches, an
intermediate size of 200. Written in the layout `ferrotron check-hf` reads
(tests/fixtures/README.md): config.json and model.safetensors from save_pretrained;
reference.safetensors with input_ids, labels (the first S/4 of row 0 ignored), logits and loss
(f64), grad.<param> (f64) and adamw1.<param> (f64) after one AdamW(lr 1e-3, betas (0.9, 0.95),
eps 1e-8, weight decay 0.1) step; reference.json.

The var-* fixtures turn on config keys the tiny-* ones leave at their defaults, each at odd sizes:
Llama with attention and MLP biases, tied embeddings and an explicit head_dim (heads x head_dim !=
hidden); Llama with linear rope scaling and multi-query attention over 7 heads; Llama 3 rope
scaling over more positions than original_max_position_embeddings; Mistral with an explicit
head_dim and a window of 7; Qwen2 with use_sliding_window / max_window_layers; Qwen3 with
attention biases, windows and tied embeddings; GPT-2 with n_inner, gelu_pytorch_tanh and a large
layer_norm_epsilon; yarn rope scaling (Qwen2 at the defaults over 41 positions from an original
16; Qwen3 with an untruncated ramp, beta_fast / beta_slow and the mscale ratio); dynamic rope
scaling within max_position_embeddings; GPT-2 with scale_attn_by_inverse_layer_idx, and with
scale_attn_weights = false; GPT-2 with the exact (erf) GELU, activation_function = "gelu"; GPT-2 with
tie_word_embeddings = false. Two Phi-3 fixtures (kept small: every tracked byte travels to the
GPU machine): fused qkv_proj / gate_up_proj with 4 heads over 2 kv heads and a window of 7; and
Phi-4-mini's rotary: partial_rotary_factor 0.75 with longrope short factors and the attention
factor of max_position_embeddings / original_max_position_embeddings = 4, tied. Both set
pad_token_id to an id their batch holds, whose embedding row nn.Embedding(padding_idx) leaves
without gradient. One SmolLM3 fixture: a NoPE layer (no_rope_layers) beside rotary ones, and a
window on another layer through layer_types. One Granite fixture: its embedding, residual,
attention and logits multipliers, with attention biases. Three Gemma fixtures, each with every
RMSNorm weight drawn at random (POST_INIT), since Gemma's norms scale by (1 + w) and initialize w
to 0: Gemma with the √hidden embedding scale, gelu_pytorch_tanh and head_dim 12 over hidden 16;
Gemma 2 with sandwich norms, query_pre_attn_scalar 20 over head_dim 8, attention and final logit
softcaps of 5 and 3 that bite (init 0.6), and windows of 5 on alternate layers; Gemma 3 (text) with
q_norm / k_norm, windows on layers 0 and 2 and a rope per layer type (local theta 1e4; global
theta 1e6 with linear factor 2). All three tied, with pad_token_id in their batch. One OLMo-2
fixture: no input norms, post_attention_layernorm / post_feedforward_layernorm on the branch
outputs, q_norm / k_norm over each token's whole projection (head_dim 6: 24 and 12 dims), attention
biases, untied, every norm weight drawn around 1 (POST_INIT).
Usage: python3 scripts/make_odd_fixtures.py tests/fixtures/hf [NAME ...]   (default: all)
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import (GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM,
                          MistralConfig, MistralForCausalLM, Phi3Config, Phi3ForCausalLM,
                          Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM,
                          SmolLM3Config, SmolLM3ForCausalLM, GraniteConfig, GraniteForCausalLM,
                          GemmaConfig, GemmaForCausalLM, Gemma2Config, Gemma2ForCausalLM,
                          Gemma3TextConfig, Gemma3ForCausalLM, Olmo2Config, Olmo2ForCausalLM)

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
    "var-llama-bias-tied-hd": (LlamaForCausalLM, LlamaConfig(
        vocab_size=131, hidden_size=72, intermediate_size=100, num_hidden_layers=2,
        num_attention_heads=6, num_key_value_heads=3, head_dim=24, attention_bias=True,
        mlp_bias=True, tie_word_embeddings=True, max_position_embeddings=64, rms_norm_eps=1e-5,
        bos_token_id=0, eos_token_id=1), (2, 19)),
    "var-llama-linear-rope": (LlamaForCausalLM, LlamaConfig(
        vocab_size=137, hidden_size=56, intermediate_size=90, num_hidden_layers=2,
        num_attention_heads=7, num_key_value_heads=1,
        rope_scaling={"rope_type": "linear", "factor": 2.5}, max_position_embeddings=64,
        bos_token_id=0, eos_token_id=1), (3, 21)),
    "var-llama3-rope": (LlamaForCausalLM, LlamaConfig(
        vocab_size=139, hidden_size=48, intermediate_size=70, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, rope_theta=500000.0,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 16},
        max_position_embeddings=64, bos_token_id=0, eos_token_id=1), (2, 40)),
    "var-mistral-window-hd": (MistralForCausalLM, MistralConfig(
        vocab_size=149, hidden_size=60, intermediate_size=88, num_hidden_layers=2,
        num_attention_heads=5, num_key_value_heads=5, head_dim=14, sliding_window=7,
        max_position_embeddings=64, bos_token_id=0, eos_token_id=1), (2, 31)),
    "var-qwen2-window": (Qwen2ForCausalLM, Qwen2Config(
        vocab_size=151, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, use_sliding_window=True, sliding_window=6,
        max_window_layers=1, max_position_embeddings=64, tie_word_embeddings=False,
        bos_token_id=0, eos_token_id=1), (2, 27)),
    "var-qwen3-bias-window": (Qwen3ForCausalLM, Qwen3Config(
        vocab_size=157, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, head_dim=20, attention_bias=True,
        use_sliding_window=True, sliding_window=5, max_window_layers=2,
        max_position_embeddings=64, tie_word_embeddings=True, bos_token_id=0, eos_token_id=1),
        (2, 23)),
    "var-gpt2-inner-tanh": (GPT2LMHeadModel, GPT2Config(
        vocab_size=127, n_embd=40, n_layer=2, n_head=5, n_inner=70,
        activation_function="gelu_pytorch_tanh", layer_norm_epsilon=1e-3, n_positions=48,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=1),
        (3, 17)),
    "var-qwen2-yarn": (Qwen2ForCausalLM, Qwen2Config(
        vocab_size=163, hidden_size=48, intermediate_size=80, num_hidden_layers=2,
        num_attention_heads=3, num_key_value_heads=1, max_position_embeddings=64,
        rope_scaling={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16},
        tie_word_embeddings=False, bos_token_id=0, eos_token_id=1), (2, 41)),
    "var-qwen3-yarn-mscale": (Qwen3ForCausalLM, Qwen3Config(
        vocab_size=167, hidden_size=64, intermediate_size=72, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=32, rope_theta=1000000.0,
        rope_scaling={"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 8,
                      "beta_fast": 8.0, "beta_slow": 2.0, "truncate": False, "mscale": 0.707,
                      "mscale_all_dim": 1.0},
        max_position_embeddings=64, tie_word_embeddings=True, bos_token_id=0, eos_token_id=1),
        (2, 35)),
    "var-llama-dynamic-rope": (LlamaForCausalLM, LlamaConfig(
        vocab_size=173, hidden_size=40, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=5, num_key_value_heads=5,
        rope_scaling={"rope_type": "dynamic", "factor": 3.0}, max_position_embeddings=32,
        bos_token_id=0, eos_token_id=1), (2, 32)),
    "var-gpt2-layer-scaled": (GPT2LMHeadModel, GPT2Config(
        vocab_size=179, n_embd=36, n_layer=3, n_head=3, n_positions=40,
        scale_attn_by_inverse_layer_idx=True, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=0, eos_token_id=1), (2, 25)),
    "var-gpt2-unscaled": (GPT2LMHeadModel, GPT2Config(
        vocab_size=181, n_embd=32, n_layer=2, n_head=4, n_positions=40,
        scale_attn_weights=False, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=0, eos_token_id=1), (2, 23)),
    # the exact (erf) GELU, as Cerebras-GPT sets it; a wide init puts the MLP's inputs where
    # the tanh approximation is off by up to 5e-4 (|x| ~ 1-3), so the two are told apart
    "var-gpt2-gelu-erf": (GPT2LMHeadModel, GPT2Config(
        vocab_size=157, n_embd=36, n_layer=2, n_head=3, n_inner=93, n_positions=40,
        activation_function="gelu", initializer_range=0.25, resid_pdrop=0.0, embd_pdrop=0.0,
        attn_pdrop=0.0, bos_token_id=0, eos_token_id=1), (3, 19)),
    # an untied output layer (transformers 5 keeps `lm_head.weight` beside `transformer.wte`)
    "var-gpt2-untied": (GPT2LMHeadModel, GPT2Config(
        vocab_size=191, n_embd=30, n_layer=2, n_head=3, n_positions=36, tie_word_embeddings=False,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=1),
        (2, 27)),
    # Phi-3: fused projections, GQA, a window; pad_token_id 51 occurs once in the batch
    "var-phi3": (Phi3ForCausalLM, Phi3Config(
        vocab_size=61, hidden_size=32, intermediate_size=24, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        sliding_window=7, tie_word_embeddings=False, bos_token_id=0, eos_token_id=1,
        pad_token_id=51), (2, 23)),
    # Phi-4-mini's rotary: 12 of 16 dims rotate, longrope short factors (the batch stays within
    # original_max_position_embeddings 32), attention factor sqrt(1 + ln 4 / ln 32); pad 47
    "var-phi3-longrope": (Phi3ForCausalLM, Phi3Config(
        vocab_size=67, hidden_size=32, intermediate_size=24, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128,
        original_max_position_embeddings=32,
        rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0,
                         "partial_rotary_factor": 0.75,
                         "short_factor": [1.0, 1.3, 2.1, 3.7, 5.9, 8.2],
                         "long_factor": [1.1, 1.9, 4.0, 7.5, 11.0, 16.0]},
        tie_word_embeddings=True, bos_token_id=0, eos_token_id=1, pad_token_id=47), (3, 29)),
    # the same beyond original_max_position_embeddings 16 (21 positions): transformers uses the
    # long factors for this forward; attention factor sqrt(1 + ln 4 / ln 16); pad 27
    "var-phi3-longrope-long": (Phi3ForCausalLM, Phi3Config(
        vocab_size=53, hidden_size=32, intermediate_size=24, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
        original_max_position_embeddings=16,
        rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0,
                         "partial_rotary_factor": 0.75,
                         "short_factor": [1.0, 1.3, 2.1, 3.7, 5.9, 8.2],
                         "long_factor": [1.1, 1.9, 4.0, 7.5, 11.0, 16.0]},
        tie_word_embeddings=True, bos_token_id=0, eos_token_id=1, pad_token_id=27), (2, 21)),
    # SmolLM3: layer 1 attends without positions (NoPE), layer 2 through a window of 5 (its
    # layer_types), tied by the class default; pad_token_id 29 occurs twice in the batch. With
    # attention biases, layer 1's key bias only shifts each row's scores: its gradient is 0
    # (transformers' holds round-off), which check-hf compares at the model's gradient scale
    "var-smollm3": (SmolLM3ForCausalLM, SmolLM3Config(
        vocab_size=59, hidden_size=32, intermediate_size=24, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        no_rope_layers=[1, 0, 1], use_sliding_window=True, sliding_window=5, attention_bias=True,
        layer_types=["full_attention", "full_attention", "sliding_attention"],
        bos_token_id=0, eos_token_id=1, pad_token_id=29), (2, 21)),
    # Granite 3.x: x0 = 12·embedding, each branch ×0.22 before its residual add, the softmax scale
    # 0.09 itself, logits / 8; q/k/v/o biases, tied; pad_token_id 49 occurs twice in the batch
    "var-granite": (GraniteForCausalLM, GraniteConfig(
        vocab_size=57, hidden_size=32, intermediate_size=24, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        embedding_multiplier=12.0, residual_multiplier=0.22, attention_multiplier=0.09,
        logits_scaling=8.0, attention_bias=True, tie_word_embeddings=True,
        bos_token_id=0, eos_token_id=1, pad_token_id=49), (2, 19)),
    # Gemma: x0 = √hidden·embedding (4 here), RMSNorm as x̂·(1 + w) with each w drawn at random
    # (POST_INIT), gelu_pytorch_tanh, head_dim 12 with hidden 16 and 4 heads over 2 kv heads, a
    # wide init (0.25) so the logits spread; tied; pad_token_id 16 occurs three times in the batch
    "var-gemma": (GemmaForCausalLM, GemmaConfig(
        vocab_size=61, hidden_size=16, intermediate_size=20, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=12, max_position_embeddings=64,
        hidden_act="gelu_pytorch_tanh", rms_norm_eps=1e-6, initializer_range=0.25,
        tie_word_embeddings=True, bos_token_id=0, eos_token_id=1, pad_token_id=16), (2, 19)),
    # Gemma 2: sandwich norms (post-attention / pre- and post-feedforward), q·k scaled by
    # query_pre_attn_scalar^-1/2 = 20^-1/2 (head_dim 8), then tanh-capped at 5; logits capped at 3;
    # windows of 5 on layers 0 and 2 (the default alternation), 21 positions. Init 0.6 puts half
    # the scaled scores beyond ±2 and an eighth beyond ±5 (max ~19), so both caps bite; tied;
    # pad_token_id 9 occurs four times in the batch
    "var-gemma2": (Gemma2ForCausalLM, Gemma2Config(
        vocab_size=53, hidden_size=16, intermediate_size=12, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=64,
        hidden_activation="gelu_pytorch_tanh", query_pre_attn_scalar=20, sliding_window=5,
        attn_logit_softcapping=5.0, final_logit_softcapping=3.0, rms_norm_eps=1e-6,
        initializer_range=0.6, tie_word_embeddings=True, bos_token_id=0, eos_token_id=1,
        pad_token_id=9), (2, 21)),
    # Gemma 3 (text): q_norm / k_norm (x̂·(1 + w) per head) before rotary, sliding layers 0 and 2
    # (window 5) with the local rope (theta 1e4), the full layer 1 with the global one (theta 1e6,
    # linear factor 2), query_pre_attn_scalar 20 with head_dim 12, 2 heads over 1 kv head, no
    # softcaps; tied; pad_token_id 32 three times in the batch
    "var-gemma3": (Gemma3ForCausalLM, Gemma3TextConfig(
        vocab_size=47, hidden_size=16, intermediate_size=20, num_hidden_layers=3,
        num_attention_heads=2, num_key_value_heads=1, head_dim=12, max_position_embeddings=64,
        hidden_activation="gelu_pytorch_tanh", query_pre_attn_scalar=20, sliding_window=5,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"],
        rope_parameters={"full_attention": {"rope_type": "linear", "factor": 2.0,
                                            "rope_theta": 1000000.0},
                         "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}},
        rms_norm_eps=1e-6, initializer_range=0.3, tie_word_embeddings=True,
        bos_token_id=0, eos_token_id=1, pad_token_id=32), (2, 21)),
    # OLMo-2: no input norms; the attention and MLP outputs normed before their residual adds;
    # q_norm / k_norm over the whole projection ([4·6], [2·6]) before rotary; attention biases,
    # untied; norm weights around 1 (POST_INIT); pad_token_id 29 occurs twice in the batch
    "var-olmo2": (Olmo2ForCausalLM, Olmo2Config(
        vocab_size=59, hidden_size=16, intermediate_size=20, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=6, max_position_embeddings=64,
        attention_bias=True, rms_norm_eps=1e-6, initializer_range=0.3,
        bos_token_id=0, eos_token_id=1, pad_token_id=29), (2, 19)),
}


def randomize_norms_around_one(model):
    """Norms that scale by w (init 1): every norm weight drawn from 1 + N(0, 0.3²)."""
    randomize_norms(model)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "norm" in n:
                p.add_(1.0)


def randomize_norms(model, seed=2468, scale=0.3):
    """Gemma's RMSNorm multiplies by (1 + w) and initializes w to zeros, which would hide an x̂·w
    implementation: draw every norm weight (name containing "norm") from N(0, scale²) instead."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "norm" in n:
                p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * scale)


# fixtures whose freshly initialized model is changed before save_pretrained (the others are
# written as constructed, so their bytes do not depend on this table)
POST_INIT = {"var-gemma": randomize_norms, "var-gemma2": randomize_norms,
             "var-gemma3": randomize_norms, "var-olmo2": randomize_norms_around_one}


def write_fixture(out_dir, name, model_class, config, batch_shape):
    torch.manual_seed(4321)
    config._attn_implementation = "eager"
    model = model_class(config).eval()
    if name in POST_INIT:
        POST_INIT[name](model)
    target = os.path.join(out_dir, name)
    os.makedirs(target, exist_ok=True)
    model.save_pretrained(target, safe_serialization=True)
    loss, names = write_reference(model.double(), target, batch_shape, model_class.__name__)
    print(name, "loss", loss, "parameters", len(names))


def write_reference(model, target, batch_shape, class_name, seed=77):
    """reference.safetensors and reference.json for the f64 `model` into `target` (see the top
    comment); returns the loss and the parameter names."""
    batch, seq = batch_shape
    gen = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, model.config.vocab_size, (batch, seq), generator=gen)
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
                   "transformers_class": class_name}, f, indent=1)
    return loss, names


if __name__ == "__main__":
    wanted = sys.argv[2:] or list(ODD)
    unknown = [n for n in wanted if n not in ODD]
    if unknown:
        sys.exit(f"make_odd_fixtures: unknown fixture(s) {unknown}; known: {list(ODD)}")
    for fixture_name in wanted:
        cls, cfg, shape = ODD[fixture_name]
        write_fixture(sys.argv[1], fixture_name, cls, cfg, shape)
