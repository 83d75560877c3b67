"""Signing in and out (issue 9): `credbroker login` and `credbroker logout`
against the real oidc-provider (device flow and code flow, rotation on) and
moto, with the test playing the user at the IdP's pages over plain HTTP
(idp_user.py) and the built binary doing everything else.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

import harness as h
from idp_user import IdpUser

EXIT_DENIED = 77
EXIT_EXPIRED = 75


class Login:
    """A running `credbroker login …` whose stderr is read line by line."""

    def __init__(self, daemon: h.Daemon, *args: str):
        daemon._require_binary()
        self.proc = subprocess.Popen(
            [str(daemon.binary), "login", *args, "-c", str(daemon.config_path)],
            env=daemon.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_line(self, pattern: str, timeout: float = 20) -> re.Match:
        rx = re.compile(pattern)

        def found():
            for line in self.lines:
                m = rx.search(line)
                if m:
                    return m
            if self.proc.poll() is not None and not self._reader.is_alive():
                raise AssertionError(f"login exited {self.proc.returncode} before {pattern!r}:\n"
                                     + "\n".join(self.lines))
            return None

        return h.wait_for(found, timeout, f"login output {pattern!r}", interval=0.05)

    def finish(self, timeout: float = 60) -> tuple[int, str]:
        rc = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=5)
        out = self.proc.stdout.read() if self.proc.stdout else ""
        assert out == "", f"login must keep stdout clean, got {out!r}"
        return rc, "\n".join(self.lines)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def device_login(d: h.Daemon, user: str, *, abort: bool = False, timeout: float = 60) -> tuple[int, str]:
    """`credbroker login --device`, with `user` approving (or aborting) at the
    IdP's device page → (exit code, stderr)."""
    login = Login(d, "--device")
    try:
        uri = login.wait_line(r"\(or open (\S+) ,").group(1)
        IdpUser(user).approve_device(uri, abort=abort)
        return login.finish(timeout=timeout)
    finally:
        login.kill()


@pytest.fixture
def signed_out_daemon(moto, oidc, daemon_factory):
    """A started STS-flow daemon with no refresh token yet (login_required)."""
    cfg = h.make_config(login=h.oidc_login(oidc),
                        aws={"flow": "sts", "role_arn": h.OIDC_ROLE_ARN, "session_name": h.SESSION_NAME})
    d = daemon_factory(cfg)
    d.idp = oidc
    d.start(wait_ready=False)
    d.wait_state("login_required", 15)
    return d


def test_device_login_serves_within_seconds(signed_out_daemon, moto):
    d = signed_out_daemon
    login = Login(d, "--device")
    try:
        m = login.wait_line(r"\(or open (\S+) ,")
        code = login.wait_line(r"enter the code:\s+(\S+)").group(1)
        assert code in m.group(1), "verification_uri_complete carries the user code"
        IdpUser("alice").approve_device(m.group(1))
        rc, err = login.finish()
    finally:
        login.kill()
    done = time.monotonic()
    assert rc == 0, err
    assert "Signed in as alice" in err and "is serving credentials" in err, err
    # The daemon served before `login` returned; check at once.
    creds = d.ecs_creds()
    assert time.monotonic() - done < 2
    assert creds["AccessKeyId"]
    # The stored token is the IdP's (0600), and no secret reached the terminal.
    rt_path = d.refresh_token_path()
    assert stat.S_IMODE(rt_path.stat().st_mode) == 0o600
    rt = rt_path.read_text()
    assert rt and rt not in err and creds["SecretAccessKey"] not in err
    # Credentials are of the configured role, for the signed-in subject.
    assert caller_arn(moto, creds) == f"arn:aws:sts::{h.ACCOUNT_ID}:assumed-role/OidcRole/{h.SESSION_NAME}"


def caller_arn(moto: h.Moto, creds: dict) -> str:
    """Who AWS (moto's STS) says the served credentials belong to."""
    import boto3

    sts = boto3.session.Session(
        aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["Token"], region_name=h.REGION).client("sts", endpoint_url=moto.url)
    return sts.get_caller_identity()["Arn"]


def test_browser_login_pkce_ignores_a_forged_state(signed_out_daemon):
    d = signed_out_daemon
    login = Login(d, "--no-browser")
    try:
        url = login.wait_line(r"^\s+(http://127\.0\.0\.1:\d+/auth\?\S+)$").group(1)
        q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
        assert q["code_challenge_method"] == "S256" and len(q["code_challenge"]) == 43
        assert q["prompt"] == "consent" and q["nonce"] and q["state"]
        assert set(q["scope"].split()) >= {"openid", "offline_access"}
        redirect = q["redirect_uri"]
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/callback", redirect), redirect
        callback = IdpUser("bob").browser_sign_in(url, redirect)
        cq = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(callback).query))
        assert cq["state"] == q["state"] and cq["code"]
        # A forged callback first: refused, and the sign-in keeps waiting.
        forged = h.http_request("GET", f"{redirect}?code=stolen&state=forged")
        assert forged.status == 400 and "state mismatch" in forged.text
        login.wait_line(r"ignored a sign-in callback")
        page = h.http_request("GET", callback)
        assert page.status == 200 and "You can close this tab" in page.text
        assert page.header("Cache-Control") == "no-store"
        assert page.header("Referrer-Policy") == "no-referrer"
        rc, err = login.finish()
    finally:
        login.kill()
    assert rc == 0, err
    assert "Signed in as bob" in err
    assert d.ecs_creds()["AccessKeyId"]
    # The callback is one-shot: the listener is gone.
    with pytest.raises(OSError):
        urllib.request.build_opener(urllib.request.ProxyHandler({})).open(callback, timeout=2)


