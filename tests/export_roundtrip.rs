//! `export`: the HF directory it writes imports (hf_import::load_units) to the checkpoint's exact
//! weights, so logits are bitwise equal (f32), or bitwise equal to a forward with bf16-rounded
//! weights (bf16); forced sharding round-trips; names, shapes, dtypes and side files are HF's.

mod checkpoint_support;

use checkpoint_support::*;
use ferrotron::export::{export, ExportDtype};
use ferrotron::model::hf_import::load_units;
use ferrotron::model::{ModelConfig, ParamLayout};
use safetensors::{Dtype, SafeTensors};
use std::collections::BTreeMap;
use std::path::Path;

/// name -> (dtype, shape) of every tensor in the export's safetensors files.
fn stored(dir: &Path) -> BTreeMap<String, (Dtype, Vec<usize>)> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "safetensors") {
            let bytes = std::fs::read(&p).unwrap();
            let st = SafeTensors::deserialize(&bytes).unwrap();
            for (n, v) in st.tensors() {
                out.insert(n, (v.dtype(), v.shape().to_vec()));
            }
        }
    }
    out
}

fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// Exports a fixture checkpoint and returns (checkpoint weights, imported weights, config).
fn export_and_import(
    name: &str,
    dtype: ExportDtype,
    shard: u64,
) -> (Vec<Vec<f32>>, Vec<Vec<f32>>, ModelConfig, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let (ckpt, state) = save_fixture(&tmp.path().join("ckpt"), name, 12, 0);
    let out = tmp.path().join("hf");
    let report = export(&ckpt, &out, dtype, shard).unwrap();
    assert_eq!(report.source, ckpt);
    let cfg = ModelConfig::from_file(&out.join("config.json")).unwrap();
    let layout = ParamLayout::new(&cfg);
    let imported = load_units(&out, &cfg, &layout).unwrap();
    (state.master, imported, cfg, tmp)
}

fn check_f32(name: &str) {
    let (weights, imported, cfg, tmp) = export_and_import(name, ExportDtype::F32, u64::MAX);
    assert_eq!(bits(&imported), bits(&weights));
    let ids = ids(2 * 24, cfg.vocab_size);
    assert_eq!(
        logits(&cfg, &imported, &ids, 2)
            .iter()
            .map(|x| x.to_bits())
            .collect::<Vec<_>>(),
        logits(&cfg, &weights, &ids, 2)
            .iter()
            .map(|x| x.to_bits())
            .collect::<Vec<_>>()
    );
    let out = tmp.path().join("hf");
    // HF names, HF shapes, F32, nothing else.
    let (fcfg, layout, _) = fixture(name);
    let want: BTreeMap<String, (Dtype, Vec<usize>)> = layout
        .tensors()
        .map(|(_, t)| (t.name.clone(), (Dtype::F32, t.shape.clone())))
        .collect();
    assert_eq!(stored(&out), want);
    assert_eq!(cfg.to_hf_json(), fcfg.to_hf_json());
    let c = read_json(&out.join("config.json"));
    assert_eq!(c["torch_dtype"], "float32");
    let g = read_json(&out.join("generation_config.json"));
    assert_eq!(g["eos_token_id"], c["eos_token_id"]);
    assert_eq!(g["bos_token_id"], c["bos_token_id"]);
    let tok = ferrotron::tokenizer::Tokenizer::from_dir(&out).unwrap();
    assert_eq!(
        tok.encode("To be, or not").unwrap(),
        gpt2_tokenizer().encode("To be, or not").unwrap()
    );
    assert!(!tmp.path().read_dir().unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with(".tmp")));
}

#[test]
fn export_f32_gpt2_logits_are_bitwise_equal() {
    check_f32("tiny-gpt2");
    // GPT-2 as save_pretrained writes it: Conv1D weights [in, out], no tied lm_head.
    let (_, _, _, tmp) = export_and_import("tiny-gpt2", ExportDtype::F32, u64::MAX);
    let s = stored(&tmp.path().join("hf"));
    assert_eq!(s["transformer.h.0.attn.c_attn.weight"].1, vec![64, 192]);
    assert_eq!(s["transformer.h.1.mlp.c_proj.weight"].1, vec![256, 64]);
    assert!(!s.contains_key("lm_head.weight"));
}

