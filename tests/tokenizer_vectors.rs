//! GPT-2 tokenizer against llama.cpp's reference vectors (generated with HF transformers):
//! tests/data/tokenizer-vectors/ggml-vocab-gpt-2.gguf.inp holds records each ended by
//! "\n__ggml_vocab_test__\n"; the .out file holds one line of space-separated ids per record.

use std::path::{Path, PathBuf};

use ferrotron::tokenizer::Tokenizer;

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

fn vectors() -> Vec<(String, Vec<u32>)> {
    let dir = data().join("tokenizer-vectors");
    let inp = std::fs::read_to_string(dir.join("ggml-vocab-gpt-2.gguf.inp")).unwrap();
    let out = std::fs::read_to_string(dir.join("ggml-vocab-gpt-2.gguf.out")).unwrap();
    let mut texts: Vec<&str> = inp.split("\n__ggml_vocab_test__\n").collect();
    assert_eq!(
        texts.pop(),
        Some(""),
        "the input file ends with a separator"
    );
    let ids: Vec<Vec<u32>> = out
        .lines()
        .map(|l| l.split_whitespace().map(|t| t.parse().unwrap()).collect())
        .collect();
    assert_eq!(texts.len(), ids.len());
    texts.into_iter().map(str::to_string).zip(ids).collect()
}

#[test]
fn gpt2_files_encode_every_reference_vector() {
    let tok = Tokenizer::from_dir(data().join("gpt2")).unwrap();
    let v = vectors();
    assert_eq!(v.len(), 46);
    let mut failed = Vec::new();
    for (text, ids) in &v {
        let got = tok.encode(text).unwrap();
        if &got != ids {
            failed.push(format!("{text:?}: got {got:?}, want {ids:?}"));
        }
        assert_eq!(
            &tok.decode(&got).unwrap(),
            text,
            "byte-level BPE round-trips"
        );
    }
    assert!(
        failed.is_empty(),
        "{} of {} records differ:\n{}",
        failed.len(),
        v.len(),
        failed.join("\n")
    );
    assert_eq!(tok.vocab_size(), 50257);
    assert_eq!(tok.eos_id(), Some(50256));
    assert_eq!(tok.bos_id(), Some(50256));
    assert_eq!(tok.encode("a<|endoftext|>b").unwrap(), vec![64, 50256, 65]);
}

#[test]
fn saved_tokenizer_json_loads_back_and_encodes_identically() {
    let tok = Tokenizer::from_dir(data().join("gpt2")).unwrap();
    let out = tempfile::tempdir().unwrap();
    tok.save(out.path(), Some(1024)).unwrap();
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ] {
        assert!(out.path().join(f).is_file(), "{f} written");
    }
    let back = Tokenizer::from_dir(out.path()).unwrap();
    for (text, ids) in vectors() {
        assert_eq!(back.encode(&text).unwrap(), ids, "{text:?}");
    }
    assert_eq!(back.identity().unwrap(), tok.identity().unwrap());
    assert_eq!(back.eos_id(), Some(50256));
    let cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("tokenizer_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(cfg["eos_token"], "<|endoftext|>");
    assert_eq!(cfg["model_max_length"], 1024);
}

#[test]
fn tokenizer_config_supplies_chat_template_and_special_tokens() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["encoder.json", "vocab.bpe"] {
        std::fs::copy(data().join("gpt2").join(f), dir.path().join(f)).unwrap();
    }
    let tmpl = "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{{ eos_token }}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}";
    let cfg = serde_json::json!({
        "eos_token": {"content": "<|endoftext|>", "special": true},
        "chat_template": tmpl,
    });
    std::fs::write(dir.path().join("tokenizer_config.json"), cfg.to_string()).unwrap();
    let tok = Tokenizer::from_dir(dir.path()).unwrap();
    assert_eq!(tok.chat_template_source(), Some(tmpl));
    let msgs = vec![ferrotron::tokenizer::Message {
        role: "user".into(),
        content: "hi".into(),
    }];
    let t = tok.chat_template(None).unwrap();
    assert_eq!(
        t.render(&msgs, true).unwrap(),
        "<|user|>\nhi<|endoftext|>\n<|assistant|>\n"
    );

    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        r#"{"eos_token": "<nope>"}"#,
    )
    .unwrap();
    let e = Tokenizer::from_dir(dir.path()).unwrap_err().to_string();
    assert!(
        e.contains("tokenizer_config.json") && e.contains("<nope>"),
        "{e}"
    );
    let empty = tempfile::tempdir().unwrap();
    let e = Tokenizer::from_dir(empty.path()).unwrap_err().to_string();
    assert!(e.contains("holds no tokenizer"), "{e}");
}
