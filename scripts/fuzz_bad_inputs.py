"""Random-mutation fuzzing of what a user hands ferrotron: recipes, config.json, safetensors
files, tokenizer files and datasets. The contract under test (DESIGN.md, README): bad input is
refused with exit 2 and an `error:` line, never a panic (exit 101), an abort, a signal, a hang or
exit 1 (exit 1 is for internal failures, not for the user's files).

Each case starts from a small valid run in a fresh directory (one of the tiny HF fixtures, the
byte-level BPE, the Shakespeare head or the 20-record alpaca / chat demos) and applies 1-3
random mutations:
  recipe    a key of any section set to a value from a pool of wrong types, zero, negatives,
            huge, NaN/inf, empty strings and odd lists, or deleted, or an unknown key added
  config    a config.json key set to a pool value (or nested rope / window keys), or deleted
  weights   the safetensors header edited (dtype, shape, offsets, a tensor dropped or added, the
            header length) or the file truncated / padded
  tokenizer encoder.json / vocab.bpe truncated, emptied or given garbage
  data      the text / alpaca / chat file emptied, truncated, given binary bytes or rows of
            wrong types
then runs `ferrotron train` (or, for a fifth of the model mutations, `ferrotron check-hf` on the
mutated fixture) with a timeout. The `checkpoint` area (only with --areas checkpoint) first trains
the valid run for 2 steps with a checkpoint at each, then mutates the last checkpoint's
trainer_state.json or shard index (a value anywhere in the JSON tree set to a pool value, or
deleted), its shard safetensors (as `weights`), its config.json (as `config`) or its tokenizer
files (as `tokenizer`), and runs `train --resume` (to 4 steps), `export` or `sample` on it.

Verdicts: ok (exit 0), refused (exit 2 with an `error:` line), mismatch (check-hf's exit 1 with
its report: a mutated config or weight computes other numbers than the fixture's reference,
which is check-hf's job to say), long (a timeout with a size key such as train.steps mutated),
and the findings PANIC (101),
INTERNAL (exit 1), SIGNAL / ABORT (killed), NO-MESSAGE (exit 2 without an `error:` line), HANG
(timeout: only counted when no mutated key could make the run legitimately long).

Usage:
  python3 scripts/fuzz_bad_inputs.py --seed 1 --count 300 [--out /tmp/fuzz-bad] [--bin PATH]
  python3 scripts/fuzz_bad_inputs.py --seed 1 --only 17     # redo case 17 of seed 1, keep its dir
  python3 scripts/fuzz_bad_inputs.py --seed 9 --count 300 --areas config,weights
  python3 scripts/fuzz_bad_inputs.py --seed 20 --count 100 --ranks 2   # under mpirun
  python3 scripts/fuzz_bad_inputs.py --seed 30 --count 200 --areas checkpoint
Cases are reproducible from (seed, index); each finding's directory is kept under OUT.
"""
import argparse
import json
import math
import os
import random
import shutil
import struct
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(REPO, "tests", "fixtures", "hf")
MODELS = ["tiny-llama", "tiny-gpt2", "tiny-qwen2", "tiny-qwen3", "tiny-mistral", "tiny-llama3"]

BASE = {
    "model": {"hf_dir": "{dir}/model"},
    "data": {"format": "text", "path": "{dir}/data.txt", "tokenizer": "{dir}/tok",
             "cache_dir": "{dir}/cache", "seq_len": 16, "val_fraction": 0.1},
    "optim": {"lr": 1e-3},
    "train": {"steps": 2, "global_batch": 4, "seed": 7, "out_dir": "{dir}/out",
              "eval_batches": 1},
}

