//! An export is loaded as its source was: a model that came from an HF directory carries that
//! directory's config.json keys, generation_config.json and tokenizer files through training,
//! the checkpoint and `ferrotron export`, and only what training changed differs (the weights).
//!
//! - A Qwen2.5-Instruct-style source (4.x config with an eos list, use_sliding_window false,
//!   max_window_layers, initializer_range, attention_dropout; generation_config.json with
//!   sampling settings; tokenizer_config.json naming Qwen2Tokenizer with a chat template) is
//!   fine-tuned for 2 steps by the binary with recipes/sft-chat-hf.toml (chat records through
//!   the source's own template), exported with a bare relative `--hf NAME`, and loaded
//!   back: every source key equal (the stored dtype aside), the generation config and the
//!   tokenizer files identical, every bias moved by training — the key bias too.
//! - Every fixture family (Llama, GPT-2, Qwen2, Llama 3.x, Qwen3, Mistral): a checkpoint of the
//!   fixture exported in bf16 has the fixture's config keys and generation config; GPT-2's gains
//!   `n_ctx` (= n_positions), which llama.cpp's converter reads.

mod common;

use common::*;
use ferrotron::export::{export, ExportDtype};
use ferrotron::model::hf_import::load_units;
use ferrotron::model::{ModelConfig, ParamLayout, Role};
use ferrotron::tokenizer::Tokenizer;
use serde_json::{json, Value};
use std::path::Path;

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn write_json(p: &Path, v: &Value) {
    std::fs::write(p, serde_json::to_string_pretty(v).unwrap()).unwrap();
}

/// HF tokenizer files (tokenizer.json etc.) of the byte-level BPE in tests/data/byte-bpe in
/// `dir`, with `tokenizer_config` as tokenizer_config.json.
fn hf_tokenizer(dir: &Path, tokenizer_config: Value) {
    Tokenizer::from_dir(root().join("tests/data/byte-bpe"))
        .unwrap()
        .save(dir, None)
        .unwrap();
    write_json(&dir.join("tokenizer_config.json"), &tokenizer_config);
}

/// The fixture `name` as an HF source directory: its weights, config.json and
/// generation_config.json, and HF tokenizer files.
fn fixture_source(name: &str, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let fx = root().join("tests/fixtures/hf").join(name);
    for f in ["config.json", "generation_config.json", "model.safetensors"] {
        std::fs::copy(fx.join(f), dir.join(f)).unwrap();
    }
    hf_tokenizer(
        dir,
        json!({"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|endoftext|>",
               "model_max_length": 4096, "clean_up_tokenization_spaces": false}),
    );
}

/// A Qwen2.5-Instruct-style source: the tiny-qwen2 weights with a transformers 4.x config as
/// Qwen publishes it (eos list, a window size that is off, max_window_layers, dtype bfloat16).
fn qwen_source(dir: &Path) {
    fixture_source("tiny-qwen2", dir);
    let mut c = read_json(&dir.join("config.json"));
    let m = c.as_object_mut().unwrap();
    for k in ["rope_parameters", "layer_types", "dtype"] {
        m.remove(k);
    }
    for (k, v) in [
        ("rope_theta", json!(1000000.0)),
        ("rope_scaling", Value::Null),
        ("use_sliding_window", json!(false)),
        ("sliding_window", json!(32768)),
        ("max_window_layers", json!(21)),
        ("bos_token_id", json!(256)),
        ("eos_token_id", json!([256, 10])),
        ("torch_dtype", json!("bfloat16")),
        ("transformers_version", json!("4.43.1")),
        ("initializer_range", json!(0.02)),
        ("attention_dropout", json!(0.0)),
    ] {
        m.insert(k.into(), v);
    }
    write_json(&dir.join("config.json"), &c);
    write_json(
        &dir.join("generation_config.json"),
        &json!({"bos_token_id": 256, "pad_token_id": 256, "do_sample": true,
                "eos_token_id": [256, 10], "repetition_penalty": 1.05, "temperature": 0.7,
                "top_p": 0.8, "top_k": 20, "transformers_version": "4.37.0"}),
    );
    hf_tokenizer(
        dir,
        json!({"tokenizer_class": "Qwen2Tokenizer", "errors": "replace",
               "model_max_length": 131072, "eos_token": "<|endoftext|>",
               "pad_token": "<|endoftext|>", "bos_token": null, "split_special_tokens": false,
               "add_prefix_space": false, "clean_up_tokenization_spaces": false,
               "chat_template": "{% for m in messages %}<|endoftext|>{{ m['role'] }}\n{{ m['content'] }}{% endfor %}"}),
    );
}

/// Every key of `source` is in `export` with the same value, except the stored dtype; keys
/// the export adds are only those serving stacks need. Returns the number of keys compared.
fn assert_config_carried(source: &Value, export: &Value, dtype: &str) -> usize {
    let (s, e) = (source.as_object().unwrap(), export.as_object().unwrap());
    for (k, v) in s {
        if matches!(k.as_str(), "torch_dtype" | "dtype") {
            continue;
        }
        assert_eq!(e.get(k), Some(v), "config.json key `{k}`");
    }
    for k in e.keys().filter(|k| !s.contains_key(*k)) {
        assert!(
            matches!(
                k.as_str(),
                "torch_dtype" | "dtype" | "n_ctx" | "architectures"
            ),
            "the export added key `{k}`"
        );
    }
    assert_eq!(e["torch_dtype"], dtype);
    assert_eq!(e["dtype"], dtype);
    s.len()
}

