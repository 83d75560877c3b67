"""`login.auth_flow = "srp"`: `credbroker login` signs in to a user pool with
USER_SRP_AUTH, against the server half of Cognito's SRP (srp_pool.py, in
front of moto, which cannot check SRP itself). The stand-in is first held to
the maintained pycognito client, so credbroker passing means its SRP client
(the aws-cognito-srp crate) agrees with one that real Cognito accepts.
"""

from __future__ import annotations

import json
import subprocess

import boto3
import botocore.config
import pytest
from pycognito.aws_srp import AWSSRP

import harness as h
from srp_pool import SrpPool
from test_login import EXIT_DENIED, caller_arn


@pytest.fixture
def srp(moto, daemon_factory):
    pool = moto.create_user_pool()
    server = SrpPool(moto.client("cognito-idp"), pool.pool_id, {pool.username: pool.password})
    identity_pool = moto.create_identity_pool(user_pools=[pool])
    d = daemon_factory(h.make_config(
        login=h.user_pool_login(pool, auth_flow="srp"),
        aws={"flow": "cognito-basic", "identity_pool_id": identity_pool,
             "role_arn": h.BASIC_ROLE_ARN, "session_name": h.SESSION_NAME}))
    d.start(wait_ready=False)
    d.wait_state("login_required", 15)
    yield d, server, pool
    server.stop()


def srp_login(d: h.Daemon, server: SrpPool, pool: h.UserPool, password: str) -> subprocess.CompletedProcess:
    """`credbroker login` with only the sign-in's user-pool calls sent to the
    SRP server (the daemon keeps talking to moto)."""
    env = {**d.env, "AWS_ENDPOINT_URL_COGNITO_IDENTITY_PROVIDER": server.url}
    return subprocess.run(
        [str(d.binary), "login", "--username", pool.username, "--password-stdin", "-c", str(d.config_path)],
        env=env, input=password + "\n", capture_output=True, text=True, timeout=60)


def test_the_stand_in_accepts_pycognito_and_refuses_a_wrong_password(srp):
    _d, server, pool = srp
    client = boto3.session.Session(aws_access_key_id="test", aws_secret_access_key="test",
                                   region_name=h.REGION).client(
        "cognito-idp", endpoint_url=server.url, config=botocore.config.Config(proxies={}))
    ok = AWSSRP(pool.username, pool.password, pool.pool_id, pool.client_id, client=client).authenticate_user()
    assert ok["AuthenticationResult"]["RefreshToken"]
    with pytest.raises(client.exceptions.NotAuthorizedException):
        AWSSRP(pool.username, "not-the-password", pool.pool_id, pool.client_id,
               client=client).authenticate_user()


def test_srp_login_signs_in_without_sending_the_password(srp, moto):
    d, server, pool = srp
    p = srp_login(d, server, pool, pool.password)
    assert p.returncode == 0, p.stderr
    assert [op for op, _ in server.calls] == ["InitiateAuth", "RespondToAuthChallenge"]
    first = server.calls[0][1]
    assert first["AuthFlow"] == "USER_SRP_AUTH" and "PASSWORD" not in first["AuthParameters"]
    assert pool.password not in json.dumps(server.calls), "SRP: the password never leaves the machine"
    assert pool.password not in p.stderr + p.stdout
    # The pool's refresh token (moto's) now serves the signed-in role.
    creds = d.ecs_creds()
    assert caller_arn(moto, creds).startswith(f"arn:aws:sts::{h.ACCOUNT_ID}:assumed-role/CognitoBasicRole/")


def test_srp_login_with_a_wrong_password_is_denied(srp):
    d, server, pool = srp
    p = srp_login(d, server, pool, "not-the-password")
    assert p.returncode == EXIT_DENIED, p.stderr
    assert "wrong username or password" in p.stderr
    assert [op for op, _ in server.calls] == ["InitiateAuth", "RespondToAuthChallenge"]
    assert not d.refresh_token_path().exists()
    assert d.profile_status()["state"] == "login_required"
