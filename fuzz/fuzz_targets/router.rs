//! The request path: an HTTP/1.1-style request text through the real router
//! (`credbroker::server::router`: guards, IMDS, ECS, admin), as
//! `tower::ServiceExt::oneshot` with a `MockConnectInfo` peer.
//!
//! Input format (what the seeds in `fuzz/corpus/router` look like):
//!
//! ```text
//! METHOD TARGET [HTTP/1.1]
//! Name: value            (any number; `$ECS` / `$IMDS` in a value become the
//!                         real ECS token / a valid IMDS token)
//! @peer: remote          (optional: a non-loopback peer, 192.0.2.7)
//!
//! body bytes
//! ```
//!
//! Properties:
//! * never panics;
//! * the status is one the server is meant to produce;
//! * a non-loopback peer always gets 403;
//! * no response (body or header) contains the access key id, secret key or
//!   session token unless the request carried the exact ECS token or the
//!   valid IMDS token, and then only with 200;
//! * no response ever contains the ECS token or the IMDS token, or a CORS
//!   header.
//!
//! Requests that `http` itself rejects (invalid method, URI, header name or
//! value) are skipped: hyper would have answered 400 before the router.
#![no_main]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use credbroker::clock::TestClock;
use credbroker::server;
use credbroker::store::{ProfileEntry, ProfileInfo, ProfileStore};
use credbroker::testing::{self, ACCESS_KEY, ECS_TOKEN, SECRET_KEY, SESSION_TOKEN};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

const PORT: u16 = 9911;

struct Fixture {
    rt: tokio::runtime::Runtime,
    local: Router,
    remote: Router,
    imds_token: String,
    /// The profiles' writers, kept alive for the readers.
    _writers: [ProfileStore; 2],
}

/// The shared test fixture (`credbroker::testing`: profile `default`, role
/// `credbroker`, credentials valid for an hour on a clock that never moves),
/// plus a profile `pending` with no credentials yet (the 503 paths).
fn fixture() -> Fixture {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let (state, store) = testing::server_state(
        SocketAddr::from(([127, 0, 0, 1], PORT)),
        Arc::new(TestClock::new(now)),
        "eu-west-1",
        false,
        &["imds.local:80".into()],
    );
    let (pending, reader) = ProfileStore::new();
    state.shared.registry.insert(
        "pending".into(),
        ProfileEntry {
            info: Arc::new(ProfileInfo {
                role_name: "credbroker".into(),
                region: "eu-west-1".into(),
                login_kind: "none",
                flow: "cognito",
                refresh_token_file: None,
                access: None,
            }),
            reader,
        },
    );
    // Issued "60 s in the future" with the longest TTL, so it expires after
    // every token the fuzzer can obtain and is never the one evicted.
    let imds_token = state
        .tokens
        .issue(now + Duration::from_secs(60), 21_600)
        .expect("issue the fixture's IMDS token");
    let local = server::router(state.clone())
        .layer(MockConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
    let remote = server::router(state)
        .layer(MockConnectInfo(SocketAddr::from(([192, 0, 2, 7], 40000))));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("tokio runtime");
    Fixture {
        rt,
        local,
        remote,
        imds_token,
        _writers: [store, pending],
    }
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

thread_local! {
    static FIXTURE: Fixture = fixture();
}

fuzz_target!(|data: &[u8]| {
    FIXTURE.with(|f| run(f, data));
});

struct Parsed {
    remote_peer: bool,
    had_ecs: bool,
    had_imds: bool,
    req: Request<Body>,
}

fn replace(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}

fn trim(mut b: &[u8]) -> &[u8] {
    while let [b' ' | b'\t' | b'\r', rest @ ..] = b {
        b = rest;
    }
    while let [rest @ .., b' ' | b'\t' | b'\r'] = b {
        b = rest;
    }
    b
}

/// Parse the request text; `None` when `http` rejects a part of it.
fn parse(f: &Fixture, data: &[u8]) -> Option<Parsed> {
    let split = data
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, i + 4))
        .or_else(|| {
            data.windows(2)
                .position(|w| w == b"\n\n")
                .map(|i| (i, i + 2))
        });
    let (head, body) = match split {
        Some((h, b)) => (&data[..h], &data[b..]),
        None => (data, &[][..]),
    };
    let mut lines = head.split(|&c| c == b'\n');
    let first = trim(lines.next()?);
    let mut parts = first.split(|&c| c == b' ').filter(|p| !p.is_empty());
    let method = Method::from_bytes(parts.next()?).ok()?;
    let uri = Uri::try_from(parts.next().unwrap_or(b"/")).ok()?;
    let mut builder = Request::builder().method(method).uri(uri);
    let mut p = Parsed {
        remote_peer: false,
        had_ecs: false,
        had_imds: false,
        req: Request::default(),
    };
    for line in lines {
        let line = trim(line);
        if line.is_empty() {
            continue;
        }
        let colon = line.iter().position(|&c| c == b':')?;
        let (name, value) = (trim(&line[..colon]), trim(&line[colon + 1..]));
        if name == b"@peer" {
            p.remote_peer = value == b"remote";
            continue;
        }
        let value = replace(value, b"$IMDS", f.imds_token.as_bytes());
        let value = replace(&value, b"$ECS", ECS_TOKEN.as_bytes());
        let name = HeaderName::from_bytes(name).ok()?;
        let value = HeaderValue::from_bytes(&value).ok()?;
        // Conservative: any header carrying the exact secret counts.
        p.had_ecs |= value.as_bytes() == ECS_TOKEN.as_bytes();
        p.had_imds |= value.as_bytes() == f.imds_token.as_bytes();
        builder = builder.header(name, value);
    }
    p.req = builder.body(Body::from(body.to_vec())).ok()?;
    Some(p)
}

