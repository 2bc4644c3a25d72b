//! Linear layer. x [N, I], W [O, I] (OutIn) or [I, O] (InOut), b [O], y [N, O].
//! forward: y = x Wᵀ + b.  backward: dx += dy W; dW += dyᵀ x (in W's layout); db += Σ_n dy.
//!
//! Both layouts go through the same GEMMs; only the strides of the W view change
//! (`w_as_out_in` below), so no weight is ever transposed in memory.
//! `prepare_weight` / `forward_prepared`: the forward for several row blocks of x with Wᵀ
//! packed once (gemm.rs, prepared B); the same numbers as `forward`. `prepare_weight_dx` /
//! `backward_prepared` likewise for dx = dy·W, with W packed once as that product's B.

use super::gemm::{self, gemm, View, ViewMut};
use super::team;
use super::CpuFloat;
use crate::backend::{LinearDims, WeightLayout};

/// Columns of db per parallel task.
const BIAS_COLS_PER_TASK: usize = 64;

/// W as a logical [O, I] matrix, whatever its storage layout.
fn w_as_out_in<T>(w: &[T], dims: LinearDims) -> View<'_, T> {
    let (o, i) = (dims.out, dims.inp);
    assert!(
        w.len() >= o * i,
        "linear: weight holds {} < {o} x {i}",
        w.len()
    );
    match dims.layout {
        WeightLayout::OutIn => View::row_major(w, o, i),
        WeightLayout::InOut => View::row_major(w, i, o).t(),
    }
}

/// y[..n·O] sized and, with a bias, filled with it; returns the GEMM's beta (1 with a bias).
fn bias_rows<'a, T: CpuFloat>(
    x: &[T],
    b: Option<&[T]>,
    y: &'a mut [T],
    dims: LinearDims,
) -> (&'a mut [T], T) {
    let LinearDims { n, inp, out, .. } = dims;
    assert!(
        x.len() >= n * inp && y.len() >= n * out,
        "linear_forward: x or y too small for {dims:?}"
    );
    let y = &mut y[..n * out];
    let beta = match b {
        Some(b) => {
            assert!(
                b.len() >= out,
                "linear_forward: bias holds {} < {out}",
                b.len()
            );
            let rows = (1 << 14) / out.max(1);
            team::for_chunks_mut(y, out.max(1), rows.max(1), &|_, row| {
                row.copy_from_slice(&b[..out])
            });
            T::one()
        }
        None => T::zero(),
    };
    (y, beta)
}

pub fn forward<T: CpuFloat>(x: &[T], w: &[T], b: Option<&[T]>, y: &mut [T], dims: LinearDims) {
    let LinearDims { n, inp, out, .. } = dims;
    let (y, beta) = bias_rows(x, b, y, dims);
    let wt = w_as_out_in(w, dims).t(); // [I, O]
    gemm(
        T::one(),
        View::row_major(x, n, inp),
        wt,
        beta,
        ViewMut::row_major(y, n, out),
    );
}

/// Floats of `prepare_weight`'s output for these dims (any n), 0 where T's GEMM has no
/// prepared form (then `forward` serves).
pub fn prepared_len<T: CpuFloat>(dims: LinearDims) -> usize {
    gemm::prepared_len::<T>(dims.inp, dims.out).unwrap_or(0)
}

/// Wᵀ [I, O] packed for `forward_prepared` into `out` (`prepared_len` long).
pub fn prepare_weight<T: CpuFloat>(w: &[T], dims: LinearDims, out: &mut [T]) {
    gemm::prepare(w_as_out_in(w, dims).t(), out);
}

/// `forward` with W read from `prepared` (`prepare_weight` of the same W and dims).
pub fn forward_prepared<T: CpuFloat>(
    x: &[T],
    prepared: &[T],
    b: Option<&[T]>,
    y: &mut [T],
    dims: LinearDims,
) {
    let LinearDims { n, inp, out, .. } = dims;
    let (y, beta) = bias_rows(x, b, y, dims);
    gemm::gemm_prepared(
        View::row_major(x, n, inp),
        prepared,
        out,
        beta,
        ViewMut::row_major(y, n, out),
    );
}

