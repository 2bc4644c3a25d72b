//! A pipeline schedule as data: every rank's list of actions for one optimizer step.
//!
//! Contract:
//! - `Schedule::new(name, p, m, v)` takes the recipe values `parallel.pp_schedule` ("gpipe",
//!   "1f1b", "interleaved", "zb-h1"), `parallel.pp` (p stages = ranks of the pp group),
//!   `parallel.microbatches` (m) and `parallel.pp_virtual_stages` (v chunks per rank) and either
//!   builds the lists or says in one sentence why the combination cannot run.
//!   Supported: gpipe, 1f1b and zb-h1 with v = 1 and any p ≥ 1, m ≥ 1; interleaved with p ≥ 2,
//!   v ≥ 2 and any m ≥ 1 (its bubble reaches the textbook (p − 1)/(v·m) for m ≥ p, see
//!   interleaved.rs). The model must have at least p·v blocks (`check_model_depth`).
//! - Each rank's list holds its compute actions in the schedule's order, a receive right before
//!   the compute that needs the message and a send right after the compute that produced it
//!   (messages between two chunks of the same rank are handed over locally: no action).
//! - `exact_bubble` and `expected_peak_in_flight` are the schedule's own figures (per-schedule
//!   files); the simulator measures both from the lists and the tests compare.

use super::action::Action;
use super::time_model::TimeModel;
use super::{gpipe, interleaved, one_f_one_b, zb_h1};

/// Largest number of model chunks: tags 0..2(p·v − 1) must stay within MPI's guaranteed 32767.
pub const MAX_CHUNKS: usize = 16384;

/// The schedules `parallel.pp_schedule` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScheduleKind {
    GPipe,
    OneFOneB,
    Interleaved,
    ZbH1,
}

impl ScheduleKind {
    pub const ALL: [ScheduleKind; 4] = [
        ScheduleKind::GPipe,
        ScheduleKind::OneFOneB,
        ScheduleKind::Interleaved,
        ScheduleKind::ZbH1,
    ];

    /// The recipe spelling.
    pub fn name(self) -> &'static str {
        match self {
            ScheduleKind::GPipe => "gpipe",
            ScheduleKind::OneFOneB => "1f1b",
            ScheduleKind::Interleaved => "interleaved",
            ScheduleKind::ZbH1 => "zb-h1",
        }
    }

    pub fn parse(name: &str) -> Result<ScheduleKind, ScheduleError> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .ok_or_else(|| {
                ScheduleError(format!(
                    "parallel.pp_schedule = {name:?} is not a pipeline schedule; use \"gpipe\", \"1f1b\", \"interleaved\" or \"zb-h1\""
                ))
            })
    }

    /// Whether the schedule splits backwards into input and weight halves.
    pub fn splits_backward(self) -> bool {
        self == ScheduleKind::ZbH1
    }
}

/// A combination of schedule, stages, micro-batches and chunks that cannot run, in one sentence.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ScheduleError(pub String);

/// Every rank's actions for one step.
#[derive(Clone, Debug)]
pub struct Schedule {
    kind: ScheduleKind,
    stages: usize,
    microbatches: usize,
    virtual_stages: usize,
    ranks: Vec<Vec<Action>>,
    /// The lists for grouped point-to-point, made and checked once (the executor asks every
    /// step): None when `ranks` are safe as they are, else `ranks` with their messages placed in
    /// rounds (rounds.rs); Err when neither is.
    grouped: std::sync::OnceLock<Result<Option<Vec<Vec<Action>>>, super::sim::SimError>>,
}

impl Schedule {
    /// Builds the schedule named `name` (recipe spelling) for `stages` ranks, `microbatches`
    /// micro-batches per step and `virtual_stages` chunks per rank.
    pub fn new(
        name: &str,
        stages: usize,
        microbatches: usize,
        virtual_stages: usize,
    ) -> Result<Schedule, ScheduleError> {
        Self::build(
            ScheduleKind::parse(name)?,
            stages,
            microbatches,
            virtual_stages,
        )
    }

