//! Elementwise activations over n elements (gate, up, out, x, y all [n]).
//! SwiGLU: out = silu(g)·u, silu(g) = g·σ(g); dg += dout·u·σ(g)(1 + g(1 − σ(g))); du += dout·silu(g).
//! GeGLU: out = gelu(g)·u (either GELU below); dg += dout·u·gelu'(g); du += dout·gelu(g).
//! tanh-GELU: y = ½x(1 + tanh(c(x + 0.044715x³))), c = √(2/π);
//!   dx += dy·(½(1 + t) + ½x(1 − t²)·c(1 + 3·0.044715x²)), t = tanh(c(x + 0.044715x³)).
//! exact (erf) GELU: y = x·Φ(x);  dx += dy·(Φ(x) + x·φ(x)), Φ = ½·erfc(−x/√2), φ = Φ'.
//! Chunks run at the machine's vector width (simd.rs), without libm calls for f32: σ and the tanh
//! GELU (via ½(1 + tanh u) = σ(2u)) in f32 arithmetic, 1 − σ taken without cancelling, and
//! erfc in f64 rounded once (math.rs; kernels/tests/exp_f32.rs measures them against f64).

use super::team::{self, Pieces};
use super::CpuFloat;
use crate::{Gelu, Glu};

/// Elements per parallel work item.
const CHUNK: usize = 1 << 13;

fn check_len(what: &str, lens: &[usize]) {
    assert!(
        lens.iter().all(|&l| l == lens[0]),
        "{what}: buffer lengths differ: {lens:?}"
    );
}

crate::simd_fn! {
    fn swiglu_forward_chunk<T: CpuFloat>(o: &mut [T], g: &[T], u: &[T]) {
        for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
            *o = g * g.sigmoid_parts_elem().0 * u;
        }
    }
}

crate::simd_fn! {
    fn geglu_forward_chunk<T: CpuFloat>(o: &mut [T], g: &[T], u: &[T]) {
        for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
            *o = g.gelu_tanh_elem() * u;
        }
    }
}

crate::simd_fn! {
    fn geglu_erf_forward_chunk<T: CpuFloat>(o: &mut [T], g: &[T], u: &[T]) {
        for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
            *o = g.gelu_erf_elem() * u;
        }
    }
}

pub fn glu_forward<T: CpuFloat>(kind: Glu, gate: &[T], up: &[T], out: &mut [T]) {
    check_len("glu_forward", &[gate.len(), up.len(), out.len()]);
    let op = Pieces::new(out);
    team::for_ranges(gate.len(), CHUNK, &|r| {
        // SAFETY: for_ranges's ranges are disjoint
        let o = unsafe { op.get(r.clone()) };
        let (g, u) = (&gate[r.clone()], &up[r]);
        match kind {
            Glu::Silu => swiglu_forward_chunk(o, g, u),
            Glu::Gelu(Gelu::Tanh) => geglu_forward_chunk(o, g, u),
            Glu::Gelu(Gelu::Erf) => geglu_erf_forward_chunk(o, g, u),
        }
    });
}

crate::simd_fn! {
    fn swiglu_backward_chunk<T: CpuFloat>(dg: &mut [T], du: &mut [T], g: &[T], u: &[T], d: &[T]) {
        let n = dg.len().min(du.len()).min(g.len()).min(u.len()).min(d.len());
        for i in 0..n {
            let (s, one_minus_s) = g[i].sigmoid_parts_elem();
            dg[i] = dg[i] + d[i] * u[i] * s * (T::one() + g[i] * one_minus_s);
            du[i] = du[i] + d[i] * g[i] * s;
        }
    }
}

crate::simd_fn! {
    fn geglu_backward_chunk<T: CpuFloat>(dg: &mut [T], du: &mut [T], g: &[T], u: &[T], d: &[T]) {
        let n = dg.len().min(du.len()).min(g.len()).min(u.len()).min(d.len());
        for i in 0..n {
            let (a, da) = g[i].gelu_tanh_and_grad_elem();
            dg[i] = dg[i] + d[i] * u[i] * da;
            du[i] = du[i] + d[i] * a;
        }
    }
}

