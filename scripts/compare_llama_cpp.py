"""Greedy generation of one exported model by ferrotron, transformers and llama.cpp, compared.

  python3 scripts/compare_llama_cpp.py EXPORT_DIR MODEL.gguf --prompt TEXT [--n 24] [--bin PATH]

EXPORT_DIR is a `ferrotron export` directory, MODEL.gguf its conversion by llama.cpp's
convert_hf_to_gguf.py (--outtype f32). Prints one JSON line:
  prompt_ids_equal   transformers' and llama.cpp's tokenization of the prompt
  greedy_equal       llama.cpp's greedy token ids == transformers' (stop at the generation
                     config's eos ids / llama.cpp's end-of-generation tokens)
  ferrotron_equal    `ferrotron sample --temperature 0` text == the text of those ids
  logits_rel         ‖llama.cpp − transformers‖ / ‖transformers‖ over the prompt's logits
Needs torch, transformers and llama-cpp-python (which builds the llama.cpp it vendors).
"""
import argparse
import json
import subprocess

import llama_cpp
import numpy as np
import torch
from llama_cpp import Llama
from transformers import AutoModelForCausalLM, AutoTokenizer


def eos_ids(export_dir):
    g = json.load(open(f"{export_dir}/generation_config.json"))
    e = g.get("eos_token_id")
    return set(e if isinstance(e, list) else [] if e is None else [e])


def transformers_greedy(export_dir, prompt, n):
    tok = AutoTokenizer.from_pretrained(export_dir)
    model = AutoModelForCausalLM.from_pretrained(export_dir, dtype=torch.float32).eval()
    ids = tok(prompt)["input_ids"]
    stop = eos_ids(export_dir)
    seq = list(ids)
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].numpy()
        new = []
        for _ in range(n):
            nxt = int(model(torch.tensor([seq])).logits[0, -1].argmax())
            if nxt in stop:
                break
            new.append(nxt)
            seq.append(nxt)
    # the text as `ferrotron sample` prints it: decode(prompt + new) minus decode(prompt)
    full, head = tok.decode(ids + new), tok.decode(ids)
    text = full[len(head):] if full.startswith(head) else tok.decode(new)
    return ids, new, logits, text, type(tok).__name__


def llama_cpp_greedy(gguf, prompt, n):
    llm = Llama(model_path=gguf, n_ctx=512, logits_all=True, verbose=False)
    ids = llm.tokenize(prompt.encode(), add_bos=True, special=True)
    llm.eval(ids)
    logits = np.array(llm.scores[: len(ids)])
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    new = []
    for _ in range(n):
        nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        if llama_cpp.llama_vocab_is_eog(vocab, nxt):
            break
        new.append(nxt)
        llm.eval([nxt])
    return ids, new, logits


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("export_dir")
    ap.add_argument("gguf")
    ap.add_argument("--prompt", required=True)
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--bin", default="target/release/ferrotron")
    a = ap.parse_args()
    out = subprocess.run([a.bin, "sample", a.export_dir, "--prompt", a.prompt, "--max-new-tokens", str(a.n)],
                         check=True, capture_output=True, text=True).stdout
    ours = out[len(a.prompt):].removesuffix("\n")
    t_ids, t_new, t_logits, t_text, tok_class = transformers_greedy(a.export_dir, a.prompt, a.n)
    l_ids, l_new, l_logits = llama_cpp_greedy(a.gguf, a.prompt, a.n)
    rel = float(np.linalg.norm(l_logits - t_logits) / np.linalg.norm(t_logits)) if l_ids == t_ids else None
    print(json.dumps({
        "model": a.export_dir, "tokenizer_class": tok_class, "prompt_ids": t_ids,
        "prompt_ids_equal": l_ids == t_ids, "greedy_transformers": t_new, "greedy_llama_cpp": l_new,
        "greedy_equal": l_new == t_new, "ferrotron_equal": ours == t_text, "ferrotron_text": ours,
        "logits_rel": rel,
    }))


if __name__ == "__main__":
    main()
