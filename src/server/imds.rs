//! EC2 instance metadata (IMDSv2, optional v1) for the listener's profile
//! (`server.imds_profile` on the main listener, the profile itself on a
//! per-profile `imds_listen` port).
//!
//! Wire contract (protocol.md 1.2–1.5, 3.1, 3.4):
//! * `PUT /latest/api/token` needs `X-aws-ec2-metadata-token-ttl-seconds`
//!   in 1..=21600 (else 400) and answers the token as `text/plain` **with the
//!   TTL header echoed** (the Rust and Go SDKs fail without it). No
//!   `Content-Length` is required (the Rust SDK sends none). Version-specific
//!   token paths (`/2021-03-23/api/token`) get 403, as on EC2.
//! * GETs need a valid `X-aws-ec2-metadata-token` (else 401); token-less GETs
//!   are accepted only with `server.imds_v1 = true`. An invalid token is 401
//!   even then.
//! * `security-credentials/` lists the role name with **no trailing newline**
//!   (the Rust SDK panics on one); `security-credentials/<role>` returns the
//!   JSON document; the `-extended` pair adds `AccountId`. An unknown role is
//!   404; no valid credentials is 503. Everything is `text/plain`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::tokens::MAX_TTL;
use super::{SERVE_MARGIN, ServerState, TOKEN_HEADER, TTL_HEADER};
use crate::store::ProfileEntry;

fn text(status: StatusCode, body: impl Into<axum::body::Body>) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain")], body.into()).into_response()
}

/// `PUT /latest/api/token`. The body is read (and so held to the 1 KiB
/// request limit, chunked or not: 413 beyond it) and ignored.
pub async fn token(
    State(st): State<Arc<ServerState>>,
    headers: HeaderMap,
    _body: axum::body::Bytes,
) -> Response {
    let ttl = headers
        .get(&TTL_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<u32>().ok())
        .filter(|t| (1..=MAX_TTL).contains(t));
    let Some(ttl) = ttl else {
        return text(
            StatusCode::BAD_REQUEST,
            "missing or invalid x-aws-ec2-metadata-token-ttl-seconds (1..21600)",
        );
    };
    match st.tokens.issue(st.shared.clock.now(), ttl) {
        Some(tok) => {
            let mut r = text(StatusCode::OK, tok);
            r.headers_mut().insert(TTL_HEADER, HeaderValue::from(ttl));
            r
        }
        None => text(StatusCode::INTERNAL_SERVER_ERROR, "cannot issue a token"),
    }
}

/// `PUT /<version>/api/token`: only `latest` issues tokens (EC2 answers 403).
pub async fn versioned_token(Path(_version): Path<String>) -> Response {
    text(StatusCode::FORBIDDEN, "forbidden")
}

/// Check the session token (or the v1 allowance) for a metadata GET.
/// (The error is the ready-made response; its size does not matter here.)
#[allow(clippy::result_large_err)]
fn authorize(st: &ServerState, headers: &HeaderMap) -> Result<(), Response> {
    match headers.get(&TOKEN_HEADER) {
        Some(v) if st.tokens.is_valid(v.as_bytes(), st.shared.clock.now()) => Ok(()),
        None if st.view().imds_v1 => Ok(()),
        _ => Err(text(StatusCode::UNAUTHORIZED, "unauthorized")),
    }
}

#[allow(clippy::result_large_err)]
fn profile(st: &ServerState) -> Result<ProfileEntry, Response> {
    st.shared
        .registry
        .get(&st.view().imds_profile)
        .ok_or_else(|| text(StatusCode::NOT_FOUND, "not found"))
}

/// `GET /latest/meta-data/`.
pub async fn meta_root(State(st): State<Arc<ServerState>>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&st, &headers) {
        return r;
    }
    text(StatusCode::OK, "iam/\nplacement/")
}

/// `GET /latest/meta-data/iam/`.
pub async fn iam_root(State(st): State<Arc<ServerState>>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&st, &headers) {
        return r;
    }
    text(
        StatusCode::OK,
        "security-credentials/\nsecurity-credentials-extended/",
    )
}

/// `GET …/security-credentials[-extended]/`: the role name, nothing else.
pub async fn role_list(State(st): State<Arc<ServerState>>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&st, &headers) {
        return r;
    }
    match profile(&st) {
        Ok(p) => text(StatusCode::OK, p.info.role_name.clone()),
        Err(r) => r,
    }
}

fn creds(st: &ServerState, headers: &HeaderMap, role: &str, extended: bool) -> Response {
    if let Err(r) = authorize(st, headers) {
        return r;
    }
    let p = match profile(st) {
        Ok(p) => p,
        Err(r) => return r,
    };
    if role != p.info.role_name {
        return text(StatusCode::NOT_FOUND, "not found");
    }
    let served = p.reader.borrow().served.clone();
    let now = st.shared.clock.now();
    match served {
        Some(s) if s.usable_at(now, SERVE_MARGIN) => {
            super::log_served(&st.view().imds_profile, "imds", &s, now);
            text(
                StatusCode::OK,
                if extended {
                    s.imds_extended.clone()
                } else {
                    s.imds.clone()
                },
            )
        }
        _ => text(StatusCode::SERVICE_UNAVAILABLE, "credentials unavailable"),
    }
}

/// `GET …/security-credentials/<role>`.
pub async fn role_creds(
    State(st): State<Arc<ServerState>>,
    Path(role): Path<String>,
    headers: HeaderMap,
) -> Response {
    creds(&st, &headers, &role, false)
}

/// `GET …/security-credentials-extended/<role>` (with `AccountId`).
pub async fn role_creds_extended(
    State(st): State<Arc<ServerState>>,
    Path(role): Path<String>,
    headers: HeaderMap,
) -> Response {
    creds(&st, &headers, &role, true)
}

/// `GET /latest/meta-data/placement/region`.
pub async fn region(State(st): State<Arc<ServerState>>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&st, &headers) {
        return r;
    }
    match profile(&st) {
        Ok(p) => text(StatusCode::OK, p.info.region.clone()),
        Err(r) => r,
    }
}

/// `GET /latest/dynamic/instance-identity/document`: the region (the Go SDK's
/// `GetRegion` and Java's region provider read it) and the account id when
/// known. Instance fields we cannot know truthfully are left out.
pub async fn identity_document(State(st): State<Arc<ServerState>>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&st, &headers) {
        return r;
    }
    let p = match profile(&st) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let account = p
        .reader
        .borrow()
        .served
        .as_ref()
        .and_then(|s| s.account_id.clone());
    let mut doc = serde_json::Map::new();
    if let Some(a) = account {
        doc.insert("accountId".into(), a.into());
    }
    doc.insert("region".into(), p.info.region.clone().into());
    doc.insert("version".into(), "2017-09-30".into());
    let body = serde_json::to_string_pretty(&serde_json::Value::Object(doc)).unwrap_or_default();
    text(StatusCode::OK, body)
}
