#!/usr/bin/env bash
# Install what the end-to-end tests and the demo need; idempotent and quick when
# nothing changed.
#   - <repo>/.venv with tests/requirements.txt (moto, boto3, awscli, pytest),
#     reinstalled only when the requirements file changed (stamp in .venv);
#   - tests/oidc/node_modules from the committed package-lock.json (npm ci),
#     reinstalled only when the lock changed;
#   - the SDK compatibility matrix's clients (tests/e2e/test_compat.py):
#     tests/clients/js/node_modules (npm ci, same rule), the Debian packages for
#     the Go and Ruby SDKs (installed with apt-get when running as root, else the
#     exact command is printed and setup fails), and target/compat/go-probe,
#     built offline GOPATH-style from tests/clients/go/probe.go (rebuilt only when
#     the source, Go or the SDK package changed).
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

# --- npm packages (oidc-provider; the JavaScript v3 SDK for the matrix) --------
npm_ci() {  # npm_ci DIR MARKER: `npm ci` in DIR when MARKER is missing or the lock changed
  local dir="$1" marker="$2" stamp want
  stamp="$dir/node_modules/.credbroker-lock.sha256"
  want="$(hash_of "$dir/package.json" "$dir/package-lock.json")"
  if [ ! -d "$dir/node_modules/$marker" ] || [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
    echo "npm ci in $dir"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$want" > "$stamp"
  else
    echo "node deps up to date ($dir/node_modules)"
  fi
}
npm_ci "$oidc" oidc-provider
npm_ci "$repo/tests/clients/js" @aws-sdk/credential-providers


# --- SDK compatibility matrix: Go v2 and Ruby from Debian ----------------------
# No Go module proxy or rubygems is needed: Debian packages the SDKs.
compat_debs=(golang-go golang-github-aws-aws-sdk-go-v2-dev ruby ruby-aws-sdk-core)
deb_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
if command -v dpkg-query >/dev/null 2>&1; then
  missing_debs=()
  for deb in "${compat_debs[@]}"; do deb_installed "$deb" || missing_debs+=("$deb"); done
  if [ ${#missing_debs[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
      echo "apt-get install ${missing_debs[*]} (SDK compatibility matrix: Go and Ruby SDKs)"
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq
      apt-get install -y -qq --no-install-recommends "${missing_debs[@]}" >/dev/null
    else
      die "the SDK compatibility matrix needs Debian packages; run:
  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing_debs[*]}"
    fi
  else
    echo "debian packages up to date (${compat_debs[*]})"
  fi
else
  command -v go >/dev/null 2>&1 && command -v ruby >/dev/null 2>&1 \
    || die "the SDK compatibility matrix needs Go with aws-sdk-go-v2 and Ruby with aws-sdk-core (Debian: apt-get install ${compat_debs[*]})"
fi

# --- SDK compatibility matrix: the Go client, built offline -------------------
gosdk=/usr/share/gocode/src/github.com/aws/aws-sdk-go-v2
go_src="$repo/tests/clients/go/probe.go"
compat_dir="$repo/target/compat"
go_out="$compat_dir/go-probe"
stamp="$compat_dir/go-probe.sha256"
[ -d "$gosdk" ] || die "$gosdk not found (Debian: apt-get install golang-github-aws-aws-sdk-go-v2-dev)"
want="$( { sha256sum "$go_src"; go version; dpkg-query -W golang-github-aws-aws-sdk-go-v2-dev 2>/dev/null || true; } | sha256sum | cut -d' ' -f1)"
if [ ! -x "$go_out" ] || [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  echo "building $go_out (GOPATH mode, offline)"
  mkdir -p "$compat_dir/gopath"
  modver() { sed -n 's/^const goModuleVersion = "\(.*\)"$/\1/p' "$gosdk/$1/go_module_metadata.go"; }
  modules="aws-sdk-go-v2 (Debian $(dpkg-query -W -f='${Version}' golang-github-aws-aws-sdk-go-v2-dev 2>/dev/null || echo '?')): aws $(modver aws), config $(modver config), credentials $(modver credentials), feature/ec2/imds $(modver feature/ec2/imds), service/sts $(modver service/sts)"
  (cd "$repo" && GO111MODULE=off GOFLAGS= GOPROXY=off GOPATH="/usr/share/gocode:$compat_dir/gopath" \
      GOCACHE="$compat_dir/go-cache" go build -ldflags "-X 'main.modules=$modules'" -o "$go_out" "$go_src") \
    || die "building the Go SDK client failed (see above)"
  echo "$want" > "$stamp"
else
  echo "go client up to date ($go_out)"
fi

echo "ready: run the end-to-end tests with  $venv/bin/python -m pytest tests/e2e"
