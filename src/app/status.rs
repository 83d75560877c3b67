//! Readiness and the one-line status systemd shows.
//!
//! Readiness is one moment: when every profile of the start-up config has
//! finished its first attempt — with credentials, or with a definite answer
//! such as `login_required`. A profile that needs a login must not turn into
//! a start-up timeout and a restart loop under `Type=notify`; `/readyz` still
//! says whether credentials are being served. After that, `STATUS=` follows
//! every change of any profile's state.

use std::time::SystemTime;

use futures_util::FutureExt;
use tokio_util::sync::CancellationToken;

use crate::server::SERVE_MARGIN;
use crate::store::{ProfileEntry, Registry};
use crate::systemd;

/// Report readiness and status until `cancel`.
pub async fn report(registry: Registry, cancel: CancellationToken) {
    let mut ready = false;
    let mut last = String::new();
    let mut changes = registry.changes();
    loop {
        let all = registry.all();
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
