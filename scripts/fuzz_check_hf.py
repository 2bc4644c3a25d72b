"""Random-config differential test of `ferrotron check-hf` against Hugging Face transformers.

For each case this draws a small random config of one of the supported classes (LlamaForCausalLM
with default / linear / llama3 / yarn / dynamic rope scaling, GPT2LMHeadModel, Qwen2ForCausalLM,
Qwen3ForCausalLM, MistralForCausalLM; with --families also Phi3ForCausalLM (fused projections,
windows, partial rotary, longrope), SmolLM3ForCausalLM (NoPE layers, windows) and
GraniteForCausalLM (multipliers), each with a pad_token_id that is often in the batch; and the
Gemma family, see below), writes a fixture exactly as scripts/make_odd_fixtures.py's
`write_fixture` does (the same procedure as the shared make_fixtures.py `make()`: f64 model from
fp32 save_pretrained weights, labels with row 0's first S/4 = -100, gradients, one AdamW step,
reference.safetensors + reference.json), optionally rewrites config.json into the transformers 4.x
layout (top-level rope_theta + `rope_scaling`, or both layouts at once), reloads the directory with
transformers to make sure config.json on disk still reproduces the reference logits, and then runs

    ferrotron check-hf DIR                    (f32)
    ferrotron check-hf DIR --dtype f64
    mpirun -np 2 ferrotron check-hf DIR --tp 2 [--sequence-parallel]   (every ~4th case)
    mpirun -np 3 ferrotron check-hf DIR --tp 3 [--sequence-parallel]   (when 3 divides the heads)

and records, per run, the exit code, the max rel_err of the report and a verdict:
  pass              max rel_err within the limit (1e-5 f32, 1e-6 f64)
  HIGH              ran, but max rel_err above that limit (a finding, even if within --tol)
  FAIL              exit 1 (above ferrotron's own tolerance)
  refused           exit 2 with a message, for a config drawn with a setting outside the supported
                    list (activation gelu/relu/silu, longrope, partial_rotary_factor, ...)
  REFUSED-SUPPORTED exit 2 on a config that only uses listed settings (a finding)
  PANIC / CRASH / HANG   exit 101 / other exit / timeout (findings)
A tp run refused with exit 2 (e.g. sequence parallelism over a token count tp does not divide) is
`refused-tp`, listed separately. Two explanations are checked automatically:
  high-ref-f32-steps    an f64 run above 1e-6 that is within 1e-6 of a pure-f64 transformers
                        reference (transformers' "f64" model still computes the rope angles,
                        RMSNorm, softmax and loss in f32; see make_pure64_reference)
  high-ill-conditioned  an f32 run above 1e-5 whose error is no larger than transformers' own f32
                        model's error on the same fixture (transformers_f32_error)
  (Gemma cases also: high-tiny-grad, and "transformers quirk" labels; see below)

Usage:
  python3 scripts/fuzz_check_hf.py --seed 1 --count 20 [--out /tmp/fuzz-hf] [--bin target/release/ferrotron]
  python3 scripts/fuzz_check_hf.py --seed 1 --count 20 --only 7      # redo case 7 of seed 1
  python3 scripts/fuzz_check_hf.py --seed 8 --count 100 --init 0.25  # sharper weights
  python3 scripts/fuzz_check_hf.py --seed 6 --count 100 --pure64     # + f64 vs an all-f64 reference
  python3 scripts/fuzz_check_hf.py --summarize                      # all OUT/results-s*.json
  python3 scripts/fuzz_check_hf.py --seed 36 --count 60 --families phi3,smollm3,granite
  python3 scripts/fuzz_check_hf.py --seed 51 --count 60 --families gemma,gemma2,gemma3_text
--families replaces the default family list (llama ×3, gpt2, qwen2, qwen3, mistral); without it
every case of a seed is drawn exactly as before.

Gemma family (--families gemma,gemma2,gemma3_text: GemmaForCausalLM, Gemma2ForCausalLM and
Gemma3ForCausalLM with Gemma3TextConfig; draw_gemma_case). Per case: heads 1-12 with kv heads
dividing them, an explicit head_dim (mostly != hidden / heads; 256, the class default, now and
then), hidden a multiple of the heads (Gemma2Config / Gemma3TextConfig refuse others; Gemma 1 also
gets any hidden), 1-4 layers, odd vocabularies, batches of 1-5 rows; hidden_act (Gemma 1) /
hidden_activation among gelu_pytorch_tanh, gelu (Gemma 1 reads it as the tanh GELU, Gemma 2/3 as
the exact one), gelu_new, gelu_fast, gelu_python, silu, and rarely relu / quick_gelu / gelu_10
(expected refusals); attention_bias; tied or not; pad_token_id in the batch, another id or null;
rms_norm_eps 1e-8-1e-2. Every RMSNorm weight is drawn from N(0, norm_scale²) (Gemma computes
x̂·(1 + w) and initializes w to 0, which would hide an x̂·w bug), and about 40% of the cases use
an initializer_range of 0.2-0.6 so that softcaps and attention sharpness bite. Gemma 1/2: default
rope mostly, sometimes linear / llama3 / yarn / dynamic, in 5.x or 4.x keywords. Gemma 2 and 3:
query_pre_attn_scalar (often head_dim, 256, or unrelated values), attn_logit_softcapping and
final_logit_softcapping absent (class default), null or a value (Gemma 2 mostly set, Gemma 3 mostly
absent = none), sliding_window mostly shorter than the sequence (else longer, or absent = 4096;
never null, which transformers cannot run), layer_types explicit or derived (Gemma 2: alternating;
Gemma 3: every sliding_window_pattern-th layer full, pattern 1-5 or the default 6). Gemma 3: q/k
norms (always), a rope per layer type: full_attention default / linear / llama3 / yarn / dynamic
with its own theta, sliding_attention default (rarely linear) with its own theta, as
rope_parameters (now and then without its sliding_attention entry) or as the original keys
rope_theta + rope_local_base_freq + rope_scaling; rarely use_bidirectional_attention (refusal).
rewrite_gemma_config then writes config.json's rope keys in the 4.x or both layouts and, for
"legacy_windows" cases, drops Gemma 2's default layer_types (adding cache_implementation /
sliding_window_size) or replaces Gemma 3's by sliding_window_pattern, and may add the other
class's activation key with another value (hidden_activation to Gemma 1, hidden_act to Gemma 2/3:
ignored by transformers); drop_default_keys may also drop Gemma keys at their class defaults
(pad_token_id, query_pre_attn_scalar, the softcaps, use_bidirectional_attention, ...).
Gemma cases run tp 2, 3 and 4 wherever heads and kv heads divide (every other case), each with and
without --sequence-parallel (refused-tp where the tokens do not divide).
Gemma limits: f32 1e-5, f64 2e-6 (transformers' Gemma RMSNorm computes in f32 inside the f64
model). Beyond the two automatic explanations above, gemma_explain also marks an f64 FAIL whose
pure-f64 recheck passes as high-ref-f32-steps, and an f32 run above 1e-5 as high-ill-conditioned
when its error against the pure-f64 reference is within 1.5x the largest error of transformers'
own f32 model there under 8 equally valid roundings (as loaded, and 7 copies with weights nudged
by one f32 ulp: transformers_f32_spread). The mixed fixture shares transformers' f32 norm steps,
which favours transformers' unperturbed f32 model; wide-init Gemma cases spread over 1e-4. Still
above: high-tiny-grad when the errors taken at the scale of the largest gradient are within 1e-5
(see gemma_explain).
Known transformers 5.24 behaviours that ferrotron refuses rather than mimics (expected refusals):
gemma3_text's attn_logit_softcapping (Gemma3Attention passes no softcap to its attention
function); a per-layer-type yarn dict's truncate: false (_compute_yarn_parameters reads `truncate`
from the top level of rope_parameters); a Gemma 3 4.x rope_scaling naming its type under the old
key "type" (Gemma3TextConfig keeps the default rope). GEMMA_QUIRKS (a failing case where editing
config.json to what transformers computes passes is labelled "transformers quirk: ...") lists
none now; the mechanism stays for the next one.
Quirk cases keep their FAIL verdicts (ferrotron differs from transformers there). Runs so far:
seeds 51 (60 cases), 52, 53 (100 each), 54 (80) and 55 (40, --init 0.5): 380 cases.
Cases are reproducible from (seed, index): the directory is OUT/s<seed>-<index>-<family>.
Results: OUT/results-s<seed>.json (one record per case) and a summary table on stdout.
"""
import argparse
import copy
import json
import os
import random
import re
import subprocess
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import torch  # noqa: E402
from make_odd_fixtures import POST_INIT, randomize_norms, write_fixture  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import (AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, LlamaConfig,  # noqa: E402
                          GraniteConfig, GraniteForCausalLM, LlamaForCausalLM, MistralConfig,
                          MistralForCausalLM, Phi3Config, Phi3ForCausalLM, Qwen2Config,
                          Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM, SmolLM3Config,
                          SmolLM3ForCausalLM, GemmaConfig, GemmaForCausalLM, Gemma2Config,
                          Gemma2ForCausalLM, Gemma3TextConfig, Gemma3ForCausalLM)

