"""A small fault-injecting HTTP proxy for the adversarial e2e tests (issue 4).

``FaultProxy(upstream_url).start()`` listens on 127.0.0.1 (ephemeral port) and
forwards every request to one upstream (moto or oidc-provider), one request
per connection (it always answers ``Connection: close``). A test switches its
behaviour at run time with ``set_fault(kind, ...)`` / ``heal()``:

==============  ==============================================================
``pass``        forward unchanged (the default)
``latency``     wait ``delay`` seconds, then forward
``status``      answer ``status`` (default 503) with a short body, no forward
``throttle``    AWS-style throttling: JSON protocols (``X-Amz-Target``) get
                ``400 {"__type":"ThrottlingException",...}``, query/XML
                protocols (STS) ``400 <ErrorResponse>…<Code>Throttling</Code>``,
                anything else (the IdP) ``429 {"error":"slow_down"}``
``reset``       read the request, then close with a TCP RST
``blackhole``   read the request and never answer (the connection is held
                until the client gives up or the proxy stops)
``malformed``   ``200`` with a truncated body of the right content type
``html``        ``500`` with an HTML body (what moto does on an internal error)
``invalid_grant``  ``400 {"error":"invalid_grant"}`` (OAuth2 token endpoint)
``empty_secret``   forward, then blank the secret key in the response
``expired``        forward, then move the credentials' Expiration to 2001
==============  ==============================================================

A fault applies only to requests matching its ``match`` predicate (default:
all). Every request is logged as an :class:`Entry` with monotonic timestamps
(``time.monotonic()``, same clock as the tests), the fault applied, the
status, and the raw bodies (kept in memory for the secret scanner).
``on_response`` (if set) is called after a response was written to the client,
from the proxy thread: the crash test uses it to kill the daemon right then.

Everything binds 127.0.0.1; upstreams must be http://127.0.0.1 too.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import socketserver
import struct
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Callable

FAULT_KINDS = ("pass", "latency", "status", "throttle", "reset", "blackhole", "malformed", "html",
               "invalid_grant", "empty_secret", "expired")
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization",
              "te", "trailer", "trailers", "transfer-encoding", "upgrade", "content-length", "host"}
MAX_BODY = 1 << 20


@dataclass
class Fault:
    kind: str = "pass"
    status: int = 503
    delay: float = 0.0
    match: Callable[["Entry"], bool] | None = None

    def applies(self, entry: "Entry") -> bool:
        return self.kind != "pass" and (self.match is None or self.match(entry))


@dataclass
class Entry:
    """One request seen by the proxy."""

    seq: int
    t_in: float  # request fully read
    method: str
    path: str
    headers: dict[str, str]  # lower-cased
    req_body: bytes
    action: str | None  # X-Amz-Target suffix, form Action, or OAuth grant_type
    fault: str = "pass"
    status: int | None = None
    t_upstream: float | None = None  # upstream response received (forwarded requests)
    t_out: float | None = None  # response written to the client (or connection reset)
    t_client_gone: float | None = None  # black-holed: when the client closed
    delivered: bool = False
    error: str | None = None
    resp_body: bytes = b""
    resp_headers: dict[str, str] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.t_out is not None or self.t_client_gone is not None or self.error is not None

    @property
    def failed(self) -> bool:
        """Did the client get anything but a good upstream answer?"""
        return self.fault != "pass" and self.fault != "latency"

    def form(self) -> dict[str, str]:
        try:
            return {k: v[-1] for k, v in urllib.parse.parse_qs(self.req_body.decode("utf-8", "replace")).items()}
        except ValueError:
            return {}

    def resp_json(self) -> Any:
        try:
            return json.loads(self.resp_body)
        except ValueError:
            return None


def _action(method: str, path: str, headers: dict[str, str], body: bytes) -> str | None:
    target = headers.get("x-amz-target")
    if target:
        return target.rsplit(".", 1)[-1]
    try:
        form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
    except ValueError:
        form = {}
    if "Action" in form:
        return form["Action"][-1]
    if "grant_type" in form:
        return form["grant_type"][-1]
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)
    if "Action" in query:
        return query["Action"][-1]
    return None


def _protocol(entry: Entry) -> str:
    if "x-amz-target" in entry.headers:
        return "json"
    if entry.action and entry.action[0].isupper():
        return "xml"
    return "oauth"


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False
    request_queue_size = 128


class FaultProxy:
    def __init__(self, upstream: str, name: str = "proxy", max_hold: float = 120.0):
        parts = urllib.parse.urlsplit(upstream)
        if parts.scheme != "http" or parts.hostname not in ("127.0.0.1", "localhost"):
            raise ValueError(f"upstream must be http on loopback: {upstream}")
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port or 80
        self.name = name
        self.max_hold = max_hold
        self.url = ""
        self.on_response: Callable[[Entry], None] | None = None
        self._fault = Fault()
        self._lock = threading.Lock()
        self._entries: list[Entry] = []
        # Connections accepted whose request is not read yet (not entries yet):
        # a killed client's request may still be on its way to an entry.
        self._reading: set[int] = set()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.fault_log: list[tuple[float, str]] = []  # (t, kind) each time the fault changes

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> "FaultProxy":
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:  # noqa: D401 - socketserver API
                with proxy._lock:
                    proxy._reading.add(id(self.request))
                try:
                    proxy._handle(self.request)
                finally:
                    with proxy._lock:
                        proxy._reading.discard(id(self.request))

        self._server = _Server(("127.0.0.1", 0), Handler)
        host, port = self._server.server_address[:2]
        self.url = f"http://{host}:{port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"faultproxy-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- control --------------------------------------------------------------

    def set_fault(self, kind: str, *, status: int = 503, delay: float = 0.0,
                  match: Callable[[Entry], bool] | None = None) -> float:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}")
        with self._lock:
            self._fault = Fault(kind, status, delay, match)
            now = time.monotonic()
            self.fault_log.append((now, kind))
        return now

    def heal(self) -> float:
        return self.set_fault("pass")

    @property
    def fault(self) -> Fault:
        with self._lock:
            return self._fault

    # -- observations ---------------------------------------------------------

    def entries(self, since: float | None = None, until: float | None = None,
                where: Callable[[Entry], bool] | None = None) -> list[Entry]:
        with self._lock:
            items = list(self._entries)
        return [e for e in items
                if (since is None or e.t_in >= since) and (until is None or e.t_in < until)
                and (where is None or where(e))]

    def count(self, **kw: Any) -> int:
        return len(self.entries(**kw))

    def in_flight(self) -> list[Entry]:
        """Requests whose exchange is still going on (black-holed ones excluded)."""
        return [e for e in self.entries() if not e.done and e.fault != "blackhole"]

    def wait_idle(self, timeout: float = 10.0, settle: float = 0.05) -> bool:
        """Wait until no exchange is in flight. ``settle`` first lets a request
        that a just-killed client already sent (still in the accept queue or
        being read, so not an entry yet) reach the proxy."""
        time.sleep(settle)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                reading = bool(self._reading)
            if not self.in_flight() and not reading:
                return True
            time.sleep(0.005)
        return False

    # -- the proxy itself -----------------------------------------------------

    def _read_request(self, sock: socket.socket) -> tuple[str, str, dict[str, str], list[tuple[str, str]], bytes] | None:
        sock.settimeout(30)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                return None
            buf += chunk
            if len(buf) > 256 * 1024:
                return None
        head, rest = buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        method, target, _version = lines[0].split(" ", 2)
        raw_headers = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            raw_headers.append((name.strip(), value.strip()))
        headers = {k.lower(): v for k, v in raw_headers}
        body = rest
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = self._read_chunked(sock, rest)
        else:
            length = int(headers.get("content-length") or 0)
            if length > MAX_BODY:
                return None
            while len(body) < length:
                chunk = sock.recv(65536)
                if not chunk:
                    return None
                body += chunk
            body = body[:length]
        return method, target, headers, raw_headers, body

    @staticmethod
    def _read_chunked(sock: socket.socket, data: bytes) -> bytes:
        out = b""
        while True:
            while b"\r\n" not in data:
                data += sock.recv(65536)
            size_line, data = data.split(b"\r\n", 1)
            size = int(size_line.split(b";")[0], 16)
            while len(data) < size + 2:
                data += sock.recv(65536)
            out += data[:size]
            data = data[size + 2:]
            if size == 0:
                return out
            if len(out) > MAX_BODY:
                raise ValueError("chunked body too large")

    def _handle(self, sock: socket.socket) -> None:
        try:
            req = self._read_request(sock)
        except (OSError, ValueError):
            return
        if req is None:
            return
        method, target, headers, raw_headers, body = req
        fault = self.fault
        with self._lock:
            entry = Entry(len(self._entries), time.monotonic(), method, target, headers, body,
                          _action(method, target, headers, body))
            self._entries.append(entry)
            self._reading.discard(id(sock))
        kind = fault.kind if fault.applies(entry) else "pass"
        entry.fault = kind
        try:
            if kind == "reset":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()
                entry.t_out = time.monotonic()
                entry.error = "reset"
                return
            if kind == "blackhole":
                self._hold(sock, entry)
                return
            if kind == "latency":
                if self._stopping.wait(fault.delay):
                    return
                kind = "pass"
            if kind in ("pass", "empty_secret", "expired"):
                status, resp_headers, resp_body = self._forward(method, target, raw_headers, body)
                entry.t_upstream = time.monotonic()
                if kind != "pass":
                    resp_body = _tamper(kind, resp_body)
            else:
                status, resp_headers, resp_body = _canned(kind, fault.status, entry)
            entry.status = status
            entry.resp_body = resp_body
            entry.resp_headers = {k.lower(): v for k, v in resp_headers}
            self._send(sock, status, resp_headers, resp_body)
            entry.t_out = time.monotonic()
            entry.delivered = True
        except OSError as e:
            entry.error = f"{type(e).__name__}: {e}"
            if entry.t_out is None:
                entry.t_out = time.monotonic()
        finally:
            hook = self.on_response
            if hook is not None and entry.delivered:
                try:
                    hook(entry)
                except Exception as e:  # never kill the proxy thread
                    entry.error = f"hook failed: {e!r}"
            try:
                sock.close()
            except OSError:
                pass

    def _hold(self, sock: socket.socket, entry: Entry) -> None:
        """Black hole: keep the connection open and silent until the client
        closes it, the proxy stops, or ``max_hold`` passes."""
        sock.settimeout(0.2)
        deadline = time.monotonic() + self.max_hold
        while not self._stopping.is_set() and time.monotonic() < deadline:
            try:
                if sock.recv(4096) == b"":
                    entry.t_client_gone = time.monotonic()
                    return
            except socket.timeout:
                continue
            except OSError:
                entry.t_client_gone = time.monotonic()
                return
        entry.error = "held until proxy stop"

    def _forward(self, method: str, target: str, raw_headers: list[tuple[str, str]],
                 body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        path = target
        if "://" in target:  # absolute-form: keep path + query only
            parts = urllib.parse.urlsplit(target)
            path = parts.path + (f"?{parts.query}" if parts.query else "")
        conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=60)
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            conn.putheader("Host", f"{self.upstream_host}:{self.upstream_port}")
            for name, value in raw_headers:
                if name.lower() not in HOP_BY_HOP:
                    conn.putheader(name, value)
            conn.putheader("Content-Length", str(len(body)))
            conn.putheader("Connection", "close")
            conn.endheaders(body)
            resp = conn.getresponse()
            data = resp.read()
            headers = [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP]
            return resp.status, headers, data
        finally:
            conn.close()

    @staticmethod
    def _send(sock: socket.socket, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        reason = http.client.responses.get(status, "Unknown")
        head = [f"HTTP/1.1 {status} {reason}"]
        head += [f"{k}: {v}" for k, v in headers]
        head += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
        sock.sendall("\r\n".join(head).encode("latin-1") + body)


def _tamper(kind: str, body: bytes) -> bytes:
    text = body.decode("utf-8", "replace")
    if kind == "empty_secret":
        text = re.sub(r"<SecretAccessKey>[^<]*</SecretAccessKey>", "<SecretAccessKey></SecretAccessKey>", text)
        text = re.sub(r'"SecretKey"\s*:\s*"[^"]*"', '"SecretKey": ""', text)
    elif kind == "expired":
        text = re.sub(r"<Expiration>[^<]*</Expiration>", "<Expiration>2001-01-01T00:00:00Z</Expiration>", text)
        text = re.sub(r'"Expiration"\s*:\s*[0-9.]+', '"Expiration": 978307200', text)
    return text.encode()


def _canned(kind: str, status: int, entry: Entry) -> tuple[int, list[tuple[str, str]], bytes]:
    proto = _protocol(entry)
    if kind == "status":
        if proto == "json":
            return status, [("Content-Type", "application/x-amz-json-1.1"),
                            ("X-Amzn-ErrorType", "InternalErrorException")], \
                b'{"__type":"InternalErrorException","message":"injected fault"}'
        if proto == "xml":
            return status, [("Content-Type", "text/xml")], (
                b'<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Receiver</Type>'
                b"<Code>ServiceUnavailable</Code><Message>injected fault</Message></Error>"
                b"<RequestId>00000000-0000-0000-0000-000000000000</RequestId></ErrorResponse>")
        return status, [("Content-Type", "application/json")], \
            b'{"error":"server_error","error_description":"injected fault"}'
    if kind == "throttle":
        if proto == "json":
            return 400, [("Content-Type", "application/x-amz-json-1.1"),
                         ("X-Amzn-ErrorType", "ThrottlingException")], \
                b'{"__type":"ThrottlingException","message":"Rate exceeded"}'
        if proto == "xml":
            return 400, [("Content-Type", "text/xml")], (
                b'<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type>'
                b"<Code>Throttling</Code><Message>Rate exceeded</Message></Error>"
                b"<RequestId>00000000-0000-0000-0000-000000000000</RequestId></ErrorResponse>")
        return 429, [("Content-Type", "application/json"), ("Retry-After", "1")], \
            b'{"error":"slow_down","error_description":"injected throttling"}'
    if kind == "malformed":
        if proto == "json":
            return 200, [("Content-Type", "application/x-amz-json-1.1")], \
                b'{"Credentials": {"AccessKeyId": "ASIA'
        if proto == "xml":
            return 200, [("Content-Type", "text/xml")], (
                b'<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
                b"<AssumeRoleWithWebIdentityResult><Credentials><AccessKeyId>ASIA")
        return 200, [("Content-Type", "application/json")], b'{"access_token": "abc", "id_token": '
    if kind == "html":
        return 500, [("Content-Type", "text/html; charset=utf-8")], \
            b"<!doctype html><html><head><title>500 Internal Server Error</title></head>" \
            b"<body><h1>Internal Server Error</h1></body></html>"
    if kind == "invalid_grant":
        return 400, [("Content-Type", "application/json"), ("Cache-Control", "no-store")], \
            b'{"error":"invalid_grant","error_description":"grant request is invalid"}'
    raise ValueError(kind)
