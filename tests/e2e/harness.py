"""End-to-end harness for credbroker.

Starts the offline stand-ins (moto for Cognito/STS, panva/oidc-provider for an
OpenID Provider), runs the credbroker binary against them, and talks to it the
way AWS SDKs do. Every server binds 127.0.0.1 on an ephemeral port, and every
object here stops the processes it started (``stop()`` or ``with``).

Facts about the stand-ins are in shared/docs/testbed.md; the SDK wire protocol
and the clean SDK environment are in shared/docs/protocol.md (sections 1-2, 4.1).

Used by tests/e2e/conftest.py (pytest fixtures) and tests/demo.py.
"""

from __future__ import annotations

import atexit
import base64
import datetime as dt
import hashlib
import hmac
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

REPO = Path(__file__).resolve().parents[2]
OIDC_DIR = REPO / "tests" / "oidc"
# The venv that runs this module holds moto_server, aws and boto3.
VENV_BIN = Path(sys.executable).parent

REGION = "us-east-1"
ACCOUNT_ID = "123456789012"
EXIT_USAGE = 64
OIDC_ROLE_ARN = f"arn:aws:iam::{ACCOUNT_ID}:role/OidcRole"
BASIC_ROLE_ARN = f"arn:aws:iam::{ACCOUNT_ID}:role/CognitoBasicRole"
SESSION_NAME = "credbroker-e2e"
MOTO_DEFAULT_ARN = f"arn:aws:sts::{ACCOUNT_ID}:user/moto"
IMDS_TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
IMDS_TOKEN_HEADER = "X-aws-ec2-metadata-token"
EXPIRATION_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
LISTENING_RE = re.compile(r"listening\b.*?\baddr=\"?([^\s\"]+)")

# Every temporary directory the harness creates lives under this one.
_SCRATCH = tempfile.TemporaryDirectory(prefix="credbroker-e2e-")


class HarnessError(RuntimeError):
    """A stand-in or the daemon did not behave; the message carries its logs."""


def scratch_dir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix, dir=_SCRATCH.name))


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.2,
             on_timeout: Callable[[], str] | None = None) -> Any:
    """Poll ``predicate`` until it returns something truthy; return that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            detail = on_timeout() if on_timeout else ""
            raise HarnessError(f"timed out after {timeout:.0f}s waiting for {what}\n{detail}")
        time.sleep(interval)


def strip_ansi(text: str) -> str:
    return ANSI_RE.sub("", text)


def tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])


# ---------------------------------------------------------------------------
# Environments
# ---------------------------------------------------------------------------

_KEEP_VARS = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "TMP", "TEMP")
_PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


def stop_process(p: subprocess.Popen, timeout: float = 5) -> int | None:
    """SIGTERM, then SIGKILL after ``timeout``; returns the exit code. Never raises."""
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    return p.returncode


def clean_env(**extra: Any) -> dict[str, str]:
    """A child environment per protocol.md 4.1.

    Starts from a minimal environment (PATH, LANG, TMP...), never inherits any
    ``AWS_*``, ``BOTO_*`` or proxy variable, points HOME at a fresh empty
    directory and the AWS config/credentials files at files that do not exist,
    pins the region, and bypasses proxies for loopback. ``extra`` is applied
    last; a value of None removes the variable.
    """
    env = {k: os.environ[k] for k in _KEEP_VARS if k in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.setdefault("LANG", "C.UTF-8")
    home = scratch_dir("home-")
    env.update(
        HOME=str(home),
        AWS_CONFIG_FILE=str(home / "nonexistent" / "config"),
        AWS_SHARED_CREDENTIALS_FILE=str(home / "nonexistent" / "credentials"),
        AWS_REGION=REGION,
        AWS_DEFAULT_REGION=REGION,
        NO_PROXY="127.0.0.1,localhost,::1",
        no_proxy="127.0.0.1,localhost,::1",
        NO_COLOR="1",
        PYTHONDONTWRITEBYTECODE="1",
    )
    for key, value in extra.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = str(value)
    return env


def scrub_process_env() -> None:
    """Make this (test) process's own boto3 calls deterministic: drop every
    AWS_*/BOTO_*/proxy variable and pin the config files and region, exactly as
    clean_env does for children."""
    for key in list(os.environ):
        if key.startswith(("AWS_", "BOTO_")) or key in _PROXY_VARS:
            del os.environ[key]
    home = scratch_dir("self-")
    os.environ["AWS_CONFIG_FILE"] = str(home / "nonexistent" / "config")
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = str(home / "nonexistent" / "credentials")
    os.environ["AWS_DEFAULT_REGION"] = REGION
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost,::1"


# ---------------------------------------------------------------------------
# Plain HTTP (stdlib only: no proxy lookup, Host header = the literal address)
# ---------------------------------------------------------------------------

@dataclass
class Response:
    status: int
    headers: dict[str, str]  # lower-cased names
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def __str__(self) -> str:
        return f"HTTP {self.status} {self.headers} {self.text[:500]!r}"


def http_request(method: str, url: str, headers: Mapping[str, str] | None = None,
                 body: bytes | str | None = None, timeout: float = 10) -> Response:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http":
        raise ValueError(f"only http:// is used in these tests: {url}")
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    if isinstance(body, str):
        body = body.encode()
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}))
        resp = conn.getresponse()
        data = resp.read()
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
    finally:
        conn.close()


def post_form(url: str, fields: Mapping[str, str], headers: Mapping[str, str] | None = None,
              timeout: float = 10) -> Response:
    hdrs = {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})}
    return http_request("POST", url, hdrs, urllib.parse.urlencode(fields), timeout)


def parse_expiration(value: str) -> dt.datetime:
    """Parse the daemon's ``YYYY-MM-DDTHH:MM:SSZ``; raises ValueError otherwise."""
    if not EXPIRATION_RE.match(value):
        raise ValueError(f"Expiration not in YYYY-MM-DDTHH:MM:SSZ form: {value!r}")
    return dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)