crate::simd_fn! {
    fn geglu_erf_backward_chunk<T: CpuFloat>(dg: &mut [T], du: &mut [T], g: &[T], u: &[T], d: &[T]) {
        let n = dg.len().min(du.len()).min(g.len()).min(u.len()).min(d.len());
        for i in 0..n {
            dg[i] = dg[i] + d[i] * u[i] * g[i].gelu_erf_grad_elem();
            du[i] = du[i] + d[i] * g[i].gelu_erf_elem();
        }
    }
}

pub fn glu_backward<T: CpuFloat>(
    kind: Glu,
    gate: &[T],
    up: &[T],
    dout: &[T],
    dgate: &mut [T],
    dup: &mut [T],
) {
    check_len(
        "glu_backward",
        &[gate.len(), up.len(), dout.len(), dgate.len(), dup.len()],
    );
    let (dgp, dup) = (Pieces::new(dgate), Pieces::new(dup));
    team::for_ranges(gate.len(), CHUNK, &|r| {
        // SAFETY: for_ranges's ranges are disjoint
        let (dg, du) = unsafe { (dgp.get(r.clone()), dup.get(r.clone())) };
        let (g, u, d) = (&gate[r.clone()], &up[r.clone()], &dout[r]);
        match kind {
            Glu::Silu => swiglu_backward_chunk(dg, du, g, u, d),
            Glu::Gelu(Gelu::Tanh) => geglu_backward_chunk(dg, du, g, u, d),
            Glu::Gelu(Gelu::Erf) => geglu_erf_backward_chunk(dg, du, g, u, d),
        }
    });
}

crate::simd_fn! {
    fn gelu_forward_chunk<T: CpuFloat>(y: &mut [T], x: &[T]) {
        for (y, &x) in y.iter_mut().zip(x) {
            *y = x.gelu_tanh_elem();
        }
    }
}

crate::simd_fn! {
    fn gelu_erf_forward_chunk<T: CpuFloat>(y: &mut [T], x: &[T]) {
        for (y, &x) in y.iter_mut().zip(x) {
            *y = x.gelu_erf_elem();
        }
    }
}

pub fn gelu_forward<T: CpuFloat>(kind: Gelu, x: &[T], y: &mut [T]) {
    check_len("gelu_forward", &[x.len(), y.len()]);
    let yp = Pieces::new(y);
    team::for_ranges(x.len(), CHUNK, &|r| {
        // SAFETY: for_ranges's ranges are disjoint
        let y = unsafe { yp.get(r.clone()) };
        match kind {
            Gelu::Tanh => gelu_forward_chunk(y, &x[r]),
            Gelu::Erf => gelu_erf_forward_chunk(y, &x[r]),
        }
    });
}

crate::simd_fn! {
    fn gelu_backward_chunk<T: CpuFloat>(dx: &mut [T], x: &[T], dy: &[T]) {
        for ((dx, &x), &dy) in dx.iter_mut().zip(x).zip(dy) {
            *dx = *dx + dy * x.gelu_tanh_and_grad_elem().1;
        }
    }
}

crate::simd_fn! {
    fn gelu_erf_backward_chunk<T: CpuFloat>(dx: &mut [T], x: &[T], dy: &[T]) {
        for ((dx, &x), &dy) in dx.iter_mut().zip(x).zip(dy) {
            *dx = *dx + dy * x.gelu_erf_grad_elem();
        }
    }
}

pub fn gelu_backward<T: CpuFloat>(kind: Gelu, x: &[T], dy: &[T], dx: &mut [T]) {
    check_len("gelu_backward", &[x.len(), dy.len(), dx.len()]);
    let dxp = Pieces::new(dx);
    team::for_ranges(x.len(), CHUNK, &|r| {
        // SAFETY: for_ranges's ranges are disjoint
        let dx = unsafe { dxp.get(r.clone()) };
        match kind {
            Gelu::Tanh => gelu_backward_chunk(dx, &x[r.clone()], &dy[r]),
            Gelu::Erf => gelu_erf_backward_chunk(dx, &x[r.clone()], &dy[r]),
        }
    });
}
