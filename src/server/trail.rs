//! The audit layer: classifies each credential request (route, profile) and
//! its outcome, and records it on the connection's [`crate::audit::Connection`],
//! which decides what becomes an event. Outside the guard, so refusals by
//! the guard are recorded too; it only reads the request and the response's
//! status and [`Refusal`] reason, never a body.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use super::{Caller, ServerState, route_of};
use crate::audit::{Outcome, Route};

/// Why a response refused the caller, for the audit trail (a response
/// extension set by the guard; a fixed phrase or a uid and a key name).
#[derive(Debug, Clone)]
pub struct Refusal(pub String);

/// The route and profile a credential request reads, `None` for any other.
fn classify(state: &ServerState, req: &Request) -> Option<(Route, String)> {
    if req.method() != Method::GET {
        return None;
    }
    let path = req.uri().path();
    let view = state.view();
    let ecs = match route_of(path) {
        4 => None,
        5 => Some(path.trim_end_matches('/').rsplit('/').next().unwrap_or("")),
        9 | 11 => return Some((Route::Imds, view.imds_profile.clone())),
        _ => return None,
    };
    // Only a configured name goes into the log, never request bytes.
    let profile = match ecs.map(|p| percent_encoding::percent_decode_str(p).decode_utf8_lossy()) {
        None => view.imds_profile.clone(),
        Some(p) if state.shared.registry.get(&p).is_some() => p.into_owned(),
        Some(_) => "<unknown>".to_owned(),
    };
    let cli = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ua| ua.starts_with("credbroker-cli/"));
    Some((
        if cli {
            Route::CredentialProcess
        } else {
            Route::Ecs
        },
        profile,
    ))
}

fn outcome(resp: &Response) -> Outcome {
    if resp.status() == StatusCode::OK {
        return Outcome::Served;
    }
    if let Some(r) = resp.extensions().get::<Refusal>() {
        return Outcome::Refused(r.0.clone());
    }
    Outcome::Refused(
        match resp.status() {
            StatusCode::UNAUTHORIZED => "missing or invalid token",
            StatusCode::NOT_FOUND => "no such profile or role",
            StatusCode::SERVICE_UNAVAILABLE => "no valid credentials to serve",
            StatusCode::REQUEST_TIMEOUT => "request timed out",
            StatusCode::BAD_REQUEST => "bad request",
            _ => "refused",
        }
        .to_owned(),
    )
}

/// The middleware.
pub async fn audit(State(state): State<Arc<ServerState>>, req: Request, next: Next) -> Response {
    let Some((route, profile)) = classify(&state, &req) else {
        return next.run(req).await;
    };
    let conn = req.extensions().get::<Caller>().map(|c| c.0.clone());
    let audit = &state.shared.audit;
    if let Some(c) = &conn {
        // Before answering, while the client surely holds its socket; a
        // no-op when audit is off (then the last callers show a uid only if
        // a uid check looked it up) or after the connection's first time.
        c.resolve(audit).await;
    }
    let resp = next.run(req).await;
    if let Some(conn) = conn {
        conn.record(audit, &profile, route, outcome(&resp));
    }
    resp
}
