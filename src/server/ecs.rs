//! ECS container-credentials endpoint (`AWS_CONTAINER_CREDENTIALS_FULL_URI`).
//!
//! Wire contract (protocol.md 2.3, 3.2, 3.4):
//! * `GET /v1/credentials/<profile>` (and `/v1/credentials` for the IMDS
//!   profile). `Authorization` must equal the token **byte for byte** (no
//!   scheme, no trimming), compared in constant time. SDKs send the raw value
//!   of `AWS_CONTAINER_AUTHORIZATION_TOKEN[_FILE]`.
//! * 200 `application/json` `{AccessKeyId, SecretAccessKey, Token,
//!   Expiration, AccountId?, RoleArn?}`.
//! * Errors are `application/json` `{"code","message"}` (Go parses them only
//!   with that content type): 401 bad token, 404 unknown profile, 503 no valid
//!   credentials. Authorization is checked before anything else, so an
//!   unauthenticated caller learns nothing, not even profile names.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::{SERVE_MARGIN, ServerState};
use crate::secret::ExposeSecret;

/// A JSON error body.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "code": code, "message": message }).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Does the request carry the ECS token? Constant time in the token's content.
pub fn authorized(st: &ServerState, headers: &HeaderMap) -> bool {
    let Some(given) = headers.get(header::AUTHORIZATION) else {
        return false;
    };
    let want = st.shared.ecs_token.expose_secret().as_bytes();
    !want.is_empty() && bool::from(given.as_bytes().ct_eq(want))
}

fn serve_profile(st: &ServerState, headers: &HeaderMap, name: &str) -> Response {
    if !authorized(st, headers) {
        return error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "missing or invalid Authorization token",
        );
    }
    let Some(p) = st.shared.registry.get(name) else {
        return error(StatusCode::NOT_FOUND, "NotFound", "no such profile");
    };
    let snap = p.reader.borrow();
    let now = st.shared.clock.now();
    match &snap.served {
        Some(s) if s.usable_at(now, SERVE_MARGIN) => {
            super::log_served(name, "ecs", s, now);
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                s.ecs.clone(),
            )
                .into_response()
        }
        _ => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "CredentialsUnavailable",
            &format!("no valid credentials (state: {})", snap.state.as_str()),
        ),
    }
}

/// `GET /v1/credentials/<profile>`.
pub async fn credentials(
    State(st): State<Arc<ServerState>>,
    Path(profile): Path<String>,
    headers: HeaderMap,
) -> Response {
    serve_profile(&st, &headers, &profile)
}

/// `GET /v1/credentials`: the IMDS profile.
pub async fn credentials_default(
    State(st): State<Arc<ServerState>>,
    headers: HeaderMap,
) -> Response {
    let profile = st.view().imds_profile.clone();
    serve_profile(&st, &headers, &profile)
}
