"""Scenario 4: the rotated refresh token and the Cognito identity id survive a
restart.

oidc-provider rotates the refresh token on every use and treats a reuse as
theft (the whole grant is revoked), so a daemon that failed to persist the
rotated token would be locked out after a restart.
"""

from __future__ import annotations

import harness as h


def test_rotated_token_and_identity_id_are_persisted(oidc_daemon, moto: h.Moto):
    daemon = oidc_daemon("cognito")
    idp = daemon.idp
    minted = daemon.minted_refresh_token
    rt_path = daemon.refresh_token_path()
    id_path = daemon.identity_id_path()
    idp_before = idp.stats()
    moto.start_recording()
    daemon.start()

    # The daemon refreshed (rotating the token) and stored the new one, owner-only.
    rotated = h.wait_for(lambda: (t := daemon.read_refresh_token()) != minted and t, 10,
                         f"{rt_path} to hold the rotated refresh token")
    assert h.file_mode(rt_path) == 0o600, oct(h.file_mode(rt_path))
    assert rotated.strip() == rotated and rotated, "stored token has stray whitespace"

    # The identity id is cached owner-only and is the one used upstream.
    assert id_path.is_file(), f"{id_path} missing"
    assert h.file_mode(id_path) == 0o600, oct(h.file_mode(id_path))
    identity_id = id_path.read_text().strip()
    assert moto.count("GetId") == 1
    first_gcfi = moto.calls("GetCredentialsForIdentity")
    assert [r.json()["IdentityId"] for r in first_gcfi] == [identity_id]

    # Restart on the same state: the stored token must still be valid.
    daemon.stop()
    daemon.start()
    assert daemon.profile_status()["state"] == "ready"
    assert moto.count("GetId") == 1, "restart must reuse the cached identity id, not call GetId again"
    gcfi = moto.calls("GetCredentialsForIdentity")
    assert len(gcfi) > len(first_gcfi)
    assert {r.json()["IdentityId"] for r in gcfi} == {identity_id}
    assert h.file_mode(rt_path) == 0o600
    daemon.stop()

    stats = idp.stats()
    assert stats["errors"] == idp_before["errors"], "the daemon presented an invalid refresh token"

    # Only now (daemon stopped) touch the grant ourselves: the current token works...
    current = daemon.read_refresh_token()
    status, body = idp.refresh(current)
    assert status == 200, f"the persisted refresh token was rejected: {body}"
    # ...and the originally minted one was rotated away (reuse → invalid_grant).
    status, body = idp.refresh(minted)
    assert status == 400 and body.get("error") == "invalid_grant", body
