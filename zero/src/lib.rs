//! ferrotron-zero: data-parallel model state. `ParamStore` is how the model reaches its units;
//! an `Engine` (ZeRO stage 0, 1, 2 or 3) implements it and owns gradients, master weights and
//! optimizer states, whole or sharded over the data-parallel group.

pub mod engine;
pub mod store;

pub use engine::{Engine, FullState, MemoryReport, Region, StepConfig, StepStats, UnitMeta};
pub use store::{ParamStore, ResidentStore};
