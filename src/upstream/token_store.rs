//! Where a profile's refresh token lives ([`TokenStore`], chosen by
//! `login.token_store`, see [`open`]): a file ([`TokenFile`]: re-read on
//! every refresh, rotated tokens written atomically, 0600) or the OS keychain
//! ([`Keychain`]: read once, then on a sign-in, never per refresh).
//! [`RotatingToken`] holds the rotation rule both logins (OIDC, user pool)
//! share. Change detection belongs to the store: a file is re-read (and
//! watched by the app), a keychain entry is re-read when a sign-in tells the
//! daemon ([`TokenStore::changed`]).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::config::StoreKind;
use crate::fsutil;
use crate::secret::{ExposeSecret, SecretString, secret};

use super::UpstreamError;

/// Where a login's refresh token is kept.
pub trait TokenStore: Send + Sync + std::fmt::Debug {
    /// The current token (a missing or empty one is `LoginRequired`).
    fn read(&self) -> Result<SecretString, UpstreamError>;
    /// Persist a rotated (or newly signed-in) token durably before it is
    /// relied on.
    fn save(&self, token: &SecretString) -> Result<(), UpstreamError>;
    /// Get ready for a [`save`](TokenStore::save) that may follow an
    /// exchange, so that less work stands between the IdP's answer and a
    /// recoverable copy of a rotated token (a file store opens its temp
    /// file now). `None`: nothing to prepare.
    fn prepare(&self) -> Option<Prepared> {
        None
    }
    /// Delete the token (sign-out); `Ok(false)` when none was stored.
    fn delete(&self) -> Result<bool, UpstreamError> {
        Err(UpstreamError::Local {
            message: "this token store cannot delete".into(),
        })
    }
    /// The token may have been replaced behind our back (a sign-in): forget
    /// any copy kept in memory.
    fn changed(&self) {}
    /// The store no longer holds `presented`: a sign-in wrote another token
    /// (or a sign-out deleted it) while the exchange presenting it ran. A
    /// store that cannot tell cheaply says `false`.
    fn replaced_since(&self, _presented: &SecretString) -> bool {
        false
    }
    /// Keep a rotated token that was not written because the store was
    /// replaced meanwhile, where a person can still find it: its place, or
    /// `None` when it could not be kept.
    fn keep_superseded(&self, _token: &SecretString) -> Option<String> {
        None
    }
    /// Where the token is, for messages (never the token).
    fn describe(&self) -> String;
    /// A login-required error that says what to do.
    fn login_required(&self, code: &str, what: &str) -> UpstreamError;
}

/// A save made ready by [`TokenStore::prepare`] (dropped unused: undone).
#[derive(Debug)]
pub struct Prepared(fsutil::PreparedWrite);