#[test]
fn qwen2_style_source_survives_training_and_export() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("Qwen2.5-tiny-Instruct");
    qwen_source(&src);
    let ckpt = tmp.path().join("ckpt");
    // the fine-tuning recipe of the README: chat records through the source's own template
    let sets = [
        format!("model.hf_dir={}", src.display()),
        "data.path=tests/data/sft/chat_demo_20.jsonl".into(),
        "data.seq_len=128".into(),
        "data.val_fraction=0.1".into(),
        "optim.lr=1e-2".into(),
        "optim.warmup_steps=1".into(),
        "train.steps=2".into(),
        "train.global_batch=4".into(),
        "train.micro_batch=2".into(),
        "train.eval_every=0".into(),
        "checkpoint.every=2".into(),
        format!("checkpoint.dir={}", ckpt.display()),
        format!("train.out_dir={}", tmp.path().join("run").display()),
    ];
    check(
        &ferrotron(&strs(&train_args("recipes/sft-chat-hf.toml", &sets))),
        "train",
    );
    // `--hf NAME`, bare and relative, from the directory that will hold it
    let out = std::process::Command::new(bin())
        .args(["export", "ckpt", "--hf", "exported", "--dtype", "bf16"])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    check(&out, "export --hf exported");
    let exp = tmp.path().join("exported");

    let n = assert_config_carried(
        &read_json(&src.join("config.json")),
        &read_json(&exp.join("config.json")),
        "bfloat16",
    );
    assert!(n >= 25, "only {n} source keys");
    let c = read_json(&exp.join("config.json"));
    assert_eq!(
        c["eos_token_id"],
        json!([256, 10]),
        "an eos list stays a list"
    );
    assert_eq!(
        read_json(&exp.join("generation_config.json")),
        read_json(&src.join("generation_config.json"))
    );
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ] {
        assert_eq!(
            std::fs::read(exp.join(f)).unwrap(),
            std::fs::read(src.join(f)).unwrap(),
            "{f} is not the source's"
        );
    }
    // The same model, read back, and the weights training changed: every bias moved.
    let (scfg, ecfg) = (
        ModelConfig::from_file(&src.join("config.json")).unwrap(),
        ModelConfig::from_file(&exp.join("config.json")).unwrap(),
    );
    assert_eq!(scfg.to_hf_json(), ecfg.to_hf_json());
    // `ferrotron sample` stops on every id of the list, as transformers' generate does
    assert_eq!(ferrotron::hf_files::eos_ids(&ecfg), vec![256, 10]);
    let layout = ParamLayout::new(&ecfg);
    let (before, after) = (
        load_units(&src, &scfg, &layout).unwrap(),
        load_units(&exp, &ecfg, &layout).unwrap(),
    );
    for (u, t) in layout.tensors() {
        if matches!(t.role, Role::QBias | Role::KBias | Role::VBias) {
            let r = t.offset..t.offset + t.numel();
            let moved = before[u][r.clone()]
                .iter()
                .zip(&after[u][r])
                .filter(|(a, b)| a != b)
                .count();
            assert!(
                moved * 2 > t.numel(),
                "{}: only {moved} of {} elements moved",
                t.name,
                t.numel()
            );
        }
    }
}

#[test]
fn every_family_exports_its_source_config_and_generation_config() {
    for name in [
        "tiny-llama",
        "tiny-gpt2",
        "tiny-qwen2",
        "tiny-llama3",
        "tiny-qwen3",
        "tiny-mistral",
        "var-phi3",
        "var-phi3-longrope",
        "var-smollm3",
        "var-granite",
        "var-gemma",
        "var-gemma2",
        "var-gemma3",
        "var-olmo2",
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fixture_source(name, &src);
        let cfg = ModelConfig::from_file(&src.join("config.json")).unwrap();
        let layout = ParamLayout::new(&cfg);
        let units = load_units(&src, &cfg, &layout).unwrap();
        let state = ferrotron_zero::FullState {
            exp_avg: units.iter().map(|u| vec![0.0; u.len()]).collect(),
            exp_avg_sq: units.iter().map(|u| vec![0.0; u.len()]).collect(),
            master: units,
        };
        let tok = Tokenizer::from_dir(&src).unwrap();
        let ck = ferrotron::checkpoint::save(
            &tmp.path().join("ckpt"),
            1,
            &cfg,
            &layout,
            &state,
            &tok,
            &json!({}),
            0,
        )
        .unwrap();
        let out = tmp.path().join("hf");
        export(&ck, &out, ExportDtype::Bf16, u64::MAX).unwrap();
        let (s, e) = (
            read_json(&src.join("config.json")),
            read_json(&out.join("config.json")),
        );
        assert_config_carried(&s, &e, "bfloat16");
        assert_eq!(
            read_json(&out.join("generation_config.json")),
            read_json(&src.join("generation_config.json")),
            "{name}"
        );
        if name == "tiny-gpt2" {
            assert_eq!(e["n_ctx"], e["n_positions"]);
        }
        let back = ModelConfig::from_file(&out.join("config.json")).unwrap();
        assert_eq!(back.to_hf_json(), cfg.to_hf_json(), "{name}");
        println!(
            "{name}: {} source keys carried",
            s.as_object().unwrap().len()
        );
    }
}
