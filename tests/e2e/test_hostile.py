"""Issue 4, part 1: hostile local callers against the running binary.

Raw HTTP over sockets (rawhttp.py), so that requests no HTTP library would
send are tried too: rebinding Host variants, absolute-form targets, browser
and proxy headers, IMDS token abuse, methods, encoded and dot-segment paths,
oversize heads and bodies, slow clients, a connection flood, ECS token
variants, and peers that are not loopback (a network namespace with a veth
pair when we are root, else a second loopback address).

Every probe states the status it expects; every response is checked for the
credential bytes (access key id, secret key, session token) and for CORS
headers. A deviation that is a known, not yet fixed daemon finding is listed in
FINDINGS (probe name → what is wrong) and asserted by a strict-xfail test at
the bottom, so it shows in every run as a finding and turns red once fixed
(then delete the entry and make the test a plain one). None is open now.
Figures go to target/security/hostile.json (security_report.py).
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import pytest

import harness as h
import rawhttp as raw
import security_report

CREDS_PATH = "/latest/meta-data/iam/security-credentials/"
TTL = h.IMDS_TTL_HEADER
TOK = h.IMDS_TOKEN_HEADER
CLOSED = None  # expected "status" when the server must close without answering

# Probes whose outcome differs from the daemon's stated behaviour. Key: probe
# name; value: what is wrong. Each has a strict-xfail test below. Empty: the two
# recorded so far (a second Host header was obeyed; a chunked body over 1 KiB on
# the token PUT was ignored, not refused) are fixed and now plain assertions.
FINDINGS: dict[str, str] = {}


@dataclass
class Probe:
    name: str
    category: str
    payload: bytes | list[bytes]
    expect: tuple[int | None, ...]  # acceptable statuses; None = closed without answer
    refused: bool = True  # a refusal probe (else a control that must be served)
    pause: float = 0.0
    timeout: float = 12.0
    check: Callable[[raw.RawResponse], str | None] | None = None  # extra check → error text


@dataclass
class Outcome:
    probe: Probe
    resp: raw.RawResponse
    errors: list[str] = field(default_factory=list)


@dataclass
class Target:
    daemon: h.Daemon
    addr: str
    port: int
    ecs: str
    creds: dict[str, Any]
    scan: h.SecretScan
    results: list[Outcome] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def token(self, ttl: int = 21600) -> str:
        tok = self.daemon.imds_token(ttl)
        self.scan.add("IMDS token", tok)
        return tok

    def req(self, method: str, path: str, headers: list[tuple[str, str]] | None = None, *,
            host: str | None = "", body: bytes = b"", version: str = "HTTP/1.1") -> bytes:
        hdrs: list[tuple[str, str]] = []
        if host is not None:
            hdrs.append(("Host", host or self.host))
        hdrs += headers or []
        if body:
            hdrs.append(("Content-Length", str(len(body))))
        hdrs.append(("Connection", "close"))
        return raw.request_bytes(method, path, hdrs, body, version)

    def run(self, probe: Probe) -> Outcome:
        resp = raw.exchange(self.addr, probe.payload, timeout=probe.timeout, pause=probe.pause)
        out = Outcome(probe, resp)
        if resp.status not in probe.expect:
            out.errors.append(f"expected {probe.expect}, got {resp}")
        for name, needle in self.credential_needles():
            if needle.encode() in resp.raw:
                if probe.refused or resp.status != 200:
                    out.errors.append(f"response carries the {name}")
        for k, _v in resp.headers:
            if k.lower().startswith("access-control-"):
                out.errors.append(f"CORS header {k} in the response")
        if probe.check is not None and (msg := probe.check(resp)):
            out.errors.append(msg)
        self.results.append(out)
        return out

    def credential_needles(self) -> list[tuple[str, str]]:
        return [("access key id", self.creds["AccessKeyId"]), ("secret key", self.creds["SecretAccessKey"]),
                ("session token", self.creds["Token"])]


@pytest.fixture(scope="module")
def target(moto_server: h.Moto, oidc_factory, tmp_path_factory) -> Iterator[Target]:
    """One daemon (OIDC → STS, 1 h credentials) shared by the probes of this module."""
    moto_server.reset()
    idp = oidc_factory()
    config = h.make_config(login=h.oidc_login(idp), aws={"flow": "sts", "role_arn": h.OIDC_ROLE_ARN,
                                                          "session_name": h.SESSION_NAME})
    daemon = h.Daemon(tmp_path_factory.mktemp("hostile"), config, moto_url=moto_server.url, rust_log="debug")
    daemon.write_refresh_token(idp.mint())
    daemon.start()
    creds = daemon.imds_creds()
    scan = h.SecretScan()
    scan.add("secret key", creds["SecretAccessKey"])
    scan.add("session token", creds["Token"])
    scan.add("ECS token", daemon.ecs_token())
    t = Target(daemon, daemon.addr, int(daemon.addr.rsplit(":", 1)[1]), daemon.ecs_token(), creds, scan)
    try:
        yield t
    finally:
        try:
            scan.add("refresh token", daemon.read_refresh_token())
        except OSError:
            pass
        rc = daemon.terminate()
        _record(t, rc)
        print(f"\n--- hostile daemon (exit {rc}) log tail ---\n{h.tail(daemon.logs(), 60)}")


def _record(t: Target, rc: int | None) -> None:
    if not t.results:
        return
    by_cat: dict[str, dict[str, int]] = {}
    for o in t.results:
        c = by_cat.setdefault(o.probe.category, {"tried": 0, "refusal_probes": 0, "refused": 0, "controls": 0,
                                                   "controls_served": 0, "unexpected": 0, "known_findings": 0})
        c["tried"] += 1
        if o.probe.refused:
            c["refusal_probes"] += 1
            if o.resp.status is None or o.resp.status >= 400:
                c["refused"] += 1
        else:
            c["controls"] += 1
            if o.resp.status is not None and o.resp.status < 400:
                c["controls_served"] += 1
        if o.errors:
            c["known_findings" if o.probe.name in FINDINGS else "unexpected"] += 1
    tried = sum(c["tried"] for c in by_cat.values())
    refusal = sum(c["refusal_probes"] for c in by_cat.values())
    refused = sum(c["refused"] for c in by_cat.values())
    unexpected = sum(c["unexpected"] for c in by_cat.values())
    leaks = [o.probe.name for o in t.results if any("carries" in e for e in o.errors)
             and o.probe.name not in FINDINGS]
    finding_leaks = [o.probe.name for o in t.results if any("carries" in e for e in o.errors)
                     and o.probe.name in FINDINGS]
    rows = [{"category": k, **v} for k, v in sorted(by_cat.items())]
    log_leaks = t.scan.leaks({"daemon log": t.daemon.logs()})
    findings = [f"{name}: {text}" for name, text in FINDINGS.items()
                if any(o.probe.name == name and o.errors for o in t.results)]
    security_report.record(
        "hostile", "probes", title="Hostile requests (refusal probes + served controls)", tried=tried,
        ok=tried - unexpected - len(findings), unit="probes",
        verdict="fail" if unexpected or leaks or log_leaks else ("finding" if findings else "pass"),
        figures={"probes tried": tried, "refusal probes": refusal, "refused (4xx or closed)": refused,
                 "served controls": tried - refusal, "unexpected outcomes": unexpected,
                 "refusal probes answered with credential bytes (unexpected)": len(leaks),
                 "refusal probes answered with credential bytes (known findings)": len(finding_leaks),
                 "secrets in the daemon log": len(log_leaks), "daemon exit code": rc,
                 **t.figures, "by category": rows},
        findings=findings,
        notes=["Expected statuses are per probe (403 guard, 401 token, 404 path, 405 method, 400/413/431 "
               "limits, closed for timeouts/floods); 'refused' counts 4xx answers and closed connections.",
               "Host matching is case-insensitive by design (LOCALHOST:PORT is served); HTTP's optional "
               "whitespace around header values is trimmed by the parser, so a token followed by a space or a "
               "bare LF is the same token (served)."])


def _chunked(*chunks: bytes) -> bytes:
    """A chunked-encoded body (RFC 9112 §7.1), ending with the last-chunk."""
    return b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"


def _no_body(resp: raw.RawResponse) -> str | None:
    return f"HEAD answered with a body: {resp.body[:80]!r}" if resp.body else None


def _run_all(t: Target, probes: list[Probe]) -> list[str]:
    failures = []
    for p in probes:
        out = t.run(p)
        if out.errors and p.name not in FINDINGS:
            failures.append(f"{p.category}/{p.name}: " + "; ".join(out.errors))
    return failures


# ---------------------------------------------------------------------------
# Request-level probes
# ---------------------------------------------------------------------------

def test_host_browser_proxy_method_and_path_probes(target: Target):
    t = target
    tok = t.token()
    role = t.daemon.get(CREDS_PATH, {TOK: tok}).text
    creds_path = CREDS_PATH + role
    port = t.port
    auth = [(TOK, tok)]
    put = [(TTL, "60")]
    ecs = [("Authorization", t.ecs)]
    probes: list[Probe] = []

    def p(name: str, cat: str, payload: bytes | list[bytes], *expect: int | None, refused: bool = True, **kw):
        probes.append(Probe(name, cat, payload, tuple(expect), refused, **kw))

    # Controls: the same requests, well-formed, are served.
    p("control/imds-creds", "control", t.req("GET", creds_path, auth), 200, refused=False)
    p("control/token-put", "control", t.req("PUT", "/latest/api/token", put), 200, refused=False)
    p("control/ecs-creds", "control", t.req("GET", "/v1/credentials/default", ecs), 200, refused=False)
    p("control/localhost-host", "control", t.req("GET", creds_path, auth, host=f"localhost:{port}"), 200,
      refused=False)
    p("control/ipv6-host", "control", t.req("GET", creds_path, auth, host=f"[::1]:{port}"), 200, refused=False)
    p("control/uppercase-host", "control", t.req("GET", creds_path, auth, host=f"LOCALHOST:{port}"), 200,
      refused=False)
    p("control/absolute-form-allowed", "control", t.req("GET", f"http://127.0.0.1:{port}{creds_path}", auth), 200,
      refused=False)

    # Host / DNS rebinding: everything but the three loopback spellings with our port.
    for name, host in [
        ("attacker-name", "evil.example"), ("attacker-name-port", f"evil.example:{port}"),
        ("attacker-subdomain-of-localhost", f"attacker.localhost:{port}"),
        ("rebind-style-name", f"127.0.0.1.nip.io:{port}"),
        ("ip-no-port", "127.0.0.1"), ("ip-other-port", f"127.0.0.1:{port + 1 if port < 65535 else port - 1}"),
        ("ip-port-80", "127.0.0.1:80"), ("localhost-no-port", "localhost"),
        ("trailing-dot", f"localhost.:{port}"), ("ip-trailing-dot", f"127.0.0.1.:{port}"),
        ("other-loopback-ip", f"127.0.0.2:{port}"), ("short-ip", f"127.1:{port}"),
        ("decimal-ip", f"2130706433:{port}"), ("hex-ip", f"0x7f000001:{port}"),
        ("v4-mapped-v6", f"[::ffff:127.0.0.1]:{port}"), ("zero-ip", f"0.0.0.0:{port}"),
        ("userinfo", f"127.0.0.1:{port}@evil.example"), ("leading-zero-port", f"127.0.0.1:0{port}"),
        ("empty", ""), ("port-only", f":{port}"),
    ]:
        hdrs = [("Host", host)]
        p(f"host/{name}", "host", raw.request_bytes("GET", creds_path, hdrs + auth + [("Connection", "close")]),
          403, 400)
        p(f"host/{name}/token-put", "host",
          raw.request_bytes("PUT", "/latest/api/token", hdrs + put + [("Connection", "close")]), 403, 400)
        p(f"host/{name}/ecs", "host",
          raw.request_bytes("GET", "/v1/credentials/default", hdrs + ecs + [("Connection", "close")]), 403, 400)
    p("host/missing-http11", "host", t.req("GET", creds_path, auth, host=None), 403, 400)
    p("host/missing-http10", "host", t.req("GET", creds_path, auth, host=None, version="HTTP/1.0"), 403, 400)
    p("host/missing-token-put", "host", t.req("PUT", "/latest/api/token", put, host=None), 403, 400)
    # More than one Host line is malformed (RFC 9112 §3.2): 400, whatever the order or values.
    for name, hosts, path, hdrs in [
            ("duplicate-evil-then-good", ["evil.example", t.host], creds_path, auth),
            ("duplicate-good-then-evil", [t.host, "evil.example"], creds_path, auth),
            ("duplicate-same-twice", [t.host, t.host], creds_path, auth),
            ("duplicate-good-then-evil/token-put", [t.host, "evil.example"], "/latest/api/token", put),
            ("duplicate-good-then-evil/ecs", [t.host, "evil.example"], "/v1/credentials/default", ecs)]:
        method = "PUT" if path == "/latest/api/token" else "GET"
        p(f"host/{name}", "host", raw.request_bytes(method, path, [("Host", v) for v in hosts] + hdrs
                                                    + [("Connection", "close")]), 400)
    for name, target_url in [("absolute-evil", f"http://evil.example{creds_path}"),
                             ("absolute-evil-port", f"http://evil.example:{port}{creds_path}"),
                             ("absolute-other-port", f"http://127.0.0.1:{port + 1}{creds_path}"),
                             ("absolute-userinfo", f"http://127.0.0.1:{port}@evil.example{creds_path}"),
                             ("absolute-https-evil", f"https://evil.example{creds_path}")]:
        p(f"host/{name}", "host", t.req("GET", target_url, auth), 403, 400)
    p("host/absolute-evil-token-put", "host", t.req("PUT", "http://evil.example/latest/api/token", put), 403, 400)
    p("host/absolute-allowed-host-evil-header", "host",
      t.req("GET", f"http://127.0.0.1:{port}{creds_path}", auth, host="evil.example"), 403, 400)
    p("host/connect-authority-form", "host", t.req("CONNECT", f"127.0.0.1:{port}", []), 400, 403, 404, 405)
    p("host/asterisk-form", "host", t.req("OPTIONS", "*", []), 400, 403, 404, 405)

    # Browsers: Origin, Sec-Fetch-*, Mozilla user agents (on token PUT, IMDS GET and ECS GET).
    browser = [("origin-evil", ("Origin", "http://evil.example")), ("origin-null", ("Origin", "null")),
               ("origin-self", ("Origin", f"http://127.0.0.1:{port}")),
               ("sec-fetch-site", ("Sec-Fetch-Site", "cross-site")), ("sec-fetch-mode", ("Sec-Fetch-Mode", "cors")),
               ("sec-fetch-dest", ("Sec-Fetch-Dest", "empty")), ("sec-fetch-user", ("Sec-Fetch-User", "?1")),
               ("sec-fetch-uppercase", ("SEC-FETCH-SITE", "same-origin")),
               ("ua-chrome", ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
                                            "Chrome/126.0 Safari/537.36")),
               ("ua-firefox", ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"))]
    for name, hdr in browser:
        p(f"browser/{name}", "browser", t.req("GET", creds_path, auth + [hdr]), 403)
        p(f"browser/{name}/token-put", "browser", t.req("PUT", "/latest/api/token", put + [hdr]), 403)
        p(f"browser/{name}/ecs", "browser", t.req("GET", "/v1/credentials/default", ecs + [hdr]), 403)

    # Proxies / SSRF: forwarding headers on PUT and GET.
    for name, hdr in [("xff", ("X-Forwarded-For", "203.0.113.7")), ("xff-loopback", ("X-Forwarded-For", "127.0.0.1")),
                      ("xff-empty", ("X-Forwarded-For", "")), ("xff-mixed-case", ("x-FORWARDED-for", "1.2.3.4")),
                      ("forwarded", ("Forwarded", "for=203.0.113.7;proto=http")),
                      ("x-real-ip", ("X-Real-IP", "203.0.113.7"))]:
        p(f"proxy/{name}/token-put", "proxy", t.req("PUT", "/latest/api/token", put + [hdr]), 403)
        p(f"proxy/{name}/imds-get", "proxy", t.req("GET", creds_path, auth + [hdr]), 403)
        p(f"proxy/{name}/ecs-get", "proxy", t.req("GET", "/v1/credentials/default", ecs + [hdr]), 403)

    # Methods: only GET/HEAD (and PUT for the token); OPTIONS too is 405 without CORS.
    routes = [(creds_path, auth), ("/latest/api/token", put), ("/v1/credentials/default", ecs),
              ("/v1/status", ecs), ("/healthz", [])]
    for path, hdrs in routes:
        methods = ["POST", "DELETE", "PATCH", "OPTIONS", "TRACE", "PROPFIND", "FOO"]
        methods += ["GET"] if path == "/latest/api/token" else ["PUT"]
        for m in methods:
            p(f"method/{m}{path}", "method", t.req(m, path, hdrs), 405)
    p("method/OPTIONS-preflight", "method",
      t.req("OPTIONS", creds_path, [("Access-Control-Request-Method", "GET"),
                                    ("Access-Control-Request-Headers", TOK)]), 405)
    p("method/OPTIONS-preflight-with-origin", "method",
      t.req("OPTIONS", creds_path, [("Origin", "http://evil.example"), ("Access-Control-Request-Method", "GET")]), 403)
    p("method/HEAD-with-token", "method", t.req("HEAD", creds_path, auth), 200, refused=False, check=_no_body)
    p("method/HEAD-without-token", "method", t.req("HEAD", creds_path, []), 401, check=_no_body)
    p("method/HEAD-evil-host", "method", t.req("HEAD", creds_path, auth, host="evil.example"), 403, check=_no_body)
    p("method/HEAD-ecs-no-token", "method", t.req("HEAD", "/v1/credentials/default", []), 401, check=_no_body)

    # Encoded and dot-segment paths, with a valid token (must not reach another resource) ...
    base = CREDS_PATH
    for name, path in [("dotdot-slash", base + "../"), ("dotdot", base + ".."), ("dot", base + "."),
                       ("enc-dotdot", base + "%2e%2e"), ("enc-dotdot-slash", base + "%2e%2e/"),
                       ("enc-slash-in-role", base + role + "%2F"), ("enc-slash-dotdot", base + role + "%2F..%2F"),
                       ("role-dot-suffix", base + role + "/."), ("dot-role", base + "./" + role),
                       ("double-slash-front", "/" + creds_path), ("double-slash-mid", "/latest//meta-data/iam/"
                                                                                     "security-credentials/" + role),
                       ("nul", base + role + "%00"), ("upper-role", base + role.upper()),
                       ("backslash", base.rstrip("/") + "%5C" + role), ("semicolon", base + role + ";x"),
                       ("token-then-status", "/latest/api/token/../../v1/status"),
                       ("long-path", "/latest/" + "a" * 8000)]:
        p(f"path/{name}", "path", t.req("GET", path, auth), 404, 400)
    # ... and without one (no path trick may skip authentication).
    for name, path in [("no-token-role", creds_path), ("no-token-enc-role", base + "%" + f"{ord(role[0]):02x}" + role[1:]),
                       ("no-token-trailing-slash", creds_path + "/"), ("no-token-double-slash", "/" + creds_path),
                       ("no-token-dotdot", base + "../" + role), ("no-token-extended", "/latest/meta-data/iam/"
                                                                                      "security-credentials-extended/" + role)]:
        p(f"path/{name}", "path", t.req("GET", path, []), 401, 404, 400)
    for name, path in [("ecs-enc-profile", "/v1/credentials/%64efault"), ("ecs-dotdot", "/v1/credentials/../credentials/default"),
                       ("ecs-enc-slash", "/v1/credentials/..%2Fdefault"), ("ecs-double-slash", "/v1//credentials/default")]:
        p(f"path/{name}/no-token", "path", t.req("GET", path, []), 401, 404, 400)
    p("path/ecs-enc-slash/with-token", "path", t.req("GET", "/v1/credentials/..%2Fdefault", ecs), 404, 400)
    p("path/ecs-dotdot/with-token", "path", t.req("GET", "/v1/credentials/default/..", ecs), 404, 400)
    # Percent-encoding an unreserved character is the same URL (RFC 3986 §6.2.2.2): served with a token.
    p("path/equivalent-encoding-with-token", "control", t.req("GET", "/v1/credentials/%64efault", ecs), 200, 404,
      refused=False)
    p("path/raw-utf8", "path", t.req("GET", "/latest/meta-data/iam/security-credentials/\u00e9".encode().decode("latin-1"),
                                     auth), 400, 404)

    failures = _run_all(t, probes)
    assert not failures, f"{len(failures)} probes misbehaved:\n" + "\n".join(failures)


def test_imds_token_abuse(target: Target):
    t = target
    role = t.daemon.get(CREDS_PATH, {TOK: t.token()}).text
    creds_path = CREDS_PATH + role
    probes: list[Probe] = []

    def p(name, payload, *expect, refused=True, **kw):
        probes.append(Probe(name, "imds-token", payload, tuple(expect), refused, **kw))

    for name, ttl in [("ttl-0", "0"), ("ttl-21601", "21601"), ("ttl-negative", "-1"), ("ttl-non-numeric", "abc"),
                      ("ttl-empty", ""), ("ttl-float", "60.0"), ("ttl-exponent", "1e3"), ("ttl-hex", "0x10"),
                      ("ttl-overflow", "99999999999999999999"), ("ttl-u32-wrap", str(2 ** 32 + 60)),
                      ("ttl-two-values", "60, 60")]:
        p(f"put/{name}", t.req("PUT", "/latest/api/token", [(TTL, ttl)]), 400)
    p("put/ttl-missing", t.req("PUT", "/latest/api/token", []), 400)
    p("put/versioned-path", t.req("PUT", "/2021-03-23/api/token", [(TTL, "60")]), 403)
    p("put/ttl-21600", t.req("PUT", "/latest/api/token", [(TTL, "21600")]), 200, refused=False)
    p("put/ttl-1", t.req("PUT", "/latest/api/token", [(TTL, "1")]), 200, refused=False)

    forged = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    good = t.token()
    for name, value in [("forged", forged), ("empty", ""), ("prefix", good[:-1]), ("suffix-added", good + "A"),
                        ("case-flipped", good.swapcase()), ("padded-base64", good + "="),
                        ("ecs-token-as-imds", t.ecs), ("space-inside", good[:20] + " " + good[20:])]:
        p(f"get/{name}", t.req("GET", creds_path, [(TOK, value)]), 401)
    p("get/no-token-v1-disabled", t.req("GET", creds_path, []), 401)
    p("get/token-in-query", t.req("GET", f"{creds_path}?{TOK}={good}", []), 401)
    p("get/token-wrong-header", t.req("GET", creds_path, [("X-aws-ec2-metadata-token-ttl-seconds", good)]), 401)
    p("get/two-tokens-forged-first", raw.request_bytes("GET", creds_path, [("Host", t.host), (TOK, forged), (TOK, good),
                                                                           ("Connection", "close")]), 401, 400)

    # Expired: TTL 1 then wait.
    short = t.token(1)
    time.sleep(2.1)
    p("get/expired-ttl-1", t.req("GET", creds_path, [(TOK, short)]), 401)

    # Evicted: the least recently used when the table (4,096) is full of live
    # tokens. `first` is never used again; `kept` is used half-way through a
    # flood of 4,096 more (as a long-lived SDK process reuses its token), so
    # it outlives tokens issued after it.
    first = t.token(21600)
    kept = t.token(21600)
    started = time.monotonic()
    issued = _issue_tokens(t, 2048)
    # Run now, not with the probes at the end: the use must fall mid-flood.
    mid = t.run(Probe("get/used-token-mid-flood", "imds-token", t.req("GET", creds_path, [(TOK, kept)]), (200,), False))
    issued += _issue_tokens(t, 2048)
    issue_seconds = time.monotonic() - started
    p("get/evicted-after-4096-more", t.req("GET", creds_path, [(TOK, first)]), 401)
    p("get/used-token-survives-flood", t.req("GET", creds_path, [(TOK, kept)]), 200, refused=False)
    p("get/newest-after-flood", t.req("GET", creds_path, [(TOK, issued[-1])]), 200, refused=False)
    p("get/second-newest-after-flood", t.req("GET", creds_path, [(TOK, issued[-2])]), 200, refused=False)
    t.figures["IMDS tokens issued in the eviction flood"] = len(issued) + 2
    t.figures["seconds to issue them"] = round(issue_seconds, 2)

    failures = _run_all(t, probes) + [f"imds-token/{mid.probe.name}: {e}" for e in mid.errors]
    assert not failures, f"{len(failures)} probes misbehaved:\n" + "\n".join(failures)


def _issue_tokens(t: Target, n: int) -> list[str]:
    """n PUT /latest/api/token on one keep-alive connection (bounded)."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", t.port, timeout=10)
    out = []
    try:
        for _ in range(n):
            conn.request("PUT", "/latest/api/token", headers={TTL: "21600"})
            resp = conn.getresponse()
            body = resp.read().decode()
            assert resp.status == 200, f"token PUT {resp.status} {body}"
            out.append(body)
    finally:
        conn.close()
    for tok in out:
        t.scan.add("IMDS token", tok)
    return out


