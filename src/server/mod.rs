//! The HTTP side: loopback listeners serving the IMDS routes, the ECS
//! container-credentials routes, and the health/status routes. State is split
//! into [`Shared`] (registry, ECS token, clock: one per daemon) and per
//! listener [`ServerState`] (its [`ListenerView`], swappable by a reload, and
//! its IMDS token table). The main listener serves everything; a per-profile
//! IMDS listener (`profiles.<name>.imds_listen`) serves that profile's IMDS
//! and the health routes only.
//!
//! Handlers only **read** the per-profile snapshots ([`crate::store`]); they
//! never call upstream, so every answer comes from memory.
//!
//! Layer order (outermost first): request timeout → sensitive-header marking
//! → trace span (method + path only) → body limit → [`guard::guard`]
//! (loopback peer, `Host` allow-list, no proxies, no browsers) → the view's
//! route gate → routes.

pub mod admin;
pub mod ecs;
pub mod guard;
pub mod imds;
pub mod tokens;
pub mod trail;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderName, Request, header};
use axum::routing::{get, post, put};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::clock::SharedClock;
use crate::metrics::Metrics;
use crate::secret::SecretString;
use crate::store::Registry;

/// Credentials with less than this left are not handed out: a key that
/// expires while the caller's request is in flight is as bad as an expired one.
pub const SERVE_MARGIN: Duration = Duration::from_secs(15);

/// The IMDS token request header.
pub const TTL_HEADER: HeaderName = HeaderName::from_static("x-aws-ec2-metadata-token-ttl-seconds");
/// The IMDS session token header.
pub const TOKEN_HEADER: HeaderName = HeaderName::from_static("x-aws-ec2-metadata-token");

/// State shared by every listener. Written once at start-up, except the
/// registry, whose entries the app's supervisor adds and removes.
#[derive(Debug)]
pub struct Shared {
    /// Profiles, looked up per request (writer: the supervisor in `app`).
    pub registry: Registry,
    /// The ECS `Authorization` token (read-only after start).
    pub ecs_token: SecretString,
    /// Wall clock.
    pub clock: SharedClock,
    /// Why the last config reload was refused (writer: the app's reload
    /// path; reader: `/v1/status`). `None` when the file on disk is running.
    pub config_error: RwLock<Option<String>>,
    /// Where `POST /v1/profiles/{p}/login|logout` send their command (set
    /// once by the app; unset, those routes answer 503).
    pub control: std::sync::OnceLock<crate::control::Control>,
    /// The daemon's metrics (created by `app`, see [`Shared::with_metrics`];
    /// [`Shared::new`] starts with a private set, for tests and fuzzing).
    pub metrics: Arc<Metrics>,
    /// The audit trail (`audit.log`; set by `app` with [`Shared::with_audit`],
    /// off otherwise). Also the last callers per profile, for `/v1/status`.
    pub audit: crate::audit::Audit,
}

impl Shared {
    /// Shared state with no config error.
    pub fn new(registry: Registry, ecs_token: SecretString, clock: SharedClock) -> Self {
        Shared {
            registry,
            ecs_token,
            clock,
            config_error: RwLock::new(None),
            control: std::sync::OnceLock::new(),
            metrics: Arc::default(),
            audit: crate::audit::Audit::off(),
        }
    }

    /// The same state, counting into `metrics`.
    pub fn with_metrics(self, metrics: Arc<Metrics>) -> Self {
        Shared { metrics, ..self }
    }

    /// The same state, auditing into `audit`.
    pub fn with_audit(self, audit: crate::audit::Audit) -> Self {
        Shared { audit, ..self }
    }

