//! Composition root, and the only module that spawns long-lived tasks.
//!
//! * [`App::build`] does everything that must precede the first task: checks
//!   the runtime and state directories, removes leftovers of killed writes,
//!   loads the ECS token, binds the listeners (or takes them from [`Deps`]).
//! * [`App::run`] creates the shared server state, starts every profile
//!   through the [`supervisor`] (refresher, registry entry, optional IMDS
//!   port), serves the main listener, watches the refresh-token files and
//!   the config file, and applies reloads ([`reload`]) until shutdown; then
//!   drains every task (one [`TaskTracker`], one root [`CancellationToken`]).
//! * [`Deps`] injects the credential-source factory ([`SourceFactory`]; the
//!   real one is [`UpstreamSources`], which shares one login per
//!   refresh-token file) and pre-bound listeners, so tests run the whole app
//!   with a fake upstream on port 0.

mod reload;
mod sources;
mod status;
pub mod supervisor;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::clock::SharedClock;
use crate::config::{Config, Env, ProfileConfig};
use crate::error::StartupError;
use crate::fsutil;
use crate::metrics::Metrics;
use crate::secret::{SecretString, secret};
use crate::server::{self, ListenerView, ServerState, Shared};
use crate::store::Registry;

pub use sources::{SourceFactory, UpstreamSources};
use supervisor::{ListenerDefaults, Supervisor};

/// How long in-flight work may take to finish after SIGTERM.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Shortest ECS token accepted from a file (a generated one has 43 characters).
pub const MIN_ECS_TOKEN_LEN: usize = 16;

/// The file in the runtime dir that tells client commands where we listen.
pub const DAEMON_FILE: &str = "daemon.json";