# Every recipe key with a valid value, so that absent keys get mutated too.
KEYS = {
    "model": {"hf_dir": "{dir}/model", "init_std": 0.02},
    "data": {"format": "text", "path": "{dir}/data.txt", "paths": ["{dir}/data.txt"],
             "tokenizer": "{dir}/tok", "seq_len": 16, "val_fraction": 0.1, "packing": True,
             "text_split": "eos", "chat_template": "chatml", "on_bad_row": "error",
             "cache_dir": "{dir}/cache"},
    "optim": {"lr": 1e-3, "min_lr_ratio": 0.1, "warmup_steps": 1, "schedule": "cosine",
              "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "weight_decay": 0.1,
              "decay_norms_and_biases": False, "clip_norm": 1.0},
    "train": {"steps": 2, "global_batch": 4, "micro_batch": 2, "seed": 7,
              "out_dir": "{dir}/out", "device": "cpu", "precision": "f32", "log_every": 1,
              "eval_every": 1, "eval_batches": 1, "sample_every": 1, "sample_prompt": "To",
              "sample_tokens": 3, "activation_checkpointing": "none", "spike_guard": 0.0},
    "parallel": {"zero_stage": 0, "tp": 1, "pp": 1, "microbatches": 1, "pp_schedule": "1f1b",
                 "pp_virtual_stages": 1, "pp_layers": [2], "sequence_parallel": False,
                 "collective_timeout_s": 60.0, "gpu_comm": "auto"},
    "checkpoint": {"enabled": True, "dir": "{dir}/ckpt", "every": 1, "keep_last": 1,
                   "save_initial": False},
}
# keys whose large values make a run legitimately long or large (a timeout there is not a hang)
SIZE_KEYS = {"steps", "global_batch", "micro_batch", "seq_len", "eval_batches", "sample_tokens",
             "microbatches", "eval_every", "log_every", "every", "warmup_steps", "keep_last",
             "sample_every", "collective_timeout_s", "pp_virtual_stages"}

NAN, INF = float("nan"), float("inf")
POOL = [0, 1, -1, 2, 3, 5, 64, 1000, 2**31, 2**53, 2**63 - 1, -(2**63), 0.5, -0.0, 1e-300,
        1e300, NAN, INF, -INF, "", "x", "cpu", "cuda", "cuda:7", "bf16", "fp16", "f64", "full",
        "selective", "none", "gpipe", "interleaved", "chatml", "alpaca", "chat", "skip",
        "/nonexistent", "{dir}", "{dir}/data.txt", True, False, [], [0], [1, 1], [2, 0],
        [1, 1, 1, 1, 1, 1, 1], ["x"], {}, {"a": 1}]
JSON_POOL = [0, 1, -1, 2, 3, 7, 10**6, 2**40, 2**64, -(2**40), 0.5, 1e-30, 1e300, None, "",
             "x", "llama", "gpt2", "silu", "gelu", "yarn", True, False, [], [0], [1, 2],
             {}, {"rope_type": "yarn"}, {"rope_type": "llama3", "factor": 8.0},
             {"rope_type": "linear", "factor": 0.0}, {"type": "dynamic", "factor": 2.0},
             {"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 0}]


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(v)


def write_recipe(path, recipe, d):
    lines = []
    for sec, kv in recipe.items():
        lines.append(f"[{sec}]")
        for k, v in kv.items():
            lines.append(f"{k} = {toml_value(v)}".replace("{dir}", d))
        lines.append("")
    with open(path, "w") as f:
        f.write("\n".join(lines))


def write_json(path, value):
    with open(path, "w") as f:
        json.dump(value, f)


def read_st(path):
    with open(path, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def write_st(path, header, body, length_delta=0):
    h = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h) + length_delta) + h + body)


def mutate_weights(rng, path):
    try:
        header, body = read_st(path)
    except (ValueError, UnicodeDecodeError, struct.error):  # an earlier mutation broke it
        return "weights:already-unreadable"
    names = [k for k in header if k != "__metadata__"]
    name = rng.choice(names)
    t = header[name]
    op = rng.choice(["dtype", "shape", "offsets", "drop", "add", "truncate", "pad", "hlen",
                     "metadata", "overlap"])
    if op == "dtype":
        t["dtype"] = rng.choice(["F16", "BF16", "F64", "I32", "I64", "U8", "BOOL", "F8_E4M3",
                                 "XX", ""])
    elif op == "shape":
        s = list(t["shape"])
        choice = rng.randrange(4)
        if choice == 0 and s:
            s[rng.randrange(len(s))] += rng.choice([-1, 1, 1000])
        elif choice == 1:
            s = s[::-1]
        elif choice == 2:
            s = s + [1]
        else:
            s = [0] if rng.random() < 0.5 else []
        t["shape"] = s
    elif op == "offsets":
        a, b = t["data_offsets"]
        t["data_offsets"] = rng.choice([[b, a], [a, b + 4], [a + 1, b + 1], [a, 2**62],
                                        [-1, b], [a, a]])
    elif op == "drop":
        del header[name]
    elif op == "add":
        header["model.extra.weight"] = {"dtype": "F32", "shape": [2],
                                        "data_offsets": [0, 8]}
    elif op == "truncate":
        body = body[: rng.randrange(len(body))]
    elif op == "pad":
        body = body + b"\0" * rng.choice([1, 3, 4, 4096])
    elif op == "metadata":
        header["__metadata__"] = rng.choice([{"format": "tf"}, {"x": 1}, [], "x"])
    elif op == "overlap":
        other = header[rng.choice(names)]
        t["data_offsets"] = list(other["data_offsets"])
    if op == "hlen":
        write_st(path, header, body, rng.choice([-1, 1, 10**6, -8]))
    else:
        write_st(path, header, body)
    return f"weights:{op}:{name}"


