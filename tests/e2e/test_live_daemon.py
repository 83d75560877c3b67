"""A live daemon (issue 8), against the built binary with moto and oidc-provider.

- Editing the config file adds, removes and restarts profiles within 2 s,
  while an unchanged profile keeps its credentials (same AccessKeyId) and
  makes no upstream call; a changed role never serves the old role's
  credentials afterwards; an invalid edit keeps serving, names the key in the
  log and in `status`, and fixing it applies; SIGHUP reloads what the file
  watch cannot see (a session-policy file's content).
- Two profiles on one refresh-token file share one login: one IdP refresh per
  cycle (oidc-provider rotates and detects reuse), no revoked grant, across
  three cycles.
- Per-profile IMDS ports (`imds_listen`) read by boto3 and by the Rust SDK's
  IMDS provider, two profiles at once, each getting its own role.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from typing import Any

import harness as h

DEV_ROLE = f"arn:aws:iam::{h.ACCOUNT_ID}:role/DevRole"
OPS_ROLE = f"arn:aws:iam::{h.ACCOUNT_ID}:role/OpsRole"


def _sts_profile(daemon: h.Daemon, role: str, **extra: Any) -> dict[str, Any]:
    """A profile on the same login (refresh-token file) as ``default``."""
    base = daemon.config["profiles"]["default"]
    return {"region": h.REGION, **extra, "login": dict(base["login"]),
            "aws": {"flow": "sts", "role_arn": role, "session_name": h.SESSION_NAME}}


def _shared_login(daemon: h.Daemon) -> None:
    """Pin default's refresh-token file so other profiles can name it too."""
    login = daemon.config["profiles"]["default"]["login"]
    login["refresh_token_file"] = str(daemon.refresh_token_path())


def _wait(pred, timeout: float, what: str):
    return h.wait_for(pred, timeout, what, interval=0.05)


def _sts_calls_for(moto: h.Moto, role: str) -> int:
    return sum(1 for r in moto.calls("AssumeRoleWithWebIdentity") if r.form().get("RoleArn") == role)


def test_edits_add_remove_and_restart_profiles_and_leave_the_rest_alone(oidc_daemon, moto: h.Moto):
    daemon = oidc_daemon("sts")
    _shared_login(daemon)
    daemon.start()
    default_key = daemon.ecs_creds("default")["AccessKeyId"]
    moto.start_recording()
    grants = daemon.idp.stats()["refresh_grants"]

    # Added: served within 2 s.
    daemon.config["profiles"]["dev"] = _sts_profile(daemon, DEV_ROLE)
    daemon.write_config()
    t0 = time.monotonic()
    _wait(lambda: daemon.ecs_creds_response("dev").status == 200, 2.5, "the added profile served")
    added_after = time.monotonic() - t0
    assert added_after < 2.0, f"added profile served after {added_after:.2f} s"
    assert "dev" in daemon.status()["profiles"]
    # Unchanged: same key, no upstream call (the shared login's id_token was reused).
    assert daemon.ecs_creds("default")["AccessKeyId"] == default_key
    assert _sts_calls_for(moto, h.OIDC_ROLE_ARN) == 0
    assert _sts_calls_for(moto, DEV_ROLE) == 1
    assert daemon.idp.stats()["refresh_grants"] == grants, "adding a profile on the same login refreshed the IdP"

    # Changed role: never the old role's credentials once the reload applied.
    dev_key = daemon.ecs_creds("dev")["AccessKeyId"]
    daemon.config["profiles"]["dev"] = _sts_profile(daemon, OPS_ROLE)
    daemon.write_config()
    seen_other = False
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        r = daemon.ecs_creds_response("dev")
        if r.status == 200 and r.json()["AccessKeyId"] != dev_key:
            seen_other = True
        elif r.status == 200:
            assert not seen_other, "the old role's credentials were served again after the change"
        else:
            assert r.status == 503, r
            seen_other = True
        if seen_other and r.status == 200:
            break
        time.sleep(0.02)
    assert seen_other, "the changed role was not applied within 3 s"
    assert _wait(lambda: _sts_calls_for(moto, OPS_ROLE) == 1, 3, "the new role assumed")
    for _ in range(20):
        assert daemon.ecs_creds("dev")["AccessKeyId"] != dev_key

    # Removed: 404 within 2 s, gone from status; its state on disk is kept.
    del daemon.config["profiles"]["dev"]
    daemon.write_config()
    t0 = time.monotonic()
    _wait(lambda: daemon.ecs_creds_response("dev").status == 404, 2.5, "the removed profile's 404")
    assert time.monotonic() - t0 < 2.0
    assert "dev" not in daemon.status()["profiles"]
    assert daemon.ecs_creds("default")["AccessKeyId"] == default_key
    assert _sts_calls_for(moto, h.OIDC_ROLE_ARN) == 0
    assert daemon.get("/readyz").status == 200
    daemon.stop()


