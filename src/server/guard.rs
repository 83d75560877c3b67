//! Request guards applied to every route, before routing.
//!
//! * **Loopback peers only.** Defence in depth: the listener is loopback-only
//!   by configuration, but a misrouted packet or a future bind change must not
//!   turn this into a network credential server.
//! * **`Host` allow-list** (`127.0.0.1:PORT`, `localhost:PORT`, `[::1]:PORT`,
//!   `server.allowed_hosts`): a web page can point a DNS name it controls at
//!   127.0.0.1 (DNS rebinding) and then read same-origin responses; its
//!   requests carry the attacker's host name, so they stop here (aws-vault
//!   #578, EKS Pod Identity agent's `validateRequestTargetHost`).
//! * **No forwarded requests.** `X-Forwarded-For`/`Forwarded`/`X-Real-IP` mean
//!   a proxy relayed the request (SSRF), which real IMDS refuses too.
//! * **No browsers.** `Origin`, any `Sec-Fetch-*` header, or a `Mozilla/` user
//!   agent: SDKs send none of them. No CORS headers are ever sent.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::trail::Refusal;
use super::{Caller, ListenerView, ServerState};
use crate::net::is_loopback;

const FORWARDING: [&str; 3] = ["x-forwarded-for", "forwarded", "x-real-ip"];

fn refuse(reason: &'static str) -> Response {
    tracing::debug!(reason, "request refused");
    (
        StatusCode::FORBIDDEN,
        [(header::CONTENT_TYPE, "text/plain")],
        axum::Extension(Refusal(reason.to_owned())),
        "forbidden",
    )
        .into_response()
}

fn host_allowed(hosts: &[String], host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    hosts.contains(&host)
}

fn browser(headers: &HeaderMap) -> bool {
    headers.contains_key(header::ORIGIN)
        || headers.keys().any(|k| k.as_str().starts_with("sec-fetch-"))
        || headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ua| ua.starts_with("Mozilla/"))
}

/// The metrics listener's only guard: no browser-sent or forwarded requests.
pub async fn no_browsers(req: Request, next: Next) -> Response {
    let headers = req.headers();
    if FORWARDING.iter().any(|h| headers.contains_key(*h)) {
        return refuse("forwarded request");
    }
    if browser(headers) {
        return refuse("browser request");
    }
    next.run(req).await
}

/// The guard middleware.
pub async fn guard(
    State(state): State<Arc<ServerState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    if !is_loopback(peer.ip()) {
        return refuse("peer is not loopback");
    }
    let headers = req.headers();
    if FORWARDING.iter().any(|h| headers.contains_key(*h)) {
        return refuse("forwarded request");
    }
    if browser(headers) {
        return refuse("browser request");
    }
    // More than one Host line is malformed (RFC 9112 §3.2: 400), and a guard
    // that read only the first one could be steered by the second.
    if headers.get_all(header::HOST).iter().nth(1).is_some() {
        tracing::debug!(reason = "duplicate Host", "request refused");
        return (
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, "text/plain")],
            "bad request",
        )
            .into_response();
    }
    let view = state.view();
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    match host {
        Some(h) if host_allowed(&view.hosts, h) => {}
        _ => return refuse("host not allowed"),
    }
    // Absolute-form targets (`GET http://evil/…`) must name an allowed host too.
    if let Some(auth) = req.uri().authority()
        && !host_allowed(&view.hosts, auth.as_str())
    {
        return refuse("request target host not allowed");
    }
    if let Some(r) = uid_refusal(&state, &view, &req) {
        return r;
    }
    next.run(req).await
}

/// The profile a path reads credentials of, if any.
fn profile_of<'a>(path: &'a str, view: &'a ListenerView) -> Option<&'a str> {
    if let Some(rest) = path.strip_prefix("/v1/credentials") {
        let name = rest.trim_matches('/');
        return Some(if name.is_empty() {
            &view.imds_profile
        } else {
            name
        });
    }
    (path.starts_with("/latest/") || path.ends_with("/api/token")).then_some(&view.imds_profile)
}

/// Refuse a caller whose uid `server.allowed_uids` (or the profile's own
/// list) does not name — or whose uid is unknown while a list applies. The
/// health routes hold no secret and answer anyone who passed the other guards.
fn uid_refusal(state: &ServerState, view: &ListenerView, req: &Request) -> Option<Response> {
    let path = req.uri().path();
    if path == "/healthz" || path == "/readyz" {
        return None;
    }
    let conn = req.extensions().get::<Caller>().map(|c| c.0.clone());
    let profile = profile_of(path, view);
    let own = profile
        .and_then(|p| state.shared.registry.get(p))
        .and_then(|e| e.info.access.clone());
    let checks = [
        (Some(&view.access), "server.allowed_uids".to_owned()),
        (
            own.as_ref(),
            format!("profiles.{}.allowed_uids", profile.unwrap_or("")),
        ),
    ];
    for (access, key) in checks {
        let Some(access) = access.filter(|a| a.restricted()) else {
            continue;
        };
        // Looked up only here, where a list applies.
        match conn.as_ref().and_then(|c| c.who()) {
            Some(c) if access.allows(c.uid) => {}
            Some(c) => return Some(uid_refused(state, Some(c.uid), &key)),
            None => return Some(uid_refused(state, None, &key)),
        }
    }
    None
}

fn uid_refused(state: &ServerState, uid: Option<u32>, key: &str) -> Response {
    let who = uid.map_or_else(|| "an unknown user".to_owned(), |u| format!("uid {u}"));
    let now = std::time::Instant::now();
    let mut seen = state.refusals.lock().unwrap_or_else(|p| p.into_inner());
    let slot = uid.unwrap_or(u32::MAX);
    if seen
        .get(&slot)
        .is_none_or(|t| now.duration_since(*t) > std::time::Duration::from_secs(60))
    {
        seen.insert(slot, now);
        tracing::warn!(caller = %who, key, "refused a local caller (logged once a minute per uid)");
    }
    (
        StatusCode::FORBIDDEN,
        [(header::CONTENT_TYPE, "text/plain")],
        axum::Extension(Refusal(format!("{who} not allowed by {key}"))),
        format!("forbidden: {who} may not read these credentials (allowed by {key})\n"),
    )
        .into_response()
}
