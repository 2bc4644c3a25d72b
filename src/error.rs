//! User-facing errors. A `UserError` is one clear sentence naming the file, key or tensor; the
//! CLI prints it and exits 2. Anything else (a bug, a device failure) exits 1.

use std::fmt;

#[derive(Debug)]
pub enum Error {
    /// Bad input from the user: recipe, config.json, checkpoint, dataset row, CLI. Exit code 2.
    User(String),
    /// A failure that is not the user's input (device, I/O on our own files). Exit code 1.
    Internal(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::User(_) => 2,
            Error::Internal(_) => 1,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::User(m) | Error::Internal(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

impl From<ferrotron_kernels::Error> for Error {
    fn from(e: ferrotron_kernels::Error) -> Self {
        Error::Internal(e.to_string())
    }
}

/// `user!("...")` builds an `Error::User` with format arguments.
#[macro_export]
macro_rules! user {
    ($($t:tt)*) => { $crate::error::Error::User(format!($($t)*)) };
}

/// Prints `error: {message}` to stderr as one write, so that under mpirun, where several ranks
/// share the terminal, two ranks' lines never interleave; a closed stderr never panics.
pub fn print_error_line(message: impl fmt::Display) {
    crate::errln!("error: {message}");
}
