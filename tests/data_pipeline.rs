//! Data pipeline: text cache, packing boundaries, loss masks, bad rows, truncation, sampler.
//! Uses the real GPT-2 BPE (tests/data/gpt2) and the first 20 records of the LLaMA-Factory demo
//! data (tests/data/sft).

use std::path::{Path, PathBuf};

use ferrotron::data::{
    self, eval_order, microbatches, rank_slice, Batch, DataConfig, Format, OnBadRow, Sampler,
    SamplerState, IGNORE_INDEX,
};
use ferrotron::tokenizer::Tokenizer;

const M: i32 = IGNORE_INDEX;

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

fn gpt2() -> Tokenizer {
    Tokenizer::from_dir(data_dir().join("gpt2")).unwrap()
}

fn cfg(format: Format, path: &Path, cache: &Path) -> DataConfig {
    DataConfig {
        format,
        path: Some(path.to_path_buf()),
        val_fraction: 0.0,
        cache_dir: Some(cache.to_path_buf()),
        ..Default::default()
    }
}

fn one(tok: &Tokenizer, s: &str) -> i32 {
    let ids = tok.encode(s).unwrap();
    assert_eq!(ids.len(), 1, "{s:?} is one GPT-2 token");
    ids[0] as i32
}

#[test]
fn text_packing_segments_positions_and_shifted_targets() {
    let tok = gpt2();
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("t.txt");
    std::fs::write(&f, "A B C<|endoftext|>D E<|endoftext|>F G H I J").unwrap();
    let c = DataConfig {
        seq_len: Some(5),
        ..cfg(Format::Text, &f, dir.path())
    };
    let ds = data::load(&c, &tok, 5).unwrap();
    let [a, b, cc, d, e, ff, g, h, i, j] =
        ["A", " B", " C", "D", " E", "F", " G", " H", " I", " J"].map(|s| one(&tok, s));
    let eos = 50256;
    // stream: A B C eos | D E eos | F G H I J eos  -> rows of 5
    assert_eq!(ds.train.len(), 3);
    assert_eq!(ds.stats.documents, 3);
    let bt = ds.train.batch(&[0, 1, 2]).unwrap();
    assert_eq!(
        bt.input_ids,
        vec![a, b, cc, eos, d, e, eos, ff, g, h, i, j, eos, eos, eos]
    );
    assert_eq!(
        bt.targets,
        vec![b, cc, eos, M, e, eos, M, g, h, i, j, eos, M, M, M]
    );
    assert_eq!(
        bt.positions,
        vec![0, 1, 2, 3, 0, 0, 1, 0, 1, 2, 0, 1, 2, 0, 1]
    );
    assert_eq!(bt.cu_seqlens, vec![0, 4, 5, 7, 10, 13, 15]);
    assert_eq!(bt.n_target_tokens, 10);
    assert_eq!(bt.max_seqlen, 4);

    // Unpacked: one document per row (a long one over several rows), padded.
    let c = DataConfig {
        packing: false,
        ..c
    };
    let ds = data::load(&c, &tok, 5).unwrap();
    assert_eq!(ds.train.len(), 4);
    let bt = ds.train.batch(&[0, 1, 2, 3]).unwrap();
    assert_eq!(&bt.input_ids[..5], &[a, b, cc, eos, eos]);
    assert_eq!(&bt.targets[..5], &[b, cc, eos, M, M]);
    assert_eq!(&bt.targets[10..20], &[g, h, i, j, eos, M, M, M, M, M]);
    assert_eq!(bt.cu_seqlens, vec![0, 4, 5, 8, 10, 15, 16, 20]);
}