fn run(f: &Fixture, data: &[u8]) {
    let Some(input) = parse(f, data) else {
        return;
    };
    let (had_ecs, had_imds, req) = (input.had_ecs, input.had_imds, input.req);
    let app = if input.remote_peer {
        &f.remote
    } else {
        &f.local
    };
    let (status, head, body) = f.rt.block_on(async {
        let resp = app
            .clone()
            .oneshot(req)
            .await
            .unwrap_or_else(|e| match e {});
        let (parts, body) = resp.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX)
            .await
            .expect("response body");
        (parts.status, parts.headers, body)
    });

    const EXPECTED: [StatusCode; 9] = [
        StatusCode::OK,
        StatusCode::BAD_REQUEST,
        StatusCode::UNAUTHORIZED,
        StatusCode::FORBIDDEN,
        StatusCode::NOT_FOUND,
        StatusCode::METHOD_NOT_ALLOWED,
        StatusCode::REQUEST_TIMEOUT,
        StatusCode::PAYLOAD_TOO_LARGE,
        StatusCode::SERVICE_UNAVAILABLE,
    ];
    assert!(EXPECTED.contains(&status), "unexpected status {status}");
    if input.remote_peer {
        assert_eq!(status, StatusCode::FORBIDDEN, "non-loopback peer served");
    }
    let mut all = body.to_vec();
    for (k, v) in &head {
        all.extend_from_slice(k.as_str().as_bytes());
        all.push(b':');
        all.extend_from_slice(v.as_bytes());
        all.push(b'\n');
        assert!(
            !k.as_str().starts_with("access-control-"),
            "CORS header {k} sent"
        );
    }
    for never in [ECS_TOKEN, f.imds_token.as_str()] {
        assert!(
            !contains(&all, never),
            "response echoes a token (status {status})"
        );
    }
    for cred in [ACCESS_KEY, SECRET_KEY, SESSION_TOKEN] {
        if contains(&all, cred) {
            assert!(
                had_ecs || had_imds,
                "credential served without the ECS or IMDS token (status {status})"
            );
            assert_eq!(status, StatusCode::OK, "credential in a non-200 response");
        }
    }
}