def jwt_claims(token: str) -> dict[str, Any]:
    """Decode (without verifying) the payload of a compact JWS."""
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError(f"not a JWT: {token[:20]}...")
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    return json.loads(base64.urlsafe_b64decode(payload))


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


# ---------------------------------------------------------------------------
# Child processes with a log file
# ---------------------------------------------------------------------------

class _Process:
    """A child process whose output goes to a log file (never a pipe that can fill)."""

    name = "process"

    def __init__(self, workdir: Path | None = None):
        self.workdir = workdir or scratch_dir(f"{self.name}-")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / f"{self.name}.log"
        self.proc: subprocess.Popen | None = None
        self._log_offset = 0

    def _spawn(self, argv: list[str], env: Mapping[str, str], cwd: Path | None = None,
               stdout: int | None = None) -> None:
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                argv, env=dict(env), cwd=str(cwd or self.workdir), stdin=subprocess.DEVNULL,
                stdout=stdout if stdout is not None else log, stderr=log)
        atexit.register(self._atexit_kill, self.proc)

    @staticmethod
    def _atexit_kill(proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    def logs(self) -> str:
        """Everything the process wrote to its log so far (all runs), ANSI stripped."""
        try:
            return strip_ansi(self.log_path.read_text("utf-8", "replace"))
        except FileNotFoundError:
            return ""

    def current_logs(self) -> str:
        """Log output of the current (latest) run only."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_offset)
                return strip_ansi(f.read().decode("utf-8", "replace"))
        except FileNotFoundError:
            return ""

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise HarnessError(f"{self.name} exited with {self.proc.returncode}\n"
                               f"--- {self.name} log ---\n{tail(self.current_logs(), 80)}")

    def terminate(self, timeout: float = 10) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code. Never raises."""
        if self.proc is None:
            return None
        return stop_process(self.proc, timeout)

    stop = terminate

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.terminate()


# ---------------------------------------------------------------------------
# moto (Cognito User Pools, Cognito Identity, STS)
# ---------------------------------------------------------------------------

@dataclass
class RecordedRequest:
    """One request as recorded by moto's recorder (testbed.md 2.4)."""

    method: str
    url: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    target: str | None  # X-Amz-Target, e.g. "AWSCognitoIdentityService.GetId"
    action: str | None  # "GetId", "AssumeRoleWithWebIdentity", ...

    def json(self) -> Any:
        return json.loads(self.body or b"{}")

    def form(self) -> dict[str, str]:
        return {k: v[-1] for k, v in urllib.parse.parse_qs(self.body.decode("utf-8", "replace")).items()}

    @classmethod
    def parse(cls, entry: Mapping[str, Any]) -> "RecordedRequest":
        headers = {k.lower(): v for k, v in (entry.get("headers") or {}).items()}
        raw = entry.get("body") or ""
        body = base64.b64decode(raw) if entry.get("body_encoded") else raw.encode()
        target = headers.get("x-amz-target")
        action = target.rsplit(".", 1)[-1] if target else None
        if action is None:
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(entry.get("url", "")).query)
            form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
            found = form.get("Action") or query.get("Action")
            action = found[-1] if found else None
        return cls(entry.get("method", ""), entry.get("url", ""), headers, body, target, action)


@dataclass
class UserPool:
    pool_id: str
    client_id: str
    client_secret: str | None
    username: str
    password: str

    @property
    def provider_name(self) -> str:
        """The Cognito Identity login key / provider name of this pool."""
        return f"cognito-idp.{REGION}.amazonaws.com/{self.pool_id}"