/// Load the ECS token, creating it (32 random bytes, base64url, no newline,
/// 0600 in a 0700 directory) if the file does not exist. `group_readable`
/// (`server.ecs_token_group_readable`): the file is made 0640 and a
/// directory of ours 0750, so an app container in the file's group (a
/// sidecar's `group_add` / `fsGroup`) can read the token without being us.
pub fn ecs_token(path: &Path, group_readable: bool) -> Result<SecretString, StartupError> {
    let read = if group_readable {
        share_ecs_token(path)?;
        fsutil::read_group_shared_secret_file(path)
    } else {
        fsutil::read_secret_file(path)
    };
    match read {
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
            if group_readable {
                share_ecs_token(path)?;
            }
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

/// Open the ECS token file (when it exists) and its directory to their group.
fn share_ecs_token(path: &Path) -> Result<(), StartupError> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    for p in dir.into_iter().chain(path.exists().then_some(path)) {
        fsutil::share_with_group(p).map_err(|e| {
            StartupError::Other(format!(
                "server.ecs_token_group_readable: cannot let the group read {}: {e}",
                p.display()
            ))
        })?;
    }
    Ok(())
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

/// What the app gets from its caller instead of making it itself.
pub struct Deps<F: SourceFactory> {
    /// Wall clock.
    pub clock: SharedClock,
    /// Builds each profile's credential source.
    pub sources: F,
    /// The main listener, already bound (tests, socket activation); else
    /// `server.listen` is bound. Must be a loopback address.
    pub listener: Option<TcpListener>,
    /// The environment the config was loaded with; reloads use it again.
    pub env: Env,
    /// The daemon's metrics, shared by the server, the refreshers and
    /// (through [`Metrics::upstream_timer`]) the source factory.
    pub metrics: Arc<Metrics>,
}

impl Deps<UpstreamSources> {
    /// The real upstream, the system clock and this process's environment.
    pub fn real(clock: SharedClock) -> Self {
        let metrics = Arc::new(Metrics::new());
        Deps {
            sources: UpstreamSources::new(clock.clone(), metrics.upstream_timer()),
            clock,
            listener: None,
            env: std::env::vars().collect(),
            metrics,
        }
    }
}

/// A daemon that is ready to run: directories checked, leftovers of killed
/// writes cleaned up, ECS token loaded, listeners bound. Nothing is spawned
/// until [`App::run`], so no refresher can race the clean-up.
pub struct App<F: SourceFactory> {
    config: Config,
    deps: Deps<F>,
    token: SecretString,
    listener: TcpListener,
    addr: SocketAddr,
    imds_listeners: BTreeMap<String, TcpListener>,
    /// `server.metrics_listen`, bound.
    metrics_listener: Option<TcpListener>,
    /// The audit trail, its file open.
    audit: crate::audit::Audit,
}

impl<F: SourceFactory> std::fmt::Debug for App<F> {
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

/// Prepare a profile's state before its refresher may run: its directories
/// are checked (or created 0700), and leftovers of a killed identity-id
/// write are removed (re-creatable, unlike a rotated refresh token, which
/// the login rolls forward instead).
pub fn prepare_profile(p: &ProfileConfig) -> Result<(), StartupError> {
    let dirs = [
        p.aws.identity_id_file().and_then(Path::parent),
        p.login.refresh_token_file().and_then(Path::parent),
    ];
    for d in dirs.into_iter().flatten() {
        private_dir(d, &format!("profiles.{}", p.name))?;
    }
    if let Some(f) = p.aws.identity_id_file() {
        fsutil::remove_stale_temps(f);
    }
    Ok(())
}

/// Name of a profile's refresh-token seed among the systemd credentials
/// (`LoadCredential=refresh-token.<profile>:…`, read from
/// `$CREDENTIALS_DIRECTORY`).
pub fn seed_name(profile: &str) -> String {
    format!("refresh-token.{profile}")
}

/// Seed a profile's refresh-token file from `$CREDENTIALS_DIRECTORY` when
/// it has none yet (first start of a service or a container). Never over an
/// existing token: the one in the state directory may have rotated since
/// the seed was issued, and the seed is then dead. Returns whether it seeded.
pub fn seed_refresh_token(p: &ProfileConfig, dir: &Path) -> Result<bool, StartupError> {
    let Some(file) = p.login.refresh_token_file() else {
        return Ok(false);
    };
    let seed = dir.join(seed_name(&p.name));
    if p.login.token_store() == Some(crate::config::StoreKind::Keyring) {
        if seed.exists() {
            tracing::warn!(profile = %p.name, seed = %seed.display(), "ignoring the refresh-token seed: this profile keeps its token in the OS keychain (login.token_store = \"keyring\"); sign in with `credbroker login`");
        }
        return Ok(false);
    }
    let have = fsutil::read_secret_file(file).is_ok_and(|t| !t.is_empty());
    if have {
        return Ok(false);
    }
    // systemd makes the credential readable by the service user only.
    let token = match fsutil::read_secret_file(&seed) {
        Ok(t) if !t.trim().is_empty() => t,
        Ok(_) => return Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => {
            return Err(StartupError::Usage(format!(
                "profiles.{}: cannot read the refresh-token seed {}: {e}",
                p.name,
                seed.display()
            )));
        }
    };
    fsutil::write_atomic_private(file, token.trim().as_bytes()).map_err(|e| {
        StartupError::Other(format!(
            "profiles.{}: cannot write {}: {e}",
            p.name,
            file.display()
        ))
    })?;
    tracing::info!(profile = %p.name, seed = %seed.display(), file = %file.display(), "seeded the refresh token from the systemd credential");
    Ok(true)
}

fn readable_policy(config: &Config) -> fsutil::Readable {
    if config.server.strict_permissions {
        fsutil::Readable::Refuse
    } else {
        fsutil::Readable::Warn
    }
}

fn bind(addr: SocketAddr) -> Result<TcpListener, StartupError> {
    server::bind(addr).map_err(|source| StartupError::Bind { addr, source })
}

impl<F: SourceFactory> App<F> {
    /// Prepare everything that must happen before any task runs.
    pub async fn build(config: Config, deps: Deps<F>) -> Result<Self, StartupError> {
        fsutil::set_readable_policy(readable_policy(&config));
        // Before any listener: the connection cap is derived from it.
        let fds = server::raise_fd_limit();
        tracing::debug!(
            ?fds,
            max_connections = server::connection_cap(),
            "descriptor limit"
        );
        private_dir(&config.server.runtime_dir, "server.runtime_dir")?;
        if let Some(d) = config.server.ecs_token_file.parent() {
            private_dir(d, "server.ecs_token_file")?;
        }
        for p in config.profiles.values() {
            prepare_profile(p)?;
        }
        if let Some(dir) = deps
            .env
            .get("CREDENTIALS_DIRECTORY")
            .filter(|d| !d.is_empty())
        {
            for p in config.profiles.values() {
                seed_refresh_token(p, Path::new(dir))?;
            }
        }
        fsutil::remove_stale_temps(&config.server.runtime_dir.join(DAEMON_FILE));
        let token = ecs_token(
            &config.server.ecs_token_file,
            config.server.ecs_token_group_readable,
        )?;
        let mut deps = deps;
        let listener = match deps.listener.take() {
            Some(l) => l,
            None => bind(config.server.listen)?,
        };
        let addr = listener
            .local_addr()
            .map_err(|e| StartupError::Other(format!("cannot read the bound address: {e}")))?;
        if !crate::net::is_loopback(addr.ip()) {
            return Err(StartupError::Usage(format!(
                "the listener handed in is bound to {addr}, not a loopback address"
            )));
        }
        check_peer_lookup(&config, addr).await?;
        let mut imds_listeners = BTreeMap::new();
        for p in config.profiles.values() {
            if let Some(a) = p.imds_listen {
                imds_listeners.insert(p.name.clone(), bind(a)?);
            }
        }
        let metrics_listener = match config.server.metrics_listen {
            Some(a) => Some(bind(a)?),
            None => None,
        };
        let audit = crate::audit::Audit::start(&config.audit).map_err(|e| match &config.audit {
            crate::audit::AuditLog::File { path, .. } => {
                StartupError::Usage(format!("audit.log: {}: {e}", path.display()))
            }
            _ => StartupError::Other(format!("cannot start the audit writer: {e}")),
        })?;
        Ok(App {
            config,
            deps,
            token,
            listener,
            addr,
            imds_listeners,
            metrics_listener,
            audit,
        })
    }

    /// The main listener's address.
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
            deps,
            token,
            listener,
            addr,
            mut imds_listeners,
            metrics_listener,
            audit,
        } = self;
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let shared = Arc::new(
            Shared::new(Registry::default(), token, deps.clock.clone())
                .with_metrics(deps.metrics.clone())
                .with_audit(audit),
        );
        let (control, commands) = crate::control::Control::channel();
        let _ = shared.control.set(control);
        let main = Arc::new(ServerState::new(shared.clone(), main_view(&config, addr)));
        let mut sup = Supervisor::new(
            shared.clone(),
            Arc::new(deps.sources),
            deps.clock.clone(),
            tracker.clone(),
            cancel.clone(),
            listener_defaults(&config),
        );
        for p in config.profiles.values() {
            sup.start(p, imds_listeners.remove(&p.name))
                .await
                .map_err(StartupError::Other)?;
        }
        sup.watch_token_files();
        if let Some(l) = metrics_listener {
            spawn_metrics_server(&tracker, &cancel, l, shared.clone());
        }
        spawn_server(&tracker, &cancel, listener, main.clone());
        tracing::info!(
            addr = %addr,
            imds = config.server.imds,
            imds_v1 = config.server.imds_v1,
            profiles = config.profiles.len(),
            "listening"
        );
        let info_path = config.server.runtime_dir.join(DAEMON_FILE);
        write_daemon_file(&info_path, addr, sup.imds_listeners());
        tracker.spawn(status::report(
            shared.registry.clone(),
            config.server.desktop_notifications,
            cancel.clone(),
        ));
        if let Some(every) = crate::systemd::watchdog_interval() {
            tracker.spawn(watchdog(addr, every, cancel.clone()));
        }

        let mut reloader = reload::Reloader::new(config, deps.env, addr);
        reloader
            .serve_until(shutdown, &mut sup, &main, &info_path, commands)
            .await;

        tracing::info!("shutting down");
        crate::systemd::stopping();
        cancel.cancel();
        tracker.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(grace = ?SHUTDOWN_GRACE, "tasks did not finish within the grace period");
        }
        remove_daemon_file(&info_path);
        Ok(())
    }
}

