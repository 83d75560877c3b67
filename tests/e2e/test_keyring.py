"""The OS keychain as token store (issue 9): `login.token_store = "keyring"`
against a real Secret Service — gnome-keyring-daemon on a private D-Bus
session bus (testbed.md 8.5) — with oidc-provider (rotation and strict reuse
detection on) and moto. The test checks the keychain itself with libsecret's
`secret-tool`, an independent client.

Sign in, serve, rotate across restarts, sign out; and the clear errors when no
Secret Service is reachable.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

import harness as h
from test_login import device_login

EXIT_CANTCREAT = 73  # the token could not be stored


@dataclass
class SecretService:
    """A session bus with gnome-keyring's Secret Service, unlocked."""

    address: str
    env: dict[str, str]

    def lookup(self, account: str) -> str | None:
        """The credbroker entry for `account`, read with secret-tool."""
        r = subprocess.run(["secret-tool", "lookup", "service", "credbroker", "username", account],
                           env=self.env, capture_output=True, text=True, timeout=20)
        return r.stdout if r.returncode == 0 and r.stdout else None


@pytest.fixture
def secret_service(tmp_path: Path) -> Iterator[SecretService]:
    missing = [t for t in ("gnome-keyring-daemon", "secret-tool") if not shutil.which(t)]
    if missing:
        pytest.fail(f"missing {missing}: run tests/setup.sh (Debian: gnome-keyring libsecret-tools)")
    bus = h.SessionBus(tmp_path)
    try:
        keyring = bus.spawn(["gnome-keyring-daemon", "--foreground", "--unlock", "--components=secrets"],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert keyring.stdin is not None
        keyring.stdin.write(b"test-keyring-password")
        keyring.stdin.close()
        h.wait_for(lambda: bus.has_owner("org.freedesktop.secrets"), 20,
                   "gnome-keyring on the bus (org.freedesktop.secrets)")
        yield SecretService(bus.address, bus.env)
    finally:
        bus.stop()


def _keyring_daemon(moto, oidc, daemon_factory, bus: str) -> h.Daemon:
    login = {**h.oidc_login(oidc), "token_store": "keyring"}
    cfg = h.make_config(login=login,
                        aws={"flow": "sts", "role_arn": h.OIDC_ROLE_ARN, "session_name": h.SESSION_NAME})
    d = daemon_factory(cfg, extra_env={"DBUS_SESSION_BUS_ADDRESS": bus})
    d.idp = oidc
    return d


def test_keyring_login_rotation_restart_and_logout(moto, oidc, daemon_factory, secret_service):
    ss = secret_service
    d = _keyring_daemon(moto, oidc, daemon_factory, ss.address)
    account = str(d.refresh_token_path())
    d.start(wait_ready=False)
    d.wait_state("login_required", 15)
    st = d.cli("status")
    assert "credbroker login" in st.stdout + st.stderr

    rc, err = device_login(d, "alice")
    assert rc == 0, err
    assert "stored in the OS keychain" in err and "is serving credentials" in err, err
    assert not d.refresh_token_path().exists(), "keyring mode must not write the token file"
    first = ss.lookup(account)
    assert first, "no credbroker entry in the Secret Service after login"
    creds = d.ecs_creds()
    assert creds["AccessKeyId"]

    # Restarts: each start refreshes with the keychain's token (no file exists),
    # oidc-provider rotates it, and the daemon saves the new one to the
    # keychain before using it (else the next start would present a
    # rotated-away token and reuse detection would revoke the grant).
    seen = [first]
    for _ in range(2):
        d.stop()
        d.start()
        now = ss.lookup(account)
        assert now and now not in seen, "the rotated token was not saved to the keychain"
        seen.append(now)
        assert d.ecs_creds()["AccessKeyId"]

    # Signing in as someone else while the daemon serves: the daemon forgets
    # the entry it read and uses the new one (the id_token it sends names bob).
    moto.start_recording()
    rc, err = device_login(d, "bob")
    assert rc == 0, err
    bobs = ss.lookup(account)
    assert bobs and bobs not in seen
    seen.append(bobs)
    subs = [h.jwt_claims(t)["sub"] for t in moto.web_identity_tokens()]
    assert subs and set(subs) == {"bob"}, subs

    # Many credential reads, no keychain write and no upstream call.
    token_requests = oidc.stats()["token_requests"]
    for _ in range(20):
        assert d.ecs_creds()["AccessKeyId"]
    assert ss.lookup(account) == seen[-1]
    assert oidc.stats()["token_requests"] == token_requests

    rc = d.cli("logout")
    assert rc.returncode == 0, rc.stderr
    assert "revoked at the identity provider" in rc.stderr, rc.stderr
    assert ss.lookup(account) is None, "logout left the token in the keychain"
    assert d.profile_status()["state"] == "logged_out"
    r = d.ecs_creds_response()
    assert r.status == 503 and creds["AccessKeyId"] not in r.text
    # doctor asks for a sign-in, not for a refresh-token file.
    doc = d.cli("doctor")
    text = doc.stdout + doc.stderr
    assert "kept in the OS keychain" in text and "login.refresh_token_file" not in text, text

    # The IdP itself refuses the token the keychain held.
    status, body = oidc.refresh(seen[-1])
    assert status == 400 and body.get("error") == "invalid_grant", body

    scan = h.SecretScan()
    scan.add("ECS token", d.ecs_token())
    for t in seen:
        scan.add("refresh token (keychain)", t)
    leaks = scan.leaks({"daemon log": d.logs(), "logout output": rc.stdout + rc.stderr})
    assert not leaks, "\n".join(leaks)


def test_keyring_without_a_secret_service_says_what_to_do(moto, oidc, daemon_factory, tmp_path):
    nowhere = f"unix:path={tmp_path}/no-bus-here"
    d = _keyring_daemon(moto, oidc, daemon_factory, nowhere)
    d.start(wait_ready=False)
    st = h.wait_for(lambda: (s := d.profile_status()).get("last_error") and s, 15, "the keychain error")
    msg = st["last_error"]["message"]
    assert "OS keychain" in msg and 'login.token_store = "file"' in msg, msg
    assert st["state"] != "ready"
    # A sign-in that cannot store its token says so and exits 73; nothing is
    # written to a file behind the user's back.
    rc, err = device_login(d, "alice")
    assert rc == EXIT_CANTCREAT, err
    assert "OS keychain" in err and 'login.token_store = "file"' in err, err
    assert not d.refresh_token_path().exists()