class Moto(_Process):
    """``moto_server -H 127.0.0.1 -p 0`` in a child process."""

    name = "moto"

    def __init__(self, workdir: Path | None = None):
        super().__init__(workdir)
        self.url = ""
        self.recording_path = self.workdir / "moto_recording"

    def start(self, timeout: float = 30) -> "Moto":
        server = VENV_BIN / "moto_server"
        if not server.exists():
            raise HarnessError(f"{server} not found: run tests/setup.sh first")
        env = clean_env(MOTO_RECORDER_FILEPATH=self.recording_path)
        self._spawn([str(server), "-H", "127.0.0.1", "-p", "0"], env)

        def bound() -> str | None:
            self._check_alive()
            m = re.search(r"Running on (http://127\.0\.0\.1:\d+)", self.current_logs())
            return m.group(1) if m else None

        self.url = wait_for(bound, timeout, "moto to bind", on_timeout=self.logs)

        def ready() -> bool:
            self._check_alive()
            try:
                return http_request("GET", f"{self.url}/moto-api/", timeout=2).status == 200
            except OSError:
                return False

        wait_for(ready, timeout, "moto /moto-api/ to answer 200", on_timeout=self.logs)
        self.reset()
        return self

    # -- state and recorder --------------------------------------------------

    def _api(self, path: str, method: str = "POST") -> Response:
        resp = http_request(method, f"{self.url}/moto-api/{path}")
        if resp.status != 200:
            raise HarnessError(f"moto {path}: {resp}")
        return resp

    def reset(self) -> None:
        """Forget all AWS state and any recording (moto's own reset keeps the recording)."""
        self._api("reset")
        self.stop_recording()
        self._api("recorder/reset-recording")

    def start_recording(self) -> None:
        """Start a fresh recording of every request moto receives."""
        self._api("recorder/reset-recording")
        self._api("recorder/start-recording")

    def stop_recording(self) -> None:
        self._api("recorder/stop-recording")

    def download_recording(self) -> list[RecordedRequest]:
        text = self._api("recorder/download-recording", "GET").text
        return [RecordedRequest.parse(json.loads(line)) for line in text.splitlines() if line.strip()]

    def calls(self, action: str) -> list[RecordedRequest]:
        """Recorded requests for one API action, e.g. ``calls("GetId")``."""
        return [r for r in self.download_recording() if r.action == action]

    def count(self, action: str) -> int:
        return len(self.calls(action))

    def web_identity_tokens(self) -> list[str]:
        """Every IdP token a client presented upstream (Cognito Logins values and
        STS WebIdentityToken) in the current recording."""
        tokens: list[str] = []
        for req in self.download_recording():
            if req.action in ("GetId", "GetCredentialsForIdentity", "GetOpenIdToken"):
                tokens.extend((req.json().get("Logins") or {}).values())
            elif req.action == "AssumeRoleWithWebIdentity":
                tokens.append(req.form().get("WebIdentityToken", ""))
        return [t for t in tokens if t]

    # -- boto3 helpers (explicit dummy creds, no retries) --------------------

    def client(self, service: str):
        import boto3
        from botocore.config import Config

        session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing",
                                        region_name=REGION)
        return session.client(service, endpoint_url=self.url,
                              config=Config(retries={"max_attempts": 1, "mode": "standard"}))

    def create_user_pool(self, *, generate_secret: bool = False, username: str = "alice",
                         password: str = "Passw0rd!Passw0rd") -> UserPool:
        idp = self.client("cognito-idp")
        pool_id = idp.create_user_pool(PoolName=f"pool-{secrets.token_hex(4)}")["UserPool"]["Id"]
        client = idp.create_user_pool_client(
            UserPoolId=pool_id, ClientName="credbroker", GenerateSecret=generate_secret,
            ExplicitAuthFlows=["ALLOW_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"],
        )["UserPoolClient"]
        idp.admin_create_user(UserPoolId=pool_id, Username=username, MessageAction="SUPPRESS",
                              UserAttributes=[{"Name": "email", "Value": f"{username}@example.com"}])
        idp.admin_set_user_password(UserPoolId=pool_id, Username=username, Password=password, Permanent=True)
        return UserPool(pool_id, client["ClientId"], client.get("ClientSecret"), username, password)

    def user_pool_login(self, pool: UserPool) -> dict[str, Any]:
        """USER_PASSWORD_AUTH → AuthenticationResult (RefreshToken, IdToken, AccessToken)."""
        params = {"USERNAME": pool.username, "PASSWORD": pool.password}
        if pool.client_secret:
            digest = hmac.new(pool.client_secret.encode(), (pool.username + pool.client_id).encode(),
                              hashlib.sha256).digest()
            params["SECRET_HASH"] = base64.b64encode(digest).decode()
        result = self.client("cognito-idp").initiate_auth(
            ClientId=pool.client_id, AuthFlow="USER_PASSWORD_AUTH", AuthParameters=params)
        return result["AuthenticationResult"]

    def user_pool_refresh_token(self, pool: UserPool) -> str:
        return self.user_pool_login(pool)["RefreshToken"]

    def revoke_user_pool_tokens(self, pool: UserPool) -> None:
        """Revoke every refresh token of the user (moto has no RevokeToken)."""
        self.client("cognito-idp").admin_user_global_sign_out(UserPoolId=pool.pool_id, Username=pool.username)

    def create_identity_pool(self, *, login_providers: Mapping[str, str] | None = None,
                             oidc_provider_arns: Iterable[str] = (),
                             user_pools: Iterable[UserPool] = (),
                             name: str = "daemon_pool", allow_unauthenticated: bool = False) -> str:
        kwargs: dict[str, Any] = {"IdentityPoolName": name,
                                  "AllowUnauthenticatedIdentities": allow_unauthenticated}
        if login_providers:
            kwargs["SupportedLoginProviders"] = dict(login_providers)
        if oidc_provider_arns:
            kwargs["OpenIdConnectProviderARNs"] = list(oidc_provider_arns)
        pools = list(user_pools)
        if pools:
            kwargs["CognitoIdentityProviders"] = [
                {"ProviderName": p.provider_name, "ClientId": p.client_id, "ServerSideTokenCheck": False}
                for p in pools]
        return self.client("cognito-identity").create_identity_pool(**kwargs)["IdentityPoolId"]

    def create_oidc_identity_pool(self, issuer: str, *, allow_unauthenticated: bool = False) -> str:
        """Identity pool trusting an OIDC issuer (login key = issuer without scheme)."""
        host = issuer.split("://", 1)[-1]
        return self.create_identity_pool(
            oidc_provider_arns=[f"arn:aws:iam::{ACCOUNT_ID}:oidc-provider/{host}"],
            allow_unauthenticated=allow_unauthenticated)


