//! Shared helpers for the Rust integration tests: start the real server on
//! `127.0.0.1:0` with one profile holding fixed credentials, no upstream.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use credbroker::clock::SystemClock;
use credbroker::creds::{AwsCredentials, Served};
use credbroker::secret::secret;
use credbroker::server::{self, Limits, ServerState};
use credbroker::store::{ProfileEntry, ProfileInfo, ProfileStore, Registry, State};
use tokio_util::sync::CancellationToken;

pub const ECS_TOKEN: &str = "integration-ecs-token";
pub const SECRET_KEY: &str = "integration-secret-access-key";
pub const SESSION_TOKEN: &str = "integration-session-token";
pub const ACCESS_KEY: &str = "ASIAINTEGRATION0001";

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

pub fn creds(lifetime: Duration) -> AwsCredentials {
    AwsCredentials {
        access_key_id: ACCESS_KEY.into(),
        secret_access_key: secret(SECRET_KEY),
        session_token: secret(SESSION_TOKEN),
        expiration: SystemTime::now() + lifetime,
        account_id: Some("123456789012".into()),
        role_arn: Some("arn:aws:iam::123456789012:role/R".into()),
    }
}

pub async fn start(limits: Limits) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let registry = Registry::default();
    let (store, reader) = ProfileStore::new();
    store.update(|s| {
        s.served = Some(Arc::new(Served::render(
            &creds(Duration::from_secs(3600)),
            SystemTime::now(),
        )));
        s.state = State::Ready;
    });
    registry.insert(
        "default".into(),
        ProfileEntry {
            info: Arc::new(ProfileInfo {
                role_name: "credbroker".into(),
                region: "us-east-1".into(),
                login_kind: "oidc",
                flow: "sts",
                refresh_token_file: None,
            }),
            reader,
        },
    );
    let state = Arc::new(ServerState {
        registry,
        imds_profile: "default".into(),
        imds_v1: false,
        ecs_token: secret(ECS_TOKEN),
        tokens: Default::default(),
        hosts: ServerState::host_allow_list(addr, &[]),
        clock: Arc::new(SystemClock),
    });
    let cancel = CancellationToken::new();
    let router = server::router(state, true);
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
