//! `ferrotron sample` (greedy) against transformers' `generate` (float64, greedy).
//!
//! `tests/fixtures/trajectories/NAME/greedy.json` (written by scripts/greedy_vs_transformers.py)
//! holds a prompt from the fixture's own data, a number of new tokens N and the text transformers
//! generated after it from `NAME/hf`: the prompt encoded by the model's tokenizer.json with its
//! special tokens (bos where the post-processor adds one), N greedy steps or up to eos, decoded
//! with special tokens kept and eos not printed. Fifteen models: Llama (biases, linear rope,
//! tied), Qwen2 (windows, one KV head), Qwen3 (q/k norms), Mistral (window), GPT-2; character-level,
//! cut GPT-2 BPE and Llama-3-like tokenizers. `ferrotron sample NAME/hf --prompt P
//! --max-new-tokens N` must print exactly the prompt and that text. The smallest gap between the
//! two largest logits over the generated steps is recorded and must stay far above f32 round-off
//! (≥ 1e-4 of a logit), so the greedy choice is well defined for an f32 forward. The generated
//! ids are compared (through the library) as well as the printed text.

mod common;

use common::root;
use ferrotron::sample::{generate_ids, load_model, SampleOptions};
use serde_json::Value;
use std::process::Command;

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("a list of ids")
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn greedy_sampling_prints_what_transformers_generates() {
    let dir = root().join("tests/fixtures/trajectories");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let fixture = entry.unwrap().path();
        let Ok(text) = std::fs::read_to_string(fixture.join("greedy.json")) else {
            continue;
        };
        let g: Value = serde_json::from_str(&text).expect("greedy.json is JSON");
        let (prompt, n) = (
            g["prompt"].as_str().unwrap(),
            g["max_new_tokens"].as_u64().unwrap(),
        );
        let gap = g["min_top2_logit_gap"].as_f64().unwrap();
        assert!(
            gap >= 1e-4,
            "{}: a near-tie ({gap:e}) makes a poor fixture",
            fixture.display()
        );
        // The ids themselves (a random model also picks ids its tokenizer cannot print).
        let m = load_model(&fixture.join("hf")).expect("the model loads");
        let prompt_ids = m.tokenizer.encode_with_special(prompt, true).unwrap();
        assert_eq!(
            prompt_ids,
            ids(&g["prompt_ids"]),
            "{}: prompt ids",
            fixture.display()
        );
        let mut stop: Vec<u32> = m.tokenizer.eos_id().into_iter().collect();
        stop.extend(ferrotron::hf_files::eos_ids(&m.model.cfg));
        let opts = SampleOptions {
            max_new_tokens: n as usize,
            ..SampleOptions::default()
        };
        let new = generate_ids(&m.model, &m.weights, &prompt_ids, &stop, &opts).unwrap();
        assert_eq!(new, ids(&g["new_ids"]), "{}: greedy ids", fixture.display());
        // The CLI prints the prompt and the decoded continuation.
        let out = Command::new(common::bin())
            .args([
                "sample",
                "--prompt",
                prompt,
                "--max-new-tokens",
                &n.to_string(),
            ])
            .arg(fixture.join("hf"))
            .output()
            .expect("ferrotron runs");
        common::check(&out, &format!("sample {}", fixture.display()));
        let want = format!("{prompt}{}\n", g["text"].as_str().unwrap());
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            want,
            "{}: ferrotron's greedy continuation differs from transformers'",
            fixture.display()
        );
        checked += 1;
    }
    assert_eq!(checked, 15, "every stored model is sampled");
}
