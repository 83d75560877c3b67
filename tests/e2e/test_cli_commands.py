"""The consumption commands (issue 8, section 4) against the built binary,
with moto and oidc-provider:

- ``credential-process`` feeds the AWS CLI and boto3 through ``~/.aws/config``
  in a scratch HOME; 50 parallel invocations cost no upstream exchange
  (counted at moto and at oidc-provider); daemon down (stopped or killed),
  an unknown profile and ``login_required`` each give their exit code, one
  stderr line that says what to do, and nothing on stdout.
- ``exec`` passes exit codes (0, 3, a signal → 128+n) through, forwards
  SIGTERM/SIGINT/SIGHUP, hands the child exactly the intended ``AWS_*``
  variables out of a polluted environment, and never runs the child when
  the daemon is down (69).
- ``doctor`` passes on a healthy setup (two profiles, one with its own IMDS
  port) and names the failing check for: daemon down, a refresh-token file
  readable by others (0644), an unreachable IdP, and broken endpoints
  (tests/e2e/broken_imds.py behind a daemon.json that names it).
- ``completions`` (bash, zsh, fish) and ``man`` are generated and well-formed.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

import harness as h
from broken_imds import BrokenImds

EXPECTED_ARN = f"arn:aws:sts::{h.ACCOUNT_ID}:assumed-role/OidcRole/{h.SESSION_NAME}"
EXIT_UNAVAILABLE = 69
EXIT_NOT_SERVING = 3


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cli(daemon: h.Daemon, *args: str, env: dict[str, str] | None = None,
            timeout: float = 30) -> subprocess.CompletedProcess:
    """``credbroker -c <config> ARGS`` (the global option first, so that
    ``exec -- CMD`` gets everything after ``--``)."""
    return subprocess.run([str(daemon.binary), "-c", str(daemon.config_path), *args],
                          env=env if env is not None else daemon.env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def assert_one_line_failure(proc: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    detail = f"exit {proc.returncode}\nstdout: {proc.stdout!r}\nstderr: {proc.stderr!r}"
    assert proc.returncode == code, detail
    assert proc.stdout == "", f"stdout must stay empty on failure\n{detail}"
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("credbroker: "), f"not one stderr line\n{detail}"
    for n in needles:
        assert n in lines[0], f"{n!r} not in the message\n{detail}"


def aws_profile_home(daemon: h.Daemon, profile: str = "default") -> dict[str, str]:
    """The daemon's environment with a scratch HOME whose ~/.aws/config has
    ``[profile x] credential_process = <bin> credential-process -c <cfg> --profile <profile>``."""
    home = h.scratch_dir("aws-home-")
    (home / ".aws").mkdir()
    (home / ".aws" / "config").write_text(
        "[profile x]\n"
        f"credential_process = {daemon.binary} credential-process -c {daemon.config_path} --profile {profile}\n"
        f"region = {h.REGION}\n")
    env = daemon.env
    env.update(HOME=str(home), AWS_CONFIG_FILE=str(home / ".aws" / "config"),
               AWS_SHARED_CREDENTIALS_FILE=str(home / ".aws" / "credentials"), AWS_PROFILE="x")
    env.pop("AWS_ENDPOINT_URL", None)
    return env


@pytest.fixture
def daemon(oidc_daemon) -> h.Daemon:
    """A started daemon: OIDC login at oidc-provider, STS into OidcRole at moto."""
    d = oidc_daemon("sts")
    d.start()
    return d


# ---------------------------------------------------------------------------
# credential-process
# ---------------------------------------------------------------------------

_BOTO3_VIA_PROFILE = r"""
import json, sys, boto3
s = boto3.session.Session(profile_name="x")
c = s.get_credentials()
ident = s.client("sts", endpoint_url=sys.argv[1]).get_caller_identity()
print(json.dumps({"method": c.method, "access_key_id": c.get_frozen_credentials().access_key, "arn": ident["Arn"]}))
"""


def test_credential_process_feeds_the_aws_cli_and_boto3(daemon: h.Daemon, moto: h.Moto):
    served = daemon.ecs_creds("default")
    env = aws_profile_home(daemon)

    ident = h.caller_identity_via_cli(moto.url, env)
    assert ident["Arn"] == EXPECTED_ARN, ident

    got = h.last_json_line(h.run_checked([str(h.VENV_BIN / "python"), "-c", _BOTO3_VIA_PROFILE, moto.url],
                                         env).stdout)
    assert got["method"] == "custom-process", got
    assert got["access_key_id"] == served["AccessKeyId"]
    assert got["arn"] == EXPECTED_ARN

    # The document itself: Version 1 and the daemon's credentials, nothing else.
    proc = run_cli(daemon, "credential-process", "--profile", "default")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["Version"] == 1
    assert {k: doc[k] for k in ("AccessKeyId", "SecretAccessKey", "Expiration")} == \
        {k: served[k] for k in ("AccessKeyId", "SecretAccessKey", "Expiration")}
    assert doc["SessionToken"] == served["Token"]
    assert set(doc) <= {"Version", "AccessKeyId", "SecretAccessKey", "SessionToken", "Expiration", "AccountId"}
    h.parse_expiration(doc["Expiration"])
    daemon.stop()


def test_fifty_parallel_credential_processes_cost_no_upstream_exchange(daemon: h.Daemon, moto: h.Moto):
    want = daemon.ecs_creds("default")["AccessKeyId"]
    idp_before = daemon.idp.stats()
    moto.start_recording()
    argv = [str(daemon.binary), "credential-process", "-c", str(daemon.config_path)]
    procs = [subprocess.Popen(argv, env=daemon.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              stdin=subprocess.DEVNULL) for _ in range(50)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * 50, [err for _, err in outs if err][:3]
    assert {json.loads(out)["AccessKeyId"] for out, _ in outs} == {want}
    upstream = moto.download_recording()
    assert upstream == [], f"{len(upstream)} AWS calls: {[r.action for r in upstream]}"
    idp_after = daemon.idp.stats()
    assert idp_after["token_requests"] == idp_before["token_requests"], (idp_before, idp_after)
    assert idp_after["refresh_grants"] == idp_before["refresh_grants"]
    daemon.stop()


@pytest.mark.parametrize("how", ["stopped", "killed"])
def test_credential_process_when_the_daemon_is_down(daemon: h.Daemon, how: str):
    if how == "stopped":
        daemon.stop()
    else:
        daemon.kill()
        assert daemon.daemon_json_path.exists(), "a killed daemon leaves daemon.json behind"
    proc = run_cli(daemon, "credential-process")
    assert_one_line_failure(proc, EXIT_UNAVAILABLE, "credbroker serve")
    if how == "killed":
        assert "killed" in proc.stderr, proc.stderr


def test_credential_process_for_an_unknown_profile(daemon: h.Daemon):
    proc = run_cli(daemon, "credential-process", "--profile", "nope")
    assert_one_line_failure(proc, h.EXIT_USAGE, '"nope"', "default")
    daemon.stop()


def test_credential_process_when_a_login_is_required(oidc_daemon):
    d = oidc_daemon("sts")
    d.write_refresh_token("garbage-" + "x" * 40)  # the IdP answers invalid_grant
    d.start(wait_ready=False)
    d.wait_state("login_required", timeout=30)
    proc = run_cli(d, "credential-process")
    assert_one_line_failure(proc, EXIT_NOT_SERVING, "needs a new login", str(d.refresh_token_path()))
    d.stop()


# ---------------------------------------------------------------------------
# exec
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("script,code", [("exit 0", 0), ("exit 3", 3), ("kill -TERM $$", 128 + 15)])
def test_exec_passes_the_exit_code_through(daemon: h.Daemon, script: str, code: int):
    proc = run_cli(daemon, "exec", "--", "sh", "-c", script)
    assert proc.returncode == code, f"exit {proc.returncode}\n{proc.stderr}"
    assert proc.stderr == "", proc.stderr
    daemon.stop()


POLLUTION = {
    "AWS_ACCESS_KEY_ID": "AKIAPOLLUTED00000000",
    "AWS_SECRET_ACCESS_KEY": "polluted-secret",
    "AWS_SESSION_TOKEN": "polluted-token",
    "AWS_SECURITY_TOKEN": "polluted-token",
    "AWS_CREDENTIAL_EXPIRATION": "2099-01-01T00:00:00Z",
    "AWS_PROFILE": "somebody-else",
    "AWS_DEFAULT_PROFILE": "somebody-else",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/credentials/polluted",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://169.254.170.2/polluted",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN": "polluted-ecs-token",
    "AWS_WEB_IDENTITY_TOKEN_FILE": "/nonexistent/token",
    "AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/Polluted",
    "AWS_ROLE_SESSION_NAME": "polluted",
    "AWS_EC2_METADATA_SERVICE_ENDPOINT": "http://169.254.169.254/",
    "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE": "IPv6",
    "AWS_CREDENTIAL_FILE": "/nonexistent/boto2",
    "BOTO_CONFIG": "/nonexistent/boto",
}


def _aws_vars(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line)
    return {k: v for k, v in pairs if k.startswith(("AWS_", "BOTO"))}


@pytest.mark.parametrize("inline", [False, True], ids=["token-file", "inline-token"])
def test_exec_child_sees_exactly_the_intended_variables(daemon: h.Daemon, moto: h.Moto, inline: bool):
    env = {**daemon.env, **POLLUTION}
    for k in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        env.pop(k)
    flags = ["--inline-token"] if inline else []
    proc = run_cli(daemon, "exec", *flags, "--", "env", env=env)
    assert proc.returncode == 0, proc.stderr
    want = {
        "AWS_CONTAINER_CREDENTIALS_FULL_URI": f"{daemon.base_url}/v1/credentials/default",
        "AWS_REGION": h.REGION,
        "AWS_DEFAULT_REGION": h.REGION,
        # Kept: not credentials.
        "AWS_CONFIG_FILE": env["AWS_CONFIG_FILE"],
        "AWS_SHARED_CREDENTIALS_FILE": env["AWS_SHARED_CREDENTIALS_FILE"],
        "AWS_ENDPOINT_URL": moto.url,
    }
    if inline:
        want["AWS_CONTAINER_AUTHORIZATION_TOKEN"] = daemon.ecs_token()
    else:
        want["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"] = str(daemon.ecs_token_path)
    assert _aws_vars(proc.stdout) == want
    # The polluted static keys and profile are gone: the AWS CLI gets the daemon's role.
    proc = run_cli(daemon, "exec", *flags, "--", str(h.VENV_BIN / "aws"), "sts", "get-caller-identity",
                   "--output", "json", env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["Arn"] == EXPECTED_ARN
    daemon.stop()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name)
def test_exec_forwards_signals_to_the_child(daemon: h.Daemon, tmp_path: Path, sig: signal.Signals):
    ready = tmp_path / "ready"
    name = sig.name[3:]
    script = f'trap "exit 42" {name}; touch {ready}; while :; do sleep 0.05; done'
    # A new session: no controlling terminal, so SIGINT is forwarded too
    # (from a terminal's foreground group Ctrl-C reaches the child directly).
    proc = subprocess.Popen([str(daemon.binary), "-c", str(daemon.config_path), "exec", "--", "sh", "-c", script],
                            env=daemon.env, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        h.wait_for(ready.exists, 15, "the child's trap")
        proc.send_signal(sig)
        assert proc.wait(timeout=10) == 42, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    daemon.stop()


def test_exec_never_runs_the_child_when_the_daemon_is_down(daemon: h.Daemon, tmp_path: Path):
    daemon.stop()
    marker = tmp_path / "ran"
    proc = run_cli(daemon, "exec", "--", "sh", "-c", f"touch {marker}")
    assert_one_line_failure(proc, EXIT_UNAVAILABLE, "credbroker serve")
    assert not marker.exists(), "the child ran although the daemon is down"


# ---------------------------------------------------------------------------
# doctor
# ---------------------------------------------------------------------------

def doctor_json(daemon: h.Daemon, *args: str) -> tuple[int, list[dict[str, Any]]]:
    proc = run_cli(daemon, "doctor", "--json", *args)
    assert proc.returncode in (0, 1), f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.returncode, json.loads(proc.stdout)


def failing(checks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {c["id"]: c for c in checks if c["status"] == "fail"}


def test_doctor_passes_on_a_healthy_setup(oidc_daemon, moto: h.Moto):
    d = oidc_daemon("sts")
    login = d.config["profiles"]["default"]["login"]
    login["refresh_token_file"] = str(d.refresh_token_path())
    port = _free_port()
    d.config["profiles"]["dev"] = {"region": h.REGION, "login": dict(login), "role_name": "dev-role",
                                   "imds_listen": f"127.0.0.1:{port}",
                                   "aws": {"flow": "sts", "role_arn": h.OIDC_ROLE_ARN,
                                           "session_name": h.SESSION_NAME}}
    d.start()
    proc = run_cli(d, "doctor")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "checks passed" in proc.stdout.splitlines()[-1], proc.stdout
    assert "FAIL" not in proc.stdout

    code, checks = doctor_json(d)
    assert code == 0 and not failing(checks), failing(checks)
    ids = {c["id"] for c in checks if c["status"] == "pass"}
    for want in ("config", "secret:profiles.default.login.refresh_token_file", "secret:server.ecs_token_file",
                 f"idp.discovery:{d.idp.issuer}", "clock", "daemon", "profile:default", "profile:dev",
                 f"imds.token@{d.addr}", f"imds.v2-only@{d.addr}", f"imds.role-list@{d.addr}",
                 f"imds.credentials@{d.addr}", f"imds.role-list@127.0.0.1:{port}",
                 f"ecs.credentials:default@{d.addr}", f"ecs.credentials:dev@{d.addr}", f"ecs.unauthorized@{d.addr}"):
        assert want in ids, f"{want} did not pass: {[c for c in checks if c['id'] == want] or sorted(ids)}"
    assert any(i.startswith("aws:sts@") for i in ids), sorted(ids)

    # --profile narrows it down.
    code, checks = doctor_json(d, "--profile", "dev")
    assert code == 0 and "profile:default" not in {c["id"] for c in checks}

    # Nothing printed is a secret.
    creds = d.ecs_creds("default")
    scan = h.SecretScan()
    scan.add("ECS token", d.ecs_token())
    scan.add("refresh token", d.read_refresh_token())
    scan.add("secret access key", creds["SecretAccessKey"])
    scan.add("session token", creds["Token"])
    assert not scan.leaks({"doctor": proc.stdout + proc.stderr, "doctor --json": json.dumps(checks)})
    d.stop()


def test_doctor_names_a_daemon_that_is_down(daemon: h.Daemon):
    daemon.stop()
    proc = run_cli(daemon, "doctor")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    line = next(l for l in proc.stdout.splitlines() if l.startswith("FAIL") and " daemon " in l)
    assert "credbroker serve" in proc.stdout.split(line, 1)[1].splitlines()[1], proc.stdout
    code, checks = doctor_json(daemon)
    assert code == 1 and set(failing(checks)) == {"daemon"}, failing(checks)


def test_doctor_names_a_refresh_token_file_others_can_read(daemon: h.Daemon):
    rt = daemon.refresh_token_path()
    os.chmod(rt, 0o644)
    code, checks = doctor_json(daemon)
    bad = failing(checks)
    assert code == 1 and set(bad) == {"secret:profiles.default.login.refresh_token_file"}, bad
    check = bad["secret:profiles.default.login.refresh_token_file"]
    assert "644" in check["detail"] and check["fix"] == f"chmod 600 {rt}", check
    daemon.stop()


def test_doctor_names_an_unreachable_idp(oidc_daemon):
    d = oidc_daemon("sts")
    issuer = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    d.config["profiles"]["default"]["login"]["issuer"] = issuer
    d.write_config()
    code, checks = doctor_json(d)
    bad = failing(checks)
    assert code == 1 and f"idp.discovery:{issuer}" in bad, bad
    assert "cannot connect" in bad[f"idp.discovery:{issuer}"]["detail"], bad
    assert "login.issuer" in bad[f"idp.discovery:{issuer}"]["fix"]


BROKEN = {
    "role-newline": {"imds.role-list"},
    "expiration-offset": {"imds.credentials", "ecs.credentials:default"},
    "no-ttl-header": {"imds.token"},
    "no-code": {"imds.credentials"},
    "baseline": set(),
}


@pytest.mark.parametrize("variant", sorted(BROKEN))
def test_doctor_self_check_names_a_broken_endpoint(daemon_factory, variant: str):
    d = daemon_factory(h.make_config(login={"kind": "none"},
                                     aws={"flow": "cognito", "identity_pool_id": f"{h.REGION}:broken"}))
    d.write_config()
    token = "ecs-token-for-the-broken-server-0123456789"
    h.write_secret(d.ecs_token_path, token)
    exp = (h.utcnow() + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    creds = {"AccessKeyId": "ASIABROKEN0000001234", "SecretAccessKey": "broken-secret", "Token": "broken-token",
             "Expiration": exp}
    with BrokenImds(variant, creds, ecs_token=token) as srv:
        addr = srv.url.removeprefix("http://")
        d.daemon_json_path.parent.mkdir(mode=0o700, exist_ok=True)
        d.daemon_json_path.write_text(json.dumps({"pid": 1, "listen": addr, "version": "broken"}))
        code, checks = doctor_json(d)
        seen = srv.summary()
    bad = failing(checks)
    want = {f"{prefix}@{addr}" for prefix in BROKEN[variant]}
    # broken_imds has no /healthz and no /v1/status: the daemon check fails too.
    assert code == 1 and set(bad) - {"daemon"} == want, f"{sorted(bad)} != {sorted(want)}\n{seen}"
    assert "not as credbroker" in bad["daemon"]["detail"], bad["daemon"]
    for w in want:
        assert bad[w]["fix"], bad[w]
    if variant == "role-newline":
        assert "newline" in bad[f"imds.role-list@{addr}"]["detail"]
    if variant == "no-ttl-header":
        assert "x-aws-ec2-metadata-token-ttl-seconds" in bad[f"imds.token@{addr}"]["detail"]
    if variant == "expiration-offset":
        assert "does not end in Z" in bad[f"ecs.credentials:default@{addr}"]["detail"]
    if variant == "no-code":
        assert "Code" in bad[f"imds.credentials@{addr}"]["detail"]


# ---------------------------------------------------------------------------
# completions, man
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completions_are_generated(shell: str, tmp_path: Path):
    proc = h.run_credbroker(["completions", shell])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() and "credential-process" in proc.stdout
    if shell == "bash":
        script = tmp_path / "credbroker.bash"
        script.write_text(proc.stdout)
        check = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr


def test_man_page_is_roff():
    for args in (["man"], ["man", "exec"]):
        proc = h.run_credbroker(args)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.splitlines()[0].startswith(".TH "), proc.stdout[:200]
        assert ".SH NAME" in proc.stdout and ".SH SYNOPSIS" in proc.stdout
    assert "credential\\-process" in h.run_credbroker(["man"]).stdout
    assert h.run_credbroker(["man", "nope"]).returncode == h.EXIT_USAGE
