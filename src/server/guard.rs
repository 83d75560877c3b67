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

use super::ServerState;
use crate::net::is_loopback;

const FORWARDING: [&str; 3] = ["x-forwarded-for", "forwarded", "x-real-ip"];

fn refuse(reason: &'static str) -> Response {
    tracing::debug!(reason, "request refused");
    (
        StatusCode::FORBIDDEN,
        [(header::CONTENT_TYPE, "text/plain")],
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
    next.run(req).await
}
