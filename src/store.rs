//! Per-profile shared state: one writer (that profile's refresher), many
//! readers (the HTTP handlers), through a `tokio::sync::watch` channel. A
//! reader borrows the latest [`Snapshot`] for the few microseconds it needs,
//! never waits for upstream, and never sees a half-written update.
//!
//! The [`Registry`] maps profile names to their readers and is looked up per
//! request, so profiles can later be added or removed at run time (hot reload)
//! without restarting the listener.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use tokio::sync::watch;

use crate::creds::Served;

/// What a profile's refresher is doing, as far as it knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// No credentials yet; the first fetch is under way or being retried.
    Starting,
    /// Serving fresh credentials; the next refresh is scheduled.
    Ready,
    /// The last refresh failed with a retryable error; last good credentials
    /// are served until they expire, and a retry is scheduled with backoff.
    Retrying,
    /// The IdP rejected the refresh token: nothing more is tried until the
    /// refresh-token file changes or SIGHUP arrives.
    LoginRequired,
    /// `credbroker logout` signed the profile out: no credentials, nothing
    /// refreshed, until the next `credbroker login`.
    LoggedOut,
}

impl State {
    /// Wire name used in status output.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Ready => "ready",
            State::Retrying => "retrying",
            State::LoginRequired => "login_required",
            State::LoggedOut => "logged_out",
        }
    }
}

/// The last error, without secrets (kind + message built from codes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorInfo {
    /// Stable machine-readable kind (e.g. `invalid_grant`, `transport`).
    pub kind: String,
    /// Human-readable, secret-free description.
    pub message: String,
    /// When it happened.
    pub at: SystemTime,
}

/// Everything readers know about one profile.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The credentials being served, if any (they may have expired: readers
    /// check [`Served::usable_at`] on every request).
    pub served: Option<Arc<Served>>,
    /// Refresher state.
    pub state: State,
    /// Last error, cleared on success.
    pub last_error: Option<ErrorInfo>,
    /// When the next upstream attempt is due.
    pub next_refresh: Option<SystemTime>,
    /// When credentials were last obtained.
    pub last_refresh: Option<SystemTime>,
    /// Successful upstream exchanges since start.
    pub refreshes: u64,
    /// Consecutive failures.
    pub failures: u32,
}

impl Snapshot {
    /// The state as status output names it: `login_required`, `expired`
    /// (credentials held but no longer usable with `margin` left), else the
    /// refresher's own state.
    pub fn shown_state(&self, now: SystemTime, margin: std::time::Duration) -> &'static str {
        let valid = self
            .served
            .as_ref()
            .is_some_and(|c| c.usable_at(now, margin));
        match self.state {
            State::LoginRequired => "login_required",
            State::LoggedOut => "logged_out",
            _ if self.served.is_some() && !valid => "expired",
            other => other.as_str(),
        }
    }
}

impl Default for Snapshot {
    fn default() -> Self {
        Snapshot {
            served: None,
            state: State::Starting,
            last_error: None,
            next_refresh: None,
            last_refresh: None,
            refreshes: 0,
            failures: 0,
        }
    }
}

/// The writing half (owned by the refresher).
#[derive(Debug)]
pub struct ProfileStore {
    tx: watch::Sender<Snapshot>,
}

/// The reading half (cloned into the server).
pub type ProfileReader = watch::Receiver<Snapshot>;

impl ProfileStore {
    /// A new store and its reader.
    pub fn new() -> (Self, ProfileReader) {
        let (tx, rx) = watch::channel(Snapshot::default());
        (ProfileStore { tx }, rx)
    }

    /// Apply an update to the snapshot.
    pub fn update(&self, f: impl FnOnce(&mut Snapshot)) {
        self.tx.send_modify(f);
    }

    /// A copy of the current snapshot.
    pub fn current(&self) -> Snapshot {
        self.tx.borrow().clone()
    }
}

/// Static facts about a profile that the server needs.
#[derive(Debug, Clone)]
pub struct ProfileInfo {
    /// IMDS role name.
    pub role_name: String,
    /// Region (`placement/region`).
    pub region: String,
    /// `login.kind`.
    pub login_kind: &'static str,
    /// `aws.flow`.
    pub flow: &'static str,
    /// Refresh-token file shown in status (a path, not a secret).
    pub refresh_token_file: Option<String>,
    /// This profile's own `allowed_uids` (narrowing the listener's).
    pub access: Option<crate::peer::Access>,
}

/// A profile as the server sees it.
#[derive(Debug, Clone)]
pub struct ProfileEntry {
    /// Static facts.
    pub info: Arc<ProfileInfo>,
    /// Live state.
    pub reader: ProfileReader,
}

/// Name → profile, looked up per request. Writer: the app's supervisor
/// (profiles added, replaced and removed by reloads); readers: handlers, and
/// the app's status reporter, which also follows [`Registry::changes`].
#[derive(Debug, Clone)]
pub struct Registry {
    inner: Arc<RwLock<BTreeMap<String, ProfileEntry>>>,
    /// Bumped on every insert and removal.
    version: Arc<watch::Sender<u64>>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            inner: Arc::default(),
            version: Arc::new(watch::channel(0).0),
        }
    }
}

impl Registry {
    /// Add or replace a profile.
    pub fn insert(&self, name: String, entry: ProfileEntry) {
        if let Ok(mut m) = self.inner.write() {
            m.insert(name, entry);
        }
        self.version.send_modify(|v| *v += 1);
    }

    /// Remove a profile (its ECS path then answers 404).
    pub fn remove(&self, name: &str) {
        if let Ok(mut m) = self.inner.write() {
            m.remove(name);
        }
        self.version.send_modify(|v| *v += 1);
    }

    /// Look a profile up.
    pub fn get(&self, name: &str) -> Option<ProfileEntry> {
        self.inner.read().ok().and_then(|m| m.get(name).cloned())
    }

    /// All profiles, by name.
    pub fn all(&self) -> Vec<(String, ProfileEntry)> {
        self.inner
            .read()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }

    /// Changes when a profile is added, replaced or removed.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }
}
