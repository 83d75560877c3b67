//! Where a profile's refresh token lives. Today a file (re-read on every
//! refresh, rotated tokens written atomically, 0600); the OS keychain can
//! slot in behind the same three calls later (roadmap: login lifecycle).

use std::path::{Path, PathBuf};

use crate::fsutil;
use crate::secret::{ExposeSecret, SecretString, secret};

use super::UpstreamError;

/// A refresh-token file.
#[derive(Debug, Clone)]
pub struct TokenFile {
    path: PathBuf,
    service: &'static str,
}

impl TokenFile {
    /// The token file of a login talking to `service`.
    pub fn new(path: PathBuf, service: &'static str) -> Self {
        TokenFile { path, service }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A login-required error that says what to do.
    pub fn login_required(&self, code: &str, what: &str) -> UpstreamError {
        UpstreamError::LoginRequired {
            service: self.service,
            code: code.into(),
            message: format!(
                "{what}; login required: write a new refresh token to {} (the daemon picks it up automatically, or send SIGHUP)",
                self.path.display()
            ),
        }
    }

    /// Read the current token, first finishing a rotation that a killed
    /// process left half-done (see [`fsutil::recover_interrupted_write`]).
    pub fn read(&self) -> Result<SecretString, UpstreamError> {
        match fsutil::recover_interrupted_write(&self.path) {
            Ok(true) => tracing::warn!(
                path = %self.path.display(),
                "recovered a rotated refresh token from an interrupted write"
            ),
            Ok(false) => {}
            Err(e) => tracing::warn!(
                path = %self.path.display(),
                error = %e,
                "cannot check for an interrupted refresh-token write"
            ),
        }
        match fsutil::read_secret_file(&self.path) {
            Ok(s) if !s.is_empty() => Ok(secret(s)),
            Ok(_) => {
                Err(self.login_required("no_refresh_token", "the refresh-token file is empty"))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(self.login_required("no_refresh_token", "no refresh-token file"))
            }
            Err(e) => Err(UpstreamError::Local {
                message: format!("cannot read {}: {e}", self.path.display()),
            }),
        }
    }

    /// Persist a rotated token atomically (0600).
    pub fn save(&self, token: &SecretString) -> Result<(), UpstreamError> {
        fsutil::write_atomic_private(&self.path, token.expose_secret().as_bytes()).map_err(|e| {
            UpstreamError::Local {
                message: format!(
                    "cannot save the rotated refresh token to {}: {e}",
                    self.path.display()
                ),
            }
        })
    }
}

/// Read a client-secret file (re-read each time, so it can be rotated).
pub fn read_client_secret(path: Option<&Path>) -> Result<Option<SecretString>, UpstreamError> {
    path.map(|p| {
        fsutil::read_secret_file(p)
            .map(secret)
            .map_err(|e| UpstreamError::Local {
                message: format!("cannot read login.client_secret_file {}: {e}", p.display()),
            })
    })
    .transpose()
}
