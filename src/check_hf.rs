//! `ferrotron check-hf DIR`: proves the model computes what HF transformers computes.
//!
//! Loads the HF checkpoint in DIR, runs the batch in DIR/reference.safetensors (layout: input_ids
//! and labels [B, S] i64; logits [B, S, V], loss [1], grad.<param>, adamw1.<param> in f64), and
//! prints the relative error ‖ours − ref‖ / ‖ref‖ of the logits, the loss, every gradient, and
//! every parameter after one AdamW step (lr 1e-3, betas 0.9/0.95, eps 1e-8, weight decay 0.1 on
//! every parameter). Exit status 1 when any error exceeds the tolerance. A gradient whose exact
//! value is 0 (a key bias that only shifts each row's scores: GPT-2's, a NoPE layer's; q and k
//! under a window of 1) holds only round-off, the reference's as well (transformers' float64
//! model still runs its softmax in float32), which a relative error cannot compare: a gradient
//! row whose reference norm is below 1e-8·G, G the largest reference gradient norm of the
//! model, reports ‖ours − ref‖ / G instead: the error at the model's gradient scale (in f32 an
//! exact zero computed as a difference comes out near 1e-8·G).
//!
//! Each stage is checked on the reference's own inputs to it: the forward and backward on the
//! checkpoint and batch, the optimizer on the checkpoint and the fixture's gradients — which is
//! how the fixture defines `adamw1.*` ("one AdamW step on those gradients"). Our own gradients are
//! already bounded by the `grad.*` rows; stepping on them instead would re-measure them through
//! Adam's first step, lr·g/(|g| + eps) ≈ lr·sign(g), which turns an error in a near-zero gradient
//! element into a full-size step of the wrong sign (in bf16 a zero-initialised bias element of
//! 0.1% of its tensor's norm flips; PyTorch's own autocast-bf16 fails three such rows).
//!
//! Under tensor parallelism (`--tp N`, every rank of an N-rank world in one tp group) each rank
//! loads its slices, the model runs its forward/head/backward regions over the group, and every
//! compared tensor is reassembled before the comparison: each rank places the elements of its
//! slice (replicas from tp rank 0 only, after summing the partial gradients of replicated tensors
//! over the group, as the trainer does) into a zero logical tensor and the world sums them. The
//! logits are gathered by the head itself. So the rows compare the same logical quantities as on
//! one rank.

use crate::error::Result;
use crate::model::hf_import::{load_units, SafetensorsFiles};
use crate::model::{HostBatch, ModelConfig, ResidentStore, TensorSpec, TpShape, Transformer};
use crate::user;
use ferrotron_kernels::{AdamWStep, Backend, Dst, Src};
use ferrotron_parallel::tensor_parallel::{NoTp, TpComm};
use ferrotron_parallel::{Comm, ReduceOp};
use std::path::Path;

pub mod tp_cli;

/// One compared quantity.
#[derive(Clone, Debug)]
pub struct Comparison {
    pub name: String,
    pub rel_err: f64,
}

#[derive(Clone, Debug)]
pub struct Report {
    pub rows: Vec<Comparison>,
    pub loss: f64,
    pub ref_loss: f64,
}

impl Report {
    pub fn max_err(&self) -> f64 {
        self.rows.iter().map(|r| r.rel_err).fold(0.0, f64::max)
    }
    /// The largest error among rows whose name starts with `prefix`.
    pub fn max_err_of(&self, prefix: &str) -> f64 {
        self.rows
            .iter()
            .filter(|r| r.name.starts_with(prefix))
            .map(|r| r.rel_err)
            .fold(0.0, f64::max)
    }
}

/// A reference gradient below this fraction of the model's largest norm G is an exact zero's
/// round-off, and its row is the error relative to G (see the top).
const ZERO_GRAD: f64 = 1e-8;

/// ‖a − b‖ / ‖b‖ in f64 (‖a‖ when the reference is zero).
pub fn rel_err(ours: &[f32], reference: &[f64]) -> f64 {
    assert_eq!(ours.len(), reference.len());
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (&a, &b) in ours.iter().zip(reference) {
        num += (a as f64 - b).powi(2);
        den += b * b;
    }
    if den == 0.0 {
        num.sqrt()
    } else {
        (num / den).sqrt()
    }
}

/// The row `name`: `ours` against the fixture's `reference`, which must have its length.
fn compare(fixture: &Path, name: String, ours: &[f32], reference: &[f64]) -> Result<Comparison> {
    if ours.len() != reference.len() {
        return Err(user!(
            "{}: `{name}` has {} elements, the model computes {}",
            fixture.display(),
            reference.len(),
            ours.len()
        ));
    }
    Ok(Comparison {
        rel_err: rel_err(ours, reference),
        name,
    })
}

/// Runs the comparison on backend `b`, one rank.
pub fn run<B: Backend>(b: &B, dir: &Path) -> Result<Report> {
    run_tp(b, dir, &NoTp, None, false)
}

