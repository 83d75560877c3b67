"""Regression tests for the review defects of issue 7, against the built binary.

- Every spelling of RUST_LOG that means "trace" for the AWS SDK / HTTP crates
  (``5``, a bare crate name, ``reqwest=``, explicit per-crate directives) keeps
  those crates at debug: no TRACE line from them, and no secret in the log.
- A runtime directory created first by another user (the ``/tmp/credbroker-UID``
  fallback) is refused by the daemon and by ``credbroker status``, which then
  sends the ECS token nowhere (run as root, the daemon as ``nobody`` via
  ``runuser``).
- ``server.strict_permissions`` refuses a group-readable ECS token file (exit
  64, the file named); without it, a warning.
- Two profiles on one refresh-token file share one login; with different
  login settings they are refused with both names (exit 64).

``credbroker status`` exiting 3 for a profile that is not serving is checked in
test_revoked.py, which drives a profile into ``login_required``.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import pytest

import harness as h

CAPPED = ("aws_smithy_runtime", "aws_smithy_http_client", "aws_smithy_runtime_api", "aws_runtime",
          "aws_sdk_sts", "aws_sdk_cognitoidentity", "aws_sdk_cognitoidentityprovider", "aws_config",
          "hyper_util", "reqwest")


def _capped_trace_lines(log: str) -> list[str]:
    """Log lines at TRACE whose target is one of the capped crates."""
    out = []
    for line in h.ANSI_RE.sub("", log).splitlines():
        if " TRACE " not in f" {line} ":
            continue
        if any(re.search(rf"\b{c}(::|:)", line) for c in CAPPED):
            out.append(line)
    return out


# A spec that names only other crates turns our own lines off (EnvFilter's
# grammar), and the harness waits for the "listening" line: those spellings
# get ",credbroker=info", which does not change what they mean for the SDK.
@pytest.mark.parametrize("spelling", ["5", "TRACE", "aws_smithy_runtime,credbroker=info",
                                      "reqwest=,aws_smithy_runtime=,credbroker=info",
                                      "aws_smithy_runtime=trace,aws_smithy_http_client=trace,hyper_util=trace,"
                                      "credbroker=info"])
def test_no_rust_log_spelling_lets_sdk_trace_output_through(oidc_daemon, moto: h.Moto, spelling: str):
    daemon = oidc_daemon("cognito", rust_log=spelling)
    moto.start_recording()
    daemon.start()
    creds = daemon.ecs_creds("default")
    scan = h.SecretScan()
    scan.add("secret access key", creds["SecretAccessKey"])
    scan.add("session token", creds["Token"])
    scan.add_daemon_secrets(daemon, moto)
    daemon.stop()
    log = daemon.logs()
    # The spelling did take effect: the SDK crates log at debug (their cap).
    assert re.search(r"\bDEBUG\b.*\baws_smithy_runtime", h.ANSI_RE.sub("", log)), \
        f"RUST_LOG={spelling!r} had no effect on aws_smithy_runtime:\n{h.tail(log, 30)}"
    trace = _capped_trace_lines(log)
    assert not trace, f"RUST_LOG={spelling!r}: TRACE lines from capped crates:\n" + "\n".join(trace[:10])
    leaks = scan.leaks({f"daemon log (RUST_LOG={spelling})": log})
    assert not leaks, "secrets leaked:\n" + "\n".join(leaks)


# --- a runtime directory another user created first ---------------------------

def _runuser() -> str:
    path = shutil.which("runuser") or shutil.which("runuser", path="/usr/sbin:/sbin")
    if os.geteuid() != 0 or not path:
        pytest.skip("needs root and runuser (CI runs as root)")
    return path


class _Recorder:
    """A loopback listener that records whatever is sent to it (the 'attacker')."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.received = b""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(1)
                try:
                    self.received += conn.recv(65536)
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


