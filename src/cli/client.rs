//! The client of the running daemon, shared by every command that talks to
//! it (`status`, `env`, `exec`, `credential-process`, `doctor`).
//!
//! * **Where it is:** `daemon.json` in `server.runtime_dir` (the daemon may
//!   have bound port 0), else `server.listen`. The runtime directory must be
//!   ours (another user who created it first could point `daemon.json`
//!   anywhere, and we send the ECS token there), and every address in it must
//!   be loopback: anything else is refused with an error naming the file.
//! * **How we authenticate:** the ECS token (`server.ecs_token_file`), sent
//!   raw as `Authorization`, as SDKs do.
//! * **How we talk:** plain HTTP to loopback with reqwest, never through a
//!   proxy, never following a redirect, with short timeouts (the daemon
//!   answers from memory; a slow answer means something else is listening).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::Error;
use crate::app::{DAEMON_FILE, DaemonInfo};
use crate::config::Config;
use crate::secret::{ExposeSecret, SecretString};

/// Connect timeout to the daemon (loopback: a refused or silent port is
/// known at once).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Whole-request timeout to the daemon.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// States in which a profile serves valid credentials.
pub const SERVING: [&str; 2] = ["ready", "retrying"];

/// `http://host:port` for an address (IPv6 in brackets).
pub fn base_url(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => format!("http://{}:{}", a.ip(), a.port()),
        SocketAddr::V6(a) => format!("http://[{}]:{}", a.ip(), a.port()),
    }
}

/// Where the daemon listens, and how we know.
#[derive(Debug, Clone)]
pub struct Located {
    /// The main listener (IMDS, ECS, admin routes).
    pub addr: SocketAddr,
    /// Per-profile IMDS listeners, as bound (empty without `daemon.json`).
    pub imds_listeners: BTreeMap<String, SocketAddr>,
    /// The daemon's pid, when `daemon.json` named one.
    pub pid: Option<u32>,
    /// The path of `daemon.json`, when it was read (else `server.listen` is used).
    pub daemon_file: Option<PathBuf>,
}

/// Find the daemon: `daemon.json` (checked), else the configured address.
pub fn locate(cfg: &Config) -> Result<Located, Error> {
    let dir = &cfg.server.runtime_dir;
    let path = dir.join(DAEMON_FILE);
    let fallback = Located {
        addr: cfg.server.listen,
        imds_listeners: BTreeMap::new(),
        pid: None,
        daemon_file: None,
    };
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(fallback);
    };
    crate::fsutil::check_private_dir(dir)
        .map_err(|e| Error::Usage(format!("server.runtime_dir: {e}")))?;
    let Ok(info) = serde_json::from_str::<DaemonInfo>(&text) else {
        return Ok(fallback);
    };
    let named = std::iter::once(info.listen).chain(info.imds_listeners.values().copied());
    for addr in named {
        if !crate::net::is_loopback(addr.ip()) {
            return Err(Error::Usage(format!(
                "{} names {addr}, which is not a loopback address; refusing to use it \
                 (remove the file; a running daemon writes it again on start)",
                path.display()
            )));
        }
    }
    Ok(Located {
        addr: info.listen,
        imds_listeners: info.imds_listeners,
        pid: Some(info.pid),
        daemon_file: Some(path),
    })
}

/// The daemon's live address (from `daemon.json`), else the configured one.
pub fn daemon_addr(cfg: &Config) -> Result<SocketAddr, Error> {
    Ok(locate(cfg)?.addr)
}

/// Read the ECS token: unsafe modes are the user's to fix (64); a missing
/// file means no daemon ever ran with this config (69).
pub fn read_ecs_token(cfg: &Config) -> Result<SecretString, Error> {
    let path = &cfg.server.ecs_token_file;
    let read = if cfg.server.ecs_token_group_readable {
        crate::fsutil::read_group_shared_secret_file(path)
    } else {
        crate::fsutil::read_secret_file(path)
    };
    read.map(crate::secret::secret).map_err(|e| match e.kind() {
        std::io::ErrorKind::PermissionDenied => Error::Usage(format!("server.ecs_token_file: {e}")),
        std::io::ErrorKind::NotFound => Error::Unavailable(format!(
            "the ECS token file {} does not exist: the daemon creates it when it starts; \
                 start it with `credbroker serve`",
            path.display()
        )),
        _ => Error::Unavailable(format!(
            "cannot read the ECS token file {}: {e} (is the daemon running?)",
            path.display()
        )),
    })
}

