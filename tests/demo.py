#!/usr/bin/env python3
"""credbroker in two minutes, without an AWS account.

Starts moto (standing in for Cognito and STS) and a local OpenID Provider,
writes a credbroker config, runs `credbroker serve`, signs in with
`credbroker login --device` (the script plays the user at the provider's
pages), lets the unmodified AWS CLI pick up credentials of the configured role
from the daemon through the ECS container-credentials endpoint, and signs out. Everything listens on 127.0.0.1 and is stopped at the end.

    bash tests/setup.sh && cargo build
    .venv/bin/python tests/demo.py

Exit status is non-zero if any step fails.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "e2e"))

import harness as h  # noqa: E402


def step(title: str) -> None:
    print(f"\n=== {title}")


def sign_in(daemon: h.Daemon) -> None:
    """Run `credbroker login --device`, echo what it prints, and approve the
    code at the provider the way a person would in a browser."""
    import re
    import subprocess
    import threading

    from idp_user import IdpUser

    proc = subprocess.Popen([str(daemon.binary), "login", "--device", "-c", str(daemon.config_path)],
                            env=daemon.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    uri: list[str] = []

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            print(f"  | {line.rstrip()}", flush=True)
            m = re.search(r"\(or open (\S+) ,", line)
            if m:
                uri.append(m.group(1))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    h.wait_for(lambda: uri, 20, "the device code")
    IdpUser("demo-user", say=lambda s: print(s, flush=True)).approve_device(uri[0])
    rc = proc.wait(timeout=60)
    reader.join(timeout=5)
    if rc != 0:
        raise h.HarnessError(f"credbroker login exited {rc}")


def main() -> int:
    h.scrub_process_env()
    moto = idp = daemon = None
    try:
        step("Starting the stand-ins (moto for AWS, oidc-provider for the identity provider)")
        moto = h.Moto().start()
        print(f"moto (Cognito Identity + STS):  {moto.url}")
        idp = h.OidcProvider().start()
        print(f"OpenID Provider (issuer):       {idp.issuer}")

        step("Writing the config: sign in at the OpenID Provider, assume a role with the id_token")
        daemon = h.Daemon(h.scratch_dir("demo-"), h.make_config(
            login=h.oidc_login(idp),
            aws={"flow": "sts", "role_arn": h.OIDC_ROLE_ARN, "session_name": "demo"},
        ), moto_url=moto.url)
        print(f"{daemon.write_config()}:")
        print(daemon.config_path.read_text().rstrip())

        step("Starting `credbroker serve` (no sign-in yet: the profile waits in login_required)")
        daemon.start(wait_ready=False)
        daemon.wait_state("login_required", 30)
        print(f"listening on {daemon.base_url}")

        step("`credbroker login --device` (this script plays you at the provider's pages)")
        sign_in(daemon)

        step("`credbroker env`: what you would paste into a shell")
        proc = daemon.cli("env")
        if proc.returncode != 0:
            raise h.HarnessError(f"credbroker env failed ({proc.returncode}): {proc.stderr}")
        print(proc.stdout.rstrip())
        exports = h.parse_exports(proc.stdout)

        step(f"`aws sts get-caller-identity --endpoint-url {moto.url}` with only those variables set")
        env = h.clean_env(**exports, AWS_EC2_METADATA_DISABLED="true")
        out = h.aws_cli(["sts", "get-caller-identity", "--endpoint-url", moto.url, "--output", "json"], env)
        print(out.stdout.rstrip())
        arn = json.loads(out.stdout)["Arn"]
        if "assumed-role/OidcRole/demo" not in arn:
            raise h.HarnessError(f"expected the served role, got {arn}")
        print("(the served credentials belong to the role in the config, assumed with your sign-in)")

        step("`credbroker status --json`")
        proc = daemon.cli("status", "--json")
        if proc.returncode != 0:
            raise h.HarnessError(f"credbroker status failed ({proc.returncode}): {proc.stderr}")
        print(json.dumps(h.parse_json_output(proc.stdout), indent=2))

        step("`credbroker logout`: revoke at the provider, drop the credentials now")
        proc = daemon.cli("logout")
        print(proc.stderr.rstrip())
        if proc.returncode != 0:
            raise h.HarnessError(f"credbroker logout failed ({proc.returncode})")
        gone = daemon.ecs_creds_response()
        print(f"the ECS endpoint now answers HTTP {gone.status}; status: {daemon.profile_status()['state']}")

        step("Stopping the daemon (SIGTERM)")
        daemon.stop()
        print("credbroker exited 0")
        print("\nDemo finished: the AWS CLI got its credentials from credbroker.")
        return 0
    except Exception as exc:  # noqa: BLE001 - print everything a newcomer needs, then fail
        print(f"\nDEMO FAILED: {exc}", file=sys.stderr)
        traceback.print_exc()
        if daemon is not None:
            print(f"\n--- credbroker log ---\n{h.tail(daemon.logs(), 40)}", file=sys.stderr)
        return 1
    finally:
        for proc in (daemon, idp, moto):
            if proc is not None:
                proc.terminate()


if __name__ == "__main__":
    sys.exit(main())
