#!/usr/bin/env python3
"""credbroker in two minutes, without an AWS account.

Starts moto (standing in for Cognito and STS) and a local OpenID Provider,
creates a Cognito identity pool, "logs in" (mints a refresh token), writes a
credbroker config, runs `credbroker serve`, and then lets the unmodified AWS
CLI pick up credentials from the daemon through the ECS container-credentials
endpoint. Everything listens on 127.0.0.1 and is stopped at the end.

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


def main() -> int:
    h.scrub_process_env()
    moto = idp = daemon = None
    try:
        step("Starting the stand-ins (moto for AWS, oidc-provider for the identity provider)")
        moto = h.Moto().start()
        print(f"moto (Cognito Identity + STS):  {moto.url}")
        idp = h.OidcProvider().start()
        print(f"OpenID Provider (issuer):       {idp.issuer}")

        step("Creating a Cognito identity pool that trusts the OpenID Provider")
        pool_id = moto.create_oidc_identity_pool(idp.issuer)
        print(f"identity pool: {pool_id}")

        step("Logging in (the demo mints a refresh token directly at the provider)")
        daemon = h.Daemon(h.scratch_dir("demo-"), h.make_config(
            login=h.oidc_login(idp),
            aws={"flow": "cognito", "identity_pool_id": pool_id},
        ), moto_url=moto.url)
        rt_path = daemon.write_refresh_token(idp.mint("demo-user"))
        print(f"refresh token stored in {rt_path} (mode 0600)")

        step(f"Config file {daemon.write_config()}")
        print(daemon.config_path.read_text().rstrip())

        step("Starting `credbroker serve`")
        daemon.start()
        print(f"listening on {daemon.base_url}; /readyz says ready")

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
        print("(moto's Cognito Identity hands out fixed test credentials, so STS answers its default user)")

        step("`credbroker status --json`")
        proc = daemon.cli("status", "--json")
        if proc.returncode != 0:
            raise h.HarnessError(f"credbroker status failed ({proc.returncode}): {proc.stderr}")
        print(json.dumps(h.parse_json_output(proc.stdout), indent=2))

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
