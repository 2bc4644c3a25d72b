#!/usr/bin/env python3
"""Greedy decoding of `ferrotron sample` against transformers' `generate`.

For every model directory `tests/fixtures/trajectories/NAME/hf` (five families; character-level,
cut GPT-2 BPE, Llama-3-like tokenizers with a bos post-processor, Qwen2.5-like ones), this runs
transformers' greedy decoding in float64:

    ids  = tokenizer.encode(prompt).ids           (special tokens added, as `sample` does)
    out  = model.generate(ids, do_sample=False, max_new_tokens=N, eos_token_id=config's eos)
    text = tokenizer.decode(out[len(ids):])       (special tokens kept, eos not printed)

The tokenizer is tokenizer.json read by the `tokenizers` library, as ferrotron, vLLM and SGLang
read it. (transformers 5's AutoTokenizer picks Qwen2Tokenizer for every qwen2 directory and
rebuilds its pre-tokenizer, so on these character-level tokenizers it encodes differently from
the file.)

and writes NAME/greedy.json: the prompt, N, the new ids, the text `ferrotron sample` must print
after the prompt, and the smallest gap between the two largest logits over the generated steps
(f32 round-off is about 1e-6 of a logit, so a gap far above that leaves no tie to break either
way). tests/sample_vs_transformers.rs runs `ferrotron sample NAME/hf --prompt P
--max-new-tokens N` (temperature 0: greedy) and compares.

Usage:
  python3 scripts/greedy_vs_transformers.py [--write] [--check] [NAME ...]
    --write   write greedy.json (default: print only)
    --check   also run ferrotron (target/release/ferrotron, or $FERROTRON) and compare
"""
import argparse
import glob
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests/fixtures/trajectories")
FERRO = os.environ.get("FERROTRON", os.path.join(ROOT, "target/release/ferrotron"))
MAX_NEW = 16


def prompt_of(fixture):
    """The first words of the fixture's own data: a text file's first line, or a record's first
    message / instruction."""
    for path in sorted(glob.glob(os.path.join(fixture, "data*.txt"))):
        line = next((l for l in open(path, encoding="utf-8") if l.strip()), "")
        return " ".join(line.split()[:4])
    for path in sorted(glob.glob(os.path.join(fixture, "*.jsonl"))):
        rec = json.loads(open(path, encoding="utf-8").readline())
        text = rec["messages"][0]["content"] if "messages" in rec else rec["instruction"]
        return " ".join(text.split()[:4])
    raise SystemExit(f"{fixture}: no data to take a prompt from")


def greedy(hf, prompt):
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM
    tok = Tokenizer.from_file(os.path.join(hf, "tokenizer.json"))
    model = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float64)
    cfg = json.load(open(os.path.join(hf, "config.json")))
    max_pos = cfg.get("max_position_embeddings") or cfg.get("n_positions")
    ids = torch.tensor([tok.encode(prompt, add_special_tokens=True).ids])
    n = min(MAX_NEW, max_pos - ids.shape[1])
    eos = cfg.get("eos_token_id")
    out = model.generate(ids, do_sample=False, max_new_tokens=n, eos_token_id=eos,
                         pad_token_id=eos if isinstance(eos, int) else None,
                         output_scores=True, return_dict_in_generate=True)
    new = out.sequences[0, ids.shape[1]:].tolist()
    gaps = [float(torch.topk(s[0], 2).values[0] - torch.topk(s[0], 2).values[1])
            for s in out.scores]
    eos_ids = set(eos if isinstance(eos, list) else [eos])
    shown = new[:-1] if new and new[-1] in eos_ids else new
    return {"prompt": prompt, "prompt_ids": ids[0].tolist(), "max_new_tokens": n, "new_ids": new,
            "text": tok.decode(shown, skip_special_tokens=False),
            "min_top2_logit_gap": min(gaps) if gaps else None,
            "made_by": "scripts/greedy_vs_transformers.py (transformers generate, float64)"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("names", nargs="*")
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    names = args.names or sorted(d for d in os.listdir(FIXTURES)
                                 if os.path.isdir(os.path.join(FIXTURES, d)))
    bad = 0
    for name in names:
        fixture = os.path.join(FIXTURES, name)
        g = greedy(os.path.join(fixture, "hf"), prompt_of(fixture))
        line = (f"{name}: {len(g['new_ids'])} new tokens, smallest top-2 gap "
                f"{g['min_top2_logit_gap']:.2e}, {g['prompt']!r} -> {g['text']!r}")
        if args.check:
            p = subprocess.run([FERRO, "sample", os.path.join(fixture, "hf"), "--prompt",
                                g["prompt"], "--max-new-tokens", str(g["max_new_tokens"])],
                               capture_output=True, text=True)
            ok = p.returncode == 0 and p.stdout == g["prompt"] + g["text"] + "\n"
            bad += not ok
            line += "  ferrotron: " + ("same" if ok else f"DIFFERS {p.stdout!r} {p.stderr[-300:]!r}")
        print(line, flush=True)
        if args.write:
            with open(os.path.join(fixture, "greedy.json"), "w") as f:
                json.dump(g, f, indent=1)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
