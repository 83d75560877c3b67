"""Test client for credbroker's SDK compatibility matrix (tests/e2e/test_compat.py):
botocore / boto3 from the repo's .venv, unmodified.

    probe.py get chain|imds|ecs        one credential fetch, then STS GetCallerIdentity
                                       (endpoint from env STS_ENDPOINT) when set
    probe.py rotate FILE WRONG         container credentials with
                                       AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE: fetch, write
                                       WRONG into FILE, fetch again through the same
                                       credentials object's refresh path, restore the file,
                                       fetch a third time
    probe.py region                    the region botocore resolves with no AWS_REGION /
                                       AWS_DEFAULT_REGION (botocore does not ask IMDS)
    probe.py loop chain SECONDS        GetCallerIdentity once per second through one
                                       boto3 session (botocore's own credential caching)

Sources: ``chain`` is botocore's default resolver (``Session.get_credentials()``); ``imds``
and ``ecs`` are its InstanceMetadataProvider / ContainerProvider alone, exactly as the
resolver builds them. Prints one JSON line; exits non-zero on failure.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import time
import traceback

import boto3
import botocore
import botocore.session
from botocore.config import Config

VERSION = f"botocore {botocore.__version__}, boto3 {boto3.__version__}"


def emit(**fields) -> None:
    print(json.dumps({"sdk": "python", "version": VERSION, **fields}, default=str), flush=True)


def load(source: str):
    session = botocore.session.get_session()
    if source == "chain":
        creds = session.get_credentials()
    else:
        resolver = session.get_component("credential_provider")
        name = {"imds": "iam-role", "ecs": "container-role"}[source]
        creds = resolver.get_provider(name).load()
    if creds is None:
        raise RuntimeError(f"botocore found no credentials ({source})")
    return session, creds


def caller_arn(session) -> str | None:
    endpoint = os.environ.get("STS_ENDPOINT")
    if not endpoint:
        return None
    client = session.create_client("sts", region_name="us-east-1", endpoint_url=endpoint,
                                   config=Config(retries={"max_attempts": 1, "mode": "standard"}))
    return client.get_caller_identity()["Arn"]


def expiry(creds) -> str | None:
    value = getattr(creds, "_expiry_time", None)
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


def cmd_get(source: str) -> None:
    session, creds = load(source)
    frozen = creds.get_frozen_credentials()
    emit(mode="get", ok=True, source=creds.method, access_key_id=frozen.access_key,
         has_secret=bool(frozen.secret_key), has_token=bool(frozen.token),
         expiration=expiry(creds), arn=caller_arn(session))


def cmd_rotate(path: str, wrong: str) -> None:
    """Three fetches in one process; the file is rewritten between them."""
    right = open(path).read()
    _, creds = load("ecs")  # fetch 1: ContainerProvider.load()
    fetches = [{"ok": True, "access_key_id": creds.get_frozen_credentials().access_key}]
    # RefreshableCredentials' refresh path calls this fetcher, which rebuilds the
    # Authorization header from the file on every call (ContainerProvider._build_headers).
    refresh = creds._refresh_using
    try:
        with open(path, "w") as f:
            f.write(wrong)
        try:  # fetch 2: must be refused by the daemon
            fetches.append({"ok": True, "access_key_id": refresh()["access_key"]})
        except Exception as e:  # noqa: BLE001 - reported, judged by the test
            fetches.append({"ok": False, "error": f"{type(e).__name__}: {e}"})
    finally:
        with open(path, "w") as f:
            f.write(right)
    try:  # fetch 3: the right token again
        fetches.append({"ok": True, "access_key_id": refresh()["access_key"]})
    except Exception as e:  # noqa: BLE001
        fetches.append({"ok": False, "error": f"{type(e).__name__}: {e}"})
    emit(mode="rotate", ok=True, source=creds.method, fetches=fetches)


def cmd_region() -> None:
    session = botocore.session.get_session()
    emit(mode="region", ok=True, region=session.get_config_variable("region"))


def cmd_loop(source: str, seconds: float) -> None:
    if source != "chain":
        raise SystemExit("loop supports the default chain only")
    session = boto3.session.Session()
    sts = session.client("sts", region_name="us-east-1", endpoint_url=os.environ["STS_ENDPOINT"],
                         config=Config(retries={"max_attempts": 1, "mode": "standard"}))
    calls = failures = 0
    keys: list[str] = []
    arns: set[str] = set()
    errors: list[str] = []
    method = None
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        tick = time.monotonic()
        calls += 1
        try:
            # The session caches one credentials object, the one the client signs with;
            # get_frozen_credentials() refreshes it when botocore's advisory/mandatory
            # windows say so (no extra fetch otherwise).
            creds = session.get_credentials()
            if creds is None:
                raise RuntimeError("no credentials")
            method = creds.method
            key = creds.get_frozen_credentials().access_key
            if key not in keys:
                keys.append(key)
            arns.add(sts.get_caller_identity()["Arn"])
        except Exception as e:  # noqa: BLE001
            failures += 1
            if len(errors) < 5:
                errors.append(f"{dt.datetime.now(dt.timezone.utc):%H:%M:%S} {type(e).__name__}: {e}")
        time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
    emit(mode="loop", ok=failures == 0, source=method, calls=calls, failures=failures,
         distinct_keys=len(keys), keys=keys, arns=sorted(arns), errors=errors)
    if failures:
        sys.exit(1)


def main(argv: list[str]) -> None:
    try:
        if argv[:1] == ["get"] and len(argv) == 2:
            cmd_get(argv[1])
        elif argv[:1] == ["rotate"] and len(argv) == 3:
            cmd_rotate(argv[1], argv[2])
        elif argv == ["region"]:
            cmd_region()
        elif argv[:1] == ["loop"] and len(argv) == 3:
            cmd_loop(argv[1], float(argv[2]))
        else:
            raise SystemExit(__doc__)
    except SystemExit:
        raise
    except Exception as e:  # noqa: BLE001
        traceback.print_exc()
        emit(mode=argv[0] if argv else None, ok=False, error=f"{type(e).__name__}: {e}")
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
