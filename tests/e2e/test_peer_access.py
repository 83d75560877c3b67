"""Loopback that knows who is calling (issue 11, first slice), as root on the
test machine with clients run as other users (`runuser -u nobody`):

- default `server.allowed_uids = ["self"]`: the daemon's own user is served,
  another user gets 403 naming its uid and the key to change, over IPv4 and
  [::1], on the ECS and the IMDS routes; the refusal holds no credential byte;
- `["any"]` serves both;
- a profile's own `allowed_uids` narrows further;
- a user created with `useradd` and listed by name is served, `nobody` is not.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

import harness as h

# Runs as another user with the system Python: ECS GET, IMDS PUT, then prints
# {"ecs": [status, body], "imds": [status, body]}.
CLIENT = r"""
import http.client, json, sys
host, port, profile, token = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
def call(method, path, headers):
    c = http.client.HTTPConnection(host, port, timeout=5)
    hdr = dict(headers, Host=(f"[{host}]" if ":" in host else host) + f":{port}")
    c.request(method, path, headers=hdr)
    r = c.getresponse()
    return [r.status, r.read().decode(errors="replace")]
out = {"ecs": call("GET", f"/v1/credentials/{profile}", {"Authorization": token}),
       "imds": call("PUT", "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": "60"})}
print(json.dumps(out))
"""


def _runuser() -> str:
    path = shutil.which("runuser") or shutil.which("runuser", path="/usr/sbin:/sbin")
    if os.geteuid() != 0 or not path:
        pytest.skip("needs root and runuser (CI runs as root)")
    return path


def _client_script() -> Path:
    d = Path(tempfile.mkdtemp(prefix="credbroker-peer-"))
    os.chmod(d, 0o755)
    f = d / "client.py"
    f.write_text(CLIENT)
    os.chmod(f, 0o644)
    return f


def _as(user: str | None, daemon: h.Daemon, host: str, profile: str = "default") -> dict:
    port = int(daemon.addr.rsplit(":", 1)[1])
    argv = ["/usr/bin/python3", str(_client_script()), host, str(port), profile, daemon.ecs_token()]
    if user:
        argv = [_runuser(), "-u", user, "--", *argv]
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _assert_refused(out: dict, uid: int, key: str, creds: dict) -> None:
    for route in ("ecs", "imds"):
        status, body = out[route]
        assert status == 403, (route, out)
        assert f"uid {uid}" in body and key in body, (route, body)
        for secret in (creds["AccessKeyId"], creds["SecretAccessKey"], creds["Token"]):
            assert secret not in body


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_only_the_daemons_user_is_served_by_default(oidc_daemon, host: str):
    _runuser()
    nobody = pwd.getpwnam("nobody").pw_uid
    daemon = oidc_daemon("sts")
    daemon.config["server"]["listen"] = f"[{host}]:0" if ":" in host else f"{host}:0"
    if ":" in host:
        daemon.ADDR_RE = r"\[::1\]:\d+"
    daemon.start()
    creds = daemon.ecs_creds("default")
    mine = _as(None, daemon, host)
    assert mine["ecs"][0] == 200 and json.loads(mine["ecs"][1])["AccessKeyId"] == creds["AccessKeyId"], mine
    assert mine["imds"][0] == 200, mine
    _assert_refused(_as("nobody", daemon, host), nobody, "server.allowed_uids", creds)
    log = daemon.current_logs()
    assert f"uid {nobody}" in log and "refused a local caller" in log
    daemon.stop()


def test_any_serves_every_user_and_a_profile_narrows(oidc_daemon):
    _runuser()
    nobody = pwd.getpwnam("nobody").pw_uid
    daemon = oidc_daemon("sts")
    daemon.config["server"]["allowed_uids"] = ["any"]
    login = daemon.config["profiles"]["default"]["login"]
    login["refresh_token_file"] = str(daemon.refresh_token_path())
    daemon.config["profiles"]["ops"] = {
        "region": h.REGION, "login": dict(login), "allowed_uids": ["self"],
        "aws": {"flow": "sts", "role_arn": f"arn:aws:iam::{h.ACCOUNT_ID}:role/OpsRole",
                "session_name": h.SESSION_NAME}}
    daemon.start()
    out = _as("nobody", daemon, "127.0.0.1")
    assert out["ecs"][0] == 200 and out["imds"][0] == 200, out
    ops = daemon.ecs_creds("ops")
    narrowed = _as("nobody", daemon, "127.0.0.1", profile="ops")
    assert narrowed["ecs"][0] == 403, narrowed
    assert f"uid {nobody}" in narrowed["ecs"][1] and "profiles.ops.allowed_uids" in narrowed["ecs"][1]
    assert ops["SecretAccessKey"] not in narrowed["ecs"][1]
    assert _as(None, daemon, "127.0.0.1", profile="ops")["ecs"][0] == 200
    daemon.stop()


def test_a_profile_cannot_allow_what_the_server_does_not(tmp_path: Path):
    cfg = {"server": {"listen": "127.0.0.1:0", "allowed_uids": ["self"]},
           "profiles": {"default": {"region": h.REGION, "allowed_uids": ["nobody"],
                                    "login": {"kind": "none"},
                                    "aws": {"flow": "cognito", "identity_pool_id": "us-east-1:x"}}}}
    path = tmp_path / "config.toml"
    path.write_text(h.toml_dumps(cfg))
    proc = h.run_credbroker(["check-config", "-c", str(path)])
    assert proc.returncode == h.EXIT_USAGE, proc.stderr
    assert "profiles.default.allowed_uids" in proc.stderr and "only narrow" in proc.stderr, proc.stderr
    cfg["server"]["allowed_uids"] = ["self", "no-such-user-here"]
    path.write_text(h.toml_dumps(cfg))
    proc = h.run_credbroker(["check-config", "-c", str(path)])
    assert proc.returncode == h.EXIT_USAGE and "no-such-user-here" in proc.stderr, proc.stderr


def test_a_user_named_in_allowed_uids_is_served_and_others_are_not(oidc_daemon):
    """A user created for this test with useradd, listed by name: served over
    ECS and IMDS; `nobody` (not listed) refused, naming its uid."""
    _runuser()
    useradd = shutil.which("useradd", path="/usr/sbin:/sbin:/usr/bin")
    userdel = shutil.which("userdel", path="/usr/sbin:/sbin:/usr/bin")
    if not useradd or not userdel:
        pytest.skip("needs useradd/userdel")
    name = f"cbtest{os.getpid() % 100000}"
    subprocess.run([useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                   check=True, capture_output=True, timeout=30)
    try:
        uid = pwd.getpwnam(name).pw_uid
        nobody = pwd.getpwnam("nobody").pw_uid
        daemon = oidc_daemon("sts")
        daemon.config["server"]["allowed_uids"] = ["self", name]
        daemon.start()
        creds = daemon.ecs_creds("default")
        served = _as(name, daemon, "127.0.0.1")
        assert served["ecs"][0] == 200, served
        assert json.loads(served["ecs"][1])["AccessKeyId"] == creds["AccessKeyId"]
        assert served["imds"][0] == 200, served
        _assert_refused(_as("nobody", daemon, "127.0.0.1"), nobody, "server.allowed_uids", creds)
        assert uid != nobody
        daemon.stop()
    finally:
        subprocess.run([userdel, name], capture_output=True, timeout=30)
