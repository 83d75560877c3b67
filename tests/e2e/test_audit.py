"""The audit trail (issue 11): which local process fetched which credentials.

Real clients against the real daemon: boto3 over ECS and IMDS, the AWS CLI
(`aws sts get-caller-identity` against moto), `credbroker credential-process`,
and, as root, a client run as `nobody` that is refused. Each client prints its
own pid; the audit log must name that pid and the executable the kernel
reports for it (`/proc/<pid>/exe`), the route and the outcome, one `fetch`
event per connection and outcome plus a `close` event with the count. The
log is 0600 and a secret scan of it finds nothing. `audit.log = "journal"`
writes the same events as log lines; bad `[audit]` keys exit 64 naming them.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

import harness as h

# A boto3 client that fetches through its default chain, then uses the
# credentials for a real call (as an application does), then prints its pid.
BOTO_CLIENT = r"""
import json, os, sys, boto3
s = boto3.session.Session()
c = s.get_credentials().get_frozen_credentials()
who = s.client("sts", endpoint_url=sys.argv[1]).get_caller_identity()
print(json.dumps({"pid": os.getpid(), "key": c.access_key, "arn": who["Arn"]}))
"""

# Run as `nobody` with the system Python: one ECS GET, prints pid and status.
NOBODY_CLIENT = r"""
import http.client, json, os, sys
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=5)
c.request("GET", "/v1/credentials/default", headers={"Authorization": sys.argv[2],
                                                     "Host": f"127.0.0.1:{sys.argv[1]}"})
print(json.dumps({"pid": os.getpid(), "status": c.getresponse().status}))
"""


def _events(path: Path, want: int, timeout: float = 10) -> list[dict[str, Any]]:
    """The audit log's events once it holds at least `want` of them."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [json.loads(l) for l in path.read_text().splitlines()] if path.exists() else []
        if len(lines) >= want or time.monotonic() > deadline:
            return lines
        time.sleep(0.1)


def _wait_events(path: Path, match, timeout: float = 10) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        found = [e for e in _events(path, 0) if match(e)]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def _exe(pid_or_path: str | int) -> str:
    return os.path.realpath(pid_or_path if isinstance(pid_or_path, str) else f"/proc/{pid_or_path}/exe")


@pytest.fixture
def audited(oidc_daemon, tmp_path: Path):
    daemon = oidc_daemon("sts")
    log = tmp_path / "audit" / "audit.jsonl"
    daemon.config["audit"] = {"log": str(log)}
    daemon.start()
    daemon.audit_log = log
    yield daemon
    daemon.stop()