/// An HTTP client for loopback: no proxy, no redirects, short timeouts.
pub fn loopback_http() -> Result<reqwest::Client, Error> {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .user_agent(concat!("credbroker-cli/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| Error::Other(format!("cannot build the HTTP client: {e}")))
}

/// Credentials as the daemon's ECS endpoint serves them. `Debug` shows the
/// access key id's suffix only.
pub struct EcsCredentials {
    /// `AccessKeyId`.
    pub access_key_id: String,
    /// `SecretAccessKey`.
    pub secret_access_key: SecretString,
    /// `Token` (the session token).
    pub session_token: SecretString,
    /// `Expiration` (`YYYY-MM-DDTHH:MM:SSZ`).
    pub expiration: String,
    /// `AccountId`, when the daemon knows it.
    pub account_id: Option<String>,
}

impl std::fmt::Debug for EcsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EcsCredentials")
            .field(
                "access_key_id",
                &format!("…{}", crate::secret::key_suffix(&self.access_key_id)),
            )
            .field("expiration", &self.expiration)
            .finish_non_exhaustive()
    }
}

impl EcsCredentials {
    /// Parse the ECS JSON document; `None` when a field is missing or empty.
    pub fn parse(body: &str) -> Option<EcsCredentials> {
        let v: Value = serde_json::from_str(body).ok()?;
        let field = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        Some(EcsCredentials {
            access_key_id: field("AccessKeyId")?,
            secret_access_key: crate::secret::secret(field("SecretAccessKey")?),
            session_token: crate::secret::secret(field("Token")?),
            expiration: field("Expiration")?,
            account_id: field("AccountId"),
        })
    }
}

/// The status document (`GET /v1/status`).
#[derive(Debug, Clone)]
pub struct StatusDoc {
    /// The body as served.
    pub body: String,
    /// The body parsed.
    pub value: Value,
}

impl StatusDoc {
    /// One profile's entry, if the daemon serves it.
    pub fn profile(&self, name: &str) -> Option<&Value> {
        self.value["profiles"].get(name)
    }

    /// A profile's state (`ready`, `login_required`, …), if it is served.
    pub fn state(&self, name: &str) -> Option<&str> {
        self.profile(name)?.get("state")?.as_str()
    }
}

/// What to tell a user whose profile serves no credentials, from its status
/// entry: which state, why, and what to do. One line.
pub fn not_serving_hint(name: &str, p: &Value) -> String {
    let state = p["state"].as_str().unwrap_or("unknown");
    let why = last_error(p).map(|m| format!(": {m}")).unwrap_or_default();
    match state {
        // The daemon's own message says the same at length; the file is what matters.
        "login_required" => {
            let file = p["refresh_token_file"]
                .as_str()
                .unwrap_or("its refresh-token file");
            format!(
                "profile {name} needs a new login: run `credbroker login --profile {name}` \
                 (or write a fresh refresh token to {file}; the daemon picks it up at once; \
                 `credbroker status` shows why)"
            )
        }
        "logged_out" => {
            format!("profile {name} is signed out: run `credbroker login --profile {name}`")
        }
        "starting" => format!(
            "profile {name} has no credentials yet (starting{why}); retry in a few seconds, \
             or see `credbroker status`"
        ),
        "expired" => format!(
            "profile {name}'s credentials expired and refreshing fails{why}; \
             see `credbroker status` and `credbroker doctor`"
        ),
        other => format!("profile {name} serves no valid credentials (state: {other}{why})"),
    }
}

/// A profile's last error message, on one line.
pub fn last_error(p: &Value) -> Option<String> {
    p["last_error"]["message"]
        .as_str()
        .map(|m| m.replace('\n', " "))
}

/// A connection to the running daemon.
pub struct DaemonClient {
    located: Located,
    base: String,
    token: SecretString,
    token_file: PathBuf,
    http: reqwest::Client,
}

impl std::fmt::Debug for DaemonClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DaemonClient")
            .field("located", &self.located)
            .finish_non_exhaustive()
    }
}

/// A raw answer from the daemon (for `doctor`'s protocol checks).
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: reqwest::header::HeaderMap,
    /// Body text.
    pub body: String,
}

impl Answer {
    /// A header as text ("" when absent or not text).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

impl DaemonClient {
    /// Locate the daemon and read the ECS token (no request yet).
    pub fn connect(cfg: &Config) -> Result<DaemonClient, Error> {
        let located = locate(cfg)?;
        let token = read_ecs_token(cfg)?;
        Ok(DaemonClient {
            base: base_url(located.addr),
            located,
            token,
            token_file: cfg.server.ecs_token_file.clone(),
            http: loopback_http()?,
        })
    }

    /// Where the daemon is.
    pub fn located(&self) -> &Located {
        &self.located
    }

    /// The main listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.located.addr
    }

    /// `http://host:port` of the main listener.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The ECS token (for `exec --inline-token`).
    pub fn token(&self) -> &SecretString {
        &self.token
    }

    /// The file the ECS token came from.
    pub fn token_file(&self) -> &Path {
        &self.token_file
    }