def test_runtime_dir_precreated_by_another_user_is_refused(moto: h.Moto, tmp_path: Path):
    runuser = _runuser()
    nobody = pwd.getpwnam("nobody")
    attacker_uid = 4242
    victim_dir = Path(f"/tmp/credbroker-{nobody.pw_uid}")
    if victim_dir.exists():
        pytest.skip(f"{victim_dir} already exists on this machine")
    # A config the victim (nobody) can read; no runtime_dir, so the default applies.
    home = Path(h.scratch_dir("victim-"))
    os.chmod(h._SCRATCH.name, 0o755)
    os.chmod(home, 0o755)
    cfg = home / "config.toml"
    state = home / "state"
    state.mkdir(mode=0o700)
    os.chown(state, nobody.pw_uid, nobody.pw_gid)
    cfg.write_text(h.toml_dumps(h.make_config(
        login={"kind": "none"}, aws={"flow": "cognito", "identity_pool_id": "us-east-1:guest"},
        state_dir=str(state), endpoint_url=moto.url)))
    os.chmod(cfg, 0o644)
    # No XDG_RUNTIME_DIR and no HOME (runuser keeps the environment as is
    # with --preserve-environment): the /tmp/credbroker-UID fallback.
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "RUST_LOG": "info", "NO_COLOR": "1"}

    def as_nobody(*args: str, timeout: float = 15) -> subprocess.CompletedProcess:
        return subprocess.run([runuser, "--preserve-environment", "-u", "nobody", "--", str(h.credbroker_bin()), *args, "-c", str(cfg)],
                              env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    recorder = _Recorder()
    try:
        # The attacker creates the directory first, with a daemon.json pointing
        # at its own listener, and the victim's ECS token ends up in it.
        victim_dir.mkdir(mode=0o755)
        (victim_dir / "daemon.json").write_text(
            f'{{"pid": 1, "listen": "127.0.0.1:{recorder.port}", "version": "x"}}')
        token = victim_dir / "ecs-token"
        token.write_text("victim-ecs-token-0123456789abcdefghijklmnop")
        os.chmod(token, 0o600)
        os.chown(token, nobody.pw_uid, nobody.pw_gid)
        os.chown(victim_dir / "daemon.json", attacker_uid, attacker_uid)
        os.chown(victim_dir, attacker_uid, attacker_uid)

        serve = as_nobody("serve")
        assert serve.returncode == h.EXIT_USAGE, f"exit {serve.returncode}\n{serve.stderr}"
        assert str(victim_dir) in serve.stderr and f"owned by uid {attacker_uid}" in serve.stderr, serve.stderr
        assert "panicked" not in serve.stderr

        status = as_nobody("status")
        assert status.returncode == h.EXIT_USAGE, f"exit {status.returncode}\n{status.stdout}{status.stderr}"
        assert str(victim_dir) in status.stderr, status.stderr
        assert recorder.received == b"", f"status sent to the attacker's address: {recorder.received!r}"

        # Control: once the directory is gone, the daemon creates its own 0700 one.
        shutil.rmtree(victim_dir)
        proc = subprocess.Popen([runuser, "--preserve-environment", "-u", "nobody", "--", str(h.credbroker_bin()), "serve", "-c", str(cfg)],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            h.wait_for(lambda: (victim_dir / "daemon.json").exists(), 15, "the victim's daemon.json")
            st = victim_dir.stat()
            assert st.st_uid == nobody.pw_uid and (st.st_mode & 0o777) == 0o700, oct(st.st_mode)
        finally:
            proc.terminate()
            proc.wait(timeout=15)
    finally:
        recorder.close()
        shutil.rmtree(victim_dir, ignore_errors=True)


def test_strict_permissions_refuses_a_readable_ecs_token_file(oidc_daemon):
    daemon = oidc_daemon("sts")
    daemon.config["server"]["strict_permissions"] = True
    h.write_secret(daemon.ecs_token_path, "ecs-token-0123456789-abcdefghijklmnopqrstuvw")
    os.chmod(daemon.ecs_token_path, 0o640)
    daemon.write_config()
    proc = h.run_credbroker(["serve", "-c", str(daemon.config_path)], env=daemon.env, timeout=20)
    assert proc.returncode == h.EXIT_USAGE, f"exit {proc.returncode}\n{proc.stderr}"
    assert str(daemon.ecs_token_path) in proc.stderr and "strict_permissions" in proc.stderr, proc.stderr
    assert "ecs-token-0123456789" not in proc.stderr + proc.stdout
    # Without strict mode the same file is served, with a warning.
    daemon.config["server"]["strict_permissions"] = False
    daemon.start()
    assert "chmod 600" in daemon.current_logs()
    assert daemon.ecs_creds("default")["AccessKeyId"]


def test_one_refresh_token_file_is_one_login(tmp_path: Path):
    """Two profiles may share a refresh-token file only with the same login
    settings (the daemon then runs one login for both); different settings on
    one file are refused, naming both profiles."""
    rt = tmp_path / "shared-rt"
    login = {"kind": "oidc", "issuer": "https://idp.example.com", "client_id": "c", "refresh_token_file": str(rt)}
    aws = {"flow": "sts", "role_arn": h.OIDC_ROLE_ARN}
    def check(beta_login):
        cfg = {"server": {"listen": "127.0.0.1:0", "imds_profile": "alpha"},
               "profiles": {"alpha": {"region": h.REGION, "login": login, "aws": aws},
                            "beta": {"region": h.REGION, "login": beta_login, "aws": aws}}}
        path = tmp_path / "config.toml"
        path.write_text(h.toml_dumps(cfg))
        return h.run_credbroker(["check-config", "-c", str(path)])
    ok = check(dict(login))
    assert ok.returncode == 0, ok.stderr
    bad = check({**login, "client_id": "other"})
    assert bad.returncode == h.EXIT_USAGE, bad.stderr
    assert "profiles.beta.login" in bad.stderr and '"alpha"' in bad.stderr, bad.stderr