    pub fn build(
        kind: ScheduleKind,
        p: usize,
        m: usize,
        v: usize,
    ) -> Result<Schedule, ScheduleError> {
        check(kind, p, m, v).map_err(ScheduleError)?;
        let compute = match kind {
            ScheduleKind::GPipe => gpipe::compute_order(p, m),
            ScheduleKind::OneFOneB => one_f_one_b::compute_order(p, m),
            ScheduleKind::Interleaved => interleaved::compute_order(p, m, v),
            ScheduleKind::ZbH1 => zb_h1::compute_order(p, m),
        };
        Ok(Schedule {
            kind,
            stages: p,
            microbatches: m,
            virtual_stages: v,
            ranks: with_messages(p, v, compute),
            grouped: std::sync::OnceLock::new(),
        })
    }

    pub fn kind(&self) -> ScheduleKind {
        self.kind
    }
    /// p: pipeline ranks.
    pub fn stages(&self) -> usize {
        self.stages
    }
    /// m: micro-batches per step.
    pub fn microbatches(&self) -> usize {
        self.microbatches
    }
    /// v: model chunks per rank.
    pub fn virtual_stages(&self) -> usize {
        self.virtual_stages
    }
    /// p·v: model chunks in all.
    pub fn chunks(&self) -> usize {
        self.stages * self.virtual_stages
    }
    /// The rank that holds `chunk`: chunk mod p.
    pub fn owner(&self, chunk: usize) -> usize {
        chunk % self.stages
    }
    /// The chunks of `rank` in model order: rank, rank + p, …
    pub fn chunks_of(&self, rank: usize) -> Vec<usize> {
        (0..self.virtual_stages)
            .map(|j| j * self.stages + rank)
            .collect()
    }
    /// Whether the schedule runs over grouped, tagless, rendezvous point-to-point
    /// (`grouped::check_grouped_actions` of `grouped_actions`), decided on the first call only.
    pub fn grouped_safety(&self) -> Result<(), super::sim::SimError> {
        self.grouped_lists().map(|_| ())
    }

    /// The lists the grouped mode runs: the schedule's own when they are safe for it, else the
    /// same computes with their messages placed in rounds (rounds.rs) when those are.
    fn grouped_lists(&self) -> Result<&[Vec<Action>], super::sim::SimError> {
        let verdict = self.grouped.get_or_init(|| {
            let own = super::grouped::check_grouped_actions(&self.ranks);
            let Err(own_err) = own else {
                return Ok(None);
            };
            let rounds =
                super::rounds::with_round_messages(self.stages, self.chunks(), &self.ranks);
            match super::grouped::check_grouped_actions(&rounds) {
                Ok(()) => Ok(Some(rounds)),
                Err(_) => Err(own_err),
            }
        });
        match verdict {
            Ok(None) => Ok(&self.ranks),
            Ok(Some(lists)) => Ok(lists),
            Err(e) => Err(e.clone()),
        }
    }

    /// Rank `rank`'s actions for one step (tagged point-to-point).
    pub fn actions(&self, rank: usize) -> &[Action] {
        &self.ranks[rank]
    }

    /// Rank `rank`'s actions for one step over grouped point-to-point (`grouped_lists`), or why
    /// the schedule cannot run grouped.
    pub fn grouped_actions(&self, rank: usize) -> Result<&[Action], super::sim::SimError> {
        self.grouped_lists().map(|lists| lists[rank].as_slice())
    }
    pub fn all_actions(&self) -> &[Vec<Action>] {
        &self.ranks
    }

    /// Rejects models with fewer blocks than chunks (each chunk needs at least one block).
    pub fn check_model_depth(&self, blocks: usize) -> Result<(), ScheduleError> {
        if blocks < self.chunks() {
            return Err(ScheduleError(format!(
                "parallel.pp = {} x parallel.pp_virtual_stages = {} needs {} model chunks of at least one block each, but the model has {blocks} blocks",
                self.stages,
                self.virtual_stages,
                self.chunks()
            )));
        }
        Ok(())
    }

    /// m·(t_f + t_b): a rank's compute time per step, the ideal step time.
    pub fn ideal_time(&self, t: &TimeModel) -> f64 {
        self.microbatches as f64 * (t.forward + t.backward)
    }

