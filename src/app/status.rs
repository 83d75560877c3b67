//! Readiness and the one-line status systemd shows.
//!
//! Readiness is one moment: when every profile of the start-up config has
//! finished its first attempt — with credentials, or with a definite answer
//! such as `login_required`. A profile that needs a login must not turn into
//! a start-up timeout and a restart loop under `Type=notify`; `/readyz` still
//! says whether credentials are being served. After that, `STATUS=` follows
//! every change of any profile's state, and a profile that comes to need a
//! sign-in gets one desktop notification per transition (never a browser,
//! never a repeat while it stays so).

use std::time::SystemTime;

use futures_util::FutureExt;
use tokio_util::sync::CancellationToken;

use crate::server::SERVE_MARGIN;
use crate::store::{ProfileEntry, Registry, State};
use crate::{desktop, systemd};

/// Report readiness and status until `cancel`; with `notify`, a desktop
/// notification when a profile comes to need a sign-in.
pub async fn report(registry: Registry, notify: bool, cancel: CancellationToken) {
    let mut ready = false;
    let mut last = String::new();
    let mut needs_login = std::collections::HashSet::new();
    let mut changes = registry.changes();
    loop {
        let all = registry.all();
        let newly = login_transitions(&all, &mut needs_login);
        if notify {
            for names in newly {
                desktop::login_required(&names);
            }
        }
        // Fresh clones of the registry's receivers inherit the version it
        // last saw (never updated there): unmarked, every `changed()` below
        // would resolve at once after the first refresh and this loop would
        // spin, holding a worker busy while the daemon is idle (found by
        // bench/: ~30 % CPU idle). Marked before reading, so a change made
        // after the read still wakes us.
        let mut readers: Vec<_> = all
            .iter()
            .map(|(_, p)| {
                let mut r = p.reader.clone();
                r.mark_unchanged();
                r
            })
            .collect();
        let line = status_line(&all, SystemTime::now());
        let settled = all.iter().all(|(_, p)| {
            let s = p.reader.borrow();
            s.refreshes > 0 || s.failures > 0
        });
        if !ready && settled {
            ready = true;
            tracing::info!(status = %line, "ready: every profile has finished its first attempt");
            systemd::ready(&line);
        } else if ready && line != last {
            systemd::status(&line);
        }
        last = line;
        // select_all panics on an empty list: with no profile, wait for the
        // registry alone.
        let any = if readers.is_empty() {
            std::future::pending().boxed()
        } else {
            futures_util::future::select_all(readers.iter_mut().map(|r| r.changed().boxed()))
                .map(|_| ())
                .boxed()
        };
        tokio::select! {
            () = any => {}
            r = changes.changed() => if r.is_err() { return },
            () = cancel.cancelled() => return,
        }
    }
}

/// The profiles that came to need a sign-in since the last call, grouped by
/// sign-in (profiles on one refresh-token file share one: one notification
/// names them all). `seen` holds who needs one now; profiles that no longer
/// do (or are gone) leave it, so a later need is announced again.
fn login_transitions(
    all: &[(String, ProfileEntry)],
    seen: &mut std::collections::HashSet<String>,
) -> Vec<Vec<String>> {
    let needing: Vec<&(String, ProfileEntry)> = all
        .iter()
        .filter(|(_, p)| p.reader.borrow().state == State::LoginRequired)
        .collect();
    seen.retain(|n| needing.iter().any(|(m, _)| m == n));
    let mut groups: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (name, p) in needing {
        if seen.insert(name.clone()) {
            let key = p
                .info
                .refresh_token_file
                .clone()
                .unwrap_or_else(|| name.clone());
            groups.entry(key).or_default().push(name.clone());
        }
    }
    groups.into_values().collect()
}