/// The group a tensor-parallel check runs over: the tp group's regions and, as a host
/// communicator, the world (the same ranks).
fn sum_over(world: Option<&dyn Comm>, x: &mut [f32]) -> Result<()> {
    if let Some(w) = world {
        w.all_reduce(x.into(), ReduceOp::Sum)
            .map_err(|e| user!("check-hf: {e}"))?;
    }
    Ok(())
}

/// The logical tensor `t` from this rank's slice `local` (see the top of the file): with no
/// world, the slice is the whole tensor.
fn assemble(
    model: &Transformer,
    t: &TensorSpec,
    local: &[f32],
    world: Option<&dyn Comm>,
) -> Result<Vec<f32>> {
    if world.is_none() {
        return Ok(local.to_vec());
    }
    let mut global = vec![0.0f32; t.slice.global_numel()];
    if model.tp.rank == 0 || !model.tp.replicates(model.cfg.arch, t.role) {
        t.slice.for_each_run(0..local.len(), |r| {
            if let Some(g) = r.global {
                global[g..g + r.len].copy_from_slice(&local[r.local..r.local + r.len]);
            }
        });
    }
    sum_over(world, &mut global)?;
    Ok(global)
}

/// This rank's slice of the logical tensor `global` (padding elements zero).
fn slice_of(t: &TensorSpec, global: &[f64], local: &mut [f32]) {
    t.slice.for_each_run(0..local.len(), |r| {
        if let Some(g) = r.global {
            for (d, &x) in local[r.local..r.local + r.len].iter_mut().zip(&global[g..]) {
                *d = x as f32;
            }
        }
    });
}