    /// The schedule's exact idle time per rank per step under `t` with free communication
    /// (formulas in the per-schedule files).
    pub fn exact_bubble(&self, t: &TimeModel) -> f64 {
        let (p, m, v) = (self.stages, self.microbatches, self.virtual_stages);
        match self.kind {
            ScheduleKind::GPipe => gpipe::bubble(p, t),
            ScheduleKind::OneFOneB => one_f_one_b::bubble(p, t),
            ScheduleKind::Interleaved => interleaved::bubble(p, m, v, t),
            ScheduleKind::ZbH1 => zb_h1::bubble(p, m, t),
        }
    }

    /// The textbook bubble fraction (idle / ideal): (p − 1)/m, or (p − 1)/(v·m) interleaved;
    /// for zb-h1 the paper's (p − 1)(t_f + t_B − t_w)/(m(t_f + t_b)).
    pub fn textbook_bubble_fraction(&self, t: &TimeModel) -> f64 {
        let (p, m, v) = (
            (self.stages - 1) as f64,
            self.microbatches as f64,
            self.virtual_stages as f64,
        );
        match self.kind {
            ScheduleKind::GPipe | ScheduleKind::OneFOneB => p / m,
            ScheduleKind::Interleaved => p / (v * m),
            ScheduleKind::ZbH1 => {
                p * (t.forward + t.backward_input() - t.backward_weight)
                    / (m * (t.forward + t.backward))
            }
        }
    }

    /// The exact peak of (micro-batch, chunk) activations rank `rank` holds during a step
    /// (forwarded, not yet fully backwarded).
    pub fn expected_peak_in_flight(&self, rank: usize) -> usize {
        let (p, m, v) = (self.stages, self.microbatches, self.virtual_stages);
        match self.kind {
            ScheduleKind::GPipe => gpipe::peak_in_flight(m),
            ScheduleKind::OneFOneB => one_f_one_b::peak_in_flight(p, m, rank),
            ScheduleKind::Interleaved => interleaved::peak_in_flight(p, m, v, rank),
            ScheduleKind::ZbH1 => zb_h1::peak_in_flight(p, m),
        }
    }

    /// Messages crossing each chunk boundary per step: m activations and m gradients.
    pub fn messages_per_boundary(&self) -> usize {
        2 * self.microbatches
    }
}

/// Why (kind, p, m, v) cannot run, if it cannot.
fn check(kind: ScheduleKind, p: usize, m: usize, v: usize) -> Result<(), String> {
    let name = kind.name();
    if p == 0 {
        return Err("parallel.pp must be at least 1".into());
    }
    if m == 0 {
        return Err(format!(
            "parallel.pp_schedule = \"{name}\" needs at least one micro-batch (parallel.microbatches = 0)"
        ));
    }
    if v == 0 {
        return Err("parallel.pp_virtual_stages must be at least 1".into());
    }
    match kind {
        ScheduleKind::Interleaved => {
            if v < 2 {
                return Err(format!(
                    "parallel.pp_schedule = \"interleaved\" needs parallel.pp_virtual_stages >= 2 chunks per rank (got {v}); with one chunk per rank use \"1f1b\""
                ));
            }
            if p < 2 {
                return Err(
                    "parallel.pp_schedule = \"interleaved\" needs parallel.pp >= 2: interleaving only shortens the bubble between pipeline ranks".into(),
                );
            }
        }
        _ => {
            if v != 1 {
                return Err(format!(
                    "parallel.pp_schedule = \"{name}\" runs one model chunk per rank, but parallel.pp_virtual_stages = {v}; use \"interleaved\" for several chunks per rank"
                ));
            }
        }
    }
    if p * v > MAX_CHUNKS {
        return Err(format!(
            "parallel.pp = {p} x parallel.pp_virtual_stages = {v} makes {} model chunks, more than the {MAX_CHUNKS} that point-to-point tags can name",
            p * v
        ));
    }
    Ok(())
}