    /// The last reload error, if the running config is not the file's.
    pub fn config_error(&self) -> Option<String> {
        self.config_error
            .read()
            .map(|e| e.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Record (or clear) the reload error.
    pub fn set_config_error(&self, e: Option<String>) {
        *self.config_error.write().unwrap_or_else(|p| p.into_inner()) = e;
    }
}

/// What one listener serves. Replaced whole by a config reload (writer: the
/// app's reload path); handlers read the current one per request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerView {
    /// The profile this listener's IMDS routes serve.
    pub imds_profile: String,
    /// Serve the IMDS routes (else they are 404).
    pub imds: bool,
    /// Accept token-less IMDS GETs.
    pub imds_v1: bool,
    /// Serve the ECS and status routes (the main listener; a per-profile
    /// IMDS listener does not).
    pub ecs: bool,
    /// Accepted `Host` values, lower-case.
    pub hosts: Vec<String>,
    /// Which local users may read credentials here (`server.allowed_uids`).
    pub access: crate::peer::Access,
}

/// The connection a request came on (its client, looked up when first
/// needed, and its audit tally), put into every request's extensions by
/// [`serve`].
#[derive(Debug, Clone)]
pub struct Caller(pub Arc<crate::audit::Connection>);

impl Caller {
    /// A caller that is already known (`None`: unknown), for tests.
    pub fn known(cred: Option<crate::peer::PeerCred>) -> Self {
        let peer = SocketAddr::from(([127, 0, 0, 1], 0));
        Caller(Arc::new(crate::audit::Connection::with_caller(peer, cred)))
    }
}

/// What every handler of one listener can read.
#[derive(Debug)]
pub struct ServerState {
    /// Shared by every listener.
    pub shared: Arc<Shared>,
    /// This listener's view, swappable at run time (readers: the guard and
    /// handlers, per request; writer: [`ServerState::set_view`]).
    view: RwLock<Arc<ListenerView>>,
    /// This listener's IMDSv2 session tokens (writers: the token route).
    pub tokens: tokens::TokenTable,
    /// When each refused uid was last logged (writer: the guard), so a
    /// client retrying in a loop logs once a minute, not per request.
    pub refusals: std::sync::Mutex<std::collections::HashMap<u32, std::time::Instant>>,
}

impl ServerState {
    /// A listener's state.
    pub fn new(shared: Arc<Shared>, view: ListenerView) -> Self {
        ServerState {
            view: RwLock::new(Arc::new(view)),
            tokens: tokens::TokenTable::with_metrics(shared.metrics.token_metrics()),
            refusals: Default::default(),
            shared,
        }
    }

