"""Guest first, then signed in (issue 9): `login.guest_until_login = true` on
a Cognito profile against moto (an identity pool that allows unauthenticated
identities) and oidc-provider, with `credbroker login --device` and
`credbroker logout` run as a user would.

moto hands out the same keys for guests and signed-in identities, so the test
reads what the daemon asked Cognito (moto's request recording): GetId without
Logins for the guest; after the sign-in, GetCredentialsForIdentity on the
*same* identity id with the Logins map (which links the sign-in to it); after
the sign-out, a new guest identity.
"""

from __future__ import annotations

import pytest

import harness as h
from test_login import device_login


def _cognito(moto: h.Moto) -> list[h.RecordedRequest]:
    return [r for r in moto.download_recording()
            if r.action in ("GetId", "GetCredentialsForIdentity", "GetOpenIdToken")]


@pytest.fixture
def guest_daemon(moto: h.Moto, oidc, daemon_factory) -> h.Daemon:
    pool = moto.create_oidc_identity_pool(oidc.issuer, allow_unauthenticated=True)
    cfg = h.make_config(login={**h.oidc_login(oidc), "guest_until_login": True},
                        aws={"flow": "cognito", "identity_pool_id": pool})
    d = daemon_factory(cfg)
    d.idp = oidc
    moto.start_recording()
    return d


def test_guest_then_signed_in_on_the_same_identity_then_a_new_guest(guest_daemon, moto, oidc):
    d = guest_daemon
    d.start()  # ready: guest credentials, no refresh token anywhere
    assert not d.refresh_token_path().exists()
    st = d.profile_status()
    assert st["state"] == "ready" and st["guest"] is True, st
    assert d.ecs_creds()["AccessKeyId"]
    assert "(guest)" in d.cli("status").stdout
    calls = _cognito(moto)
    get_ids = [c for c in calls if c.action == "GetId"]
    assert len(get_ids) == 1 and not get_ids[0].json().get("Logins"), calls
    guest_id = d.identity_id_path().read_text()
    assert guest_id.startswith("us-east-1:")
    gcfi = [c.json() for c in calls if c.action == "GetCredentialsForIdentity"]
    assert gcfi and all(c["IdentityId"] == guest_id and not c.get("Logins") for c in gcfi), gcfi

    moto.start_recording()
    rc, err = device_login(d, "alice")
    assert rc == 0, err
    assert "is serving credentials" in err, err
    st = d.profile_status()
    assert st["state"] == "ready" and st["guest"] is False, st
    calls = _cognito(moto)
    assert not [c for c in calls if c.action == "GetId"], "the sign-in must keep the guest identity"
    gcfi = [c.json() for c in calls if c.action == "GetCredentialsForIdentity"]
    assert gcfi, calls
    assert gcfi[0]["IdentityId"] == guest_id, "the sign-in was not linked to the guest identity"
    assert list(gcfi[0]["Logins"]) == [oidc.login_provider], gcfi[0]
    assert h.jwt_claims(gcfi[0]["Logins"][oidc.login_provider])["sub"] == "alice"
    assert d.identity_id_path().read_text() == guest_id

    moto.start_recording()
    out = d.cli("logout")
    assert out.returncode == 0, out.stderr
    assert "serves guest credentials for default again" in out.stderr, out.stderr
    st = h.wait_for(lambda: (s := d.profile_status())["state"] == "ready" and s.get("guest") and s, 10,
                    "guest credentials after the sign-out")
    assert d.ecs_creds()["AccessKeyId"]
    assert not d.refresh_token_path().exists()
    calls = _cognito(moto)
    get_ids = [c.json() for c in calls if c.action == "GetId"]
    assert len(get_ids) == 1 and not get_ids[0].get("Logins"), get_ids
    new_guest = d.identity_id_path().read_text()
    assert new_guest != guest_id, "logout must start a fresh guest identity"
    assert all(not c.json().get("Logins") for c in calls if c.action == "GetCredentialsForIdentity")


def test_guest_until_login_needs_a_cognito_flow(moto, oidc, daemon_factory):
    cfg = h.make_config(login={**h.oidc_login(oidc), "guest_until_login": True},
                        aws={"flow": "sts", "role_arn": h.OIDC_ROLE_ARN, "session_name": h.SESSION_NAME})
    d = daemon_factory(cfg)
    d.write_config()
    r = d.cli("check-config", timeout=20)
    assert r.returncode == 64, r.stderr
    assert "profiles.default.login.guest_until_login" in r.stderr and "cognito" in r.stderr, r.stderr
