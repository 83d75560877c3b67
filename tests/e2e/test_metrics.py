"""Observability: a real Prometheus (Debian's ``prometheus`` 2.42) scrapes the
daemon's ``/metrics``, both on the main listener (Host allow-list and uid
check in force: Prometheus sends ``Host: 127.0.0.1:PORT`` and runs as our uid)
and on ``server.metrics_listen``; its query API must show ``up == 1``, the
refresh counter moving across a refresh of 60 s STS credentials, and the
expiry gauge of each profile. The text also parses with Python's
``prometheus_client`` OpenMetrics parser, carries no secret in any label or
value, and a profile removed by a reload stops being reported.

``log.format = "json"``: every line is a JSON object, the secret scans of the
trace-level tests run over it, and the structured refresh and served-fetch
events carry their fields.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

import harness as h

CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
DEV_ROLE = f"arn:aws:iam::{h.ACCOUNT_ID}:role/DevRole"
FAMILIES = {
    "credbroker_refreshes",
    "credbroker_credentials_expiry_seconds",
    "credbroker_login_required",
    "credbroker_upstream_request_duration_seconds",
    "credbroker_http_requests",
    "credbroker_imds_tokens_issued",
    "credbroker_imds_tokens_evicted",
    "credbroker_build",
}
SCRAPE_OUT = h.REPO / "target" / "metrics"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Prometheus(h._Process):
    """``prometheus`` with a generated config and a temporary TSDB, on 127.0.0.1."""

    name = "prometheus"

    def __init__(self, targets: dict[str, str]):
        super().__init__()
        self.targets = targets
        self.url = ""

    def start(self, timeout: float = 60) -> "Prometheus":
        binary = shutil.which("prometheus")
        assert binary, "prometheus not found on PATH: run tests/setup.sh (apt-get install prometheus)"
        jobs = "".join(
            f"  - job_name: {job}\n    static_configs:\n      - targets: ['{addr}']\n"
            for job, addr in self.targets.items())
        config = self.workdir / "prometheus.yml"
        config.write_text("global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n"
                          "  evaluation_interval: 1s\nscrape_configs:\n" + jobs)
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self._spawn([binary, f"--config.file={config}", f"--storage.tsdb.path={self.workdir / 'tsdb'}",
                     f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"], h.clean_env())

        def ready() -> bool:
            self._check_alive()
            try:
                return h.http_request("GET", f"{self.url}/-/ready", timeout=2).status == 200
            except OSError:
                return False

        h.wait_for(ready, timeout, "Prometheus /-/ready", interval=0.25, on_timeout=self.logs)
        return self

    def api(self, path: str, **params: str) -> Any:
        resp = h.http_request("GET", f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}")
        assert resp.status == 200, f"Prometheus {path}: {resp}"
        body = resp.json()
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> dict[str, float]:
        """Instant query → {profile-or-job label: value}."""
        out = {}
        for r in self.api("query", query=expr)["result"]:
            m = r["metric"]
            out[m.get("profile") or m.get("call") or m.get("job") or ""] = float(r["value"][1])
        return out


def metrics_addr(daemon: h.Daemon) -> str:
    def found() -> str | None:
        for line in daemon.current_logs().splitlines():
            if "on the metrics port" in line:
                for part in line.split():
                    if part.startswith("metrics_addr="):
                        return part.split("=", 1)[1].strip('"')
        return None

    return h.wait_for(found, 10, "the metrics port's log line")


def secret_scan(daemon: h.Daemon, moto: h.Moto, imds_token: str) -> h.SecretScan:
    scan = h.SecretScan()
    for profile in daemon.config["profiles"]:
        creds = daemon.ecs_creds(profile)
        scan.add("access key id", creds["AccessKeyId"])
        scan.add("secret access key", creds["SecretAccessKey"])
        scan.add("session token", creds["Token"])
    scan.add("IMDS token", imds_token)
    scan.add_daemon_secrets(daemon, moto)
    return scan


def parse(text: str) -> dict[str, Any]:
    """OpenMetrics text → {family name: family} (raises on a malformed exposition)."""
    return {f.name: f for f in text_string_to_metric_families(text)}


def label_text(families: dict[str, Any]) -> str:
    return "\n".join(f"{s.name} {k}={v}" for f in families.values() for s in f.samples
                     for k, v in s.labels.items())


def _two_profile_daemon(oidc_daemon) -> h.Daemon:
    daemon = oidc_daemon("sts", id_ttl=20, aws={"duration": "60s"})
    login = daemon.config["profiles"]["default"]["login"]
    login["refresh_token_file"] = str(daemon.refresh_token_path())
    daemon.config["profiles"]["dev"] = {
        "region": h.REGION, "login": dict(login),
        "aws": {"flow": "sts", "role_arn": DEV_ROLE, "session_name": h.SESSION_NAME, "duration": "60s"}}
    daemon.config["server"]["metrics_listen"] = "127.0.0.1:0"
    return daemon


def test_prometheus_scrapes_refreshes_expiry_and_nothing_secret(oidc_daemon, moto: h.Moto):
    daemon = _two_profile_daemon(oidc_daemon)
    moto.start_recording()
    daemon.start()
    imds_token = daemon.imds_token()
    assert daemon.imds_creds_response(imds_token)[0].status == 200
    side = metrics_addr(daemon)

    # The scrape as Prometheus sees it: content type, OpenMetrics grammar.
    resp = daemon.get("/metrics")
    assert resp.status == 200, resp
    assert resp.header("content-type") == CONTENT_TYPE, resp.headers
    families = parse(resp.text)
    assert FAMILIES <= families.keys(), f"missing {FAMILIES - families.keys()}"
    assert families["credbroker_build"].type == "info"
    SCRAPE_OUT.mkdir(parents=True, exist_ok=True)
    (SCRAPE_OUT / "scrape.txt").write_text(resp.text)

    # metrics_listen: any Host, only /metrics /healthz /readyz.
    other_host = {"Host": f"metrics.pod.internal:{side.rsplit(':', 1)[1]}"}
    for path in ("/metrics", "/healthz", "/readyz"):
        r = h.http_request("GET", f"http://{side}{path}", other_host)
        assert r.status == 200, f"{path} on the metrics port: {r}"
    assert h.http_request("GET", f"http://{side}/metrics").header("content-type") == CONTENT_TYPE
    ecs = {"Authorization": daemon.ecs_token()}
    for method, path, hdrs in [
            ("GET", "/v1/credentials/default", ecs), ("GET", "/v1/credentials", ecs),
            ("GET", "/v1/status", ecs), ("PUT", "/latest/api/token", {h.IMDS_TTL_HEADER: "60"}),
            ("GET", "/latest/meta-data/iam/security-credentials/", {h.IMDS_TOKEN_HEADER: imds_token}),
            ("GET", "/latest/meta-data/iam/security-credentials/credbroker", {h.IMDS_TOKEN_HEADER: imds_token})]:
        r = h.http_request(method, f"http://{side}{path}", hdrs)
        assert r.status == 404, f"{method} {path} on the metrics port: {r}"
    # The main listener keeps its Host allow-list for /metrics.
    assert daemon.get("/metrics", other_host).status == 403

    prom = Prometheus({"credbroker": daemon.addr, "credbroker-metrics-port": side}).start()
    try:
        def up() -> dict[str, float] | None:
            got = prom.query("up")
            return got if got.get("credbroker") == 1 and got.get("credbroker-metrics-port") == 1 else None

        h.wait_for(up, 30, "up == 1 for both targets", interval=0.5,
                   on_timeout=lambda: json.dumps(prom.api("targets"), indent=1) + prom.logs())
        for t in prom.api("targets")["activeTargets"]:
            assert t["health"] == "up" and not t["lastError"], t

        job = 'job="credbroker"'
        expiry = prom.query(f"credbroker_credentials_expiry_seconds{{{job}}}")
        assert set(expiry) == {"default", "dev"}, expiry
        assert all(0 < v <= 60 for v in expiry.values()), expiry
        assert prom.query(f"credbroker_login_required{{{job}}}") == {"default": 0, "dev": 0}
        calls = prom.query(f"credbroker_upstream_request_duration_seconds_count{{{job}}} > 0")
        assert {"idp_refresh", "assume_role_with_web_identity"} <= set(calls), calls
        assert prom.query(f"credbroker_imds_tokens_issued_total{{{job}}}")[
            "credbroker"] >= 1

        success = f'credbroker_refreshes_total{{{job},outcome="success"}}'
        before = prom.query(success)
        assert set(before) == {"default", "dev"} and min(before.values()) >= 1, before

        def moved() -> dict[str, float] | None:
            now = prom.query(success)
            return now if all(now.get(p, 0) > before[p] for p in before) else None

        after = h.wait_for(moved, 75, "the refresh counter of both profiles to move", interval=1,
                           on_timeout=lambda: f"before {before}, now {prom.query(success)}")
        print(f"refreshes_total before {before}, after {after}")
        # The expiry gauge follows the new credentials (a fresh 60 s lifetime).
        assert all(v > 0 for v in prom.query(f"credbroker_credentials_expiry_seconds{{{job}}}").values())

        # Nothing secret in the body, in any label, or in what Prometheus stored.
        scan = secret_scan(daemon, moto, imds_token)
        body = daemon.get("/metrics").text
        side_body = h.http_request("GET", f"http://{side}/metrics").text
        series = json.dumps(prom.api("series", **{"match[]": '{__name__=~"credbroker_.+"}'}))
        texts = {"/metrics": body, "/metrics (metrics port)": side_body,
                 "labels": label_text(parse(body)), "Prometheus series": series}
        leaks = scan.leaks(texts)
        assert not leaks, "secrets in metrics:\n" + "\n".join(leaks)
        assert 'credbroker_http_requests_total{listener="metrics",route="/v1/status",status="404"} 1' in body
        assert 'credbroker_http_requests_total{listener="main",route="/metrics",status="403"} 1' in body
        (SCRAPE_OUT / "scrape-after-refresh.txt").write_text(body)
        print(f"scrape: {len(body)} bytes, {body.count(chr(10))} lines")
    finally:
        prom.terminate()

    # A profile removed by a reload stops being reported.
    del daemon.config["profiles"]["dev"]
    daemon.write_config()
    os.kill(daemon.proc.pid, signal.SIGHUP)
    h.wait_for(lambda: 'profile="dev"' not in daemon.get("/metrics").text, 10,
               "profile dev to leave /metrics", interval=0.2,
               on_timeout=lambda: daemon.get("/metrics").text)
    assert 'credbroker_refreshes_total{profile="default",outcome="success"}' in daemon.get("/metrics").text
    daemon.stop()


class JsonDaemon(h.Daemon):
    """A daemon logging JSON: its address comes from daemon.json, not a text log line."""

    def start(self, *, wait_ready: bool = True, timeout: float = 30) -> "JsonDaemon":
        self._require_binary()
        self.write_config()
        self._spawn([str(self.binary), "serve", "-c", str(self.config_path)], self.env)

        def bound() -> str | None:
            self._check_alive()
            try:
                info = json.loads(self.daemon_json_path.read_text())
            except (OSError, ValueError):
                return None
            return info["listen"] if info.get("pid") == self.proc.pid else None

        self.addr = h.wait_for(bound, timeout, "daemon.json of this run",
                               on_timeout=lambda: h.tail(self.current_logs(), 40))
        if wait_ready:
            self.wait_ready(timeout)
        return self


@pytest.mark.parametrize("flow", ["cognito", "sts"])
def test_json_logs_parse_and_carry_no_secret(oidc_daemon, moto: h.Moto, tmp_path: Path, flow: str):
    template = oidc_daemon(flow)
    config = template.config
    config["log"] = {"format": "json", "level": "trace"}
    # RUST_LOG empty: log.level decides (trace, under the fixed caps).
    daemon = JsonDaemon(tmp_path / "json-daemon", config, moto_url=moto.url, rust_log="")
    daemon.minted_refresh_token = template.minted_refresh_token
    daemon.write_refresh_token(template.minted_refresh_token)
    moto.start_recording()
    try:
        daemon.start()
        imds_token = daemon.imds_token()
        resp, _ = daemon.imds_creds_response(imds_token)
        assert resp.status == 200, resp
        assert daemon.ecs_creds_response("default", token="wrong").status == 401
        scan = secret_scan(daemon, moto, imds_token)
        metrics = daemon.get("/metrics").text
        status = daemon.get("/v1/status", {"Authorization": daemon.ecs_token()}).text
        scan.add("rotated refresh token", daemon.read_refresh_token())
        daemon.stop()
    finally:
        daemon.terminate()
    log = daemon.logs()
    lines = [l for l in log.splitlines() if l.strip()]
    assert len(lines) > 20, log
    events = []
    for n, line in enumerate(lines, 1):
        try:
            events.append(json.loads(line))
        except ValueError as e:
            raise AssertionError(f"log line {n} is not JSON ({e}): {line[:300]}") from None
    assert all(isinstance(e, dict) and "level" in e and "fields" in e for e in events)
    assert any(e["level"] == "TRACE" for e in events), "log.level = trace had no effect"
    refreshed = [e["fields"] for e in events if e["fields"].get("message") == "credentials refreshed"]
    assert refreshed and refreshed[0]["profile"] == "default" and refreshed[0]["outcome"] == "success"
    assert 0 < int(refreshed[0]["lifetime_s"]) <= 36 * 3600 and "next_refresh" in refreshed[0], refreshed[0]
    served = [e["fields"] for e in events if e["fields"].get("message") == "served credentials"]
    assert {s["protocol"] for s in served} >= {"imds", "ecs"}, served
    assert all(s["key"].startswith("…") and len(s["key"]) == 5 for s in served), served
    assert all(e["level"] == "DEBUG" for e in events if e["fields"].get("message") == "served credentials")

    leaks = scan.leaks({"daemon log (log.format = json, level trace)": log, "/metrics": metrics,
                        "/v1/status": status})
    # The status document shows the key's last four characters by design; the
    # full key id never appears.
    assert not leaks, "secrets leaked:\n" + "\n".join(leaks)


def test_check_config_shows_the_new_keys(daemon_factory):
    daemon = daemon_factory(h.make_config(login={"kind": "none"},
                                          aws={"flow": "cognito", "identity_pool_id": "us-east-1:x"},
                                          server={"metrics_listen": "0.0.0.0:9912"}))
    daemon.config["log"] = {"format": "json", "level": "warn"}
    daemon.write_config()
    proc = daemon.cli("check-config")
    assert proc.returncode == 0, proc.stderr
    assert 'metrics_listen = "0.0.0.0:9912"' in proc.stdout, proc.stdout
    assert '[log]\nformat = "json"\nlevel = "warn"' in proc.stdout, proc.stdout
    daemon.config["log"] = {"format": "yaml"}
    daemon.write_config()
    proc = daemon.cli("check-config")
    assert proc.returncode == h.EXIT_USAGE, proc
    assert str(daemon.config_path) in proc.stderr and "log.format" in proc.stderr, proc.stderr