#[test]
fn text_cache_is_reused_and_invalidated() {
    let tok = gpt2();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let f = dir.path().join("s.txt");
    std::fs::copy(data_dir().join("shakespeare_head.txt"), &f).unwrap();
    let c = cfg(Format::Text, &f, &cache);
    let first = data::load(&c, &tok, 64).unwrap();
    assert_eq!(first.stats.cache_hits, 0);
    let files: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1);
    let mtime = std::fs::metadata(&files[0]).unwrap().modified().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));

    let second = data::load(&c, &tok, 64).unwrap();
    assert_eq!(second.stats.cache_hits, 1, "second load reads the cache");
    assert_eq!(
        std::fs::metadata(&files[0]).unwrap().modified().unwrap(),
        mtime,
        "cache not rewritten"
    );
    assert_eq!(second.stats.tokens, first.stats.tokens);
    let all: Vec<usize> = (0..first.train.len()).collect();
    assert_eq!(
        second.train.batch(&all).unwrap(),
        first.train.batch(&all).unwrap()
    );
    // The cached stream is the text's tokens plus one eos.
    let text = std::fs::read_to_string(&f).unwrap();
    assert_eq!(first.stats.tokens, tok.encode(&text).unwrap().len() + 1);

    std::fs::write(&f, format!("{text}\nMore text.")).unwrap();
    let third = data::load(&c, &tok, 64).unwrap();
    assert_eq!(
        third.stats.cache_hits, 0,
        "a changed file is tokenized again"
    );
    assert!(third.stats.tokens > first.stats.tokens);
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 2);
}

#[test]
fn chunked_encoding_equals_whole_encoding_on_long_text() {
    let tok = gpt2();
    let head = std::fs::read_to_string(data_dir().join("shakespeare_head.txt")).unwrap();
    let mut text = String::new();
    for k in 0..100 {
        text += &format!("{head}\n\n  Act {k}:\n\tScène {k}, «ça»\n");
    }
    assert!(text.len() > 3 * 65536);
    let eot = "<|endoftext|>";
    let got = data::text::tokenize_text(&tok, &text, data::TextSplit::Eos, eot, 50256).unwrap();
    let mut want = tok.encode(&text).unwrap();
    want.push(50256);
    assert_eq!(got, want);
}

#[test]
fn alpaca_loss_only_on_output_and_eos() {
    let tok = gpt2();
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("a.jsonl");
    std::fs::write(
        &f,
        "{\"instruction\": \"Say hi\", \"input\": \"\", \"output\": \"Hi there\"}\n",
    )
    .unwrap();
    let ds = data::load(&cfg(Format::Alpaca, &f, dir.path()), &tok, 128).unwrap();
    let prompt = tok
        .encode(&data::sft::ALPACA_PROMPT.replace("{instruction}", "Say hi"))
        .unwrap();
    let out = tok.encode("Hi there").unwrap();
    let b = ds.train.batch(&[0]).unwrap();
    let n = prompt.len() + out.len() + 1;
    let mut want = vec![M; 128];
    for (k, &t) in out.iter().chain([50256u32].iter()).enumerate() {
        want[prompt.len() - 1 + k] = t as i32; // position t predicts token t+1
    }
    assert_eq!(b.targets, want);
    assert_eq!(b.n_target_tokens, out.len() + 1);
    assert_eq!(b.cu_seqlens, vec![0, n as i32, 128]);
    assert_eq!(b.input_ids[n - 1], 50256);
}

fn labelled_text(tok: &Tokenizer, b: &Batch) -> String {
    let ids: Vec<u32> = b
        .targets
        .iter()
        .filter(|&&t| t != M)
        .map(|&t| t as u32)
        .collect();
    tok.decode(&ids).unwrap()
}

#[test]
fn chat_loss_only_on_assistant_turns() {
    let tok = gpt2();
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.jsonl");
    let row = serde_json::json!({"messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "bye"},
        {"role": "assistant", "content": "see you"},
    ]});
    std::fs::write(&f, format!("{row}\n")).unwrap();
    let c = DataConfig {
        chat_template: Some("chatml".into()),
        ..cfg(Format::Chat, &f, dir.path())
    };
    let ds = data::load(&c, &tok, 256).unwrap();
    let b = ds.train.batch(&[0]).unwrap();
    assert_eq!(
        labelled_text(&tok, &b),
        "hello<|im_end|>\nsee you<|im_end|>\n"
    );
    // The first target is the token after "assistant\n": exactly the tokens of the turns are labelled.
    let text = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n";
    let k = tok.encode(text).unwrap().len();
    assert!(b.targets[..k - 1].iter().all(|&t| t == M));
    assert_eq!(b.targets[k - 1], one(&tok, "hello"));
}