/// Run the daemon with the real upstream until `shutdown` resolves
/// ([`App::build`] then [`App::run`]).
pub async fn run(
    config: Config,
    clock: SharedClock,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), StartupError> {
    let mut deps = Deps::real(clock);
    if let Some(l) = crate::systemd::inherited_listener()? {
        if l.local_addr().ok() != Some(config.server.listen) {
            tracing::info!(
                configured = %config.server.listen,
                "using the socket passed by systemd; server.listen is not bound"
            );
        }
        deps.listener = Some(TcpListener::from_std(l).map_err(|e| {
            StartupError::Other(format!("cannot use the socket passed by systemd: {e}"))
        })?);
    }
    App::build(config, deps).await?.run(shutdown).await
}

/// The main listener's view of the config.
fn main_view(config: &Config, addr: SocketAddr) -> ListenerView {
    ListenerView {
        imds_profile: config.server.imds_profile.clone(),
        imds: config.server.imds,
        imds_v1: config.server.imds_v1,
        ecs: true,
        hosts: ServerState::host_allow_list(addr, &config.server.allowed_hosts),
        access: config.server.allowed_uids.clone(),
    }
}

fn listener_defaults(config: &Config) -> ListenerDefaults {
    ListenerDefaults {
        imds_v1: config.server.imds_v1,
        allowed_hosts: config.server.allowed_hosts.clone(),
        access: config.server.allowed_uids.clone(),
    }
}

