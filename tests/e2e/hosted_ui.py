"""A stand-in for a Cognito user pool's hosted UI (managed login), over moto.

moto has no ``/oauth2/*`` endpoints (testbed.md §1: ``/oauth2/token`` is
answered by its S3 handler), and nothing else offline plays Cognito's
domain, so this small server does, the way Cognito documents it, with moto
doing the user pool's real work (the app client's settings, the password,
the tokens the daemon later refreshes):

* ``GET /oauth2/authorize`` checks what Cognito checks before it shows the
  sign-in page: ``response_type=code``; ``client_id`` an app client of the
  pool with the code flow allowed; ``redirect_uri`` one of its
  ``CallbackURLs``, exactly (else a ``redirect_mismatch`` page, no
  redirect); every scope in ``AllowedOAuthScopes`` (else a redirect with
  ``error=invalid_scope``: so ``offline_access`` fails, as at Cognito);
  PKCE only with ``S256``. Then a sign-in form.
* ``POST /login``: the password checked by moto (``AdminInitiateAuth``), a
  one-time code minted, ``302`` to ``redirect_uri?code=…&state=…``.
* ``POST /oauth2/token`` (``authorization_code``): client authentication
  (HTTP Basic when the client has a secret, ``client_id`` in the form when
  not), the code used once, the same ``redirect_uri``, ``code_verifier``
  against the challenge → moto's tokens. moto's id_token has no ``nonce``,
  so the stand-in adds the one the request sent and signs it again with
  moto's own key (the one moto's JWKS publishes).

``wrong_nonce = True`` signs another nonce (the client must refuse it).
Every request is kept in ``requests`` for the tests to look at.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import secrets
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler
from typing import Any

from joserfc import jwk, jwt
from moto.utilities.utils import load_resource

import harness as h


class HostedUi:
    """One user pool's domain, served on 127.0.0.1:<ephemeral>."""

    def __init__(self, idp_client: Any, pool_id: str):
        self.idp = idp_client
        self.pool_id = pool_id
        self.key = jwk.RSAKey.import_key(load_resource("cognitoidp/resources/jwks-private.json"))
        self.codes: dict[str, dict[str, Any]] = {}
        self.pending: dict[str, dict[str, str]] = {}
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.wrong_nonce = False
        self._lock = threading.Lock()
        ui = self

        class Handler(h.QuietHandler):
            def do_GET(self):
                ui._handle(self, "GET")

            def do_POST(self):
                ui._handle(self, "POST")

        self._http = h.LoopbackServer(Handler)
        self.url = self._http.url

    def stop(self) -> None:
        self._http.stop()

    # -- plumbing ----------------------------------------------------------

    def _handle(self, req: BaseHTTPRequestHandler, method: str) -> None:
        url = urllib.parse.urlsplit(req.path)
        params = dict(urllib.parse.parse_qsl(url.query))
        if method == "POST":
            n = int(req.headers.get("Content-Length") or 0)
            params.update(urllib.parse.parse_qsl(req.rfile.read(n).decode()))
        with self._lock:
            self.requests.append((method, url.path, dict(params)))
        routes = {("GET", "/oauth2/authorize"): self._authorize,
                  ("POST", "/login"): self._login,
                  ("POST", "/oauth2/token"): self._token}
        handler = routes.get((method, url.path))
        if handler is None:
            return self._send(req, 404, "text/plain", "not found")
        status, ctype, body, location = handler(params, req.headers)
        self._send(req, status, ctype, body, location)

    @staticmethod
    def _send(req, status: int, ctype: str, body: str, location: str = "") -> None:
        data = body.encode()
        req.send_response(status)
        req.send_header("Content-Type", ctype)
        req.send_header("Content-Length", str(len(data)))
        req.send_header("Cache-Control", "no-store")
        if location:
            req.send_header("Location", location)
        req.end_headers()
        req.wfile.write(data)

    def _client(self, client_id: str) -> dict[str, Any] | None:
        try:
            return self.idp.describe_user_pool_client(
                UserPoolId=self.pool_id, ClientId=client_id)["UserPoolClient"]
        except self.idp.exceptions.ResourceNotFoundException:
            return None

    @staticmethod
    def _redirect(uri: str, **q: str) -> tuple[int, str, str, str]:
        sep = "&" if "?" in uri else "?"
        return 302, "text/plain", "", uri + sep + urllib.parse.urlencode(q)

    @staticmethod
    def _page(status: int, text: str) -> tuple[int, str, str, str]:
        return status, "text/html", f"<html><body><p>{html.escape(text)}</p></body></html>", ""

    # -- the endpoints -----------------------------------------------------

    def _authorize(self, p: dict[str, str], _headers) -> tuple[int, str, str, str]:
        client = self._client(p.get("client_id", ""))
        if client is None:
            return self._page(400, "error: invalid client_id")
        if p.get("redirect_uri") not in client.get("CallbackURLs", []):
            return self._page(400, "error=redirect_mismatch")
        if p.get("response_type") != "code" or "code" not in client.get("AllowedOAuthFlows", []):
            return self._redirect(p["redirect_uri"], error="unauthorized_client", state=p.get("state", ""))
        allowed = set(client.get("AllowedOAuthScopes", []))
        if not set(p.get("scope", "").split()) <= allowed:
            return self._redirect(p["redirect_uri"], error="invalid_scope", state=p.get("state", ""))
        if p.get("code_challenge") and p.get("code_challenge_method") != "S256":
            return self._redirect(p["redirect_uri"], error="invalid_request", state=p.get("state", ""))
        sid = secrets.token_urlsafe(16)
        self.pending[sid] = p
        return 200, "text/html", (
            '<html><body><form method="post" action="/login">'
            f'<input type="hidden" name="session" value="{sid}">'
            '<input name="username"><input name="password" type="password">'
            "</form></body></html>"), ""

    def _login(self, p: dict[str, str], _headers) -> tuple[int, str, str, str]:
        auth = self.pending.pop(p.get("session", ""), None)
        if auth is None:
            return self._page(400, "error: no sign-in in progress")
        try:
            result = self.idp.admin_initiate_auth(
                UserPoolId=self.pool_id, ClientId=auth["client_id"], AuthFlow="ADMIN_USER_PASSWORD_AUTH",
                AuthParameters={"USERNAME": p.get("username", ""), "PASSWORD": p.get("password", "")},
            )["AuthenticationResult"]
        except self.idp.exceptions.NotAuthorizedException:
            return self._page(400, "Incorrect username or password.")
        code = secrets.token_urlsafe(24)
        self.codes[code] = {"auth": auth, "tokens": result}
        return self._redirect(auth["redirect_uri"], code=code, state=auth.get("state", ""))

    def _client_auth(self, p: dict[str, str], headers) -> dict[str, Any] | None:
        basic = headers.get("Authorization", "")
        if basic.startswith("Basic "):
            cid, _, sec = base64.b64decode(basic[6:]).decode().partition(":")
            client = self._client(urllib.parse.unquote(cid))
            if client and client.get("ClientSecret") == urllib.parse.unquote(sec):
                return client
            return None
        client = self._client(p.get("client_id", ""))
        if client is None or client.get("ClientSecret"):
            return None  # a confidential client must authenticate
        return client

    def _token(self, p: dict[str, str], headers) -> tuple[int, str, str, str]:
        def error(code: str, status: int = 400):
            return status, "application/json", json.dumps({"error": code}), ""

        client = self._client_auth(p, headers)
        if client is None:
            return error("invalid_client", 401)
        if p.get("grant_type") != "authorization_code":
            return error("unsupported_grant_type")
        grant = self.codes.pop(p.get("code", ""), None)
        if grant is None or grant["auth"]["client_id"] != client["ClientId"]:
            return error("invalid_grant")
        auth = grant["auth"]
        if p.get("redirect_uri") != auth["redirect_uri"]:
            return error("invalid_grant")
        if auth.get("code_challenge"):
            verifier = p.get("code_verifier", "").encode()
            want = base64.urlsafe_b64encode(hashlib.sha256(verifier).digest()).rstrip(b"=").decode()
            if want != auth["code_challenge"]:
                return error("invalid_grant")
        t = grant["tokens"]
        id_token = t["IdToken"]
        if auth.get("nonce"):
            id_token = self._with_nonce(id_token, "forged" if self.wrong_nonce else auth["nonce"])
        return 200, "application/json", json.dumps({
            "id_token": id_token, "access_token": t["AccessToken"], "refresh_token": t["RefreshToken"],
            "expires_in": t["ExpiresIn"], "token_type": "Bearer"}), ""

    def _with_nonce(self, token: str, nonce: str) -> str:
        old = jwt.decode(token, self.key)
        claims = dict(old.claims, nonce=nonce)
        return jwt.encode(dict(old.header), claims, self.key)