CLASSES = {
    "llama": (LlamaForCausalLM, LlamaConfig),
    "gpt2": (GPT2LMHeadModel, GPT2Config),
    "qwen2": (Qwen2ForCausalLM, Qwen2Config),
    "qwen3": (Qwen3ForCausalLM, Qwen3Config),
    "mistral": (MistralForCausalLM, MistralConfig),
    "phi3": (Phi3ForCausalLM, Phi3Config),
    "smollm3": (SmolLM3ForCausalLM, SmolLM3Config),
    "granite": (GraniteForCausalLM, GraniteConfig),
    "gemma": (GemmaForCausalLM, GemmaConfig),
    "gemma2": (Gemma2ForCausalLM, Gemma2Config),
    "gemma3_text": (Gemma3ForCausalLM, Gemma3TextConfig),
}
DEFAULT_FAMILIES = ["llama", "llama", "llama", "gpt2", "qwen2", "qwen3", "mistral"]
FAMILIES = list(DEFAULT_FAMILIES)  # --families replaces it
NEW_FAMILIES = ("phi3", "smollm3", "granite")
GEMMA_FAMILIES = ("gemma", "gemma2", "gemma3_text")
LIMIT = {"f32": 1e-5, "f64": 1e-6}
# transformers' Gemma RMSNorm computes in float32 inside its float64 model (x.float(), then
# (1 + w.float())), so the f64 reference itself carries ~1e-7-1e-6 of f32 rounding
LIMIT_GEMMA = {"f32": 1e-5, "f64": 2e-6}
MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}


def divisors(n):
    return [d for d in range(1, n + 1) if n % d == 0]


def draw_rope(rng, kind, theta, head_dim, max_pos, seq):
    """A rope dict (5.x rope_parameters form, rope_theta included) for `kind`."""
    d = {"rope_type": kind, "rope_theta": theta}
    if kind == "linear":
        d["factor"] = rng.choice([2.0, 2.5, 4.0, 8.0, 1.5, 0.5])
    elif kind == "llama3":
        low = rng.choice([1.0, 1.0, 0.5, 2.0])
        high = rng.choice([h for h in [2.0, 4.0, 8.0, 3.0] if h > low])
        d.update(factor=rng.choice([8.0, 4.0, 2.0, 32.0, 3.5]), low_freq_factor=low,
                 high_freq_factor=high,
                 original_max_position_embeddings=rng.randint(4, max(4, min(64, max_pos))))
    elif kind == "yarn":
        d["factor"] = rng.choice([4.0, 2.0, 8.0, 2.5, 16.0])
        if rng.random() < 0.8:
            d["original_max_position_embeddings"] = rng.randint(4, 64)
        if rng.random() < 0.5:
            bf = rng.choice([8.0, 16.0, 32.0, 64.0, 4.0])
            bs = rng.choice([b for b in [1.0, 2.0, 0.5, 4.0] if b <= bf])
            d.update(beta_fast=bf, beta_slow=bs)
        if rng.random() < 0.5:
            d["truncate"] = rng.choice([True, False])
        r = rng.random()
        if r < 0.25:
            d["attention_factor"] = rng.choice([0.8, 1.0, 1.3])
        elif r < 0.5:
            d.update(mscale=rng.choice([0.707, 1.0, 0.5]), mscale_all_dim=rng.choice([1.0, 0.707, 0.0]))
        elif r < 0.6:
            d["mscale"] = 0.707  # alone: ignored by transformers
    elif kind == "dynamic":
        d["factor"] = rng.choice([2.0, 3.0, 4.5])
    return d


def batch_ids(vocab, batch, seq):
    """The input ids write_reference draws for a fixture of this shape (generator seed 77)."""
    gen = torch.Generator().manual_seed(77)
    return torch.randint(0, vocab, (batch, seq), generator=gen).flatten().tolist()


