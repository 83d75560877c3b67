//! OAuth2 `refresh_token` grant against an OpenID provider.
//!
//! * The token endpoint comes from OIDC discovery on `issuer` (the document's
//!   `issuer` must match, OIDC Discovery §4.3) or from `token_endpoint`.
//! * The refresh token is **re-read from its file on every refresh**, so a new
//!   login (someone writing the file) is picked up without a restart.
//! * A rotated refresh token is **persisted atomically before the new id_token
//!   is used**. Refreshes are serialized by one mutex: with rotation and reuse
//!   detection (oidc-provider, Okta, Auth0...) presenting an old token revokes
//!   the whole grant.
//! * Public clients send `client_id` in the form; confidential clients use
//!   HTTP Basic (`client_secret_basic`) with the secret read from a file.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::ACCEPT;
use serde::Deserialize;
use tokio::sync::Mutex;
use url::Url;

use crate::clock::SharedClock;
use crate::config::OidcConfig;
use crate::metrics::{Call, UpstreamTimer};
use crate::net::check_upstream_url;
use crate::secret::ExposeSecret;

use super::token_store::{self, RotatingToken, TokenStore, read_client_secret};
use super::{IdToken, UpstreamError, short};

const SERVICE: &str = "oidc";

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    token_endpoint: String,
}

/// A token endpoint's success body (the fields we use). No `Debug`: it
/// holds the refresh token and the id_token.
#[derive(Deserialize)]
pub(crate) struct TokenResponse {
    pub(crate) id_token: Option<String>,
    pub(crate) refresh_token: Option<String>,
}

/// An OAuth error body (RFC 6749 §5.2).
#[derive(Deserialize)]
pub(crate) struct OAuthError {
    pub(crate) error: String,
    pub(crate) error_description: Option<String>,
}

struct Cache {
    id_token: Option<IdToken>,
    /// The refresh token (and a rotated one not saved yet).
    refresh: RotatingToken,
}

/// OIDC refresh-token login.
pub struct OidcLogin {
    cfg: OidcConfig,
    http: reqwest::Client,
    clock: SharedClock,
    token_endpoint: Mutex<Option<Url>>,
    cache: Mutex<Cache>,
    timer: UpstreamTimer,
}

/// Build the HTTP client used for IdP calls: no redirects (a token endpoint
/// that redirects is misconfigured or hostile), bounded timeouts.
pub fn http_client() -> Result<reqwest::Client, UpstreamError> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .user_agent(concat!("credbroker/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| UpstreamError::Local {
            message: format!("cannot build the HTTP client: {e}"),
        })
}

fn transport(e: &reqwest::Error) -> UpstreamError {
    UpstreamError::Transport {
        service: SERVICE,
        message: if e.is_timeout() {
            "timed out".into()
        } else if e.is_connect() {
            "connection failed".into()
        } else {
            "request failed".into()
        },
    }
}

/// What a non-2xx token response means: throttling and 5xx are retryable;
/// an OAuth error (RFC 6749 §5.2) means a human must log in again.
async fn refused(resp: reqwest::Response, store: &dyn TokenStore) -> UpstreamError {
    let status = resp.status();
    if status.as_u16() == 429 {
        return UpstreamError::Throttled {
            service: SERVICE,
            code: "429".into(),
        };
    }
    if status.is_server_error() {
        return UpstreamError::Transport {
            service: SERVICE,
            message: format!("token endpoint: HTTP {status}"),
        };
    }
    match resp.json::<OAuthError>().await {
        Ok(err) => {
            let desc = err
                .error_description
                .as_deref()
                .map(short)
                .unwrap_or_default();
            let what = match err.error.as_str() {
                "invalid_grant" => "the identity provider rejected the refresh token (invalid_grant: revoked, expired or reused)".to_owned(),
                "invalid_client" | "unauthorized_client" => format!("the identity provider rejected the client ({}): check login.client_id / login.client_secret_file", err.error),
                other => format!("the identity provider refused the refresh ({}{}{})", short(other), if desc.is_empty() { "" } else { ": " }, desc),
            };
            store.login_required(&short(&err.error), &what)
        }
        Err(_) => UpstreamError::BadResponse {
            service: SERVICE,
            message: format!("token endpoint: HTTP {status} without an OAuth error body"),
        },
    }
}

impl OidcLogin {
    /// A login for this configuration (no I/O yet).
    pub fn new(cfg: OidcConfig, clock: SharedClock) -> Result<Self, UpstreamError> {
        let store = token_store::open(cfg.token_store, &cfg.refresh_token_file, SERVICE);
        Self::with_store(cfg, store, clock)
    }

    /// A login whose refresh token is kept in `store`.
    pub fn with_store(
        cfg: OidcConfig,
        store: Arc<dyn TokenStore>,
        clock: SharedClock,
    ) -> Result<Self, UpstreamError> {
        Ok(OidcLogin {
            token_endpoint: Mutex::new(cfg.token_endpoint.clone()),
            cfg,
            http: http_client()?,
            clock,
            cache: Mutex::new(Cache {
                id_token: None,
                refresh: RotatingToken::new(store),
            }),
            timer: UpstreamTimer::default(),
        })
    }

