//! Errors a backend can return. CPU ops cannot fail; CUDA ones can (driver, NVRTC, cuBLASLt).

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("CUDA: {0}")]
    Cuda(String),
    #[error("{0}")]
    Unsupported(String),
}

pub type Result<T> = std::result::Result<T, Error>;