#[test]
fn export_f32_llama_logits_are_bitwise_equal() {
    check_f32("tiny-llama");
}

#[test]
fn export_f32_phi3_logits_are_bitwise_equal() {
    check_f32("var-phi3");
    // Phi-3 as save_pretrained writes it: q | k | v in one qkv_proj, gate | up in gate_up_proj.
    let (_, _, _, tmp) = export_and_import("var-phi3", ExportDtype::F32, u64::MAX);
    let s = stored(&tmp.path().join("hf"));
    assert_eq!(
        s["model.layers.1.self_attn.qkv_proj.weight"].1,
        vec![64, 32]
    );
    assert_eq!(s["model.layers.0.mlp.gate_up_proj.weight"].1, vec![48, 32]);
    assert!(!s
        .keys()
        .any(|k| k.ends_with(".q_proj.weight") || k.ends_with(".mlp.up_proj.weight")));
}

#[test]
fn export_bf16_equals_forward_with_rounded_weights() {
    for name in ["tiny-gpt2", "tiny-llama"] {
        let (weights, imported, cfg, tmp) = export_and_import(name, ExportDtype::Bf16, u64::MAX);
        let rounded: Vec<Vec<f32>> = weights
            .iter()
            .map(|u| {
                u.iter()
                    .map(|&x| half::bf16::from_f32(x).to_f32())
                    .collect()
            })
            .collect();
        assert_eq!(bits(&imported), bits(&rounded));
        assert_ne!(bits(&imported), bits(&weights), "bf16 must actually round");
        let ids = ids(2 * 16, cfg.vocab_size);
        let a: Vec<u32> = logits(&cfg, &imported, &ids, 2)
            .iter()
            .map(|x| x.to_bits())
            .collect();
        let b: Vec<u32> = logits(&cfg, &rounded, &ids, 2)
            .iter()
            .map(|x| x.to_bits())
            .collect();
        assert_eq!(a, b);
        let out = tmp.path().join("hf");
        assert!(stored(&out).values().all(|(d, _)| *d == Dtype::BF16));
        assert_eq!(
            read_json(&out.join("config.json"))["torch_dtype"],
            "bfloat16"
        );
    }
}

#[test]
fn export_forced_sharding_round_trips() {
    let (weights, imported, cfg, tmp) = export_and_import("tiny-llama", ExportDtype::F32, 100_000);
    assert_eq!(bits(&imported), bits(&weights));
    let out = tmp.path().join("hf");
    assert!(!out.join("model.safetensors").exists());
    let index = read_json(&out.join("model.safetensors.index.json"));
    let map = index["weight_map"].as_object().unwrap();
    let layout = ParamLayout::new(&cfg);
    assert_eq!(map.len(), layout.tensors().count());
    let shards: std::collections::BTreeSet<&str> =
        map.values().map(|v| v.as_str().unwrap()).collect();
    assert!(shards.len() > 2, "{shards:?}");
    assert!(shards
        .iter()
        .all(|s| s.starts_with("model-000") && s.contains(&format!("-of-{:05}", shards.len()))));
    assert_eq!(
        index["metadata"]["total_size"].as_u64().unwrap() as usize,
        layout.num_params() * 4
    );
}

#[test]
fn export_from_a_root_takes_the_latest_and_never_overwrites() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("ckpt");
    save_fixture(&root, "tiny-gpt2", 1, 0);
    let (latest, state) = save_fixture(&root, "tiny-gpt2", 2, 0);
    let out = tmp.path().join("hf");
    std::fs::create_dir(&out).unwrap(); // an empty directory is fine
    let r = export(&root, &out, ExportDtype::F32, u64::MAX).unwrap();
    assert_eq!(r.source, latest);
    let (cfg, layout, _) = fixture("tiny-gpt2");
    assert_eq!(
        bits(&load_units(&out, &cfg, &layout).unwrap()),
        bits(&state.master)
    );
    let err = export(&root, &out, ExportDtype::F32, u64::MAX)
        .unwrap_err()
        .to_string();
    assert!(err.contains("already exists"), "{err}");
}