    /// The error for a daemon that did not answer at `addr`.
    pub fn unreachable(&self, addr: SocketAddr, e: &reqwest::Error) -> Error {
        let what = if e.is_timeout() {
            format!("the daemon at {addr} did not answer in time")
        } else {
            format!("no credbroker daemon answers at {addr}")
        };
        let source = match (&self.located.daemon_file, self.located.pid) {
            (Some(f), Some(pid)) => format!(
                "{} names it (pid {pid}): was the daemon killed?",
                f.display()
            ),
            _ => "server.listen; no daemon.json in server.runtime_dir".to_owned(),
        };
        Error::Unavailable(format!(
            "{what} ({source}); start it with `credbroker serve`"
        ))
    }

    /// Send a request; no answer is [`Error::Unavailable`] naming `addr`.
    pub async fn send(
        &self,
        req: reqwest::RequestBuilder,
        addr: SocketAddr,
    ) -> Result<Answer, Error> {
        let resp = req.send().await.map_err(|e| self.unreachable(addr, &e))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .text()
            .await
            .map_err(|e| Error::Other(format!("reading the daemon's answer at {addr}: {e}")))?;
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    /// A request builder to the main listener.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base))
    }

    /// A request builder to another listener of this daemon (a per-profile IMDS port).
    pub fn request_to(
        &self,
        addr: SocketAddr,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", base_url(addr)))
    }

    /// A GET to the main listener with the ECS token.
    async fn get_authorized(&self, path: &str) -> Result<Answer, Error> {
        let req = self
            .request(reqwest::Method::GET, path)
            .header(reqwest::header::AUTHORIZATION, self.token.expose_secret());
        self.send(req, self.addr()).await
    }

    fn refused_token(&self) -> Error {
        Error::Other(format!(
            "the daemon at {} refused the ECS token in {} (was it started with another config? \
             restart it)",
            self.addr(),
            self.token_file.display()
        ))
    }

    /// `POST /v1/profiles/<profile>/<action>` (`login`, `logout`): the
    /// profiles the daemon applied it to.
    pub async fn command(&self, profile: &str, action: &str) -> Result<Vec<String>, Error> {
        let req = self
            .request(
                reqwest::Method::POST,
                &format!("/v1/profiles/{profile}/{action}"),
            )
            .header(reqwest::header::AUTHORIZATION, self.token.expose_secret());
        let a = self.send(req, self.addr()).await?;
        let message = || {
            serde_json::from_str::<Value>(&a.body)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_owned))
                .unwrap_or_default()
        };
        match a.status {
            200 => Ok(serde_json::from_str::<Value>(&a.body)
                .ok()
                .and_then(|v| serde_json::from_value(v["profiles"].clone()).ok())
                .unwrap_or_default()),
            401 => Err(self.refused_token()),
            404 => Err(Error::Usage(format!(
                "the daemon at {} does not know profile {profile:?} (started with another \
                 config? restart it)",
                self.addr()
            ))),
            400 => Err(Error::Usage(message())),
            code => Err(Error::Other(format!(
                "the daemon at {} answered HTTP {code} to {action}: {}",
                self.addr(),
                message()
            ))),
        }
    }

    /// `GET /v1/status`.
    pub async fn status(&self) -> Result<StatusDoc, Error> {
        let a = self.get_authorized("/v1/status").await?;
        match a.status {
            200 => {}
            401 => return Err(self.refused_token()),
            code => {
                return Err(Error::Unavailable(format!(
                    "the daemon at {} answered /v1/status with HTTP {code} \
                     (is something other than credbroker listening there?)",
                    self.addr()
                )));
            }
        }
        let value: Value = serde_json::from_str(&a.body).map_err(|_| {
            Error::Other(format!("unreadable status document from {}", self.addr()))
        })?;
        Ok(StatusDoc {
            body: a.body,
            value,
        })
    }

    /// `GET /v1/credentials/<profile>`. A profile without valid credentials
    /// is [`Error::NotServing`] with the status document's explanation.
    pub async fn credentials(&self, profile: &str) -> Result<EcsCredentials, Error> {
        let a = self
            .get_authorized(&format!("/v1/credentials/{profile}"))
            .await?;
        match a.status {
            200 => EcsCredentials::parse(&a.body).ok_or_else(|| {
                Error::Other(format!(
                    "the daemon at {} served an unreadable credentials document",
                    self.addr()
                ))
            }),
            401 => Err(self.refused_token()),
            404 => Err(Error::Usage(format!(
                "the daemon at {} does not serve profile {profile:?} (started with another \
                 config? restart it)",
                self.addr()
            ))),
            503 => Err(Error::NotServing(match self.status().await {
                Ok(doc) => doc.profile(profile).map_or_else(
                    || format!("profile {profile} serves no valid credentials"),
                    |p| not_serving_hint(profile, p),
                ),
                Err(_) => format!("profile {profile} serves no valid credentials"),
            })),
            code => Err(Error::Other(format!(
                "the daemon at {} answered HTTP {code} for profile {profile}",
                self.addr()
            ))),
        }
    }
}
