//! Health and status routes.
//!
//! * `GET /healthz`: the process is alive (always 200).
//! * `GET /readyz`: 200 only when **every** profile has valid credentials.
//! * `GET /metrics`: Prometheus/OpenMetrics text ([`crate::metrics`]); the
//!   per-profile gauges are read from the snapshots at scrape time.
//! * `GET /v1/status` (ECS token required): per-profile state, expiry, next
//!   refresh and last error kind. Never a secret: the access key id appears
//!   only as its last four characters.
//! * `POST /v1/profiles/{p}/login` and `/logout` (ECS token required): sent
//!   by `credbroker login`/`logout` once the token is stored or deleted; the
//!   app refreshes at once or drops the credentials at once. Answer: the
//!   profiles affected (those sharing the sign-in).

use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{SERVE_MARGIN, ServerState, ecs};
use crate::control::{Command, Refusal};
use crate::creds::rfc3339;
use crate::store::ProfileEntry;

/// `GET /healthz`.
pub async fn healthz() -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], "ok").into_response()
}

fn usable(p: &ProfileEntry, now: SystemTime) -> bool {
    p.reader
        .borrow()
        .served
        .as_ref()
        .is_some_and(|s| s.usable_at(now, SERVE_MARGIN))
}

/// `GET /readyz`.
pub async fn readyz(State(st): State<Arc<ServerState>>) -> Response {
    let now = st.shared.clock.now();
    let all = st.shared.registry.all();
    let ready = !all.is_empty() && all.iter().all(|(_, p)| usable(p, now));
    let (code, body) = if ready {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    };
    (code, [(header::CONTENT_TYPE, "text/plain")], body).into_response()
}

/// `GET /metrics`.
pub async fn metrics(State(st): State<Arc<ServerState>>) -> Response {
    let now = st.shared.clock.now();
    let samples: Vec<crate::metrics::ProfileSample> = st
        .shared
        .registry
        .all()
        .iter()
        .map(|(name, p)| {
            let s = p.reader.borrow();
            crate::metrics::ProfileSample {
                profile: name.clone(),
                expires_in: s
                    .served
                    .as_ref()
                    .map(|c| seconds_between(now, c.expiration)),
                login_required: s.state == crate::store::State::LoginRequired,
            }
        })
        .collect();
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        st.shared.metrics.render(&samples),
    )
        .into_response()
}

/// `to − from` in seconds, negative when `to` is earlier.
fn seconds_between(from: SystemTime, to: SystemTime) -> f64 {
    match to.duration_since(from) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// The status document for one profile.
pub fn profile_status(p: &ProfileEntry, now: SystemTime) -> Value {
    let s = p.reader.borrow();
    let state = s.shown_state(now, SERVE_MARGIN);
    let ts = |t: Option<SystemTime>| t.map(rfc3339);
    json!({
        "state": state,
        "login": p.info.login_kind,
        "flow": p.info.flow,
        "role_name": p.info.role_name,
        "region": p.info.region,
        "refresh_token_file": p.info.refresh_token_file,
        "expiration": ts(s.served.as_ref().map(|c| c.expiration)),
        "access_key_id_suffix": s.served.as_ref().map(|c| c.key_suffix.clone()),
        "guest": s.served.as_ref().map(|c| c.guest),
        "last_refresh": ts(s.last_refresh),
        "next_refresh": ts(s.next_refresh),
        "refreshes": s.refreshes,
        "failures": s.failures,
        "last_error": s.last_error.as_ref().map(|e| json!({
            "kind": e.kind,
            "message": e.message,
            "at": rfc3339(e.at),
        })),
    })
}

/// `GET /v1/status`.
pub async fn status(State(st): State<Arc<ServerState>>, headers: HeaderMap) -> Response {
    if !ecs::authorized(&st, &headers) {
        return ecs::error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "missing or invalid Authorization token",
        );
    }
    let now = st.shared.clock.now();
    let profiles: serde_json::Map<String, Value> = st
        .shared
        .registry
        .all()
        .iter()
        .map(|(name, p)| {
            let mut v = profile_status(p, now);
            v["callers"] = json!(st.shared.audit.recent(name));
            (name.clone(), v)
        })
        .collect();
    let body = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "now": rfc3339(now),
        "imds_profile": st.view().imds_profile,
        "config_error": st.shared.config_error(),
        "profiles": profiles,
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string_pretty(&body).unwrap_or_default(),
    )
        .into_response()
}

/// `POST /v1/profiles/{profile}/login`.
pub async fn logged_in(
    State(st): State<Arc<ServerState>>,
    Path(profile): Path<String>,
    headers: HeaderMap,
) -> Response {
    command(&st, &headers, &profile, Command::LoggedIn).await
}

/// `POST /v1/profiles/{profile}/logout`.
pub async fn logged_out(
    State(st): State<Arc<ServerState>>,
    Path(profile): Path<String>,
    headers: HeaderMap,
) -> Response {
    command(&st, &headers, &profile, Command::LoggedOut).await
}

async fn command(st: &ServerState, headers: &HeaderMap, profile: &str, cmd: Command) -> Response {
    if !st.view().ecs {
        return ecs::error(StatusCode::NOT_FOUND, "NotFound", "not served on this port");
    }
    if !ecs::authorized(st, headers) {
        return ecs::error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "missing or invalid Authorization token",
        );
    }
    let Some(control) = st.shared.control.get() else {
        return ecs::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "Unavailable",
            "this daemon takes no commands",
        );
    };
    let answer = tokio::time::timeout(COMMAND_TIMEOUT, control.send(profile, cmd)).await;
    match answer {
        Ok(Ok(profiles)) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            json!({ "profiles": profiles }).to_string(),
        )
            .into_response(),
        Ok(Err(Refusal::UnknownProfile(_))) => {
            ecs::error(StatusCode::NOT_FOUND, "NotFound", "no such profile")
        }
        Ok(Err(e @ Refusal::Invalid(_))) => {
            ecs::error(StatusCode::BAD_REQUEST, "Invalid", &e.to_string())
        }
        Ok(Err(e @ Refusal::Unavailable)) => ecs::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "Unavailable",
            &e.to_string(),
        ),
        Err(_) => ecs::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "Unavailable",
            "the daemon did not apply the command in time",
        ),
    }
}

/// How long a login/logout command may take to apply (it restarts or stops
/// refreshers; no upstream call is waited for).
const COMMAND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
