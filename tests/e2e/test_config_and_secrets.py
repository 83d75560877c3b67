"""Scenario 6: configuration errors are usage errors (exit 64) that name the file
and the key; and no secret ever reaches logs (even at RUST_LOG=trace), status
output or the CLI.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest

import harness as h

IDENTITY_POOL = f"{h.REGION}:00000000-0000-0000-0000-000000000000"
KNOWN_ECS_TOKEN = "ecs-token-value-0123456789-abcdefghijklmnop"
KNOWN_REFRESH_TOKEN = "refresh-token-value-9876543210-zyxwvutsrqpo"


def good_config() -> dict[str, Any]:
    return h.make_config(
        login={"kind": "oidc", "issuer": "http://127.0.0.1:9/", "client_id": "daemon"},
        aws={"flow": "cognito", "identity_pool_id": IDENTITY_POOL},
    )


def _unknown_key(c):
    c["profiles"]["default"]["aws"]["flw"] = "x"


def _missing_pool(c):
    del c["profiles"]["default"]["aws"]["identity_pool_id"]


def _bad_duration(c):
    c["profiles"]["default"]["refresh_before"] = "soon"


def _bad_listen(c):
    c["server"]["listen"] = "not-an-address"


BAD_CONFIGS: dict[str, tuple[Callable[[dict], None], str]] = {
    "unknown-key": (_unknown_key, "profiles.default.aws.flw"),
    "missing-identity-pool-id": (_missing_pool, "profiles.default.aws.identity_pool_id"),
    "bad-duration": (_bad_duration, "profiles.default.refresh_before"),
    "bad-listen": (_bad_listen, "server.listen"),
}


@pytest.mark.parametrize("command", ["serve", "check-config"])
@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_is_a_usage_error(daemon_factory, case: str, command: str):
    mutate, key = BAD_CONFIGS[case]
    config = good_config()
    mutate(config)
    daemon = daemon_factory(config)
    daemon.write_config()
    proc = daemon.cli(command, timeout=20)
    assert proc.returncode == h.EXIT_USAGE, \
        f"`credbroker {command}` exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    assert str(daemon.config_path) in proc.stderr, f"stderr does not name the config file:\n{proc.stderr}"
    assert key in proc.stderr, f"stderr does not name the key {key!r}:\n{proc.stderr}"


def test_check_config_on_a_good_config_reveals_no_secret(daemon_factory, tmp_path):
    config = good_config()
    config["server"]["ecs_token_file"] = str(tmp_path / "ecs-token")
    config["profiles"]["default"]["login"]["refresh_token_file"] = str(tmp_path / "rt")
    h.write_secret(tmp_path / "ecs-token", KNOWN_ECS_TOKEN)
    h.write_secret(tmp_path / "rt", KNOWN_REFRESH_TOKEN)
    daemon = daemon_factory(config)
    daemon.write_config()
    proc = daemon.cli("check-config")
    assert proc.returncode == 0, f"stdout: {proc.stdout}\nstderr: {proc.stderr}"
    scan = h.SecretScan()
    scan.add("ECS token", KNOWN_ECS_TOKEN)
    scan.add("refresh token", KNOWN_REFRESH_TOKEN)
    assert not scan.leaks({"check-config stdout": proc.stdout, "check-config stderr": proc.stderr})


@pytest.mark.parametrize("flow", ["cognito", "sts"])
def test_no_secret_in_trace_logs_or_status(oidc_daemon, moto: h.Moto, flow: str):
    daemon = oidc_daemon(flow, rust_log="trace")
    moto.start_recording()
    daemon.start()

    scan = h.SecretScan()
    imds_token = daemon.imds_token()
    imds_resp, _ = daemon.imds_creds_response(imds_token)
    assert imds_resp.status == 200, imds_resp
    for creds in (imds_resp.json(), daemon.ecs_creds("default")):
        scan.add("secret access key", creds["SecretAccessKey"])
        scan.add("session token", creds["Token"])
    assert daemon.ecs_creds_response("default", token="wrong").status == 401
    scan.add("IMDS token", imds_token)
    scan.add_daemon_secrets(daemon, moto)

    outputs = {}
    for args in (("status", "--json"), ("status",), ("env",), ("env", "--imds"), ("check-config",)):
        proc = daemon.cli(*args)
        assert proc.returncode == 0, f"credbroker {' '.join(args)}: {proc.stderr}"
        outputs[f"credbroker {' '.join(args)}"] = proc.stdout + proc.stderr
    status = h.parse_json_output(daemon.cli("status", "--json").stdout)
    assert status["profiles"]["default"]["state"] == "ready"
    outputs["GET /v1/status"] = daemon.get("/v1/status", {"Authorization": daemon.ecs_token()}).text

    # The rotated token may have rotated again meanwhile; scan the latest too.
    scan.add("rotated refresh token", daemon.read_refresh_token())
    daemon.stop()
    outputs["daemon log (RUST_LOG=trace)"] = daemon.logs()
    assert "TRACE" in outputs["daemon log (RUST_LOG=trace)"], "RUST_LOG=trace had no effect"

    leaks = scan.leaks(outputs)
    assert not leaks, "secrets leaked:\n" + "\n".join(leaks)
