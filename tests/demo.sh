#!/usr/bin/env bash
# The local demo, no AWS account needed: moto stands in for Cognito and STS, a
# local OpenID provider for the IdP; credbroker serves the credentials and the
# unmodified AWS CLI uses them (`aws sts get-caller-identity`).
# Installs what it needs first (tests/setup.sh); idempotent.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash tests/setup.sh >/dev/null
cargo build --locked --bins
exec .venv/bin/python tests/demo.py
