"""Scenario 2: Cognito user-pool refresh token → Cognito Identity *basic* flow
(GetId → GetOpenIdToken → STS AssumeRoleWithWebIdentity) → the real Rust AWS
SDK default credential chain (examples/sdk_probe) through IMDSv2 and ECS.

sdk_probe contract: argv[1] is the mode (imds|ecs); env carries the endpoint
variables plus STS_ENDPOINT; it prints one JSON line
{"provider", "access_key_id", "expiration", "arn"} and exits 0.
"""

from __future__ import annotations

import pytest

import harness as h

EXPECTED_ARN = f"arn:aws:sts::{h.ACCOUNT_ID}:assumed-role/CognitoBasicRole/{h.SESSION_NAME}"


@pytest.fixture
def pool(moto: h.Moto) -> h.UserPool:
    return moto.create_user_pool()


@pytest.fixture
def daemon(moto: h.Moto, pool: h.UserPool, daemon_factory) -> h.Daemon:
    identity_pool = moto.create_identity_pool(user_pools=[pool])
    d = daemon_factory(h.make_config(
        login=h.user_pool_login(pool),
        aws={"flow": "cognito-basic", "identity_pool_id": identity_pool,
             "role_arn": h.BASIC_ROLE_ARN, "session_name": h.SESSION_NAME},
    ))
    d.write_refresh_token(moto.user_pool_refresh_token(pool))
    moto.start_recording()
    return d.start()


def test_basic_flow_upstream_calls(daemon: h.Daemon, moto: h.Moto, pool: h.UserPool):
    auth = moto.calls("InitiateAuth")
    assert len(auth) == 1, f"expected one InitiateAuth, got {len(auth)}"
    body = auth[0].json()
    assert body["AuthFlow"] == "REFRESH_TOKEN_AUTH"
    assert body["ClientId"] == pool.client_id
    assert body["AuthParameters"]["REFRESH_TOKEN"] == daemon.read_refresh_token()

    get_ids = moto.calls("GetId")
    assert len(get_ids) == 1
    logins = get_ids[0].json()["Logins"]
    assert logins.keys() == {pool.provider_name}
    assert h.jwt_claims(logins[pool.provider_name])["token_use"] == "id"
    assert moto.count("GetOpenIdToken") == 1

    sts = moto.calls("AssumeRoleWithWebIdentity")
    assert len(sts) == 1
    form = sts[0].form()
    assert form["RoleArn"] == h.BASIC_ROLE_ARN
    assert form["RoleSessionName"] == h.SESSION_NAME
    assert form["WebIdentityToken"].startswith(f"{h.REGION}:"), "basic flow presents the GetOpenIdToken token"
    assert moto.count("GetCredentialsForIdentity") == 0, "basic flow must not use the enhanced flow"

    creds = daemon.imds_creds()
    assert creds["AccessKeyId"].startswith("ASIA")
    assert daemon.ecs_creds()["AccessKeyId"] == creds["AccessKeyId"]
    assert daemon.profile_status()["state"] == "ready"


@pytest.mark.parametrize("probe_mode", ["specific", "chain"])
@pytest.mark.parametrize("mode", ["imds", "ecs"])
def test_rust_sdk_uses_the_daemon(daemon: h.Daemon, moto: h.Moto, mode: str, probe_mode: str):
    """``sdk_probe imds|ecs`` uses that provider; ``sdk_probe chain`` the SDK's default chain."""
    argv_mode = mode if probe_mode == "specific" else "chain"
    out = h.sdk_probe(argv_mode, daemon.sdk_env(mode, STS_ENDPOINT=moto.url))
    assert out["access_key_id"] == daemon.imds_creds()["AccessKeyId"]
    assert out["arn"] == EXPECTED_ARN
    assert out["provider"], out
    assert out["expiration"], "the served credentials carry an expiration"
    daemon.stop()
