//! Live reconfiguration: the config file is watched (its directory, so
//! editors' rename-writes and Kubernetes ConfigMap swaps are seen) and
//! reloaded after a short quiet period; SIGHUP reloads too and retries every
//! login. A valid new config is applied as a [`ConfigDiff`]: added profiles
//! start, removed ones stop, changed ones restart (see
//! [`Supervisor::replace`]), unchanged ones are not touched; live server
//! settings are swapped into the listeners' views; settings that need a
//! restart keep their running value, with a warning naming the key. An
//! invalid file changes nothing: one error naming the file and key, shown as
//! `config_error` in `/v1/status` until the file is fixed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::supervisor::Supervisor;
use super::{SourceFactory, listener_defaults, main_view, prepare_profile, readable_policy};
use crate::config::{self, Config, ConfigDiff, Env};
use crate::refresher::Wake;
use crate::server::ServerState;
use crate::watcher::{self, FileWatcher};

/// Writes usually come in bursts (truncate + write, temp + rename): wait for
/// this much quiet before reading the file.
pub const DEBOUNCE: Duration = Duration::from_millis(250);

/// The running config and how to reload it.
pub struct Reloader {
    current: Config,
    env: Env,
    addr: std::net::SocketAddr,
    /// The last error logged, so one bad edit logs once.
    last_error: Option<String>,
}

impl Reloader {
    /// Reload `current.source` with `env`; the main listener is on `addr`.
    pub fn new(current: Config, env: Env, addr: std::net::SocketAddr) -> Self {
        Reloader {
            current,
            env,
            addr,
            last_error: None,
        }
    }

    /// Serve until `shutdown`: reload on config changes and SIGHUP.
    pub async fn serve_until<F: SourceFactory>(
        &mut self,
        shutdown: impl std::future::Future<Output = ()>,
        sup: &mut Supervisor<F>,
        main: &Arc<ServerState>,
        info_path: &Path,
        mut commands: crate::control::Receiver,
    ) {
        let (tx, mut rx) = mpsc::channel::<()>(1);
        let _watch = watch_config(&self.current.source, tx);
        let mut hangup = crate::shutdown::Hangup::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                () = hangup.recv() => {
                    tracing::info!("SIGHUP: reloading the config and retrying logins");
                    self.reload(sup, main, info_path).await;
                    sup.wake_all(Wake::Hangup);
                }
                Some(req) = commands.recv() => sup.apply(req).await,
                Some(()) = rx.recv() => {
                    tokio::time::sleep(DEBOUNCE).await;
                    while rx.try_recv().is_ok() {}
                    self.reload(sup, main, info_path).await;
                }
            }
        }
    }

    /// Read the file again and apply what changed.
    pub async fn reload<F: SourceFactory>(
        &mut self,
        sup: &mut Supervisor<F>,
        main: &Arc<ServerState>,
        info_path: &Path,
    ) {
        let shared = main.shared.clone();
        let new = match config::load(&self.current.source, &self.env) {
            Ok(c) => c,
            Err(e) => {
                let msg = e.to_string();
                if self.last_error.as_deref() != Some(msg.as_str()) {
                    tracing::error!(error = %msg, "config reload refused; the running config stays in force");
                }
                shared.set_config_error(Some(msg.clone()));
                self.last_error = Some(msg);
                return;
            }
        };
        if self.last_error.take().is_some() {
            tracing::info!(file = %self.current.source.display(), "config file valid again");
        }
        shared.set_config_error(None);
        let new = keep_restart_only(&self.current, new);
        let diff = ConfigDiff::between(&self.current, &new);
        if diff.is_empty() {
            return;
        }
        apply(sup, main, self.addr, &self.current, &new, &diff).await;
        super::write_daemon_file(info_path, self.addr, sup.imds_listeners());
        self.current = new;
    }
}

/// `new` with the settings that need a restart put back to their running
/// values (each named in a warning).
fn keep_restart_only(current: &Config, mut new: Config) -> Config {
    let diff = ConfigDiff::between(current, &new);
    for key in &diff.restart_needed {
        tracing::warn!(key, file = %current.source.display(), "changed in the config file, but only takes effect after a restart; keeping the running value");
    }
    new.server.listen = current.server.listen;
    new.server.ecs_token_file = current.server.ecs_token_file.clone();
    new.server.runtime_dir = current.server.runtime_dir.clone();
    new.server.ecs_token_group_readable = current.server.ecs_token_group_readable;
    new
}

/// Apply a diff: profiles first (so a new `imds_profile` exists when the
/// main listener's view names it), then the server settings.
async fn apply<F: SourceFactory>(
    sup: &mut Supervisor<F>,
    main: &Arc<ServerState>,
    addr: std::net::SocketAddr,
    old: &Config,
    new: &Config,
    diff: &ConfigDiff,
) {
    tracing::info!(
        added = ?diff.added,
        removed = ?diff.removed,
        changed = ?diff.changed.iter().map(|(n, _)| n).collect::<Vec<_>>(),
        server = ?diff.server_live,
        "applying the changed config"
    );
    for name in &diff.removed {
        sup.stop(name);
    }
    for name in &diff.added {
        let p = &new.profiles[name];
        let started = match prepare_profile(p) {
            Ok(()) => sup.start(p, None).await,
            Err(e) => Err(e.to_string()),
        };
        match started {
            Ok(()) => tracing::info!(profile = %name, "profile added"),
            Err(e) => {
                tracing::error!(profile = %name, error = %e, "cannot start the added profile")
            }
        }
    }
    for (name, change) in &diff.changed {
        let p = &new.profiles[name];
        let replaced = match prepare_profile(p) {
            Ok(()) => sup.replace(p, *change).await,
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = replaced {
            tracing::error!(profile = %name, error = %e, "cannot restart the changed profile; it keeps its old settings");
        }
    }
    if !diff.added.is_empty() || !diff.removed.is_empty() || !diff.changed.is_empty() {
        sup.watch_token_files();
    }
    if old.server.strict_permissions != new.server.strict_permissions {
        crate::fsutil::set_readable_policy(readable_policy(new));
    }
    main.set_view(main_view(new, addr));
    sup.set_defaults(listener_defaults(new));
}

/// Watch the config file; `None` (with a warning) where watching fails.
fn watch_config(path: &Path, tx: mpsc::Sender<()>) -> Option<FileWatcher> {
    let abs: PathBuf = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    match watcher::watch(vec![(abs, tx, ())]) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the config file; send SIGHUP to reload it");
            None
        }
    }
}
