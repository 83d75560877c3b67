//! The refresher: one task per profile, the **only writer** of that profile's
//! [`ProfileStore`].
//!
//! ```text
//! fetch ──ok──► publish ──► sleep until refresh_at(expiry) ──► fetch …
//!   │
//!   ├─retryable──► keep last good creds, sleep backoff(n) ──► fetch …
//!   └─login required──► state login_required, wait for the refresh-token
//!                       file to change or SIGHUP ──► fetch …
//! ```
//!
//! Schedule: next refresh at `expiry − min(refresh_before, lifetime/2)`, minus
//! a little jitter, never sooner than [`MIN_INTERVAL`] after the fetch — or,
//! for credentials living less than twice that, half their lifetime (serving
//! them until expiry without a refresh would be worse). Sleeping happens in
//! chunks of at most [`MAX_SLEEP`] against the **wall clock**, so a laptop that
//! was suspended (monotonic timers stop) or whose clock jumped re-checks its
//! deadline on resume instead of oversleeping past expiry.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::clock::SharedClock;
use crate::creds::{Served, rfc3339};
use crate::fsutil;
use crate::metrics::RefreshCounters;
use crate::store::{ErrorInfo, ProfileStore, State};
use crate::upstream::CredentialSource;

/// Never refresh sooner than this after a fetch, unless the credentials live
/// less than twice as long (then: half their lifetime).
pub const MIN_INTERVAL: Duration = Duration::from_secs(5);
/// Longest single sleep before re-checking the wall clock.
pub const MAX_SLEEP: Duration = Duration::from_secs(30);

/// How often a wait that a new refresh token may end (login required, or a
/// backoff) looks at the token file itself, besides the watcher's events: one
/// `stat` a second, only while the profile is failing.
pub const CHANGE_POLL: Duration = Duration::from_secs(1);
/// First retry delay after a failure.
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Retry delay cap.
pub const BACKOFF_CAP: Duration = Duration::from_secs(300);

/// Why a refresher is woken early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The refresh-token file (or its directory) changed.
    TokenFileChanged,
    /// SIGHUP: retry now.
    Hangup,
}

/// When to refresh credentials obtained at `now` that expire at `expiry`.
/// `jitter` in `[0, 1)` moves the time earlier by up to a tenth of the lead
/// (at most a minute), so many brokers do not refresh in lockstep.
pub fn refresh_at(
    now: SystemTime,
    expiry: SystemTime,
    refresh_before: Duration,
    jitter: f64,
) -> SystemTime {
    let lifetime = expiry.duration_since(now).unwrap_or(Duration::ZERO);
    let lead = refresh_before.min(lifetime / 2);
    let spread = (lead / 10).min(Duration::from_secs(60));
    let at = expiry - lead - spread.mul_f64(unit(jitter));
    at.max(now + MIN_INTERVAL.min(lifetime / 2))
}

/// Delay before retry number `failures` (1-based): exponential from
/// [`BACKOFF_BASE`], capped at [`BACKOFF_CAP`], with "equal jitter" (half
/// fixed, half random) so retries spread out but never collapse to zero.
pub fn backoff(failures: u32, jitter: f64) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    let d = BACKOFF_BASE.saturating_mul(1u32 << exp).min(BACKOFF_CAP);
    d / 2 + (d / 2).mul_f64(unit(jitter))
}

/// `x` clamped to `[0, 1]` (NaN → 0), safe for `Duration::mul_f64`.
fn unit(x: f64) -> f64 {
    if x.is_nan() { 0.0 } else { x.clamp(0.0, 1.0) }
}

/// A random number in `[0, 1)`.
pub fn random_unit() -> f64 {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

/// Per-profile settings of the loop.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Profile name (for logs).
    pub profile: String,
    /// Lead time before expiry.
    pub refresh_before: Duration,
    /// The refresh-token file (watched while login is required).
    pub refresh_token_file: Option<PathBuf>,
    /// This profile's refresh counters (`credbroker_refreshes_total`).
    pub metrics: RefreshCounters,
}

enum Waited {
    Deadline,
    Woken,
    Cancelled,
}

