//! Shared helpers for the Rust integration tests: the real server on
//! `127.0.0.1:0` with the library's one-profile fixture, no upstream.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use credbroker::clock::SystemClock;
use credbroker::server::{self, Limits};
use credbroker::store::ProfileStore;
use tokio_util::sync::CancellationToken;

pub use credbroker::testing::{ACCESS_KEY, SECRET_KEY, SESSION_TOKEN};

pub struct Running {
    pub addr: SocketAddr,
    pub store: ProfileStore,
    pub cancel: CancellationToken,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    pub async fn stop(self) {
        self.cancel.cancel();
        self.task.await.unwrap().unwrap();
    }
}

pub async fn start(limits: Limits) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (state, store) = credbroker::testing::server_state(
        addr,
        std::sync::Arc::new(SystemClock),
        "us-east-1",
        false,
        &[],
    );
    let cancel = CancellationToken::new();
    let router = server::router(state);
    let task = tokio::spawn(server::serve(
        listener,
        router,
        limits,
        cancel.clone().cancelled_owned(),
    ));
    Running {
        addr,
        store,
        cancel,
        task,
    }
}