/// The store `login.token_store` names for the sign-in on `file` (with the
/// keychain, `file` only names the entry) of a login talking to `service`.
pub fn open(kind: StoreKind, file: &Path, service: &'static str) -> Arc<dyn TokenStore> {
    match kind {
        StoreKind::File => Arc::new(TokenFile::new(file.to_path_buf(), service)),
        StoreKind::Keyring => Arc::new(Keychain::new(file, service)),
    }
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

    /// Drop an unsaved rotated token and any cached copy (the token was
    /// replaced by a sign-in, or deleted by a sign-out).
    pub fn forget_pending(&mut self) {
        self.pending = None;
        self.store.changed();
    }

    /// The IdP refused the token: a store that keeps a copy in memory reads
    /// it again next time (SIGHUP after fixing the keychain entry works).
    pub fn rejected(&mut self) {
        self.store.changed();
    }

    /// Call right before sending the exchange that presents the token, and
    /// hand the result to [`rotated`](Self::rotated): a rotation in the
    /// answer is then saved with the least work first. Dropped (any early
    /// return), it is undone.
    pub fn prepare(&self) -> Option<Prepared> {
        if self.pending.is_some() {
            return None; // the store is failing: save() reports why
        }
        self.store.prepare()
    }

    /// The IdP answered `presented` with `issued` (maybe the same, maybe
    /// absent): persist a rotation, keeping it in memory if that fails.
    pub fn rotated(
        &mut self,
        presented: &SecretString,
        issued: Option<&str>,
        prepared: Option<Prepared>,
    ) {
        let Some(new) = issued.filter(|n| !n.is_empty() && *n != presented.expose_secret()) else {
            return;
        };
        // A `credbroker login` (or logout) that stored its token while this
        // exchange ran wins: writing this rotation over it would put the old
        // session back. (Not when the presented token was a pending one the
        // store had refused: then the store holds an older, dead token.)
        // The rotated token is still the old session's only valid one (the
        // replacement might have been a stale copy): it is kept beside the
        // store, not dropped.
        if self.pending.is_none() && self.store.replaced_since(presented) {
            let kept = self.store.keep_superseded(&secret(new.to_owned()));
            tracing::warn!(
                store = %self.store.describe(),
                kept_in = kept.as_deref().unwrap_or("nowhere: it could not be written"),
                "the refresh token was replaced or deleted while this refresh ran (a sign-in or sign-out); using that, not this refresh's rotated token"
            );
            return;
        }
        // The prepared temp file first: one write makes the token
        // recoverable; anything else falls back to a plain save.
        if let Some(Prepared(w)) = prepared {
            match w.commit(new.as_bytes()) {
                Ok(()) => {
                    self.pending = None;
                    tracing::debug!("saved the rotated refresh token");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the prepared refresh-token write failed; saving again")
                }
            }
        }
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
    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn delete(&self) -> Result<bool, UpstreamError> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(UpstreamError::Local {
                message: format!("cannot delete {}: {e}", self.path.display()),
            }),
        }
    }

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

    /// `<file>.superseded`, 0600, atomically.
    fn keep_superseded(&self, token: &SecretString) -> Option<String> {
        let mut name = self.path.clone().into_os_string();
        name.push(".superseded");
        let path = PathBuf::from(name);
        fsutil::write_atomic_private(&path, token.expose_secret().as_bytes())
            .ok()
            .map(|()| path.display().to_string())
    }

    /// One small read per rotation (never per request): the file holds
    /// another token, or none.
    fn replaced_since(&self, presented: &SecretString) -> bool {
        match fsutil::read_secret_file(&self.path) {
            Ok(s) => s != presented.expose_secret(),
            Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        }
    }

    /// Opens the temp file of the next atomic write (a failure here only
    /// means the save will open it itself).
    fn prepare(&self) -> Option<Prepared> {
        fsutil::PreparedWrite::new(&self.path).ok().map(Prepared)
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

/// The keychain entries' service name; the account is the sign-in's
/// `refresh_token_file` path (which names the sign-in: profiles on one path
/// share it).
pub const KEYCHAIN_SERVICE: &str = "credbroker";

/// A refresh token in the OS keychain (`login.token_store = "keyring"`):
/// the Secret Service on Linux (any desktop's keyring, over D-Bus), the
/// Keychain on macOS, the Credential Manager on Windows. The entry is read
/// once and kept in memory (no keychain prompt per refresh); a rotation is
/// written to the keychain before the new id_token is used, exactly like
/// the file; a sign-in's notice ([`TokenStore::changed`]) makes the next
/// refresh read it again.
#[derive(Debug)]
pub struct Keychain {
    account: String,
    service: &'static str,
    cache: Mutex<Option<SecretString>>,
}

impl Keychain {
    /// The entry for the sign-in on `file`, of a login talking to `service`.
    pub fn new(file: &Path, service: &'static str) -> Self {
        Keychain {
            // Normalised as the sign-in's identity is (`/s/./rt` is `/s/rt`).
            account: crate::config::token_file_key(file).display().to_string(),
            service,
            cache: Mutex::new(None),
        }
    }

    fn cached(&self) -> std::sync::MutexGuard<'_, Option<SecretString>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn failed(&self, what: &str, e: &keychain::Failure) -> UpstreamError {
        UpstreamError::Local {
            message: format!(
                "cannot {what} the refresh token in the OS keychain (service {KEYCHAIN_SERVICE:?}, account {:?}): {e}; start or unlock the keychain (Linux: a Secret Service such as gnome-keyring or KeePassXC on the session D-Bus), or set login.token_store = \"file\" to keep it in a 0600 file",
                self.account
            ),
        }
    }
}

