//! Start-up errors: the only errors `main` sees, each with its exit code.

use std::net::SocketAddr;

use crate::config::ConfigError;

/// Why the daemon or a client command could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// Bad configuration: exit 64.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// Bad command-line usage: exit 64.
    #[error("{0}")]
    Usage(String),
    /// The listener could not be bound: exit 69.
    #[error(
        "cannot listen on {addr}: {source} (is another credbroker running? change server.listen)"
    )]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// OS error.
        source: std::io::Error,
    },
    /// The daemon a client command needs is not reachable: exit 69.
    #[error("{0}")]
    Unavailable(String),
    /// `status`: the daemon runs, but these profiles (name, state) serve no
    /// valid credentials (`login_required`, `expired`, `starting`): exit 3.
    #[error("not serving: {}", .0.iter().map(|(n, s)| format!("{n} ({s})")).collect::<Vec<_>>().join(", "))]
    NotServing(Vec<(String, String)>),
    /// Anything else: exit 1.
    #[error("{0}")]
    Other(String),
}

impl StartupError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            StartupError::Config(_) | StartupError::Usage(_) => crate::EXIT_USAGE,
            StartupError::Bind { .. } | StartupError::Unavailable(_) => crate::EXIT_UNAVAILABLE,
            StartupError::NotServing(_) => crate::EXIT_NOT_SERVING,
            StartupError::Other(_) => 1,
        }
    }
}