/// E.g. `2 profiles: default ready, dev login required`.
pub fn status_line(all: &[(String, ProfileEntry)], now: SystemTime) -> String {
    let states: Vec<String> = all
        .iter()
        .map(|(name, p)| {
            let shown = p.reader.borrow().shown_state(now, SERVE_MARGIN);
            format!("{name} {}", shown.replace('_', " "))
        })
        .collect();
    let n = all.len();
    format!(
        "{n} profile{}: {}",
        if n == 1 { "" } else { "s" },
        states.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::net::SocketAddr;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Poll};
    use std::time::{Duration, SystemTime};

    use tokio_util::sync::CancellationToken;

    use crate::clock::TestClock;
    use crate::testing;

    /// Counts how often the runtime polls the wrapped future.
    struct Counted<F>(Pin<Box<F>>, Arc<AtomicUsize>);

    impl<F: Future> Future for Counted<F> {
        type Output = F::Output;
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
            self.1.fetch_add(1, Ordering::Relaxed);
            self.0.as_mut().poll(cx)
        }
    }

    fn entry(file: &str, state: crate::store::State) -> crate::store::ProfileEntry {
        let (store, reader) = crate::store::ProfileStore::new();
        // The reader keeps the last value after the store is gone.
        store.update(|s| s.state = state);
        crate::store::ProfileEntry {
            info: Arc::new(crate::store::ProfileInfo {
                role_name: "credbroker".into(),
                region: "eu-west-1".into(),
                login_kind: "oidc",
                flow: "sts",
                refresh_token_file: Some(file.into()),
                access: None,
            }),
            reader,
        }
    }

    /// One notice per sign-in (profiles on one token file together), once
    /// per transition: not again while it lasts, again after it ended.
    #[test]
    fn sign_in_needs_are_grouped_and_announced_once_per_transition() {
        use crate::store::State::{LoginRequired, Ready};
        let all = |a, b, c| {
            vec![
                ("a".to_owned(), entry("/s/shared", a)),
                ("b".to_owned(), entry("/s/shared", b)),
                ("c".to_owned(), entry("/s/own", c)),
            ]
        };
        let mut seen = std::collections::HashSet::new();
        let first = super::login_transitions(&all(LoginRequired, LoginRequired, Ready), &mut seen);
        assert_eq!(first, vec![vec!["a".to_owned(), "b".to_owned()]]);
        let again =
            super::login_transitions(&all(LoginRequired, LoginRequired, LoginRequired), &mut seen);
        assert_eq!(
            again,
            vec![vec!["c".to_owned()]],
            "a and b were already announced"
        );
        assert!(super::login_transitions(&all(Ready, Ready, Ready), &mut seen).is_empty());
        let later = super::login_transitions(&all(LoginRequired, Ready, Ready), &mut seen);
        assert_eq!(
            later,
            vec![vec!["a".to_owned()]],
            "a new need is announced again"
        );
    }

    /// The reporter sleeps until a profile changes: a receiver cloned from
    /// the registry once made it spin on a worker forever after the first
    /// refresh (bench/: half a core while idle).
    #[tokio::test(flavor = "current_thread")]
    async fn report_sleeps_while_nothing_changes() {
        let clock = TestClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000));
        // The fixture's store was updated before the profile was registered,
        // as after a real first refresh.
        let (state, store) = testing::server_state(
            SocketAddr::from(([127, 0, 0, 1], 9911)),
            Arc::new(clock),
            "eu-west-1",
            false,
            &[],
        );
        let polls = Arc::new(AtomicUsize::new(0));
        let cancel = CancellationToken::new();
        let task = tokio::spawn(Counted(
            Box::pin(super::report(
                state.shared.registry.clone(),
                false,
                cancel.clone(),
            )),
            polls.clone(),
        ));
        tokio::time::sleep(Duration::from_millis(200)).await;
        let idle = polls.load(Ordering::Relaxed);
        assert!(idle <= 3, "polled {idle} times in 200 ms with no change");
        store.update(|s| s.refreshes += 1);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let after = polls.load(Ordering::Relaxed) - idle;
        assert!(
            (1..=3).contains(&after),
            "polled {after} times for one change (must wake, then sleep again)"
        );
        cancel.cancel();
        task.await.unwrap();
    }
}
