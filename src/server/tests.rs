//! Router tests without sockets: every route with and without the trailing
//! slash, wrong methods, the guards, IMDS tokens and ECS authorization.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::*;
use crate::clock::TestClock;
use crate::store::ProfileStore;
use crate::testing::{self, ECS_TOKEN as ECS};

const PORT: u16 = 9911;

struct Fixture {
    app: Router,
    clock: TestClock,
    store: ProfileStore,
    state: Arc<ServerState>,
}

fn fixture_with(imds_v1: bool, peer: SocketAddr) -> Fixture {
    let clock = TestClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000));
    let (state, store) = testing::server_state(
        SocketAddr::from(([127, 0, 0, 1], PORT)),
        Arc::new(clock.clone()),
        "eu-west-1",
        imds_v1,
        &["imds.local:80".into()],
    );
    let app = router(state.clone()).layer(MockConnectInfo(peer));
    Fixture {
        app,
        clock,
        store,
        state,
    }
}

fn fixture() -> Fixture {
    fixture_with(false, SocketAddr::from(([127, 0, 0, 1], 40000)))
}

fn req(method: Method, path: &str) -> axum::http::request::Builder {
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", format!("127.0.0.1:{PORT}"))
}

async fn send(app: &Router, r: Request<Body>) -> (StatusCode, axum::http::HeaderMap, String) {
    let resp = app.clone().oneshot(r).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

/// `method path` with `headers` and no body.
async fn call(
    app: &Router,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, axum::http::HeaderMap, String) {
    let mut r = req(method, path);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    send(app, r.body(Body::empty()).unwrap()).await
}

/// `GET path` with `headers`.
async fn get(
    app: &Router,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, axum::http::HeaderMap, String) {
    call(app, Method::GET, path, headers).await
}

async fn token(app: &Router) -> String {
    let (s, h, body) = call(
        app,
        Method::PUT,
        "/latest/api/token",
        &[(TTL_HEADER.as_str(), "21600")],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h.get(TTL_HEADER).unwrap(), "21600");
    body
}

#[tokio::test]
async fn every_imds_route_with_and_without_trailing_slash() {
    let f = fixture();
    let tok = token(&f.app).await;
    let cases: &[(&str, StatusCode, Option<&str>)] = &[
        (
            "/latest/meta-data/iam/security-credentials/",
            StatusCode::OK,
            Some("credbroker"),
        ),
        (
            "/latest/meta-data/iam/security-credentials",
            StatusCode::OK,
            Some("credbroker"),
        ),
        (
            "/latest/meta-data/iam/security-credentials-extended/",
            StatusCode::OK,
            Some("credbroker"),
        ),
        (
            "/latest/meta-data/iam/security-credentials-extended",
            StatusCode::OK,
            Some("credbroker"),
        ),
        (
            "/latest/meta-data/iam/security-credentials/credbroker",
            StatusCode::OK,
            None,
        ),
        (
            "/latest/meta-data/iam/security-credentials/credbroker/",
            StatusCode::OK,
            None,
        ),
        (
            "/latest/meta-data/iam/security-credentials-extended/credbroker",
            StatusCode::OK,
            None,
        ),
        (
            "/latest/meta-data/iam/security-credentials-extended/credbroker/",
            StatusCode::OK,
            None,
        ),
        (
            "/latest/meta-data/iam/security-credentials/other-role",
            StatusCode::NOT_FOUND,
            None,
        ),
        (
            "/latest/meta-data/iam/security-credentials/credbroker%0A",
            StatusCode::NOT_FOUND,
            None,
        ),
        (
            "/latest/meta-data/placement/region",
            StatusCode::OK,
            Some("eu-west-1"),
        ),
        (
            "/latest/meta-data/placement/region/",
            StatusCode::OK,
            Some("eu-west-1"),
        ),
        (
            "/latest/meta-data/",
            StatusCode::OK,
            Some("iam/\nplacement/"),
        ),
        (
            "/latest/dynamic/instance-identity/document",
            StatusCode::OK,
            None,
        ),
        (
            "/latest/dynamic/instance-identity/document/",
            StatusCode::OK,
            None,
        ),
        (
            "/latest/meta-data/iam/",
            StatusCode::OK,
            Some("security-credentials/\nsecurity-credentials-extended/"),
        ),
        ("/latest/meta-data/instance-id", StatusCode::NOT_FOUND, None),
        ("/latest/user-data", StatusCode::NOT_FOUND, None),
        ("/", StatusCode::NOT_FOUND, None),
    ];
    for (path, want, body) in cases {
        let (s, h, b) = get(&f.app, path, &[(TOKEN_HEADER.as_str(), tok.as_str())]).await;
        assert_eq!(s, *want, "{path}");
        if let Some(body) = body {
            assert_eq!(b, *body, "{path}");
        }
        if s == StatusCode::OK {
            assert_eq!(h.get("content-type").unwrap(), "text/plain", "{path}");
        }
        assert!(
            h.keys().all(|k| !k.as_str().starts_with("access-control")),
            "{path}"
        );
    }
    let (_, _, b) = get(
        &f.app,
        "/latest/meta-data/iam/security-credentials/credbroker",
        &[(TOKEN_HEADER.as_str(), tok.as_str())],
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["Code"], "Success");
    assert_eq!(v["AccessKeyId"], testing::ACCESS_KEY);
    assert!(v["Expiration"].as_str().unwrap().ends_with('Z'));
    assert!(v.get("AccountId").is_none());
    let (_, _, b) = get(
        &f.app,
        "/latest/meta-data/iam/security-credentials-extended/credbroker",
        &[(TOKEN_HEADER.as_str(), tok.as_str())],
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["AccountId"], "123456789012");
    let (_, _, b) = get(
        &f.app,
        "/latest/dynamic/instance-identity/document",
        &[("x-aws-ec2-metadata-token", tok.as_str())],
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["region"], "eu-west-1");
    assert_eq!(v["accountId"], "123456789012");
}

#[tokio::test]
async fn wrong_methods_are_405_without_cors() {
    let f = fixture();
    let cases: &[(Method, &str)] = &[
        (Method::GET, "/latest/api/token"),
        (Method::POST, "/latest/api/token"),
        (Method::OPTIONS, "/latest/api/token"),
        (Method::PUT, "/latest/meta-data/iam/security-credentials/"),
        (
            Method::POST,
            "/latest/meta-data/iam/security-credentials/credbroker",
        ),
        (Method::DELETE, "/v1/credentials/default"),
        (Method::OPTIONS, "/v1/credentials"),
        (Method::POST, "/v1/status"),
        (Method::PUT, "/healthz"),
    ];
    for (m, path) in cases {
        let (s, h, _) = call(&f.app, m.clone(), path, &[("authorization", ECS)]).await;
        assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED, "{m} {path}");
        assert!(
            h.keys().all(|k| !k.as_str().starts_with("access-control")),
            "{m} {path}"
        );
    }
    // HEAD works wherever GET does, with no body.
    let (s, _, b) = call(&f.app, Method::HEAD, "/healthz", &[]).await;
    assert_eq!((s, b.as_str()), (StatusCode::OK, ""));
}

