"""A deliberately broken credentials server: the negative controls of the SDK
compatibility matrix (tests/e2e/test_compat.py, protocol.md 4.2 I4-I7).

It mimics credbroker's IMDSv2 and ECS endpoints (same paths, same v2-only
behaviour, same JSON) and breaks exactly one thing per variant:

    baseline          nothing broken: every client must succeed (the control of the control)
    role-newline      the role listing is ``credbroker\\n``                 (I4: Rust panics)
    expiration-offset ``Expiration`` ends in ``+00:00`` instead of ``Z``    (I6: Rust, JS fromHttp fail)
    no-ttl-header     the token response lacks the TTL response header     (I7: Rust fails; Go drops to v1)
    no-ttl-header-v1  the same, but token-less GETs are allowed (IMDSv1)   (I7: Go succeeds through v1)
    no-code           the IMDS document has no ``Code``                    (I5: Go fails)
    extra-fields      both documents carry unknown fields, an object among them, as in the
                      cross-SDK IMDS cases (aws/aws-sdk-go-v2 credentials/ec2rolecreds/
                      provider_sep_test.go, "UnexpectedElement1"): every client must ignore them

It binds 127.0.0.1 on an ephemeral port, serves from a thread of the calling
process, and records every request (method, path, whether a token or
Authorization header came with it). Standalone, for poking at a client by hand:

    python tests/e2e/broken_imds.py VARIANT     # prints the base URL and the ECS token
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import sys
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Mapping

VARIANTS = ("baseline", "role-newline", "expiration-offset", "no-ttl-header", "no-ttl-header-v1", "no-code",
            "extra-fields")
# Unknown fields of the extra-fields variant: a nested object (the SEP's shape), a number
# and a null, so a client that decodes into a strict schema would trip on one of them.
EXTRA_FIELDS: dict[str, Any] = {"UnexpectedElement1": {"Name": "ignore-me-1"}, "UnexpectedNumber": 7,
                                "UnexpectedNull": None}
ROLE = "credbroker"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
CREDS_BASE = "/latest/meta-data/iam/security-credentials/"


@dataclass
class Seen:
    method: str
    path: str
    imds_token: bool  # a valid x-aws-ec2-metadata-token came with it
    authorization: str | None
    status: int


class BrokenImds:
    """``with BrokenImds(variant, creds) as srv: srv.url ...``

    ``creds``: AccessKeyId, SecretAccessKey, Token, Expiration (``...Z``), as the
    daemon serves them (so a client that accepts them can go on to call STS).
    """

    def __init__(self, variant: str, creds: Mapping[str, Any], ecs_token: str | None = None):
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; one of {VARIANTS}")
        self.variant = variant
        self.creds = dict(creds)
        self.ecs_token = ecs_token or secrets.token_urlsafe(32)
        self.tokens: set[str] = set()
        self.requests: list[Seen] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- what is served ---------------------------------------------------------

    @property
    def allow_v1(self) -> bool:
        return self.variant == "no-ttl-header-v1"

    def expiration(self) -> str:
        value = self.creds["Expiration"]
        if self.variant == "expiration-offset":
            assert value.endswith("Z"), value
            return value[:-1] + "+00:00"
        return value

    def imds_document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "Code": "Success",
            "LastUpdated": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "Type": "AWS-HMAC",
            "AccessKeyId": self.creds["AccessKeyId"],
            "SecretAccessKey": self.creds["SecretAccessKey"],
            "Token": self.creds["Token"],
            "Expiration": self.expiration(),
        }
        if self.variant == "no-code":
            del doc["Code"]
        if self.variant == "extra-fields":
            doc.update(EXTRA_FIELDS)
        return doc

    def ecs_document(self) -> dict[str, Any]:
        doc = {
            "AccessKeyId": self.creds["AccessKeyId"],
            "SecretAccessKey": self.creds["SecretAccessKey"],
            "Token": self.creds["Token"],
            "Expiration": self.expiration(),
        }
        if self.variant == "extra-fields":
            doc.update(EXTRA_FIELDS)
        return doc

    def role_listing(self) -> str:
        return ROLE + "\n" if self.variant == "role-newline" else ROLE

    # -- lifecycle ----------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "BrokenImds":
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _send(self, status: int, body: str | bytes, ctype: str = "text/plain",
                      headers: Mapping[str, str] | None = None, token_ok: bool = False) -> None:
                data = body.encode() if isinstance(body, str) else body
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)
                with outer._lock:
                    outer.requests.append(Seen(self.command, self.path, token_ok,
                                               self.headers.get("Authorization"), status))

            def do_PUT(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                if self.path != "/latest/api/token":
                    return self._send(404, "Not Found")
                ttl = self.headers.get(TTL_HEADER, "")
                if not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
                    return self._send(400, "Missing or Invalid Parameters")
                token = secrets.token_urlsafe(24)
                with outer._lock:
                    outer.tokens.add(token)
                headers = {} if outer.variant.startswith("no-ttl-header") else {TTL_HEADER: ttl}
                self._send(200, token, headers=headers)

            def do_GET(self) -> None:  # noqa: N802
                if self.path.startswith("/v1/credentials"):
                    if self.headers.get("Authorization") != outer.ecs_token:
                        return self._send(401, json.dumps({"code": "Unauthorized", "message": "bad token"}),
                                          "application/json")
                    return self._send(200, json.dumps(outer.ecs_document()), "application/json")
                if not self.path.startswith("/latest/"):
                    return self._send(404, "Not Found")
                token = self.headers.get(TOKEN_HEADER)
                token_ok = token is not None and token in outer.tokens
                if not token_ok and not (token is None and outer.allow_v1):
                    return self._send(401, "Unauthorized")
                if self.path == CREDS_BASE:
                    return self._send(200, outer.role_listing(), token_ok=token_ok)
                if self.path == CREDS_BASE + ROLE:
                    return self._send(200, json.dumps(outer.imds_document(), indent=2), token_ok=token_ok)
                return self._send(404, "Not Found", token_ok=token_ok)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"broken-imds-{self.variant}",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "BrokenImds":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- what clients did ---------------------------------------------------------

    def seen(self) -> list[Seen]:
        with self._lock:
            return list(self.requests)

    def summary(self) -> str:
        return ", ".join(f"{r.method} {r.path}{'' if r.imds_token or r.method == 'PUT' else ' (no token)'}"
                         f" → {r.status}" for r in self.seen())


def _fake_creds() -> dict[str, str]:
    exp = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
    return {"AccessKeyId": "ASIA" + secrets.token_hex(8).upper(), "SecretAccessKey": secrets.token_urlsafe(30),
            "Token": secrets.token_urlsafe(60), "Expiration": exp.strftime("%Y-%m-%dT%H:%M:%SZ")}


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in VARIANTS:
        raise SystemExit(f"usage: {sys.argv[0]} {{{'|'.join(VARIANTS)}}}")
    with BrokenImds(sys.argv[1], _fake_creds()) as srv:
        print(f"{srv.variant}: {srv.url}/  ECS token: {srv.ecs_token}  (Ctrl-C to stop)", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
