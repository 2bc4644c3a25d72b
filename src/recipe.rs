//! Recipes: the TOML files users train from, typed (serde, unknown keys rejected).
//!
//! `ferrotron train RECIPE.toml --set section.key=value ...` applies the overrides to the parsed
//! TOML before it is typed, so an override is checked exactly like a key in the file. An unknown
//! key is reported with its full path and the closest valid key; relative paths in the recipe are
//! resolved against the current directory (where the user runs ferrotron).

mod ranges;

use crate::data::DataConfig;
use crate::error::Result;
use crate::user;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    pub model: ModelSection,
    pub data: DataConfig,
    #[serde(default)]
    pub optim: OptimSection,
    pub train: TrainSection,
    #[serde(default)]
    pub parallel: ParallelSection,
    #[serde(default)]
    pub checkpoint: CheckpointSection,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// Start from the weights (and config.json) of this Hugging Face checkpoint directory.
    pub hf_dir: Option<PathBuf>,
    /// Or: a HF config.json describing the architecture, initialised randomly.
    pub config: Option<PathBuf>,
    /// Standard deviation of the random initialisation (HF `initializer_range`).
    #[serde(default = "default_init_std")]
    pub init_std: f64,
}

fn default_init_std() -> f64 {
    0.02
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    Cosine,
    Linear,
    Constant,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimSection {
    pub lr: f64,
    /// The learning rate decays to `lr * min_lr_ratio`.
    pub min_lr_ratio: f64,
    pub warmup_steps: u64,
    pub schedule: Schedule,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Apply weight decay to norms and biases too (off by default, as in HF Trainer).
    pub decay_norms_and_biases: bool,
    /// Clip the global gradient norm to this value; 0 disables clipping.
    pub clip_norm: f64,
}

impl Default for OptimSection {
    fn default() -> Self {
        OptimSection {
            lr: 3e-4,
            min_lr_ratio: 0.1,
            warmup_steps: 0,
            schedule: Schedule::Cosine,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
            decay_norms_and_biases: false,
            clip_norm: 1.0,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSection {
    pub steps: u64,
    /// Sequences per optimizer step, over all data-parallel ranks.
    pub global_batch: usize,
    /// Sequences per forward/backward on one rank (default: global_batch / dp).
    pub micro_batch: Option<usize>,
    #[serde(default = "default_seed")]
    pub seed: u64,
    pub out_dir: PathBuf,
    #[serde(default = "default_device")]
    pub device: String,
    /// Compute precision: "f32" (the only one on cpu) or "bf16" (bf16 weights and activations,
    /// fp32 master weights, gradients and Adam moments). Default: f32 on cpu, bf16 on cuda.
    #[serde(default)]
    pub precision: Option<String>,
    #[serde(default = "one")]
    pub log_every: u64,
    /// Evaluate the held-out loss every N steps (0: only at the end).
    #[serde(default)]
    pub eval_every: u64,
    #[serde(default = "default_eval_batches")]
    pub eval_batches: usize,
    /// Print a sample generation every N steps (0: only at the end, if a prompt is set).
    #[serde(default)]
    pub sample_every: u64,
    #[serde(default)]
    pub sample_prompt: Option<String>,
    #[serde(default = "default_sample_tokens")]
    pub sample_tokens: usize,
    /// "none" (default): forward keeps every activation backward needs. "full": forward keeps
    /// only each block's input and backward recomputes the block (about a third more compute for
    /// a fraction of the activation memory; the gradients are the same bits).
    #[serde(default = "default_activation_checkpointing")]
    pub activation_checkpointing: String,
    /// Loss-spike guard (0: off). With a factor f > 1, a step whose loss exceeds f times the
    /// running mean of the previous steps' losses stops the run before its update is applied
    /// (exit code 2), and the last checkpoint saved before it is never pruned (train/spike.rs).
    #[serde(default)]
    pub spike_guard: f64,
    /// Per-kernel device profile of the last N steps (0: off; CUDA only). Every kernel, matmul
    /// and FlashAttention call of those steps is timed with CUDA events; the table (time per
    /// kernel, share, achieved TFLOP/s for the matmuls and attention, the GPU's busy share of
    /// the steps' wall time) goes to `<out_dir>/profile.md` and the console. Profiled steps run
    /// slightly slower than the others (two event records per launch).
    #[serde(default)]
    pub profile_steps: u64,
}

fn default_seed() -> u64 {
    1234
}
fn default_device() -> String {
    "cpu".into()
}
fn one() -> u64 {
    1
}
fn default_eval_batches() -> usize {
    8
}
fn default_sample_tokens() -> usize {
    64
}
fn default_activation_checkpointing() -> String {
    "none".into()
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ParallelSection {
    pub zero_stage: u8,
    pub tp: usize,
    pub pp: usize,
    /// Forward/backward passes per rank and step (the pipeline schedule's m); the other view of
    /// `train.micro_batch` (train/batching.rs). None: derived from `train.micro_batch`.
    pub microbatches: Option<usize>,
    /// Pipeline schedule when `pp` > 1: "1f1b" (default), "gpipe" or "interleaved" (with
    /// `pp_virtual_stages` >= 2); parallel/src/pipeline/ has their orders and bubbles.
    pub pp_schedule: String,
    /// Model chunks per pipeline rank (v; interleaved schedule only).
    pub pp_virtual_stages: usize,
    /// Blocks of each of the pp x pp_virtual_stages model chunks, in model order (default:
    /// balanced, src/model/stages.rs).
    pub pp_layers: Option<Vec<usize>>,
    /// Megatron's sequence parallelism inside the tensor-parallel group: norms, residual adds
    /// and their activations on N/tp tokens (needs tp > 1).
    pub sequence_parallel: bool,
    /// Seconds a collective may take before the job fails naming the group and operation.
    pub collective_timeout_s: f64,
    /// How GPU buffers cross the data-parallel group on cuda: "nccl", or "host-staged" (through
    /// host memory and the MPI/TCP group; lets several ranks share one GPU, which NCCL refuses).
    pub gpu_comm: String,
    /// How pipeline stages exchange activations and gradients: "auto" (default: grouped over
    /// NCCL when the pp group is an NCCL group and the schedule allows it, else tagged host
    /// messages), "grouped" (NCCL's grouped, tagless calls; over MPI/TCP on the CPU or
    /// host-staged; refused for lists not safe for them, see parallel/src/pipeline/grouped.rs),
    /// or "tagged" (non-blocking tagged host messages, any schedule; host-staged on a GPU).
    pub pp_p2p: String,
}

impl Default for ParallelSection {
    fn default() -> Self {
        ParallelSection {
            zero_stage: 0,
            tp: 1,
            pp: 1,
            microbatches: None,
            pp_schedule: "1f1b".into(),
            pp_virtual_stages: 1,
            pp_layers: None,
            collective_timeout_s: 300.0,
            gpu_comm: "nccl".into(),
            pp_p2p: "auto".into(),
            sequence_parallel: false,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointSection {
    /// false: write no checkpoint at all, whatever `every` says (benchmarks, throwaway runs:
    /// `--set checkpoint.enabled=false` on any recipe); `--resume` is then rejected.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Where step directories go (default: <train.out_dir>/checkpoints).
    pub dir: Option<PathBuf>,
    /// Save every N steps (0: only at the end).
    #[serde(default)]
    pub every: u64,
    #[serde(default = "default_keep")]
    pub keep_last: usize,
    /// Save the initial state as step 0 before training (a seed checkpoint, as torchtitan's
    /// `create_seed_checkpoint`: e.g. to start every layout of an experiment from it).
    #[serde(default)]
    pub save_initial: bool,
}

/// A recipe without a [checkpoint] section: what each key defaults to inside one.
impl Default for CheckpointSection {
    fn default() -> Self {
        CheckpointSection {
            enabled: true,
            dir: None,
            every: 0,
            keep_last: default_keep(),
            save_initial: false,
        }
    }
}

fn default_keep() -> usize {
    2
}
fn yes() -> bool {
    true
}

impl Recipe {
    /// Reads `path`, applies `overrides` ("section.key=value"), and types the result.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| user!("{}: cannot read recipe: {e}", path.display()))?;
        Self::parse(&text, &path.display().to_string(), overrides)
    }

    pub fn parse(text: &str, origin: &str, overrides: &[String]) -> Result<Self> {
        let mut table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| syntax_error(origin, text, &e))?;
        for o in overrides {
            apply_override(&mut table, o)?;
        }
        let recipe: Recipe = serde_path_to_error::deserialize(toml::Value::Table(table.clone()))
            .map_err(|e| {
                let path = e.path().to_string();
                typed_error(origin, &path, e.inner().message(), &table)
            })?;
        recipe.validate(origin)?;
        Ok(recipe)
    }

    fn validate(&self, origin: &str) -> Result<()> {
        match (&self.model.hf_dir, &self.model.config) {
            (None, None) => return Err(user!("{origin}: set `model.hf_dir` (start from HF weights) or `model.config` (random init)")),
            (Some(_), Some(_)) => return Err(user!("{origin}: set only one of `model.hf_dir` and `model.config`")),
            _ => {}
        }
        ranges::check(self, origin)?;
        let device = self.train.device.as_str();
        if !matches!(device, "cpu" | "cuda") {
            return Err(user!(
                "{origin}: `train.device` = \"{device}\" is not one of \"cpu\", \"cuda\""
            ));
        }
        match (device, self.precision()) {
            ("cpu", "f32") | ("cuda", "f32" | "bf16") => {}
            ("cpu", "bf16") => return Err(user!(
                "{origin}: `train.precision` = \"bf16\" needs `train.device` = \"cuda\" (the CPU backend is the f32 reference)"
            )),
            (_, p) => return Err(user!(
                "{origin}: `train.precision` = \"{p}\" is not one of \"f32\", \"bf16\""
            )),
        }
        match self.train.activation_checkpointing.as_str() {
            "none" | "full" => {}
            "selective" => return Err(user!(
                "{origin}: `train.activation_checkpointing` = \"selective\" is not implemented; use \"full\" (recompute every block) or \"none\""
            )),
            other => return Err(user!(
                "{origin}: `train.activation_checkpointing` = \"{other}\" is not one of \"none\", \"full\""
            )),
        }
        if self.train.profile_steps > 0 && device != "cuda" {
            return Err(user!(
                "{origin}: `train.profile_steps` = {} times CUDA kernels and needs `train.device` = \"cuda\" (on the CPU, profile with perf)",
                self.train.profile_steps
            ));
        }
        if self.train.profile_steps > self.train.steps {
            return Err(user!(
                "{origin}: `train.profile_steps` = {} is more than `train.steps` = {}",
                self.train.profile_steps,
                self.train.steps
            ));
        }
        if self.parallel.sequence_parallel && self.parallel.tp < 2 {
            return Err(user!(
                "{origin}: `parallel.sequence_parallel` = true splits tokens over the tensor-parallel group and needs `parallel.tp` > 1 (it is {})",
                self.parallel.tp
            ));
        }
        if self.checkpoint.save_initial && !self.checkpoint.enabled {
            return Err(user!(
                "{origin}: `checkpoint.save_initial` = true needs checkpoints, and `checkpoint.enabled` = false turns them off"
            ));
        }
        pipeline_schedule(&self.parallel, origin)?;
        if !matches!(self.parallel.gpu_comm.as_str(), "nccl" | "host-staged") {
            return Err(user!(
                "{origin}: `parallel.gpu_comm` = \"{}\" is not one of \"nccl\", \"host-staged\"",
                self.parallel.gpu_comm
            ));
        }
        if !matches!(self.parallel.pp_p2p.as_str(), "auto" | "grouped" | "tagged") {
            return Err(user!(
                "{origin}: `parallel.pp_p2p` = \"{}\" is not one of \"auto\", \"grouped\", \"tagged\"",
                self.parallel.pp_p2p
            ));
        }
        Ok(())
    }

    /// Whether GPU buffers cross process groups through NCCL (a CUDA run with
    /// `parallel.gpu_comm = "nccl"`).
    pub fn uses_nccl(&self) -> bool {
        self.train.device == "cuda" && self.parallel.gpu_comm == "nccl"
    }

    /// `train.precision`, or the device's default (f32 on cpu, bf16 on cuda).
    pub fn precision(&self) -> &str {
        match (&self.train.precision, self.train.device.as_str()) {
            (Some(p), _) => p,
            (None, "cuda") => "bf16",
            (None, _) => "f32",
        }
    }

    pub fn checkpoint_dir(&self) -> PathBuf {
        self.checkpoint
            .dir
            .clone()
            .unwrap_or_else(|| self.train.out_dir.join("checkpoints"))
    }
}

/// A TOML syntax error as one sentence with the line and column it points at; a duplicate key
/// is named (the parser's message alone says only "duplicate key").
fn syntax_error(origin: &str, text: &str, e: &toml::de::Error) -> crate::error::Error {
    let mut msg = one_line(e.message());
    let Some(span) = e.span() else {
        return user!("{origin}: {msg}");
    };
    let start = span.start.min(text.len());
    let before = &text[..start];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    if msg == "duplicate key" {
        if let Some(key) = text
            .get(span.clone())
            .map(str::trim)
            .filter(|k| !k.is_empty())
        {
            msg = format!("duplicate key `{key}`");
        }
    }
    user!("{origin}: line {line}, column {column}: {msg}")
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Applies "a.b=value": the value is read as a TOML value, or as a string when it is not one.
fn apply_override(table: &mut toml::Table, o: &str) -> Result<()> {
    let (path, raw) = o
        .split_once('=')
        .ok_or_else(|| user!("--set `{o}`: expected section.key=value"))?;
    let keys: Vec<&str> = path.trim().split('.').collect();
    if keys.len() < 2 || keys.iter().any(|k| k.is_empty()) {
        return Err(user!("--set `{o}`: expected section.key=value"));
    }
    let value = format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let mut cur = table;
    for k in &keys[..keys.len() - 1] {
        let entry = cur
            .entry(k.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = entry
            .as_table_mut()
            .ok_or_else(|| user!("--set `{o}`: `{k}` is not a section"))?;
    }
    cur.insert(keys[keys.len() - 1].to_string(), value);
    Ok(())
}

/// Every valid key of every section, for suggestions.
fn known_keys() -> Vec<(&'static str, &'static [&'static str])> {
    vec![
        (
            "",
            &["model", "data", "optim", "train", "parallel", "checkpoint"],
        ),
        ("model", &["hf_dir", "config", "init_std"]),
        (
            "data",
            &[
                "format",
                "path",
                "paths",
                "tokenizer",
                "seq_len",
                "val_fraction",
                "packing",
                "text_split",
                "chat_template",
                "on_bad_row",
                "cache_dir",
            ],
        ),
        (
            "optim",
            &[
                "lr",
                "min_lr_ratio",
                "warmup_steps",
                "schedule",
                "beta1",
                "beta2",
                "eps",
                "weight_decay",
                "decay_norms_and_biases",
                "clip_norm",
            ],
        ),
        (
            "train",
            &[
                "steps",
                "global_batch",
                "micro_batch",
                "seed",
                "out_dir",
                "device",
                "precision",
                "log_every",
                "eval_every",
                "eval_batches",
                "sample_every",
                "sample_prompt",
                "sample_tokens",
                "activation_checkpointing",
                "spike_guard",
                "profile_steps",
            ],
        ),
        (
            "parallel",
            &[
                "zero_stage",
                "tp",
                "pp",
                "microbatches",
                "pp_schedule",
                "pp_virtual_stages",
                "pp_layers",
                "sequence_parallel",
                "collective_timeout_s",
                "gpu_comm",
                "pp_p2p",
            ],
        ),
        (
            "checkpoint",
            &["enabled", "dir", "every", "keep_last", "save_initial"],
        ),
    ]
}

/// `parallel.pp_schedule` is a schedule the trainer runs, with a number of model chunks per
/// rank it can run (`parallel.pp_virtual_stages`: 1, or >= 2 for "interleaved" with pp > 1).
/// ZB-H1 needs every backward split into input and weight gradients, which the model's
/// hand-written backward does not do. (The micro-batch count is checked where it is known.)
fn pipeline_schedule(p: &ParallelSection, origin: &str) -> Result<()> {
    use ferrotron_parallel::pipeline::{Schedule, ScheduleKind};
    let name = p.pp_schedule.as_str();
    let runs = "use \"1f1b\", \"gpipe\" or \"interleaved\"";
    let Ok(kind) = ScheduleKind::parse(name) else {
        return Err(user!(
            "{origin}: `parallel.pp_schedule` = {name:?} is not a pipeline schedule; {runs}"
        ));
    };
    if kind.splits_backward() {
        return Err(user!(
            "{origin}: `parallel.pp_schedule` = \"{name}\" needs the backward split into input and weight gradients, which the trainer does not implement; {runs}"
        ));
    }
    Schedule::build(kind, p.pp.max(1), 1, p.pp_virtual_stages.max(1))
        .map(|_| ())
        .map_err(|e| user!("{origin}: {e}"))
}

/// Edit distance, for "did you mean".
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push(
                (prev[j] + usize::from(ca != *cb))
                    .min(prev[j + 1] + 1)
                    .min(cur[j] + 1),
            );
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Turns serde's error into one sentence; for unknown keys, names the full path and the closest
/// valid key (found by walking the table, since serde's message lacks the section).
fn typed_error(origin: &str, path: &str, msg: &str, table: &toml::Table) -> crate::error::Error {
    for (section, keys) in known_keys() {
        let present: Vec<String> = if section.is_empty() {
            table.keys().cloned().collect()
        } else {
            match table.get(section).and_then(|v| v.as_table()) {
                Some(t) => t.keys().cloned().collect(),
                None => continue,
            }
        };
        for k in present {
            if !keys.contains(&k.as_str()) {
                let best = keys
                    .iter()
                    .min_by_key(|c| distance(&k, c))
                    .copied()
                    .unwrap_or("");
                let full = if section.is_empty() {
                    k.clone()
                } else {
                    format!("{section}.{k}")
                };
                let want = if section.is_empty() {
                    best.to_string()
                } else {
                    format!("{section}.{best}")
                };
                return user!("{origin}: unknown key `{full}` (did you mean `{want}`?)");
            }
        }
    }
    // serde's words for a non-string given to a choice (`format = 5`): "invalid type: unit
    // variant, expected string only", which names neither the value nor what is wanted
    if msg.contains("unit variant") {
        let value = path
            .split('.')
            .try_fold(None::<&toml::Value>, |at, k| match at {
                None => table.get(k).map(Some),
                Some(v) => v.get(k).map(Some),
            })
            .flatten();
        if let Some(v) = value {
            return user!(
                "{origin}: key `{path}` must be a string (one of its choices), found {v}"
            );
        }
    }
    if path.is_empty() || path == "." {
        user!("{origin}: {}", one_line(msg))
    } else {
        user!("{origin}: key `{path}`: {}", one_line(msg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = r#"
[model]
config = "c.json"
[data]
path = "x.txt"
[train]
steps = 3
global_batch = 2
out_dir = "runs/x"
"#;

    #[test]
    fn minimal_recipe_types_with_defaults() {
        let r = Recipe::parse(MIN, "r.toml", &[]).unwrap();
        assert_eq!(r.train.steps, 3);
        assert_eq!(r.parallel.zero_stage, 0);
        assert_eq!(r.optim.schedule, Schedule::Cosine);
        assert_eq!(r.checkpoint_dir(), PathBuf::from("runs/x/checkpoints"));
        // No [checkpoint] section: the same defaults as an empty one.
        let empty = Recipe::parse(&format!("{MIN}\n[checkpoint]\n"), "r.toml", &[]).unwrap();
        for c in [&r.checkpoint, &empty.checkpoint] {
            assert!(c.enabled);
            assert_eq!((c.every, c.keep_last), (0, 2));
        }
    }

    #[test]
    fn checkpoints_turned_off_override_the_save_interval() {
        let sets = [
            "checkpoint.every=5".into(),
            "checkpoint.enabled=false".into(),
        ];
        let off = Recipe::parse(MIN, "r.toml", &sets).unwrap();
        assert!(!off.checkpoint.enabled);
        assert_eq!(off.checkpoint.every, 5);
    }

    #[test]
    fn unknown_key_names_path_and_closest_key() {
        let text = MIN.replace("steps = 3", "steps = 3\nstpes = 4");
        let e = Recipe::parse(&text, "r.toml", &[]).unwrap_err().to_string();
        assert_eq!(
            e,
            "r.toml: unknown key `train.stpes` (did you mean `train.steps`?)"
        );
        let e = Recipe::parse(MIN, "r.toml", &["optim.lrr=0.1".into()])
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "r.toml: unknown key `optim.lrr` (did you mean `optim.lr`?)"
        );
        let e = Recipe::parse(&format!("{MIN}\n[optimizer]\nlr = 1.0\n"), "r.toml", &[])
            .unwrap_err()
            .to_string();
        assert_eq!(e, "r.toml: unknown key `optimizer` (did you mean `optim`?)");
    }

    #[test]
    fn overrides_are_typed_like_the_file() {
        let r = Recipe::parse(
            MIN,
            "r.toml",
            &["train.steps=7".into(), "optim.schedule=linear".into()],
        )
        .unwrap();
        assert_eq!(r.train.steps, 7);
        assert_eq!(r.optim.schedule, Schedule::Linear);
        let e = Recipe::parse(MIN, "r.toml", &["train.steps=many".into()])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("r.toml:") && e.contains("steps"), "{e}");
        assert!(Recipe::parse(MIN, "r.toml", &["nonsense".into()]).is_err());
    }

    #[test]
    fn invalid_values_are_rejected_with_the_key() {
        let e = Recipe::parse(MIN, "r.toml", &["parallel.zero_stage=4".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("parallel.zero_stage"), "{e}");
        let e = Recipe::parse(MIN, "r.toml", &["optim.lr=-1".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("optim.lr"), "{e}");
        // a choice given a non-string names the key and the value (serde says "unit variant")
        for (set, found) in [
            ("data.on_bad_row=5", "5"),
            ("optim.schedule=[1, 2]", "[1, 2]"),
        ] {
            let e = Recipe::parse(MIN, "r.toml", &[set.into()])
                .unwrap_err()
                .to_string();
            let key = set.split('=').next().unwrap();
            assert_eq!(
                e,
                format!("r.toml: key `{key}` must be a string (one of its choices), found {found}")
            );
        }
    }

    #[test]
    fn syntax_errors_give_line_and_column_and_duplicate_keys_are_named() {
        let text = MIN.replace("steps = 3", "steps = = 3");
        let e = Recipe::parse(&text, "r.toml", &[]).unwrap_err().to_string();
        assert!(e.starts_with("r.toml: line 7, column "), "{e}");
        let text = MIN.replace("steps = 3", "steps = 3\nsteps = 4");
        let e = Recipe::parse(&text, "r.toml", &[]).unwrap_err().to_string();
        assert_eq!(e, "r.toml: line 8, column 1: duplicate key `steps`");
        let text = format!("{MIN}[train]\nseed = 1\n");
        let e = Recipe::parse(&text, "r.toml", &[]).unwrap_err().to_string();
        assert_eq!(e, "r.toml: line 10, column 2: duplicate key `train`");
    }
}