impl TokenStore for Keychain {
    fn read(&self) -> Result<SecretString, UpstreamError> {
        if let Some(t) = self.cached().as_ref() {
            return Ok(t.clone());
        }
        match keychain::get(&self.account) {
            Ok(t) if !t.expose_secret().is_empty() => {
                *self.cached() = Some(t.clone());
                Ok(t)
            }
            Ok(_) | Err(keychain::Failure::NoEntry) => {
                let what = if Path::new(&self.account).is_file() {
                    // Switched from token_store = "file": say where the token is.
                    format!(
                        "no refresh token in the OS keychain, but {} holds one (was login.token_store \"file\"? sign in again to move to the keychain, or set it back)",
                        self.account
                    )
                } else {
                    "no refresh token in the OS keychain".to_owned()
                };
                Err(self.login_required("no_refresh_token", &what))
            }
            Err(e) => Err(self.failed("read", &e)),
        }
    }

    fn save(&self, token: &SecretString) -> Result<(), UpstreamError> {
        keychain::set(&self.account, token).map_err(|e| self.failed("save", &e))?;
        *self.cached() = Some(token.clone());
        Ok(())
    }

    fn delete(&self) -> Result<bool, UpstreamError> {
        *self.cached() = None;
        match keychain::delete(&self.account) {
            Ok(()) => Ok(true),
            Err(keychain::Failure::NoEntry) => Ok(false),
            Err(e) => Err(self.failed("delete", &e)),
        }
    }

    fn changed(&self) {
        *self.cached() = None;
    }

    fn describe(&self) -> String {
        format!(
            "the OS keychain (service {KEYCHAIN_SERVICE:?}, account {:?})",
            self.account
        )
    }

    fn login_required(&self, code: &str, what: &str) -> UpstreamError {
        UpstreamError::LoginRequired {
            service: self.service,
            code: code.into(),
            message: format!("{what}; login required: run `credbroker login`"),
        }
    }
}

/// The keychain calls. keyring-core's API is blocking, and the Linux store
/// runs its D-Bus client on a tokio runtime of its own, which must not be
/// started from inside ours: every call runs on a short-lived plain thread
/// (calls are rare: a read per daemon lifetime and sign-in, a write per
/// rotation). Errors are reduced to a message that never holds the secret
/// (keyring-core's `BadEncoding` and `BadDataFormat` carry the stored bytes).
mod keychain {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use keyring_core::{CredentialStore, Entry, Error};

    use super::KEYCHAIN_SERVICE;
    use crate::secret::{ExposeSecret, SecretString, secret};

    /// Why a keychain call failed.
    #[derive(Debug)]
    pub enum Failure {
        /// No such entry.
        NoEntry,
        /// Anything else, described without the secret.
        Other(String),
    }