#[test]
fn chat_uses_the_tokenizer_template_and_rejects_unmaskable_ones() {
    let dir = tempfile::tempdir().unwrap();
    let tdir = dir.path().join("tok");
    std::fs::create_dir(&tdir).unwrap();
    for f in ["encoder.json", "vocab.bpe"] {
        std::fs::copy(data_dir().join("gpt2").join(f), tdir.join(f)).unwrap();
    }
    let zephyr = "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{{ eos_token }}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}";
    std::fs::write(
        tdir.join("tokenizer_config.json"),
        serde_json::json!({"chat_template": zephyr}).to_string(),
    )
    .unwrap();
    let tok = Tokenizer::from_dir(&tdir).unwrap();
    let f = dir.path().join("c.jsonl");
    std::fs::write(&f, "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", \"content\": \"hello\"}]}\n").unwrap();
    let c = cfg(Format::Chat, &f, dir.path());
    assert_eq!(data::chat_template_source(&c, &tok).unwrap(), zephyr);
    let ds = data::load(&c, &tok, 64).unwrap();
    assert_eq!(
        labelled_text(&tok, &ds.train.batch(&[0]).unwrap()),
        "hello<|endoftext|>\n"
    );

    // A generation prompt that is not how the template writes assistant turns: no mask possible.
    let bad = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}";
    let c = DataConfig {
        chat_template: Some(bad.into()),
        ..c
    };
    let e = data::load(&c, &tok, 64).err().unwrap();
    assert_eq!(e.exit_code(), 2);
    let msg = e.to_string();
    assert!(
        msg.contains("c.jsonl:1:") && msg.contains("prefix"),
        "{msg}"
    );
}

#[test]
fn real_demo_data_masks_match_the_responses() {
    let tok = gpt2();
    let dir = tempfile::tempdir().unwrap();
    let chat = data_dir().join("sft/chat_demo_20.jsonl");
    let ds = data::load(
        &DataConfig {
            packing: false,
            ..cfg(Format::Chat, &chat, dir.path())
        },
        &tok,
        1024,
    )
    .unwrap();
    assert_eq!(ds.train.len(), 20);
    for (i, line) in std::fs::read_to_string(&chat).unwrap().lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let want: String = v["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["role"] == "assistant")
            .map(|m| format!("{}<|im_end|>\n", m["content"].as_str().unwrap()))
            .collect();
        assert_eq!(
            labelled_text(&tok, &ds.train.batch(&[i]).unwrap()),
            want,
            "chat row {i}"
        );
    }
    let alpaca = data_dir().join("sft/alpaca_en_demo_20.json");
    let c = DataConfig {
        packing: false,
        ..cfg(Format::Alpaca, &alpaca, dir.path())
    };
    let ds = data::load(&c, &tok, 2048).unwrap();
    let recs: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&alpaca).unwrap()).unwrap();
    assert_eq!((ds.train.len(), ds.stats.truncated), (20, 0));
    for (i, r) in recs.iter().enumerate() {
        let b = ds.train.batch(&[i]).unwrap();
        assert_eq!(
            labelled_text(&tok, &b),
            format!("{}<|endoftext|>", r["output"].as_str().unwrap()),
            "alpaca row {i}"
        );
    }
    // Packed: fewer rows, same labelled tokens.
    let packed = data::load(&DataConfig { packing: true, ..c }, &tok, 2048).unwrap();
    assert!(packed.train.len() < 20);
    let all_packed = packed
        .train
        .batch(&(0..packed.train.len()).collect::<Vec<_>>())
        .unwrap();
    let all_single = ds.train.batch(&(0..20).collect::<Vec<_>>()).unwrap();
    assert_eq!(all_packed.n_target_tokens, all_single.n_target_tokens);
    let labelled_segments = all_packed
        .cu_seqlens
        .windows(2)
        .filter(|w| {
            all_packed.targets[w[0] as usize..w[1] as usize]
                .iter()
                .any(|&t| t != M)
        })
        .count();
    assert_eq!(
        labelled_segments, 20,
        "one segment per example, padding unlabelled"
    );
    assert!(packed.stats.fill > ds.stats.fill);
}