/// Adds the receive before and the send after every compute action whose input comes from or
/// whose output goes to another rank.
fn with_messages(p: usize, v: usize, compute: Vec<Vec<Action>>) -> Vec<Vec<Action>> {
    let last = p * v - 1;
    let owner = |c: usize| c % p;
    compute
        .into_iter()
        .enumerate()
        .map(|(r, order)| {
            let mut out = Vec::with_capacity(3 * order.len());
            for action in order {
                match action {
                    Action::Forward { mb, chunk } => {
                        if chunk > 0 && owner(chunk - 1) != r {
                            let peer = owner(chunk - 1);
                            out.push(Action::RecvActivation { mb, chunk, peer });
                        }
                        out.push(action);
                        if chunk < last && owner(chunk + 1) != r {
                            let peer = owner(chunk + 1);
                            out.push(Action::SendActivation { mb, chunk, peer });
                        }
                    }
                    Action::Backward { mb, chunk } | Action::BackwardInput { mb, chunk } => {
                        if chunk < last && owner(chunk + 1) != r {
                            let peer = owner(chunk + 1);
                            out.push(Action::RecvGrad { mb, chunk, peer });
                        }
                        out.push(action);
                        if chunk > 0 && owner(chunk - 1) != r {
                            let peer = owner(chunk - 1);
                            out.push(Action::SendGrad { mb, chunk, peer });
                        }
                    }
                    other => out.push(other),
                }
            }
            out
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impossible_combinations_are_rejected_with_a_reason() {
        let err = |name, p, m, v| Schedule::new(name, p, m, v).unwrap_err().to_string();
        assert!(err("zigzag", 2, 4, 1).contains("not a pipeline schedule"));
        assert!(err("interleaved", 4, 8, 1).contains("pp_virtual_stages >= 2"));
        assert!(err("interleaved", 1, 8, 2).contains("parallel.pp >= 2"));
        assert!(err("1f1b", 4, 8, 2).contains("one model chunk per rank"));
        assert!(err("zb-h1", 4, 8, 2).contains("one model chunk per rank"));
        assert!(err("gpipe", 4, 0, 1).contains("at least one micro-batch"));
        assert!(err("1f1b", 0, 4, 1).contains("parallel.pp must be at least 1"));
        let s = Schedule::new("interleaved", 4, 8, 2).unwrap();
        assert!(s
            .check_model_depth(6)
            .unwrap_err()
            .to_string()
            .contains("needs 8 model chunks"));
        assert!(s.check_model_depth(8).is_ok());
    }

    #[test]
    fn one_f_one_b_on_two_ranks_is_the_textbook_list() {
        let s = Schedule::new("1f1b", 2, 3, 1).unwrap();
        let text = |r| {
            s.actions(r)
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            text(0),
            [
                "forward mb 0 chunk 0",
                "send activation mb 0 chunk 0 to rank 1",
                "forward mb 1 chunk 0",
                "send activation mb 1 chunk 0 to rank 1",
                "recv grad mb 0 chunk 0 from rank 1",
                "backward mb 0 chunk 0",
                "forward mb 2 chunk 0",
                "send activation mb 2 chunk 0 to rank 1",
                "recv grad mb 1 chunk 0 from rank 1",
                "backward mb 1 chunk 0",
                "recv grad mb 2 chunk 0 from rank 1",
                "backward mb 2 chunk 0",
            ]
        );
        assert_eq!(
            text(1)[..4],
            [
                "recv activation mb 0 chunk 1 from rank 0",
                "forward mb 0 chunk 1",
                "backward mb 0 chunk 1",
                "send grad mb 0 chunk 1 to rank 0",
            ]
        );
    }

    #[test]
    fn interleaved_groups_fold_the_remainder_into_the_first_group() {
        assert_eq!(interleaved::groups(4, 8), vec![0..4, 4..8]);
        assert_eq!(interleaved::groups(4, 11), vec![0..7, 7..11]);
        assert_eq!(interleaved::groups(4, 3), vec![0..3]);
        let s = Schedule::new("interleaved", 2, 2, 2).unwrap();
        assert_eq!(s.chunks_of(1), vec![1, 3]);
        assert_eq!(s.owner(3), 1);
    }
}
