"""Scenario 3: OIDC → STS AssumeRoleWithWebIdentity with 60 s credentials.

For at least three refresh cycles, every second, both endpoints must answer
200 with unexpired credentials in the exact wire format, the keys must rotate,
and every rotation must cost exactly one upstream exchange (no storm).
"""

from __future__ import annotations

import time

import harness as h

ID_TTL = 20  # shorter than the credential lifetime: every cycle needs an IdP refresh
MIN_SECONDS = 100
MIN_DISTINCT_KEYS = 4  # = at least 3 rotations
MAX_SECONDS = 240


def test_rotation_without_gaps_or_storms(oidc_daemon, moto: h.Moto):
    daemon = oidc_daemon("sts", id_ttl=ID_TTL, aws={"duration": "60s"})
    idp_before = daemon.idp.stats()
    moto.start_recording()
    daemon.start()

    keys: list[str] = []  # distinct access keys, in the order first seen
    polls = mismatches = 0
    started = time.monotonic()
    while True:
        tick = time.monotonic()
        now = h.utcnow()
        imds, _ = daemon.imds_creds_response()
        ecs = daemon.ecs_creds_response("default")
        polls += 1
        where = f"poll {polls} at {now:%H:%M:%S}"
        assert imds.status == 200, f"{where}: IMDS {imds}"
        assert ecs.status == 200, f"{where}: ECS {ecs}"
        imds_body, ecs_body = imds.json(), ecs.json()
        assert imds_body["Code"] == "Success", where
        for name, body in (("IMDS", imds_body), ("ECS", ecs_body)):
            expiration = h.parse_expiration(body["Expiration"])  # asserts YYYY-MM-DDTHH:MM:SSZ
            assert expiration > now, f"{where}: {name} served expired credentials {body['Expiration']}"
            if body["AccessKeyId"] not in keys:
                keys.append(body["AccessKeyId"])
        if imds_body["AccessKeyId"] != ecs_body["AccessKeyId"]:
            mismatches += 1  # possible only when a rotation lands between the two requests

        elapsed = time.monotonic() - started
        if elapsed >= MIN_SECONDS and len(keys) >= MIN_DISTINCT_KEYS:
            break
        assert elapsed < MAX_SECONDS, f"only {len(keys)} distinct keys after {elapsed:.0f}s: {keys}"
        time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))

    assumes = moto.calls("AssumeRoleWithWebIdentity")
    assert len(keys) <= len(assumes) <= len(keys) + 1, (
        f"{len(assumes)} AssumeRoleWithWebIdentity calls for {len(keys)} distinct keys: "
        "expected exactly one upstream exchange per refresh cycle")
    assert mismatches <= len(keys) - 1, f"IMDS and ECS disagreed on {mismatches} of {polls} polls"
    for req in assumes:
        form = req.form()
        assert form["RoleArn"] == h.OIDC_ROLE_ARN
        assert form["RoleSessionName"] == h.SESSION_NAME
        assert form["DurationSeconds"] == "60"
        assert h.jwt_claims(form["WebIdentityToken"])["iss"] == daemon.idp.issuer

    idp_after = daemon.idp.stats()
    refreshes = idp_after["refresh_success"] - idp_before["refresh_success"]
    assert 1 <= refreshes <= len(assumes) + 1, f"{refreshes} IdP refreshes for {len(assumes)} STS exchanges"
    assert idp_after["errors"] == idp_before["errors"], "the daemon caused IdP grant errors"

    status = daemon.profile_status()
    assert status["state"] == "ready"
    assert status["refreshes"] >= MIN_DISTINCT_KEYS - 1
    daemon.stop()
