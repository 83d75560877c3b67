"""Issue 12: the 2026 cross-SDK refresh rules, from the server's side.

Under those rules (landscape.md 7.2: smithy-rs PR #4796 ``static_stability.rs``,
aws-sdk-java-v2 PRs #7028/#7031/#7053, botocore PR #3733) **one** failed or
already-expired answer makes a client keep its stale credentials and back off 5-10
minutes. So while the daemon holds valid credentials, no credential fetch may be
answered with an error or an expired document — not during a refresh, a refresh-token
file rotation, a config reload that renames the IMDS role and restarts the profile, or
a swap of every listener's view. This test hammers the live daemon with three clients
across all of those events and counts.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import harness as h

EXTENDED = "/latest/meta-data/iam/security-credentials-extended"
CLASSIC = "/latest/meta-data/iam/security-credentials"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Hammer:
    """One client in a loop. ``kind``: ``sep-extended`` / ``sep-classic`` (IMDS, token
    and role name cached; a 404 on the cached role means "list again", as the cross-SDK
    IMDS cases say), or ``ecs``."""

    name: str
    kind: str
    base: str
    ecs_token: str = ""
    fetches: int = 0
    relists: int = 0
    errors: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    min_left: float = float("inf")
    slowest: float = 0.0
    _token: str = ""
    _token_at: float = 0.0
    _role: str = ""

    def _req(self, method: str, path: str, headers: dict[str, str]) -> h.Response:
        t0 = time.monotonic()
        r = h.http_request(method, self.base + path, headers, timeout=5)
        self.slowest = max(self.slowest, time.monotonic() - t0)
        return r

    def _imds_headers(self) -> dict[str, str]:
        if not self._token or time.monotonic() - self._token_at > 240:
            r = self._req("PUT", "/latest/api/token", {h.IMDS_TTL_HEADER: "300"})
            if r.status != 200:
                raise AssertionError(f"token PUT: {r.status} {r.text[:100]}")
            self._token, self._token_at = r.text, time.monotonic()
        return {h.IMDS_TOKEN_HEADER: self._token}

    def _imds_fetch(self) -> h.Response:
        prefix = EXTENDED if self.kind == "sep-extended" else CLASSIC
        hdrs = self._imds_headers()
        if self._role:
            r = self._req("GET", f"{prefix}/{self._role}", hdrs)
            if r.status != 404:
                return r
            self.relists += 1
        listing = self._req("GET", prefix, hdrs)
        if listing.status != 200:
            return listing
        self._role = listing.text
        return self._req("GET", f"{prefix}/{self._role}", hdrs)

    def fetch_once(self) -> None:
        self.fetches += 1
        try:
            if self.kind == "ecs":
                r = self._req("GET", "/v1/credentials/default", {"Authorization": self.ecs_token})
            else:
                r = self._imds_fetch()
        except (OSError, AssertionError) as e:
            self.errors.append(f"{time.strftime('%H:%M:%S')} {type(e).__name__}: {e}")
            return
        if r.status != 200:
            self.errors.append(f"{time.strftime('%H:%M:%S')} HTTP {r.status} {r.text[:120]!r}")
            return
        doc = json.loads(r.body)
        left = (h.parse_expiration(doc["Expiration"]) - dt.datetime.now(dt.timezone.utc)).total_seconds()
        self.min_left = min(self.min_left, left)
        if left <= 0:
            self.expired.append(f"{time.strftime('%H:%M:%S')} {doc['Expiration']}")
        if not self.keys or self.keys[-1] != doc["AccessKeyId"]:
            self.keys.append(doc["AccessKeyId"])

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.fetch_once()
            stop.wait(0.02)


def test_no_error_and_no_expired_answer_across_refresh_rotation_reload_and_view_swap(oidc_daemon, tmp_path):
    """Three clients (IMDS extended path on the main listener, IMDS classic path on the
    profile's own ``imds_listen`` port, ECS on the main listener) fetch credentials ~50
    times a second each while the daemon (60 s STS credentials, so a refresh every
    ~30 s) goes through: a scheduled refresh; a refresh-token file rotation (a new
    grant's token written; the next scheduled refresh uses it); a config reload renaming the IMDS role and
    changing ``refresh_before`` (the profile restarts, its IMDS listener is kept);
    a reload switching ``server.imds_v1`` (every listener's view swapped); and SIGHUP. Every fetch must be a 200 with an unexpired
    document (a 404 on a cached role name followed by a successful listing is the
    protocol working, and counted as a re-list, not an error), and each client must
    have followed the rotations."""
    daemon = oidc_daemon("sts", aws={"duration": "60s"})
    port = _free_port()
    profile = daemon.config["profiles"]["default"]
    profile.update(role_name="rules-role-1", imds_listen=f"127.0.0.1:{port}")
    daemon.start()
    clients = [Hammer("imds-extended", "sep-extended", daemon.base_url),
               Hammer("imds-classic (own port)", "sep-classic", f"http://127.0.0.1:{port}"),
               Hammer("ecs", "ecs", daemon.base_url, ecs_token=daemon.ecs_token())]
    stop = threading.Event()
    threads = [threading.Thread(target=c.run, args=(stop,), name=c.name, daemon=True) for c in clients]
    started = time.monotonic()
    for t in threads:
        t.start()
    refreshes = lambda: daemon.profile_status()["refreshes"]  # noqa: E731
    timeline: list[tuple[float, str]] = []

    def event(what: str) -> None:
        timeline.append((round(time.monotonic() - started, 1), what))

    def wait_refresh(after: int, timeout: float, what: str) -> int:
        n = h.wait_for(lambda: refreshes() > after and refreshes(), timeout, what, interval=0.25)
        event(what)
        return n

    try:
        n = wait_refresh(refreshes(), 45, "scheduled refresh")
        # A rotated file does not cut a fresh profile's schedule short (refresher.rs
        # `Accept::Nothing`): the next scheduled refresh is the first to read it.
        daemon.write_refresh_token(daemon.idp.mint("alice"))
        event("refresh-token file rotated")
        n = wait_refresh(n, 45, "scheduled refresh with the rotated refresh-token file")
        profile.update(role_name="rules-role-2", refresh_before="20m")
        daemon.write_config()
        h.wait_for(lambda: h.http_request("GET", daemon.base_url + CLASSIC,
                                          {h.IMDS_TOKEN_HEADER: daemon.imds_token()}).text == "rules-role-2",
                   10, "the renamed role in the listing", interval=0.05)
        event("reload: role renamed, profile restarted")
        daemon.config["server"]["imds_v1"] = True
        daemon.write_config()
        time.sleep(1.5)
        event("reload: imds_v1 on (listener views swapped)")
        daemon.proc.send_signal(signal.SIGHUP)
        time.sleep(1.5)
        event("SIGHUP (fresh credentials: the schedule stands)")
        time.sleep(3)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
    elapsed = time.monotonic() - started
    report = "\n".join(f"{c.name}: {c.fetches} fetches, {len(c.errors)} errors, {len(c.expired)} expired, "
                       f"{len(c.keys)} keys, {c.relists} re-lists, min left {c.min_left:.0f} s, slowest "
                       f"{c.slowest * 1000:.0f} ms" for c in clients)
    print(f"\n{elapsed:.0f} s; events {timeline}\n{report}")
    for c in clients:
        assert not c.errors, f"{c.name}: {len(c.errors)} failed fetches, first: {c.errors[:5]}\n{report}"
        assert not c.expired, f"{c.name}: expired documents: {c.expired[:5]}\n{report}"
        assert c.fetches >= elapsed * 5, f"{c.name}: only {c.fetches} fetches in {elapsed:.0f} s\n{report}"
        assert len(c.keys) >= 3, f"{c.name}: followed only {len(c.keys)} keys across the events\n{report}"
    assert any(c.relists for c in clients if c.kind != "ecs"), \
        f"no IMDS client saw its cached role name go away: the rename did not happen?\n{report}"
    daemon.stop()


def _locked_version(name: str) -> str:
    m = re.search(rf'name = "{re.escape(name)}"\nversion = "([^"]+)"', (h.REPO / "Cargo.lock").read_text())
    assert m, f"{name} is not in Cargo.lock"
    return m.group(1)


def test_rust_sdk_2026_refresh_rules_are_not_in_the_locked_release():
    """N/A, re-checked on every run: a Rust client "with the new rules" cannot be run,
    because the locked (and newest available) aws-config / aws-smithy-runtime do not
    contain them — no ``static_stability`` module (smithy-rs PR #4796), and the
    identity cache still refreshes 10 s before expiry (``DEFAULT_BUFFER_TIME``), which
    ``BehaviorVersion::latest()`` (v2026_01_12: retries and connect timeout only) does
    not change. The Rust rows of the long-running matrix (tests/e2e/test_compat.py,
    ``rust-imds`` / ``rust-ecs``: BehaviorVersion::latest(), ≥ 3 rotations, keys
    consecutive, 0 failures) are the nearest run. When a release gains the rules this
    test fails: then run the loop with the BehaviorVersion that enables them."""
    home = Path(os.environ.get("CARGO_HOME") or Path.home() / ".cargo")
    found = {}
    for crate in ("aws-config", "aws-runtime", "aws-smithy-runtime", "aws-smithy-runtime-api"):
        version = _locked_version(crate)
        dirs = sorted(home.glob(f"registry/src/*/{crate}-{version}"))
        assert dirs, f"the source of {crate} {version} is not under {home}/registry/src (cargo fetch --locked)"
        found[crate] = dirs[0]
        hits = [p for p in dirs[0].rglob("*.rs") if "static_stability" in p.name
                or "static_stability" in p.read_text("utf-8", "replace")]
        assert not hits, f"{crate} {version} now has the 2026 refresh rules ({hits[:3]}): run a Rust loop with them"
    lazy = (found["aws-smithy-runtime"] / "src/client/identity/cache/lazy.rs").read_text()
    assert "DEFAULT_BUFFER_TIME: Duration = Duration::from_secs(10)" in lazy, "the identity cache buffer changed"
    bv = (found["aws-smithy-runtime-api"] / "src/client/behavior_version.rs").read_text()
    latest = re.search(r"The latest version is currently \[`BehaviorVersion::(\w+)`\]", bv)
    assert latest and latest.group(1) == "v2026_01_12", (
        f"BehaviorVersion::latest() is now {latest and latest.group(1)}: check whether it enables the 2026 rules")