def mutate_config(rng, path):
    with open(path) as f:
        c = json.load(f)
    key = rng.choice(list(c) + ["rope_scaling", "rope_parameters", "sliding_window",
                                "head_dim", "num_key_value_heads", "layer_types",
                                "use_sliding_window", "max_window_layers", "torch_dtype",
                                "dtype", "architectures", "model_type"])
    r = rng.random()
    if r < 0.2:
        c.pop(key, None)
        what = "delete"
    elif key == "layer_types" and r < 0.6:
        n = c.get("num_hidden_layers", c.get("n_layer", 2))
        c[key] = rng.choice([["full_attention"] * (n + 1), ["sliding_attention"] * n,
                             ["x"] * n, []])
        what = "set"
    else:
        c[key] = rng.choice(JSON_POOL)
        what = "set"
    write_json(path, c)
    return f"config:{what}:{key}={json.dumps(c.get(key))[:60]}"


def mutate_bytes(rng, path, kind):
    with open(path, "rb") as f:
        raw = f.read()
    op = rng.choice(["empty", "truncate", "garbage", "insert", "nul"])
    if op == "empty":
        raw = b""
    elif op == "truncate":
        raw = raw[: rng.randrange(max(1, len(raw)))]
    elif op == "garbage":
        raw = bytes(rng.randrange(256) for _ in range(rng.choice([1, 7, 300])))
    elif op == "insert":
        i = rng.randrange(max(1, len(raw)))
        raw = raw[:i] + rng.choice([b"\xff\xfe", b'{"x": [}', b"\n\n\n", b"\x00", b"\"",
                                    b'{"messages": 3}\n', b"[]", b"null"]) + raw[i:]
    else:
        raw = raw.replace(b"e", b"\x00", rng.randrange(1, 50))
    with open(path, "wb") as f:
        f.write(raw)
    return f"{kind}:{op}:{os.path.basename(path)}"


def mutate_json_tree(rng, path):
    """Sets a random node of the JSON file's tree to a pool value, or deletes it."""
    with open(path) as f:
        root = json.load(f)
    parent, key, node, where = None, None, root, []
    for _ in range(rng.randrange(1, 6)):
        children = (list(node.items()) if isinstance(node, dict)
                    else list(enumerate(node)) if isinstance(node, list) else [])
        if not children:
            break
        key, child = rng.choice(children)
        parent, node = node, child
        where.append(str(key))
    if parent is None:
        return f"ckpt-json:none:{os.path.basename(path)}"
    if rng.random() < 0.2 and isinstance(parent, dict):
        del parent[key]
        what = "delete"
    else:
        parent[key] = rng.choice(JSON_POOL)
        what = "set"
    write_json(path, root)
    return f"ckpt-json:{what}:{os.path.basename(path)}:{'.'.join(where)[:80]}"


