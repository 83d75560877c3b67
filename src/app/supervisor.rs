//! The per-profile supervisor: owns, for each profile, its refresher task
//! (with a child [`CancellationToken`]), its wake sender, its registry entry
//! and its optional IMDS listener. Starting, stopping and replacing one
//! profile touches nothing else: the other profiles keep their tasks, their
//! credentials and their upstream state.
//!
//! Writers: the supervisor is the only writer of the registry (entries added,
//! replaced, removed) and of the per-profile listeners' views; the refreshers
//! write their own stores; handlers read.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::SourceFactory;
use crate::clock::SharedClock;
use crate::config::{ProfileChange, ProfileConfig, token_file_key};
use crate::control::{Command, Refusal};
use crate::refresher::{self, Wake};
use crate::server::{self, ListenerView, ServerState, Shared};
use crate::store::{ProfileEntry, ProfileInfo, ProfileStore};
use crate::watcher::{self, FileWatcher};

/// A running profile.
struct Running {
    config: ProfileConfig,
    /// Cancels this profile's current refresher.
    cancel: CancellationToken,
    /// Wakes this profile's current refresher.
    wake: mpsc::Sender<Wake>,
    /// Its own IMDS port, if configured and bound.
    listener: Option<ImdsListener>,
}

/// A per-profile IMDS listener (`profiles.<name>.imds_listen`).
struct ImdsListener {
    addr: SocketAddr,
    state: Arc<ServerState>,
    cancel: CancellationToken,
}

/// Serving options the per-profile listeners take from `[server]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerDefaults {
    /// `server.imds_v1`.
    pub imds_v1: bool,
    /// `server.allowed_hosts`.
    pub allowed_hosts: Vec<String>,
    /// `server.allowed_uids`.
    pub access: crate::peer::Access,
}

/// Every profile's tasks.
pub struct Supervisor<F: SourceFactory> {
    shared: Arc<Shared>,
    factory: Arc<F>,
    clock: SharedClock,
    tracker: TaskTracker,
    root: CancellationToken,
    defaults: ListenerDefaults,
    profiles: BTreeMap<String, Running>,
    /// Refresh-token watch (rebuilt when the set of profiles changes).
    token_watch: Option<FileWatcher>,
}

/// The static facts the server shows about a profile.
pub fn profile_info(profile: &ProfileConfig) -> ProfileInfo {
    ProfileInfo {
        role_name: profile.role_name.clone(),
        region: profile.region.clone(),
        login_kind: profile.login.kind(),
        flow: profile.aws.flow_name(),
        refresh_token_file: profile
            .login
            .refresh_token_file()
            .map(|p| p.display().to_string()),
        access: profile.allowed_uids.clone(),
    }
}

impl<F: SourceFactory> Supervisor<F> {
    /// A supervisor spawning on `tracker` under `root`.
    pub fn new(
        shared: Arc<Shared>,
        factory: Arc<F>,
        clock: SharedClock,
        tracker: TaskTracker,
        root: CancellationToken,
        defaults: ListenerDefaults,
    ) -> Self {
        Supervisor {
            shared,
            factory,
            clock,
            tracker,
            root,
            defaults,
            profiles: BTreeMap::new(),
            token_watch: None,
        }
    }

    /// Names of the running profiles.
    pub fn names(&self) -> Vec<String> {
        self.profiles.keys().cloned().collect()
    }

    /// The bound per-profile IMDS listeners.
    pub fn imds_listeners(&self) -> BTreeMap<String, SocketAddr> {
        self.profiles
            .iter()
            .filter_map(|(n, r)| r.listener.as_ref().map(|l| (n.clone(), l.addr)))
            .collect()
    }

    /// Start a profile that is not running: registry entry, refresher, and
    /// its IMDS listener (`prebound`, or bound now from `imds_listen`).
    pub async fn start(
        &mut self,
        profile: &ProfileConfig,
        prebound: Option<tokio::net::TcpListener>,
    ) -> Result<(), String> {
        let name = profile.name.clone();
        let (cancel, wake, entry) = self.spawn_refresher(profile).await?;
        self.shared.registry.insert(name.clone(), entry);
        let listener = match prebound {
            Some(l) => Some(self.spawn_listener(&name, l)),
            None => self.bind_listener(profile).await,
        };
        self.keep(profile, cancel, wake, listener);
        Ok(())
    }

    fn keep(
        &mut self,
        profile: &ProfileConfig,
        cancel: CancellationToken,
        wake: mpsc::Sender<Wake>,
        listener: Option<ImdsListener>,
    ) {
        let running = Running {
            config: profile.clone(),
            cancel,
            wake,
            listener,
        };
        self.profiles.insert(profile.name.clone(), running);
    }