#[test]
fn bad_rows_error_with_line_or_skip_and_count() {
    let tok = gpt2();
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.jsonl");
    std::fs::write(
        &f,
        "{\"instruction\": \"a\", \"output\": \"b\"}\n\n{\"instruction\": \"c\"}\n{\"instruction\": \"d\", \"output\": \"e\"}\n",
    )
    .unwrap();
    let c = cfg(Format::Alpaca, &f, dir.path());
    let e = data::load(&c, &tok, 64).err().unwrap();
    assert_eq!(e.exit_code(), 2);
    let msg = e.to_string();
    assert!(
        msg.contains("bad.jsonl:3:") && msg.contains("\"output\""),
        "{msg}"
    );
    let ds = data::load(
        &DataConfig {
            on_bad_row: OnBadRow::Skip,
            ..c
        },
        &tok,
        64,
    )
    .unwrap();
    assert_eq!(
        (
            ds.stats.rows_read,
            ds.stats.skipped_rows,
            ds.stats.documents
        ),
        (3, 1, 2)
    );

    let g = dir.path().join("bad.json");
    std::fs::write(&g, "[\n {\"messages\": [{\"role\": \"user\", \"content\": \"x\"}, {\"role\": \"assistant\", \"content\": \"y\"}]},\n {\"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}\n]").unwrap();
    let msg = data::load(&cfg(Format::Chat, &g, dir.path()), &tok, 64)
        .err()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("bad.json:3:") && msg.contains("no assistant message"),
        "{msg}"
    );
    let msg = data::load(
        &cfg(Format::Chat, &dir.path().join("missing.jsonl"), dir.path()),
        &tok,
        64,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        msg.contains("missing.jsonl") && msg.contains("does not exist"),
        "{msg}"
    );
    let msg = data::load(&cfg(Format::Chat, dir.path(), dir.path()), &tok, 64)
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("is a directory"), "{msg}");

    // A chat message with a role no template knows is a bad row: an error, or skipped and counted.
    let w = dir.path().join("wizard.jsonl");
    std::fs::write(&w, "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}, {\"role\": \"assistant\", \"content\": \"y\"}]}\n{\"messages\": [{\"role\": \"wizard\", \"content\": \"x\"}, {\"role\": \"assistant\", \"content\": \"y\"}]}\n").unwrap();
    let c = cfg(Format::Chat, &w, dir.path());
    let msg = data::load(&c, &tok, 64).err().unwrap().to_string();
    assert!(
        msg.contains("wizard.jsonl:2:") && msg.contains("\"wizard\""),
        "{msg}"
    );
    let ds = data::load(
        &DataConfig {
            on_bad_row: OnBadRow::Skip,
            ..c
        },
        &tok,
        64,
    )
    .unwrap();
    assert_eq!((ds.stats.rows_read, ds.stats.skipped_rows), (2, 1));
}

