"""The SDK compatibility matrix (issue 3): real, unmodified AWS SDK clients run as
subprocesses against the real credbroker binary, fed by moto and oidc-provider.

Used by tests/e2e/test_compat.py, which turns every definition below into a
pytest item and, at the end of the module, writes docs/compatibility.md from
RESULTS.

- Clients (tests/clients/*, installed by tests/setup.sh): botocore/boto3 and the
  AWS CLI v1 (.venv), the AWS SDK for JavaScript v3 (npm, pinned by
  package-lock.json), the AWS SDK for Rust (examples/sdk_probe.rs, built by
  cargo), the AWS SDK for Go v2 and the AWS SDK for Ruby (Debian packages). Each
  prints one JSON line; see the header of each probe.
- ROWS x COLS: the matrix. A cell runs one client process in one serving mode
  (clean environment per protocol.md 4.1) and asserts that the SDK returned the
  daemon's current access key (compared with the daemon's ECS endpoint), that
  the expected provider produced it, and that moto's GetCallerIdentity says
  assumed-role/OidcRole/... for it. SPECIAL lists the cells that are N/A for a
  client's version (each with a check that the reason still holds, so a newer
  client that gains the feature turns the cell into a failure to revisit).
- LOOPS: one long-running process per SDK calling sts get-caller-identity once
  per second against one daemon with 60 s credentials, all at once.
- NEGATIVE: the same clients against tests/e2e/broken_imds.py, which breaks
  one thing per variant; protocol.md 4.2 I4-I7 says who must fail.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import platform
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import harness as h

REPO = h.REPO
CLIENTS_DIR = REPO / "tests" / "clients"
JS_DIR = CLIENTS_DIR / "js"
PY_PROBE = CLIENTS_DIR / "python" / "probe.py"
RB_PROBE = CLIENTS_DIR / "ruby" / "probe.rb"
TABLE_PATH = REPO / "docs" / "compatibility.md"
PARTIAL_TABLE_PATH = REPO / "target" / "compat" / "compatibility.partial.md"

EXPECTED_ARN = f"arn:aws:sts::{h.ACCOUNT_ID}:assumed-role/OidcRole/{h.SESSION_NAME}"
# The daemons' profile region. Clients pin us-east-1 (protocol.md 4.1) except in the
# region cells, so finding this value proves it came from the daemon's IMDS.
IMDS_REGION = "eu-central-1"
LOOP_SECONDS = int(os.environ.get("COMPAT_LOOP_SECONDS", "120"))
LOOP_DURATION = "60s"  # credential lifetime for the long-running clients: a rotation every ~30 s
MIN_ROTATIONS = 3
WRONG_ECS_TOKEN = "compat-wrong-token-0123456789abcdef"  # what the rotation cells write into the file

SETUP_HINT = "run `bash tests/setup.sh` (as root it also installs the Debian packages)"
GO_DEBS = "golang-go golang-github-aws-aws-sdk-go-v2-dev"
RUBY_DEBS = "ruby ruby-aws-sdk-core"

# Installed client sources that N/A cells cite (and re-check).
GO_SDK_SRC = Path("/usr/share/gocode/src/github.com/aws/aws-sdk-go-v2")
RUBY_SDK_GLOB = "/usr/share/rubygems-integration/all/gems/aws-sdk-core-3*/lib/aws-sdk-core"
JS_IMDS_SRC = JS_DIR / "node_modules" / "@smithy" / "credential-provider-imds" / "dist-cjs" / "index.js"


# ---------------------------------------------------------------------------
# Results (read by the table writer)
# ---------------------------------------------------------------------------

RESULTS: dict[str, dict[Any, dict[str, Any]]] = {"cells": {}, "loops": {}, "negative": {}, "checks": {}}
VERSIONS: dict[str, str] = {}


def note_version(client: str, out: Mapping[str, Any] | None) -> None:
    if out and out.get("version") and client not in VERSIONS:
        VERSIONS[client] = str(out["version"])


# ---------------------------------------------------------------------------
# Clients
# ---------------------------------------------------------------------------

# Debian's python3-botocore / python3-boto3 (1.29 / 1.26 on bookworm), run by the system
# Python in isolated mode (-I: no user site, no PYTHON* variables), i.e. its own
# environment, never the repo's .venv.
SYSTEM_PYTHON = Path("/usr/bin/python3")
# Debian 12's `awscli` package: the AWS CLI v2 (2.9), built from source against the system
# Python, with the v2 CLI's own vendored botocore (`awscli/botocore`, "2.0.0dev…").
AWSCLI2 = Path("/usr/bin/aws")
AWSCLI2_SRC = Path("/usr/lib/python3/dist-packages/awscli/botocore")
OLD_BOTOCORE_DEBS = "python3-botocore python3-boto3"


def go_probe_bin() -> Path:
    return Path(os.environ.get("GO_PROBE_BIN") or REPO / "target" / "compat" / "go-probe")


@functools.cache
def missing(client: str) -> str | None:
    """Why ``client`` cannot run on this machine (None when it can)."""
    if client in ("python", "awscli"):
        exe = h.VENV_BIN / ("python" if client == "python" else "aws")
        return None if exe.exists() else f"{exe} not found: {SETUP_HINT}"
    if client == "awscli2":
        if not AWSCLI2.exists():
            return f"{AWSCLI2} not found: apt-get install awscli (Debian 12: the AWS CLI v2 2.9)"
        proc = subprocess.run([str(AWSCLI2), "--version"], capture_output=True, text=True, timeout=60,
                              env=h.clean_env())
        return None if proc.stdout.startswith("aws-cli/2.") else (
            f"{AWSCLI2} is not the AWS CLI v2 ({(proc.stdout + proc.stderr).strip()[:200]}): apt-get install awscli")
    if client == "botocore-deb":
        if not SYSTEM_PYTHON.exists():
            return f"{SYSTEM_PYTHON} not found: apt-get install python3 {OLD_BOTOCORE_DEBS}"
        proc = subprocess.run([str(SYSTEM_PYTHON), "-I", "-c", "import boto3, botocore; print(botocore.__file__)"],
                              capture_output=True, text=True, timeout=60)
        if proc.returncode != 0 or not proc.stdout.startswith("/usr/lib/python3/dist-packages/"):
            return (f"the system Python has no Debian botocore ({(proc.stderr or proc.stdout).strip()[:200]}): "
                    f"apt-get install {OLD_BOTOCORE_DEBS}")
        return None
    if client == "js":
        if not shutil.which("node"):
            return "node not found (Debian: apt-get install nodejs)"
        for pkg in ("@aws-sdk/client-sts", "@aws-sdk/credential-providers"):
            if not (JS_DIR / "node_modules" / pkg / "package.json").exists():
                return f"{pkg} missing in {JS_DIR}/node_modules: {SETUP_HINT} (npm ci)"
        return None
    if client == "rust":
        exe = h.sdk_probe_bin()
        return None if exe.exists() else f"{exe} not found: build it with `cargo build --examples`"
    if client == "go":
        exe = go_probe_bin()
        return None if exe.exists() else (
            f"{exe} not found: the Go SDK client needs `apt-get install {GO_DEBS}`, then {SETUP_HINT}")
    if client == "ruby":
        ruby = shutil.which("ruby")
        if not ruby:
            return f"ruby not found: apt-get install {RUBY_DEBS}"
        proc = subprocess.run([ruby, "-e", "require 'aws-sdk-core'; require 'aws-sdk-sts'"],
                              capture_output=True, text=True, timeout=60)
        return None if proc.returncode == 0 else (
            f"ruby cannot load aws-sdk-core/aws-sdk-sts ({proc.stderr.strip()[:200]}): apt-get install {RUBY_DEBS}")
    raise ValueError(client)


def argv(client: str, *args: str) -> list[str]:
    if client == "python":
        return [str(h.VENV_BIN / "python"), str(PY_PROBE), *args]
    if client == "botocore-deb":
        return [str(SYSTEM_PYTHON), "-I", str(PY_PROBE), *args]
    if client == "awscli2":
        return [str(AWSCLI2), *args]
    if client == "awscli":
        return [str(h.VENV_BIN / "aws"), *args]
    if client == "js":
        return [shutil.which("node") or "node", str(JS_DIR / "probe.mjs"), *args]
    if client == "rust":
        return [str(h.sdk_probe_bin()), *args]
    if client == "go":
        return [str(go_probe_bin()), *args]
    if client == "ruby":
        return [shutil.which("ruby") or "ruby", str(RB_PROBE), *args]
    raise ValueError(client)


_SHOWN_ENV = re.compile(r"^(AWS_|STS_ENDPOINT|RUBY_HTTP_DEBUG)")


@dataclass
class Run:
    argv: list[str]
    env: dict[str, str]
    rc: int | None  # None: timed out (killed)
    stdout: str
    stderr: str
    seconds: float

    @property
    def out(self) -> dict[str, Any] | None:
        for line in reversed(self.stdout.splitlines()):
            line = line.strip()
            if line.startswith("{"):
                try:
                    return json.loads(line)
                except ValueError:
                    return None
        return None

    @property
    def text(self) -> str:
        return self.stdout + "\n" + self.stderr

    def report(self) -> str:
        env = " ".join(f"{k}={v}" for k, v in sorted(self.env.items()) if _SHOWN_ENV.match(k)
                       and "TOKEN" not in k or k.endswith("TOKEN_FILE"))
        rc = "timed out" if self.rc is None else f"exit {self.rc}"
        return (f"$ {env} {' '.join(self.argv)}\n  → {rc} after {self.seconds:.1f}s\n"
                f"  stdout: {h.tail(self.stdout, 10)}\n  stderr: {h.tail(self.stderr, 25)}")


def run(args: list[str], env: Mapping[str, str], timeout: float = 90) -> Run:
    start = time.monotonic()
    try:
        proc = subprocess.run(args, env=dict(env), capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, cwd=str(REPO))
        return Run(args, dict(env), proc.returncode, proc.stdout, proc.stderr, time.monotonic() - start)
    except subprocess.TimeoutExpired as e:
        def text(b: Any) -> str:
            return b.decode("utf-8", "replace") if isinstance(b, bytes) else (b or "")
        return Run(args, dict(env), None, text(e.stdout), text(e.stderr), time.monotonic() - start)


# ---------------------------------------------------------------------------
# Daemons
# ---------------------------------------------------------------------------

class LoopbackDaemon(h.Daemon):
    """h.Daemon that may listen on any loopback address (``[::1]:0`` for the IPv6 cells)."""

    ADDR_RE = r"(127\.0\.0\.1|\[::1\]):\d+"

    @property
    def port(self) -> str:
        return self.addr.rsplit(":", 1)[1]


# kind → (server config, aws config): one daemon per kind, started on first use.
DAEMON_KINDS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "v2": ({}, {}),  # the default: IMDS v2-only
    "v1": ({"imds_v1": True}, {}),
    "ipv6": ({"listen": "[::1]:0"}, {}),
    "short": ({}, {"duration": LOOP_DURATION}),  # the long-running clients
}


class Daemons:
    """The matrix's daemons: OIDC (oidc-provider) → STS AssumeRoleWithWebIdentity
    (moto) into h.OIDC_ROLE_ARN, each with a grant of its own."""

    def __init__(self, moto_url: str, idp: h.OidcProvider, workdir: Path):
        self.moto_url = moto_url
        self.idp = idp
        self.workdir = workdir
        self._daemons: dict[str, LoopbackDaemon] = {}
        self._lock = threading.Lock()
        self.secrets = h.SecretScan()

    def get(self, kind: str) -> LoopbackDaemon:
        with self._lock:
            if kind not in self._daemons:
                server, aws = DAEMON_KINDS[kind]
                # The v2 daemon's profile also has an IMDS port of its own (`imds_listen`):
                # the "own port" column.
                own = {"imds_listen": f"127.0.0.1:{_free_port()}"} if kind == "v2" else {}
                config = h.make_config(
                    login=h.oidc_login(self.idp),
                    aws={"flow": "sts", "role_arn": h.OIDC_ROLE_ARN, "session_name": h.SESSION_NAME, **aws},
                    server=server, region=IMDS_REGION, **own)
                daemon = LoopbackDaemon(self.workdir / f"daemon-{kind}", config, moto_url=self.moto_url)
                refresh_token = self.idp.mint("alice")
                daemon.write_refresh_token(refresh_token)
                self.secrets.add("refresh token", refresh_token)
                self._daemons[kind] = daemon
                daemon.start()
                self.secrets.add("ECS token", daemon.ecs_token())
            return self._daemons[kind]

    def own_port(self, kind: str) -> str:
        """The port of the profile's own IMDS listener, as the daemon reports it."""
        daemon = self.get(kind)
        info = json.loads(daemon.daemon_json_path.read_text())
        return info["imds_listeners"]["default"].rsplit(":", 1)[1]

    def creds(self, kind: str) -> dict[str, Any]:
        """The daemon's current credentials, read from its ECS endpoint."""
        body = self.get(kind).ecs_creds("default")
        self.secrets.add("secret access key", body.get("SecretAccessKey"))
        self.secrets.add("session token", body.get("Token"))
        return body

    def key(self, kind: str) -> str:
        return self.creds(kind)["AccessKeyId"]

    def started(self) -> dict[str, LoopbackDaemon]:
        return dict(self._daemons)

    def stop_all(self) -> list[str]:
        problems = []
        for kind, daemon in self._daemons.items():
            try:
                daemon.stop()
            except AssertionError as e:
                problems.append(f"daemon {kind}: {e}")
            finally:
                daemon.kill()
        return problems


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def endpoint_env(daemon: LoopbackDaemon, family: str, host: str, *, token: str = "env",
                 token_file: Path | None = None, moto_url: str | None = None, port: str | None = None,
                 **extra: Any) -> dict[str, str]:
    """clean_env for one client process pointed at ``daemon`` through ``host`` (and
    ``port``, by default the main listener's)."""
    base = f"http://{host}:{port or daemon.port}"
    env: dict[str, Any] = {"STS_ENDPOINT": moto_url}
    if family == "imds":
        env["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = base + "/"
    elif family == "ecs":
        env["AWS_CONTAINER_CREDENTIALS_FULL_URI"] = base + "/v1/credentials/default"
        env["AWS_EC2_METADATA_DISABLED"] = "true"
        if token == "env":
            env["AWS_CONTAINER_AUTHORIZATION_TOKEN"] = daemon.ecs_token()
        else:
            assert token_file is not None
            env["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"] = token_file
    else:
        raise ValueError(family)
    env.update(extra)
    return h.clean_env(**{k: v for k, v in env.items() if v is not None or k in extra})


def client_token_file(daemon: h.Daemon, directory: Path) -> Path:
    """A copy of the daemon's ECS token that the client owns (the rotation cells rewrite
    it; the daemon's own file is never touched)."""
    directory.mkdir(parents=True, exist_ok=True)
    return h.write_secret(directory / f"ecs-token-{time.monotonic_ns()}", daemon.ecs_token())


# ---------------------------------------------------------------------------
# The matrix
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Row:
    id: str
    label: str
    client: str
    families: frozenset[str]  # imds / ecs / region
    get: tuple[str, ...] = ()  # probe argv for one fetch
    source: Mapping[str, str] = field(default_factory=dict)  # family → expected provider marker
    rotate: tuple[str, ...] = ()  # probe argv prefix for the token-file rotation (FILE WRONG appended)


@dataclass(frozen=True)
class Col:
    id: str
    label: str
    family: str  # imds / ecs / region
    daemon: str  # DAEMON_KINDS key
    host: str = "127.0.0.1"
    token: str = "env"  # ECS: env or file
    env: Mapping[str, str] = field(default_factory=dict)
    own_port: bool = False  # IMDS on the profile's own `imds_listen` port, not the main listener


IMDS, ECS, REGION = "imds", "ecs", "region"
BOTH = frozenset({IMDS, ECS})

ROWS = [
    Row("botocore", "boto3 / botocore — default chain", "python", BOTH | {REGION}, ("get", "chain"),
        {IMDS: "iam-role", ECS: "container-role"}, ("rotate",)),
    Row("botocore-deb", "boto3 1.26 / botocore 1.29 (Debian 12 `python3-botocore`, system Python) — default chain",
        "botocore-deb", BOTH, ("get", "chain"), {IMDS: "iam-role", ECS: "container-role"}, ("rotate",)),
    Row("awscli", "AWS CLI v1 — `sts get-caller-identity`, `configure list`", "awscli", BOTH,
        source={IMDS: "iam-role", ECS: "container-role"}),
    Row("awscli-export", "AWS CLI v1 — `configure export-credentials`", "awscli", BOTH),
    Row("awscli2", "AWS CLI v2 2.9 (Debian 12 `awscli`) — `sts get-caller-identity`, `configure list`", "awscli2",
        BOTH, source={IMDS: "iam-role", ECS: "container-role"}),
    Row("awscli2-export", "AWS CLI v2 2.9 (Debian 12) — `configure export-credentials`", "awscli2", BOTH),
    Row("py-v4", "Python SDK v4 providers (`aws-credentials-imds`, `aws-credentials-http` 0.4, PyPI)", "py-v4",
        BOTH),
    Row("js-imds", "JS v3 — `fromInstanceMetadata`", "js", frozenset({IMDS}), ("get", "imds"),
        {IMDS: "CREDENTIALS_IMDS"}),
    Row("js-container", "JS v3 — `fromContainerMetadata`", "js", frozenset({ECS}), ("get", "container")),
    Row("js-http", "JS v3 — `fromHttp`", "js", frozenset({ECS}), ("get", "http"), {ECS: "CREDENTIALS_HTTP"},
        ("rotate", "http")),
    Row("js-chain", "JS v3 — `fromNodeProviderChain` (default chain)", "js", BOTH | {REGION}, ("get", "chain"),
        {ECS: "CREDENTIALS_HTTP"}),  # the chain tags no feature for its IMDS path
    Row("rust-imds", "Rust — `ImdsCredentialsProvider`", "rust", frozenset({IMDS}), ("imds",)),
    Row("rust-ecs", "Rust — `EcsCredentialsProvider`", "rust", frozenset({ECS}), ("ecs",), rotate=("rotate",)),
    Row("rust-chain", "Rust — `DefaultCredentialsChain`", "rust", BOTH | {REGION}, ("chain",)),
    Row("go", "Go v2 — `config.LoadDefaultConfig`", "go", BOTH | {REGION}, ("get",),
        {IMDS: "EC2RoleProvider", ECS: "CredentialsEndpointProvider"}),
    Row("ruby-imds", "Ruby — `InstanceProfileCredentials.new(port:)` ¹", "ruby", frozenset({IMDS}), ("get", "imds"),
        {IMDS: "Aws::InstanceProfileCredentials"}),
    Row("ruby-chain", "Ruby — default chain, environment only", "ruby", BOTH | {REGION}, ("get", "chain")),
]

COLS = [
    Col("imds-v2", "IMDSv2 (daemon v2-only)", IMDS, "v2"),
    Col("imds-v1-on", "IMDS, daemon `imds_v1 = true`", IMDS, "v1"),
    Col("imds-client-v1-off", "IMDS, client `AWS_EC2_METADATA_V1_DISABLED=true`", IMDS, "v2",
        env={"AWS_EC2_METADATA_V1_DISABLED": "true"}),
    Col("imds-localhost", "IMDS at `localhost`", IMDS, "v2", host="localhost"),
    Col("imds-ipv6", "IMDS at `[::1]`", IMDS, "ipv6", host="[::1]"),
    Col("imds-own-port", "IMDS on the profile's own port (`imds_listen`)", IMDS, "v2", own_port=True),
    Col("ecs-token", "ECS, `AWS_CONTAINER_AUTHORIZATION_TOKEN`", ECS, "v2"),
    Col("ecs-token-file", "ECS, `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`", ECS, "v2", token="file"),
    Col("ecs-file-rotated", "ECS, token file rewritten between fetches (one process)", ECS, "v2", token="file"),
    Col("ecs-localhost", "ECS at `localhost`", ECS, "v2", host="localhost"),
    Col("ecs-ipv6", "ECS at `[::1]`", ECS, "ipv6", host="[::1]"),
    Col("region", "Region from IMDS (no `AWS_REGION`)", REGION, "v2"),
]
ROW_BY_ID = {r.id: r for r in ROWS}
COL_BY_ID = {c.id: c for c in COLS}

# Rows that are not cells in some columns by construction (rendered "—"), with why.
NOT_A_CELL: dict[tuple[str, str], str] = {
    ("awscli", "ecs-file-rotated"): "one process per command: nothing to rotate between fetches",
    ("awscli2", "ecs-file-rotated"): "one process per command: nothing to rotate between fetches",
    ("awscli2-export", "ecs-file-rotated"): "one process per command: nothing to rotate between fetches",
    ("js-chain", "ecs-file-rotated"): "the chain memoizes; it calls `fromHttp` (row above) again only near expiry",
    ("rust-chain", "ecs-file-rotated"): "the chain delegates to `EcsCredentialsProvider` (row above), which reads "
                                        "the token file; `sdk_probe rotate` drives only that provider",
}
for _col in ("imds-v1-on", "imds-client-v1-off", "imds-localhost", "imds-ipv6", "imds-own-port", "ecs-token-file",
             "ecs-file-rotated", "ecs-localhost", "ecs-ipv6"):
    NOT_A_CELL[("awscli-export", _col)] = "the command does not exist (see the IMDSv2 / ECS cells)"


for _col in ("imds-v1-on", "imds-client-v1-off", "imds-localhost", "imds-ipv6", "imds-own-port", "ecs-token-file",
             "ecs-file-rotated", "ecs-localhost", "ecs-ipv6"):
    NOT_A_CELL[("py-v4", _col)] = "see the IMDSv2 / ECS cells: the providers cannot be installed here at all"
for _col in ("imds-v1-on", "imds-client-v1-off", "imds-localhost", "imds-ipv6", "ecs-localhost", "ecs-ipv6"):
    NOT_A_CELL[("awscli2-export", _col)] = ("the same credential resolution as the row above (one CLI start costs "
                                           "seconds, so only the modes that differ per command are run)")


def is_cell(row: Row, col: Col) -> bool:
    return col.family in row.families and (row.id, col.id) not in NOT_A_CELL


def cells() -> list[tuple[Row, Col]]:
    return [(r, c) for r in ROWS for c in COLS if is_cell(r, c)]


# Pass notes: facts worth a footnote on a cell that passes.
NOTES: dict[tuple[str, str], str] = {
    ("rust-imds", "imds-client-v1-off"): "aws-config's IMDS client is v2-only and never falls back, so the "
                                         "variable changes nothing (`imds/client.rs`)",
    ("rust-chain", "imds-client-v1-off"): "aws-config's IMDS client is v2-only and never falls back, so the "
                                          "variable changes nothing (`imds/client.rs`)",
    ("go", "imds-client-v1-off"): "Debian's feature/ec2/imds 1.12.19 does not read the variable "
                                  "(no `AWS_EC2_METADATA_V1_DISABLED` in `config/` or `feature/ec2/imds/`): "
                                  "the cell proves only that the client still works with it set",
    ("ruby-imds", "imds-client-v1-off"): "aws-sdk-core 3.168.1 does not read the variable: the cell proves only "
                                         "that the client still works with it set",
    ("go", "region"): "`config.WithEC2IMDSRegion()` reads `/latest/dynamic/instance-identity/document`",
    ("js-chain", "region"): "`STSClient` with no region configured: `@smithy/core` falls back to "
                            "`/latest/meta-data/placement/region` (IMDSv2 only)",
    ("rust-chain", "region"): "`aws_config::load_defaults` region chain: environment → profile file → "
                              "`ImdsRegionProvider` (`/latest/meta-data/placement/region`)",
}


@dataclass(frozen=True)
class Special:
    status: str  # "N/A": the client's version cannot do it
    reason: str
    # Re-checks the reason on this machine; raises AssertionError when it no longer holds.
    verify: Callable[["Context", Row, Col], str] | None = None


def _grep(path: Path | str, pattern: str) -> bool:
    paths = [Path(p) for p in sorted(Path("/").glob(str(path).lstrip("/")))] if "*" in str(path) else [Path(path)]
    if not paths or not all(p.exists() for p in paths):
        raise AssertionError(f"cannot re-check the N/A reason: {path} not found")
    rx = re.compile(pattern)
    for p in paths:
        files = [p] if p.is_file() else [f for f in p.rglob("*") if f.is_file() and f.suffix in (".go", ".rb", ".js")
                                         and not f.name.endswith("_test.go")]
        for f in files:
            if rx.search(f.read_text("utf-8", "replace")):
                return True
    return False


def _absent(path: Path | str, pattern: str, what: str) -> str:
    assert not _grep(path, pattern), (
        f"{what}: {pattern!r} now appears in {path}: the client may support this now; "
        f"turn the N/A cell into a real one")
    return f"re-checked: no {pattern!r} in {path}"


def _verify_awscli_export(ctx: "Context", row: Row, col: Col) -> str:
    r = ctx.run_client(row, col, ["configure", "export-credentials", "--format", "env"])
    assert r.rc not in (0, None) and "Invalid choice" in r.stderr, (
        "`aws configure export-credentials` no longer fails with 'Invalid choice': the installed AWS CLI "
        f"has it now; make this a real cell\n{r.report()}")
    return "re-checked: `aws configure export-credentials` → 'Invalid choice'"


def _verify_fails(pattern: str, why: str, args: tuple[str, ...] | None = None) -> Callable[..., str]:
    def verify(ctx: "Context", row: Row, col: Col) -> str:
        r = ctx.run_client(row, col, list(args or row.get))
        assert r.rc != 0 and re.search(pattern, r.text), (
            f"expected this client to fail ({why}), matching {pattern!r}; it did not — the N/A may no "
            f"longer hold\n{r.report()}")
        return f"re-checked: fails ({why})"
    return verify


def _verify_no_region(ctx: "Context", row: Row, col: Col) -> str:
    r = ctx.run_client(row, col, ["region"])
    out = r.out or {}
    assert r.rc == 0 and out.get("ok") and out.get("region") is None, (
        f"expected no region without AWS_REGION (the client does not ask IMDS)\n{r.report()}")
    return "re-checked: region is unset"


_AWSCLI_EXPORT = ("AWS CLI v1 has no `configure export-credentials` (an AWS CLI v2 command; v1's `configure` "
                  "offers `list`, `get`, `set`, `add-model`)")
_JS_CONTAINER_FILE = ("`fromContainerMetadata` (@smithy/credential-provider-imds) sends only "
                      "`AWS_CONTAINER_AUTHORIZATION_TOKEN`; it never reads the token file")
_GO_FILE = ("Debian's aws-sdk-go-v2 config 1.17.10 reads `AWS_CONTAINER_AUTHORIZATION_TOKEN` only "
            "(`config/env_config.go`); `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` support came later")
_RUBY_PORT = ("aws-sdk-core 3.168.1 ignores the port of `AWS_EC2_METADATA_SERVICE_ENDPOINT` and connects "
              "to port 80 (`instance_profile_credentials.rb`: `@port = options[:port] || 80`, "
              "`Net::HTTP.new(host, @port || uri.port)`; aws/aws-sdk-ruby#2997, fixed by #2998 in 2024)")
_RUBY_ECS = ("aws-sdk-core 3.168.1 `ECSCredentials` reads only `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` "
             "(host 169.254.170.2:80) and sends no `Authorization` header; the chain never uses "
             "`AWS_CONTAINER_CREDENTIALS_FULL_URI`")


OLD_BOTOCORE_SRC = Path("/usr/lib/python3/dist-packages/botocore")
_OLD_BOTOCORE_FILE = ("Debian's botocore 1.29 `ContainerProvider` reads `AWS_CONTAINER_AUTHORIZATION_TOKEN` only "
                      "(`credentials.py`); token-file support came in a later botocore")
_OLD_BOTOCORE_IPV6 = ("Debian's botocore 1.29 accepts only the FULL_URI hosts `169.254.170.2`, `localhost` and "
                      "`127.0.0.1` (`utils.py` `ContainerMetadataFetcher._ALLOWED_HOSTS`); any loopback IP came later")


_AWSCLI2_FILE = ("the AWS CLI 2.9's vendored botocore (`awscli/botocore`) reads `AWS_CONTAINER_AUTHORIZATION_TOKEN` "
                 "only (`credentials.py`): use `credbroker env --inline-token`")
_AWSCLI2_IPV6 = ("the AWS CLI 2.9 accepts only the FULL_URI hosts `169.254.170.2`, `localhost` and `127.0.0.1` "
                 "(`awscli/botocore/utils.py` `_ALLOWED_HOSTS`)")
_EXPORT_ARGS = ("configure", "export-credentials", "--format", "env")


def _old_botocore_file_verify(ctx: "Context", row: Row, col: Col) -> str:
    absent = _absent_py(OLD_BOTOCORE_SRC / "credentials.py", "AUTHORIZATION_TOKEN_FILE", "botocore 1.29")
    return absent + "; " + _verify_fails(r"Received non 200 response \(401\)", "no Authorization header: the "
                                         "daemon answers 401")(ctx, row, col)


def _absent_py(path: Path, pattern: str, what: str) -> str:
    assert path.is_file(), f"cannot re-check the N/A reason: {path} not found"
    assert not re.search(pattern, path.read_text("utf-8", "replace")), (
        f"{what}: {pattern!r} now appears in {path}: the client may support this now; turn the N/A cell into a "
        "real one")
    return f"re-checked: no {pattern!r} in {path}"


PY_V4_MIN = (3, 12)
_PY_V4 = ("the Python SDK v4 credential providers (PyPI `aws-credentials-imds`, `aws-credentials-http`) require "
          "Python ≥ 3.12; Debian 12 ships 3.11 and no newer Python is installed (re-checked: every `python3.N` on "
          "PATH and the venv's)")


def _py_v4_verify(ctx: "Context", row: Row, col: Col) -> str:
    import glob

    found = {}
    for exe in {*glob.glob("/usr/bin/python3*"), *glob.glob("/usr/local/bin/python3*"), str(h.VENV_BIN / "python")}:
        if not re.fullmatch(r".*/python3(\.\d+)?", exe) or not os.access(exe, os.X_OK):
            continue
        proc = subprocess.run([exe, "-I", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                              capture_output=True, text=True, timeout=30)
        if proc.returncode == 0:
            found[exe] = proc.stdout.strip()
    new = {e: v for e, v in found.items() if tuple(map(int, v.split("."))) >= PY_V4_MIN}
    assert not new, (f"Python ≥ 3.12 is available now ({new}): install aws-credentials-imds / aws-credentials-http "
                     "for it and make these real cells")
    return "re-checked: only " + ", ".join(sorted(set(found.values()))) + " installed"


def _ruby_port_verify(ctx: "Context", row: Row, col: Col) -> str:
    r = ctx.run_client(row, col, ["get", "imds-env"], RUBY_HTTP_DEBUG="1")
    assert r.rc != 0 and re.search(r"opening connection to [^ ]+:80\.\.\.", r.stderr), (
        f"expected Ruby to ignore the endpoint port and dial port 80\n{r.report()}")
    return "re-checked: the SDK dials port 80 and finds no credentials"


SPECIAL: dict[tuple[str, str], Special] = {
    ("awscli-export", "imds-v2"): Special("N/A", _AWSCLI_EXPORT, _verify_awscli_export),
    ("awscli-export", "ecs-token"): Special("N/A", _AWSCLI_EXPORT, _verify_awscli_export),
    ("js-container", "ecs-token-file"): Special(
        "N/A", _JS_CONTAINER_FILE,
        _verify_fails(r"Error response received from instance metadata service",
                      "no Authorization header: the daemon refuses the request")),
    ("js-container", "ecs-file-rotated"): Special(
        "N/A", _JS_CONTAINER_FILE,
        lambda ctx, row, col: _absent(JS_IMDS_SRC, "AUTHORIZATION_TOKEN_FILE", "fromContainerMetadata")),
    ("js-container", "ecs-ipv6"): Special(
        "N/A", "`fromContainerMetadata` accepts only the hosts `localhost` and `127.0.0.1` (`GREENGRASS_HOSTS`)",
        _verify_fails(r"is not a valid container metadata service hostname|hostname",
                      "the host [::1] is refused before any request")),
    ("go", "ecs-token-file"): Special(
        "N/A", _GO_FILE,
        lambda ctx, row, col: _absent(GO_SDK_SRC / "config", "AUTHORIZATION_TOKEN_FILE", "Go config")
        + "; " + _verify_fails(r"Unauthorized", "no Authorization header: the daemon answers 401 "
                                               "Unauthorized")(ctx, row, col)),
    ("go", "ecs-file-rotated"): Special(
        "N/A", _GO_FILE, lambda ctx, row, col: _absent(GO_SDK_SRC / "config", "AUTHORIZATION_TOKEN_FILE", "Go config")),
    ("botocore-deb", "ecs-token-file"): Special("N/A", _OLD_BOTOCORE_FILE, _old_botocore_file_verify),
    ("botocore-deb", "ecs-file-rotated"): Special(
        "N/A", _OLD_BOTOCORE_FILE,
        lambda ctx, row, col: _absent_py(OLD_BOTOCORE_SRC / "credentials.py", "AUTHORIZATION_TOKEN_FILE",
                                         "botocore 1.29")),
    ("botocore-deb", "ecs-ipv6"): Special(
        "N/A", _OLD_BOTOCORE_IPV6, _verify_fails(r"Unsupported host '::1'", "the host [::1] is refused before "
                                                                          "any request")),
    **{(row_id, "ecs-token-file"): Special(
        "N/A", _AWSCLI2_FILE,
        lambda ctx, row, col: _absent_py(AWSCLI2_SRC / "credentials.py", "AUTHORIZATION_TOKEN_FILE", "AWS CLI 2.9")
        + "; " + _verify_fails(r"Received non 200 response \(401\)", "no Authorization header: the daemon answers "
                               "401", _EXPORT_ARGS)(ctx, row, col)) for row_id in ("awscli2", "awscli2-export")},
    ("awscli2", "ecs-ipv6"): Special(
        "N/A", _AWSCLI2_IPV6, _verify_fails(r"Unsupported host '::1'", "the host [::1] is refused before any request",
                                            _EXPORT_ARGS)),
    ("py-v4", "imds-v2"): Special("N/A", _PY_V4, _py_v4_verify),
    ("py-v4", "ecs-token"): Special("N/A", _PY_V4, _py_v4_verify),
    ("botocore", "region"): Special(
        "N/A", "botocore never takes the client region from IMDS (it reads `placement/availability-zone/` only "
               "for `defaults_mode=auto`, protocol.md 1.7)", _verify_no_region),
    ("ruby-chain", "region"): Special(
        "N/A", "aws-sdk-core 3.168.1 never takes the client region from IMDS (it asks IMDS only for "
               "`defaults_mode` auto)", _verify_no_region),
}
for _c in COLS:
    if _c.family == IMDS:
        SPECIAL[("ruby-chain", _c.id)] = Special("N/A", _RUBY_PORT, _ruby_port_verify)
    if _c.family == ECS:
        SPECIAL[("ruby-chain", _c.id)] = Special(
            "N/A", _RUBY_ECS,
            lambda ctx, row, col: _absent(RUBY_SDK_GLOB + "/ecs_credentials.rb", "FULL_URI|Authorization",
                                          "Ruby ECSCredentials"))


@dataclass
class Context:
    """What every matrix test shares (built once per module by test_compat.py)."""

    moto_url: str
    daemons: Daemons
    tmp: Path
    longrun: "LongRun | None" = None

    def env_for(self, col: Col, **extra: Any) -> dict[str, str]:
        daemon = self.daemons.get(col.daemon)
        family = IMDS if col.family == REGION else col.family
        token_file = client_token_file(daemon, self.tmp / "tokens") if col.token == "file" else None
        extra = {**col.env, **extra}
        if col.family == REGION:
            extra.update(AWS_REGION=None, AWS_DEFAULT_REGION=None)
        port = self.daemons.own_port(col.daemon) if col.own_port else None
        return endpoint_env(daemon, family, col.host, token=col.token, token_file=token_file,
                            moto_url=self.moto_url, port=port, **extra)

    def run_client(self, row: Row, col: Col, args: list[str], **extra: Any) -> Run:
        reason = missing(row.client)
        if reason:
            raise AssertionError(f"{row.client} client is not installed: {reason}")
        return run(argv(row.client, *args), self.env_for(col, **extra))


# ---------------------------------------------------------------------------
# Checking one cell
# ---------------------------------------------------------------------------

def check_get(run_: Run, *, client: str, want_key: Callable[[], str], source: str | None,
              arn: bool = True) -> dict[str, Any]:
    out = run_.out
    note_version(client, out)
    assert run_.rc == 0 and out and out.get("ok", True), f"the client failed\n{run_.report()}"
    key = out.get("access_key_id")
    expected = want_key()
    assert key == expected, (f"the SDK returned access key {key!r}, the daemon serves {expected!r}\n"
                             f"{run_.report()}")
    if arn:
        assert out.get("arn") == EXPECTED_ARN, (f"GetCallerIdentity with the SDK's credentials gave "
                                                f"{out.get('arn')!r}, expected {EXPECTED_ARN!r}\n{run_.report()}")
    if source:
        got = out.get("source")
        features = out.get("provider_features") or []
        assert got == source or source in features, (
            f"expected the credentials to come from {source!r}, got source={got!r} "
            f"features={features}\n{run_.report()}")
    return out


def check_cell(ctx: Context, row: Row, col: Col) -> str:
    """Run one cell; raise AssertionError on failure; return a short detail for the table."""
    daemon_kind = col.daemon
    want = lambda: ctx.daemons.key(daemon_kind)  # noqa: E731 - read after the client ran

    if row.id == "awscli2-export":
        return _check_awscli_export(ctx, row, col, want)
    if row.client in ("awscli", "awscli2"):
        return _check_awscli(ctx, row, col, want)

    if col.family == REGION:
        assert IMDS_REGION != h.REGION, "IMDS_REGION must differ from the region clients are pinned to"
        r = ctx.run_client(row, col, ["region"])
        note_version(row.client, r.out)
        # sdk_probe prints no "ok" (it exits non-zero on failure); the other probes do.
        assert r.rc == 0 and r.out and r.out.get("ok", True), f"the client failed\n{r.report()}"
        assert r.out.get("region") == IMDS_REGION, (
            f"region {r.out.get('region')!r}, expected the daemon's {IMDS_REGION!r} from IMDS\n{r.report()}")
        return f"region {IMDS_REGION}"

    if col.id == "ecs-file-rotated":
        return _check_rotation(ctx, row, col, want)

    r = ctx.run_client(row, col, list(row.get))
    out = check_get(r, client=row.client, want_key=want, source=row.source.get(col.family))
    return str(out.get("source") or out.get("provider") or "")


def _check_awscli(ctx: Context, row: Row, col: Col, want: Callable[[], str]) -> str:
    env = ctx.env_for(col)
    r = run(argv(row.client, "sts", "get-caller-identity", "--endpoint-url", ctx.moto_url, "--output", "json"), env)
    assert r.rc == 0, f"aws sts get-caller-identity failed\n{r.report()}"
    arn = json.loads(r.stdout)["Arn"]
    assert arn == EXPECTED_ARN, f"aws sts get-caller-identity: {arn!r}, expected {EXPECTED_ARN!r}\n{r.report()}"
    listing = run(argv(row.client, "configure", "list"), env)
    assert listing.rc == 0, f"aws configure list failed\n{listing.report()}"
    m = re.search(r"^\s*access_key\s+\*+(\w{4})\s+(\S+)", listing.stdout, re.M)
    assert m, f"no access_key line in `aws configure list`\n{listing.report()}"
    key = want()
    assert m.group(1) == key[-4:], (f"`aws configure list` shows a key ending {m.group(1)!r}, the daemon serves "
                                    f"one ending {key[-4:]!r}\n{listing.report()}")
    assert m.group(2) == row.source[col.family], (
        f"`aws configure list` says type {m.group(2)!r}, expected {row.source[col.family]!r}\n{listing.report()}")
    if row.client not in VERSIONS:  # one `aws --version` per client (a CLI start costs seconds)
        version = run(argv(row.client, "--version"), env)
        VERSIONS[row.client] = (version.stdout + version.stderr).strip()
    return m.group(2)


def _check_awscli_export(ctx: Context, row: Row, col: Col, want: Callable[[], str]) -> str:
    """`aws configure export-credentials --format env` (AWS CLI v2): the exported key is
    the daemon's, with a secret, a session token and an expiration."""
    r = ctx.run_client(row, col, ["configure", "export-credentials", "--format", "env"])
    assert r.rc == 0, f"aws configure export-credentials failed\n{r.report()}"
    got = dict(re.findall(r"^export (AWS_[A-Z_]+)=(.*)$", r.stdout, re.M))
    assert got.get("AWS_ACCESS_KEY_ID") == want(), (
        f"exported key {got.get('AWS_ACCESS_KEY_ID')!r}, the daemon serves {want()!r}\n{r.report()}")
    missing_vars = {"AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_CREDENTIAL_EXPIRATION"} - set(got)
    assert not missing_vars, f"export-credentials lacks {missing_vars}\n{r.report()}"
    ctx.daemons.secrets.add("exported secret key", got["AWS_SECRET_ACCESS_KEY"])
    return "export-credentials"


# How each client reports fetch 2 of the rotation cells (the daemon's 401 for the wrong token).
ROTATE_REFUSED = {
    "python": r"Received non 200 response 401 from container metadata",  # CredentialRetrievalError
    "botocore-deb": r"Received non 200 response 401 from container metadata",
    "js": r"Server responded with status: 401",  # CredentialsProviderError (fromHttp)
    "rust": r"Non-success status from HTTP credential provider: StatusCode\(401\)",  # ProviderError
}


def _check_rotation(ctx: Context, row: Row, col: Col, want: Callable[[], str]) -> str:
    """The daemon accepts exactly one token, so "rotation" is: fetch with the right token in
    the client's file (must succeed), rewrite the file with a wrong token and fetch again in
    the same process (must be refused with 401: proof that the SDK re-reads the file per
    fetch), restore it and fetch a third time (must succeed again)."""
    env = ctx.env_for(col)
    path = env["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"]
    right = Path(path).read_text()
    ctx.daemons.secrets.add("wrong ECS token", WRONG_ECS_TOKEN)
    r = run(argv(row.client, *row.rotate, path, WRONG_ECS_TOKEN), env)
    out = r.out
    note_version(row.client, out)
    assert r.rc == 0 and out and out.get("ok"), f"the client failed\n{r.report()}"
    fetches = out["fetches"]
    key = want()
    assert len(fetches) == 3, f"expected three fetches: {fetches}"
    first, second, third = fetches
    assert first.get("ok") and first.get("access_key_id") == key, f"fetch 1 (right token): {first}\n{r.report()}"
    assert not second.get("ok"), (f"fetch 2 (file rewritten with a wrong token) succeeded: the SDK did not "
                                  f"re-read the token file\n{r.report()}")
    pattern = ROTATE_REFUSED[row.client]
    assert re.search(pattern, second.get("error", "")), (
        f"fetch 2 should be refused with 401 (matching {pattern!r}): {second}\n{r.report()}")
    assert third.get("ok") and third.get("access_key_id") == key, f"fetch 3 (restored): {third}\n{r.report()}"
    assert Path(path).read_text() == right, "the probe did not restore the token file"
    return "re-read per fetch: ok → 401 → ok"


# ---------------------------------------------------------------------------
# Long-running clients
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Loop:
    id: str
    label: str
    client: str
    family: str
    args: tuple[str, ...]  # LOOP_SECONDS is appended
    min_keys: int
    note: str = ""
    token: str = "file"  # ECS
    consecutive: bool = False  # its keys must be consecutive in the daemon's sequence (no rotation skipped)


_RUST_LOOP_NOTE = ("one process, one STS client; the SDK's identity cache (`LazyCache`) refreshes 5–10 s before "
                   "the Expiration (10 s buffer less 0–5 s jitter), i.e. 20–25 s after the daemon rotated, so it "
                   "follows every rotation that late and misses only the last one (one key fewer than the daemon "
                   "served). Also asserted: the keys its requests were signed with (read from each signature) are "
                   "consecutive in the daemon's sequence, no rotation skipped")

LOOPS = [
    Loop("botocore-ecs", "boto3 / botocore — default chain → ECS (token file)", "python", ECS, ("loop", "chain"),
         MIN_ROTATIONS + 1, "container credentials are not stretched: botocore refreshes before every call "
         "once fewer than 10 min remain, so it follows every rotation"),
    Loop("botocore-imds", "boto3 / botocore — default chain → IMDS", "python", IMDS, ("loop", "chain"), 1,
         "expected: botocore stretches IMDS credentials expiring within 17–25 min to now+17–25 min "
         "(`InstanceMetadataFetcher._evaluate_expiration`, protocol.md 1.6) and then refreshes only after ~2–10 "
         "min, so with 60 s credentials it keeps one key for the whole loop; moto does not enforce expiry, real "
         "STS would reject those calls after 60 s. The daemon's default `refresh_before = 30m` with ≥1 h "
         "credentials keeps every served Expiration ≥30 min ahead, outside that window"),
    Loop("botocore129-ecs", "boto3 1.26 / botocore 1.29 (Debian) — default chain → ECS (token env)", "botocore-deb",
         ECS, ("loop", "chain"), MIN_ROTATIONS + 1, "botocore 1.29 cannot read the token file", token="env"),
    Loop("js-ecs", "JS v3 — `fromNodeProviderChain` → ECS (`fromHttp`, token file)", "js", ECS, ("loop", "chain"),
         MIN_ROTATIONS + 1),
    Loop("js-imds", "JS v3 — `fromNodeProviderChain` → IMDS", "js", IMDS, ("loop", "chain"), MIN_ROTATIONS + 1),
    Loop("go-ecs", "Go v2 — default config → ECS (token env)", "go", ECS, ("loop",), MIN_ROTATIONS + 1,
         token="env"),
    Loop("go-imds", "Go v2 — default config → IMDS", "go", IMDS, ("loop",), MIN_ROTATIONS,
         "the IMDS cache has no expiry window: Go uses each key until its Expiration, then fetches the key "
         "the daemon rotated to 30 s earlier, so it sees one rotation fewer than the daemon"),
    Loop("ruby-imds", "Ruby — `InstanceProfileCredentials.new(port:)`", "ruby", IMDS, ("loop", "imds"),
         MIN_ROTATIONS + 1),
    Loop("rust-imds", "Rust — `ImdsCredentialsProvider` (`sdk_probe loop imds`)", "rust", IMDS, ("loop", "imds"),
         MIN_ROTATIONS + 1, _RUST_LOOP_NOTE, consecutive=True),
    Loop("rust-ecs", "Rust — `EcsCredentialsProvider` (`sdk_probe loop ecs`, token file)", "rust", ECS,
         ("loop", "ecs"), MIN_ROTATIONS + 1, _RUST_LOOP_NOTE, consecutive=True),
]


class LongRun:
    """All long-running clients at once against one daemon with 60 s credentials, plus a
    watcher that records every key the daemon serves."""

    def __init__(self, ctx: Context, seconds: int = LOOP_SECONDS):
        self.ctx = ctx
        self.seconds = seconds
        self.procs: dict[str, tuple[subprocess.Popen, Path, Path, dict[str, str]]] = {}
        self.served: list[tuple[float, str]] = []  # (time, key) for each key first seen
        self.watch_errors: list[str] = []
        self.skipped: dict[str, str] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.started_at = 0.0
        self.finished_at = 0.0

    def _env(self, loop: Loop) -> dict[str, str]:
        daemon = self.ctx.daemons.get("short")
        token_file = client_token_file(daemon, self.ctx.tmp / "tokens") if loop.family == ECS else None
        return endpoint_env(daemon, loop.family, "127.0.0.1", token=loop.token if loop.family == ECS else "env",
                            token_file=token_file, moto_url=self.ctx.moto_url)

    def start(self) -> "LongRun":
        daemon = self.ctx.daemons.get("short")
        self.started_at = time.monotonic()
        logdir = self.ctx.tmp / "loops"
        logdir.mkdir(parents=True, exist_ok=True)
        for loop in LOOPS:
            reason = missing(loop.client)
            if reason:
                self.skipped[loop.id] = reason
                continue
            env = self._env(loop)
            out_path, err_path = logdir / f"{loop.id}.out", logdir / f"{loop.id}.err"
            with open(out_path, "wb") as out, open(err_path, "wb") as err:
                proc = subprocess.Popen(argv(loop.client, *loop.args, str(self.seconds)), env=env, stdout=out,
                                        stderr=err, stdin=subprocess.DEVNULL, cwd=str(REPO))
            self.procs[loop.id] = (proc, out_path, err_path, env)
        t = threading.Thread(target=self._watch, args=(daemon,), name="served-keys", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def _watch(self, daemon: h.Daemon) -> None:
        deadline = self.started_at + self.seconds + 15
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                body = self.ctx.daemons.creds("short")
                key = body["AccessKeyId"]
                if key not in [k for _, k in self.served]:
                    self.served.append((time.monotonic() - self.started_at, key))
            except Exception as e:  # noqa: BLE001 - reported by the test
                self.watch_errors.append(f"{time.monotonic() - self.started_at:.0f}s: {e}")
            self._stop.wait(1)

    def wait(self) -> dict[str, dict[str, Any]]:
        """Wait for every loop; return {loop id: result dict}."""
        results: dict[str, dict[str, Any]] = {}
        for loop_id, (proc, out_path, err_path, env) in self.procs.items():
            try:
                proc.wait(timeout=max(5.0, self.started_at + self.seconds + 60 - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            stdout, stderr = out_path.read_text("utf-8", "replace"), err_path.read_text("utf-8", "replace")
            r = Run(proc.args, env, proc.returncode, stdout, stderr, self.seconds)
            results[loop_id] = {"rc": proc.returncode, "out": r.out, "report": r.report()}
        self.finished_at = time.monotonic()
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)
        return results

    def stop(self) -> None:
        self._stop.set()
        for proc, *_ in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


# ---------------------------------------------------------------------------
# Negative controls (tests/e2e/broken_imds.py)
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class NegClient:
    id: str
    client: str
    family: str
    args: tuple[str, ...]


NEG_CLIENTS = [
    NegClient("botocore-imds", "python", IMDS, ("get", "chain")),
    NegClient("botocore-ecs", "python", ECS, ("get", "chain")),
    NegClient("botocore129-imds", "botocore-deb", IMDS, ("get", "chain")),
    NegClient("js-imds", "js", IMDS, ("get", "imds")),
    NegClient("js-http", "js", ECS, ("get", "http")),
    NegClient("rust-imds", "rust", IMDS, ("imds",)),
    NegClient("rust-ecs", "rust", ECS, ("ecs",)),
    NegClient("go-imds", "go", IMDS, ("get",)),
    NegClient("go-ecs", "go", ECS, ("get",)),
    NegClient("ruby-imds", "ruby", IMDS, ("get", "imds")),
]
NEG_CLIENT_BY_ID = {c.id: c for c in NEG_CLIENTS}
NEG_VARIANTS = ["baseline", "role-newline", "expiration-offset", "no-ttl-header", "no-ttl-header-v1", "no-code",
                "extra-fields"]
NEG_ECS_VARIANTS = {"baseline", "expiration-offset", "extra-fields"}  # the other variants break IMDS-only parts


@dataclass(frozen=True)
class Expect:
    fail: bool
    why: str
    pattern: str = ""  # must match the client's stdout+stderr when it fails
    tokenless_get: bool | None = None  # True: the client must have sent a GET without the IMDS token


NEG_EXPECT: dict[tuple[str, str], Expect] = {
    ("role-newline", "rust-imds"): Expect(True, "I4: the role name is used raw in the URI → panic",
                                          r"panicked at .*imds/client\.rs.*InvalidUri"),
    ("expiration-offset", "rust-imds"): Expect(True, "I6: Smithy accepts only `Z`",
                                               r"does not support timezone offsets"),
    ("expiration-offset", "rust-ecs"): Expect(True, "I6: Smithy accepts only `Z`",
                                              r"does not support timezone offsets"),
    ("expiration-offset", "js-http"): Expect(True, "I6: `fromHttp` parses strict RFC 3339 `…Z`",
                                             r"Invalid RFC-3339 date-time"),
    ("no-ttl-header", "rust-imds"): Expect(True, "I7: the TTL response header is required", r"NoTtl"),
    ("no-ttl-header", "go-imds"): Expect(True, "I7: the token is unusable, Go drops to IMDSv1, which a "
                                               "v2-only server refuses (401)", r"StatusCode: 401", True),
    ("no-ttl-header", "ruby-imds"): Expect(True, "not in protocol.md: Ruby stores the token with TTL 0 (the "
                                                 "missing header `.to_i`), so it is expired at once and Ruby "
                                                 "sends token-less GETs → 401",
                                           r"returned no credentials", True),
    ("no-ttl-header-v1", "rust-imds"): Expect(True, "I7: the TTL response header is required", r"NoTtl"),
    ("no-ttl-header-v1", "go-imds"): Expect(False, "I7: Go drops to IMDSv1 (token-less GETs), which this "
                                                   "server allows", tokenless_get=True),
    ("no-ttl-header-v1", "ruby-imds"): Expect(False, "Ruby's TTL-0 token expires at once; token-less GETs, "
                                                     "which this server allows", tokenless_get=True),
    ("no-code", "go-imds"): Expect(True, "I5: `Code` must equal `Success`",
                                   r"failed to get credbroker EC2 IMDS role credentials"),
}
PASS_WHY = {
    "baseline": "nothing is broken",
    "role-newline": "tolerated (botocore: the URL parser drops `\\n`; JS: trim; Go: first line; Ruby: strip)",
    "expiration-offset": "lenient date parser",
    "no-ttl-header": "the TTL response header is ignored",
    "no-ttl-header-v1": "the TTL response header is ignored",
    "no-code": "`Code` is not checked",
    "extra-fields": "unknown fields (an object, a number, a null) are ignored, as the cross-SDK IMDS cases "
                    "require (aws/aws-sdk-go-v2 `credentials/ec2rolecreds/provider_sep_test.go`)",
}


def first_credentials_path(seen: list[Any]) -> str:
    """How a client walked the IMDS credential paths, from broken_imds' record (which
    answers the extended path 404): "extended first, classic on 404" or "classic only"."""
    gets = [s for s in seen if s.method == "GET" and "/security-credentials" in s.path]
    if not gets:
        return "no credentials GET"
    if "security-credentials-extended" in gets[0].path:
        later = [s for s in gets[1:] if "security-credentials-extended" not in s.path]
        return ("extended first, classic after its 404" if later and gets[0].status == 404
                else f"extended first ({[(s.path, s.status) for s in gets]})")
    return "classic only" if not any("extended" in s.path for s in gets) else "classic first, then extended"


def neg_cases() -> list[tuple[str, NegClient]]:
    return [(v, c) for v in NEG_VARIANTS for c in NEG_CLIENTS if c.family == IMDS or v in NEG_ECS_VARIANTS]


def neg_expect(variant: str, client: NegClient) -> Expect:
    return NEG_EXPECT.get((variant, client.id), Expect(False, PASS_WHY[variant]))


# ---------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------

def _rust_versions() -> str:
    try:
        text = (REPO / "Cargo.lock").read_text()
    except OSError:
        return "?"
    found = []
    for name in ("aws-config", "aws-sdk-sts", "aws-smithy-runtime"):
        m = re.search(rf'name = "{name}"\nversion = "([^"]+)"', text)
        if m:
            found.append(f"{name} {m.group(1)}")
    return ", ".join(found) + " (Cargo.lock; `examples/sdk_probe.rs`)"


# Hand-written part of docs/compatibility.md (kept here, in the generator's template,
# because the file is regenerated by every full run). Sources: protocol.md 1.6 and 2.3,
# landscape.md 7.2; the claims about the daemon are checked by
# src/refresher.rs `default_lead_clears_every_sdk_window` and tests/e2e/test_refresh_rules.py.
REFRESH_WINDOWS_MD = """\
## Refresh windows

The daemon replaces a profile's credentials at `expiry − min(refresh_before, lifetime/2)` (less up to a tenth
of that lead, at most 60 s, of jitter); the default `refresh_before` is **60 min**. So what is left of the
credentials it serves is never less than that lead: **30 min** with 1 h sessions (the STS and Cognito
default), **45–60 min** with 90–120 min sessions, **60 min** from 2 h on. Each SDK starts refreshing early
(*advisory*: a failure keeps the old credentials) and, closer to expiry, blocks on the refresh and fails
without it (*mandatory*):

| SDK | Advisory window | Mandatory window | Other | With the default lead |
|---|---|---|---|---|
| botocore / boto3 / AWS CLI (1.29 – 1.44) | 15 min | 10 min | IMDS only: credentials with fewer than 17–25 min left are stretched to now + 17–25 min (`_evaluate_expiration`) | its first advisory refresh finds new credentials; never stretched (≥ 30 min left) |
| Rust, 2026 rules (smithy-rs PR #4796 `static_stability.rs`; **not** in the locked aws-config 1.13.0) | 5 min for credentials living ≤ 20 min, 15 min under 90 min, else 60 min | 60 s | after one failed or already-expired answer: keeps its (even expired) credentials, retries after 5–10 min | advisory satisfied for 1 h (30 ≥ 15 min) and ≥ 2 h sessions (60 ≥ 60 min); for 90–120 min sessions the first advisory attempts get the same credentials back (45–60 min left), far from the 60 s mandatory window |
| Rust aws-config 1.13.0 (what the matrix runs) | `LazyCache` buffer 10 s (+ 0–5 s jitter) | — | — | uses each key until 10–15 s before its Expiration |
| Java v2 (2025–26 PRs #7028/#7031/#7053) | prefetch 5 / 15 / 60 min (same tiers as Rust) | stale 1 min | same back-off rule as Rust | as Rust |
| JavaScript v3 | < 5 min | — | IMDS static stability: expired credentials extended by 5–10 min | refreshes find new credentials |
| Go v2 | container: `ExpiryWindow` 5 min; IMDS: none | — | — | refreshes find new credentials |

No SDK ever holds daemon credentials inside its mandatory window with sessions of 30 min or more (a 30 min
session leaves 15 min, beyond botocore's 10 min). Shorter sessions (STS allows 15 min) leave half their
lifetime — inside botocore's windows, which then refreshes before every call: prefer ≥ 1 h sessions. During a
refresh, a refresh-token rotation, a role-renaming reload or a listener view swap the daemon keeps answering
with valid credentials (tests/e2e/test_refresh_rules.py: three clients, 0 errors, 0 expired documents), so the
back-off rule is never triggered by the daemon while it holds valid credentials.
"""


def _cell_text(status: str) -> str:
    return {"pass": "pass", "FAIL": "**FAIL**", "N/A": "N/A"}.get(status, status)


class _Footnotes:
    def __init__(self) -> None:
        self.items: list[str] = []

    def ref(self, text: str) -> str:
        if text not in self.items:
            self.items.append(text)
        return f"[{self.items.index(text) + 1}]"


def render_table(*, wall_seconds: float, complete: bool, command: str) -> str:
    now = dt.datetime.now(dt.timezone.utc)
    cells = RESULTS["cells"]
    fn = _Footnotes()
    counts: dict[str, int] = {}
    lines = [
        "# SDK compatibility",
        "",
        "<!-- Generated by tests/e2e/test_compat.py (tests/e2e/compat.py); do not edit by hand. -->",
        "",
        f"Generated {now:%Y-%m-%d %H:%M} UTC by `{command}` in **{wall_seconds:.0f} s** wall time "
        f"({os.cpu_count()} CPUs, {platform.system()} {platform.machine()}).",
        *([] if complete else ["", "**Partial run**: only the selected tests ran; the other cells are blank."]),
        "",
        "Every cell runs a real, unmodified AWS SDK client in a subprocess with a clean environment "
        "(protocol.md 4.1) against the real `credbroker` binary (OIDC via oidc-provider → STS "
        "AssumeRoleWithWebIdentity in moto). **pass** means: the SDK returned the daemon's current access key "
        "(compared with the daemon's ECS endpoint), through the expected provider, and moto's "
        "`GetCallerIdentity` with those credentials said `assumed-role/OidcRole/…`. **N/A**: the client's "
        "version cannot do this at all (the reason is re-checked on every run). **—**: not applicable to that "
        "provider.",
        "",
        "## Matrix",
        "",
        "| Client | " + " | ".join(c.label for c in COLS) + " |",
        "|---|" + "---|" * len(COLS),
    ]
    for row in ROWS:
        out = []
        for col in COLS:
            key = (row.id, col.id)
            if not col.family in row.families:
                out.append("—")
                continue
            if key in NOT_A_CELL:
                out.append("— " + fn.ref(NOT_A_CELL[key]))
                continue
            res = cells.get(key)
            if res is None:
                out.append(" ")
                continue
            status = res["status"]
            counts[status] = counts.get(status, 0) + 1
            text = _cell_text(status)
            if status in ("N/A", "FAIL"):
                text += " " + fn.ref(res["detail"] if status != "FAIL" else f"{row.label} / {col.label}: "
                                     + res["detail"])
            elif key in NOTES:
                text += " " + fn.ref(NOTES[key])
            out.append(text)
        lines.append(f"| {row.label} | " + " | ".join(out) + " |")
    lines += ["", "Cells: " + ", ".join(f"{n} {_cell_text(s)}" for s, n in sorted(counts.items())), ""]
    lines.append("The token-file rotation column: the daemon accepts exactly one ECS token, so a \"rotation\" "
                 "the daemon would accept cannot be staged. Instead the client's own copy of the token file holds "
                 "the right token for fetch 1 (must succeed), is rewritten with a wrong token before fetch 2 in the "
                 "same process (must be refused with 401: proof that the SDK re-reads the file on every fetch "
                 "instead of caching the first value), and is restored before fetch 3 (must succeed again).")
    lines.append("")
    lines.append("¹ aws-sdk-core 3.168.1 ignores the port in `AWS_EC2_METADATA_SERVICE_ENDPOINT` "
                 "(aws/aws-sdk-ruby#2997), so this row passes the documented `:port` option taken from that URL; "
                 "the row below shows the environment alone.")
    lines.append("")
    for i, text in enumerate(fn.items, 1):
        lines.append(f"{i}. {text}")

    lines += ["", "## Long-running clients", "",
              f"All at once, against one daemon whose credentials live {LOOP_DURATION} (STS `DurationSeconds`) and "
              "are replaced at half-life, each client calling STS `GetCallerIdentity` (moto) once per second through "
              f"its SDK's normal credential caching for {LOOP_SECONDS} s. Pass: no failed call, every key the client "
              "used was one the daemon served, and at least the listed number of distinct keys.", ""]
    served = RESULTS["checks"].get("served_keys")
    if served:
        lines += [f"The daemon served {served['count']} distinct keys ({served['refreshes']} refreshes) during "
                  "the run.", ""]
    lines += ["| Client | Result | Calls | Failures | Distinct keys (min) | Note |", "|---|---|---|---|---|---|"]
    for loop in LOOPS:
        res = RESULTS["loops"].get(loop.id)
        if res is None:
            lines.append(f"| {loop.label} |   |  |  |  | {loop.note} |")
            continue
        o = res.get("out") or {}
        note = loop.note + (("; " if loop.note else "") + res["detail"] if res["status"] == "FAIL" else "")
        lines.append(f"| {loop.label} | {_cell_text(res['status'])} | {o.get('calls', '?')} | "
                     f"{o.get('failures', '?')} | {o.get('distinct_keys', '?')} ({loop.min_keys}) | {note} |")

    lines += ["", "## Negative controls", "",
              "The same clients against `tests/e2e/broken_imds.py`, a stand-in that serves the daemon's current "
              "credentials in the daemon's format but breaks one thing per variant (protocol.md 4.2 I4–I7). "
              "Each cell states what the client did; every cell matched the expectation unless marked "
              "**UNEXPECTED**. This proves the matrix can fail: a daemon that made any of these mistakes would "
              "turn the corresponding cells above red.", ""]
    neg_clients = [c for c in NEG_CLIENTS]
    lines += ["| Variant | " + " | ".join(f"`{c.id}`" for c in neg_clients) + " |",
              "|---|" + "---|" * len(neg_clients)]
    nfn = _Footnotes()
    for variant in NEG_VARIANTS:
        out = []
        for c in neg_clients:
            if not (c.family == IMDS or variant in NEG_ECS_VARIANTS):
                out.append("—")
                continue
            res = RESULTS["negative"].get((variant, c.id))
            if res is None:
                out.append(" ")
                continue
            exp = neg_expect(variant, c)
            word = "fails" if exp.fail else "works"
            text = word if res["status"] == "pass" else f"**UNEXPECTED** ({res['detail'][:120]})"
            if exp.fail or exp.tokenless_get:
                text += " " + nfn.ref(exp.why + (f" — observed: `{res['observed']}`" if res.get("observed") else ""))
            out.append(text)
        lines.append(f"| `{variant}` | " + " | ".join(out) + " |")
    lines.append("")
    for i, text in enumerate(nfn.items, 1):
        lines.append(f"{i}. {text}")

    lines += ["", *REFRESH_WINDOWS_MD.rstrip("\n").splitlines()]

    paths = RESULTS["checks"].get("imds_paths")
    if paths:
        lines += ["", "## IMDS credential path on the wire", "",
                  "Recorded from the baseline negative control (broken_imds answers the `-extended` path 404): which "
                  "path each released client asks first. The SDKs' sources and SEP test cases ask "
                  "`security-credentials-extended` first and fall back on a 404 (landscape.md 7.2); the daemon "
                  "serves both.", "", "| Client | Asked |", "|---|---|"]
        lines += [f"| `{k}` | {v} |" for k, v in sorted(paths.items())]

    check = RESULTS["checks"].get("secrets")
    if check:
        lines += ["", "## Secrets", "", check["detail"]]

    lines += ["", "## Client versions", "", "| Client | Version |", "|---|---|"]
    versions = dict(VERSIONS)
    versions.setdefault("rust", _rust_versions())
    for client in ("python", "botocore-deb", "awscli", "awscli2", "js", "rust", "go", "ruby"):
        lines.append(f"| {client} | {versions.get(client, 'not run')} |")
    lines += ["", "Installed by `tests/setup.sh`: botocore/boto3/awscli from `tests/requirements.txt` (PyPI), the "
              "JS SDK from `tests/clients/js/package-lock.json` (npm), Go and Ruby from Debian "
              f"(`{GO_DEBS}`, `{RUBY_DEBS}`; the old botocore `{OLD_BOTOCORE_DEBS}` and the AWS CLI v2 `awscli` 2.9, "
              "which vendors its own v2 botocore), the Rust SDK from `Cargo.lock` (crates.io). The AWS CLI v1 "
              "vendors its own botocore (`awscli/botocore`), hence its separate version.", ""]
    return "\n".join(lines)


def write_table(path: Path, **kwargs: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_table(**kwargs))
    return path