# ---------------------------------------------------------------------------
# oidc-provider (real OpenID Provider with refresh-token rotation)
# ---------------------------------------------------------------------------

class OidcProvider(_Process):
    """``node tests/oidc/server.mjs`` (see its header for the test-only routes)."""

    name = "oidc"

    def __init__(self, workdir: Path | None = None, *, id_ttl: int = 300, rt_ttl: int = 86400,
                 device_ttl: int = 600, rt_grace: int = 0):
        super().__init__(workdir)
        self.id_ttl = id_ttl
        self.rt_ttl = rt_ttl
        self.device_ttl = device_ttl
        self.rt_grace = rt_grace  # refresh-token reuse grace period (0: strict reuse detection)
        self.issuer = ""
        self.stdout_path = self.workdir / "oidc.stdout"

    def start(self, timeout: float = 30) -> "OidcProvider":
        node = shutil.which("node")
        if not node:
            raise HarnessError("node not found (Debian: apt-get install nodejs)")
        if not (OIDC_DIR / "node_modules" / "oidc-provider").is_dir():
            raise HarnessError(f"{OIDC_DIR}/node_modules missing: run tests/setup.sh first")
        env = clean_env(PORT=0, ID_TTL=self.id_ttl, RT_TTL=self.rt_ttl, DEVICE_TTL=self.device_ttl,
                        RT_GRACE=self.rt_grace)
        with open(self.stdout_path, "wb") as out:
            self._spawn([node, str(OIDC_DIR / "server.mjs")], env, cwd=OIDC_DIR, stdout=out.fileno())

        def ready() -> str | None:
            self._check_alive()
            m = re.match(r"READY (http://127\.0\.0\.1:\d+)\n", self.stdout_path.read_text())
            return m.group(1) if m else None

        self.issuer = wait_for(ready, timeout, "oidc-provider READY line", on_timeout=self.logs)
        return self

    @property
    def login_provider(self) -> str:
        """Cognito Identity login key for this issuer (issuer without scheme)."""
        return self.issuer.split("://", 1)[1]

    def mint_grant(self, sub: str = "alice", client_id: str = "daemon",
                   scope: str = "openid offline_access") -> dict[str, str]:
        resp = post_form(f"{self.issuer}/__test/mint", {"client_id": client_id, "sub": sub, "scope": scope})
        if resp.status != 200:
            raise HarnessError(f"mint failed: {resp}")
        return resp.json()

    def mint(self, sub: str = "alice", client_id: str = "daemon", scope: str = "openid offline_access") -> str:
        """A fresh refresh token in a new grant, as if the user had just logged in."""
        return self.mint_grant(sub, client_id, scope)["refresh_token"]

    def stats(self) -> dict[str, int]:
        resp = http_request("GET", f"{self.issuer}/__test/stats")
        if resp.status != 200:
            raise HarnessError(f"stats failed: {resp}")
        return resp.json()

    def refresh(self, refresh_token: str, client_id: str = "daemon",
                client_secret: str | None = None) -> tuple[int, dict[str, Any]]:
        """Do the refresh_token grant ourselves → (status, JSON body).

        Careful: presenting an already-rotated token revokes the whole grant
        (testbed.md 3.2), including whatever the daemon holds now.
        """
        fields = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        headers = {}
        if client_secret is None:
            fields["client_id"] = client_id
        else:
            basic = base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
            headers["Authorization"] = f"Basic {basic}"
        resp = post_form(f"{self.issuer}/token", fields, headers)
        try:
            body = resp.json()
        except ValueError:
            body = {"raw": resp.text}
        return resp.status, body


