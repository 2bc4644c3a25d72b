"""Yarn rope scaling when config.json has no max_position_embeddings (and no
original_max_position_embeddings): transformers then reads the config class's default
(Qwen2Config 32768, MistralConfig 131072) as the original length. This writes two such models
exactly as scripts/make_odd_fixtures.py writes fixtures (f64 reference from transformers), removes
both keys from config.json, reloads it with transformers to show the default it takes, and runs
`ferrotron check-hf` on each in f32 and f64.

Usage: python3 scripts/check_yarn_class_default.py [OUT] [--bin target/release/ferrotron]
"""
import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_odd_fixtures import write_fixture  # noqa: E402
from transformers import (MistralConfig, MistralForCausalLM, Qwen2Config,  # noqa: E402
                          Qwen2ForCausalLM)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = dict(vocab_size=97, hidden_size=32, intermediate_size=40, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2)
MODELS = {
    "qwen2-yarn-no-max-positions": (Qwen2ForCausalLM, Qwen2Config(
        **SMALL, rope_parameters={"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0})),
    "mistral-yarn-no-max-positions": (MistralForCausalLM, MistralConfig(
        **SMALL, sliding_window=None,
        rope_parameters={"rope_type": "yarn", "factor": 3.0, "rope_theta": 10000.0})),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out", nargs="?", default="/tmp/yarn-class-default")
    ap.add_argument("--bin", default=os.path.join(REPO, "target", "release", "ferrotron"))
    a = ap.parse_args()
    for name, (cls, cfg) in MODELS.items():
        write_fixture(a.out, name, cls, cfg, (2, 21))
        path = os.path.join(a.out, name, "config.json")
        with open(path) as f:
            c = json.load(f)
        c.pop("max_position_embeddings")
        c["rope_parameters"].pop("original_max_position_embeddings", None)
        with open(path, "w") as f:
            json.dump(c, f, indent=1)
        reloaded = cls.from_pretrained(os.path.join(a.out, name)).config
        print(f"{name}: transformers reads max_position_embeddings "
              f"{reloaded.max_position_embeddings}, original "
              f"{reloaded.rope_parameters['original_max_position_embeddings']}")
        for dtype in ("f32", "f64"):
            p = subprocess.run([a.bin, "check-hf", os.path.join(a.out, name), "--dtype", dtype],
                               capture_output=True, text=True)
            last = (p.stdout.strip().splitlines() or [p.stderr.strip()])[-1]
            print(f"  {dtype}: exit {p.returncode}: {last}")


if __name__ == "__main__":
    main()