    /// Record call latencies into `timer` (else into detached histograms).
    pub fn with_timer(mut self, timer: UpstreamTimer) -> Self {
        self.timer = timer;
        self
    }

    async fn endpoint(&self) -> Result<Url, UpstreamError> {
        let mut ep = self.token_endpoint.lock().await;
        if let Some(u) = ep.as_ref() {
            return Ok(u.clone());
        }
        let issuer = self
            .cfg
            .issuer
            .clone()
            .ok_or_else(|| UpstreamError::Local {
                message: "login.issuer or login.token_endpoint is required".into(),
            })?;
        let base = issuer.as_str().trim_end_matches('/');
        let req = self
            .http
            .get(format!("{base}/.well-known/openid-configuration"))
            .header(ACCEPT, "application/json");
        let resp = self
            .timer
            .time(Call::IdpDiscovery, req.send())
            .await
            .map_err(|e| transport(&e))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(if status.is_server_error() || status.as_u16() == 429 {
                UpstreamError::Transport {
                    service: SERVICE,
                    message: format!("discovery: HTTP {status}"),
                }
            } else {
                UpstreamError::BadResponse {
                    service: SERVICE,
                    message: format!("discovery: HTTP {status} (is login.issuer right?)"),
                }
            });
        }
        let d: Discovery = resp.json().await.map_err(|_| UpstreamError::BadResponse {
            service: SERVICE,
            message: "discovery document is not valid JSON".into(),
        })?;
        if d.issuer.trim_end_matches('/') != base {
            return Err(UpstreamError::BadResponse {
                service: SERVICE,
                message: format!(
                    "discovery issuer {:?} does not match login.issuer {:?}",
                    short(&d.issuer),
                    base
                ),
            });
        }
        let url = Url::parse(&d.token_endpoint).map_err(|_| UpstreamError::BadResponse {
            service: SERVICE,
            message: "discovery token_endpoint is not a URL".into(),
        })?;
        check_upstream_url(&url).map_err(|m| UpstreamError::BadResponse {
            service: SERVICE,
            message: format!("discovered token_endpoint rejected: {m}"),
        })?;
        *ep = Some(url.clone());
        Ok(url)
    }

    /// Drop the cached id_token and any unsaved rotated token.
    pub async fn reset(&self) {
        let mut cache = self.cache.lock().await;
        cache.id_token = None;
        cache.refresh.forget_pending();
    }

    /// The cached id_token if fresh (and not `force`), else a refreshed one.
    pub async fn id_token(&self, force: bool) -> Result<IdToken, UpstreamError> {
        let mut cache = self.cache.lock().await;
        if !force
            && let Some(t) = cache
                .id_token
                .as_ref()
                .filter(|t| t.fresh_at(self.clock.now()))
        {
            return Ok(t.clone());
        }
        let rt = cache.refresh.current()?;
        let endpoint = self.endpoint().await?;
        let mut form: Vec<(&str, &str)> = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", rt.expose_secret()),
        ];
        let scope = self.cfg.scopes.as_ref().map(|s| s.join(" "));
        if let Some(s) = scope.as_deref() {
            form.push(("scope", s));
        }
        let client_secret = read_client_secret(self.cfg.client_secret_file.as_deref())?;
        let mut req = self
            .http
            .post(endpoint.clone())
            .header(ACCEPT, "application/json");
        match &client_secret {
            Some(s) => req = req.basic_auth(&self.cfg.client_id, Some(s.expose_secret())),
            None => form.push(("client_id", &self.cfg.client_id)),
        }
        // From the IdP's answer to a recoverable copy of a rotated token is
        // the crash window: its temp file is opened now, and the answer's
        // body is read and its refresh token written before anything else
        // (the latency metric, the id_token) is looked at.
        let prepared = cache.refresh.prepare();
        let started = std::time::Instant::now();
        let resp = req.form(&form).send().await.map_err(|e| transport(&e));
        let took = started.elapsed();
        let resp = match resp {
            Ok(r) if r.status().is_success() => r,
            other => {
                self.timer.observe(Call::IdpRefresh, took);
                let resp = other?;
                cache.id_token = None;
                let e = refused(resp, cache.refresh.store()).await;
                if e.is_login_required() {
                    cache.refresh.rejected();
                }
                return Err(e);
            }
        };
        let body = resp.bytes().await.map_err(|e| transport(&e));
        let body: Result<TokenResponse, _> = body.and_then(|b| {
            serde_json::from_slice(&b).map_err(|_| UpstreamError::BadResponse {
                service: SERVICE,
                message: "token response is not valid JSON".into(),
            })
        });
        if let Ok(body) = &body {
            // Rotation: the old token is now dead. Persist the new one
            // first (kept in memory if that fails).
            cache
                .refresh
                .rotated(&rt, body.refresh_token.as_deref(), prepared);
        }
        self.timer.observe(Call::IdpRefresh, took);
        {
            let body = body?;
            let id = body.id_token.ok_or_else(|| UpstreamError::BadResponse {
                service: SERVICE,
                message:
                    "token response has no id_token (does the grant include the openid scope?)"
                        .into(),
            })?;
            let tok = IdToken::from_jwt(id);
            cache.id_token = Some(tok.clone());
            Ok(tok)
        }
    }
}