def test_an_invalid_edit_keeps_serving_and_names_the_key(oidc_daemon):
    daemon = oidc_daemon("sts")
    daemon.start()
    key = daemon.ecs_creds("default")["AccessKeyId"]
    good = daemon.config_path.read_text()
    daemon.config_path.write_text(good + "\n[profiles.default.aws]\nrole_arnn = \"x\"\n")
    _wait(lambda: daemon.status().get("config_error"), 3, "config_error in status")
    err = daemon.status()["config_error"]
    assert str(daemon.config_path) in err, err
    assert daemon.ecs_creds("default")["AccessKeyId"] == key
    log_lines = [l for l in daemon.current_logs().splitlines() if "config reload refused" in l]
    assert len(log_lines) == 1 and str(daemon.config_path) in log_lines[0], log_lines
    # A half-written file (a syntax error) is refused the same way.
    daemon.config_path.write_text(good[: len(good) // 2] + "\n[[[")
    _wait(lambda: daemon.status().get("config_error") not in (None, err), 3, "the syntax error reported")
    assert daemon.ecs_creds("default")["AccessKeyId"] == key
    proc = daemon.cli("status")
    assert "config" in (proc.stdout + proc.stderr).lower(), proc.stdout + proc.stderr
    # Fixing the file applies it and clears the error.
    daemon.config_path.write_text(good)
    _wait(lambda: daemon.status().get("config_error") is None, 3, "config_error cleared")
    assert daemon.ecs_creds("default")["AccessKeyId"] == key
    daemon.stop()


def test_sighup_reloads_what_the_file_watch_cannot_see(oidc_daemon, moto: h.Moto, tmp_path):
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]}))
    daemon = oidc_daemon("sts", aws={"session_policy_file": str(policy)})
    daemon.start()
    key = daemon.ecs_creds("default")["AccessKeyId"]
    moto.start_recording()
    policy.write_text(json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "*"}]}))
    time.sleep(1)  # nothing watches the policy file: no reload yet
    assert moto.count("AssumeRoleWithWebIdentity") == 0
    os.kill(daemon.proc.pid, signal.SIGHUP)
    calls = _wait(lambda: moto.calls("AssumeRoleWithWebIdentity"), 5, "a re-assume after SIGHUP")
    assert "s3:ListBucket" in calls[0].form().get("Policy", ""), calls[0].form()
    _wait(lambda: daemon.ecs_creds("default")["AccessKeyId"] != key, 5, "the new session's credentials")
    daemon.stop()


def test_two_profiles_on_one_refresh_token_file_refresh_the_idp_once_per_cycle(oidc_daemon):
    daemon = oidc_daemon("sts", id_ttl=20, aws={"duration": "60s"})
    _shared_login(daemon)
    daemon.config["profiles"]["dev"] = _sts_profile(daemon, DEV_ROLE, refresh_before="30m")
    daemon.config["profiles"]["dev"]["aws"]["duration"] = "60s"
    # The provider is shared with other tests (one per TTL pair): count from here.
    before = daemon.idp.stats()
    daemon.start()
    start = daemon.idp.stats()
    first = start["refresh_grants"] - before["refresh_grants"]
    assert first == 1, f"two profiles at start refreshed the IdP {first} times"

    def cycles() -> int:
        st = daemon.status()["profiles"]
        return min(st["default"]["refreshes"], st["dev"]["refreshes"])

    _wait(lambda: cycles() >= 4, 150, "three more refresh cycles of both profiles")
    st = daemon.status()["profiles"]
    stats = daemon.idp.stats()
    assert all(p["state"] == "ready" for p in st.values()), st
    refreshes = max(st["default"]["refreshes"], st["dev"]["refreshes"])
    grants = stats["refresh_grants"] - before["refresh_grants"]
    assert grants <= refreshes, f"{grants} IdP refreshes for {refreshes} cycles of two profiles: {stats}"
    assert stats["errors"] == start["errors"], f"IdP errors (reuse detection?): {stats}"
    assert daemon.ecs_creds("default")["AccessKeyId"] and daemon.ecs_creds("dev")["AccessKeyId"]
    daemon.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_per_profile_imds_ports_serve_their_own_role(oidc_daemon, moto: h.Moto):
    daemon = oidc_daemon("sts")
    _shared_login(daemon)
    ports = {"default": _free_port(), "dev": _free_port()}
    daemon.config["profiles"]["default"]["imds_listen"] = f"127.0.0.1:{ports['default']}"
    daemon.config["profiles"]["default"]["role_name"] = "default-role"
    daemon.config["profiles"]["dev"] = _sts_profile(daemon, DEV_ROLE, imds_listen=f"127.0.0.1:{ports['dev']}",
                                                    role_name="dev-role")
    daemon.start()
    info = json.loads(daemon.daemon_json_path.read_text())
    assert {k: int(v.rsplit(":", 1)[1]) for k, v in info["imds_listeners"].items()} == ports, info
    for name, port in ports.items():
        want = daemon.ecs_creds(name)["AccessKeyId"]
        # STS_ENDPOINT: the Rust probe checks the credentials with GetCallerIdentity at moto.
        env = h.clean_env(AWS_EC2_METADATA_SERVICE_ENDPOINT=f"http://127.0.0.1:{port}/", STS_ENDPOINT=moto.url)
        assert h.boto3_credentials(env)["access_key_id"] == want, name
        assert h.sdk_probe("imds", env)["access_key_id"] == want, name
        # The role list names that profile's role, and its port has no ECS route.
        tok = h.http_request("PUT", f"http://127.0.0.1:{port}/latest/api/token",
                             headers={h.IMDS_TTL_HEADER: "60"}).text
        roles = h.http_request("GET", f"http://127.0.0.1:{port}/latest/meta-data/iam/security-credentials/",
                               headers={h.IMDS_TOKEN_HEADER: tok}).text
        assert roles == f"{name}-role"
        r = h.http_request("GET", f"http://127.0.0.1:{port}/v1/credentials/{name}",
                           headers={"Authorization": daemon.ecs_token()})
        assert r.status == 404
    proc = daemon.cli("env", "--profile", "dev", "--imds")
    assert proc.returncode == 0 and f"127.0.0.1:{ports['dev']}" in proc.stdout, proc.stdout + proc.stderr
    daemon.stop()
