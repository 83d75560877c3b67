"""The systemd home (issue 10, first slice), with the real protocol pieces:

- `systemd-analyze --user verify` accepts systemd/credbroker.service and
  .socket with no error and no warning (it exits 0 on unknown keys: stderr is
  judged), and `systemd-analyze security` reports the exposure;
- the notify protocol over a real NOTIFY_SOCKET datagram socket made here:
  READY=1 (with STATUS=) once every profile finished its first attempt — with
  credentials, or in login_required —, STATUS= updates, WATCHDOG=1 pings while
  the daemon serves, STOPPING=1 on SIGTERM;
- socket activation with a listener passed by this test (LISTEN_FDS,
  LISTEN_PID), and a non-loopback inherited socket refused (exit 64; made in a
  network namespace of its own, so nothing is reachable through it).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

import harness as h

UNITS = h.REPO / "systemd"


def _analyze() -> str:
    path = shutil.which("systemd-analyze")
    if not path:
        pytest.fail("systemd-analyze not found (Debian: apt-get install systemd); tests/setup.sh installs it")
    return path


def test_unit_files_verify_without_warnings(tmp_path: Path):
    home = tmp_path / "home"
    (home / ".cargo" / "bin").mkdir(parents=True)
    # ExecStart=%h/.cargo/bin/credbroker must exist for verify.
    (home / ".cargo" / "bin" / "credbroker").symlink_to(h.credbroker_bin())
    units = tmp_path / "units"
    units.mkdir()
    for f in ("credbroker.service", "credbroker.socket"):
        shutil.copy(UNITS / f, units / f)
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "XDG_RUNTIME_DIR": str(run), "LANG": "C.UTF-8"}
    proc = subprocess.run([_analyze(), "--user", "verify", str(units / "credbroker.service"),
                           str(units / "credbroker.socket")], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "", f"systemd-analyze verify warned:\n{proc.stderr}"
    sec = subprocess.run([_analyze(), "security", "--user", "--offline=true", str(units / "credbroker.service")],
                         env=env, capture_output=True, text=True)
    m = re.search(r"Overall exposure level for credbroker.service: ([\d.]+)", sec.stdout)
    assert m, sec.stdout + sec.stderr
    exposure = float(m.group(1))
    print(f"systemd-analyze security --user: exposure {exposure}")
    assert exposure <= 5.0, f"exposure {exposure} (README says 4.5)"
    readme = (h.REPO / "README.md").read_text()
    assert f"exposure {exposure}" in readme or f"exposure level {exposure}" in readme, \
        f"README should state the measured exposure ({exposure})"


class NotifySocket:
    """The service manager's end of the notify protocol."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[dict[str, str]] = []

    def poll(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except (socket.timeout, BlockingIOError):
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append(fields)

    def wait(self, key: str, timeout: float, value: str | None = None) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.poll()
            for m in self.messages:
                if key in m and (value is None or m[key] == value):
                    return m
        raise AssertionError(f"no {key}{'=' + value if value else ''} within {timeout}s: {self.messages}")

    def count(self, key: str) -> int:
        self.poll()
        return sum(1 for m in self.messages if key in m)

    def close(self) -> None:
        self.sock.close()


def test_ready_status_watchdog_and_stopping(oidc_daemon, tmp_path: Path):
    notify = NotifySocket(tmp_path / "notify")
    daemon = oidc_daemon("sts", extra_env={"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "1000000"})
    try:
        daemon.start(wait_ready=False)
        ready = notify.wait("READY", 20, "1")
        # READY came with the status line, after the credentials were in hand.
        assert ready.get("STATUS", "").startswith("1 profile: default ready"), ready
        assert daemon.get("/readyz").status == 200
        # WATCHDOG_USEC=1 s: a ping every half second while /healthz answers.
        time.sleep(2.2)
        pings = notify.count("WATCHDOG")
        assert 3 <= pings <= 6, f"{pings} watchdog pings in 2.2 s"
        daemon.stop()
        notify.wait("STOPPING", 5, "1")
    finally:
        notify.close()


def test_ready_with_a_profile_that_needs_a_login(oidc_daemon, tmp_path: Path):
    """A profile waiting for a login must not become a start-up timeout."""
    notify = NotifySocket(tmp_path / "notify")
    daemon = oidc_daemon("sts", extra_env={"NOTIFY_SOCKET": str(notify.path)})
    daemon.write_refresh_token("not-a-valid-refresh-token")
    try:
        daemon.start(wait_ready=False)
        ready = notify.wait("READY", 20, "1")
        assert "default login required" in ready.get("STATUS", ""), ready
        assert daemon.get("/readyz").status == 503
        assert daemon.profile_status()["state"] == "login_required"
        # A new login (a good token) is reported on the status line.
        daemon.write_refresh_token(daemon.idp.mint("alice"))
        h.wait_for(lambda: any(m.get("STATUS", "").endswith("default ready") for m in
                               (notify.poll() or notify.messages)), 15, "STATUS=... default ready")
        daemon.stop()
    finally:
        notify.close()


LAUNCHER = (
    "import os, sys\n"
    "fd = int(sys.argv[1])\n"
    "os.dup2(fd, 3); os.set_inheritable(3, True)\n"
    "if fd != 3: os.close(fd)\n"
    "os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1', LISTEN_FDNAMES='credbroker.socket')\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


def _spawn_with_socket(sock: socket.socket, argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """Start ``argv`` the way systemd does: the socket as fd 3, LISTEN_FDS=1,
    LISTEN_PID = the daemon's own pid (a launcher sets it, then execs)."""
    fd = sock.fileno()
    out = open(log, "ab")
    return subprocess.Popen([str(h.VENV_BIN / "python"), "-c", LAUNCHER, str(fd), *argv], env=env, stdout=out,
                            stderr=out, stdin=subprocess.DEVNULL, pass_fds=(fd,))


def test_socket_activation_serves_on_the_inherited_socket(oidc_daemon, tmp_path: Path):
    daemon = oidc_daemon("sts")
    # server.listen names another port: the inherited socket wins and it is not bound.
    other = socket.socket()
    other.bind(("127.0.0.1", 0))
    configured = other.getsockname()[1]
    other.close()
    daemon.config["server"]["listen"] = f"127.0.0.1:{configured}"
    daemon.write_config()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    port = sock.getsockname()[1]
    log = tmp_path / "activated.log"
    proc = _spawn_with_socket(sock, [str(h.credbroker_bin()), "serve", "-c", str(daemon.config_path)],
                              daemon.env, log)
    sock.close()  # the daemon holds it now
    try:
        h.wait_for(lambda: h.http_request("GET", f"http://127.0.0.1:{port}/readyz").status == 200
                   if _connects(port) else False, 20, "readyz on the inherited socket",
                   on_timeout=lambda: log.read_text())
        creds = h.http_request("GET", f"http://127.0.0.1:{port}/v1/credentials/default",
                               headers={"Authorization": daemon.ecs_token()})
        assert creds.status == 200 and creds.json()["AccessKeyId"], creds
        assert not _connects(configured), "server.listen was bound as well"
        assert "using the socket passed by systemd" in log.read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def _connects(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def test_a_non_loopback_inherited_socket_is_refused(oidc_daemon, tmp_path: Path):
    unshare = shutil.which("unshare")
    if os.geteuid() != 0 or not unshare:
        pytest.skip("needs root and unshare to make a network namespace of its own")
    daemon = oidc_daemon("sts")
    daemon.write_config()
    # In a fresh network namespace (loopback only, down): bind 0.0.0.0 there and
    # hand it to the daemon as systemd would. Nothing outside can reach it.
    code = (
        "import os, socket, sys\n"
        "s = socket.socket(); s.bind(('0.0.0.0', 0)); s.listen(1)\n"
        "os.dup2(s.fileno(), 3); os.set_inheritable(3, True)\n"
        "os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1')\n"
        "os.execv(sys.argv[1], sys.argv[1:])\n"
    )
    proc = subprocess.run([unshare, "--net", str(h.VENV_BIN / "python"), "-c", code, str(h.credbroker_bin()),
                           "serve", "-c", str(daemon.config_path)], env=daemon.env, capture_output=True,
                          text=True, timeout=30)
    if "unshare failed" in proc.stderr or "Operation not permitted" in proc.stderr:
        pytest.skip(f"no network namespaces here: {proc.stderr.strip()}")
    assert proc.returncode == h.EXIT_USAGE, f"exit {proc.returncode}\n{proc.stderr}"
    assert "0.0.0.0" in proc.stderr and "not a loopback address" in proc.stderr, proc.stderr


def test_load_credential_seeds_the_refresh_token_once(oidc_daemon, tmp_path: Path):
    """systemd's LoadCredential=refresh-token.default:… (a read-only
    $CREDENTIALS_DIRECTORY) seeds a missing refresh-token file at start; a
    restart keeps the rotated token in the state directory, not the dead seed."""
    creds = tmp_path / "credentials"
    creds.mkdir(mode=0o700)
    d = oidc_daemon("sts", extra_env={"CREDENTIALS_DIRECTORY": str(creds)})
    seed = d.minted_refresh_token
    d.refresh_token_path().unlink()
    h.write_secret(creds / "refresh-token.default", seed)
    d.start()
    assert d.ecs_creds()["AccessKeyId"]
    assert "seeded the refresh token from the systemd credential" in d.logs()
    rotated = d.read_refresh_token()
    assert rotated and rotated != seed, "oidc-provider rotates: the state holds the new token"
    d.restart()
    assert d.ecs_creds()["AccessKeyId"]
    assert d.read_refresh_token() != seed
    assert seed not in d.logs() and rotated not in d.logs()
