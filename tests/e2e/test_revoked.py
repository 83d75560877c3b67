"""Scenario 5: the IdP revokes the grant while the daemon runs.

We present the originally minted refresh token, which the daemon has already
rotated away; oidc-provider treats that as a reuse and revokes the whole grant,
including the token the daemon holds now. The daemon must then say "login
required" (status and an ERROR log naming the refresh-token file), keep serving
the last credentials only until they expire, then answer 503 and never serve
expired credentials, and must not hammer the IdP. `credbroker status` then exits
3 (a profile is not serving) and names it.
"""

from __future__ import annotations

import re
import time

import harness as h

ID_TTL = 20
AFTER_EXPIRY = 20  # seconds to keep polling after the last credentials expired


def test_revoked_grant_means_login_required_and_no_expired_creds(oidc_daemon):
    daemon = oidc_daemon("sts", id_ttl=ID_TTL, aws={"duration": "60s"})
    idp = daemon.idp
    daemon.start()
    served = daemon.imds_creds()
    expiration = h.parse_expiration(served["Expiration"])

    status, body = idp.refresh(daemon.minted_refresh_token)
    assert status == 400 and body.get("error") == "invalid_grant", \
        f"the daemon should already have rotated the minted token: {body}"
    idp_baseline = idp.stats()

    st = daemon.wait_state("login_required", timeout=75)
    assert st["last_error"], f"login_required without last_error: {st}"
    # `credbroker status` tells scripts and health checks: exit 3, the profile named.
    proc = daemon.cli("status")
    assert proc.returncode == 3, f"status exit {proc.returncode}\n{proc.stdout}{proc.stderr}"
    assert "login_required" in proc.stdout and "default (login_required)" in proc.stderr, proc.stdout + proc.stderr

    # Poll both endpoints every second until well after the last expiration.
    polls = 0
    while True:
        tick = time.monotonic()
        now = h.utcnow()
        imds, _ = daemon.imds_creds_response()
        ecs = daemon.ecs_creds_response("default")
        polls += 1
        for name, resp in (("IMDS", imds), ("ECS", ecs)):
            if resp.status == 200:
                exp = h.parse_expiration(resp.json()["Expiration"])
                assert exp > now, f"{name} served expired credentials at {now:%H:%M:%S}: {resp}"
                assert resp.json()["AccessKeyId"] == served["AccessKeyId"], \
                    f"{name} served new credentials although the grant is revoked"
                expiration = max(expiration, exp)
            else:
                assert resp.status == 503, f"{name}: expected 200 or 503, got {resp}"
            if (now - expiration).total_seconds() > 1:
                assert resp.status == 503, f"{name} at {now:%H:%M:%S}, after expiry {expiration}: {resp}"
        if (now - expiration).total_seconds() > AFTER_EXPIRY:
            break
        assert polls < 200, "credentials never expired"
        time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))

    assert daemon.get("/readyz").status == 503
    assert daemon.get("/healthz").status == 200
    assert daemon.profile_status()["state"] in ("login_required", "expired")

    rt_path = str(daemon.refresh_token_path())
    error_lines = [line for line in daemon.logs().splitlines() if re.search(r"\bERROR\b", line)]
    assert any(rt_path in line and re.search(r"login[ _-]required", line, re.I) for line in error_lines), (
        f"no ERROR log line naming {rt_path} and saying 'login required'; ERROR lines:\n"
        + "\n".join(error_lines[-20:]))

    grants = idp.stats()["refresh_grants"] - idp_baseline["refresh_grants"]
    assert grants <= 3, f"{grants} refresh attempts at the IdP after the revocation (storm)"
    daemon.stop()