    impl std::fmt::Display for Failure {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            match self {
                Failure::NoEntry => f.write_str("no such entry"),
                Failure::Other(m) => f.write_str(m),
            }
        }
    }

    fn describe(e: Error) -> Failure {
        match e {
            Error::NoEntry => Failure::NoEntry,
            Error::NoStorageAccess(p) => {
                Failure::Other(format!("the keychain is locked or refused access ({p})"))
            }
            Error::PlatformFailure(p) => Failure::Other(format!("no keychain reachable ({p})")),
            Error::BadEncoding(_) | Error::BadDataFormat(..) => {
                Failure::Other("the stored entry is not a refresh token".into())
            }
            Error::Ambiguous(v) => Failure::Other(format!("{} entries match", v.len())),
            Error::NotSupportedByStore(m) | Error::BadStoreFormat(m) => Failure::Other(m),
            Error::TooLong(what, max) => Failure::Other(format!("{what} is over {max} bytes")),
            Error::Invalid(what, why) => Failure::Other(format!("invalid {what}: {why}")),
            _ => Failure::Other("keychain error".into()),
        }
    }

    /// How long a keychain call may take: a locked keychain can wait for an
    /// unlock prompt nobody answers. The call is then reported as failed
    /// (a save is kept in memory and tried again) and its thread left to end.
    pub const KEYCHAIN_WAIT: Duration = Duration::from_secs(10);

    static STORE: Mutex<Option<Arc<CredentialStore>>> = Mutex::new(None);

    /// The platform's store, connected on first use, and again after a call
    /// found it unreachable or locked (the keychain daemon may have been
    /// restarted, or the session bus).
    fn store() -> Result<Arc<CredentialStore>, Failure> {
        let mut s = STORE.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = s.as_ref() {
            return Ok(s.clone());
        }
        let made = platform().map_err(describe)?;
        *s = Some(made.clone());
        Ok(made)
    }

    /// [`describe`], dropping the connection when the store itself failed.
    fn failed(e: Error) -> Failure {
        if matches!(e, Error::PlatformFailure(_) | Error::NoStorageAccess(_)) {
            *STORE.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
        describe(e)
    }

    #[cfg(target_os = "linux")]
    fn platform() -> keyring_core::Result<Arc<CredentialStore>> {
        Ok(zbus_secret_service_keyring_store::Store::new()?)
    }
    #[cfg(target_os = "macos")]
    fn platform() -> keyring_core::Result<Arc<CredentialStore>> {
        Ok(apple_native_keyring_store::keychain::Store::new()?)
    }
    #[cfg(target_os = "windows")]
    fn platform() -> keyring_core::Result<Arc<CredentialStore>> {
        Ok(windows_native_keyring_store::Store::new()?)
    }
    #[cfg(not(any(target_os = "linux", target_os = "macos", target_os = "windows")))]
    fn platform() -> keyring_core::Result<Arc<CredentialStore>> {
        Err(Error::NotSupportedByStore(
            "no OS keychain on this platform".into(),
        ))
    }

    /// Run `f` on the entry, on a thread of its own (see the module docs),
    /// waiting at most [`KEYCHAIN_WAIT`]; inside a multi-threaded runtime
    /// the wait hands this worker's other tasks to the rest
    /// (`block_in_place`), so serving is not held up.
    fn with_entry<T: Send + 'static>(
        account: &str,
        f: impl FnOnce(&Entry) -> keyring_core::Result<T> + Send + 'static,
    ) -> Result<T, Failure> {
        let account = account.to_owned();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("keychain".into())
            .spawn(move || {
                let r = store().and_then(|store| {
                    let entry = store
                        .build(KEYCHAIN_SERVICE, &account, None)
                        .map_err(failed)?;
                    f(&entry).map_err(failed)
                });
                let _ = tx.send(r);
            })
            .map_err(|e| Failure::Other(format!("cannot start the keychain thread: {e}")))?;
        let wait = || {
            rx.recv_timeout(KEYCHAIN_WAIT).unwrap_or_else(|_| {
                Err(Failure::Other(format!(
                    "the keychain did not answer within {} s (locked, or waiting for an unlock prompt?)",
                    KEYCHAIN_WAIT.as_secs()
                )))
            })
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(wait)
            }
            _ => wait(),
        }
    }

    pub fn get(account: &str) -> Result<SecretString, Failure> {
        with_entry(account, |e| e.get_password()).map(secret)
    }

    pub fn set(account: &str, token: &SecretString) -> Result<(), Failure> {
        let token = token.clone();
        with_entry(account, move |e| e.set_password(token.expose_secret()))
    }

    pub fn delete(account: &str) -> Result<(), Failure> {
        with_entry(account, |e| e.delete_credential())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn file_token(dir: &Path, token: &str) -> (PathBuf, RotatingToken) {
        let path = dir.join("refresh-token");
        fsutil::write_atomic_private(&path, token.as_bytes()).unwrap();
        let store = open(StoreKind::File, &path, "oidc");
        (path, RotatingToken::new(store))
    }

    /// A rotation is written; but a sign-in (or sign-out) that stored its
    /// token while the exchange ran is not overwritten by the old session.
    #[test]
    fn a_rotation_never_overwrites_a_sign_in_made_during_the_exchange() {
        let dir = tempfile::tempdir().unwrap();
        let (path, mut rt) = file_token(dir.path(), "rt-A");
        let presented = rt.current().unwrap();
        let prepared = rt.prepare();
        rt.rotated(&presented, Some("rt-A2"), prepared);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "rt-A2");

        let presented = rt.current().unwrap();
        let prepared = rt.prepare();
        fsutil::write_atomic_private(&path, b"rt-B").unwrap(); // credbroker login
        rt.rotated(&presented, Some("rt-A3"), prepared);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "rt-B");
        let kept = dir.path().join("refresh-token.superseded");
        assert_eq!(
            std::fs::read_to_string(&kept).unwrap(),
            "rt-A3",
            "the old session's live token is kept, not lost"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&kept).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        let presented = rt.current().unwrap();
        let prepared = rt.prepare();
        std::fs::remove_file(&path).unwrap(); // credbroker logout
        rt.rotated(&presented, Some("rt-B2"), prepared);
        assert!(!path.exists(), "a sign-out stays signed out");
    }
}
