//! Fixtures shared by the unit, integration and fuzz tests: a server state
//! with one profile (`default`, role `credbroker`) serving fixed, clearly fake
//! credentials. Not used by the daemon itself.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::clock::SharedClock;
use crate::creds::{AwsCredentials, Served};
use crate::secret::secret;
use crate::server::{ListenerView, ServerState, Shared};
use crate::store::{ProfileEntry, ProfileInfo, ProfileStore, Registry, State};

/// The fixture's ECS token.
pub const ECS_TOKEN: &str = "fixture-ecs-token";
/// The fixture's access key id.
pub const ACCESS_KEY: &str = "ASIAFIXTURE00001234";
/// The fixture's secret access key.
pub const SECRET_KEY: &str = "fixture-secret-access-key";
/// The fixture's session token.
pub const SESSION_TOKEN: &str = "fixture-session-token";
/// The fixture's account id.
pub const ACCOUNT_ID: &str = "123456789012";

/// Fixed credentials expiring `lifetime` after `now`.
pub fn credentials(now: SystemTime, lifetime: Duration) -> AwsCredentials {
    AwsCredentials {
        guest: false,
        access_key_id: ACCESS_KEY.into(),
        secret_access_key: secret(SECRET_KEY),
        session_token: secret(SESSION_TOKEN),
        expiration: now + lifetime,
        account_id: Some(ACCOUNT_ID.into()),
        role_arn: Some(format!("arn:aws:iam::{ACCOUNT_ID}:role/R")),
    }
}

/// Server state for a listener on `addr` with one ready profile (`default`,
/// region `region`) whose credentials expire an hour after `clock.now()`.
/// Returns the state and the profile's store (to change what is served).
pub fn server_state(
    addr: SocketAddr,
    clock: SharedClock,
    region: &str,
    imds_v1: bool,
    extra_hosts: &[String],
) -> (Arc<ServerState>, ProfileStore) {
    let now = clock.now();
    let registry = Registry::default();
    let (store, reader) = ProfileStore::new();
    store.update(|s| {
        s.served = Some(Arc::new(Served::render(
            &credentials(now, Duration::from_secs(3600)),
            now,
        )));
        s.state = State::Ready;
    });
    registry.insert(
        "default".into(),
        ProfileEntry {
            info: Arc::new(ProfileInfo {
                role_name: "credbroker".into(),
                region: region.into(),
                login_kind: "oidc",
                flow: "sts",
                refresh_token_file: Some("/state/default/refresh-token".into()),
                access: None,
            }),
            reader,
        },
    );
    let shared = Arc::new(Shared::new(registry, secret(ECS_TOKEN), clock));
    let state = Arc::new(ServerState::new(
        shared,
        ListenerView {
            imds_profile: "default".into(),
            imds: true,
            imds_v1,
            ecs: true,
            hosts: ServerState::host_allow_list(addr, extra_hosts),
            // Router tests have no real connection to look up; uid checks
            // are tested with `Caller` set explicitly.
            access: crate::peer::Access::Any,
        },
    ));
    (state, store)
}