    /// The current view (one reference count; never blocks on a writer for
    /// longer than a pointer swap).
    pub fn view(&self) -> Arc<ListenerView> {
        match self.view.read() {
            Ok(v) => v.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Replace the view (a reload). IMDS tokens stay valid: they are bound to
    /// the listener, not to the profile it serves.
    pub fn set_view(&self, view: ListenerView) {
        let mut w = self.view.write().unwrap_or_else(|p| p.into_inner());
        *w = Arc::new(view);
    }

    /// Accepted `Host` values for a listener on `addr`: the three loopback
    /// spellings (and the bound IP) with the port, plus `extra` entries.
    pub fn host_allow_list(addr: SocketAddr, extra: &[String]) -> Vec<String> {
        let port = addr.port();
        let mut hosts = vec![
            format!("127.0.0.1:{port}"),
            format!("localhost:{port}"),
            format!("[::1]:{port}"),
        ];
        let own = match addr {
            SocketAddr::V4(a) => format!("{}:{port}", a.ip()),
            SocketAddr::V6(a) => format!("[{}]:{port}", a.ip()),
        };
        if !hosts.contains(&own) {
            hosts.push(own);
        }
        if port == 80 {
            hosts.extend(["127.0.0.1".into(), "localhost".into(), "[::1]".into()]);
        }
        hosts.extend(extra.iter().map(|h| h.to_ascii_lowercase()));
        hosts
    }
}

/// The debug event of one served credential fetch: profile, protocol, key
/// suffix and expiry, never the credentials. Its fields are only computed
/// when debug logging is on.
pub(crate) fn log_served(
    profile: &str,
    protocol: &'static str,
    s: &crate::creds::Served,
    now: std::time::SystemTime,
) {
    tracing::debug!(
        profile,
        protocol,
        key = %format_args!("…{}", s.key_suffix),
        expires = %crate::creds::rfc3339(s.expiration),
        expires_in_s = s.expiration.duration_since(now).map_or(0, |d| d.as_secs()),
        "served credentials"
    );
}

/// The route templates requests are counted under in
/// `credbroker_http_requests_total` (see [`route_of`]).
pub const ROUTES: [&str; 14] = [
    "/healthz",
    "/readyz",
    "/metrics",
    "/v1/status",
    "/v1/credentials",
    "/v1/credentials/{profile}",
    "/latest/api/token",
    "/{version}/api/token",
    "/latest/meta-data/iam/security-credentials/",
    "/latest/meta-data/iam/security-credentials/{role}",
    "/latest/meta-data/iam/security-credentials-extended/",
    "/latest/meta-data/iam/security-credentials-extended/{role}",
    "/latest/other",
    "other",
];

/// The index in [`ROUTES`] of the template a request path counts under: a
/// fixed string, so neither a client (`/v1/credentials/<anything>`) nor a
/// scanner can create new series.
pub fn route_of(path: &str) -> usize {
    const CREDS: &str = "/latest/meta-data/iam/security-credentials";
    const EXTENDED: &str = "/latest/meta-data/iam/security-credentials-extended";
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    match trimmed {
        "/healthz" => return 0,
        "/readyz" => return 1,
        "/metrics" => return 2,
        "/v1/status" => return 3,
        "/v1/credentials" => return 4,
        "/latest/api/token" => return 6,
        CREDS => return 8,
        EXTENDED => return 10,
        _ => {}
    }
    if trimmed.starts_with("/v1/credentials/") {
        5
    } else if trimmed.starts_with(EXTENDED) {
        11
    } else if trimmed.starts_with(CREDS) {
        9
    } else if trimmed.ends_with("/api/token") {
        7
    } else if trimmed.starts_with("/latest/") || trimmed == "/latest" {
        12
    } else {
        13
    }
}

/// Count every request (refused, timed out or served) by route and status.
async fn count(
    axum::extract::State(counters): axum::extract::State<Arc<crate::metrics::RequestCounters>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let route = route_of(req.uri().path());
    let resp = next.run(req).await;
    counters.inc(route, resp.status().as_u16());
    resp
}

/// Routes a listener's view turns off answer 404, as if absent.
async fn gate(
    axum::extract::State(state): axum::extract::State<Arc<ServerState>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let view = state.view();
    let path = req.uri().path();
    // `/metrics` belongs to the main listener (and the metrics listener),
    // like the status route.
    let is_ecs = path == "/v1/credentials" || path.starts_with("/v1/") || path == "/metrics";
    let is_imds = path.starts_with("/latest/") || path.ends_with("/api/token");
    if (is_ecs && !view.ecs) || (is_imds && !view.imds) {
        return (axum::http::StatusCode::NOT_FOUND, "not found").into_response();
    }
    next.run(req).await
}

/// The whole router; what the listener's view turns off answers 404.
pub fn router(state: Arc<ServerState>) -> Router {
    // A listener is the main one or a per-profile IMDS port for its life.
    let listener = if state.view().ecs { "main" } else { "imds" };
    Router::new()
        .route("/healthz", get(admin::healthz))
        .route("/readyz", get(admin::readyz))
        .route("/v1/status", get(admin::status))
        .route("/v1/profiles/{profile}/login", post(admin::logged_in))
        .route("/v1/profiles/{profile}/logout", post(admin::logged_out))
        .route("/metrics", get(admin::metrics))
        .route("/v1/credentials", get(ecs::credentials_default))
        .route("/v1/credentials/", get(ecs::credentials_default))
        .route("/v1/credentials/{profile}", get(ecs::credentials))
        .route("/v1/credentials/{profile}/", get(ecs::credentials))
        .route("/latest/api/token", put(imds::token))
            .route("/{version}/api/token", put(imds::versioned_token))
            .route("/latest/meta-data", get(imds::meta_root))
            .route("/latest/meta-data/", get(imds::meta_root))
            .route("/latest/meta-data/iam", get(imds::iam_root))
            .route("/latest/meta-data/iam/", get(imds::iam_root))
            .route(
                "/latest/meta-data/iam/security-credentials",
                get(imds::role_list),
            )
            .route(
                "/latest/meta-data/iam/security-credentials/",
                get(imds::role_list),
            )
            .route(
                "/latest/meta-data/iam/security-credentials/{role}",
                get(imds::role_creds),
            )
            .route(
                "/latest/meta-data/iam/security-credentials/{role}/",
                get(imds::role_creds),
            )
            .route(
                "/latest/meta-data/iam/security-credentials-extended",
                get(imds::role_list),
            )
            .route(
                "/latest/meta-data/iam/security-credentials-extended/",
                get(imds::role_list),
            )
            .route(
                "/latest/meta-data/iam/security-credentials-extended/{role}",
                get(imds::role_creds_extended),
            )
            .route(
                "/latest/meta-data/iam/security-credentials-extended/{role}/",
                get(imds::role_creds_extended),
            )
            .route(
                "/latest/dynamic/instance-identity/document",
                get(imds::identity_document),
            )
            .route(
                "/latest/dynamic/instance-identity/document/",
                get(imds::identity_document),
            )
            .route("/latest/meta-data/placement/region", get(imds::region))
        .route("/latest/meta-data/placement/region/", get(imds::region))
        .fallback(|| async { (axum::http::StatusCode::NOT_FOUND, "not found") })
        .layer(axum::middleware::from_fn_with_state(state.clone(), gate))
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard::guard))
        .layer(axum::middleware::from_fn_with_state(state.clone(), trail::audit))
        .layer(RequestBodyLimitLayer::new(1024))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request<_>| {
                    tracing::debug_span!("request", method = %req.method(), path = %req.uri().path())
                })
                .on_failure(()),
        )
        .layer(SetSensitiveRequestHeadersLayer::new([header::AUTHORIZATION, TOKEN_HEADER]))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(10),
        ))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(state.shared.metrics.request_counters(listener, &ROUTES)),
            count,
        ))
        .with_state(state)
}

