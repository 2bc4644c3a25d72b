//! `cross_entropy_in_place` (dlogits written over the logits, what the head uses) gives the
//! bits of `cross_entropy` into a separate buffer: losses and dlogits, with and without a
//! gradient, ignored rows included, in f32 (on the pooled backend) and f64.

mod common;

use common::*;
use ferrotron_kernels::cpu::{CpuBackend, CpuFloat, Pooled};
use ferrotron_kernels::{Backend, Dst, Src};

fn check<T: CpuFloat, B: Backend>(b: &B, vocab: usize, scale: f64)
where
    B::Act: std::ops::Deref<Target = [T]>,
{
    let n = 7;
    let targets = [3i32, -100, 0, (vocab - 1) as i32, -100, 5, 1];
    let mut g = rng(vocab as u64);
    let host: Vec<f32> = uniform_f32(&mut g, n * vocab)
        .into_iter()
        .map(|x| 8.0 * x)
        .collect();
    let logits = b.upload_act(&host).unwrap();
    let tg = b.upload_idx(&targets).unwrap();
    for grad in [None, Some(scale)] {
        let mut losses = b.zeros_acc(n).unwrap();
        let mut dlogits = b.zeros_act(n * vocab).unwrap();
        b.cross_entropy(
            Src::all(&logits),
            Src::all(&tg),
            Dst::all(&mut losses),
            grad.map(|_| Dst::all(&mut dlogits)),
            n,
            vocab,
            grad.unwrap_or(0.0),
        )
        .unwrap();
        let mut inplace = b.upload_act(&host).unwrap();
        let mut losses2 = b.zeros_acc(n).unwrap();
        b.cross_entropy_in_place(
            Dst::all(&mut inplace),
            Src::all(&tg),
            Dst::all(&mut losses2),
            n,
            vocab,
            grad,
        )
        .unwrap();
        let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        let (l1, l2) = (
            b.download_acc(Src::all(&losses)).unwrap(),
            b.download_acc(Src::all(&losses2)).unwrap(),
        );
        assert_eq!(bits(&l1), bits(&l2), "{} losses, grad {grad:?}", T::NAME);
        assert!(l1[1] == 0.0 && l1[0] > 0.0);
        if grad.is_some() {
            let (d1, d2) = (
                b.download_act(Src::all(&dlogits)).unwrap(),
                b.download_act(Src::all(&inplace)).unwrap(),
            );
            assert_eq!(bits(&d1), bits(&d2), "{} dlogits", T::NAME);
        }
    }
}

#[test]
fn in_place_matches_separate_buffers() {
    for vocab in [11, 50257] {
        check::<f32, _>(&CpuBackend::<f32, Pooled>::pooled(), vocab, 0.25);
        check::<f64, _>(&CpuBackend::<f64>::new(), vocab, 0.25);
    }
}
