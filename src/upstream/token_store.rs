//! Where a profile's refresh token lives ([`TokenStore`]). Today a file
//! ([`TokenFile`]: re-read on every refresh, rotated tokens written
//! atomically, 0600); the OS keychain can slot in behind the same three calls
//! later (roadmap: login lifecycle). [`RotatingToken`] holds the rotation
//! rule both logins (OIDC, user pool) share.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::fsutil;
use crate::secret::{ExposeSecret, SecretString, secret};

use super::UpstreamError;

/// Where a login's refresh token is kept.
pub trait TokenStore: Send + Sync + std::fmt::Debug {
    /// The current token (a missing or empty one is `LoginRequired`).
    fn read(&self) -> Result<SecretString, UpstreamError>;
    /// Persist a rotated token durably before it is relied on.
    fn save(&self, token: &SecretString) -> Result<(), UpstreamError>;
    /// A login-required error that says what to do.
    fn login_required(&self, code: &str, what: &str) -> UpstreamError;
}

/// A login's refresh token with the rotation rule: when the IdP rotates the
/// token, the new one is the **only** valid copy (the old one is dead, and
/// with reuse detection presenting it revokes the grant). It is saved at
/// once; if the save fails it is kept in memory, used for the next refresh,
/// and saved again before it, so it is never dropped.
#[derive(Debug)]
pub struct RotatingToken {
    store: Arc<dyn TokenStore>,
    /// A rotated token the store could not take yet.
    pending: Option<SecretString>,
}

impl RotatingToken {
    /// The token kept in `store`.
    pub fn new(store: Arc<dyn TokenStore>) -> Self {
        RotatingToken {
            store,
            pending: None,
        }
    }

    /// The store (for its `login_required` errors).
    pub fn store(&self) -> &dyn TokenStore {
        self.store.as_ref()
    }

    /// The token to present: an unsaved rotated one first (saved now if the
    /// store takes it), else the store's.
    pub fn current(&mut self) -> Result<SecretString, UpstreamError> {
        if let Some(p) = self.pending.take() {
            match self.store.save(&p) {
                Ok(()) => tracing::info!(
                    "saved the rotated refresh token that an earlier save could not store"
                ),
                Err(e) => {
                    tracing::error!(error = %e, "still cannot save the rotated refresh token; presenting the copy in memory");
                    self.pending = Some(p.clone());
                }
            }
            return Ok(p);
        }
        self.store.read()
    }

    /// Drop an unsaved rotated token (the store was replaced by a sign-in).
    pub fn forget_pending(&mut self) {
        self.pending = None;
    }

    /// The IdP answered `presented` with `issued` (maybe the same, maybe
    /// absent): persist a rotation, keeping it in memory if that fails.
    pub fn rotated(&mut self, presented: &SecretString, issued: Option<&str>) {
        let Some(new) = issued.filter(|n| !n.is_empty() && *n != presented.expose_secret()) else {
            return;
        };
        let new = secret(new);
        match self.store.save(&new) {
            Ok(()) => {
                self.pending = None;
                tracing::debug!("saved the rotated refresh token");
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot save the rotated refresh token; keeping it in memory and saving it again before the next refresh");
                self.pending = Some(new);
            }
        }
    }
}

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
}

impl TokenStore for TokenFile {
    fn login_required(&self, code: &str, what: &str) -> UpstreamError {
        UpstreamError::LoginRequired {
            service: self.service,
            code: code.into(),
            message: format!(
                "{what}; login required: run `credbroker login`, or write a new refresh token to {} (the daemon picks it up automatically, or send SIGHUP)",
                self.path.display()
            ),
        }
    }

    /// Reads the current token, first finishing a rotation that a killed
    /// process left half-done (see [`fsutil::recover_interrupted_write`]).
    fn read(&self) -> Result<SecretString, UpstreamError> {
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

    /// Persists a rotated token atomically (0600).
    fn save(&self, token: &SecretString) -> Result<(), UpstreamError> {
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
