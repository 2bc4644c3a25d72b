//! CPU ops for tensor parallelism: the vocab-parallel cross-entropy (every split of the
//! vocabulary, padding included, gives the fused cross-entropy's losses and gradient columns;
//! f64 finite differences of the composed loss), and the embedding's "no row" ids.

mod common;

use common::*;
use ferrotron_kernels::cpu::CpuBackend;
use ferrotron_kernels::{Backend, Dst, Src, VocabSlice};

type B64 = CpuBackend<f64>;

/// Losses and the full dlogits [N, V] computed by `parts` vocab-parallel ranks (each with
/// ⌈V/parts⌉ columns, padding filled with a large value that must not count).
fn split_ce(
    logits: &[f64],
    targets: &[i32],
    v: usize,
    parts: usize,
    scale: f64,
) -> (Vec<f64>, Vec<f64>) {
    let b = B64::new();
    let n = targets.len();
    let local = v.div_ceil(parts);
    let slices: Vec<VocabSlice> = (0..parts)
        .map(|r| {
            let start = (r * local).min(v);
            VocabSlice {
                n,
                v: local,
                valid: ((r + 1) * local).min(v) - start,
                start,
            }
        })
        .collect();
    let local_logits: Vec<Vec<f64>> = slices
        .iter()
        .map(|d| {
            let mut out = vec![1e3; n * local];
            for row in 0..n {
                for c in 0..d.valid {
                    out[row * local + c] = logits[row * v + d.start + c];
                }
            }
            out
        })
        .collect();
    let tg = targets.to_vec();
    let mut all = Vec::new();
    for (x, d) in local_logits.iter().zip(&slices) {
        let mut stats = vec![f64::NAN; 3 * n];
        b.cross_entropy_stats(Src::all(x), Src::all(&tg), Dst::all(&mut stats), *d)
            .unwrap();
        all.extend(stats);
    }
    let mut losses = Vec::new();
    let mut dfull = vec![f64::NAN; n * v];
    for (x, d) in local_logits.iter().zip(&slices) {
        let mut l = vec![f64::NAN; n];
        let mut dl = vec![f64::NAN; n * local];
        b.cross_entropy_finish(
            Src::all(x),
            Src::all(&tg),
            Src::all(&all),
            parts,
            Dst::all(&mut l),
            Some(Dst::all(&mut dl)),
            *d,
            scale,
        )
        .unwrap();
        if losses.is_empty() {
            losses = l;
        } else {
            assert_eq!(losses, l, "every rank computes the same losses");
        }
        for row in 0..n {
            for c in 0..local {
                if c < d.valid {
                    dfull[row * v + d.start + c] = dl[row * local + c];
                } else {
                    assert_eq!(dl[row * local + c], 0.0, "padding column has gradient");
                }
            }
        }
    }
    (losses, dfull)
}

#[test]
fn every_vocabulary_split_gives_the_fused_cross_entropy() {
    let (n, v) = (7, 13);
    let targets = vec![3, -100, 0, 12, 6, -100, 9];
    let logits: Vec<f64> = uniform(&mut rng(5), n * v)
        .into_iter()
        .map(|a| 4.0 * a)
        .collect();
    let mut want_l = vec![0.0; n];
    let mut want_d = vec![0.0; n * v];
    B64::new()
        .cross_entropy(
            Src::all(&logits),
            Src::all(&targets),
            Dst::all(&mut want_l),
            Some(Dst::all(&mut want_d)),
            n,
            v,
            0.2,
        )
        .unwrap();
    // 5 parts of 3 columns: the last holds one id and two padding columns; 16 parts: some hold
    // only padding.
    for parts in [1, 2, 4, 5, 16] {
        let (l, d) = split_ce(&logits, &targets, v, parts, 0.2);
        let (el, ed) = (max_rel_diff(&l, &want_l), max_rel_diff(&d, &want_d));
        assert!(
            el < 1e-12 && ed < 1e-12,
            "{parts} parts: losses {el:e}, dlogits {ed:e}"
        );
    }
}

#[test]
fn vocab_parallel_gradient_matches_finite_differences() {
    let (n, v) = (4, 9);
    let targets = vec![8, 2, -100, 5];
    let logits: Vec<f64> = uniform(&mut rng(9), n * v)
        .into_iter()
        .map(|a| 2.0 * a)
        .collect();
    let (_, analytic) = split_ce(&logits, &targets, v, 4, 1.0);
    let err = fd_check("vocab-parallel CE", &logits, &analytic, |x| {
        split_ce(x, &targets, v, 4, 1.0).0.iter().sum()
    });
    assert!(err < 1e-7, "{err:e}");
}

#[test]
fn negative_ids_select_no_row() {
    let b = B64::new();
    let table: Vec<f64> = (0..12).map(|i| i as f64).collect(); // [4, 3]
    let ids = vec![2, -1, 0];
    let mut out = vec![f64::NAN; 9];
    b.embedding_forward(Src::all(&ids), Src::all(&table), Dst::all(&mut out), 3, 3)
        .unwrap();
    assert_eq!(out, vec![6.0, 7.0, 8.0, 0.0, 0.0, 0.0, 0.0, 1.0, 2.0]);
    let mut dt = vec![0.0; 12];
    b.embedding_backward(
        Src::all(&ids),
        Src::all(&vec![1.0; 9]),
        Dst::all(&mut dt),
        3,
        3,
    )
    .unwrap();
    assert_eq!(dt, vec![1., 1., 1., 0., 0., 0., 1., 1., 1., 0., 0., 0.]);
}