/// The router of `server.metrics_listen`: `/metrics`, `/healthz` and
/// `/readyz`, everything else 404. It serves no credentials, so it may be
/// bound to a non-loopback address (a pod IP, for a scraper on the node)
/// and has neither the `Host` allow-list nor the uid check; requests a
/// browser sent are still refused (no page can read it through DNS
/// rebinding).
pub fn metrics_router(shared: Arc<Shared>) -> Router {
    let view = ListenerView {
        imds_profile: String::new(),
        imds: false,
        imds_v1: false,
        ecs: false,
        hosts: Vec::new(),
        access: crate::peer::Access::Any,
    };
    let state = Arc::new(ServerState::new(shared, view));
    Router::new()
        .route("/healthz", get(admin::healthz))
        .route("/readyz", get(admin::readyz))
        .route("/metrics", get(admin::metrics))
        .fallback(|| async { (axum::http::StatusCode::NOT_FOUND, "not found") })
        .layer(axum::middleware::from_fn(guard::no_browsers))
        .layer(RequestBodyLimitLayer::new(1024))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(10),
        ))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(state.shared.metrics.request_counters("metrics", &ROUTES)),
            count,
        ))
        .with_state(state)
}

/// Connection-level limits of [`serve`].
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Open connections at most. More wait, unaccepted, in the kernel's
    /// listen queue until one closes: a client sees a slower answer, never
    /// a reset (a fetch must not fail while credentials exist).
    pub max_connections: usize,
    /// A client must send its request headers within this time (slowloris).
    pub header_read_timeout: Duration,
    /// Largest request head (request line + headers); larger gets 431.
    pub max_header_bytes: usize,
    /// How long in-flight requests may take to finish on shutdown.
    pub drain: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: connection_cap(),
            header_read_timeout: Duration::from_secs(5),
            max_header_bytes: 16 * 1024,
            drain: Duration::from_secs(5),
        }
    }
}

/// Most connections per listener, whatever the descriptor limit allows.
pub const MAX_CONNECTIONS: usize = 4096;
/// Descriptors kept free for everything but client connections: the state
/// files, upstream HTTPS, netlink, the config watcher.
const RESERVED_FDS: u64 = 256;

