"""Raw HTTP/1.1 over a socket, for probes no HTTP library will send
(two Host headers, absolute-form targets, bare LF, oversize heads...).

Only loopback: ``RawClient(addr)`` refuses anything but 127.0.0.0/8 and ::1.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import dataclass


@dataclass
class RawResponse:
    status: int | None  # None: the server closed (or reset) without answering
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    raw: bytes
    closed_after: float  # seconds from send to EOF (or to the answer being complete)
    error: str | None = None

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def __str__(self) -> str:
        if self.status is None:
            return f"<no response: {self.error or 'closed'} after {self.closed_after:.2f}s>"
        return f"HTTP {self.status} {self.reason} {self.headers} {self.body[:300]!r}"


def _check_loopback(host: str) -> None:
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"raw probes go to loopback only, not {host}")


def split_addr(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


def parse_response(data: bytes) -> tuple[int | None, str, list[tuple[str, str]], bytes]:
    if b"\r\n\r\n" not in data and b"\n\n" not in data:
        return None, "", [], b""
    sep = b"\r\n\r\n" if b"\r\n\r\n" in data else b"\n\n"
    head, body = data.split(sep, 1)
    lines = head.decode("latin-1").splitlines()
    try:
        _version, status, *reason = lines[0].split(" ", 2)
        code = int(status)
    except (ValueError, IndexError):
        return None, "", [], b""
    headers = []
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers.append((k.strip(), v.strip()))
    return code, (reason[0] if reason else ""), headers, body


def _complete(data: bytes) -> bool:
    """A full response with a Content-Length body has arrived."""
    status, _, headers, body = parse_response(data)
    if status is None:
        return False
    for k, v in headers:
        if k.lower() == "content-length":
            try:
                return len(body) >= int(v)
            except ValueError:
                return False
    return False


def exchange(addr: str, payload: bytes | list[bytes], *, timeout: float = 12.0, pause: float = 0.0,
             source: str | None = None, read_until_close: bool = False) -> RawResponse:
    """Send ``payload`` (or the pieces of a list, ``pause`` seconds apart) and
    read the answer until the server closes, the response is complete (unless
    ``read_until_close``) or ``timeout`` passes."""
    host, port = split_addr(addr)
    _check_loopback(host)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    data = b""
    error = None
    start = time.monotonic()
    try:
        if source:
            sock.bind((source, 0))
        sock.connect((host, port))
        pieces = payload if isinstance(payload, list) else [payload]
        start = time.monotonic()
        for i, piece in enumerate(pieces):
            if i and pause:
                time.sleep(pause)
            try:
                sock.sendall(piece)
            except OSError as e:  # the server may close early (431, 413, timeouts)
                error = f"send: {type(e).__name__}"
                break
        deadline = start + timeout
        while time.monotonic() < deadline:
            sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                error = "timeout"
                break
            except ConnectionResetError:
                error = "reset"
                break
            if not chunk:
                break
            data += chunk
            if not read_until_close and _complete(data):
                break
    except OSError as e:
        error = f"{type(e).__name__}: {e}"
    finally:
        elapsed = time.monotonic() - start
        sock.close()
    status, reason, headers, body = parse_response(data)
    return RawResponse(status, reason, headers, body, data, elapsed, error)


def request_bytes(method: str, target: str, headers: list[tuple[str, str]], body: bytes = b"",
                  version: str = "HTTP/1.1") -> bytes:
    lines = [f"{method} {target} {version}"] + [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