def draw_new_family(rng, fam, kw, batch, seq, layers, hidden, heads, hd, theta, tp_shape):
    """Fills `kw` for phi3 / smollm3 / granite (see the top comment); returns the rope kind.
    Sets kw["_unsupported"] when it draws a setting ferrotron refuses."""
    vocab = kw["vocab_size"]
    # pad_token_id: an id of the batch (its row then gets no lookup gradient), another id, none
    r = rng.random()
    if r < 0.55:
        kw["pad_token_id"] = rng.choice(batch_ids(vocab, batch, seq))
    elif r < 0.8:
        kw["pad_token_id"] = rng.randint(0, vocab - 1)
    else:
        kw["pad_token_id"] = None
    max_pos = seq + rng.choice([0, 1, 3, 10, 40, 100])
    kw["max_position_embeddings"] = max_pos
    rope = {"rope_type": "default", "rope_theta": theta}
    kind = "default"
    if fam == "phi3":
        kw.pop("head_dim", None)  # Phi3Config validates the rotary dims from hidden // heads
        dh = hidden // heads
        if rng.random() < 0.5:
            p = rng.choice([0.5, 0.75, 0.25, 0.6])
            rot = int(dh * p)
            if rot % 2 or rot < 2:
                kw["_unsupported"] = f"partial rotary {p} of {dh}: {rot} dims"
            if rng.random() < 0.5:
                kw["partial_rotary_factor"] = p
            else:
                rope["partial_rotary_factor"] = p
        else:
            rot = dh
        if rng.random() < 0.5 and rot >= 2:
            kind = "longrope"
            # below seq: transformers' long factors for this forward
            orig = rng.choice([seq, seq + rng.randint(0, 20), max(2, seq // 2)])
            kw["max_position_embeddings"] = max(max_pos, orig * rng.choice([1, 2, 4, 32]))
            kw["original_max_position_embeddings"] = orig
            rope.update(rope_type="longrope", original_max_position_embeddings=orig,
                        short_factor=[round(rng.uniform(1.0, 6.0), 3) for _ in range(rot // 2)],
                        long_factor=[round(rng.uniform(1.0, 30.0), 3) for _ in range(rot // 2)])
            if rng.random() < 0.3:
                rope["attention_factor"] = rng.choice([1.0, 1.2, 0.9])
        if rng.random() < 0.5 and seq >= 3:
            kw["sliding_window"] = rng.randint(1, seq - 1)
    else:
        kind = rng.choice(["default"] * 4 + ["linear", "llama3", "yarn", "dynamic"])
        if kind == "dynamic":
            kw["max_position_embeddings"] = max_pos = seq + rng.choice([0, 0, 2, 9])
        rope = draw_rope(rng, kind, theta, hd, max_pos, seq)
        if rng.random() < 0.4:
            kw["attention_bias"] = True
        if rng.random() < 0.3:
            kw["mlp_bias"] = True
    if fam == "smollm3":
        if rng.random() < 0.6:
            kw["no_rope_layers"] = [int(rng.random() < 0.6) for _ in range(layers)]
        else:
            kw["no_rope_layer_interval"] = rng.choice([1, 2, 3, 4])
        kw["tie_word_embeddings"] = rng.random() < 0.7
        if rng.random() < 0.6 and seq >= 3:
            kw.update(use_sliding_window=True, sliding_window=rng.randint(1, seq - 1))
            if rng.random() < 0.4:
                kw["layer_types"] = [rng.choice(["sliding_attention", "full_attention"])
                                     for _ in range(layers)]
    if fam == "granite":
        kw.update(embedding_multiplier=rng.choice([1.0, 12.0, 4.5, 0.5]),
                  residual_multiplier=rng.choice([0.22, 1.0, 0.1, 0.5]),
                  attention_multiplier=rng.choice([1.0 / hd, hd ** -0.5, 0.0078125, 0.3]),
                  logits_scaling=rng.choice([1.0, 8.0, 16.0, 2.5]))
    if rng.random() < 0.5 or fam == "phi3":
        kw["rope_parameters"] = rope
    else:  # transformers 4.x keyword style
        kw["rope_theta"] = rope.pop("rope_theta")
        if rope["rope_type"] != "default":
            kw["rope_scaling"] = rope
    return kind


def draw_gemma_case(rng, seed, idx, fam):
    """A random gemma / gemma2 / gemma3_text case (only reached through --families). Gemma's
    RMSNorm scales by (1 + w) with w initialized to 0, so run_case draws every norm weight at
    random (make_odd_fixtures.randomize_norms at case["norm_scale"]); a wide initializer_range
    (0.2-0.6) in about 40% of the cases puts attention scores and logits where softcaps bite."""
    tp_case = idx % 2 == 1  # half the cases: tensor / sequence parallel runs too
    tp_shape = tp_case and rng.random() < 0.85
    batch = rng.choice([1, 2, 2, 3, 3, 4, 5])
    seq = rng.randint(2, 45)
    if tp_shape and rng.random() < 0.6:
        seq = rng.choice([s for s in range(2, 46) if (batch * s) % 12 == 0] or [12])
    vocab = rng.randint(50, 700)
    layers = rng.randint(1, 4)
    init = (rng.choice([0.02, 0.05, 0.1, 0.1]) if rng.random() < 0.6
            else round(rng.uniform(0.2, 0.6), 3))
    unsupported = None
    kw = {"vocab_size": vocab, "initializer_range": init, "num_hidden_layers": layers}
    if rng.random() < 0.6:
        kw.update(bos_token_id=rng.randint(0, vocab - 1), eos_token_id=rng.randint(0, vocab - 1))
        if rng.random() < 0.3:
            kw["eos_token_id"] = [rng.randint(0, vocab - 1), rng.randint(0, vocab - 1)]
    heads = rng.choice([2, 4, 6, 8, 3, 6, 12, 4]) if tp_shape else rng.randint(1, 8)
    divs = divisors(heads)
    kv = rng.choice(divs + [1, heads])
    if tp_shape:
        kv = rng.choice([d for d in divs if d % 2 == 0 or d % 3 == 0] or [heads])
    # Gemma2Config / Gemma3TextConfig refuse hidden % heads != 0 (even with a head_dim); GemmaConfig
    # does not check it
    if fam == "gemma" and rng.random() < 0.4:
        hidden = rng.randint(4, 96)
    else:
        hidden = heads * rng.randint(1, max(1, 96 // heads))
    r = rng.random()
    if r < 0.2:
        hd = hidden // heads if hidden >= heads else 2
        hd += hd % 2  # rotary needs an even head_dim
    elif r < 0.23:
        hd = 256  # the class default (drop_default_keys may then drop head_dim)
    else:
        hd = rng.choice([2, 4, 6, 8, 10, 12, 14, 16, 20, 24, 32])
    ffn = 12 * rng.randint(1, 16) if tp_shape else rng.randint(5, 200)  # tp 2, 3 and 4 divide
    act_key = "hidden_act" if fam == "gemma" else "hidden_activation"
    act = rng.choice(["gelu_pytorch_tanh"] * 4 + ["gelu"] * 3 + ["gelu_new", "silu", "gelu_python",
                                                              "gelu_fast"])
    if rng.random() < 0.04:
        act = rng.choice(["relu", "quick_gelu", "gelu_10"])
        unsupported = f"{act_key} {act}"
    kw.update(hidden_size=hidden, num_attention_heads=heads, num_key_value_heads=kv, head_dim=hd,
              intermediate_size=ffn, rms_norm_eps=rng.choice([1e-6, 1e-6, 1e-5, 1e-3, 1e-2, 1e-8]),
              tie_word_embeddings=rng.random() < 0.6, **{act_key: act})
    if rng.random() < 0.3:
        kw["attention_bias"] = True
    if rng.random() < 0.05:
        kw["mlp_bias"] = True  # no Gemma MLP has biases: ignored by transformers and ferrotron
    # pad_token_id: an id of the batch (its embedding row then gets no gradient), another id, null
    r = rng.random()
    if r < 0.55:
        kw["pad_token_id"] = rng.choice(batch_ids(vocab, batch, seq))
    elif r < 0.8:
        kw["pad_token_id"] = rng.randint(0, vocab - 1)
    else:
        kw["pad_token_id"] = None
    max_pos = seq + rng.choice([0, 1, 3, 10, 40, 100])
    rope_kind = "default"
    if fam in ("gemma", "gemma2"):
        rope_kind = rng.choice(["default"] * 6 + ["linear", "llama3", "yarn", "dynamic"])
        if rope_kind == "dynamic":
            max_pos = seq + rng.choice([0, 0, 2, 9])
        theta = rng.choice([10000.0, 10000.0, 1000000.0, 100.0, 12345.6, 500000.0])
        rope = draw_rope(rng, rope_kind, theta, hd, max_pos, seq)
        if rng.random() < 0.6:
            kw["rope_parameters"] = rope
        else:  # transformers 4.x keyword style
            kw["rope_theta"] = rope.pop("rope_theta")
            if rope["rope_type"] != "default":
                kw["rope_scaling"] = rope
    if fam in ("gemma2", "gemma3_text"):
        kw["query_pre_attn_scalar"] = rng.choice([hd, hd, 256, max(1, hidden // heads), 20, 1, 64,
                                                  rng.randint(1, 300)])
        # softcaps: absent (the class default: Gemma 2 50 / 30, Gemma 3 none), null, or a value;
        # small values bite at a wide init
        p_value = 0.55 if fam == "gemma2" else 0.2
        for key, values in (("attn_logit_softcapping", [50.0, 5.0, 2.0, 1.0, 10.0, 0.5, 3.7]),
                            ("final_logit_softcapping", [30.0, 3.0, 1.5, 10.0, 0.8, 2.2])):
            r = rng.random()
            if r < p_value:
                kw[key] = rng.choice(values)
            elif r < p_value + 0.2:
                kw[key] = None
        # windows: mostly shorter than the sequence, so they bite
        # (never null: transformers 5.24 cannot build Gemma 2/3's masks without a window, even
        # when no layer is windowed)
        r = rng.random()
        if r < 0.7 and seq >= 3:
            kw["sliding_window"] = rng.randint(1, seq - 1)
        elif r < 0.85:
            kw["sliding_window"] = rng.randint(seq, seq + 30)
        # else absent: the class default 4096
        lt_mode = rng.choice(["explicit", "explicit", "default", "pattern"] if fam == "gemma3_text"
                             else ["explicit", "default"])
        if lt_mode == "explicit":
            kw["layer_types"] = [rng.choice(["sliding_attention", "full_attention"])
                                 for _ in range(layers)]
        elif lt_mode == "pattern":
            kw["sliding_window_pattern"] = rng.randint(1, 5)
    if fam == "gemma3_text":
        kinds = ["default"] * 3 + ["linear", "llama3", "yarn", "dynamic"]
        rope_kind = rng.choice(kinds)
        if rope_kind == "dynamic":
            max_pos = seq + rng.choice([0, 0, 2, 9])
        g_theta = rng.choice([1000000.0, 1000000.0, 10000.0, 500000.0, 100.0, 12345.6])
        l_theta = rng.choice([10000.0, 10000.0, 100.0, 500000.0, 2345.5])
        full = draw_rope(rng, rope_kind, g_theta, hd, max_pos, seq)
        local = {"rope_type": "default", "rope_theta": l_theta}
        if rng.random() < 0.1:
            local = {"rope_type": "linear", "factor": rng.choice([2.0, 0.5, 4.0]),
                     "rope_theta": l_theta}
            rope_kind += "+local-linear"
        if rng.random() < 0.55 or local["rope_type"] != "default":
            rp = {"full_attention": full, "sliding_attention": local}
            if rng.random() < 0.1 and local["rope_type"] == "default":
                del rp["sliding_attention"]  # transformers fills it in (local theta 1e4)
            kw["rope_parameters"] = rp
        else:  # the original Gemma 3 keys
            kw["rope_theta"] = full.pop("rope_theta")
            kw["rope_local_base_freq"] = l_theta
            if full["rope_type"] != "default":
                kw["rope_scaling"] = full
        if rng.random() < 0.03:
            kw["use_bidirectional_attention"] = True
            unsupported = "use_bidirectional_attention"
        # what transformers 5.24 would silently not apply, ferrotron refuses
        if kw.get("attn_logit_softcapping") is not None:
            unsupported = "gemma3_text attn_logit_softcapping (unused by Gemma3Attention)"
        elif _truncate_dicts(kw):
            unsupported = "gemma3_text yarn truncate: false per layer type (unread by transformers)"
    kw["max_position_embeddings"] = max_pos
    if rng.random() < 0.1:
        kw["attention_dropout"] = 0.0
    return {"seed": seed, "index": idx, "family": fam, "rope": rope_kind, "kwargs": kw,
            "drop_defaults": rng.random() < 0.4, "shape": [batch, seq],
            "layout": rng.choice(["5x", "4x", "both"]), "unsupported": unsupported,
            "heads": heads, "kv_heads": kv, "tp_case": tp_case,
            "norm_scale": rng.choice([0.3, 0.3, 0.1, 0.6]),
            "legacy_windows": rng.random() < 0.4}


def draw_case(seed, idx):
    rng = random.Random(seed * 100003 + idx)
    fam = rng.choice(FAMILIES)
    if fam in GEMMA_FAMILIES:  # only through --families: the default draws stay as they were
        return draw_gemma_case(rng, seed, idx, fam)
    tp_case = idx % 4 == 3
    # tp cases: mostly shapes tensor / sequence parallelism can split (heads, kv heads, ffn and
    # batch*seq divisible by 2 or 3); the rest stay fully random
    tp_shape = tp_case and rng.random() < 0.8
    batch = rng.randint(1, 4)
    seq = rng.randint(2, 45)
    if tp_shape and rng.random() < 0.7:
        seq = rng.choice([s for s in range(2, 46) if (batch * s) % 6 == 0])
    vocab = rng.randint(50, 700)
    layers = rng.randint(1, 3)
    init = rng.choice([0.02, 0.02, 0.02, 0.05, 0.1])
    unsupported = None  # reason when a setting outside the supported list is drawn
    kw = {"vocab_size": vocab, "initializer_range": init}
    if rng.random() < 0.5:
        kw.update(bos_token_id=rng.randint(0, vocab - 1), eos_token_id=rng.randint(0, vocab - 1))
        if rng.random() < 0.3:
            kw["eos_token_id"] = [rng.randint(0, vocab - 1), rng.randint(0, vocab - 1)]
    if fam == "gpt2":
        heads = rng.choice([2, 3, 6]) if tp_shape else rng.randint(1, 6)
        hd = rng.randint(2, 16)
        n_pos = seq + rng.choice([0, 1, 5, 20, 60])
        kw.update(n_embd=heads * hd, n_head=heads, n_layer=layers, n_positions=n_pos,
                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                  layer_norm_epsilon=rng.choice([1e-5, 1e-5, 1e-3, 1e-6, 0.1]))
        if rng.random() < 0.4:
            kw["n_inner"] = rng.randint(5, 150)
            if tp_shape:
                kw["n_inner"] = 6 * rng.randint(1, 25)
        r = rng.random()
        if r < 0.15:
            # the exact GELU and the other names of the tanh GELU are supported (429ccd4); relu,
            # silu and quick_gelu are refused with exit 2
            kw["activation_function"] = rng.choice(["gelu", "relu", "silu", "gelu_fast",
                                                    "gelu_python", "gelu_accurate", "quick_gelu",
                                                    "gelu_python_tanh"])
            if kw["activation_function"] in ("relu", "silu", "quick_gelu"):
                unsupported = "activation_function " + kw["activation_function"]
        else:
            kw["activation_function"] = rng.choice(["gelu_new", "gelu_pytorch_tanh"])
        if rng.random() < 0.3:
            kw["scale_attn_weights"] = False
        if rng.random() < 0.4:
            kw["scale_attn_by_inverse_layer_idx"] = True
        # reorder_and_upcast_attn: transformers cannot run it in f64 (it asserts f32 weights)
        if rng.random() < 0.08:
            kw["tie_word_embeddings"] = False
        kv = heads
        rope_kind = "none"
        layout = "n/a"
    else:
        heads = rng.choice([2, 4, 6, 8, 3, 6, 12]) if tp_shape else rng.randint(1, 8)
        divs = divisors(heads)
        kv = rng.choice(divs + [1, heads])
        if tp_shape:
            kv = rng.choice([d for d in divs if d % 2 == 0 or d % 3 == 0] or [heads])
        if fam == "mistral" and rng.random() < 0.25:
            heads, kv = rng.choice([16, 8, 24]), 8  # MistralConfig's default kv heads
        explicit_hd = fam in ("llama", "mistral", "qwen3") and rng.random() < 0.5 or \
            fam == "qwen2" and rng.random() < 0.15 or fam == "qwen3" or \
            fam in ("smollm3", "granite") and rng.random() < 0.3
        hd = rng.choice([2, 4, 6, 8, 10, 12, 14, 16, 20, 24, 32])
        if explicit_hd:
            # transformers validates hidden % heads == 0 even with an explicit head_dim
            hidden = heads * rng.randint(1, max(1, 96 // heads))
            kw["head_dim"] = hd
        else:
            hidden = heads * hd
        ffn = 6 * rng.randint(1, 33) if tp_shape else rng.randint(5, 200)
        kw.update(hidden_size=hidden, num_attention_heads=heads, num_key_value_heads=kv,
                  num_hidden_layers=layers, intermediate_size=ffn,
                  rms_norm_eps=rng.choice([1e-5, 1e-6, 1e-6, 1e-3, 1e-2, 1e-8]),
                  tie_word_embeddings=rng.random() < 0.5)
        theta = rng.choice([10000.0, 500000.0, 1000000.0, 100.0, 12345.6, 10000])
        if fam in NEW_FAMILIES:
            rope_kind = draw_new_family(rng, fam, kw, batch, seq, layers, hidden, heads, hd,
                                        theta, tp_shape)
            layout = rng.choice(["5x", "4x"])
            unsupported = kw.pop("_unsupported", None)
            if rng.random() < 0.1:
                kw["attention_dropout"] = 0.0
            return {"seed": seed, "index": idx, "family": fam, "rope": rope_kind, "kwargs": kw,
                    "drop_defaults": rng.random() < 0.35, "shape": [batch, seq],
                    "layout": layout, "unsupported": unsupported, "heads": heads,
                    "kv_heads": kv, "tp_case": tp_case}
        if fam == "llama":
            kinds = ["default", "linear", "llama3", "yarn", "dynamic"]
            rope_kind = rng.choice(kinds)
            if rng.random() < 0.5:
                kw["attention_bias"] = True
            if rng.random() < 0.4:
                kw["mlp_bias"] = True
        else:
            rope_kind = rng.choice(["default"] * 5 + ["linear", "llama3", "yarn", "dynamic"])
        if fam == "qwen3" and rng.random() < 0.4:
            kw["attention_bias"] = True
        max_pos = seq + rng.choice([0, 1, 3, 10, 40, 100])
        if rope_kind == "dynamic":
            max_pos = seq + rng.choice([0, 0, 2, 9])
        kw["max_position_embeddings"] = max_pos
        rope = draw_rope(rng, rope_kind, theta, hd, max_pos, seq)
        # rare settings outside the supported list: expected to be refused with exit 2
        r = rng.random()
        if r < 0.04:
            rope["partial_rotary_factor"] = 0.5
            unsupported = "partial_rotary_factor 0.5"
        elif r < 0.07 and fam == "llama":
            kw["hidden_act"] = rng.choice(["gelu", "relu", "swish"])
            if kw["hidden_act"] != "swish":  # swish is silu
                unsupported = "hidden_act " + kw["hidden_act"]
        elif r < 0.08 and fam == "llama":
            kw["pretraining_tp"] = 2  # transformers 5 ignores it, and so does ferrotron
        elif r < 0.10:
            h2 = kw.get("head_dim", hidden // heads) // 2
            rope = {"rope_type": "longrope", "rope_theta": theta, "short_factor": [1.0] * h2,
                    "long_factor": [2.0] * h2, "original_max_position_embeddings": max(2, seq // 2)}
            rope_kind = "longrope"
            unsupported = "longrope"
        if rng.random() < 0.5:
            kw["rope_parameters"] = rope
        else:  # transformers 4.x keyword style
            kw["rope_theta"] = rope.pop("rope_theta")
            if rope["rope_type"] != "default" or "partial_rotary_factor" in rope or rng.random() < 0.3:
                if rng.random() < 0.3:
                    rope["type"] = rope.pop("rope_type")
                kw["rope_scaling"] = rope
        if fam == "mistral":
            if rng.random() < 0.1:
                kw["layer_types"] = ["full_attention"] * layers  # MistralForCausalLM ignores it
            r = rng.random()
            if r < 0.6 and seq >= 3:
                kw["sliding_window"] = rng.randint(1, seq - 1)
            elif r < 0.8:
                kw["sliding_window"] = None
            # else: absent, MistralConfig's default 4096
        if fam in ("qwen2", "qwen3"):
            if rng.random() < 0.6 and seq >= 3:
                kw.update(use_sliding_window=True, sliding_window=rng.randint(1, seq - 1))
                if rng.random() < 0.3:
                    kw["layer_types"] = [rng.choice(["sliding_attention", "full_attention"])
                                         for _ in range(layers)]
                else:
                    kw["max_window_layers"] = rng.randint(0, layers)
            elif rng.random() < 0.5:
                kw.update(use_sliding_window=False, sliding_window=rng.randint(1, 40))
        layout = rng.choice(["5x", "5x", "4x", "4x", "both"])  # config.json rope layout on disk
    if rng.random() < 0.1:
        kw["attention_dropout" if fam != "gpt2" else "attn_pdrop"] = 0.0
    drop_defaults = rng.random() < 0.35
    return {"seed": seed, "index": idx, "family": fam, "rope": rope_kind, "kwargs": kw,
            "drop_defaults": drop_defaults,
            "shape": [batch, seq], "layout": layout, "unsupported": unsupported,
            "heads": heads, "kv_heads": kv, "tp_case": tp_case}


def rewrite_layout(path, layout, rng):
    """Rewrite config.json's rope keys: '4x' = rope_theta + rope_scaling, 'both' = 5.x + 4.x keys."""
    if layout == "5x":
        return
    with open(path) as f:
        c = json.load(f)
    rp = c.get("rope_parameters")
    if not isinstance(rp, dict) or "rope_type" not in rp:
        return
    rp = dict(rp)
    theta = rp.pop("rope_theta", None)
    typ = rp.get("rope_type", "default")
    if rng.random() < 0.3:
        rp["type"] = rp.pop("rope_type")
    c["rope_theta"] = theta
    c["rope_scaling"] = None if typ == "default" and rng.random() < 0.7 else rp
    if c["rope_scaling"] is None and "partial_rotary_factor" in rp:
        c["partial_rotary_factor"] = rp["partial_rotary_factor"]  # 4.x keeps it at the top
    if layout == "4x":
        del c["rope_parameters"]
        # keys a transformers 4.x save often lacks, where the default gives the same model
        lt = c.get("layer_types")
        if lt is not None and c.get("model_type") in ("qwen2", "qwen3") and rng.random() < 0.5:
            sw = c.get("sliding_window") if c.get("use_sliding_window") else None
            mwl = c.get("max_window_layers", 28)
            derived = ["sliding_attention" if sw is not None and i >= mwl else "full_attention"
                       for i in range(len(lt))]
            if lt == derived:
                del c["layer_types"]
        if (rng.random() < 0.5 and c.get("model_type") == "llama"
                and c.get("num_key_value_heads") == c["num_attention_heads"]):
            del c["num_key_value_heads"]
        if (rng.random() < 0.5 and c.get("model_type") != "qwen3"
                and c.get("head_dim") == c["hidden_size"] // c["num_attention_heads"]):
            del c["head_dim"]
        if rng.random() < 0.3 and theta == 10000.0 and rp.get("rope_type", rp.get("type")) == "default":
            del c["rope_theta"]
    with open(path, "w") as f:
        json.dump(c, f, indent=2)


DROPPABLE = ["rms_norm_eps", "tie_word_embeddings", "num_key_value_heads", "head_dim",
             "max_window_layers", "use_sliding_window", "sliding_window", "layer_types",
             "attention_bias", "mlp_bias", "max_position_embeddings", "hidden_act", "rope_theta",
             "layer_norm_epsilon", "n_inner", "activation_function", "scale_attn_weights",
             "scale_attn_by_inverse_layer_idx", "n_positions", "bos_token_id", "eos_token_id",
             "pretraining_tp", "attention_dropout", "rope_scaling", "rope_parameters"]


def drop_default_keys(path, cfg_cls, rng, p=0.6, keys=DROPPABLE):
    """Delete keys of config.json whose absence gives transformers the same config (its class
    default equals the value): ferrotron must then assume the same default."""
    with open(path) as f:
        c = json.load(f)
    ignore = {"transformers_version", "architectures", "dtype", "torch_dtype"}

    def norm(dct):
        x = cfg_cls.from_dict(json.loads(json.dumps(dct))).to_dict()  # from_dict mutates nested dicts
        return {k: v for k, v in x.items() if k not in ignore}
    base = norm(c)
    dropped = []
    for k in keys:
        if k in c and rng.random() < p:
            trial = {kk: vv for kk, vv in c.items() if kk != k}
            try:
                same = norm(trial) == base
            except Exception:
                same = False
            if same:
                c = trial
                dropped.append(k)
    with open(path, "w") as f:
        json.dump(c, f, indent=2)
    return dropped


GEMMA_DROPPABLE = DROPPABLE + ["pad_token_id", "hidden_activation", "query_pre_attn_scalar",
                               "attn_logit_softcapping", "final_logit_softcapping",
                               "rope_local_base_freq", "sliding_window_pattern",
                               "use_bidirectional_attention"]


def rewrite_gemma_config(path, case, rng):
    """The Gemma counterpart of rewrite_layout (which also drops keys whose Gemma class defaults
    differ from the derived values, e.g. head_dim 256): '4x' = the rope keys of transformers 4.x
    configs (rope_theta + rope_scaling; Gemma 3: rope_theta for the full-attention layers,
    rope_local_base_freq for the sliding ones, rope_scaling joining the full ones), 'both' = those
    beside rope_parameters. With case["legacy_windows"]: Gemma 2 without layer_types when it is
    the default alternation (plus the unused cache_implementation / sliding_window_size keys of
    early configs); the other class's activation key with another value (ignored by both);
    Gemma 3 with sliding_window_pattern instead of layer_types where a pattern gives the same
    layers. Returns what it changed."""
    with open(path) as f:
        c = json.load(f)
    fam, layout, done = case["family"], case["layout"], []
    rp = c.get("rope_parameters")
    if layout != "5x" and isinstance(rp, dict):
        if fam == "gemma3_text":
            full = dict(rp.get("full_attention") or {})
            local = dict(rp.get("sliding_attention") or {})
            # the legacy keys cannot express a scaled local rope
            if (local.get("rope_type", "default") == "default"
                    and set(local) <= {"rope_type", "rope_theta"}):
                c["rope_theta"] = full.pop("rope_theta")
                c["rope_local_base_freq"] = local["rope_theta"]
                if full.get("rope_type", "default") != "default":
                    if rng.random() < 0.3:
                        # transformers 5.24 reads this 4.x alias as default rope for gemma3_text
                        # (its full_attention dict already holds rope_type "default"), ferrotron
                        # as the type: where a layer is full_attention, the reload check then
                        # reports a mismatch
                        full["type"] = full.pop("rope_type")
                        done.append("rope_scaling.type")
                        # so ferrotron refuses it
                        case["unsupported"] = "gemma3_text rope_scaling with the legacy key type"

                    c["rope_scaling"] = full
                elif rng.random() < 0.5:
                    c["rope_scaling"] = None
                if layout == "4x":
                    del c["rope_parameters"]
                done.append(f"rope-{layout}")
        elif "rope_type" in rp:
            rp = dict(rp)
            theta = rp.pop("rope_theta", None)
            typ = rp.get("rope_type", "default")
            if rng.random() < 0.3:
                rp["type"] = rp.pop("rope_type")
            c["rope_theta"] = theta
            c["rope_scaling"] = None if typ == "default" and rng.random() < 0.7 else rp
            if layout == "4x":
                del c["rope_parameters"]
            done.append(f"rope-{layout}")
    if case.get("legacy_windows") and fam == "gemma2":
        lt = c.get("layer_types")
        alternating = ["sliding_attention" if i % 2 == 0 else "full_attention"
                       for i in range(len(lt or []))]
        if lt == alternating:
            del c["layer_types"]
            done.append("no-layer_types")
        if rng.random() < 0.5:
            c["cache_implementation"] = "hybrid"
            c["sliding_window_size"] = c.get("sliding_window")
            done.append("cache_implementation")
    if case.get("legacy_windows") and rng.random() < 0.5:
        # the other family's activation key, as older configs carry both (GemmaConfig reads only
        # hidden_act, Gemma2Config / Gemma3TextConfig only hidden_activation): a different value
        # that must be ignored
        other = "hidden_activation" if fam == "gemma" else "hidden_act"
        c[other] = rng.choice(["gelu_pytorch_tanh", "gelu", "silu", "relu"])
        done.append(f"{other}={c[other]}")
    if case.get("legacy_windows") and fam == "gemma3_text" and c.get("layer_types") is not None:
        lt = c["layer_types"]
        fits = [p for p in range(1, 9)
                if lt == ["sliding_attention" if (i + 1) % p else "full_attention"
                          for i in range(len(lt))]]
        if fits:
            del c["layer_types"]
            p = c.get("sliding_window_pattern")
            p = p if p in fits else rng.choice(fits)
            if p == 6 and rng.random() < 0.5:
                c.pop("sliding_window_pattern", None)  # the default
                done.append("no-layer_types")
            else:
                c["sliding_window_pattern"] = p
                done.append(f"sliding_window_pattern={p}")
    with open(path, "w") as f:
        json.dump(c, f, indent=2)
    return done


def verify_reload(d, ref_logits):
    """transformers reading config.json + model.safetensors from disk must give the reference."""
    m = AutoModelForCausalLM.from_pretrained(d, attn_implementation="eager").double().eval()
    ref = load_file(os.path.join(d, "reference.safetensors"))
    with torch.no_grad():
        out = m(input_ids=ref["input_ids"]).logits
    return float((out - ref_logits).norm() / ref_logits.norm())


class _Float64Everywhere:
    """Within this block torch.float / torch.float32 name float64 and Tensor.float() keeps f64
    tensors f64. transformers' "f64" model (model.double()) still computes in f32: the rope
    table and angles (dtype=torch.float, .float()), RMSNorm (.to(torch.float32)), the attention
    softmax (dtype=torch.float32) and the loss (logits.float()). Used only by the diagnostic
    pure-f64 reference below."""

    def __enter__(self):
        self.saved = (torch.float, torch.float32, torch.Tensor.float)
        orig = torch.Tensor.float
        torch.float = torch.float32 = torch.float64
        torch.Tensor.float = lambda t, *a, **k: t if t.dtype == torch.float64 else orig(t, *a, **k)

    def __exit__(self, *exc):
        torch.float, torch.float32, torch.Tensor.float = self.saved


def make_pure64_reference(d, out):
    """Diagnostic: the fixture of `d` recomputed by transformers entirely in f64 (see
    _Float64Everywhere: rope table and angles, RMSNorm, softmax and loss too). Same weights, ids,
    labels, gradient and AdamW procedure as write_fixture. Returns ‖logits − fixture logits‖ /
    ‖fixture logits‖, i.e. how far the fixture's own mixed-precision reference is from f64."""
    import shutil
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    os.makedirs(out, exist_ok=True)
    for f in ("config.json", "model.safetensors", "reference.json"):
        shutil.copy(os.path.join(d, f), out)
    ref = load_file(os.path.join(d, "reference.safetensors"))
    # the fixture's own class (AutoModel maps e.g. a mistral config with layer_types to Ministral)
    cls_name = json.load(open(os.path.join(d, "reference.json")))["transformers_class"]
    cls = next(c for c, _ in CLASSES.values() if c.__name__ == cls_name)
    model = cls.from_pretrained(d, attn_implementation="eager").double().eval()
    for mod in model.modules():
        if type(mod).__name__.endswith("RotaryEmbedding") and isinstance(mod.rope_type, dict):
            # Gemma 3: one table per layer type, buffers <layer_type>_inv_freq
            for lt, kind in mod.rope_type.items():
                fn = (mod.compute_default_rope_parameters if kind == "default"
                      else ROPE_INIT_FUNCTIONS[kind])
                with _Float64Everywhere():
                    inv, scale = fn(mod.config, layer_type=lt)
                setattr(mod, f"{lt}_inv_freq", inv.double())
                setattr(mod, f"{lt}_original_inv_freq", inv.double().clone())
                setattr(mod, f"{lt}_attention_scaling", scale)
        elif type(mod).__name__.endswith("RotaryEmbedding"):
            fn = (mod.compute_default_rope_parameters if mod.rope_type == "default"
                  else ROPE_INIT_FUNCTIONS[mod.rope_type])
            with _Float64Everywhere():
                inv, scale = fn(mod.config)
            mod.inv_freq = inv.double()
            mod.attention_scaling = scale
    ids, labels = ref["input_ids"], ref["labels"]
    with _Float64Everywhere():
        result = model(input_ids=ids, labels=labels)
        result.loss.backward()
    tensors = {"input_ids": ids, "labels": labels, "logits": result.logits.detach().contiguous(),
               "loss": result.loss.detach().reshape(1)}
    for n, p in model.named_parameters():
        tensors["grad." + n] = p.grad.detach().clone().contiguous()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    opt.step()
    for n, p in model.named_parameters():
        tensors["adamw1." + n] = p.detach().clone().contiguous()
    from safetensors.torch import save_file
    save_file(tensors, os.path.join(out, "reference.safetensors"))
    return float((result.logits.detach() - ref["logits"]).norm() / ref["logits"].norm())


def transformers_f32_error(d):
    """Yardstick for an f32 run above the limit: max rel_err of transformers' own f32 model
    (same weights, ids, labels) against the fixture, over logits, loss and gradients. When
    ferrotron's f32 error is no larger, the excess is the config's conditioning."""
    ref = load_file(os.path.join(d, "reference.safetensors"))
    cls_name = json.load(open(os.path.join(d, "reference.json")))["transformers_class"]
    cls = next(c for c, _ in CLASSES.values() if c.__name__ == cls_name)
    m = cls.from_pretrained(d, attn_implementation="eager").float()
    out = m(input_ids=ref["input_ids"], labels=ref["labels"])
    out.loss.backward()
    errs = [float((out.logits.double() - ref["logits"]).norm() / ref["logits"].norm()),
            abs(float(out.loss) - float(ref["loss"])) / abs(float(ref["loss"]))]
    for n, p in m.named_parameters():
        r = ref["grad." + n]
        errs.append(float((p.grad.double() - r).norm() / r.norm()))
    return max(errs)


RE_MAX = re.compile(r"max rel_err ([0-9.eE+-]+|NaN|inf)")
RE_Q = re.compile(r"^\s+(\S+)\s+rel_err ([0-9.eE+-]+|NaN|inf)\s+(ok|FAIL)", re.M)


def run_check(binary, d, dtype="f32", tp=1, sp=False, timeout=180):
    cmd = [binary, "check-hf", d]
    if dtype != "f32":
        cmd += ["--dtype", dtype]
    env = dict(os.environ)
    if tp > 1:
        cmd = ["mpirun", "--oversubscribe", "-np", str(tp)] + cmd + ["--tp", str(tp)]
        env.update(MPI_ENV)
    if sp:
        cmd.append("--sequence-parallel")
    t0 = time.time()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                           start_new_session=True)
        rc, out, err = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as e:
        rc, out, err = "timeout", (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or ""), ""
    dt = time.time() - t0
    text = out + "\n" + err
    errs = [float(x) for x in RE_MAX.findall(text)]
    maxerr = max(errs) if errs else None
    worst = None
    qs = [(n, float(v)) for n, v, _ in RE_Q.findall(text)]
    if qs:
        worst = max(qs, key=lambda t: (t[1] != t[1], t[1]))[0]
    msg = next((ln.strip() for ln in text.splitlines() if ln.strip().startswith("error")), None)
    if msg is None and rc not in (0, 1):
        msg = "\n".join(text.strip().splitlines()[-6:])
    return {"cmd": " ".join(cmd), "rc": rc, "max_rel_err": maxerr, "worst": worst, "msg": msg,
            "seconds": round(dt, 2), "output": text}


def limit_of(case, dtype):
    return (LIMIT_GEMMA if case["family"] in GEMMA_FAMILIES else LIMIT)[dtype]


def verdict(r, dtype, case, is_tp):
    rc = r["rc"]
    if rc == "timeout":
        return "HANG"
    if rc in (101, -6, 134) or (isinstance(rc, int) and "panicked" in r["output"]):
        return "PANIC"
    if rc == 2:
        if case["unsupported"]:
            return "refused"
        return "refused-tp" if is_tp else "REFUSED-SUPPORTED"
    if rc == 1:
        return "FAIL" if r["max_rel_err"] is not None else "CRASH"
    if rc != 0:
        # mpirun reports a rank's exit 2 as its own non-zero status
        if is_tp and "error:" in r["output"] and "panicked" not in r["output"]:
            return "refused-tp" if not case["unsupported"] else "refused"
        return "CRASH"
    if case["unsupported"]:
        e = r["max_rel_err"]
        return "RAN-UNSUPPORTED" if e is None or e > limit_of(case, dtype) else "ran-unsupported-ok"
    e = r["max_rel_err"]
    if e is None or e != e:
        return "CRASH"
    return "pass" if e <= limit_of(case, dtype) else "HIGH"


# transformers 5.24 behaviours the Gemma fuzz runs found, where transformers ignores a key of a
# gemma3_text config that ferrotron applies: (name, applies to config.json c, edit making c say
# what transformers computes)
def _truncate_dicts(c):
    rp = c.get("rope_parameters") or {}
    dicts = [rp.get("full_attention"), rp.get("sliding_attention"), c.get("rope_scaling")]
    return [x for x in dicts if isinstance(x, dict) and x.get("truncate") is False]


GEMMA_QUIRKS = [
    # (name, applies to config.json c, edit making c say what transformers computes). Empty: the
    # two found so far (gemma3_text's unused attention softcap and a per-layer-type yarn
    # truncate: false) are refused by ferrotron now.
]


def transformers_f32_spread(d, nudges=7):
    """The errors of transformers' f32 model against DIR's reference under equally valid f32
    roundings: as loaded, and `nudges` copies with a random half of the weights moved up by one
    f32 ulp. Where these spread over 1e-4 the problem itself is that sensitive. (Eager attention
    only: Gemma2 has no sdpa path, and a Gemma 3 trial gave non-finite sdpa errors.)"""
    ref = load_file(os.path.join(d, "reference.safetensors"))
    cls_name = json.load(open(os.path.join(d, "reference.json")))["transformers_class"]
    cls = next(c for c, _ in CLASSES.values() if c.__name__ == cls_name)
    errs = []
    for seed in [None] + list(range(nudges)):
        m = cls.from_pretrained(d, attn_implementation="eager").float()
        if seed is not None:
            gen = torch.Generator().manual_seed(seed)
            with torch.no_grad():
                for p in m.parameters():
                    up = torch.nextafter(p, torch.full_like(p, float("inf")))
                    p.copy_(torch.where(torch.rand(p.shape, generator=gen) < 0.5, up, p))
        out = m(input_ids=ref["input_ids"], labels=ref["labels"])
        out.loss.backward()
        e = [float((out.logits.detach().double() - ref["logits"]).norm() / ref["logits"].norm()),
             abs(float(out.loss) - float(ref["loss"])) / abs(float(ref["loss"]))]
        for n, p in m.named_parameters():
            r = ref["grad." + n]
            e.append(float((p.grad.double() - r).norm() / r.norm()))
        errs.append(max(e) if all(x == x and x != float("inf") for x in e) else float("nan"))
    return errs


def gemma_explain(rec, d, binary):
    """Gemma cases: explanations beyond the ones run_case checks for every family.
    1. f64 runs above ferrotron's tolerance whose pure-f64 recheck passes: high-ref-f32-steps
       (transformers' Gemma RMSNorm runs in f32 inside the f64 model, so the fixture carries
       f32 rounding that grows with the conditioning).
    2. f32 runs above 1e-5: compared against the pure-f64 reference (the mixed-precision
       fixture shares transformers' f32 norm steps, which favours transformers' f32 model), next
       to transformers' own f32 model under equally valid roundings (transformers_f32_spread:
       as loaded, and 7 copies with weights nudged by one ulp) against the same reference; within
       1.5x the largest of those 8 samples of a wide distribution: high-ill-conditioned
       (kept: pure64_err per run, transformers_f32_pure64_spread).
       Otherwise, when every gradient's error against the pure-f64 reference, taken at the
       scale of the model's largest gradient norm G (rel_err x |grad| / G), is within 1e-5:
       high-tiny-grad (pure64_err_at_G). Seen for q_proj / k_proj gradients of 1e-7-1e-5 G
       under nearly one-hot attention (large scores: query_pre_attn_scalar far below head_dim,
       wide init; with or without a softcap): the FlashAttention-2 backward's
       D = rowsum(dO o O) cancels against dP = dO V^T rounded separately (torch's eager
       backward uses D = sum P o dP from the same rounded dP), which leaves f32 noise of about
       1e-7-1e-6 G in those gradients; ferrotron f64 matches to 1e-8.
    3. Runs still failing: each GEMMA_QUIRKS edit of config.json alone, then all together, is
       rechecked in f64; the first that brings the run within 1e-5 is recorded as rec["quirk"]
       (the verdict stays: ferrotron differs from transformers there)."""
    d64 = d + "-pure64"
    runs = rec["runs"]
    f64 = next(r for r in runs if r["dtype"] == "f64")
    if (f64["verdict"] == "FAIL" and rec.get("pure64_f64_err") is not None
            and rec["pure64_f64_err"] <= LIMIT["f64"]):
        f64["verdict"] = "high-ref-f32-steps"
    bad32 = [r for r in runs if r["dtype"] == "f32" and r["verdict"] in ("HIGH", "FAIL")]
    if bad32:
        if not os.path.isdir(d64):
            rec["pure64_ref_vs_ref"] = make_pure64_reference(d, d64)
        spread = transformers_f32_spread(d64)
        rec["transformers_f32_pure64_spread"] = spread
        ref64 = load_file(os.path.join(d64, "reference.safetensors"))
        gnorm = {k: float(v.norm()) for k, v in ref64.items() if k.startswith("grad.")}
        top = max(gnorm.values())
        for r in bad32:
            r2 = run_check(binary, d64, "f32", r["tp"], r["sp"])
            r["pure64_err"] = r2["max_rel_err"]
            if (r2["rc"] in (0, 1) and r2["max_rel_err"] is not None
                    and r2["max_rel_err"] <= max([LIMIT["f32"]] + [1.5 * x for x in spread
                                                                   if x == x])):
                r["verdict"] = "high-ill-conditioned"
                continue
            # gradients far below the model's largest (G) compared at G's scale
            scaled = [e * gnorm[n] / top if n in gnorm else e
                      for n, e in ((n, float(v)) for n, v, _ in RE_Q.findall(r2["output"]))]
            r["pure64_err_at_G"] = max(scaled) if scaled else None
            if r2["rc"] in (0, 1) and scaled and max(scaled) <= LIMIT["f32"]:
                r["verdict"] = "high-tiny-grad"
    if not any(r["verdict"] in ("HIGH", "FAIL") for r in runs):
        return
    with open(os.path.join(d, "config.json")) as f:
        base = json.load(f)
    live = [q for q in GEMMA_QUIRKS if q[1](base)]
    trials = [[q] for q in live] + ([live] if len(live) > 1 else [])
    for qs in trials:
        c = copy.deepcopy(base)
        for q in qs:
            q[2](c)
        dq = d + "-quirk"
        os.makedirs(dq, exist_ok=True)
        for name in ("model.safetensors", "reference.safetensors", "reference.json"):
            if not os.path.exists(os.path.join(dq, name)):
                os.symlink(os.path.join(d, name), os.path.join(dq, name))
        with open(os.path.join(dq, "config.json"), "w") as f:
            json.dump(c, f, indent=2)
        r = run_check(binary, dq, "f64")
        if r["rc"] == 0 and r["max_rel_err"] is not None and r["max_rel_err"] <= 1e-5:
            rec["quirk"] = "+".join(q[0] for q in qs)
            rec["quirk_f64_err"] = r["max_rel_err"]
            return


def run_case(case, out_root, binary, keep_output=4000, pure64=False):
    fam = case["family"]
    name = f"s{case['seed']}-{case['index']}-{fam}" + (f"-{case['rope']}" if case["rope"] not in ("none", "default") else "")
    d = os.path.join(out_root, name)
    cls, cfg_cls = CLASSES[fam]
    rec = dict(case, name=name, dir=d, runs=[])
    try:
        import contextlib
        import io
        buf = io.StringIO()
        gemma = fam in GEMMA_FAMILIES
        if gemma:  # every (1 + w) norm weight drawn at random instead of its zero init
            scale = case["norm_scale"]
            norm_seed = 2468 + case["seed"] * 1000 + case["index"]
            POST_INIT[name] = lambda model: randomize_norms(model, seed=norm_seed, scale=scale)
        with contextlib.redirect_stdout(buf):
            # (a copy for Gemma: Gemma3TextConfig fills the nested rope dicts in place)
            cfg = cfg_cls(**(copy.deepcopy(case["kwargs"]) if gemma else case["kwargs"]))
            write_fixture(out_root, name, cls, cfg, tuple(case["shape"]))
    except Exception as e:  # transformers itself rejects the config: not a ferrotron case
        rec["status"] = "hf-error"
        rec["hf_error"] = f"{type(e).__name__}: {e}"[:500]
        return rec
    rng = random.Random(case["seed"] * 7919 + case["index"])
    if fam in GEMMA_FAMILIES:
        rec["rewrites"] = rewrite_gemma_config(os.path.join(d, "config.json"), case, rng)
        if case.get("drop_defaults"):
            rec["dropped_keys"] = drop_default_keys(os.path.join(d, "config.json"), cfg_cls, rng,
                                                    keys=GEMMA_DROPPABLE)
    else:
        rewrite_layout(os.path.join(d, "config.json"), case["layout"], rng)
        if case.get("drop_defaults"):
            rec["dropped_keys"] = drop_default_keys(os.path.join(d, "config.json"), cfg_cls, rng)
    ref = load_file(os.path.join(d, "reference.safetensors"))
    try:
        rec["reload_rel_err"] = verify_reload(d, ref["logits"])
    except Exception as e:
        rec["reload_rel_err"] = None
        rec["reload_error"] = f"{type(e).__name__}: {e}"[:300]
    with open(os.path.join(d, "case.json"), "w") as f:
        json.dump({k: v for k, v in case.items()}, f, indent=1)
    b, s = case["shape"]
    plans = [("f32", 1, False), ("f64", 1, False)]
    if case["tp_case"]:
        for tp in (2, 3, 4) if fam in GEMMA_FAMILIES else (2, 3):
            if case["heads"] % tp == 0 and case["kv_heads"] % tp == 0:
                plans += [("f32", tp, False), ("f32", tp, True)]
    for dtype, tp, sp in plans:
        r = run_check(binary, d, dtype, tp, sp)
        r["dtype"], r["tp"], r["sp"] = dtype, tp, sp
        r["verdict"] = verdict(r, dtype, case, tp > 1)
        with open(os.path.join(d, f"out-{dtype}-tp{tp}{'-sp' if sp else ''}.txt"), "w") as f:
            f.write(r["cmd"] + f"\nrc={r['rc']}\n" + r["output"])
        r["output"] = r["output"][-keep_output:] if r["verdict"] not in ("pass",) else ""
        rec["runs"].append(r)
    f64 = next(r for r in rec["runs"] if r["dtype"] == "f64")
    if f64["verdict"] in ("HIGH", "RAN-UNSUPPORTED", "FAIL") or pure64:
        # is the excess the reference's own f32 steps? recheck against a pure-f64 reference
        d64 = d + "-pure64"
        rec["pure64_ref_vs_ref"] = make_pure64_reference(d, d64)
        r = run_check(binary, d64, "f64")
        rec["pure64_f64_err"] = r["max_rel_err"]
        rec["pure64_worst"] = r["worst"]
        rec["pure64_cmd"] = r["cmd"]
        with open(os.path.join(d64, "out-f64-tp1.txt"), "w") as f:
            f.write(r["cmd"] + f"\nrc={r['rc']}\n" + r["output"])
        if r["rc"] == 0 and r["max_rel_err"] is not None and r["max_rel_err"] <= LIMIT["f64"]:
            if f64["verdict"] == "HIGH":
                f64["verdict"] = "high-ref-f32-steps"  # explained: reference precision
            elif f64["verdict"] == "RAN-UNSUPPORTED":
                f64["verdict"] = "ran-unsupported-ok"
    if any(r["dtype"] == "f32" and r["verdict"] in ("HIGH", "FAIL") for r in rec["runs"]):
        rec["transformers_f32_err"] = transformers_f32_error(d)
        for r in rec["runs"]:
            if (r["dtype"] == "f32" and r["verdict"] in ("HIGH", "FAIL")
                    and r["max_rel_err"] <= rec["transformers_f32_err"]):
                r["verdict"] = "high-ill-conditioned"  # transformers' f32 is as far off
    if fam in GEMMA_FAMILIES:
        gemma_explain(rec, d, binary)
    bad = [r["verdict"] for r in rec["runs"] if r["verdict"].isupper() or r["verdict"][0].isupper()]
    rec["status"] = "finding" if bad else "ok"
    if rec.get("reload_rel_err") is None or rec["reload_rel_err"] > 1e-9:
        rec["status"] += "+reload-mismatch"
    return rec


def fmt(e):
    return "-" if e is None else f"{e:.2e}"


def summary(records):
    lines = []
    lines.append(f"{'case':34} {'b x s':7} {'h/kv':6} {'f32':9} {'f64':9} tp-runs / verdicts")
    for r in records:
        if r.get("status") == "hf-error":
            lines.append(f"{r['name']:34} hf-error: {r['hf_error'][:80]}")
            continue
        by = {(x["dtype"], x["tp"], x["sp"]): x for x in r["runs"]}
        f32 = by.get(("f32", 1, False))
        f64 = by.get(("f64", 1, False))
        extra = " ".join(f"tp{x['tp']}{'sp' if x['sp'] else ''}:{x['verdict']}:{fmt(x['max_rel_err'])}"
                         for x in r["runs"] if x["tp"] > 1)
        vs = ",".join(sorted({x["verdict"] for x in r["runs"]}))
        lines.append(f"{r['name']:34} {r['shape'][0]}x{r['shape'][1]:<5} {r['heads']}/{r['kv_heads']:<4} "
                     f"{fmt(f32['max_rel_err']):9} {fmt(f64['max_rel_err']):9} {vs} {extra}"
                     + (f"  [unsupported: {r['unsupported']}]" if r["unsupported"] else "")
                     + (f"  [transformers quirk: {r['quirk']}]" if r.get("quirk") else ""))
    # per family / layout aggregates
    agg = {}
    for r in records:
        if r.get("status") == "hf-error":
            continue
        fam = r["family"] + ("" if r["rope"] in ("none", "default") else "-" + r["rope"])
        for x in r["runs"]:
            key = (fam, x["dtype"], f"tp{x['tp']}{'-sp' if x['sp'] else ''}")
            a = agg.setdefault(key, {"n": 0, "worst": None, "verdicts": {}})
            a["n"] += 1
            a["verdicts"][x["verdict"]] = a["verdicts"].get(x["verdict"], 0) + 1
            e = x["max_rel_err"]
            if e is not None and not r["unsupported"] and (a["worst"] is None or e > a["worst"]):
                a["worst"] = e
    lines.append("")
    lines.append(f"{'family':18} {'dtype':5} {'layout':8} {'runs':5} {'worst':9} verdicts")
    for k in sorted(agg):
        a = agg[k]
        lines.append(f"{k[0]:18} {k[1]:5} {k[2]:8} {a['n']:<5} {fmt(a['worst']):9} "
                     + ", ".join(f"{v}={n}" for v, n in sorted(a["verdicts"].items())))
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--count", type=int, default=20)
    ap.add_argument("--out", default="/tmp/fuzz-hf")
    ap.add_argument("--bin", default=os.path.join(REPO, "target", "release", "ferrotron"))
    ap.add_argument("--only", type=int, nargs="*", help="case indices to (re)run")
    ap.add_argument("--keep-passing", action="store_true", help="keep fixture dirs of clean cases")
    ap.add_argument("--pure64", action="store_true",
                    help="also check every case's f64 run against a pure-f64 transformers reference "
                         "(always done for f64 runs above the limit)")
    ap.add_argument("--init", type=float, default=None,
                    help="force this initializer_range in every case (default: drawn from 0.02-0.1); "
                         "larger weights sharpen attention and the GELU/window/rope differences")
    ap.add_argument("--families", default="",
                    help="comma list replacing the default families (phi3, smollm3, granite, "
                         "gemma, gemma2, gemma3_text only through it)")
    ap.add_argument("--summarize", action="store_true",
                    help="only print the combined summary of OUT/results-s*.json (no new cases)")
    args = ap.parse_args()
    if args.families:
        unknown = [f for f in args.families.split(",") if f not in CLASSES]
        if unknown:
            sys.exit(f"fuzz_check_hf: unknown families {unknown}; known: {sorted(CLASSES)}")
        FAMILIES[:] = args.families.split(",")
    if args.summarize:
        import glob
        records = []
        for path in sorted(glob.glob(os.path.join(args.out, "results-s*.json"))):
            if "-only" not in os.path.basename(path):
                records += json.load(open(path))
        print(summary([r for r in records if r.get("status") != "script-error"]))
        n = {}
        for r in records:
            n[r.get("status")] = n.get(r.get("status"), 0) + 1
        print("\ncases:", len(records), n)
        return
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(1)
    import hashlib
    with open(args.bin, "rb") as f:
        binary_id = {"path": args.bin, "sha256": hashlib.sha256(f.read()).hexdigest()[:16],
                     "mtime": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(os.path.getmtime(args.bin)))}
    print("binary:", binary_id, flush=True)
    records = []
    t0 = time.time()
    idxs = args.only if args.only else range(args.count)
    for i in idxs:
        case = draw_case(args.seed, i)
        if args.init is not None:
            case["kwargs"]["initializer_range"] = args.init
        try:
            rec = run_case(case, args.out, args.bin, pure64=args.pure64)
        except Exception:
            rec = dict(case, name=f"s{args.seed}-{i}", status="script-error", runs=[],
                       hf_error=traceback.format_exc()[-800:])
        records.append(rec)
        runs = " ".join(f"{x['dtype']}/tp{x['tp']}{'sp' if x['sp'] else ''}={x['verdict']}:{fmt(x['max_rel_err'])}"
                        for x in rec["runs"])
        print(f"[{time.time() - t0:6.1f}s] {rec['name']}: {rec['status']} {runs}"
              + (f" {rec.get('hf_error', '')[:120]}" if rec["status"] in ("hf-error", "script-error") else "")
              + (f" [transformers quirk: {rec['quirk']}]" if rec.get("quirk") else ""),
              flush=True)
        clean = all(x["verdict"] in ("pass", "refused", "refused-tp", "ran-unsupported-ok")
                    for x in rec["runs"])
        if rec["status"] == "ok" and clean and not args.keep_passing and os.path.isdir(rec.get("dir", "")):
            import shutil
            shutil.rmtree(rec["dir"])
            shutil.rmtree(rec["dir"] + "-pure64", ignore_errors=True)
            shutil.rmtree(rec["dir"] + "-quirk", ignore_errors=True)
    path = os.path.join(args.out, f"results-s{args.seed}" + ("-only" if args.only else "")
                        + (f"-init{args.init:g}" if args.init is not None else "") + ".json")
    for r in records:
        r["binary"] = binary_id
    with open(path, "w") as f:
        json.dump(records, f, indent=1, default=str)
    print()
    print(summary([r for r in records if r.get("status") != "script-error"]))
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
