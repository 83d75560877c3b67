#!/usr/bin/env bash
# Install what the end-to-end tests and the demo need; idempotent and quick when
# nothing changed.
#   - <repo>/.venv with tests/requirements.txt (moto, boto3, awscli, pytest),
#     reinstalled only when the requirements file changed (stamp in .venv);
#   - tests/oidc/node_modules from the committed package-lock.json (npm ci),
#     reinstalled only when the lock changed.
# Usage: bash tests/setup.sh
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo/.venv"
req="$repo/tests/requirements.txt"
oidc="$repo/tests/oidc"

die() { echo "tests/setup.sh: $*" >&2; exit 1; }
need() {  # need CMD DEBIAN-PACKAGE-HINT
  command -v "$1" >/dev/null 2>&1 || die "'$1' not found; install it first (Debian/Ubuntu: $2)"
}
hash_of() { sha256sum "$@" | sha256sum | cut -d' ' -f1; }

need python3 "sudo apt-get install python3 python3-venv"
need node "sudo apt-get install nodejs (Node 20 or newer)"
need npm "sudo apt-get install npm"
need sha256sum "sudo apt-get install coreutils"

python3 - <<'EOF' || die "Python 3.10 or newer is required (found $(python3 --version 2>&1))"
import sys
sys.exit(0 if sys.version_info >= (3, 10) else 1)
EOF
node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' \
  || die "Node 20 or newer is required (found $(node --version))"

# --- Python venv ---------------------------------------------------------------
if [ ! -x "$venv/bin/python" ]; then
  echo "creating $venv"
  python3 -m venv "$venv" \
    || die "python3 -m venv failed; install the venv module (Debian: sudo apt-get install python3-venv)"
fi
stamp="$venv/.credbroker-requirements.sha256"
want="$(hash_of "$req")"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  echo "installing $req into $venv"
  "$venv/bin/python" -m pip install --disable-pip-version-check -q -r "$req"
  echo "$want" > "$stamp"
else
  echo "python deps up to date ($venv)"
fi

# --- oidc-provider -------------------------------------------------------------
stamp="$oidc/node_modules/.credbroker-lock.sha256"
want="$(hash_of "$oidc/package.json" "$oidc/package-lock.json")"
if [ ! -d "$oidc/node_modules/oidc-provider" ] || [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  echo "npm ci in $oidc"
  (cd "$oidc" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$want" > "$stamp"
else
  echo "node deps up to date ($oidc/node_modules)"
fi

echo "ready: run the end-to-end tests with  $venv/bin/python -m pytest tests/e2e"