    /// Stop a profile: its refresher and listener end, its ECS path answers
    /// 404, and it leaves status and readiness. Its on-disk state is kept.
    pub fn stop(&mut self, name: &str) {
        if let Some(r) = self.profiles.remove(name) {
            r.cancel.cancel();
            if let Some(l) = r.listener {
                l.cancel.cancel();
            }
            self.shared.registry.remove(name);
            self.shared.metrics.forget_profile(name);
            tracing::info!(profile = name, "profile stopped");
        }
    }

    /// Restart a changed profile with its new settings. After an identity
    /// change the old credentials are dropped at once; after a settings
    /// change they are served until the new refresher has credentials.
    pub async fn replace(
        &mut self,
        profile: &ProfileConfig,
        change: ProfileChange,
    ) -> Result<(), String> {
        let name = profile.name.clone();
        let Some(old) = self.profiles.remove(&name) else {
            return self.start(profile, None).await;
        };
        let (cancel, wake, entry) = match self.spawn_refresher(profile).await {
            Ok(x) => x,
            Err(e) => {
                self.profiles.insert(name, old);
                return Err(e);
            }
        };
        match change {
            ProfileChange::Identity => {
                self.shared.registry.insert(name.clone(), entry);
                old.cancel.cancel();
            }
            ProfileChange::Settings => self.hand_over(&name, entry, old.cancel, cancel.clone()),
        }
        let listener = match old.listener {
            Some(l) if Some(l.addr) == profile.imds_listen => Some(l),
            Some(l) => {
                l.cancel.cancel();
                self.bind_listener(profile).await
            }
            None => self.bind_listener(profile).await,
        };
        tracing::info!(profile = %name, ?change, "profile restarted with its new settings");
        self.keep(profile, cancel, wake, listener);
        Ok(())
    }

