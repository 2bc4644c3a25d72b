//! The head's padded-row path (`Transformer::head_aligned`, which the CUDA backend takes for a
//! vocabulary that is not a multiple of 64, so that the logits rows stay 16-byte aligned for
//! cuBLASLt): W_head copied into zero-padded rows, logits [rows, V_pad], the cross-entropy over
//! the V valid columns through the row statistics, dW_head computed padded and added back. On the
//! f64 CPU backend it must give what the unpadded head gives: the loss, the logits, dx and every
//! weight gradient, for a tied GPT-2, an untied Llama and Gemma 2 with its final-logit softcap,
//! at paddings of 64 (the CUDA one) and 7 (rows of an odd width), with several logits chunks.

use ferrotron::model::{DeviceBatch, HostBatch, ModelConfig, ResidentStore, Transformer};
use ferrotron_kernels::cpu::CpuBackend;
use ferrotron_parallel::NoTp;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

type B = CpuBackend<f64>;

fn host_batch(vocab: usize, n: usize) -> HostBatch {
    let input_ids: Vec<i32> = (0..n).map(|i| ((i * 37 + 11) % vocab) as i32).collect();
    let mut targets: Vec<i32> = (0..n).map(|i| ((i * 53 + 5) % vocab) as i32).collect();
    targets[2] = -100;
    HostBatch {
        input_ids,
        targets,
        positions: (0..n as i32).collect(),
        cu_seqlens: vec![0, n as i32],
    }
}

/// (loss, logits, dx of the final state, every unit's gradient) of the head at `align`.
type HeadRun = (f64, Vec<f32>, Vec<f64>, Vec<Vec<f64>>);

fn run_head(model: &Transformer, w: &[Vec<f64>], host: &HostBatch, align: usize) -> HeadRun {
    let b = B::new();
    let batch = DeviceBatch::upload(&b, host).unwrap();
    let mut store = ResidentStore::<B> {
        weights: w.to_vec(),
        grads: w.iter().map(|u| vec![0.0; u.len()]).collect(),
    };
    let fwd = model.forward(&b, &mut store, &batch).unwrap();
    let mut logits = Vec::new();
    let (loss, dx) = model
        .head_aligned(
            &b,
            &mut store,
            &batch,
            &fwd,
            Some(0.37),
            Some(&mut logits),
            &NoTp,
            align,
        )
        .unwrap();
    (loss, logits, dx.unwrap(), store.grads)
}

fn rel(a: &[f64], b: &[f64]) -> f64 {
    let d: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
    let n: f64 = b.iter().map(|y| y * y).sum();
    (d / n.max(1e-300)).sqrt()
}

fn check(name: &str, config: serde_json::Value) {
    let cfg = ModelConfig::from_json_str(&config.to_string(), name).unwrap();
    let model = Transformer::new(cfg);
    let vocab = model.cfg.vocab_size;
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let w: Vec<Vec<f64>> = model
        .layout
        .units
        .iter()
        .map(|u| (0..u.numel).map(|_| rng.random_range(-0.5..0.5)).collect())
        .collect();
    // more tokens than one CPU logits chunk holds (2^24 / V rows) is too many for a test; the
    // chunking itself is the same code at every width, so one chunk of 40 rows serves
    let host = host_batch(vocab, 40);
    let (loss, logits, dx, grads) = run_head(&model, &w, &host, 1);
    assert_eq!(logits.len(), 40 * vocab);
    for align in [64, 7] {
        assert_ne!(
            vocab % align,
            0,
            "{name}: V must not be a multiple of {align}"
        );
        let (l, lg, d, g) = run_head(&model, &w, &host, align);
        let lg_err = rel(
            &lg.iter().map(|&x| x as f64).collect::<Vec<_>>(),
            &logits.iter().map(|&x| x as f64).collect::<Vec<_>>(),
        );
        let g_err = g
            .iter()
            .zip(&grads)
            .map(|(a, b)| rel(a, b))
            .fold(0.0, f64::max);
        let (l_err, d_err) = ((l - loss).abs() / loss.abs(), rel(&d, &dx));
        println!(
            "{name} align {align}: loss {l_err:.1e}, logits {lg_err:.1e}, dx {d_err:.1e}, grads {g_err:.1e}"
        );
        assert!(l_err <= 1e-13 && lg_err <= 1e-7 && d_err <= 1e-12 && g_err <= 1e-12);
    }
}

#[test]
fn padded_rows_give_the_unpadded_head_tied_gpt2() {
    check(
        "gpt2",
        serde_json::json!({"model_type": "gpt2", "vocab_size": 101, "n_embd": 16, "n_layer": 1,
            "n_head": 2, "n_positions": 64}),
    );
}

#[test]
fn padded_rows_give_the_unpadded_head_untied_llama() {
    check(
        "llama",
        serde_json::json!({"model_type": "llama", "vocab_size": 99, "hidden_size": 16,
            "intermediate_size": 24, "num_hidden_layers": 1, "num_attention_heads": 2,
            "num_key_value_heads": 1, "tie_word_embeddings": false}),
    );
}

#[test]
fn padded_rows_give_the_unpadded_head_gemma2_softcap() {
    check(
        "gemma2",
        serde_json::json!({"model_type": "gemma2", "vocab_size": 75, "hidden_size": 16,
            "intermediate_size": 24, "num_hidden_layers": 2, "num_attention_heads": 2,
            "num_key_value_heads": 1, "head_dim": 8, "sliding_window": 5,
            "final_logit_softcapping": 2.0, "pad_token_id": null}),
    );
}