def test_device_login_denied(signed_out_daemon):
    d = signed_out_daemon
    rc, err = device_login(d, "alice", abort=True)
    assert rc == EXIT_DENIED, err
    assert "denied" in err and "access_denied" in err
    assert not d.refresh_token_path().exists()
    assert d.profile_status()["state"] == "login_required"


def test_device_code_expires(moto, oidc_factory, daemon_factory):
    idp = h.OidcProvider(device_ttl=2).start()
    try:
        cfg = h.make_config(login=h.oidc_login(idp),
                            aws={"flow": "sts", "role_arn": h.OIDC_ROLE_ARN, "session_name": h.SESSION_NAME})
        d = daemon_factory(cfg)
        d.write_config()
        login = Login(d, "--device")
        try:
            login.wait_line(r"enter the code")
            rc, err = login.finish(timeout=30)
        finally:
            login.kill()
    finally:
        idp.terminate()
    assert rc == EXIT_EXPIRED, err
    assert "expired before it was approved" in err
    assert "No daemon is running" not in err


class SlowDownProxy:
    """A token endpoint in front of oidc-provider that answers the first
    device-code poll with `slow_down` (a fault the real IdP never produces
    for a client that honours its interval) and records when polls arrive."""

    def __init__(self, upstream: str):
        self.upstream = upstream
        self.polls: list[float] = []
        proxy = self

        class Handler(h.QuietHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                form = dict(urllib.parse.parse_qsl(body.decode()))
                if form.get("grant_type", "").endswith("device_code"):
                    proxy.polls.append(time.monotonic())
                    if len(proxy.polls) == 1:
                        self._send(400, json.dumps({"error": "slow_down"}).encode())
                        return
                resp = h.http_request("POST", proxy.upstream + "/token",
                                      {"Content-Type": "application/x-www-form-urlencoded"}, body=body)
                self._send(resp.status, resp.body)

            def _send(self, status, body):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._http = h.LoopbackServer(Handler)
        self.url = self._http.url

    def stop(self):
        self._http.stop()


def test_device_login_slows_down_when_asked(moto, oidc, daemon_factory):
    proxy = SlowDownProxy(oidc.issuer)
    try:
        cfg = h.make_config(login=h.oidc_login(oidc, token_endpoint=proxy.url + "/token"),
                            aws={"flow": "sts", "role_arn": h.OIDC_ROLE_ARN, "session_name": h.SESSION_NAME})
        d = daemon_factory(cfg)
        d.start(wait_ready=False)
        rc, err = device_login(d, "alice")
    finally:
        proxy.stop()
    assert rc == 0, err
    assert "asked to slow down; polling every 10 s" in err
    assert len(proxy.polls) == 2, proxy.polls
    # RFC 8628 §3.5: after slow_down the interval grows by 5 s (5 → 10).
    assert proxy.polls[1] - proxy.polls[0] >= 9.5, proxy.polls


def test_logout_revokes_and_drops_credentials_at_once(oidc_daemon):
    d = oidc_daemon("sts")
    d.start()
    old = d.ecs_creds()
    token = d.read_refresh_token()
    rc = d.cli("logout")
    assert rc.returncode == 0, rc.stderr
    assert "revoked at the identity provider" in rc.stderr
    assert "the daemon dropped the credentials of default" in rc.stderr
    # Dropped now, not at expiry; and never served again.
    for _ in range(10):
        r = d.ecs_creds_response()
        assert r.status == 503, r
        assert old["AccessKeyId"] not in r.text
        time.sleep(0.1)
    assert d.profile_status()["state"] == "logged_out"
    assert not d.refresh_token_path().exists()
    # The IdP itself now refuses the token that was stored.
    status, body = d.idp.refresh(token)
    assert status == 400 and body.get("error") == "invalid_grant", body
    st = d.cli("status")
    assert st.returncode == 3 and "credbroker login --profile default" in (st.stdout + st.stderr)


def test_logout_clears_local_state_when_revocation_fails(moto, daemon_factory):
    dead = "http://127.0.0.1:9"  # discard port: nothing listens
    cfg = h.make_config(login={"kind": "oidc", "issuer": dead, "client_id": "daemon"},
                        aws={"flow": "sts", "role_arn": h.OIDC_ROLE_ARN, "session_name": h.SESSION_NAME})
    d = daemon_factory(cfg)
    d.write_refresh_token("rt-that-cannot-be-revoked")
    d.start(wait_ready=False)
    rc = d.cli("logout")
    assert rc.returncode == 1, rc.stderr
    assert "NOT revoked" in rc.stderr and "rt-that-cannot-be-revoked" not in rc.stderr
    assert not d.refresh_token_path().exists()
    assert d.profile_status()["state"] == "logged_out"


def test_login_after_logout_serves_a_new_identity(oidc_daemon):
    d = oidc_daemon("sts")
    d.start()
    assert d.cli("logout").returncode == 0
    rc, err = device_login(d, "carol")
    assert rc == 0, err
    assert "Signed in as carol" in err
    assert d.profile_status()["state"] == "ready"
    assert d.ecs_creds()["AccessKeyId"]


def test_login_without_daemon_says_how_to_start_it(signed_out_daemon):
    d = signed_out_daemon
    d.stop()
    rc, err = device_login(d, "alice")
    assert rc == 0, err
    assert "No daemon is running" in err and "credbroker serve" in err
    assert d.refresh_token_path().read_text()
    # Started now, the daemon serves the stored sign-in.
    d.start()
    assert d.ecs_creds()["AccessKeyId"]


# --- Cognito user pools: password sign-in (moto) ------------------------------

def _pool_daemon(moto, daemon_factory, **login_extra) -> h.Daemon:
    # moto cannot run SRP (the default; test_srp.py covers it): the password flow.
    login_extra.setdefault("auth_flow", "password")
    pool = moto.create_user_pool()
    identity_pool = moto.create_identity_pool(user_pools=[pool])
    d = daemon_factory(h.make_config(
        login=h.user_pool_login(pool, **login_extra),
        aws={"flow": "cognito-basic", "identity_pool_id": identity_pool,
             "role_arn": h.BASIC_ROLE_ARN, "session_name": h.SESSION_NAME},
    ))
    d.pool = pool
    d.start(wait_ready=False)
    d.wait_state("login_required", 15)
    return d


@pytest.fixture
def pool_daemon(moto, daemon_factory):
    """A user-pool profile signing in with USER_PASSWORD_AUTH (moto cannot
    check USER_SRP_AUTH, the default: its challenge is not real SRP)."""
    return _pool_daemon(moto, daemon_factory)


def login_stdin(d: h.Daemon, *args: str, stdin: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(d.binary), "login", *args, "-c", str(d.config_path)], env=d.env,
                          input=stdin, capture_output=True, text=True, timeout=60)