    /// Serve `entry` (the new refresher's) once it has credentials, then
    /// stop the old refresher; if the new one is stopped first, stop the
    /// old one too.
    fn hand_over(
        &self,
        name: &str,
        entry: ProfileEntry,
        old: CancellationToken,
        new: CancellationToken,
    ) {
        let registry = self.shared.registry.clone();
        let name = name.to_owned();
        let mut reader = entry.reader.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                r = reader.wait_for(|s| s.served.is_some()) => if r.is_ok() {
                    registry.insert(name.clone(), entry);
                    tracing::info!(profile = %name, "serving the restarted profile's credentials");
                },
                () = new.cancelled() => {}
            }
            old.cancel();
        });
    }

    /// The running profiles that share `name`'s sign-in (its refresh-token
    /// file), `name` first.
    fn sharing(&self, name: &str) -> Result<(PathBuf, Vec<String>), Refusal> {
        let r = self
            .profiles
            .get(name)
            .ok_or_else(|| Refusal::UnknownProfile(name.to_owned()))?;
        let file = r.config.login.refresh_token_file().ok_or_else(|| {
            Refusal::Invalid(format!(
                "profile {name:?} has no sign-in (login.kind = \"none\")"
            ))
        })?;
        let key = token_file_key(file);
        let mut names = vec![name.to_owned()];
        names.extend(
            self.profiles
                .iter()
                .filter(|(n, o)| {
                    n.as_str() != name
                        && o.config
                            .login
                            .refresh_token_file()
                            .is_some_and(|f| token_file_key(f) == key)
                })
                .map(|(n, _)| n.clone()),
        );
        Ok((file.to_path_buf(), names))
    }

    /// A sign-in stored a new refresh token: every profile on it restarts
    /// with fresh login state, dropping the old identity's credentials at
    /// once, and refreshes now.
    pub async fn signed_in(&mut self, name: &str) -> Result<Vec<String>, Refusal> {
        let (file, names) = self.sharing(name)?;
        self.factory.reset(&file).await;
        for n in &names {
            let Some(cfg) = self.profiles.get(n).map(|r| r.config.clone()) else {
                continue;
            };
            // Stop the old refresher before the new one reads the file.
            if let Some(r) = self.profiles.get(n) {
                r.cancel.cancel();
            }
            self.replace(&cfg, ProfileChange::Identity)
                .await
                .map_err(Refusal::Invalid)?;
        }
        self.watch_token_files();
        tracing::info!(profiles = ?names, "signed in: refreshing at once");
        Ok(names)
    }

    /// A sign-out deleted the refresh token: every profile on it stops
    /// refreshing and its credentials are dropped now (state `logged_out`).
    pub async fn signed_out(&mut self, name: &str) -> Result<Vec<String>, Refusal> {
        let (file, names) = self.sharing(name)?;
        for n in &names {
            let Some(r) = self.profiles.get(n) else {
                continue;
            };
            r.cancel.cancel();
            let (store, reader) = ProfileStore::new();
            store.update(|s| s.state = crate::store::State::LoggedOut);
            let entry = ProfileEntry {
                info: Arc::new(profile_info(&r.config)),
                reader,
            };
            self.shared.registry.insert(n.clone(), entry);
        }
        // After the refreshers are stopped: a refresh in flight finishes
        // (and saves a rotation) before the token is revoked and deleted.
        self.factory.reset(&file).await;
        tracing::info!(profiles = ?names, "signed out: credentials dropped");
        Ok(names)
    }

    /// Apply a command from the admin API.
    pub async fn apply(&mut self, req: crate::control::Request) {
        let result = match req.command {
            Command::LoggedIn => self.signed_in(&req.profile).await,
            Command::LoggedOut => self.signed_out(&req.profile).await,
        };
        let _ = req.reply.send(result);
    }

    /// Apply new `[server]` serving options to every per-profile listener.
    pub fn set_defaults(&mut self, defaults: ListenerDefaults) {
        if defaults == self.defaults {
            return;
        }
        self.defaults = defaults;
        for (name, r) in &self.profiles {
            if let Some(l) = &r.listener {
                l.state.set_view(self.view_for(name, l.addr));
            }
        }
    }

    /// Wake every refresher (SIGHUP).
    pub fn wake_all(&self, w: Wake) {
        for r in self.profiles.values() {
            let _ = r.wake.try_send(w);
        }
    }

    /// (Re)build the refresh-token watch for the current profiles.
    pub fn watch_token_files(&mut self) {
        let files: Vec<(PathBuf, mpsc::Sender<Wake>, Wake)> = self
            .profiles
            .values()
            .filter_map(|r| {
                let f = r.config.login.refresh_token_file()?;
                Some((f.to_path_buf(), r.wake.clone(), Wake::TokenFileChanged))
            })
            .collect();
        self.token_watch = None;
        match watcher::watch(files) {
            Ok(w) => self.token_watch = Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "file watching unavailable; send SIGHUP after writing a new refresh token")
            }
        }
    }

    async fn spawn_refresher(
        &self,
        profile: &ProfileConfig,
    ) -> Result<(CancellationToken, mpsc::Sender<Wake>, ProfileEntry), String> {
        let source = self
            .factory
            .build(profile)
            .await
            .map_err(|e| format!("profile {}: {e}", profile.name))?;
        let (store, reader) = ProfileStore::new();
        let entry = ProfileEntry {
            info: Arc::new(profile_info(profile)),
            reader,
        };
        let (tx, rx) = mpsc::channel(8);
        let cancel = self.root.child_token();
        let settings = refresher::Settings {
            profile: profile.name.clone(),
            refresh_before: profile.refresh_before,
            refresh_token_file: profile.login.refresh_token_file().map(Path::to_path_buf),
            metrics: self.shared.metrics.refresh_counters(&profile.name),
        };
        self.tracker.spawn(
            refresher::run(
                Arc::new(source),
                store,
                self.clock.clone(),
                settings,
                rx,
                cancel.clone(),
            )
            .instrument(tracing::info_span!("refresher", profile = %profile.name)),
        );
        Ok((cancel, tx, entry))
    }

    fn view_for(&self, name: &str, addr: SocketAddr) -> ListenerView {
        ListenerView {
            imds_profile: name.to_owned(),
            imds: true,
            imds_v1: self.defaults.imds_v1,
            ecs: false,
            hosts: ServerState::host_allow_list(addr, &self.defaults.allowed_hosts),
            access: self.defaults.access.clone(),
        }
    }

    async fn bind_listener(&self, profile: &ProfileConfig) -> Option<ImdsListener> {
        let want = profile.imds_listen?;
        match server::bind(want) {
            Ok(l) => Some(self.spawn_listener(&profile.name, l)),
            Err(e) => {
                tracing::error!(profile = %profile.name, key = %format!("profiles.{}.imds_listen", profile.name), addr = %want, error = %e, "cannot listen; this profile's IMDS port is not served");
                None
            }
        }
    }

    fn spawn_listener(&self, name: &str, listener: tokio::net::TcpListener) -> ImdsListener {
        let addr = listener
            .local_addr()
            .unwrap_or_else(|_| ([127, 0, 0, 1], 0).into());
        let state = Arc::new(ServerState::new(
            self.shared.clone(),
            self.view_for(name, addr),
        ));
        let cancel = self.root.child_token();
        let router = server::router(state.clone());
        let stop = cancel.clone();
        self.tracker.spawn(
            async move {
                if let Err(e) = server::serve(
                    listener,
                    router,
                    server::Limits::default(),
                    stop.cancelled_owned(),
                )
                .await
                {
                    tracing::error!(error = %e, "IMDS listener failed");
                }
            }
            .instrument(tracing::info_span!("imds_listener", profile = %name)),
        );
        tracing::info!(profile = %name, addr = %addr, "serving this profile's IMDS on its own port");
        ImdsListener {
            addr,
            state,
            cancel,
        }
    }
}
