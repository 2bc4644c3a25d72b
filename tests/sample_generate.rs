//! `sample`: greedy decoding equals an argmax loop computed here; seeded sampling is
//! reproducible and stays in the top-k; the context is truncated to the model's positions; EOS
//! stops; the CLI prints prompt + continuation, from a checkpoint or its HF export alike.
//! Model: the tiny-gpt2 fixture (vocab 512) with the GPT-2 tokenizer, so prompts are chosen to
//! encode to ids < 512 (asserted).

mod checkpoint_support;

use checkpoint_support::*;
use ferrotron::sample::{generate, generate_ids, load_model, LoadedModel, SampleOptions};
use std::process::Command;

const PROMPT: &str = "in the";

fn model() -> (LoadedModel, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    save_fixture(&tmp.path().join("ckpt"), "tiny-gpt2", 3, 0);
    // A checkpoint root resolves to its newest step.
    (load_model(&tmp.path().join("ckpt")).unwrap(), tmp)
}

fn greedy(n: usize) -> SampleOptions {
    SampleOptions {
        max_new_tokens: n,
        ..SampleOptions::default()
    }
}

/// The last row of the logits of `seq`, computed with the test's own forward helper.
fn last_row(m: &LoadedModel, seq: &[u32]) -> Vec<f32> {
    let ids: Vec<i32> = seq.iter().map(|&t| t as i32).collect();
    let all = logits(&m.model.cfg, &m.weights, &ids, 1);
    let v = m.model.cfg.vocab_size;
    all[all.len() - v..].to_vec()
}

fn first_argmax(xs: &[f32]) -> u32 {
    let max = xs.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    xs.iter().position(|&x| x == max).unwrap() as u32
}

#[test]
fn greedy_equals_an_independent_argmax_loop() {
    let (m, _tmp) = model();
    let prompt = m.tokenizer.encode(PROMPT).unwrap();
    assert!(prompt.iter().all(|&t| t < 512), "{prompt:?}");
    let got = generate_ids(&m.model, &m.weights, &prompt, &[], &greedy(12)).unwrap();
    assert_eq!(
        got,
        generate_ids(&m.model, &m.weights, &prompt, &[], &greedy(12)).unwrap()
    );
    let mut seq = prompt.clone();
    for _ in 0..12 {
        let next = first_argmax(&last_row(&m, &seq));
        seq.push(next);
    }
    assert_eq!(got, seq[prompt.len()..]);
    // top-k 1 at any temperature is greedy.
    let k1 = SampleOptions {
        max_new_tokens: 12,
        temperature: 1.3,
        top_k: 1,
        seed: 9,
    };
    assert_eq!(
        generate_ids(&m.model, &m.weights, &prompt, &[], &k1).unwrap(),
        got
    );
    // The text is the decoded continuation.
    let text = generate(&m.model, &m.weights, &m.tokenizer, PROMPT, &greedy(12)).unwrap();
    assert_eq!(format!("{PROMPT}{text}"), m.tokenizer.decode(&seq).unwrap());
    // EOS stops generation (and is returned by generate_ids).
    let stop = [got[2]];
    let until = generate_ids(&m.model, &m.weights, &prompt, &stop, &greedy(12)).unwrap();
    let first = got.iter().position(|&t| t == got[2]).unwrap();
    assert_eq!(until, got[..=first]);
}

#[test]
fn seeded_top_k_sampling_is_reproducible_and_stays_in_the_top_k() {
    let (m, _tmp) = model();
    let prompt = m.tokenizer.encode(PROMPT).unwrap();
    let opts = |seed| SampleOptions {
        max_new_tokens: 6,
        temperature: 1.0,
        top_k: 3,
        seed,
    };
    let mut distinct = std::collections::BTreeSet::new();
    for seed in 0..6 {
        let a = generate_ids(&m.model, &m.weights, &prompt, &[], &opts(seed)).unwrap();
        assert_eq!(
            a,
            generate_ids(&m.model, &m.weights, &prompt, &[], &opts(seed)).unwrap()
        );
        let mut seq = prompt.clone();
        for &t in &a {
            let row = last_row(&m, &seq);
            let above = row.iter().filter(|&&x| x > row[t as usize]).count();
            assert!(above < 3, "seed {seed}: token {t} is not among the top 3");
            seq.push(t);
        }
        distinct.insert(a);
    }
    assert!(
        distinct.len() > 1,
        "different seeds should sample differently"
    );
}

#[test]
fn long_prompts_are_truncated_to_the_models_positions() {
    let (m, _tmp) = model();
    let max = m.model.cfg.max_positions;
    let prompt: Vec<u32> = ids(max + 12, 512).into_iter().map(|t| t as u32).collect();
    let got = generate_ids(&m.model, &m.weights, &prompt, &[], &greedy(2)).unwrap();
    assert_eq!(
        got[0],
        first_argmax(&last_row(&m, &prompt[prompt.len() - max..]))
    );
}

fn ferrotron(args: &[&std::ffi::OsStr]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ferrotron"))
        .args(args)
        .output()
        .unwrap();
    let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap(), s(&out.stdout), s(&out.stderr))
}

#[test]
fn cli_samples_from_a_checkpoint_and_from_its_export() {
    let (m, tmp) = model();
    let want = generate(&m.model, &m.weights, &m.tokenizer, PROMPT, &greedy(8)).unwrap();
    let ckpt = tmp.path().join("ckpt");
    let hf = tmp.path().join("hf");
    let (code, _, err) = ferrotron(&[
        "export".as_ref(),
        ckpt.as_os_str(),
        "--hf".as_ref(),
        hf.as_os_str(),
    ]);
    assert_eq!(code, 0, "{err}");
    for dir in [&ckpt, &ckpt.join("step-00000003"), &hf] {
        let (code, out, err) = ferrotron(&[
            "sample".as_ref(),
            dir.as_os_str(),
            "--prompt".as_ref(),
            PROMPT.as_ref(),
            "--max-new-tokens".as_ref(),
            "8".as_ref(),
        ]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(out, format!("{PROMPT}{want}\n"));
    }
}