/// Which wakes may cut a wait short.
#[derive(Debug, Clone, Copy)]
enum Accept<'a> {
    /// None (credentials are fresh; the schedule stands).
    Nothing,
    /// SIGHUP, or a refresh-token file that really differs from what it was
    /// when the wait began. Our own rotation write also fires the watcher, so
    /// an event alone proves nothing: without this check every rotation would
    /// end the backoff at once (a retry storm).
    Change {
        file: Option<&'a Path>,
        seen: Option<(u64, u64, i64, i64)>,
    },
}

impl Accept<'_> {
    /// Whether the wait also checks the file itself every [`CHANGE_POLL`]:
    /// a watch can miss a change (an event dropped while the channel was
    /// full, a file system without inotify, a write that finished while the
    /// attempt read the half-written file), and a user who wrote a new token
    /// must not wait for the next scheduled attempt.
    fn polls(&self) -> bool {
        matches!(self, Accept::Change { file: Some(_), .. })
    }

    fn accepts(&self, w: Wake) -> bool {
        match (self, w) {
            (Accept::Nothing, _) => false,
            (Accept::Change { .. }, Wake::Hangup) => true,
            (Accept::Change { file, seen }, Wake::TokenFileChanged) => {
                let now = file.and_then(fsutil::fingerprint);
                now.is_some() && now != *seen
            }
        }
    }
}

/// Sleep until `deadline` (wall clock; `None` = until woken), in bounded
/// chunks so suspend/resume and clock jumps are noticed.
async fn wait_until(
    clock: &SharedClock,
    deadline: Option<SystemTime>,
    wake: &mut mpsc::Receiver<Wake>,
    accept: Accept<'_>,
    cancel: &CancellationToken,
) -> Waited {
    let mut wake_open = true;
    loop {
        let left = match deadline {
            Some(d) => match d.duration_since(clock.now()) {
                Ok(left) if !left.is_zero() => left.min(MAX_SLEEP),
                _ => return Waited::Deadline,
            },
            None => MAX_SLEEP,
        };
        let left = if accept.polls() {
            left.min(CHANGE_POLL)
        } else {
            left
        };
        tokio::select! {
            () = tokio::time::sleep(left) => {
                if accept.polls() && accept.accepts(Wake::TokenFileChanged) {
                    return Waited::Woken;
                }
            }
            w = wake.recv(), if wake_open => match w {
                Some(w) if accept.accepts(w) => return Waited::Woken,
                Some(_) => {}
                None => wake_open = false,
            },
            () = cancel.cancelled() => return Waited::Cancelled,
        }
    }
}

/// Run the refresh loop until `cancel` fires.
pub async fn run<S: CredentialSource>(
    source: Arc<S>,
    store: ProfileStore,
    clock: SharedClock,
    settings: Settings,
    mut wake: mpsc::Receiver<Wake>,
    cancel: CancellationToken,
) {
    let profile = settings.profile.as_str();
    let token_file = settings.refresh_token_file.as_deref();
    let mut failures: u32 = 0;
    loop {
        // The token file as this attempt found it. A login-required wait
        // compares against this, not against the file after the failure: a
        // user's non-atomic write (truncate, then write) can finish while the
        // attempt reads the half-written file, and must still count as a
        // change. (A failed attempt writes no token, except an unsaved
        // rotation being saved: that costs one more attempt, not a storm.)
        let before = token_file.and_then(fsutil::fingerprint);
        let result = tokio::select! {
            r = source.fetch() => r,
            () = cancel.cancelled() => return,
        };
        let now = clock.now();
        let (deadline, accept) = match result {
            Ok(creds) => {
                failures = 0;
                settings.metrics.success.inc();
                let next = published(&store, &settings, &creds, now);
                // A guest (no sign-in yet) takes a new refresh token at once,
                // however it arrives (`credbroker login`, or a file written).
                let accept = if creds.guest {
                    change_of(token_file)
                } else {
                    Accept::Nothing
                };
                (Some(next), accept)
            }
            Err(e) if e.is_login_required() => {
                failures += 1;
                settings.metrics.login_required.inc();
                tracing::error!(profile, outcome = "login_required", error_kind = %e.kind(), error = %e, "login required; not retrying until the refresh token changes or SIGHUP");
                store.update(|s| {
                    s.state = State::LoginRequired;
                    s.last_error = Some(error_info(&e, now));
                    s.next_refresh = None;
                    s.failures = failures;
                });
                (
                    None,
                    Accept::Change {
                        file: token_file,
                        seen: before,
                    },
                )
            }
            Err(e) => {
                failures += 1;
                settings.metrics.failure.inc();
                let next = failed(&store, profile, &e, now, failures);
                (Some(next), change_of(token_file))
            }
        };
        let waited = wait_until(&clock, deadline, &mut wake, accept, &cancel).await;
        match waited {
            Waited::Cancelled => return,
            Waited::Woken if deadline.is_none() => {
                tracing::info!(profile, "refresh token changed (or SIGHUP); trying again");
            }
            _ => {}
        }
    }
}