def test_boto3_and_the_aws_cli_are_named_by_pid_and_executable(audited, moto):
    daemon, log = audited, audited.audit_log
    creds = daemon.ecs_creds("default")
    python = _exe(str(h.VENV_BIN / "python"))

    # boto3 over ECS, then over IMDS.
    seen = {}
    for mode in ("ecs", "imds"):
        proc = h.run_checked([str(h.VENV_BIN / "python"), "-c", BOTO_CLIENT, moto.url], daemon.sdk_env(mode))
        out = h.last_json_line(proc.stdout)
        assert out["key"] == creds["AccessKeyId"] and "assumed-role" in out["arn"], out
        seen[mode] = out["pid"]
    # The AWS CLI: its pid is the one Popen started (the venv script execs Python).
    cli = subprocess.Popen([str(h.VENV_BIN / "aws"), "sts", "get-caller-identity", "--endpoint-url", moto.url,
                            "--output", "json"], env=daemon.sdk_env("ecs"), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    out, err = cli.communicate(timeout=60)
    assert cli.returncode == 0, err
    assert "assumed-role" in json.loads(out)["Arn"]
    seen["cli"] = cli.pid

    for what, pid in seen.items():
        route = "imds" if what == "imds" else "ecs"
        fetch = _wait_events(log, lambda e: e["pid"] == pid and e["event"] == "fetch")
        assert fetch, f"no fetch event for {what} (pid {pid}):\n{log.read_text() if log.exists() else '(no log)'}"
        e = fetch[0]
        assert (e["route"], e["outcome"], e["profile"]) == (route, "served", "default"), e
        assert e["uid"] == os.geteuid(), e
        assert e["exe"] == python, (e, python)
        # The client's connections closed with it: counted at close.
        closes = _wait_events(log, lambda c: c["pid"] == pid and c["event"] == "close")
        assert closes and sum(c["served"] for c in closes) >= 1, (what, closes)

    # The CLI helper route.
    proc = daemon.cli("credential-process", "--profile", "default")
    assert proc.returncode == 0, proc.stderr
    cp = _wait_events(log, lambda e: e["route"] == "credential-process" and e["event"] == "fetch")
    assert cp and cp[0]["exe"] == _exe(str(daemon.binary)), cp

    # A wrong ECS token: refused, and why.
    assert daemon.ecs_creds_response("default", token="not-the-token").status == 401
    refused = _wait_events(log, lambda e: e.get("outcome") == "refused")
    assert refused and refused[0]["reason"] == "missing or invalid token", refused
    assert refused[0]["pid"] == os.getpid(), refused  # this test process made that request

    # `credbroker status` lists the last callers, with pids.
    st = daemon.profile_status("default")
    pids = {c["pid"] for c in st["callers"]}
    assert seen["cli"] in pids or seen["ecs"] in pids, st["callers"]
    text = daemon.cli("status").stdout
    assert "last callers" in text and f"pid {os.getpid()}" in text, text

    mode = log.stat().st_mode & 0o777
    assert mode == 0o600, oct(mode)
    scan = h.SecretScan()
    for k in ("AccessKeyId", "SecretAccessKey", "Token"):
        scan.add(k, creds[k])
    scan.add("ECS token", daemon.ecs_token())
    scan.add("refresh token", daemon.read_refresh_token())
    assert not scan.leaks({"audit log": log.read_text()})
    print(f"--- audit log ---\n{log.read_text()}")


def test_one_keep_alive_connection_is_one_fetch_and_one_count(audited):
    """An SDK keeps its connection: 20 GETs on it are one `fetch` event and
    a `close` event counting 20, not 20 lines."""
    import http.client

    daemon, log = audited, audited.audit_log
    host, port = daemon.addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    for _ in range(20):
        conn.request("GET", "/v1/credentials/default", headers={"Authorization": daemon.ecs_token()})
        r = conn.getresponse()
        r.read()
        assert r.status == 200
    local_port = conn.sock.getsockname()[1]
    conn.close()
    mine = _wait_events(log, lambda e: e["peer"] == f"127.0.0.1:{local_port}" and e["event"] == "close")
    assert mine and mine[0]["served"] == 20 and mine[0]["refused"] == 0, mine
    fetches = [e for e in _events(log, 0) if e["peer"] == f"127.0.0.1:{local_port}" and e["event"] == "fetch"]
    assert len(fetches) == 1, fetches


def test_a_refused_user_is_recorded_with_its_uid_and_pid(audited):
    runuser = shutil.which("runuser") or shutil.which("runuser", path="/usr/sbin:/sbin")
    if os.geteuid() != 0 or not runuser:
        pytest.skip("needs root and runuser (CI runs as root)")
    daemon, log = audited, audited.audit_log
    nobody = pwd.getpwnam("nobody").pw_uid
    d = Path(tempfile.mkdtemp(prefix="credbroker-audit-"))
    os.chmod(d, 0o755)
    script = d / "client.py"
    script.write_text(NOBODY_CLIENT)
    os.chmod(script, 0o644)
    port = daemon.addr.rsplit(":", 1)[1]
    proc = subprocess.run([runuser, "-u", "nobody", "--", "/usr/bin/python3", str(script), port,
                           daemon.ecs_token()], env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    out = h.last_json_line(proc.stdout)
    assert out["status"] == 403
    found = _wait_events(log, lambda e: e["uid"] == nobody and e["event"] == "fetch")
    assert found, log.read_text()
    e = found[0]
    assert e["outcome"] == "refused" and e["reason"] == f"uid {nobody} not allowed by server.allowed_uids", e
    # The daemon runs as root here, so it may read nobody's /proc entries.
    assert e["pid"] == out["pid"] and e["exe"] == _exe("/usr/bin/python3"), (e, out)
    print(f"--- refusal ---\n{json.dumps(e)}")


def test_journal_mode_logs_the_events(oidc_daemon):
    daemon = oidc_daemon("sts")
    daemon.config["audit"] = {"log": "journal"}
    daemon.start()
    daemon.ecs_creds("default")
    wanted = f"pid={os.getpid()}"
    h.wait_for(lambda: "credbroker::audit" in daemon.current_logs() and wanted in daemon.current_logs(),
               10, "an audit event in the daemon's log")
    line = next(l for l in daemon.current_logs().splitlines() if "credbroker::audit" in l and wanted in l)
    assert "event=\"fetch\"" in line or "event=fetch" in line, line
    daemon.stop()


@pytest.mark.parametrize("audit,key", [
    ({"log": "relative/audit.jsonl"}, "audit.log"),
    ({"log": "/tmp/x.jsonl", "max_size": "12 parsecs"}, "audit.max_size"),
    ({"log": "/tmp/x.jsonl", "max_size": 100}, "audit.max_size"),
    ({"log": "journal", "max_size": "1MiB"}, "audit.max_size"),
    ({"file": "/tmp/x"}, "file"),
])
def test_bad_audit_settings_exit_64_naming_the_key(tmp_path: Path, audit: dict, key: str):
    cfg = h.make_config(login={"kind": "none"}, aws={"flow": "cognito", "identity_pool_id": "us-east-1:x"})
    cfg["audit"] = audit
    path = tmp_path / "config.toml"
    path.write_text(h.toml_dumps(cfg))
    proc = h.run_credbroker(["check-config", "-c", str(path)])
    assert proc.returncode == h.EXIT_USAGE, (proc.returncode, proc.stderr)
    assert key in proc.stderr and str(path) in proc.stderr, proc.stderr


def test_an_unwritable_audit_log_is_a_startup_error(oidc_daemon, tmp_path: Path):
    daemon = oidc_daemon("sts")
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    daemon.config["audit"] = {"log": str(blocker / "audit.jsonl")}
    daemon.write_config()
    proc = subprocess.run([str(daemon.binary), "serve", "-c", str(daemon.config_path)], env=daemon.env,
                          capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert proc.returncode == h.EXIT_USAGE, (proc.returncode, proc.stderr)
    assert "audit.log" in proc.stderr and str(blocker) in proc.stderr, proc.stderr