/// Runs the comparison on backend `b` over the tensor-parallel group `tp`, whose ranks are
/// those of `world` (None: one rank), with sequence parallelism when `sequence_parallel`.
pub fn run_tp<B: Backend>(
    b: &B,
    dir: &Path,
    tp: &dyn TpComm<B>,
    world: Option<&dyn Comm>,
    sequence_parallel: bool,
) -> Result<Report> {
    let cfg = ModelConfig::from_file(&dir.join("config.json"))?;
    // before the model is built: a config too large for this host is refused, not aborted on
    crate::train::preflight::check_weights_fit(&cfg, &dir.join("config.json"))?;
    let shape = TpShape {
        size: tp.size(),
        rank: tp.rank(),
        sequence_parallel,
    };
    let model = Transformer::with_tp(cfg, shape)
        .map_err(|e| user!("{}: {e}", dir.join("config.json").display()))?;
    let host_units = load_units(dir, &model.cfg, &model.layout)?;
    let refs = SafetensorsFiles::open(&[dir.join("reference.safetensors")])?;
    let ref_path = dir.join("reference.safetensors");
    let (ids_shape, ids) = refs.tensor_i64("input_ids")?;
    let (_, labels) = refs.tensor_i64("labels")?;
    let [rows, seq] = ids_shape[..] else {
        return Err(user!(
            "{}: `input_ids` must be [batch, seq], found {:?}",
            ref_path.display(),
            ids_shape
        ));
    };
    model
        .cfg
        .check_sequence_length(seq)
        .map_err(|e| user!("{}: `input_ids` [{rows}, {seq}]: {e}", ref_path.display()))?;
    if labels.len() != ids.len() {
        return Err(user!(
            "{}: `labels` and `input_ids` differ in size",
            ref_path.display()
        ));
    }
    let vocab = model.cfg.vocab_size as i64;
    if let Some(bad) = ids.iter().find(|&&t| t < 0 || t >= vocab) {
        return Err(user!(
            "{}: token id {bad} in `input_ids` is outside the vocabulary of {vocab}",
            ref_path.display()
        ));
    }
    let ids32: Vec<i32> = ids.iter().map(|&x| x as i32).collect();
    let labels32: Vec<i32> = labels.iter().map(|&x| x as i32).collect();
    let host = HostBatch::from_rows(&ids32, &labels32, rows, seq);
    if sequence_parallel && (rows * seq) % shape.size != 0 {
        return Err(user!(
            "{}: sequence parallelism splits the batch's {} tokens over {} ranks, which does not divide them",
            ref_path.display(),
            rows * seq,
            shape.size
        ));
    }
    let batch = model.upload_batch(b, &host)?;
    let n_targets = host.target_count();
    if n_targets == 0 {
        return Err(user!(
            "{}: every label is -100, so there is no loss to compare",
            ref_path.display()
        ));
    }

    let mut store = ResidentStore::<B> {
        weights: host_units
            .iter()
            .map(|u| b.upload_act(u))
            .collect::<ferrotron_kernels::Result<_>>()?,
        grads: host_units
            .iter()
            .map(|u| b.zeros_acc(u.len()))
            .collect::<ferrotron_kernels::Result<_>>()?,
    };
    let fwd = model.forward_tp(b, &mut store, &batch, tp)?;
    let mut logits = Vec::with_capacity(rows * seq * model.cfg.vocab_size);
    let scale = 1.0 / n_targets as f64;
    let (loss_sum, dx) = model.head_tp(
        b,
        &mut store,
        &batch,
        &fwd,
        Some(scale),
        Some(&mut logits),
        tp,
    )?;
    model.backward_tp(
        b,
        &mut store,
        &batch,
        &fwd,
        dx.expect("head returns dx with a grad scale"),
        tp,
    )?;
    let loss = loss_sum / n_targets as f64;

    let mut rows_out = Vec::new();
    let (_, ref_logits) = refs.tensor_f64("logits")?;
    rows_out.push(compare(&ref_path, "logits".into(), &logits, &ref_logits)?);
    let (_, ref_loss) = refs.tensor_f64("loss")?;
    rows_out.push(compare(
        &ref_path,
        "loss".into(),
        &[loss as f32],
        &ref_loss,
    )?);

    let h = AdamWStep {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weight_decay: 0.1,
        step: 1,
    };
    let mut grads_host = Vec::new();
    for (ui, g) in store.grads.iter().enumerate() {
        grads_host.push((ui, b.download_acc(Src::all(g))?));
    }
    // The fixture's gradients, laid out as our units, for the AdamW step below.
    let mut ref_grads: Vec<Vec<f32>> = host_units.iter().map(|u| vec![0.0; u.len()]).collect();
    let mut scale = 0.0f64;
    for (_, t) in model.layout.tensors() {
        let (_, reference) = refs.tensor_f64(&format!("grad.{}", t.name))?;
        scale = scale.max(reference.iter().map(|x| x * x).sum::<f64>().sqrt());
    }
    for (ui, t) in model.layout.tensors() {
        let mut ours = grads_host[ui].1[t.offset..t.offset + t.numel()].to_vec();
        if model.tp.grad_summed_over_tp(model.cfg.arch, t.role) {
            sum_over(world, &mut ours)?;
        }
        let ours = assemble(&model, t, &ours, world)?;
        let name = format!("grad.{}", t.name);
        let (_, reference) = refs.tensor_f64(&name)?;
        let mut row = compare(&ref_path, name, &ours, &reference)?;
        let norm = reference.iter().map(|x| x * x).sum::<f64>().sqrt();
        if norm < ZERO_GRAD * scale {
            let diff: f64 = ours
                .iter()
                .zip(&reference)
                .map(|(&a, &b)| (a as f64 - b).powi(2))
                .sum();
            row.rel_err = diff.sqrt() / scale;
        }
        rows_out.push(row);
        slice_of(
            t,
            &reference,
            &mut ref_grads[ui][t.offset..t.offset + t.numel()],
        );
    }
    // One AdamW step from zero moments, on the fixture's gradients (see the top of the file).
    for (ui, host) in host_units.iter().enumerate() {
        let grad = b.upload_acc(&ref_grads[ui])?;
        let mut p = b.upload_acc(host)?;
        let mut m = b.zeros_acc(host.len())?;
        let mut v = b.zeros_acc(host.len())?;
        b.adamw_step(
            Dst::all(&mut p),
            Src::all(&grad),
            Dst::all(&mut m),
            Dst::all(&mut v),
            &h,
        )?;
        let after = b.download_acc(Src::all(&p))?;
        for t in &model.layout.units[ui].tensors {
            let name = format!("adamw1.{}", t.name);
            let (_, reference) = refs.tensor_f64(&name)?;
            let ours = assemble(&model, t, &after[t.offset..t.offset + t.numel()], world)?;
            rows_out.push(compare(&ref_path, name, &ours, &reference)?);
        }
    }
    Ok(Report {
        rows: rows_out,
        loss,
        ref_loss: ref_loss[0], // (one element: `compare` checked it)
    })
}

/// Prints the report; returns the process exit code (1 if any error exceeds `tol`).
pub fn print_report(report: &Report, backend: &str, tol: f64) -> i32 {
    crate::outln!(
        "check-hf on {backend}: loss {:.9} (reference {:.9}), tolerance {tol:.1e}",
        report.loss,
        report.ref_loss
    );
    let width = report.rows.iter().map(|r| r.name.len()).max().unwrap_or(0);
    let mut bad = 0;
    for r in &report.rows {
        let ok = r.rel_err <= tol;
        bad += usize::from(!ok);
        crate::outln!(
            "  {:width$}  rel_err {:.3e}  {}",
            r.name,
            r.rel_err,
            if ok { "ok" } else { "FAIL" }
        );
    }
    crate::outln!(
        "{} of {} quantities within {tol:.1e}; max rel_err {:.3e}",
        report.rows.len() - bad,
        report.rows.len(),
        report.max_err()
    );
    i32::from(bad > 0)
}