/// Floats of `prepare_weight_dx`'s output for these dims, 0 where T's GEMM has no prepared form.
pub fn prepared_dx_len<T: CpuFloat>(dims: LinearDims) -> usize {
    gemm::prepared_len::<T>(dims.out, dims.inp).unwrap_or(0)
}

/// W as the [O, I] B of dx = dy·W, packed for `backward_prepared` into `out`.
pub fn prepare_weight_dx<T: CpuFloat>(w: &[T], dims: LinearDims, out: &mut [T]) {
    gemm::prepare(w_as_out_in(w, dims), out);
}

pub fn backward<T: CpuFloat>(
    x: &[T],
    w: &[T],
    dy: &[T],
    dx: Option<&mut [T]>,
    dw: &mut [T],
    db: Option<&mut [T]>,
    dims: LinearDims,
) {
    backward_prepared(x, w, None, dy, dx, dw, db, dims)
}

/// `backward`, with dx's product reading W from `prepared_dx` (`prepare_weight_dx` of the same
/// W and dims) when given.
#[allow(clippy::too_many_arguments)]
pub fn backward_prepared<T: CpuFloat>(
    x: &[T],
    w: &[T],
    prepared_dx: Option<&[T]>,
    dy: &[T],
    dx: Option<&mut [T]>,
    dw: &mut [T],
    db: Option<&mut [T]>,
    dims: LinearDims,
) {
    let LinearDims {
        n,
        inp,
        out,
        layout,
    } = dims;
    assert!(
        x.len() >= n * inp && dy.len() >= n * out,
        "linear_backward: x or dy too small for {dims:?}"
    );
    assert!(
        dw.len() >= out * inp,
        "linear_backward: dw holds {} < {out} x {inp}",
        dw.len()
    );
    let x = View::row_major(x, n, inp);
    let dyv = View::row_major(dy, n, out);
    if let Some(dx) = dx {
        assert!(
            dx.len() >= n * inp,
            "linear_backward: dx holds {} < {n} x {inp}",
            dx.len()
        );
        let dx = ViewMut::row_major(dx, n, inp);
        match prepared_dx {
            Some(prepared) => gemm::gemm_prepared(dyv, prepared, inp, T::one(), dx),
            None => gemm(T::one(), dyv, w_as_out_in(w, dims), T::one(), dx),
        }
    }
    // dW[O, I] += dyᵀ[O, N] · x[N, I], written through a view in W's storage layout.
    let dw_out_in = match layout {
        WeightLayout::OutIn => ViewMut::row_major(dw, out, inp),
        WeightLayout::InOut => ViewMut::row_major(dw, inp, out).t(),
    };
    gemm(T::one(), dyv.t(), x, T::one(), dw_out_in);
    if let Some(db) = db {
        assert!(
            db.len() >= out,
            "linear_backward: db holds {} < {out}",
            db.len()
        );
        bias_grad(&dy[..n * out], &mut db[..out], n, out);
    }
}

/// db[o] += Σ_n dy[n, o], summed in f64 per column block.
fn bias_grad<T: CpuFloat>(dy: &[T], db: &mut [T], n: usize, out: usize) {
    team::for_chunks_mut(db, BIAS_COLS_PER_TASK, 1, &|blk, dbc| {
        let c0 = blk * BIAS_COLS_PER_TASK;
        let mut acc = super::workspace::zeroed::<f64>(dbc.len());
        for r in 0..n {
            let row = &dy[r * out + c0..r * out + c0 + dbc.len()];
            acc.iter_mut()
                .zip(row)
                .for_each(|(a, &g)| *a += g.to_f64c());
        }
        dbc.iter_mut()
            .zip(acc.iter())
            .for_each(|(d, &a)| *d = *d + T::from_f64c(a));
    });
}
