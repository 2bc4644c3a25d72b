//! Models: configuration from HF config.json, the flat-unit parameter layout, the transformer's
//! hand-written forward/backward, and HF safetensors import.

pub mod batch;
pub mod config;
pub mod gemma;
pub mod hf_import;
pub mod layout;
pub mod rope;
pub mod slicing;
pub mod stages;
pub mod tensor_parallel;
pub mod transformer;
pub mod window;

pub use batch::{DeviceBatch, HostBatch};
pub use config::{Arch, ModelConfig};
pub use ferrotron_zero::{ParamStore, ResidentStore};
pub use layout::{ParamLayout, Role, TensorSpec, UnitKind, UnitSpec};
pub use slicing::{Run, TensorSlice};
pub use stages::{Holding, StageSplit};
pub use tensor_parallel::TpShape;
pub use transformer::{Forward, Transformer};