#[test]
fn long_examples_are_truncated_and_counted() {
    let tok = gpt2();
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("long.jsonl");
    let long_out = "word ".repeat(200);
    let long_prompt = "word ".repeat(200);
    let rows = [
        serde_json::json!({"instruction": "short", "output": "ok"}),
        serde_json::json!({"instruction": "short", "output": long_out}),
        serde_json::json!({"instruction": long_prompt, "output": "ok"}),
    ];
    std::fs::write(
        &f,
        rows.iter().map(|r| format!("{r}\n")).collect::<String>(),
    )
    .unwrap();
    let ds = data::load(&cfg(Format::Alpaca, &f, dir.path()), &tok, 64).unwrap();
    assert_eq!(ds.stats.truncated, 2);
    assert_eq!(
        ds.stats.dropped_no_labels, 1,
        "the prompt alone overflows: nothing to learn"
    );
    assert_eq!(ds.stats.documents, 2);
    let b = ds
        .train
        .batch(&(0..ds.train.len()).collect::<Vec<_>>())
        .unwrap();
    assert!(b.cu_seqlens.windows(2).all(|w| w[1] - w[0] <= 64));
}

#[test]
fn sampler_is_deterministic_and_dp_slices_share_one_global_batch() {
    let tok = gpt2();
    let dir = tempfile::tempdir().unwrap();
    let alpaca = data_dir().join("sft/alpaca_en_demo_20.json");
    let ds = data::load(&cfg(Format::Alpaca, &alpaca, dir.path()), &tok, 512).unwrap();
    let n = ds.train.len();
    let global = 4;
    let mut reference = Sampler::new(n, 42).unwrap();
    let mut per_dp: Vec<Vec<Sampler>> = [1, 2, 4]
        .iter()
        .map(|&dp| (0..dp).map(|_| Sampler::new(n, 42).unwrap()).collect())
        .collect();
    for _step in 0..3 * n {
        let g = reference.next_global_batch(global);
        let whole = ds.train.batch(&g).unwrap();
        for ranks in per_dp.iter_mut() {
            let dp = ranks.len();
            let mut ids = Vec::new();
            let mut toks = Vec::new();
            for (r, s) in ranks.iter_mut().enumerate() {
                let mine = s.next_global_batch(global);
                let slice = rank_slice(&mine, r, dp).unwrap();
                for mb in microbatches(slice, 1).unwrap() {
                    ids.extend_from_slice(mb);
                    toks.extend(ds.train.batch(mb).unwrap().input_ids);
                }
            }
            assert_eq!(ids, g, "dp={dp}");
            assert_eq!(toks, whole.input_ids, "dp={dp}");
        }
    }
    assert!(reference.epoch() >= 1);
    assert!(rank_slice(&[1, 2, 3], 0, 2).is_err());
    assert_ne!(
        Sampler::new(n, 43).unwrap().next_global_batch(n),
        Sampler::new(n, 42).unwrap().next_global_batch(n)
    );
}

#[test]
fn sampler_state_resumes_exactly() {
    let mut a = Sampler::new(37, 7).unwrap();
    for _ in 0..11 {
        a.next_global_batch(8); // crosses two epochs
    }
    let saved = serde_json::to_string(&a.state()).unwrap();
    let tail_a: Vec<Vec<usize>> = (0..10).map(|_| a.next_global_batch(8)).collect();
    let state: SamplerState = serde_json::from_str(&saved).unwrap();
    let mut b = Sampler::from_state(state.clone(), 37).unwrap();
    let tail_b: Vec<Vec<usize>> = (0..10).map(|_| b.next_global_batch(8)).collect();
    assert_eq!(tail_a, tail_b);
    assert_eq!(a.state(), b.state());
    let e = Sampler::from_state(state, 36).unwrap_err();
    assert_eq!(e.exit_code(), 2);
}

