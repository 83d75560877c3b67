"""Signing in to a Cognito user pool through its hosted UI (`login.domain`):
authorization code + PKCE with a registered loopback redirect, the id_token
checked against the pool's JWKS (moto's), then the daemon serving the
authenticated role and refreshing with the pool's refresh token (moto).

moto has no hosted UI, so hosted_ui.py plays the domain, holding our client
to what Cognito checks (exact callback URL, allowed scopes, S256, client
authentication, one-time codes); moto does the user pool's work.
"""

from __future__ import annotations

import dataclasses
import re
import socket
import urllib.error
import urllib.parse
import urllib.request

import pytest

import harness as h
from hosted_ui import HostedUi
from test_login import Login, caller_arn, login_stdin

EXIT_PROTOCOL = 76
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    """A loopback port for the registered callback URL (Cognito matches
    callback URLs exactly, so the port is fixed in the config)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def browse(url: str, form: dict[str, str] | None = None) -> tuple[int, str, str]:
    """One browser request, redirects not followed → (status, Location, body)."""
    opener = urllib.request.build_opener(_NoRedirect(), urllib.request.ProxyHandler({}))
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    try:
        with opener.open(urllib.request.Request(url, data=data), timeout=10) as r:
            return r.status, r.headers.get("Location", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Location", ""), e.read().decode()


def sign_in_at_hosted_ui(auth_url: str, ui: HostedUi, pool: h.UserPool) -> str:
    """Play the user: the sign-in page, the password, the redirect back to
    credbroker's listener → the listener's page."""
    status, _, page = browse(auth_url)
    assert status == 200, page
    session = re.search(r'name="session" value="([^"]+)"', page).group(1)
    status, callback, page = browse(f"{ui.url}/login", {
        "session": session, "username": pool.username, "password": pool.password})
    assert status == 302, page
    status, _, page = browse(callback)
    assert status == 200 and "close this tab" in page, page
    return callback


@pytest.fixture
def hosted(moto, daemon_factory):
    """A started cognito-basic profile whose user pool signs in through a
    hosted UI; returns a function making (daemon, ui, pool) for a public or a
    confidential app client."""
    started: list[HostedUi] = []

    def make(*, confidential: bool = False, scopes: list[str] | None = None, **login_extra):
        base = moto.create_user_pool()
        port = free_port()
        callback = f"http://localhost:{port}/callback"
        idp = moto.client("cognito-idp")
        client = idp.create_user_pool_client(
            UserPoolId=base.pool_id, ClientName="hosted", GenerateSecret=confidential,
            ExplicitAuthFlows=["ALLOW_REFRESH_TOKEN_AUTH"], AllowedOAuthFlowsUserPoolClient=True,
            AllowedOAuthFlows=["code"], AllowedOAuthScopes=["openid", "email"],
            CallbackURLs=[callback], SupportedIdentityProviders=["COGNITO"],
        )["UserPoolClient"]
        pool = dataclasses.replace(base, client_id=client["ClientId"],
                                   client_secret=client.get("ClientSecret"))
        ui = HostedUi(idp, pool.pool_id)
        started.append(ui)
        login = h.user_pool_login(pool, domain=ui.url, redirect_uri=callback, **login_extra)
        if scopes is not None:
            login["scopes"] = scopes
        identity_pool = moto.create_identity_pool(user_pools=[pool])
        cfg = h.make_config(login=login, aws={
            "flow": "cognito-basic", "identity_pool_id": identity_pool,
            "role_arn": h.BASIC_ROLE_ARN, "session_name": h.SESSION_NAME})
        d = daemon_factory(cfg)
        if confidential:
            secret = h.write_secret(d.workdir / "secrets" / "client-secret", pool.client_secret)
            d.config["profiles"]["default"]["login"].update(client_secret_file=str(secret),
                                                            username=pool.username)
        d.start(wait_ready=False)
        d.wait_state("login_required", 15)
        return d, ui, pool

    yield make
    for ui in started:
        ui.stop()


def auth_url_of(login: Login) -> str:
    return login.wait_line(r"^\s+(http\S+/oauth2/authorize\?\S+)").group(1)


@pytest.mark.parametrize("confidential", [False, True], ids=["public-client", "client-secret"])
def test_hosted_ui_login_serves_the_signed_in_role(hosted, moto, confidential):
    d, ui, pool = hosted(confidential=confidential, scopes=["email"])
    moto.start_recording()
    login = Login(d, "--no-browser")
    try:
        url = auth_url_of(login)
        q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
        # What Cognito needs: the registered callback exactly, S256, only
        # scopes the app client allows (no offline_access), a nonce.
        assert url.startswith(f"{ui.url}/oauth2/authorize?"), url
        assert q["client_id"] == pool.client_id and q["response_type"] == "code"
        assert q["redirect_uri"] == d.config["profiles"]["default"]["login"]["redirect_uri"]
        assert q["scope"].split() == ["openid", "email"], q["scope"]
        assert q["code_challenge_method"] == "S256" and len(q["code_challenge"]) == 43
        assert len(q["state"]) >= 43 and len(q["nonce"]) >= 43
        assert "prompt" not in q
        login.wait_line(r"redirect_mismatch, register http://localhost:\d+/callback")
        callback = sign_in_at_hosted_ui(url, ui, pool)
        rc, err = login.finish()
    finally:
        login.kill()
    assert rc == 0, err
    assert f"Signed in as {pool.username}" in err
    token_calls = [p for (m, path, p) in ui.requests if path == "/oauth2/token"]
    assert len(token_calls) == 1
    sent = token_calls[0]
    assert sent["grant_type"] == "authorization_code" and sent["code_verifier"]
    assert sent["redirect_uri"] == q["redirect_uri"]
    # A confidential client authenticates with HTTP Basic, not in the form
    # (the stand-in refuses a confidential client without it).
    assert ("client_id" in sent) == (not confidential), sent
    rt = d.refresh_token_path().read_text()
    code = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(callback).query))["code"]
    for secret in (rt, code, sent["code_verifier"], pool.password):
        assert secret not in err and secret not in d.current_logs()
    # Served: the daemon turned the stored refresh token into an id_token at
    # the pool (moto), with SECRET_HASH for a confidential client.
    creds = d.ecs_creds()
    assert caller_arn(moto, creds).startswith(f"arn:aws:sts::{h.ACCOUNT_ID}:assumed-role/CognitoBasicRole/")
    refreshes = [r.json() for r in moto.download_recording() if r.action == "InitiateAuth"]
    assert refreshes and refreshes[-1]["AuthFlow"] == "REFRESH_TOKEN_AUTH", refreshes
    assert refreshes[-1]["AuthParameters"]["REFRESH_TOKEN"] == rt
    assert ("SECRET_HASH" in refreshes[-1]["AuthParameters"]) == confidential, refreshes[-1]


def test_hosted_ui_wrong_nonce_is_refused_and_nothing_is_stored(hosted):
    d, ui, pool = hosted()
    ui.wrong_nonce = True
    login = Login(d, "--no-browser")
    try:
        sign_in_at_hosted_ui(auth_url_of(login), ui, pool)
        rc, err = login.finish()
    finally:
        login.kill()
    assert rc == EXIT_PROTOCOL, err
    assert "nonce does not match" in err, err
    assert not d.refresh_token_path().exists()
    assert d.profile_status()["state"] == "login_required"


def test_hosted_ui_scope_the_client_does_not_allow(hosted):
    d, ui, pool = hosted(scopes=["email", "phone"])
    login = Login(d, "--no-browser")
    try:
        status, callback, _ = browse(auth_url_of(login))
        assert status == 302 and "error=invalid_scope" in callback, callback
        assert browse(callback)[0] == 200
        rc, err = login.finish()
    finally:
        login.kill()
    assert rc == 64, err
    assert "invalid_scope" in err and "login.scopes" in err, err
    assert not d.refresh_token_path().exists()


def test_hosted_ui_has_no_device_grant_and_password_still_works(hosted, moto):
    d, ui, pool = hosted(auth_flow="password")  # moto cannot run SRP
    p = d.cli("login", "--device")
    assert p.returncode == 64, p.stderr
    assert "no device authorization grant" in p.stderr and "--no-browser" in p.stderr
    # --password (implied by --password-stdin) signs in with InitiateAuth
    # instead, without the hosted UI.
    moto.start_recording()
    p = login_stdin(d, "--password-stdin", "--username", pool.username, stdin=pool.password + "\n")
    assert p.returncode == 0, p.stderr
    sent = [r.json() for r in moto.download_recording() if r.action == "InitiateAuth"]
    assert sent[0]["AuthFlow"] == "USER_PASSWORD_AUTH", sent
    assert ui.requests == [], "no browser flow was started"
    assert d.ecs_creds()["AccessKeyId"]