def test_ecs_token_variants_and_status(target: Target):
    t = target
    tok = t.ecs
    imds_tok = t.token()
    probes: list[Probe] = []

    def p(name, payload, *expect, refused=True, **kw):
        probes.append(Probe(name, "ecs-token", payload, tuple(expect), refused, **kw))

    path = "/v1/credentials/default"
    variants = [("empty", ""), ("upper", tok.upper()), ("lower", tok.lower()), ("swapcase", tok.swapcase()),
                ("bearer", "Bearer " + tok), ("bearer-lower", "bearer " + tok), ("basic", "Basic " + tok),
                ("prefix", tok[:-1]), ("suffix-added", tok + "x"), ("space-inside", tok[:10] + " " + tok[10:]),
                ("newline-escaped", tok + "\\n"), ("quoted", f'"{tok}"'), ("imds-token", imds_tok),
                ("random-same-length", base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")),
                ("repeated", tok + tok), ("first-half", tok[: len(tok) // 2])]
    for name, value in variants:
        p(f"creds/{name}", t.req("GET", path, [("Authorization", value)]), 401)
        p(f"creds-default-route/{name}", t.req("GET", "/v1/credentials", [("Authorization", value)]), 401)
    p("creds/missing", t.req("GET", path, []), 401)
    p("creds/other-header", t.req("GET", path, [("X-Authorization", tok)]), 401)
    p("creds/proxy-authorization", t.req("GET", path, [("Proxy-Authorization", tok)]), 401)
    p("creds/token-in-query", t.req("GET", f"{path}?Authorization={tok}", []), 401)
    p("creds/wrong-then-right", raw.request_bytes("GET", path, [("Host", t.host), ("Authorization", "wrong"),
                                                                ("Authorization", tok), ("Connection", "close")]), 401, 400)
    # A bare LF ends the header line and trailing whitespace is optional whitespace: both are the same token.
    p("creds/trailing-bare-lf", (f"GET {path} HTTP/1.1\r\nHost: {t.host}\r\nAuthorization: {tok}\n"
                                 f"Connection: close\r\n\r\n").encode(), 200, 400, refused=False)
    p("creds/trailing-space", t.req("GET", path, [("Authorization", tok + " ")]), 200, refused=False)
    p("creds/obs-fold-continuation", (f"GET {path} HTTP/1.1\r\nHost: {t.host}\r\nAuthorization: {tok}\r\n x\r\n"
                                      f"Connection: close\r\n\r\n").encode(), 400, 401)
    # Profiles: an unauthenticated caller cannot tell existing from missing profiles.
    p("profile/unknown-with-token", t.req("GET", "/v1/credentials/nosuchprofile", [("Authorization", tok)]), 404)
    p("profile/unknown-no-token", t.req("GET", "/v1/credentials/nosuchprofile", []), 401)
    # /v1/status needs the ECS token.
    for name, hdrs in [("missing", []), ("empty", [("Authorization", "")]), ("bearer", [("Authorization", "Bearer " + tok)]),
                       ("imds-token", [("Authorization", imds_tok)]), ("imds-header", [(TOK, imds_tok)])]:
        p(f"status/{name}", t.req("GET", "/v1/status", hdrs), 401)
    p("status/with-token", t.req("GET", "/v1/status", [("Authorization", tok)]), 200, refused=False)
    p("health/healthz", t.req("GET", "/healthz", []), 200, refused=False)
    p("health/readyz", t.req("GET", "/readyz", []), 200, refused=False)

    failures = _run_all(t, probes)
    # Responses that are served by design must still carry no secret unless they are credentials.
    for o in t.results:
        if o.probe.name.startswith(("status/with-token", "health/")):
            for name, needle in t.credential_needles()[1:]:
                if needle.encode() in o.resp.raw:
                    failures.append(f"{o.probe.name}: carries the {name}")
            if t.creds["AccessKeyId"].encode() in o.resp.raw:
                failures.append(f"{o.probe.name}: carries the full access key id")
    unknown = [o for o in t.results if o.probe.name == "profile/unknown-no-token"][0]
    known = [o for o in t.results if o.probe.name == "creds/missing"][0]
    if unknown.resp.body != known.resp.body:
        failures.append(f"401 bodies differ between unknown and known profiles: {unknown.resp} / {known.resp}")
    assert not failures, f"{len(failures)} probes misbehaved:\n" + "\n".join(failures)


def test_oversize_and_slow_clients(target: Target):
    t = target
    put = [(TTL, "60")]
    probes: list[Probe] = []

    def p(name, payload, *expect, refused=True, **kw):
        probes.append(Probe(name, "size-time", payload, tuple(expect), refused, **kw))

    p("size/header-17k", t.req("GET", "/healthz", [("X-Big", "a" * 17000)]), 431, CLOSED)
    p("size/many-headers-20k", t.req("GET", "/healthz", [(f"X-H{i}", "b" * 100) for i in range(200)]), 431, CLOSED)
    p("size/long-request-line-20k", t.req("GET", "/healthz?" + "q" * 20000, []), 431, 414, 400, CLOSED)
    p("size/header-15k", t.req("GET", "/healthz", [("X-Big", "a" * 15000)]), 200, refused=False)
    p("size/body-1025", t.req("PUT", "/latest/api/token", put, body=b"x" * 1025), 413)
    p("size/body-64k", t.req("PUT", "/latest/api/token", put, body=b"x" * 65536), 413, CLOSED)
    p("size/declared-1tb", raw.request_bytes("PUT", "/latest/api/token",
                                             [("Host", t.host), *put, ("Content-Length", str(10 ** 12)),
                                              ("Connection", "close")]), 413)
    p("size/declared-body-on-get", raw.request_bytes("GET", "/healthz", [("Host", t.host), ("Content-Length", "5000"),
                                                                         ("Connection", "close")]), 413)
    p("size/bad-content-length", raw.request_bytes("PUT", "/latest/api/token",
                                                   [("Host", t.host), *put, ("Content-Length", "-1"),
                                                    ("Connection", "close")]), 400)
    p("size/body-1024", t.req("PUT", "/latest/api/token", put, body=b"x" * 1024), 200, refused=False)
    chunk = b"800\r\n" + b"x" * 0x800 + b"\r\n0\r\n\r\n"
    chunked_put = raw.request_bytes("PUT", "/latest/api/token", [("Host", t.host), *put, ("Transfer-Encoding", "chunked"),
                                                                 ("Connection", "close")])
    # No Content-Length: the 1 KiB limit applies as the body is read (the handler reads it).
    p("size/chunked-body-2k-on-token-put", chunked_put + chunk, 413)
    p("size/chunked-body-1025-in-two-chunks-on-token-put", chunked_put + _chunked(b"x" * 600, b"x" * 425), 413)
    p("size/chunked-body-1024-on-token-put", chunked_put + _chunked(b"x" * 512, b"x" * 512), 200, refused=False)
    p("size/chunked-body-2k-on-get", raw.request_bytes("GET", "/healthz", [("Host", t.host), ("Transfer-Encoding", "chunked"),
                                                                          ("Connection", "close")]) + chunk, 413, 200, CLOSED,
      refused=False)
    failures = _run_all(t, probes)

    # Slow clients: nothing sent; a head dribbled one byte every 0.4 s; an idle keep-alive connection.
    # The three run at once (each takes ~5 s).
    import concurrent.futures

    slow = {}
    head = t.req("GET", "/healthz", [("X-Pad", "p" * 30)])
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        f_nothing = pool.submit(raw.exchange, t.addr, b"", timeout=15)
        f_dribble = pool.submit(raw.exchange, t.addr, [head[i:i + 1] for i in range(len(head))], pause=0.4,
                                timeout=15)
        f_idle = pool.submit(_idle_keepalive_close, t, 15)
        nothing, dribble, idle = f_nothing.result(30), f_dribble.result(30), f_idle.result(30)
    slow["silent connection closed after s"] = round(nothing.closed_after, 2)
    slow["slowloris (1 byte / 0.4 s) closed after s"] = round(dribble.closed_after, 2)
    slow["idle keep-alive closed after s"] = round(idle, 2) if idle is not None else None
    for name, r, closed_after in [("silent", nothing, nothing.closed_after),
                                  ("slowloris", dribble, dribble.closed_after), ("idle-keepalive", None, idle)]:
        t.results.append(Outcome(Probe(f"slow/{name}", "size-time", b"", (CLOSED,)),
                                 r or raw.RawResponse(None, "", [], b"", b"", closed_after or 0.0)))
        if r is not None and r.status is not None:
            failures.append(f"slow/{name}: answered {r}")
        if closed_after is None or not 4.0 <= closed_after <= 7.5:
            failures.append(f"slow/{name}: closed after {closed_after} s, expected ~5 s (header read timeout)")
    t.figures.update(slow)
    assert not failures, f"{len(failures)} probes misbehaved:\n" + "\n".join(failures)


def _idle_keepalive_close(t: Target, limit: float) -> float | None:
    s = socket.create_connection(("127.0.0.1", t.port), timeout=limit)
    try:
        s.sendall(raw.request_bytes("GET", "/healthz", [("Host", t.host)]))
        data = b""
        while b"ok" not in data:
            chunk = s.recv(4096)
            if not chunk:
                return None
            data += chunk
        start = time.monotonic()
        try:
            while s.recv(4096):
                pass
        except (socket.timeout, ConnectionResetError):
            if time.monotonic() - start >= limit - 0.5:
                return None
        return time.monotonic() - start
    finally:
        s.close()


# ---------------------------------------------------------------------------
# Connection flood
# ---------------------------------------------------------------------------

# The daemon's cap: server::connection_cap() = the soft RLIMIT_NOFILE it
# raised at start, minus 256 kept for files and upstream, within 64..=4096.
MAX_CONNECTIONS, RESERVED_FDS = 4096, 256
OVER_CAP = 100  # connections beyond the cap: they must queue, not be reset


def _daemon_cap(pid: int) -> tuple[int, int]:
    """(soft descriptor limit, connection cap) of the running daemon."""
    with open(f"/proc/{pid}/limits") as f:
        soft = next(int(line.split()[3]) for line in f if line.startswith("Max open files"))
    return soft, max(64, min(MAX_CONNECTIONS, soft - RESERVED_FDS))


def test_connection_flood_waits_at_the_cap_and_recovers(target: Target):
    """Beyond the connection cap, new clients wait in the listen queue and are
    served once slots free; nothing is reset (an SDK would back off for
    minutes after one failed fetch). Idle holders are closed by the header
    timeout, so a flood delays service by at most that long."""
    import resource

    t = target
    soft, cap = _daemon_cap(t.daemon.proc.pid)
    flood = cap + OVER_CAP
    mine_soft, mine_hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if mine_hard != resource.RLIM_INFINITY and mine_hard < flood + 256:
        pytest.skip(f"this process may open only {mine_hard} descriptors; the flood needs {flood + 256}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(mine_soft, flood + 256), mine_hard))
    socks: list[socket.socket] = []
    figures: dict[str, Any] = {"daemon soft RLIMIT_NOFILE (raised at start)": soft, "connection cap": cap}
    try:
        started = time.monotonic()
        socks = _connect_many(t.port, flood, timeout=4, batch=256)
        figures["connections opened"] = len(socks)
        figures["seconds to open"] = round(time.monotonic() - started, 2)
        time.sleep(0.5)
        reset = _closed_by_peer(socks)
        figures["closed at once by the daemon"] = len(reset)
        queued = _accept_queue(t.port)
        figures["waiting in the listen queue (ss Recv-Q)"] = queued
        fds = len(os.listdir(f"/proc/{t.daemon.proc.pid}/fd"))
        figures["daemon descriptors while full"] = fds
        # A new client while every slot is taken: queued, then served when the
        # idle holders hit the 5 s header timeout.
        during = raw.exchange(t.addr, t.req("GET", "/healthz", []), timeout=15)
        full_for = time.monotonic() - started
        figures["new request while full"] = f"{during.status} after {during.closed_after:.2f} s"
    finally:
        for s in socks:
            s.close()
    time.sleep(0.3)
    after = raw.exchange(t.addr, t.req("GET", CREDS_PATH, [(TOK, t.token())]), timeout=5)
    figures["after closing everything"] = after.status
    figures["listen backlog (ss Send-Q)"] = _listen_backlog(t.port)
    t.figures.update({f"flood: {k}": v for k, v in figures.items()})
    t.results.append(Outcome(Probe("flood/over-cap-waits", "flood", b"", (200,), refused=False), during))
    t.results.append(Outcome(Probe("flood/after", "flood", b"", (200,), refused=False), after))

    assert len(socks) == flood, f"could only open {len(socks)} of {flood} connections"
    assert not reset, f"{len(reset)} connections were closed at once; over the cap they must wait"
    assert queued is None or OVER_CAP - 5 <= queued <= OVER_CAP + 5, \
        f"{queued} connections waiting in the listen queue; expected {OVER_CAP} over a cap of {cap}"
    assert fds <= cap + RESERVED_FDS, f"the daemon holds {fds} descriptors with a cap of {cap}"
    assert during.status == 200, f"a client queued behind a full daemon was not served: {during}"
    assert during.closed_after >= 1.0 or full_for > 5.5, \
        f"served after {during.closed_after:.2f} s while {cap} connections were held: the cap did not bind"
    assert after.status == 200, f"after the flood: {after}"
    t.daemon._check_alive()


def _listen_queue(port: int, column: int) -> int | None:
    """Our listener's row in `ss -ltn`: column 1 (Recv-Q) is the connections
    waiting to be accepted, column 2 (Send-Q) the listen backlog."""
    if not shutil.which("ss"):
        return None
    out = subprocess.run(["ss", "-ltnH", f"( sport = :{port} )"], capture_output=True, text=True, timeout=10).stdout
    try:
        return int(out.split()[column])
    except (IndexError, ValueError):
        return None


def _accept_queue(port: int) -> int | None:
    return _listen_queue(port, 1)


def _listen_backlog(port: int) -> int | None:
    return _listen_queue(port, 2)


def _connect_many(port: int, n: int, timeout: float, batch: int = 64) -> list[socket.socket]:
    """Open n connections quickly: non-blocking connects in batches, each batch
    given a moment to be accepted (the daemon's listen backlog is 1024; SYNs
    beyond it are dropped and retried by the kernel a second later)."""
    import selectors

    done: list[socket.socket] = []
    deadline = time.monotonic() + timeout
    for first in range(0, n, batch):
        sel = selectors.DefaultSelector()
        for _ in range(min(batch, n - first)):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            sel.register(s, selectors.EVENT_WRITE)
        while sel.get_map() and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=0.2):
                s = key.fileobj
                sel.unregister(s)
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                    s.setblocking(True)
                    done.append(s)
                else:
                    s.close()
        for key in list(sel.get_map().values()):
            key.fileobj.close()
        sel.close()
        time.sleep(0.03)
    return done


def _closed_by_peer(socks: list[socket.socket]) -> list[socket.socket]:
    closed = []
    for s in socks:
        s.setblocking(False)
        try:
            if s.recv(1) == b"":
                closed.append(s)
        except BlockingIOError:
            pass
        except OSError:
            closed.append(s)
        finally:
            s.setblocking(True)
    return closed


# ---------------------------------------------------------------------------
# Peers that are not loopback
# ---------------------------------------------------------------------------

VETH_NET = "198.18.77"  # RFC 2544 benchmarking range, only ever on our own veth pair


def _netns_possible() -> str | None:
    if os.geteuid() != 0:
        return "not root"
    if not shutil.which("ip"):
        return "no ip(8)"
    return None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=check)


_NS_CONNECT = r"""
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(); s.settimeout(3)
try:
    s.connect((host, port))
except OSError as e:
    print("REFUSED", type(e).__name__, e.errno)
    raise SystemExit(0)
answer = b""
if sys.argv[3]:
    try:
        s.sendall(sys.argv[3].encode('latin-1'))
        answer = s.recv(200)[:40]
    except OSError as e:
        answer = repr(e).encode()
print("CONNECTED", answer)
"""


def test_non_loopback_peers(target: Target):
    t = target
    tok = t.token()
    role = t.daemon.get(CREDS_PATH, {TOK: tok}).text
    request = t.req("GET", CREDS_PATH + role, [(TOK, tok)])
    tried: list[dict[str, Any]] = []
    failures: list[str] = []

    # 127.0.0.2 as the *source*: 127/8 is loopback by design, so this peer is served.
    r = raw.exchange(t.addr, request, source="127.0.0.2", timeout=5)
    tried.append({"what": "peer 127.0.0.2 → 127.0.0.1:PORT", "result": r.status, "expected": "200 (127/8 is loopback)"})
    if r.status != 200:
        failures.append(f"peer 127.0.0.2: {r}")
    # 127.0.0.2 as the *destination*: the daemon listens on 127.0.0.1 only.
    r2 = raw.exchange(f"127.0.0.2:{t.port}", request, timeout=5)
    tried.append({"what": "127.0.0.2:PORT (not the bound address)", "result": r2.error or r2.status,
                  "expected": "connection refused"})
    if r2.status is not None:
        failures.append(f"127.0.0.2:{t.port} answered: {r2}")

    why_not = _netns_possible()
    netns_done = False
    if why_not is None:
        ns = f"cbhostile{os.getpid() % 100000}"
        host_if, ns_if = f"cbh{os.getpid() % 100000}", f"cbn{os.getpid() % 100000}"
        host_ip, ns_ip = f"{VETH_NET}.1", f"{VETH_NET}.2"
        created = False
        try:
            add = _ip("netns", "add", ns, check=False)
            if add.returncode != 0:
                why_not = f"ip netns add failed: {add.stderr.strip()}"
            else:
                created = True
                _ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
                _ip("link", "set", ns_if, "netns", ns)
                _ip("addr", "add", f"{host_ip}/30", "dev", host_if)
                _ip("link", "set", host_if, "up")
                _ip("-n", ns, "addr", "add", f"{ns_ip}/30", "dev", ns_if)
                _ip("-n", ns, "link", "set", ns_if, "up")
                _ip("-n", ns, "link", "set", "lo", "up")
                # Control: a listener of ours on the host end of the veth is reachable from the namespace.
                ctl = socket.socket()
                ctl.bind((host_ip, 0))
                ctl.listen(4)
                ctl_port = ctl.getsockname()[1]
                try:
                    out = _ns_connect(ns, host_ip, ctl_port, "")
                finally:
                    ctl.close()
                tried.append({"what": f"control: netns → {host_ip}:{ctl_port} (test listener)", "result": out,
                              "expected": "CONNECTED"})
                if not out.startswith("CONNECTED"):
                    failures.append(f"netns control connection failed ({out}): the veth setup does not work")
                for dst in (host_ip, "127.0.0.1"):
                    out = _ns_connect(ns, dst, t.port, request.decode("latin-1"))
                    tried.append({"what": f"netns peer {ns_ip} → {dst}:PORT", "result": out,
                                  "expected": "REFUSED (nothing listens there for that peer)"})
                    if not out.startswith("REFUSED"):
                        failures.append(f"daemon reachable from the namespace via {dst}: {out}")
                # The guard itself: a non-loopback *source* address talking to 127.0.0.1 on this host.
                r3 = raw.exchange(t.addr, request, source=host_ip, timeout=5)
                tried.append({"what": f"peer {host_ip} (veth address) → 127.0.0.1:PORT", "result": r3.status or r3.error,
                              "expected": "403 (guard: loopback peers only) or no connection"})
                if r3.status not in (403, None):
                    failures.append(f"non-loopback source {host_ip} was answered: {r3}")
                if r3.status == 200 or t.creds["SecretAccessKey"].encode() in r3.raw:
                    failures.append(f"non-loopback source {host_ip} got credentials")
                netns_done = True
        finally:
            if created:
                _ip("netns", "del", ns, check=False)
            _ip("link", "del", host_if, check=False)
    t.figures["non-loopback peers"] = tried
    t.figures["network namespace used"] = netns_done if why_not is None else f"no ({why_not})"
    for row in tried:
        ok = (row["expected"].startswith("200") and row["result"] == 200) or \
             (not row["expected"].startswith("200") and row["result"] != 200)
        t.results.append(Outcome(Probe(f"peer/{row['what']}", "peer", b"", (),
                                       refused=not row["expected"].startswith(("200", "CONNECTED"))),
                                 raw.RawResponse(_peer_status(row["result"]), "", [], b"", b"", 0.0),
                                 [] if ok else ["unexpected"]))
    assert not failures, "\n".join(failures)


def _peer_status(result: Any) -> int | None:
    if isinstance(result, int):
        return result
    return 200 if str(result).startswith("CONNECTED") else None


def _ns_connect(ns: str, host: str, port: int, payload: str) -> str:
    proc = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", _NS_CONNECT, host, str(port), payload],
                          capture_output=True, text=True, timeout=15)
    return (proc.stdout.strip() or proc.stderr.strip())[:200]


# ---------------------------------------------------------------------------
# Formerly known findings (now plain assertions); secrets in the log last
# ---------------------------------------------------------------------------

def test_duplicate_host_headers_are_a_bad_request(target: Target):
    """Formerly a finding (the first Host was obeyed, the second ignored: 200).
    Control first: the same request with one Host line is served."""
    t = target
    tok = t.token()
    role = t.daemon.get(CREDS_PATH, {TOK: tok}).text
    path = CREDS_PATH + role

    def get(*hosts: str) -> raw.RawResponse:
        return raw.exchange(t.addr, raw.request_bytes("GET", path, [*(("Host", v) for v in hosts), (TOK, tok),
                                                                    ("Connection", "close")]))

    control = get(t.host)
    assert control.status == 200, f"control (one Host line): {control}"
    for hosts in ([t.host, "evil.example"], ["evil.example", t.host], [t.host, t.host]):
        r = get(*hosts)
        assert r.status == 400, f"Host lines {hosts}: {r}"
        for name, needle in t.credential_needles():
            assert needle.encode() not in r.raw, f"Host lines {hosts}: the response carries the {name}"


def test_chunked_oversize_body_on_token_put_is_413(target: Target):
    """Formerly a finding (a chunked 2 KiB body on the token PUT was ignored: 200
    and a token). Control: the same chunked request with 1024 bytes gets a token."""
    t = target
    head = raw.request_bytes("PUT", "/latest/api/token", [("Host", t.host), (TTL, "60"),
                                                           ("Transfer-Encoding", "chunked"), ("Connection", "close")])
    ok = raw.exchange(t.addr, head + _chunked(b"y" * 1024))
    assert ok.status == 200 and ok.body.strip(), f"control (chunked, 1024 bytes): {ok}"
    t.scan.add("IMDS token", ok.body.decode().strip())
    for body in (_chunked(b"x" * 0x800), _chunked(*[b"x" * 100] * 11)):
        r = raw.exchange(t.addr, head + body)
        assert r.status == 413, f"chunked body of {len(body)} encoded bytes (over 1024 decoded): {r}"


def test_no_secret_in_the_log_after_the_probes(target: Target):
    t = target
    t.scan.add("refresh token", t.daemon.read_refresh_token())
    logs = t.daemon.logs()
    leaks = t.scan.leaks({"daemon log": logs})
    n = sum(len(v) for v in t.scan.values.values())
    security_report.record(
        "secrets", "hostile-probes", title="No secret in the log of the probed daemon (RUST_LOG=debug)",
        tried=n, ok=n - len(leaks), unit="secret values", verdict="fail" if leaks else "pass",
        figures={"secret values searched": n, "kinds": {k: len(v) for k, v in t.scan.values.items()},
                 "log lines scanned": logs.count("\n"), "leaks": len(leaks)})
    assert not leaks, "\n".join(leaks)
    assert "panicked" not in t.daemon.logs()
    t.daemon._check_alive()