def test_user_pool_password_login(pool_daemon, moto):
    d = pool_daemon
    moto.start_recording()
    p = login_stdin(d, "--username", d.pool.username, "--password-stdin", stdin=d.pool.password + "\n")
    assert p.returncode == 0, p.stderr
    sent = [r.json() for r in moto.download_recording() if r.action == "InitiateAuth"]
    assert sent[0]["AuthFlow"] == "USER_PASSWORD_AUTH", sent[0]
    assert f"Signed in as {d.pool.username}" in p.stderr and d.pool.password not in p.stderr + p.stdout
    creds = d.ecs_creds()
    assert caller_arn(moto, creds).startswith(f"arn:aws:sts::{h.ACCOUNT_ID}:assumed-role/CognitoBasicRole/")
    rt = d.refresh_token_path().read_text()
    assert rt and rt not in p.stderr
    # Logout: moto has no RevokeToken, so revocation fails, is reported, and
    # the local state is cleared anyway.
    out = d.cli("logout")
    assert out.returncode == 1, out.stderr
    assert "NOT revoked" in out.stderr and rt not in out.stderr
    assert not d.refresh_token_path().exists()
    assert d.ecs_creds_response().status == 503
    assert d.profile_status()["state"] == "logged_out"


def test_user_pool_mfa_and_wrong_password(pool_daemon, moto):
    d = pool_daemon
    bad = login_stdin(d, "--username", d.pool.username, "--password-stdin", stdin="wrong\n")
    assert bad.returncode == EXIT_DENIED, bad.stderr
    assert "wrong username or password" in bad.stderr
    assert not d.refresh_token_path().exists()
    idp = moto.client("cognito-idp")
    access = moto.user_pool_login(d.pool)["AccessToken"]
    idp.associate_software_token(AccessToken=access)
    idp.verify_software_token(AccessToken=access, UserCode="123456")
    idp.admin_set_user_mfa_preference(
        UserPoolId=d.pool.pool_id, Username=d.pool.username,
        SoftwareTokenMfaSettings={"Enabled": True, "PreferredMfa": True})
    # The MFA code is the second stdin line (moto accepts any code).
    ok = login_stdin(d, "--username", d.pool.username, "--password-stdin",
                     stdin=f"{d.pool.password}\n123456\n")
    assert ok.returncode == 0, ok.stderr
    assert d.ecs_creds()["AccessKeyId"]
    # Without the code on stdin, the sign-in stops with a usage error.
    no_code = login_stdin(d, "--username", d.pool.username, "--password-stdin", stdin=d.pool.password + "\n")
    assert no_code.returncode == 64, no_code.stderr
    assert "MFA code" in no_code.stderr