# ---------------------------------------------------------------------------
# credbroker configuration
# ---------------------------------------------------------------------------

def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (str, Path)):
        return json.dumps(str(value))  # JSON string escapes are valid TOML basic strings
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def toml_dumps(data: Mapping[str, Any], _prefix: str = "") -> str:
    """Minimal TOML writer for nested dicts of str/int/bool/lists (enough for the config)."""
    lines, tables = [], []
    for key, value in data.items():
        if isinstance(value, Mapping):
            tables.append((key, value))
        elif value is not None:
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    out = ""
    if _prefix and (lines or not tables):
        out += f"[{_prefix}]\n"
    if lines:
        out += "\n".join(lines) + "\n\n"
    for key, value in tables:
        name = f"{_prefix}.{_toml_key(key)}" if _prefix else _toml_key(key)
        out += toml_dumps(value, name)
    return out


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that does not log each request to stderr."""

    def log_message(self, *_a: Any) -> None:
        pass


class LoopbackServer:
    """A test's own small HTTP server (a stand-in or a fault injector) on
    127.0.0.1:<ephemeral>, serving from a thread until ``stop()``."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]):
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def make_config(*, login: Mapping[str, Any], aws: Mapping[str, Any], profile: str = "default",
                server: Mapping[str, Any] | None = None, **profile_opts: Any) -> dict[str, Any]:
    """A credbroker config dict: one profile, loopback listener on port 0."""
    return {
        "server": {"listen": "127.0.0.1:0", **(server or {})},
        "profiles": {profile: {"region": REGION, **profile_opts, "login": dict(login), "aws": dict(aws)}},
    }


def oidc_login(oidc: OidcProvider, client_id: str = "daemon", **extra: Any) -> dict[str, Any]:
    return {"kind": "oidc", "issuer": oidc.issuer, "client_id": client_id, **extra}


def user_pool_login(pool: UserPool, **extra: Any) -> dict[str, Any]:
    return {"kind": "cognito-user-pool", "user_pool_id": pool.pool_id, "client_id": pool.client_id, **extra}


