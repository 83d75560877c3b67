#!/usr/bin/env bash
# The local demo, no AWS account needed: moto stands in for Cognito and STS, a
# local OpenID provider for the IdP; credbroker serves the credentials and the
# unmodified AWS CLI uses them (`aws sts get-caller-identity`).
# Installs what it needs first (tests/setup.sh --demo); idempotent.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# --demo: only the venv and oidc-provider (no root, none of the SDK matrix's
# Go/Ruby packages); failures still reach stderr as one line.
bash tests/setup.sh --demo >/dev/null
if [ -x .cache/node/bin/node ]; then export PATH="$PWD/.cache/node/bin:$PATH"; fi
cargo build --locked --bins
exec .venv/bin/python tests/demo.py