/// Connections per listener: [`MAX_CONNECTIONS`], or fewer when the soft
/// `RLIMIT_NOFILE` (see [`raise_fd_limit`]) leaves less room; never below 64.
pub fn connection_cap() -> usize {
    let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    let room = usize::try_from(soft.saturating_sub(RESERVED_FDS)).unwrap_or(usize::MAX);
    room.clamp(64, MAX_CONNECTIONS)
}

/// Listen queue length: a burst of new clients (a CI fan-out, a connection
/// cap reached) waits here rather than in SYN retries. The kernel clamps it
/// to `net.core.somaxconn` (4096 by default since Linux 5.4).
pub const LISTEN_BACKLOG: u32 = 1024;

/// Bind a listener on `addr` with [`LISTEN_BACKLOG`] (tokio's `bind` takes
/// std's 128) and `SO_REUSEADDR`, as `TcpListener::bind` sets it.
pub fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Raise the soft descriptor limit to the hard one and return it. systemd
/// (and most logins) start processes at a soft 1024 under a much higher hard
/// limit and expect a server that needs more to raise it itself (systemd.exec
/// `LimitNOFILE=`); nothing of ours uses `select(2)`, the reason for the low
/// default. Failure leaves the limit as it was: [`connection_cap`] adapts.
pub fn raise_fd_limit() -> Option<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let Rlimit { current, maximum } = getrlimit(Resource::Nofile);
    if current != maximum {
        let raised = Rlimit {
            current: maximum,
            maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::debug!(error = %e, "could not raise RLIMIT_NOFILE");
        }
    }
    getrlimit(Resource::Nofile).current
}

/// A connection slot: at once when one is free, else (after a warning at
/// most once a minute) when a connection closes. `None` never happens in
/// practice (the semaphore is never closed).
async fn slot(
    slots: &Arc<tokio::sync::Semaphore>,
    max: usize,
    warned: &mut Option<std::time::Instant>,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    if let Ok(p) = slots.clone().try_acquire_owned() {
        return Some(p);
    }
    if warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
        tracing::warn!(
            max_connections = max,
            "connection limit reached; new connections wait until one closes"
        );
        *warned = Some(std::time::Instant::now());
    }
    slots.clone().acquire_owned().await.ok()
}

/// Serve `router` on `listener` until `shutdown` resolves; then stop
/// accepting, let in-flight requests finish (up to `limits.drain`) and
/// return.
///
/// A hand-rolled accept loop over hyper (rather than `axum::serve`) because
/// a credential endpoint on a shared host needs what that one does not
/// offer: a cap on open connections, a header read timeout, and a bound on
/// the request head size.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt as _;

    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192));
    tokio::pin!(shutdown);
    let local = listener.local_addr().ok();
    let mut last_full_warning: Option<std::time::Instant> = None;
    loop {
        // A slot first, then accept: at the cap, new clients wait in the
        // listen queue (and their kernel's SYN retries) instead of being
        // accepted and reset.
        let permit = tokio::select! {
            p = slot(&slots, limits.max_connections, &mut last_full_warning) => p,
            () = &mut shutdown => break,
        };
        let Some(permit) = permit else { break };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Who connects: looked up in the connection's own task when a request
        // first needs it (a kernel round trip of tens of microseconds), then
        // kept for every later request on it; never in the accept loop.
        let connection = Arc::new(crate::audit::Connection::new(peer, local));
        let on_close = connection.clone();
        let svc = router
            .clone()
            .map_request(move |req: Request<hyper::body::Incoming>| {
                let mut req = req.map(axum::body::Body::new);
                let ext = req.extensions_mut();
                ext.insert(axum::extract::ConnectInfo(peer));
                ext.insert(Caller(connection.clone()));
                req
            });
        let conn = http.serve_connection(
            TokioIo::new(stream),
            hyper_util::service::TowerToHyperService::new(svc),
        );
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
            on_close.finish();
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(drain = ?limits.drain, "connections still open after the drain period");
    }
    Ok(())
}

#[cfg(test)]
mod tests;
