"""The Kubernetes home (issue 10): deploy/kubernetes/ passes
`kubernetes-validate --strict` for every Kubernetes version the validator
ships schemas for from 1.29 (native sidecars: an init container with
`restartPolicy: Always`, which --strict rejects before 1.28), and the
manifests agree with each other and with the daemon's rules: the config in the
ConfigMap loads, the app's uid is allowed, the token path the app is given is
where the broker writes it, the probes use `credbroker healthcheck` (exec:
the daemon answers loopback peers only, and the kubelet probes the pod IP).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

import harness as h

MANIFESTS = h.REPO / "deploy" / "kubernetes"
SCHEMAS_FROM = (1, 29)


def _validator() -> str:
    path = shutil.which("kubernetes-validate", path=str(h.VENV_BIN)) or shutil.which("kubernetes-validate")
    if not path:
        pytest.fail("kubernetes-validate not found (PyPI, in tests/requirements.txt); run tests/setup.sh")
    return path


def _versions() -> list[str]:
    import kubernetes_validate

    schemas = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    found = set()
    for d in schemas.iterdir():
        m = re.fullmatch(r"v(\d+)\.(\d+)\.(\d+)-local-strict", d.name)
        if m and (int(m.group(1)), int(m.group(2))) >= SCHEMAS_FROM:
            found.add(tuple(int(x) for x in m.groups()))
    return [".".join(map(str, v)) for v in sorted(found)]


def _docs() -> dict[str, dict]:
    import yaml

    docs = {}
    for f in sorted(MANIFESTS.glob("*.yaml")):
        for doc in yaml.safe_load_all(f.read_text()):
            docs[doc["kind"]] = doc
    return docs


def test_manifests_validate_strictly_on_every_version_from_1_29():
    versions = _versions()
    assert len(versions) >= 9, f"expected schemas 1.29..1.37 at least, found {versions}"
    files = [str(f) for f in sorted(MANIFESTS.glob("*.yaml"))]
    assert len(files) >= 3, files
    for v in versions:
        proc = subprocess.run([_validator(), "--strict", "-k", v, *files], capture_output=True, text=True)
        assert proc.returncode == 0, f"Kubernetes {v}:\n{proc.stdout}{proc.stderr}"
        assert proc.stdout.count("passed") == len(files), proc.stdout
    print(f"kubernetes-validate --strict passed for {', '.join(versions)}")


def test_manifests_agree_with_each_other_and_the_daemon(tmp_path: Path):
    docs = _docs()
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    inits = {c["name"]: c for c in pod["initContainers"]}
    broker, app = inits["credbroker"], pod["containers"][0]
    assert broker["restartPolicy"] == "Always", "credbroker must be a native sidecar"
    assert "restartPolicy" not in inits["seed-refresh-token"], "the seed step runs to completion first"
    # Hardening of every container.
    for c in [*pod["initContainers"], *pod["containers"]]:
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True, c["name"]
        assert sc["capabilities"]["drop"] == ["ALL"] and sc["runAsUser"] != 0, c["name"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    # Probes: exec with the binary, /readyz for startup and readiness, /healthz for liveness.
    cmd = ["/usr/local/bin/credbroker", "healthcheck"]
    assert broker["startupProbe"]["exec"]["command"] == [*cmd, "--ready"]
    assert broker["readinessProbe"]["exec"]["command"] == [*cmd, "--ready"]
    assert broker["livenessProbe"]["exec"]["command"] == cmd
    # The config from the ConfigMap loads and allows the app's uid.
    text = docs["ConfigMap"]["data"]["config.toml"]
    conf = tmp_path / "config.toml"
    conf.write_text(text)
    proc = h.run_credbroker(["check-config", "-c", str(conf)])
    assert proc.returncode == 0, proc.stderr
    import tomllib

    # "self" is the broker's own uid (65532 in the container), the app's is listed.
    allowed = tomllib.loads(text)["server"]["allowed_uids"]
    assert "self" in allowed and app["securityContext"]["runAsUser"] in allowed, allowed
    assert "ecs_token_group_readable = true" in proc.stdout
    # The token path the app is given is where the broker writes it: the image's
    # runtime dir (XDG_RUNTIME_DIR=/run → /run/credbroker/ecs-token) on the shared emptyDir.
    mounts = {m["name"]: m["mountPath"] for m in broker["volumeMounts"]}
    app_mounts = {m["name"]: m["mountPath"] for m in app["volumeMounts"]}
    assert mounts["run"] == "/run" and pod["securityContext"]["fsGroup"] == broker["securityContext"]["runAsGroup"]
    env = {e["name"]: e["value"] for e in app["env"]}
    assert env["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"] == f"{app_mounts['run']}/credbroker/ecs-token"
    assert env["AWS_CONTAINER_CREDENTIALS_FULL_URI"] == "http://127.0.0.1:9911/v1/credentials/default"
    assert 'listen = "127.0.0.1:9911"' in text
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["run"]["emptyDir"]["medium"] == "Memory"
    assert volumes["refresh-token-seed"]["secret"]["secretName"] == docs["Secret"]["metadata"]["name"]
    assert mounts["state"] == "/var/lib/credbroker" and \
        'refresh_token_file = "/var/lib/credbroker/default/refresh-token"' in text