def checkpoint_case(rng, binary, d, recipe):
    """Trains the valid run with checkpoints, mutates its last one; returns (mutations, args)."""
    recipe["train"]["steps"] = 2
    recipe.setdefault("checkpoint", {}).update({"every": 1, "keep_last": 2})
    write_recipe(os.path.join(d, "recipe.toml"), recipe, d)
    subprocess.run([binary, "train", os.path.join(d, "recipe.toml")], cwd=d, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env=dict(os.environ, RAYON_NUM_THREADS="1"))
    step = os.path.join(d, "out", "checkpoints", "step-00000002")
    mutations = []
    for _ in range(rng.choice([1, 1, 2])):
        target = rng.choice(["trainer_state", "shard_index", "shard", "config", "tokenizer"])
        if target == "trainer_state":
            m = mutate_json_tree(rng, os.path.join(step, "trainer_state.json"))
        elif target == "shard_index":
            m = mutate_json_tree(rng, os.path.join(step, "shard-00000-of-00001.json"))
        elif target == "shard":
            m = mutate_weights(rng, os.path.join(step, "shard-00000-of-00001.safetensors"))
        elif target == "config":
            m = mutate_config(rng, os.path.join(step, "config.json"))
        else:
            m = mutate_bytes(rng, os.path.join(step, rng.choice(
                ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"])), "tok")
        mutations.append(m)
    command = rng.choice(["resume", "resume", "export", "sample"])
    if command == "resume":
        recipe["train"]["steps"] = 4
        write_recipe(os.path.join(d, "recipe.toml"), recipe, d)
        args = ["train", os.path.join(d, "recipe.toml"), "--resume"]
    elif command == "export":
        args = ["export", step, "--hf", os.path.join(d, "exported")]
    else:
        args = ["sample", step, "--prompt", "To be", "--max-new-tokens", "4"]
    return mutations, args


def mutate_recipe(rng, recipe):
    sec = rng.choice(list(KEYS))
    key = rng.choice(list(KEYS[sec]) + ["bogus_key"])
    r = rng.random()
    recipe.setdefault(sec, {})
    if r < 0.12:
        recipe[sec].pop(key, None)
        return f"recipe:delete:{sec}.{key}", key
    if key == "bogus_key":
        recipe[sec][key] = 1
        return f"recipe:unknown:{sec}.{key}", key
    v = rng.choice(POOL)
    recipe[sec][key] = v
    return f"recipe:set:{sec}.{key}={toml_value(v)[:40]}", key


AREAS = ["recipe"] * 5 + ["config"] * 2 + ["weights"] * 2 + ["tokenizer", "data"]


PARALLEL_BASES = [{"zero_stage": 1}, {"zero_stage": 3}, {"tp": 2}, {"tp": 2, "sequence_parallel": True},
                  {"pp": 2}, {"pp": 2, "pp_schedule": "gpipe"}]


def build_case(seed, index, root, areas=None, ranks=1, binary=None):
    rng = random.Random(seed * 100003 + index)
    d = os.path.join(root, f"s{seed}-{index}")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    model = rng.choice(MODELS)
    shutil.copytree(os.path.join(FIXTURES, model), os.path.join(d, "model"))
    shutil.copytree(os.path.join(REPO, "tests", "data", "byte-bpe"), os.path.join(d, "tok"))
    recipe = json.loads(json.dumps(BASE))
    fmt = rng.choice(["text"] * 3 + ["alpaca", "chat"])
    if fmt == "text":
        shutil.copy(os.path.join(REPO, "tests", "data", "shakespeare_head.txt"),
                    os.path.join(d, "data.txt"))
        data_file = os.path.join(d, "data.txt")
    elif fmt == "alpaca":  # short records: every one fits the fixtures' 128 positions
        data_file = os.path.join(d, "alpaca.json")
        with open(data_file, "w") as f:
            json.dump([{"instruction": f"Say {w}.", "input": "" if i % 2 else "Please.",
                        "output": f"{w.capitalize()}, friend."}
                       for i, w in enumerate(["hi", "bye", "yes", "no", "thanks", "again"] * 3)],
                      f, indent=1)
        # the alpaca prompt is ~190 bytes: beyond GPT-2's 128 positions, so a Llama-family model
        # (RoPE extrapolates) at 256
        if model == "tiny-gpt2":
            model = "tiny-llama"
            shutil.rmtree(os.path.join(d, "model"))
            shutil.copytree(os.path.join(FIXTURES, model), os.path.join(d, "model"))
        recipe["data"].update({"format": fmt, "path": data_file, "seq_len": 256})
        recipe["data"].pop("cache_dir")
    else:
        data_file = os.path.join(d, "chat.jsonl")
        shutil.copy(os.path.join(REPO, "tests", "data", "sft", "chat_demo_20.jsonl"), data_file)
        recipe["data"].update({"format": fmt, "path": data_file, "seq_len": 128})
        recipe["data"].pop("cache_dir")
    if ranks > 1:  # a valid layout for the ranks, then mutated like the rest
        recipe["parallel"] = dict(rng.choice(PARALLEL_BASES))
        recipe["train"]["micro_batch"] = 1
        recipe["parallel"]["collective_timeout_s"] = 30.0
    if areas == ["checkpoint"]:
        mutations, args = checkpoint_case(rng, binary, d, recipe)
        return {"index": index, "dir": d, "model": model, "format": fmt, "mutations": mutations,
                "size_keys": [], "args": args, "ranks": 1}
    mutations, keys = [], set()
    command = "train"
    for _ in range(0 if os.environ.get("FUZZ_NO_MUTATION") else rng.choice([1, 1, 2, 3])):
        area = rng.choice(areas or AREAS)
        if area == "recipe":
            m, k = mutate_recipe(rng, recipe)
            keys.add(k)
        elif area == "config":
            m = mutate_config(rng, os.path.join(d, "model", "config.json"))
            if rng.random() < 0.2:
                command = "check-hf"
        elif area == "weights":
            m = mutate_weights(rng, os.path.join(d, "model", "model.safetensors"))
            if rng.random() < 0.2:
                command = "check-hf"
        elif area == "tokenizer":
            m = mutate_bytes(rng, os.path.join(d, "tok", rng.choice(["encoder.json",
                                                                       "vocab.bpe"])), "tok")
        else:
            m = mutate_bytes(rng, data_file, "data")
        mutations.append(m)
    write_recipe(os.path.join(d, "recipe.toml"), recipe, d)
    if command == "check-hf":
        args = ["check-hf", os.path.join(d, "model")]
    else:
        args = ["train", os.path.join(d, "recipe.toml")]
    if ranks > 1:
        command = "train"
        args = ["train", os.path.join(d, "recipe.toml")]
        mutations.insert(0, "parallel:" + json.dumps(recipe.get("parallel")))
    return {"index": index, "dir": d, "model": model, "format": fmt, "mutations": mutations,
            "size_keys": sorted(keys & SIZE_KEYS), "args": args, "ranks": ranks}


def verdict(rc, stdout, stderr, timed_out, case):
    if timed_out:
        return "long" if case["size_keys"] else "HANG"
    if rc == 0:
        return "ok"
    if rc == 2:
        return "refused" if "error:" in stderr else "NO-MESSAGE"
    if rc == 101:
        return "PANIC"
    if rc == 1:  # check-hf's exit 1 is its verdict: numbers outside the tolerance
        if case["args"][0] == "check-hf" and "quantities within" in stdout:
            return "mismatch"
        return "INTERNAL"
    if rc < 0 or rc > 128:
        return "SIGNAL"
    return f"EXIT-{rc}"


def run_case(case, binary, timeout):
    env = dict(os.environ, RAYON_NUM_THREADS="1", RUST_BACKTRACE="1")
    t0 = time.time()
    command = [binary] + case["args"]
    if case["ranks"] > 1:
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
        command = ["mpirun", "--oversubscribe", "-np", str(case["ranks"])] + command
    # its own session, so that a timeout kills mpirun's ranks too
    p = subprocess.Popen(command, cwd=case["dir"], env=env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
        rc, timed_out = p.returncode, False
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, 9)
        out, err = p.communicate()
        rc, timed_out = None, True
    out, err = out.decode(errors="replace"), err.decode(errors="replace")
    v = verdict(rc, out, err, timed_out, case)
    lines = [l for l in err.splitlines() if l.startswith("error:") or "panicked" in l]
    return dict(case, rc=rc, verdict=v, seconds=round(time.time() - t0, 2),
                message=(lines[0] if lines else err.strip()[-300:])[:400])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--out", default="/tmp/fuzz-bad")
    ap.add_argument("--bin", default=os.path.join(REPO, "target", "release", "ferrotron"))
    ap.add_argument("--only", type=int, nargs="*")
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--ranks", type=int, default=1,
                    help="> 1: train under mpirun with a random dp / tp / pp layout")
    ap.add_argument("--areas", help="comma-separated subset of recipe,config,weights,tokenizer,data; or checkpoint alone")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    results, counts = [], {}
    for i in (a.only if a.only else range(a.count)):
        case = build_case(a.seed, i, a.out, a.areas.split(",") if a.areas else None,
                          a.ranks, a.bin)
        r = run_case(case, a.bin, a.timeout)
        results.append(r)
        counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
        finding = r["verdict"].isupper()
        if finding or a.only:
            print(f"[{i}] {r['verdict']} rc={r['rc']} {r['args'][0]} {r['model']}/{r['format']} "
                  f"{r['mutations']}\n     {r['message']}", flush=True)
        if not finding and not a.only:
            shutil.rmtree(case["dir"], ignore_errors=True)
    with open(os.path.join(a.out, f"results-s{a.seed}.json"), "w") as f:
        json.dump(results, f, indent=1)
    print("seed", a.seed, "cases", len(results), dict(sorted(counts.items())))
    sys.exit(1 if any(r["verdict"].isupper() for r in results) else 0)


if __name__ == "__main__":
    main()
