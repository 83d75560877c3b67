"""The README's demo command runs here too (tests/demo.sh minus the set-up and
build that tests/run.sh has already done): it must sign in with
`credbroker login --device`, serve the configured role to the AWS CLI and sign
out, or the README's first command is broken."""

from __future__ import annotations

import subprocess
import sys

import harness as h


def test_demo_signs_in_serves_the_role_and_signs_out():
    proc = subprocess.run([sys.executable, str(h.REPO / "tests" / "demo.py")], env=h.clean_env(),
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    out = proc.stdout
    assert proc.returncode == 0, f"demo failed:\n{out}\n{proc.stderr}"
    assert "[at the IdP] confirms the code" in out and "Signed in as demo-user" in out
    assert f"arn:aws:sts::{h.ACCOUNT_ID}:assumed-role/OidcRole/demo" in out
    assert "the ECS endpoint now answers HTTP 503; status: logged_out" in out
    assert "Demo finished" in out
