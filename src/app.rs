//! Composition root: [`App::build`] does everything that must precede the
//! first task (checks the runtime and state directories, removes leftovers of
//! killed writes, loads the ECS token, binds the listener); [`App::run`]
//! spawns the long-lived tasks (one refresher per profile, the server, the
//! readiness notifier) on one [`TaskTracker`] under one
//! [`CancellationToken`], and drains them on shutdown. No other module spawns
//! long-lived tasks.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::clock::SharedClock;
use crate::config::Config;
use crate::error::StartupError;
use crate::fsutil;
use crate::refresher::{self, Wake};
use crate::secret::{SecretString, secret};
use crate::server::{self, ServerState};
use crate::store::{ProfileEntry, ProfileInfo, ProfileStore, Registry};
use crate::upstream::Chain;

/// How long in-flight work may take to finish after SIGTERM.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Shortest ECS token accepted from a file (a generated one has 43 characters).
pub const MIN_ECS_TOKEN_LEN: usize = 16;

/// The file in the runtime dir that tells client commands where we listen.
pub const DAEMON_FILE: &str = "daemon.json";

/// Load the ECS token, creating it (32 random bytes, base64url, no newline,
/// 0600 in a 0700 directory) if the file does not exist.
pub fn ecs_token(path: &Path) -> Result<SecretString, StartupError> {
    match fsutil::read_secret_file(path) {
        Ok(t) if t.len() >= MIN_ECS_TOKEN_LEN => Ok(secret(t)),
        Ok(t) => Err(StartupError::Usage(format!(
            "ECS token file {} holds {} characters; at least {MIN_ECS_TOKEN_LEN} are needed \
             (delete the file to have a strong one generated)",
            path.display(),
            t.len()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use base64::Engine;
            let mut raw = [0u8; 32];
            getrandom::fill(&mut raw)
                .map_err(|e| StartupError::Other(format!("no randomness: {e}")))?;
            let tok = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
            fsutil::write_atomic_private(path, tok.as_bytes()).map_err(|e| {
                StartupError::Other(format!(
                    "cannot create the ECS token file {}: {e}",
                    path.display()
                ))
            })?;
            tracing::info!(path = %path.display(), "created a new ECS authorization token");
            Ok(secret(tok))
        }
        // Owner/mode refusals (fsutil) are the user's to fix: a usage error.
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            Err(StartupError::Usage(format!("server.ecs_token_file: {e}")))
        }
        Err(e) => Err(StartupError::Other(format!(
            "cannot read the ECS token file {}: {e}",
            path.display()
        ))),
    }
}

/// What `daemon.json` says.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct DaemonInfo {
    /// Daemon pid.
    pub pid: u32,
    /// Bound address (client commands refuse a non-loopback one).
    pub listen: SocketAddr,
    /// Per-profile IMDS listeners (`profiles.<name>.imds_listen`), as bound.
    #[serde(default)]
    pub imds_listeners: std::collections::BTreeMap<String, SocketAddr>,
    /// Version.
    pub version: String,
}