/// Access by uid needs to know who connects: prove it works here (a
/// sandbox without netlink must fail loudly, never serve everyone).
async fn check_peer_lookup(config: &Config, addr: SocketAddr) -> Result<(), StartupError> {
    let restricted = config.server.allowed_uids.restricted()
        || config
            .profiles
            .values()
            .any(|p| p.allowed_uids.as_ref().is_some_and(|a| a.restricted()));
    if !restricted {
        return Ok(());
    }
    crate::peer::self_test(addr).await.map_err(|e| {
        StartupError::Usage(format!(
            "server.allowed_uids: cannot tell which local user connects ({e}); \
             set server.allowed_uids = [\"any\"] to serve every local user"
        ))
    })
}

fn spawn_server(
    tracker: &TaskTracker,
    cancel: &CancellationToken,
    listener: TcpListener,
    state: Arc<ServerState>,
) {
    let stop = cancel.clone();
    tracker.spawn(
        async move {
            if let Err(e) = server::serve(
                listener,
                server::router(state),
                server::Limits::default(),
                stop.cancelled_owned(),
            )
            .await
            {
                tracing::error!(error = %e, "server failed");
            }
        }
        .instrument(tracing::info_span!("server")),
    );
}

/// `server.metrics_listen`: `/metrics`, `/healthz`, `/readyz` only.
fn spawn_metrics_server(
    tracker: &TaskTracker,
    cancel: &CancellationToken,
    listener: TcpListener,
    shared: Arc<Shared>,
) {
    let addr = listener
        .local_addr()
        .map_or_else(|_| "?".to_owned(), |a| a.to_string());
    // (Not "listening …": tests take the first such line as the main address.)
    tracing::info!(metrics_addr = %addr, "serving /metrics, /healthz and /readyz on the metrics port");
    let stop = cancel.clone();
    tracker.spawn(
        async move {
            if let Err(e) = server::serve(
                listener,
                server::metrics_router(shared),
                server::Limits::default(),
                stop.cancelled_owned(),
            )
            .await
            {
                tracing::error!(error = %e, "metrics server failed");
            }
        }
        .instrument(tracing::info_span!("metrics_server")),
    );
}

/// Tell client commands where we listen (best effort: they fall back to
/// `server.listen`).
pub(crate) fn write_daemon_file(path: &Path, addr: SocketAddr, imds: BTreeMap<String, SocketAddr>) {
    let info = DaemonInfo {
        pid: std::process::id(),
        listen: addr,
        imds_listeners: imds,
        version: env!("CARGO_PKG_VERSION").into(),
    };
    if let Err(e) = serde_json::to_vec_pretty(&info)
        .map_err(std::io::Error::other)
        .and_then(|b| fsutil::write_atomic_private(path, &b))
    {
        tracing::warn!(path = %path.display(), error = %e, "cannot write the daemon file; `credbroker status`/`env` will use server.listen");
    }
}

fn remove_daemon_file(path: &Path) {
    if let Ok(text) = std::fs::read_to_string(path)
        && serde_json::from_str::<DaemonInfo>(&text).is_ok_and(|d| d.pid == std::process::id())
    {
        let _ = std::fs::remove_file(path);
    }
}

/// The systemd watchdog: ping only while the main listener answers
/// `/healthz`, so a wedged runtime or accept loop stops the pings and systemd
/// restarts the daemon.
async fn watchdog(addr: SocketAddr, every: Duration, cancel: CancellationToken) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = cancel.cancelled() => return,
        }
        match tokio::time::timeout(Duration::from_secs(2), self_check(addr)).await {
            Ok(Ok(())) => crate::systemd::watchdog(),
            Ok(Err(e)) => tracing::warn!(error = %e, "watchdog self-check failed; not pinging"),
            Err(_) => tracing::warn!("watchdog self-check timed out; not pinging"),
        }
    }
}

/// `GET /healthz` on our own listener, over a fresh connection.
async fn self_check(addr: SocketAddr) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let host = match addr {
        SocketAddr::V4(a) => format!("{}:{}", a.ip(), a.port()),
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
    };
    s.write_all(
        format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).await?;
    if &head[9..12] == b"200" {
        Ok(())
    } else {
        Err(std::io::Error::other("/healthz did not answer 200"))
    }
}

#[cfg(test)]
mod tests;