def write_secret(path: Path, value: str) -> Path:
    """Write a secret file the way a user would keep one: mode 0600, no newline."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value)
    os.chmod(path, 0o600)
    return path


def file_mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ---------------------------------------------------------------------------
# The daemon
# ---------------------------------------------------------------------------

def credbroker_bin() -> Path:
    return Path(os.environ.get("CREDBROKER_BIN") or REPO / "target" / "debug" / "credbroker")


def sdk_probe_bin() -> Path:
    return Path(os.environ.get("SDK_PROBE_BIN") or REPO / "target" / "debug" / "examples" / "sdk_probe")


class Daemon(_Process):
    """``credbroker serve -c <workdir>/config.toml`` with its own XDG dirs in ``workdir``."""

    name = "daemon"
    # The `listening addr=` value start() accepts (subclasses may widen it, e.g. to [::1]).
    ADDR_RE = r"127\.0\.0\.1:\d+"

    def __init__(self, workdir: Path | None = None, config: Mapping[str, Any] | str | None = None, *,
                 moto_url: str | None = None, rust_log: str = "info",
                 extra_env: Mapping[str, Any] | None = None, binary: Path | None = None):
        super().__init__(workdir)
        self.config = config if config is not None else {}
        self.config_path = self.workdir / "config.toml"
        self.runtime_dir = self.workdir / "runtime"
        self.state_dir = self.workdir / "state"
        self.config_home = self.workdir / "config-home"
        for d in (self.runtime_dir, self.state_dir, self.config_home):
            d.mkdir(mode=0o700, exist_ok=True)
        self.binary = binary or credbroker_bin()
        self.moto_url = moto_url
        self.rust_log = rust_log
        self.extra_env = dict(extra_env or {})
        self.addr = ""
        # Set by fixtures: the IdP the daemon logs in to and the refresh token it was given.
        self.idp: OidcProvider | None = None
        self.minted_refresh_token: str | None = None

    # -- paths ------------------------------------------------------------------

    @property
    def env(self) -> dict[str, str]:
        """The daemon's environment; ``status``/``env`` subcommands get the same one."""
        extra: dict[str, Any] = {
            "XDG_RUNTIME_DIR": self.runtime_dir,
            "XDG_STATE_HOME": self.state_dir,
            "XDG_CONFIG_HOME": self.config_home,
            "RUST_LOG": self.rust_log,
            "RUST_BACKTRACE": "1",
        }
        if self.moto_url:
            extra["AWS_ENDPOINT_URL"] = self.moto_url
        extra.update(self.extra_env)
        return clean_env(**extra)

    def _profile(self, profile: str) -> Mapping[str, Any]:
        if isinstance(self.config, str):
            return {}
        return self.config.get("profiles", {}).get(profile, {})

    def refresh_token_path(self, profile: str = "default") -> Path:
        configured = self._profile(profile).get("login", {}).get("refresh_token_file")
        return Path(configured) if configured else self.state_dir / "credbroker" / profile / "refresh-token"

    def identity_id_path(self, profile: str = "default") -> Path:
        return self.state_dir / "credbroker" / profile / "identity-id"

    @property
    def ecs_token_path(self) -> Path:
        configured = None if isinstance(self.config, str) else self.config.get("server", {}).get("ecs_token_file")
        return Path(configured) if configured else self.runtime_dir / "credbroker" / "ecs-token"

    @property
    def daemon_json_path(self) -> Path:
        return self.runtime_dir / "credbroker" / "daemon.json"

    def write_refresh_token(self, token: str, profile: str = "default") -> Path:
        return write_secret(self.refresh_token_path(profile), token)

    def read_refresh_token(self, profile: str = "default") -> str:
        return self.refresh_token_path(profile).read_text()

    def ecs_token(self) -> str:
        return self.ecs_token_path.read_text()

    def write_config(self) -> Path:
        text = self.config if isinstance(self.config, str) else toml_dumps(self.config)
        self.config_path.write_text(text)
        return self.config_path

    # -- lifecycle --------------------------------------------------------------

    def _require_binary(self) -> None:
        if not self.binary.exists():
            raise HarnessError(
                f"credbroker binary not found at {self.binary}. Build it with `cargo build` "
                f"(or point CREDBROKER_BIN at it).")

    def start(self, *, wait_ready: bool = True, timeout: float = 30) -> "Daemon":
        self._require_binary()
        self.write_config()
        self.addr = ""
        self._spawn([str(self.binary), "serve", "-c", str(self.config_path)], self.env)

        def listening() -> str | None:
            self._check_alive()
            m = LISTENING_RE.search(self.current_logs())
            return m.group(1) if m else None

        self.addr = wait_for(listening, timeout, "the daemon's `listening addr=` log line",
                             on_timeout=lambda: tail(self.current_logs(), 80))
        if not re.fullmatch(self.ADDR_RE, self.addr):
            raise HarnessError(f"daemon listens on {self.addr}, expected {self.ADDR_RE}")
        if wait_ready:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 30) -> None:
        def ready() -> bool:
            self._check_alive()
            try:
                return self.get("/readyz", timeout=2).status == 200
            except OSError:
                return False

        wait_for(ready, timeout, "GET /readyz == 200", interval=0.25,
                 on_timeout=lambda: "--- daemon log ---\n" + tail(self.current_logs(), 80))

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM; the daemon must exit 0 within ``timeout`` seconds."""
        assert self.proc is not None, "daemon was never started"
        if self.proc.poll() is not None:
            raise AssertionError(f"daemon had already exited with {self.proc.returncode}\n"
                                 f"{tail(self.current_logs(), 60)}")
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"daemon did not exit within {timeout}s of SIGTERM\n"
                                 f"{tail(self.current_logs(), 60)}") from None
        assert rc == 0, f"daemon exited {rc} after SIGTERM (expected 0)\n{tail(self.current_logs(), 60)}"

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self, **start_kwargs: Any) -> "Daemon":
        self.stop()
        return self.start(**start_kwargs)

    def cli(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        """``credbroker <args> -c <config>`` with the daemon's environment."""
        self._require_binary()
        return subprocess.run([str(self.binary), *args, "-c", str(self.config_path)], env=self.env,
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    # -- HTTP -------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        assert self.addr, "daemon not started"
        return f"http://{self.addr}"

    def get(self, path: str, headers: Mapping[str, str] | None = None, timeout: float = 5) -> Response:
        return http_request("GET", self.base_url + path, headers, timeout=timeout)

    def imds_token(self, ttl: int = 21600) -> str:
        resp = http_request("PUT", f"{self.base_url}/latest/api/token", {IMDS_TTL_HEADER: str(ttl)})
        assert resp.status == 200, f"PUT /latest/api/token: {resp}"
        assert resp.header(IMDS_TTL_HEADER) == str(ttl), \
            f"token response must echo {IMDS_TTL_HEADER} (the Rust SDK requires it): {resp.headers}"
        assert resp.text and resp.text.strip() == resp.text, f"bad IMDS token body {resp.text!r}"
        return resp.text

    def imds_creds_response(self, token: str | None = None) -> tuple[Response, str | None]:
        """The 3-step IMDSv2 sequence → (last response, token); stops at the first non-200."""
        token = token or self.imds_token()
        hdrs = {IMDS_TOKEN_HEADER: token}
        base = "/latest/meta-data/iam/security-credentials/"
        listing = self.get(base, hdrs)
        if listing.status != 200:
            return listing, token
        role = listing.text
        assert role and role == role.strip() and "\n" not in role, f"bad IMDS role listing {role!r}"
        return self.get(base + role, hdrs), token

    def imds_creds(self) -> dict[str, Any]:
        resp, _ = self.imds_creds_response()
        assert resp.status == 200, f"IMDS credentials: {resp}"
        return resp.json()

    def ecs_creds_response(self, profile: str | None = None, token: str | None = None) -> Response:
        path = "/v1/credentials" + (f"/{profile}" if profile else "")
        return self.get(path, {"Authorization": token if token is not None else self.ecs_token()})

    def ecs_creds(self, profile: str | None = None) -> dict[str, Any]:
        resp = self.ecs_creds_response(profile)
        assert resp.status == 200, f"ECS credentials: {resp}"
        return resp.json()

    def status(self) -> dict[str, Any]:
        resp = self.get("/v1/status", {"Authorization": self.ecs_token()})
        assert resp.status == 200, f"GET /v1/status: {resp}"
        return resp.json()

    def profile_status(self, profile: str = "default") -> dict[str, Any]:
        return self.status()["profiles"][profile]

    def wait_state(self, state: str, timeout: float, profile: str = "default") -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            self._check_alive()
            st = self.profile_status(profile)
            return st if st.get("state") == state else None

        return wait_for(reached, timeout, f"profile {profile} state {state!r}", interval=1,
                        on_timeout=lambda: f"last status: {self.status()}\n{tail(self.current_logs(), 40)}")

    # -- SDK client environments -----------------------------------------------

    def sdk_env(self, mode: str, profile: str = "default", **extra: Any) -> dict[str, str]:
        """clean_env for an SDK process that gets its credentials from this daemon."""
        if mode == "imds":
            extra.setdefault("AWS_EC2_METADATA_SERVICE_ENDPOINT", f"{self.base_url}/")
        elif mode == "ecs":
            extra.setdefault("AWS_CONTAINER_CREDENTIALS_FULL_URI", f"{self.base_url}/v1/credentials/{profile}")
            extra.setdefault("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", self.ecs_token_path)
            extra.setdefault("AWS_EC2_METADATA_DISABLED", "true")
        else:
            raise ValueError(f"mode must be imds or ecs, not {mode!r}")
        return clean_env(**extra)


def run_credbroker(args: list[str], env: Mapping[str, str] | None = None,
                   timeout: float = 30) -> subprocess.CompletedProcess:
    """Run the credbroker binary once (for config/usage checks); never leaves it running."""
    binary = credbroker_bin()
    if not binary.exists():
        raise HarnessError(f"credbroker binary not found at {binary}")
    return subprocess.run([str(binary), *args], env=dict(env or clean_env()), capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


# ---------------------------------------------------------------------------
# SDK clients in subprocesses
# ---------------------------------------------------------------------------

_BOTO_PROBE = r"""
import json, botocore.session
creds = botocore.session.get_session().get_credentials()
if creds is None:
    raise SystemExit("no credentials found")
frozen = creds.get_frozen_credentials()
print(json.dumps({"method": creds.method, "access_key_id": frozen.access_key,
                  "has_secret": bool(frozen.secret_key), "has_token": bool(frozen.token)}))
"""


def run_checked(argv: list[str], env: Mapping[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, env=dict(env), capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise AssertionError(f"{argv[0]} exited {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}")
    return proc


def last_json_line(text: str) -> Any:
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise AssertionError(f"no JSON line in output:\n{text}")


def parse_json_output(text: str) -> Any:
    """A command's JSON output, pretty-printed or as one line among others."""
    try:
        return json.loads(text)
    except ValueError:
        return last_json_line(text)


def parse_exports(text: str) -> dict[str, str]:
    """``export NAME=value`` lines (as printed by ``credbroker env``) → dict."""
    exports = {}
    for line in text.splitlines():
        m = re.fullmatch(r"\s*export\s+([A-Z_][A-Z0-9_]*)=(.*)", line)
        if m:
            exports[m.group(1)] = m.group(2).strip().strip("'\"")
    if not exports:
        raise AssertionError(f"no `export NAME=value` lines in:\n{text}")
    return exports


def boto3_credentials(env: Mapping[str, str]) -> dict[str, Any]:
    """botocore's default credential chain in a subprocess → {method, access_key_id, ...}."""
    proc = run_checked([str(VENV_BIN / "python"), "-c", _BOTO_PROBE], env)
    return last_json_line(proc.stdout)


def aws_cli(args: list[str], env: Mapping[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    """The venv's AWS CLI v1; raises with its output on a non-zero exit."""
    return run_checked([str(VENV_BIN / "aws"), *args], env, timeout)


def caller_identity_via_cli(moto_url: str, env: Mapping[str, str]) -> dict[str, Any]:
    proc = aws_cli(["sts", "get-caller-identity", "--endpoint-url", moto_url, "--output", "json"], env)
    return json.loads(proc.stdout)


def sdk_probe(mode: str, env: Mapping[str, str]) -> dict[str, Any]:
    """Run the Rust example ``sdk_probe <mode>`` → its JSON line."""
    binary = sdk_probe_bin()
    if not binary.exists():
        raise AssertionError(
            f"Rust SDK probe not found at {binary}: build it with `cargo build --examples` "
            f"(examples/sdk_probe.rs) or set SDK_PROBE_BIN")
    proc = run_checked([str(binary), mode], env, timeout=90)
    return last_json_line(proc.stdout)


# ---------------------------------------------------------------------------
# Secret scanning
# ---------------------------------------------------------------------------

@dataclass
class SecretScan:
    """Collects named secret values and finds any of them in captured text."""

    values: dict[str, set[str]] = field(default_factory=dict)

    def add(self, name: str, value: str | None) -> None:
        if value:
            self.values.setdefault(name, set()).add(value)

    def needles(self) -> Iterable[tuple[str, str]]:
        for name, values in self.values.items():
            for value in values:
                yield name, value
                # Long random tokens must not leak even partially (e.g. a truncated log).
                if len(value) >= 32:
                    yield f"{name} (last 16 chars)", value[-16:]

    def add_daemon_secrets(self, daemon: "Daemon", moto: "Moto") -> None:
        """The secrets every daemon test holds: the ECS token, the minted and
        the current (rotated) refresh token, and every id_token the daemon
        sent upstream (at least one must have been seen)."""
        self.add("ECS token", daemon.ecs_token())
        self.add("minted refresh token", daemon.minted_refresh_token)
        self.add("rotated refresh token", daemon.read_refresh_token())
        for token in moto.web_identity_tokens():
            self.add("id_token", token)
        assert self.values.get("id_token"), "no id_token seen upstream"

    def leaks(self, texts: Mapping[str, str]) -> list[str]:
        found = []
        for source, text in texts.items():
            for name, needle in self.needles():
                if needle in text:
                    line = next(l for l in text.splitlines() if needle in l)
                    found.append(f"{name} found in {source}: {line[:300]}")
        return found


# ---------------------------------------------------------------------------
# A private D-Bus session bus (keyring and desktop-notification tests)
# ---------------------------------------------------------------------------

class SessionBus:
    """``dbus-daemon --session`` on a socket in ``workdir``; ``env`` points
    HOME, XDG_RUNTIME_DIR and DBUS_SESSION_BUS_ADDRESS at it (for the bus's
    own clients: gnome-keyring, secret-tool, dbus-monitor)."""

    def __init__(self, workdir: Path):
        missing = [t for t in ("dbus-daemon", "dbus-send") if not shutil.which(t)]
        if missing:
            raise HarnessError(f"missing {missing}: run tests/setup.sh (Debian: dbus)")
        self.home, self.run = workdir / "bus-home", workdir / "bus-run"
        for d in (self.home, self.run):
            d.mkdir(mode=0o700, exist_ok=True)
        self.socket = self.run / "bus"
        self.address = f"unix:path={self.socket}"
        self.env = clean_env(HOME=str(self.home), XDG_RUNTIME_DIR=str(self.run),
                             XDG_DATA_HOME=str(self.home / "share"), DBUS_SESSION_BUS_ADDRESS=self.address)
        self.procs: list[subprocess.Popen] = []
        self.procs.append(subprocess.Popen(
            ["dbus-daemon", "--session", "--nofork", "--nopidfile", f"--address={self.address}"],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_for(lambda: self.socket.exists(), 10, "the session bus socket")

    def spawn(self, argv: list[str], **kw: Any) -> subprocess.Popen:
        """Start a client of the bus, stopped with it."""
        p = subprocess.Popen(argv, env=self.env, **kw)
        self.procs.append(p)
        return p

    def has_owner(self, name: str) -> bool:
        r = subprocess.run(["dbus-send", "--session", "--print-reply", "--dest=org.freedesktop.DBus",
                            "/org/freedesktop/DBus", "org.freedesktop.DBus.NameHasOwner", f"string:{name}"],
                           env=self.env, capture_output=True, text=True, timeout=10)
        return r.returncode == 0 and "boolean true" in r.stdout

    def stop(self) -> None:
        for p in reversed(self.procs):
            stop_process(p)