/// A daemon that is ready to run: directories checked, leftovers of killed
/// writes cleaned up, ECS token loaded, listener bound. Nothing is spawned
/// until [`App::run`], so no refresher can race the clean-up.
pub struct App {
    config: Config,
    clock: SharedClock,
    token: SecretString,
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// Check (or create 0700) a directory the daemon writes secrets or state
/// into; an unsafe one is a usage error naming the key and the path.
fn private_dir(dir: &Path, key: &str) -> Result<(), StartupError> {
    fsutil::ensure_private_dir(dir).map_err(|e| {
        // The owner/mode checks name the path themselves; OS errors do not.
        let shown = dir.display().to_string();
        if e.to_string().contains(&shown) {
            StartupError::Usage(format!("{key}: {e}"))
        } else {
            StartupError::Usage(format!("{key}: {shown}: {e}"))
        }
    })
}

impl App {
    /// Prepare everything that must happen before any task runs.
    pub async fn build(config: Config, clock: SharedClock) -> Result<App, StartupError> {
        fsutil::set_readable_policy(if config.server.strict_permissions {
            fsutil::Readable::Refuse
        } else {
            fsutil::Readable::Warn
        });
        private_dir(&config.server.runtime_dir, "server.runtime_dir")?;
        if let Some(d) = config.server.ecs_token_file.parent() {
            private_dir(d, "server.ecs_token_file")?;
        }
        for (name, p) in &config.profiles {
            let mut dirs = vec![p.aws.identity_id_file.parent()];
            dirs.push(p.login.refresh_token_file().and_then(Path::parent));
            for d in dirs.into_iter().flatten() {
                private_dir(d, &format!("profiles.{name}"))?;
            }
            // Leftovers of a killed identity-id write (re-creatable, unlike a
            // rotated refresh token, which the login rolls forward instead).
            fsutil::remove_stale_temps(&p.aws.identity_id_file);
        }
        fsutil::remove_stale_temps(&config.server.runtime_dir.join(DAEMON_FILE));
        let token = ecs_token(&config.server.ecs_token_file)?;
        let listener = tokio::net::TcpListener::bind(config.server.listen)
            .await
            .map_err(|source| StartupError::Bind {
                addr: config.server.listen,
                source,
            })?;
        let addr = listener
            .local_addr()
            .map_err(|e| StartupError::Other(format!("cannot read the bound address: {e}")))?;
        Ok(App {
            config,
            clock,
            token,
            listener,
            addr,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Run the daemon until `shutdown` resolves.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartupError> {
        let App {
            config,
            clock,
            token,
            listener,
            addr,
        } = self;
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let registry = Registry::default();
        let mut wakers: Vec<mpsc::Sender<Wake>> = Vec::new();
        let mut watched: Vec<(PathBuf, mpsc::Sender<Wake>)> = Vec::new();

        for (name, profile) in &config.profiles {
            let (store, reader) = ProfileStore::new();
            registry.insert(
                name.clone(),
                ProfileEntry {
                    info: Arc::new(profile_info(profile)),
                    reader,
                },
            );
            let source = Arc::new(
                Chain::build(profile, clock.clone())
                    .await
                    .map_err(|e| StartupError::Other(format!("profile {name}: {e}")))?,
            );
            let (tx, rx) = mpsc::channel(8);
            wakers.push(tx.clone());
            if let Some(rt) = profile.login.refresh_token_file() {
                watched.push((rt.to_path_buf(), tx));
            }
            let settings = refresher::Settings {
                profile: name.clone(),
                refresh_before: profile.refresh_before,
                refresh_token_file: profile.login.refresh_token_file().map(Path::to_path_buf),
            };
            tracker.spawn(
                refresher::run(source, store, clock.clone(), settings, rx, cancel.clone())
                    .instrument(tracing::info_span!("refresher", profile = %name)),
            );
        }
        let _watcher = match crate::watcher::watch(watched) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "file watching unavailable; send SIGHUP after writing a new refresh token");
                None
            }
        };

        let state = Arc::new(ServerState {
            registry: registry.clone(),
            imds_profile: config.server.imds_profile.clone(),
            imds_v1: config.server.imds_v1,
            ecs_token: token,
            tokens: Default::default(),
            hosts: ServerState::host_allow_list(addr, &config.server.allowed_hosts),
            clock: clock.clone(),
        });
        let router = server::router(state.clone(), config.server.imds);
        let server_cancel = cancel.clone();
        tracker.spawn(
            async move {
                if let Err(e) = server::serve(
                    listener,
                    router,
                    server::Limits::default(),
                    server_cancel.cancelled_owned(),
                )
                .await
                {
                    tracing::error!(error = %e, "server failed");
                }
            }
            .instrument(tracing::info_span!("server")),
        );
        tracing::info!(
            addr = %addr,
            imds = config.server.imds,
            imds_v1 = config.server.imds_v1,
            profiles = config.profiles.len(),
            "listening"
        );

        let info_path = config.server.runtime_dir.join(DAEMON_FILE);
        write_daemon_file(&info_path, addr);
        tracker.spawn(notify_ready(registry.clone(), cancel.clone()));

        let mut hangup = crate::shutdown::Hangup::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                () = hangup.recv() => {
                    tracing::info!("SIGHUP: retrying profiles that wait for a login");
                    for w in &wakers {
                        let _ = w.try_send(Wake::Hangup);
                    }
                }
            }
        }

        tracing::info!("shutting down");
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        cancel.cancel();
        tracker.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(grace = ?SHUTDOWN_GRACE, "tasks did not finish within the grace period");
        }
        if let Ok(text) = std::fs::read_to_string(&info_path)
            && serde_json::from_str::<DaemonInfo>(&text).is_ok_and(|d| d.pid == std::process::id())
        {
            let _ = std::fs::remove_file(&info_path);
        }
        Ok(())
    }
}