fn error_info(e: &crate::upstream::UpstreamError, at: SystemTime) -> ErrorInfo {
    ErrorInfo {
        kind: e.kind(),
        message: e.to_string(),
        at,
    }
}

/// Backoff waits end early only on SIGHUP or a real change of the
/// refresh-token file since the failure (the attempt may have written it
/// itself: a rotation saved before the exchange failed; see
/// [`Accept::Change`]).
fn change_of(file: Option<&Path>) -> Accept<'_> {
    Accept::Change {
        file,
        seen: file.and_then(fsutil::fingerprint),
    }
}

/// Publish fresh credentials; returns when to refresh them.
fn published(
    store: &ProfileStore,
    settings: &Settings,
    creds: &crate::creds::AwsCredentials,
    now: SystemTime,
) -> SystemTime {
    let served = Arc::new(Served::render(creds, now));
    let next = refresh_at(
        now,
        creds.expiration,
        settings.refresh_before,
        random_unit(),
    );
    let secs = |later: SystemTime| later.duration_since(now).map_or(0, |d| d.as_secs());
    tracing::info!(
        profile = settings.profile.as_str(),
        outcome = "success",
        key = %format_args!("…{}", served.key_suffix),
        expires = %rfc3339(creds.expiration),
        lifetime_s = secs(creds.expiration),
        next_refresh = %rfc3339(next),
        next_refresh_in_s = secs(next),
        "credentials refreshed"
    );
    store.update(|s| {
        s.served = Some(served);
        s.state = State::Ready;
        s.last_error = None;
        s.next_refresh = Some(next);
        s.last_refresh = Some(now);
        s.refreshes += 1;
        s.failures = 0;
    });
    next
}

