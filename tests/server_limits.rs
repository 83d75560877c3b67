//! The real listener over real sockets: connection-level limits, graceful
//! shutdown, and protocol conformance with the AWS SDK for Rust's own IMDS
//! provider as the client.

mod common;

use std::time::{Duration, Instant};

use aws_credential_types::provider::ProvideCredentials;
use credbroker::server::Limits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn raw(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn rust_sdk_imds_provider_reads_our_credentials() {
    let app = common::start(Limits::default()).await;
    let client = aws_config::imds::Client::builder()
        .endpoint(format!("http://{}", app.addr))
        .unwrap()
        .build();
    let provider = aws_config::imds::credentials::ImdsCredentialsProvider::builder()
        .imds_client(client.clone())
        .build();
    let creds = provider.provide_credentials().await.unwrap();
    assert_eq!(creds.access_key_id(), common::ACCESS_KEY);
    assert_eq!(creds.secret_access_key(), common::SECRET_KEY);
    assert_eq!(creds.session_token(), Some(common::SESSION_TOKEN));
    let region = client
        .get("/latest/meta-data/placement/region")
        .await
        .unwrap();
    assert_eq!(region.as_ref(), "us-east-1");
    app.stop().await;
}

#[tokio::test]
async fn oversize_headers_get_431() {
    let app = common::start(Limits::default()).await;
    let big = "a".repeat(20_000);
    let req = format!(
        "GET /healthz HTTP/1.1\r\nHost: {}\r\nX-Big: {big}\r\n\r\n",
        app.addr
    );
    let resp = raw(app.addr, req.as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 431"), "{resp}");
    app.stop().await;
}

#[tokio::test]
async fn slow_clients_are_cut_off() {
    let app = common::start(Limits {
        header_read_timeout: Duration::from_millis(500),
        ..Limits::default()
    })
    .await;
    let mut s = TcpStream::connect(app.addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    let t = Instant::now();
    let mut out = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    assert!(r.is_ok(), "connection still open after 5 s");
    assert!(t.elapsed() < Duration::from_secs(3));
    assert!(!String::from_utf8_lossy(&out).contains("200 OK"));
    app.stop().await;
}

#[tokio::test]
async fn connections_over_the_cap_wait_instead_of_failing() {
    let app = common::start(Limits {
        max_connections: 4,
        ..Limits::default()
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(app.addr).await.unwrap();
        // A complete keep-alive request so the connection stays open and counted.
        s.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", app.addr).as_bytes())
            .await
            .unwrap();
        let mut buf = [0u8; 256];
        let n = s.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        held.push(s);
    }
    // The fifth connects (the kernel queues it) but is not served while
    // four are open...
    let addr = app.addr;
    let fifth = tokio::spawn(async move {
        raw(
            addr,
            format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !fifth.is_finished(),
        "the fifth connection was answered or closed at the cap"
    );
    // ...and is served, not reset, as soon as one closes.
    drop(held.pop());
    let resp = tokio::time::timeout(Duration::from_secs(5), fifth)
        .await
        .expect("the waiting connection was not served after a slot freed")
        .unwrap();
    assert!(
        resp.starts_with("HTTP/1.1 200"),
        "waiting connection got: {resp:?}"
    );
    drop(held);
    app.stop().await;
}

#[test]
fn the_cap_follows_the_descriptor_limit() {
    let limit = credbroker::server::raise_fd_limit().unwrap_or(u64::MAX);
    let cap = credbroker::server::connection_cap();
    assert!((64..=credbroker::server::MAX_CONNECTIONS).contains(&cap));
    // Room is left for everything else the daemon opens.
    assert!(
        cap as u64 + 256 <= limit.max(64 + 256),
        "cap {cap} vs limit {limit}"
    );
}

#[tokio::test]
async fn shutdown_stops_accepting_and_returns() {
    let app = common::start(Limits::default()).await;
    let addr = app.addr;
    // An idle keep-alive connection must not hold shutdown up.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let _ = idle.read(&mut buf).await.unwrap();
    let t = Instant::now();
    app.stop().await;
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "shutdown took {:?}",
        t.elapsed()
    );
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "still accepting after shutdown"
    );
}