#[tokio::test]
async fn token_ttl_is_validated() {
    let f = fixture();
    for ttl in ["0", "21601", "-1", "abc", "", "1.5"] {
        let (s, _, _) = call(
            &f.app,
            Method::PUT,
            "/latest/api/token",
            &[(TTL_HEADER.as_str(), ttl)],
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "ttl {ttl:?}");
    }
    let (s, _, _) = call(&f.app, Method::PUT, "/latest/api/token", &[]).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    for ttl in ["1", "21600"] {
        let (s, h, _) = call(
            &f.app,
            Method::PUT,
            "/latest/api/token",
            &[(TTL_HEADER.as_str(), ttl)],
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(h.get(TTL_HEADER).unwrap(), ttl);
    }
    let (s, _, _) = call(
        &f.app,
        Method::PUT,
        "/2021-03-23/api/token",
        &[(TTL_HEADER.as_str(), "60")],
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(!f.state.tokens.is_empty());
}

#[tokio::test]
async fn imds_gets_need_a_valid_unexpired_token() {
    let f = fixture();
    let path = "/latest/meta-data/iam/security-credentials/credbroker";
    let (s, _, _) = get(&f.app, path, &[]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "v2-only: token-less GET");
    let (s, _, b) = get(&f.app, path, &[(TOKEN_HEADER.as_str(), "forged")]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(!b.contains("ASIA"));
    let (_, _, short) = call(
        &f.app,
        Method::PUT,
        "/latest/api/token",
        &[(TTL_HEADER.as_str(), "5")],
    )
    .await;
    let (s, _, _) = get(&f.app, path, &[(TOKEN_HEADER.as_str(), short.as_str())]).await;
    assert_eq!(s, StatusCode::OK);
    f.clock.advance(Duration::from_secs(6));
    let (s, _, _) = get(&f.app, path, &[(TOKEN_HEADER.as_str(), short.as_str())]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "expired token");
}

#[tokio::test]
async fn imds_v1_allows_tokenless_but_not_forged() {
    let f = fixture_with(true, SocketAddr::from(([127, 0, 0, 1], 1)));
    let path = "/latest/meta-data/iam/security-credentials/credbroker";
    let (s, _, _) = get(&f.app, path, &[]).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = get(&f.app, path, &[(TOKEN_HEADER.as_str(), "forged")]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn ecs_needs_the_exact_token() {
    let f = fixture();
    for path in [
        "/v1/credentials",
        "/v1/credentials/",
        "/v1/credentials/default",
        "/v1/credentials/default/",
    ] {
        let (s, h, b) = get(&f.app, path, &[("authorization", ECS)]).await;
        assert_eq!(s, StatusCode::OK, "{path}");
        assert_eq!(h.get("content-type").unwrap(), "application/json");
        let v: serde_json::Value = serde_json::from_str(&b).unwrap();
        assert_eq!(v["Token"], testing::SESSION_TOKEN);
        assert_eq!(v["AccountId"], "123456789012");
    }
    let bad = [
        "",
        "Bearer fixture-ecs-token",
        "FIXTURE-ECS-TOKEN",
        "fixture-ecs-token\n",
        "fixture-ecs-toke",
        "fixture-ecs-token ",
    ];
    for t in bad {
        let mut r = req(Method::GET, "/v1/credentials/default");
        if let Ok(v) = axum::http::HeaderValue::from_bytes(t.as_bytes()) {
            r = r.header("authorization", v);
        }
        let (s, h, b) = send(&f.app, r.body(Body::empty()).unwrap()).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{t:?}");
        assert_eq!(h.get("content-type").unwrap(), "application/json");
        let v: serde_json::Value = serde_json::from_str(&b).unwrap();
        assert_eq!(v["code"], "Unauthorized");
        assert!(!b.contains("ASIA") && !b.contains("secret"));
    }
    let (s, _, _) = get(&f.app, "/v1/credentials/default", &[]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // Unknown profile: only after authorization.
    let (s, _, _) = get(&f.app, "/v1/credentials/nope", &[]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _, b) = get(&f.app, "/v1/credentials/nope", &[("authorization", ECS)]).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
}

#[tokio::test]
async fn expired_credentials_are_never_served() {
    let f = fixture();
    let tok = token(&f.app).await;
    let exp = f.store.current().served.unwrap().expiration;
    f.clock.set(exp - SERVE_MARGIN);
    let (s, _, b) = get(
        &f.app,
        "/latest/meta-data/iam/security-credentials/credbroker",
        &[(TOKEN_HEADER.as_str(), tok.as_str())],
    )
    .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(!b.contains("ASIA"));
    let (s, _, b) = get(&f.app, "/v1/credentials/default", &[("authorization", ECS)]).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(b.contains("CredentialsUnavailable") && !b.contains("ASIA"));
    let (s, _, _) = get(&f.app, "/readyz", &[]).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    let (_, _, b) = get(&f.app, "/v1/status", &[("authorization", ECS)]).await;
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["profiles"]["default"]["state"], "expired");
}

#[tokio::test]
async fn health_ready_and_status() {
    let f = fixture();
    let (s, _, _) = get(&f.app, "/healthz", &[]).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = get(&f.app, "/readyz", &[]).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = get(&f.app, "/v1/status", &[]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _, b) = get(&f.app, "/v1/status", &[("authorization", ECS)]).await;
    assert_eq!(s, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    let p = &v["profiles"]["default"];
    assert_eq!(p["state"], "ready");
    assert_eq!(p["access_key_id_suffix"], "1234");
    for secret in [
        testing::SECRET_KEY,
        testing::SESSION_TOKEN,
        testing::ACCESS_KEY,
        ECS,
    ] {
        assert!(!b.contains(secret), "status leaks {secret}");
    }
}

#[tokio::test]
async fn guards_refuse_rebinding_proxies_browsers_and_remote_peers() {
    let f = fixture();
    let path = "/v1/credentials/default";
    let ok = |r: axum::http::request::Builder| {
        r.header("authorization", ECS).body(Body::empty()).unwrap()
    };
    for host in [
        "127.0.0.1:9911",
        "localhost:9911",
        "LOCALHOST:9911",
        "[::1]:9911",
        "imds.local:80",
    ] {
        let r = Request::builder().uri(path).header("host", host);
        assert_eq!(send(&f.app, ok(r)).await.0, StatusCode::OK, "{host}");
    }
    for host in [
        "evil.example:9911",
        "127.0.0.1:80",
        "127.0.0.1",
        "localhost",
        "127.0.0.1:9911.evil",
        "",
    ] {
        let r = Request::builder().uri(path).header("host", host);
        assert_eq!(
            send(&f.app, ok(r)).await.0,
            StatusCode::FORBIDDEN,
            "{host:?}"
        );
    }
    let r = Request::builder().uri(path);
    assert_eq!(
        send(&f.app, ok(r)).await.0,
        StatusCode::FORBIDDEN,
        "missing host"
    );
    let r = Request::builder()
        .uri("http://evil.example:9911/v1/credentials/default")
        .header("host", "127.0.0.1:9911");
    assert_eq!(
        send(&f.app, ok(r)).await.0,
        StatusCode::FORBIDDEN,
        "absolute-form target"
    );
    for (k, v) in [
        ("x-forwarded-for", "10.0.0.1"),
        ("forwarded", "for=10.0.0.1"),
        ("origin", "http://evil.example"),
        ("sec-fetch-site", "cross-site"),
        ("sec-fetch-mode", "no-cors"),
        ("user-agent", "Mozilla/5.0 (X11; Linux x86_64)"),
    ] {
        assert_eq!(
            send(&f.app, ok(req(Method::GET, path).header(k, v)))
                .await
                .0,
            StatusCode::FORBIDDEN,
            "{k}"
        );
        let r = req(Method::PUT, "/latest/api/token")
            .header(TTL_HEADER, "60")
            .header(k, v)
            .body(Body::empty())
            .unwrap();
        assert_eq!(
            send(&f.app, r).await.0,
            StatusCode::FORBIDDEN,
            "PUT with {k}"
        );
    }
    let remote = fixture_with(false, SocketAddr::from(([192, 0, 2, 7], 5555)));
    assert_eq!(
        send(&remote.app, ok(req(Method::GET, path))).await.0,
        StatusCode::FORBIDDEN
    );
    let mapped = fixture_with(false, "[::ffff:127.0.0.1]:5555".parse().unwrap());
    assert_eq!(
        send(&mapped.app, ok(req(Method::GET, path))).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn oversize_bodies_are_refused() {
    let f = fixture();
    let r = req(Method::PUT, "/latest/api/token")
        .header(TTL_HEADER, "60")
        .header("content-length", "4096")
        .body(Body::from(vec![b'x'; 4096]))
        .unwrap();
    assert_eq!(send(&f.app, r).await.0, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn duplicate_host_headers_are_a_bad_request() {
    let f = fixture();
    let r = req(Method::GET, "/v1/credentials/default")
        .header("host", "evil.example")
        .header("authorization", ECS)
        .body(Body::empty())
        .unwrap();
    let (s, _, b) = send(&f.app, r).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(!b.contains("ASIA"));
}

#[tokio::test]
async fn undeclared_oversize_bodies_are_refused_on_token_put() {
    // No Content-Length (as with chunked encoding): the limit applies as the body is read.
    let f = fixture();
    let r = req(Method::PUT, "/latest/api/token")
        .header(TTL_HEADER, "60")
        .body(Body::from(vec![b'x'; 2048]))
        .unwrap();
    assert_eq!(send(&f.app, r).await.0, StatusCode::PAYLOAD_TOO_LARGE);
    let r = req(Method::PUT, "/latest/api/token")
        .header(TTL_HEADER, "60")
        .body(Body::from(vec![b'x'; 100]))
        .unwrap();
    assert_eq!(send(&f.app, r).await.0, StatusCode::OK);
}

/// `server.allowed_uids` and a profile's own list, with the caller's uid as
/// `serve` would put it on the request.
#[tokio::test]
async fn callers_are_served_or_refused_by_uid() {
    use crate::peer::{Access, PeerCred};
    let f = fixture();
    let mut view = (*f.state.view()).clone();
    view.access = Access::Uids(vec![1000]);
    f.state.set_view(view);
    let as_uid = |uid: Option<u32>, path: &str| {
        let mut r = req(Method::GET, path)
            .header("authorization", ECS)
            .body(Body::empty())
            .unwrap();
        r.extensions_mut()
            .insert(Caller::known(uid.map(|uid| PeerCred { uid, inode: 1 })));
        r
    };
    let (code, _, body) = send(&f.app, as_uid(Some(1000), "/v1/credentials/default")).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    for path in [
        "/v1/credentials/default",
        "/v1/credentials",
        "/v1/status",
        "/latest/meta-data/iam/security-credentials/",
    ] {
        let (code, _, body) = send(&f.app, as_uid(Some(65534), path)).await;
        assert_eq!(code, StatusCode::FORBIDDEN, "{path}");
        assert!(
            body.contains("uid 65534") && body.contains("server.allowed_uids"),
            "{body}"
        );
        assert!(!body.contains(testing::SECRET_KEY) && !body.contains(testing::ACCESS_KEY));
    }
    // Unknown caller (lookup failed) while a list applies: refused.
    let (code, _, body) = send(&f.app, as_uid(None, "/v1/credentials/default")).await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    assert!(body.contains("unknown user"), "{body}");
    // Health routes answer anyone.
    let (code, _, _) = send(&f.app, as_uid(Some(65534), "/healthz")).await;
    assert_eq!(code, StatusCode::OK);
    // A profile's own list narrows further.
    let entry = f.state.shared.registry.get("default").unwrap();
    let mut info = (*entry.info).clone();
    info.access = Some(Access::Uids(vec![0]));
    f.state.shared.registry.insert(
        "default".into(),
        crate::store::ProfileEntry {
            info: Arc::new(info),
            reader: entry.reader.clone(),
        },
    );
    let mut view = (*f.state.view()).clone();
    view.access = Access::Any;
    f.state.set_view(view);
    let (code, _, body) = send(&f.app, as_uid(Some(1000), "/v1/credentials/default")).await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    assert!(body.contains("profiles.default.allowed_uids"), "{body}");
    let (code, _, _) = send(&f.app, as_uid(Some(0), "/v1/credentials/default")).await;
    assert_eq!(code, StatusCode::OK);
}

/// `GET /metrics`: the OpenMetrics content type, every family, the requests
/// and tokens counted, the expiry gauge from the snapshot — and no secret.
#[tokio::test]
async fn metrics_render_every_family_and_no_secret() {
    let f = fixture();
    let tok = token(&f.app).await;
    let (s, _, _) = get(
        &f.app,
        "/latest/meta-data/iam/security-credentials/credbroker",
        &[(TOKEN_HEADER.as_str(), &tok)],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = get(&f.app, "/v1/credentials/default", &[("authorization", ECS)]).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = get(
        &f.app,
        "/v1/credentials/no-such-profile-xyz",
        &[("authorization", ECS)],
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, h, body) = get(&f.app, "/metrics", &[]).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(
        h.get("content-type").unwrap(),
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    for want in [
        "credbroker_http_requests_total{listener=\"main\",route=\"/latest/api/token\",status=\"200\"} 1",
        "credbroker_http_requests_total{listener=\"main\",route=\"/latest/meta-data/iam/security-credentials/{role}\",status=\"200\"} 1",
        "credbroker_http_requests_total{listener=\"main\",route=\"/v1/credentials/{profile}\",status=\"200\"} 1",
        "credbroker_http_requests_total{listener=\"main\",route=\"/v1/credentials/{profile}\",status=\"404\"} 1",
        "credbroker_imds_tokens_issued_total 1",
        "credbroker_credentials_expiry_seconds{profile=\"default\"} 3600",
        "credbroker_login_required{profile=\"default\"} 0",
        "# TYPE credbroker_upstream_request_duration_seconds histogram",
        "# TYPE credbroker_build info",
    ] {
        assert!(body.contains(want), "missing {want:?}:\n{body}");
    }
    assert!(body.ends_with("# EOF\n"));
    // The request path is never a label: only route templates are.
    assert!(!body.contains("no-such-profile-xyz"), "{body}");
    for secret in [
        testing::ACCESS_KEY,
        &testing::ACCESS_KEY[testing::ACCESS_KEY.len() - 4..],
        testing::SECRET_KEY,
        testing::SESSION_TOKEN,
        ECS,
        &tok,
    ] {
        assert!(!body.contains(secret), "{secret} in /metrics:\n{body}");
    }
    // A login-required profile: gauge 1, no expiry series once it holds none.
    f.store.update(|s| {
        s.state = crate::store::State::LoginRequired;
        s.served = None;
    });
    let (_, _, body) = get(&f.app, "/metrics", &[]).await;
    assert!(
        body.contains("credbroker_login_required{profile=\"default\"} 1"),
        "{body}"
    );
    assert!(
        !body.contains("credbroker_credentials_expiry_seconds{"),
        "{body}"
    );
}

/// `/metrics` on the main listener has the same guards as everything else,
/// and a per-profile IMDS listener does not serve it.
#[tokio::test]
async fn metrics_are_guarded_and_main_listener_only() {
    use crate::peer::{Access, PeerCred};
    let f = fixture();
    let r = Request::get("/metrics")
        .header("host", "evil.example:9911")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&f.app, r).await.0, StatusCode::FORBIDDEN);
    let (s, _, _) = get(&f.app, "/metrics", &[("origin", "http://evil.example")]).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let mut view = (*f.state.view()).clone();
    view.access = Access::Uids(vec![1000]);
    f.state.set_view(view);
    let mut r = req(Method::GET, "/metrics").body(Body::empty()).unwrap();
    r.extensions_mut().insert(Caller::known(Some(PeerCred {
        uid: 65534,
        inode: 1,
    })));
    assert_eq!(send(&f.app, r).await.0, StatusCode::FORBIDDEN);
    let mut view = (*f.state.view()).clone();
    view.ecs = false;
    view.access = Access::Any;
    f.state.set_view(view);
    let (s, _, _) = get(&f.app, "/metrics", &[]).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

/// `server.metrics_listen`: `/metrics`, `/healthz`, `/readyz`, any Host and
/// any peer (it serves no credentials); everything else 404; browsers 403.
#[tokio::test]
async fn metrics_listener_serves_only_metrics_and_health() {
    let f = fixture();
    let app = metrics_router(f.state.shared.clone())
        .layer(MockConnectInfo(SocketAddr::from(([10, 1, 2, 3], 40000))));
    for path in ["/metrics", "/healthz", "/readyz"] {
        let r = Request::get(path)
            .header("host", "10.1.2.3:9912")
            .body(Body::empty())
            .unwrap();
        let (s, _, body) = send(&app, r).await;
        assert_eq!(s, StatusCode::OK, "{path}: {body}");
    }
    for path in [
        "/v1/credentials/default",
        "/v1/credentials",
        "/v1/status",
        "/latest/api/token",
        "/latest/meta-data/iam/security-credentials/",
        "/latest/meta-data/iam/security-credentials/credbroker",
    ] {
        for method in [Method::GET, Method::PUT] {
            let r = Request::builder()
                .method(method.clone())
                .uri(path)
                .header("host", "10.1.2.3:9912")
                .header("authorization", ECS)
                .header(TTL_HEADER, "60")
                .body(Body::empty())
                .unwrap();
            let (s, _, body) = send(&app, r).await;
            assert_eq!(s, StatusCode::NOT_FOUND, "{method} {path}");
            assert!(!body.contains(testing::SECRET_KEY), "{body}");
        }
    }
    let r = Request::get("/metrics")
        .header("sec-fetch-mode", "cors")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&app, r).await.0, StatusCode::FORBIDDEN);
}

#[test]
fn routes_are_templates_not_paths() {
    for (path, want) in [
        ("/latest/api/token", "/latest/api/token"),
        ("/2021-03-23/api/token", "/{version}/api/token"),
        (
            "/latest/meta-data/iam/security-credentials/",
            "/latest/meta-data/iam/security-credentials/",
        ),
        (
            "/latest/meta-data/iam/security-credentials/x/",
            "/latest/meta-data/iam/security-credentials/{role}",
        ),
        (
            "/latest/meta-data/iam/security-credentials-extended/x",
            "/latest/meta-data/iam/security-credentials-extended/{role}",
        ),
        ("/latest/meta-data/placement/region", "/latest/other"),
        ("/v1/credentials/", "/v1/credentials"),
        ("/v1/credentials/anything", "/v1/credentials/{profile}"),
        ("/metrics", "/metrics"),
        ("/wp-admin", "other"),
    ] {
        assert_eq!(ROUTES[route_of(path)], want, "{path}");
    }
}