#[test]
fn held_out_split_is_fixed_and_disjoint() {
    let tok = gpt2();
    let dir = tempfile::tempdir().unwrap();
    let alpaca = data_dir().join("sft/alpaca_en_demo_20.json");
    let c = DataConfig {
        val_fraction: 0.2,
        packing: false,
        ..cfg(Format::Alpaca, &alpaca, dir.path())
    };
    let ds = data::load(&c, &tok, 2048).unwrap();
    assert_eq!((ds.train.len(), ds.val.len()), (16, 4));
    let again = data::load(&c, &tok, 2048).unwrap();
    let v: Vec<usize> = (0..4).collect();
    assert_eq!(ds.val.batch(&v).unwrap(), again.val.batch(&v).unwrap());
    let val_ids = ds.val.batch(&v).unwrap().input_ids;
    let train_ids = ds
        .train
        .batch(&(0..16).collect::<Vec<_>>())
        .unwrap()
        .input_ids;
    for r in 0..4 {
        let row = &val_ids[r * 2048..r * 2048 + 64];
        assert!(
            !train_ids.chunks(2048).any(|t| &t[..64] == row),
            "val row {r} not in train"
        );
    }
    assert_eq!(
        eval_order(ds.val.len(), 3, 10),
        vec![vec![0, 1, 2], vec![3]]
    );

    // Text: the tail of the stream, and the last train row does not predict into it.
    let f = dir.path().join("t.txt");
    std::fs::write(&f, "A B C D E F G H I J").unwrap();
    let c = DataConfig {
        val_fraction: 0.25,
        seq_len: Some(4),
        ..cfg(Format::Text, &f, dir.path())
    };
    let ds = data::load(&c, &tok, 4).unwrap();
    assert_eq!((ds.train.len(), ds.val.len()), (2, 1));
    assert_eq!(ds.train.batch(&[1]).unwrap().targets[3], M);
    assert!(data::load(
        &DataConfig {
            val_fraction: 0.9,
            ..c
        },
        &tok,
        4
    )
    .is_err());
}

/// GPT-2's BPE with a Llama-style post-processor that starts every sequence with `<s>`.
fn llama_style(dir: &Path) -> Tokenizer {
    gpt2().save(dir, None).unwrap();
    let p = dir.join("tokenizer.json");
    let mut j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    j["added_tokens"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "id": 50257, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false,
            "normalized": false, "special": true
        }));
    let bos = serde_json::json!({"SpecialToken": {"id": "<s>", "type_id": 0}});
    j["post_processor"] = serde_json::json!({
        "type": "TemplateProcessing",
        "single": [bos, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [bos, {"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<s>": {"id": "<s>", "ids": [50257], "tokens": ["<s>"]}}
    });
    std::fs::write(&p, j.to_string()).unwrap();
    let cfg = serde_json::json!({"bos_token": "<s>", "eos_token": "<|endoftext|>"});
    std::fs::write(dir.join("tokenizer_config.json"), cfg.to_string()).unwrap();
    Tokenizer::from_dir(dir).unwrap()
}

#[test]
fn llama_style_bos_starts_every_document_and_prompt() {
    let dir = tempfile::tempdir().unwrap();
    let tdir = dir.path().join("tok");
    let tok = llama_style(&tdir);
    assert_eq!((tok.vocab_size(), tok.leading_bos()), (50258, Some(50257)));
    assert_eq!(gpt2().leading_bos(), None);
    let (bos, eos) = (50257, 50256);
    let f = dir.path().join("t.txt");
    std::fs::write(&f, "A B<|endoftext|>C").unwrap();
    let ds = data::load(&cfg(Format::Text, &f, dir.path()), &tok, 8).unwrap();
    let [a, b, c] = ["A", " B", "C"].map(|s| one(&tok, s));
    let bt = ds.train.batch(&[0]).unwrap();
    assert_eq!(bt.input_ids, vec![bos, a, b, eos, bos, c, eos, eos]);
    assert_eq!(bt.targets, vec![a, b, eos, M, c, eos, M, M]);
    assert_eq!(bt.cu_seqlens, vec![0, 4, 7, 8]);

    let g = dir.path().join("a.jsonl");
    std::fs::write(&g, "{\"instruction\": \"x\", \"output\": \"y\"}\n").unwrap();
    let bt = data::load(&cfg(Format::Alpaca, &g, dir.path()), &tok, 64)
        .unwrap()
        .train
        .batch(&[0])
        .unwrap();
    assert_eq!((bt.input_ids[0], bt.targets[0]), (bos, M));
    assert_eq!(labelled_text(&tok, &bt), "y<|endoftext|>");
}