/// Run the daemon until `shutdown` resolves ([`App::build`] then [`App::run`]).
pub async fn run(
    config: Config,
    clock: SharedClock,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), StartupError> {
    App::build(config, clock).await?.run(shutdown).await
}

/// The static facts the server shows about a profile.
fn profile_info(profile: &crate::config::ProfileConfig) -> ProfileInfo {
    ProfileInfo {
        role_name: profile.role_name.clone(),
        region: profile.region.clone(),
        login_kind: profile.login.kind(),
        flow: profile.aws.flow.as_str(),
        refresh_token_file: profile
            .login
            .refresh_token_file()
            .map(|p| p.display().to_string()),
    }
}

/// Tell client commands where we listen (best effort: they fall back to
/// `server.listen`).
fn write_daemon_file(path: &Path, addr: SocketAddr) {
    let info = DaemonInfo {
        pid: std::process::id(),
        listen: addr,
        imds_listeners: Default::default(),
        version: env!("CARGO_PKG_VERSION").into(),
    };
    if let Err(e) = serde_json::to_vec_pretty(&info)
        .map_err(std::io::Error::other)
        .and_then(|b| fsutil::write_atomic_private(path, &b))
    {
        tracing::warn!(path = %path.display(), error = %e, "cannot write the daemon file; `credbroker status`/`env` will use server.listen");
    }
}

/// Readiness: one well-defined moment, when every profile first has
/// credentials (systemd READY=1, a log line).
async fn notify_ready(registry: Registry, cancel: CancellationToken) {
    let mut readers: Vec<_> = registry.all().into_iter().map(|(_, p)| p.reader).collect();
    for r in &mut readers {
        tokio::select! {
            res = r.wait_for(|s| s.served.is_some()) => if res.is_err() { return },
            () = cancel.cancelled() => return,
        }
    }
    tracing::info!("ready: every profile has credentials");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::ExposeSecret;

    fn config(dir: &Path) -> Config {
        let text = format!(
            r#"
[server]
listen = "127.0.0.1:0"
runtime_dir = "{0}/run"
[profiles.default]
state_dir = "{0}/state"
login = {{ kind = "none" }}
aws = {{ flow = "cognito", identity_pool_id = "us-east-1:x" }}
"#,
            dir.display()
        );
        crate::config::load_str(&text, Path::new("c.toml"), &Default::default()).unwrap()
    }

    /// Everything that must precede the refreshers happens in `build`, which
    /// spawns nothing: the leftovers of a killed identity-id write are gone
    /// before any refresher could write a new one.
    #[tokio::test]
    async fn build_checks_directories_and_cleans_up_before_anything_runs() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        let state = dir.path().join("state");
        fsutil::ensure_private_dir(&state).unwrap();
        let stale = state.join(".identity-id.tmp.1.abc");
        std::fs::write(&stale, "us-east-1:half").unwrap();
        // A runtime directory others may write to is refused, naming the key.
        let run = dir.path().join("run");
        std::fs::create_dir(&run).unwrap();
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o777)).unwrap();
        let clock: SharedClock = Arc::new(crate::clock::SystemClock);
        let e = App::build(cfg.clone(), clock.clone()).await.unwrap_err();
        assert_eq!(e.exit_code(), crate::EXIT_USAGE);
        assert!(
            e.to_string().contains("server.runtime_dir") && e.to_string().contains("chmod 700"),
            "{e}"
        );
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).unwrap();
        let app = App::build(cfg, clock).await.unwrap();
        assert!(
            !stale.exists(),
            "stale temp file left for the refreshers to race"
        );
        assert!(run.join("ecs-token").exists());
        assert!(
            !run.join(DAEMON_FILE).exists(),
            "build must not announce a daemon yet"
        );
        assert!(app.addr().ip().is_loopback() && app.addr().port() != 0);
    }

    #[test]
    fn ecs_token_is_created_strong_and_weak_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("run").join("ecs-token");
        let t = ecs_token(&p).unwrap();
        assert_eq!(t.expose_secret().len(), 43);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), t.expose_secret());
        assert_eq!(ecs_token(&p).unwrap().expose_secret(), t.expose_secret());
        std::fs::write(&p, "abcd").unwrap();
        let e = ecs_token(&p).unwrap_err();
        assert_eq!(e.exit_code(), crate::EXIT_USAGE);
        assert!(
            e.to_string().contains("4 characters") && !e.to_string().contains("abcd"),
            "{e}"
        );
    }
}
