"""Scenario 1: OIDC refresh token → Cognito Identity (enhanced flow) → unmodified
boto3 and AWS CLI in subprocesses, through IMDSv2 and the ECS endpoint.

moto's Cognito Identity always returns TESTACCESSKEY12345 with a 90 s expiry,
and GetCallerIdentity for that key answers moto's default identity.
"""

from __future__ import annotations

import re

import pytest

import harness as h

MOTO_COGNITO_KEY = "TESTACCESSKEY12345"


@pytest.fixture
def daemon(oidc_daemon, moto: h.Moto) -> h.Daemon:
    d = oidc_daemon("cognito")
    moto.start_recording()
    return d.start()


def test_serves_cognito_credentials_on_both_endpoints(daemon: h.Daemon, moto: h.Moto):
    imds = daemon.imds_creds()
    assert imds["Code"] == "Success"
    assert imds["Type"] == "AWS-HMAC"
    assert imds["AccessKeyId"] == MOTO_COGNITO_KEY
    assert imds["SecretAccessKey"] and imds["Token"]
    assert h.parse_expiration(imds["Expiration"]) > h.utcnow()
    h.parse_expiration(imds["LastUpdated"])

    ecs = daemon.ecs_creds("default")
    assert ecs["AccessKeyId"] == imds["AccessKeyId"]
    assert ecs["Expiration"] == imds["Expiration"]
    assert daemon.ecs_creds()["AccessKeyId"] == imds["AccessKeyId"], "/v1/credentials (no profile)"

    # The ECS token file: 32 random bytes base64url, no newline, owner-only.
    token = daemon.ecs_token()
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", token), f"unexpected ECS token format {token!r}"
    assert h.file_mode(daemon.ecs_token_path) == 0o600
    assert daemon.ecs_creds_response(token="wrong").status == 401

    st = daemon.profile_status()
    assert st["state"] == "ready"
    assert st["access_key_id_suffix"] == MOTO_COGNITO_KEY[-4:]
    assert st["last_error"] is None


def test_sends_the_id_token_to_cognito_identity(daemon: h.Daemon, moto: h.Moto):
    idp = daemon.idp
    get_ids = moto.calls("GetId")
    assert len(get_ids) == 1, f"expected one GetId, got {len(get_ids)}"
    body = get_ids[0].json()
    assert body["Logins"].keys() == {idp.login_provider}, "login key must be the issuer without scheme"
    claims = h.jwt_claims(body["Logins"][idp.login_provider])
    assert claims["iss"] == idp.issuer
    assert claims["aud"] == "daemon"
    assert claims["sub"] == "alice"

    gcfi = moto.calls("GetCredentialsForIdentity")
    assert len(gcfi) == 1
    assert gcfi[0].json()["Logins"].keys() == {idp.login_provider}
    assert gcfi[0].json()["IdentityId"].startswith(f"{h.REGION}:")


@pytest.mark.parametrize("mode,method", [("imds", "iam-role"), ("ecs", "container-role")])
def test_boto3_and_aws_cli_use_the_daemon(daemon: h.Daemon, moto: h.Moto, mode: str, method: str):
    env = daemon.sdk_env(mode)
    got = h.boto3_credentials(env)
    assert got["method"] == method
    assert got["access_key_id"] == daemon.imds_creds()["AccessKeyId"]
    assert got["has_secret"] and got["has_token"]

    ident = h.caller_identity_via_cli(moto.url, env)
    assert ident["Arn"] == h.MOTO_DEFAULT_ARN
    assert ident["Account"] == h.ACCOUNT_ID


def test_env_and_status_commands(daemon: h.Daemon):
    port = daemon.addr.rsplit(":", 1)[1]

    proc = daemon.cli("env")
    assert proc.returncode == 0, proc.stderr
    exports = h.parse_exports(proc.stdout)
    assert exports["AWS_CONTAINER_CREDENTIALS_FULL_URI"] == f"http://127.0.0.1:{port}/v1/credentials/default"
    assert exports["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"] == str(daemon.ecs_token_path)

    proc = daemon.cli("env", "--imds")
    assert proc.returncode == 0, proc.stderr
    assert h.parse_exports(proc.stdout)["AWS_EC2_METADATA_SERVICE_ENDPOINT"] == f"http://127.0.0.1:{port}/"

    proc = daemon.cli("status", "--json")
    assert proc.returncode == 0, proc.stderr
    status = h.parse_json_output(proc.stdout)
    assert status["profiles"]["default"]["state"] == "ready"
    assert status["profiles"]["default"]["access_key_id_suffix"] == MOTO_COGNITO_KEY[-4:]

    daemon.stop()