/// Record a retryable failure (keeping the last good credentials); returns
/// when to retry.
fn failed(
    store: &ProfileStore,
    profile: &str,
    e: &crate::upstream::UpstreamError,
    now: SystemTime,
    failures: u32,
) -> SystemTime {
    let delay = backoff(failures, random_unit());
    let next = now + delay;
    let still_valid = store
        .current()
        .served
        .as_ref()
        .is_some_and(|s| s.usable_at(now, Duration::ZERO));
    let next_refresh = rfc3339(next);
    let kind = e.kind();
    if still_valid {
        tracing::warn!(profile, outcome = "failure", error_kind = %kind, error = %e, retry_in = ?delay, %next_refresh, "refresh failed; serving the last good credentials until they expire");
    } else {
        tracing::error!(profile, outcome = "failure", error_kind = %kind, error = %e, retry_in = ?delay, %next_refresh, "refresh failed and no valid credentials remain");
    }
    store.update(|s| {
        s.state = if s.served.is_some() {
            State::Retrying
        } else {
            State::Starting
        };
        s.last_error = Some(error_info(e, now));
        s.next_refresh = Some(next);
        s.failures = failures;
    });
    next
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::TokioClock;
    use crate::creds::AwsCredentials;
    use crate::secret::secret;
    use crate::upstream::UpstreamError;
    use std::collections::VecDeque;
    use std::sync::Mutex;

    const T0: u64 = 1_800_000_000;

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(T0 + s)
    }

    #[test]
    fn schedule_uses_lead_or_half_lifetime() {
        let m30 = Duration::from_secs(1800);
        // 1 h credentials: 30 min early (jitter 0).
        assert_eq!(refresh_at(at(0), at(3600), m30, 0.0), at(1800));
        // 12 h credentials: 30 min early.
        assert_eq!(refresh_at(at(0), at(43200), m30, 0.0), at(43200 - 1800));
        // 60 s credentials: half-way.
        assert_eq!(refresh_at(at(0), at(60), m30, 0.0), at(30));
        // Jitter only ever moves it earlier, by at most a tenth of the lead / 60 s.
        let j = refresh_at(at(0), at(43200), m30, 0.999);
        assert!(j < at(43200 - 1800) && j >= at(43200 - 1800 - 60));
        // Tiny lifetimes never produce a busy loop.
        assert!(refresh_at(at(0), at(4), m30, 0.0) >= at(2));
    }

    /// The default lead against the SDKs' windows (docs/compatibility.md,
    /// "Refresh windows"; landscape.md 7.2, protocol.md 1.6, 2.3): whatever
    /// the jitter, what is left of served credentials when the daemon
    /// replaces them is beyond every SDK's mandatory window (botocore 10 min,
    /// JS and Go 5 min, Rust and Java 1 min) for lifetimes from 30 min, beyond
    /// botocore's IMDS stretch (25 min) from 1 h, and at least the Rust/Java
    /// advisory window (5 min up to 20 min lifetime, 15 min under 90 min,
    /// else 60 min) wherever half the lifetime allows it: below 30 min and
    /// from 2 h on.
    #[test]
    fn default_lead_clears_every_sdk_window() {
        let d = crate::config::DEFAULT_REFRESH_BEFORE;
        let min = |m: u64| Duration::from_secs(m * 60);
        for lifetime_min in [15, 20, 30, 45, 60, 89, 90, 119, 120, 180, 360, 720] {
            let life = min(lifetime_min);
            let advisory = if life <= min(20) {
                min(5)
            } else if life < min(90) {
                min(15)
            } else {
                min(60)
            };
            for j in [0.0, 0.5, 0.999] {
                let expiry = at(life.as_secs());
                let left = expiry
                    .duration_since(refresh_at(at(0), expiry, d, j))
                    .unwrap();
                let ctx = format!("{lifetime_min} min credentials, jitter {j}: {left:?} left");
                assert!(left >= d.min(life / 2), "{ctx}");
                if life >= min(30) {
                    assert!(left > min(10), "{ctx}: inside botocore's mandatory window");
                }
                if life >= min(60) {
                    assert!(left > min(25), "{ctx}: botocore would stretch it");
                }
                if life <= min(30) || life >= min(120) {
                    assert!(left >= advisory, "{ctx}: Rust/Java advisory {advisory:?}");
                }
            }
        }
    }

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff(1, 0.0), Duration::from_millis(500));
        assert_eq!(backoff(1, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(4, 1.0), Duration::from_secs(8));
        assert_eq!(backoff(30, 1.0), BACKOFF_CAP);
        assert!(backoff(30, 0.0) >= BACKOFF_CAP / 2);
        assert_eq!(backoff(1, f64::NAN), Duration::from_millis(500));
        assert!(refresh_at(at(0), at(3600), Duration::from_secs(1800), f64::NAN) <= at(1800));
        for n in 1..40 {
            assert!(backoff(n, random_unit()) <= BACKOFF_CAP);
        }
    }

    /// A scripted source: pops the next outcome; counts calls.
    struct Script {
        clock: TokioClock,
        outcomes: Mutex<VecDeque<Result<u64, UpstreamError>>>,
        calls: Mutex<u32>,
        /// Written (once) while the next fetch runs: someone else's write.
        write_during_fetch: Mutex<Option<PathBuf>>,
    }

    impl CredentialSource for Script {
        async fn fetch(&self) -> Result<AwsCredentials, UpstreamError> {
            *self.calls.lock().unwrap() += 1;
            if let Some(p) = self.write_during_fetch.lock().unwrap().take() {
                std::fs::write(p, "fresh-login-written-while-we-read").unwrap();
            }
            let next = self.outcomes.lock().unwrap().pop_front();
            use crate::clock::Clock;
            match next {
                Some(Ok(life)) => Ok(AwsCredentials {
                    guest: false,
                    access_key_id: format!("AKID{}", self.calls.lock().unwrap()),
                    secret_access_key: secret("s"),
                    session_token: secret("t"),
                    expiration: self.clock.now() + Duration::from_secs(life),
                    account_id: None,
                    role_arn: None,
                }),
                Some(Err(e)) => Err(e),
                None => std::future::pending().await,
            }
        }
    }

    fn transport() -> UpstreamError {
        UpstreamError::Transport {
            service: "t",
            message: "down".into(),
        }
    }

    fn invalid_grant() -> UpstreamError {
        UpstreamError::LoginRequired {
            service: "oidc",
            code: "invalid_grant".into(),
            message: "m".into(),
        }
    }

    /// A running refresher over a [`Script`], and the handles a test needs.
    /// A harness (wall clock = tokio clock) whose refresh-token file starts
    /// out holding `initial`; keep the directory alive for the test.
    fn on_token_file(
        initial: &str,
        outcomes: Vec<Result<u64, UpstreamError>>,
    ) -> (tempfile::TempDir, PathBuf, Harness) {
        let dir = tempfile::tempdir().unwrap();
        let rt = dir.path().join("rt");
        std::fs::write(&rt, initial).unwrap();
        let clock = TokioClock::new(at(0));
        let h = Harness::start(outcomes, clock.clone(), Arc::new(clock), Some(rt.clone()));
        (dir, rt, h)
    }

    struct Harness {
        src: Arc<Script>,
        reader: crate::store::ProfileReader,
        wake: mpsc::Sender<Wake>,
        cancel: CancellationToken,
        task: tokio::task::JoinHandle<()>,
    }

    impl Harness {
        /// Start with `outcomes`; credentials expire relative to `base`, the
        /// refresher reads `clock` (which may differ: wall-clock jumps).
        fn start(
            outcomes: Vec<Result<u64, UpstreamError>>,
            base: TokioClock,
            clock: SharedClock,
            refresh_token_file: Option<PathBuf>,
        ) -> Self {
            let src = Arc::new(Script {
                clock: base,
                outcomes: Mutex::new(outcomes.into()),
                calls: Mutex::new(0),
                write_during_fetch: Mutex::new(None),
            });
            let (store, reader) = ProfileStore::new();
            let (wake, rx) = mpsc::channel(4);
            let cancel = CancellationToken::new();
            let settings = Settings {
                profile: "p".into(),
                refresh_before: Duration::from_secs(1800),
                refresh_token_file,
                metrics: Default::default(),
            };
            let task = tokio::spawn(run(src.clone(), store, clock, settings, rx, cancel.clone()));
            Harness {
                src,
                reader,
                wake,
                cancel,
                task,
            }
        }

        fn simple(outcomes: Vec<Result<u64, UpstreamError>>) -> Self {
            let clock = TokioClock::new(at(0));
            Self::start(outcomes, clock.clone(), Arc::new(clock), None)
        }

        fn calls(&self) -> u32 {
            *self.src.calls.lock().unwrap()
        }

        async fn stop(self) {
            self.cancel.cancel();
            self.task.await.unwrap();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn refreshes_before_expiry_and_keeps_last_good_on_failure() {
        let h = Harness::simple(vec![Ok(3600), Err(transport()), Err(transport()), Ok(3600)]);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let s = h.reader.borrow().clone();
        assert_eq!(s.state, State::Ready);
        assert_eq!(s.refreshes, 1);
        let first = s.served.clone().unwrap();
        // Just before the scheduled refresh nothing more has happened.
        tokio::time::sleep(Duration::from_secs(1700)).await;
        assert_eq!(h.calls(), 1);
        // After it: failures → retrying, still serving the first creds.
        tokio::time::sleep(Duration::from_secs(100)).await;
        let s = h.reader.borrow().clone();
        assert!(
            matches!(s.state, State::Retrying | State::Ready),
            "{:?}",
            s.state
        );
        // Backoff then success: new credentials, before the old expired.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let s = h.reader.borrow().clone();
        assert_eq!(s.state, State::Ready);
        assert_eq!(s.refreshes, 2);
        assert_eq!(h.calls(), 4);
        assert_ne!(s.served.unwrap().key_suffix, first.key_suffix);
        h.stop().await;
    }

    /// Wall clock = tokio time + a jump the test controls (suspend/resume or a
    /// clock step: monotonic timers do not see it).
    #[derive(Debug, Clone)]
    struct JumpClock {
        base: TokioClock,
        jump: Arc<Mutex<Duration>>,
    }

    impl crate::clock::Clock for JumpClock {
        fn now(&self) -> SystemTime {
            self.base.now() + *self.jump.lock().unwrap()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_wall_clock_jump_is_noticed_within_max_sleep() {
        let base = TokioClock::new(at(0));
        let jump = Arc::new(Mutex::new(Duration::ZERO));
        let clock = JumpClock {
            base: base.clone(),
            jump: jump.clone(),
        };
        let h = Harness::start(vec![Ok(3600), Ok(3600)], base, Arc::new(clock), None);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(h.reader.borrow().refreshes, 1);
        // The laptop sleeps for 50 minutes: tokio time does not move, the wall clock does.
        *jump.lock().unwrap() = Duration::from_secs(50 * 60);
        tokio::time::sleep(MAX_SLEEP + Duration::from_secs(1)).await;
        assert_eq!(
            h.reader.borrow().refreshes,
            2,
            "refresh must happen at most MAX_SLEEP after resume"
        );
        h.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn login_required_retries_only_when_the_token_file_really_changed() {
        let (_dir, rt, h) = on_token_file("revoked", vec![Err(invalid_grant()), Ok(3600)]);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(h.reader.borrow().state, State::LoginRequired);
        // A spurious event (e.g. our own earlier write) does not cause a retry.
        h.wake.send(Wake::TokenFileChanged).await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(h.calls(), 1);
        // A new login writes a new token: retried at once.
        crate::fsutil::write_atomic_private(&rt, b"fresh-login").unwrap();
        h.wake.send(Wake::TokenFileChanged).await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(h.calls(), 2);
        assert_eq!(h.reader.borrow().state, State::Ready);
        h.stop().await;
    }

    /// A new token written while the failing attempt read the old (or a
    /// half-written) file is a change, though it finished before the
    /// failure was handled (found by the crash suite: `echo > file` races).
    #[tokio::test(start_paused = true)]
    async fn a_token_written_during_the_failing_attempt_is_not_missed() {
        let (_dir, rt, h) = on_token_file("", vec![Err(invalid_grant()), Ok(3600)]);
        *h.src.write_during_fetch.lock().unwrap() = Some(rt.clone());
        // The watcher's event for that write arrives after the failure.
        tokio::time::sleep(Duration::from_secs(1)).await;
        h.wake.send(Wake::TokenFileChanged).await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(h.calls(), 2, "the write during the attempt was missed");
        assert_eq!(h.reader.borrow().state, State::Ready);
        h.stop().await;
    }

    /// A change the watcher never reported (an event lost, a file system
    /// without inotify) is found by the wait's own look at the file.
    #[tokio::test(start_paused = true)]
    async fn a_new_token_without_any_event_is_found_within_the_poll() {
        let (_dir, rt, h) = on_token_file("revoked", vec![Err(invalid_grant()), Ok(3600)]);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(h.calls(), 1, "an unchanged file must not be retried");
        crate::fsutil::write_atomic_private(&rt, b"fresh-login").unwrap();
        tokio::time::sleep(CHANGE_POLL + Duration::from_millis(10)).await;
        assert_eq!(h.calls(), 2, "the new token was not noticed");
        assert_eq!(h.reader.borrow().state, State::Ready);
        h.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_is_cut_short_only_by_a_real_change_or_sighup() {
        // The source rotated (wrote) the token during the failed attempt.
        let (_dir, rt, h) = on_token_file(
            "rotated",
            vec![
                Err(transport()),
                Err(transport()),
                Err(transport()),
                Ok(3600),
            ],
        );
        let tick = Duration::from_millis(10); // far below the first backoff (≥ 0.5 s)
        tokio::time::sleep(tick).await;
        assert_eq!(h.calls(), 1);
        // The watcher reports our own write late: must not end the backoff.
        h.wake.send(Wake::TokenFileChanged).await.unwrap();
        tokio::time::sleep(tick).await;
        assert_eq!(
            h.calls(),
            1,
            "a stale file event ended the backoff (retry storm)"
        );
        // SIGHUP does.
        h.wake.send(Wake::Hangup).await.unwrap();
        tokio::time::sleep(tick).await;
        assert_eq!(h.calls(), 2);
        // So does a token that really changed (a new login).
        crate::fsutil::write_atomic_private(&rt, b"new-login").unwrap();
        h.wake.send(Wake::TokenFileChanged).await.unwrap();
        tokio::time::sleep(tick).await;
        assert_eq!(h.calls(), 3);
        h.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn login_required_waits_for_a_wake() {
        let h = Harness::simple(vec![Err(invalid_grant()), Ok(3600)]);
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert_eq!(h.reader.borrow().state, State::LoginRequired);
        assert_eq!(h.calls(), 1, "no hammering while login is required");
        h.wake.send(Wake::Hangup).await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(h.reader.borrow().state, State::Ready);
        h.stop().await;
    }
}
