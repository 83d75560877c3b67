"""`credbroker healthcheck` against the real daemon (moto + oidc-provider):
healthy and ready, alive but not ready (a profile in login_required), not
running; the address from daemon.json or --url. One line each, no secret."""

from __future__ import annotations

import harness as h


def _check(daemon: h.Daemon, *args: str):
    proc = daemon.cli("healthcheck", *args)
    assert proc.stdout.count("\n") + proc.stderr.count("\n") == 1, f"not one line: {proc.stdout!r} {proc.stderr!r}"
    return proc


def test_healthy_not_ready_and_not_running(oidc_daemon):
    daemon = oidc_daemon("sts")
    daemon.start()
    proc = _check(daemon)
    assert proc.returncode == 0 and proc.stdout.startswith(f"healthy: credbroker at {daemon.addr} is alive"), proc
    proc = _check(daemon, "--ready")
    assert proc.returncode == 0 and proc.stdout.startswith("ready:"), proc
    # --url needs no config at all.
    bare = h.run_credbroker(["healthcheck", "--ready", "--url", daemon.base_url])
    assert bare.returncode == 0 and bare.stdout.startswith("ready:"), bare

    # Alive but not ready: the refresh token is refused, the profile waits for a login.
    daemon.stop()
    daemon.write_refresh_token("not-a-valid-refresh-token")
    daemon.start(wait_ready=False)
    daemon.wait_state("login_required", 20)
    assert _check(daemon).returncode == 0, "alive is alive"
    proc = _check(daemon, "--ready")
    assert proc.returncode == 3, proc
    assert proc.stderr.startswith(f"credbroker: not ready: credbroker at {daemon.addr} is alive"), proc.stderr
    addr = daemon.addr

    # Not running, killed: daemon.json still names the address; nothing answers.
    daemon.kill()
    proc = _check(daemon)
    assert proc.returncode == 69, proc
    assert f"no credbroker daemon answers at {addr}" in proc.stderr and "daemon.json" in proc.stderr, proc.stderr
    proc = h.run_credbroker(["healthcheck", "--url", f"http://{addr}"])
    assert proc.returncode == 69 and "(address from --url)" in proc.stderr, proc.stderr

    # Stopped cleanly: daemon.json is gone, server.listen is named.
    daemon.start(wait_ready=False)
    daemon.stop()
    proc = _check(daemon)
    assert proc.returncode == 69 and "server.listen" in proc.stderr, proc.stderr

    scan = h.SecretScan()
    scan.add("ECS token", daemon.ecs_token())
    scan.add("refresh token", daemon.minted_refresh_token)
    assert scan.leaks({"daemon log": daemon.logs()}) == []


def test_bad_url_is_a_usage_error():
    proc = h.run_credbroker(["healthcheck", "--url", "https://127.0.0.1:9911/healthz"])
    assert proc.returncode == h.EXIT_USAGE, proc
    assert "expected http://HOST:PORT" in proc.stderr, proc.stderr
