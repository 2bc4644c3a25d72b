//! Tensors on disk: the one safetensors reader (`files`), the streaming writer (`stream`), the
//! map from logical tensors to the stored pieces of any layout (`fragments`), and the model's
//! units as a state source over those pieces (`source`).

pub mod files;
pub mod fragments;
pub mod source;
pub mod stream;

pub use files::SafetensorsFiles;
pub use fragments::Fragments;
pub use source::LayoutSource;
pub use stream::{Entry, StoreDtype, StreamWriter};
