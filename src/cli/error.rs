//! The CLI's error: what went wrong, and the exit code that says so.

use crate::config::ConfigError;
use crate::error::StartupError;

/// Why a command failed. Each variant is one exit code; the message is one
/// line that says what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The daemon could not start (`serve`): its own exit code.
    #[error(transparent)]
    Startup(#[from] StartupError),
    /// The config file is invalid: exit 64.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Bad usage (unknown profile, unsafe runtime directory, …): exit 64.
    #[error("{0}")]
    Usage(String),
    /// The daemon is not reachable: exit 69.
    #[error("{0}")]
    Unavailable(String),
    /// The daemon runs, but a profile serves no valid credentials
    /// (`login_required`, `expired`, `starting`): exit 3.
    #[error("{0}")]
    NotServing(String),
    /// `exec` could not start its command: 127 (not found) or 126, as shells do.
    #[error("{message}")]
    Spawn {
        /// Exit code.
        code: u8,
        /// What happened.
        message: String,
    },
    /// Anything else: exit 1.
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Startup(e) => e.exit_code(),
            Error::Config(_) | Error::Usage(_) => crate::EXIT_USAGE,
            Error::Unavailable(_) => crate::EXIT_UNAVAILABLE,
            Error::NotServing(_) => crate::EXIT_NOT_SERVING,
            Error::Spawn { code, .. } => *code,
            Error::Other(_) => 1,
        }
    }
}
