//! The bare baseline of `bench/` (issue 13): a minimal hyper server that
//! answers the same bytes as credbroker from memory and checks nothing (no
//! Host allow-list, no peer lookup, no token table, no tower layers, no
//! logging) — the practical loopback limit on this machine. Same runtime as
//! the daemon (tokio multi-thread, default workers), same HTTP stack (hyper
//! 1 http1). Not part of the credbroker binary.
//!
//! ```text
//! bench_baseline DIR     DIR holds ecs.json, imds.json, role.txt, token.txt
//!                        (captured from a running credbroker by bench/bench.py)
//! ```
//! Prints `baseline addr=127.0.0.1:PORT` once bound to `127.0.0.1:0`.
//! Routes: `PUT …/api/token` → token.txt (TTL header echoed as 21600),
//! `GET …/security-credentials/` → role.txt, `GET …/security-credentials/*`
//! → imds.json, `GET /v1/credentials*` → ecs.json, anything else 404.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

type Error = Box<dyn std::error::Error + Send + Sync>;

struct Bodies {
    ecs: Bytes,
    imds: Bytes,
    role: Bytes,
    token: Bytes,
}

const LIST: &str = "/latest/meta-data/iam/security-credentials/";
const JSON: HeaderValue = HeaderValue::from_static("application/json");
const TEXT: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");

fn answer(b: &Bodies, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let (body, ctype) = match *req.method() {
        Method::PUT if path.ends_with("/api/token") => (b.token.clone(), TEXT),
        Method::GET if path == LIST => (b.role.clone(), TEXT),
        Method::GET if path.starts_with(LIST) => (b.imds.clone(), JSON),
        Method::GET if path.starts_with("/v1/credentials") => (b.ecs.clone(), JSON),
        _ => {
            let mut r = Response::new(Full::new(Bytes::from_static(b"not found")));
            *r.status_mut() = StatusCode::NOT_FOUND;
            return r;
        }
    };
    let mut r = Response::new(Full::new(body));
    r.headers_mut().insert(CONTENT_TYPE, ctype);
    if req.method() == Method::PUT {
        r.headers_mut().insert(
            "x-aws-ec2-metadata-token-ttl-seconds",
            HeaderValue::from_static("21600"),
        );
    }
    r
}

async fn run(dir: std::path::PathBuf) -> Result<(), Error> {
    let read = |name: &str| -> Result<Bytes, Error> {
        Ok(Bytes::from(std::fs::read(dir.join(name)).map_err(|e| {
            format!("{}: {e}", dir.join(name).display())
        })?))
    };
    let bodies = Arc::new(Bodies {
        ecs: read("ecs.json")?,
        imds: read("imds.json")?,
        role: read("role.txt")?,
        token: read("token.txt")?,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("baseline addr={}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let bodies = bodies.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let r = answer(&bodies, &req);
                async move { Ok::<_, Infallible>(r) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn main() -> std::process::ExitCode {
    let Some(dir) = std::env::args_os().nth(1) else {
        eprintln!("usage: bench_baseline DIR");
        return std::process::ExitCode::from(64);
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build();
    match rt
        .map_err(Error::from)
        .and_then(|rt| rt.block_on(run(dir.into())))
    {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_baseline: {e}");
            std::process::ExitCode::from(1)
        }
    }
}
