#!/usr/bin/env bash
# Install what the end-to-end tests and the demo need; idempotent and quick when
# nothing changed. Every failure is one line (after any output of the tool that
# failed) naming the missing piece and how to get it.
#   - the toolchain, checked first: rustc at least Cargo.toml's rust-version;
#     python3 3.10+ that can create a venv (Debian: python3-venv, which holds
#     ensurepip); Node.js 20+ and npm. As root, missing Debian packages are
#     installed with apt-get; otherwise the exact command is printed. When the
#     system's Node is older than 20 (Debian 12 ships 18), Node 20
#     (node_version below) is installed with npm from the npm registry (package
#     node-linux-<arch>, which ships the prebuilt binary; no other host is
#     needed) into <repo>/.cache/node;
#     tests/run.sh and tests/demo.sh put .cache/node/bin first on PATH;
#   - <repo>/.venv with tests/requirements.txt (moto, boto3, awscli, pytest),
#     reinstalled only when the requirements file changed (stamp in .venv);
#   - tests/oidc/node_modules from the committed package-lock.json (npm ci),
#     reinstalled only when the lock changed;
#   - not with --demo: the SDK compatibility matrix's clients
#     (tests/e2e/test_compat.py): tests/clients/js/node_modules (npm ci, same
#     rule), the Debian packages for the Go and Ruby SDKs and Debian's old
#     botocore/boto3 (python3-botocore, python3-boto3) and AWS CLI v2 (awscli)
#     (apt-get as root, else
#     the command is printed and setup fails), and target/compat/go-probe, built
#     offline GOPATH-style from tests/clients/go/probe.go (rebuilt only when the
#     source, Go or the SDK package changed);
#   - not with --demo: Debian's prometheus (tests/e2e/test_metrics.py scrapes
#     the daemon with the real server).
# Usage: bash tests/setup.sh          everything tests/run.sh needs
#        bash tests/setup.sh --demo   only what tests/demo.sh needs (Rust, .venv,
#                                     oidc-provider): no root, no Go or Ruby
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo/.venv"
req="$repo/tests/requirements.txt"
oidc="$repo/tests/oidc"
node_dir="$repo/.cache/node"
node_version=20.20.2   # from the npm registry when the system's Node is older than 20

demo=0
case "${1:-}" in
  "") ;;
  --demo) demo=1 ;;
  *) echo "usage: bash tests/setup.sh [--demo]" >&2; exit 64 ;;
esac

die() { echo "tests/setup.sh: $*" >&2; exit 1; }
hash_of() {  # hash of the files' contents (not their paths: a moved clone stays up to date)
  local f
  for f in "$@"; do sha256sum < "$f"; done | sha256sum | cut -d' ' -f1
}
is_root() { [ "$(id -u)" = 0 ]; }

apt_updated=0
apt_install() {  # apt_install WHAT PKG...: install Debian packages as root, else fail naming the command
  local what="$1"; shift
  is_root || die "missing $what; run: sudo apt-get install -y --no-install-recommends $*"
  command -v apt-get >/dev/null 2>&1 \
    || die "missing $what and apt-get is not available; install the equivalent of Debian's $* with your package manager"
  echo "apt-get install $* ($what)"
  export DEBIAN_FRONTEND=noninteractive
  if [ "$apt_updated" = 0 ]; then
    apt-get update -qq || die "apt-get update failed (see above); $what needs: apt-get install $*"
    apt_updated=1
  fi
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null \
    || die "apt-get install $* failed (see above); still missing $what"
}

command -v sha256sum >/dev/null 2>&1 || apt_install "sha256sum" coreutils

# --- Rust: rustc >= rust-version ------------------------------------------------
rust_req="$(sed -n 's/^rust-version *= *"\([^"]*\)".*/\1/p' "$repo/Cargo.toml" | head -n1)"
[ -n "$rust_req" ] || die "no rust-version in $repo/Cargo.toml"
command -v cargo >/dev/null 2>&1 \
  || die "cargo not found; install Rust $rust_req or newer with rustup (rustup toolchain install stable), then open a new shell"
rustc_out="$(cd "$repo" && "${RUSTC:-rustc}" --version 2>/dev/null)" \
  || die "rustc not found (cargo is there); install Rust $rust_req or newer with rustup (rustup toolchain install stable)"
rust_found="$(sed -n 's/^rustc \([0-9][0-9.]*\).*/\1/p' <<< "$rustc_out")"
[ -n "$rust_found" ] || die "cannot read the Rust version from '$rustc_out'; Rust $rust_req or newer is required"
printf '%s\n%s\n' "$rust_req" "$rust_found" | sort -V -C \
  || die "Rust $rust_req or newer is required (Cargo.toml rust-version), found $rust_found; run: rustup update stable"

# --- Python 3.10+ with venv (Debian keeps ensurepip in python3-venv) ------------
if ! command -v python3 >/dev/null 2>&1; then
  apt_install "python3" python3 python3-venv
  command -v python3 >/dev/null 2>&1 || die "python3 is still not on PATH after apt-get install python3; install Python 3.10 or newer"
fi
python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' \
  || die "Python 3.10 or newer is required, found $(python3 --version 2>&1); install it: sudo apt-get install -y python3 python3-venv"
venv_usable() { [ -x "$venv/bin/python" ] && [ -x "$venv/bin/pip" ]; }
can_make_venv() { python3 -c 'import venv, ensurepip' >/dev/null 2>&1; }
if ! venv_usable && ! can_make_venv; then
  apt_install "the Python venv module (python3 -m venv needs ensurepip)" python3-venv
  can_make_venv || die "$(command -v python3) still cannot create a venv (no ensurepip) after installing python3-venv; put a python3 that has venv and ensurepip first on PATH"
fi

# --- Node.js 20+ and npm ----------------------------------------------------------
# An earlier run may have installed Node under .cache/node: use it (as run.sh does).
if [ -x "$node_dir/bin/node" ]; then PATH="$node_dir/bin:$PATH"; fi
node_major() {  # the major version of the `node` on PATH, 0 if it does not answer
  local v
  v="$(node --version 2>/dev/null)" || v=0
  v="${v#v}"; v="${v%%.*}"
  case "$v" in "" | *[!0-9]*) echo 0 ;; *) echo "$v" ;; esac
}
if ! command -v node >/dev/null 2>&1; then
  apt_install "Node.js (20 or newer)" nodejs
  command -v node >/dev/null 2>&1 || die "node is still not on PATH after apt-get install nodejs; install Node.js 20 or newer"
fi
if ! command -v npm >/dev/null 2>&1; then
  apt_install "npm" npm
  command -v npm >/dev/null 2>&1 || die "npm is still not on PATH after apt-get install npm; install npm"
fi
if [ "$(node_major)" -lt 20 ]; then
  case "$(uname -m)" in
    x86_64 | amd64) node_arch=x64 ;;
    aarch64 | arm64) node_arch=arm64 ;;
    *) die "Node.js 20 or newer is required, found $(node --version 2>&1), and no prebuilt Node is known for $(uname -m); install Node 20+ yourself" ;;
  esac
  node_pkg="node-linux-$node_arch@$node_version"
  echo "Node $(node --version 2>&1) is older than 20: npm install $node_pkg into $node_dir"
  rm -rf "$node_dir"
  mkdir -p "$node_dir/bin"
  npm install --prefix "$node_dir" --no-save --no-package-lock --no-audit --no-fund --loglevel=error "$node_pkg" \
    || die "installing Node $node_version from the npm registry ($node_pkg) failed (see above); install Node.js 20 or newer yourself"
  ln -s "../node_modules/node-linux-$node_arch/bin/node" "$node_dir/bin/node"
  PATH="$node_dir/bin:$PATH"
  [ "$(node_major)" -ge 20 ] \
    || die "$node_dir/bin/node does not run as Node 20+ (found: $(node --version 2>&1)); install Node.js 20 or newer yourself"
fi
export PATH

echo "toolchain: rustc $rust_found (>= $rust_req), $(python3 --version 2>&1), node $(node --version) ($(command -v node)), npm $(npm --version 2>/dev/null || echo '?')"

# --- Python venv ---------------------------------------------------------------
if ! venv_usable; then
  echo "creating $venv"
  python3 -m venv --clear "$venv" \
    || die "python3 -m venv failed (see above); install the venv module: sudo apt-get install -y python3-venv"
fi
stamp="$venv/.credbroker-requirements.sha256"
want="$(hash_of "$req")"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  echo "installing $req into $venv"
  "$venv/bin/python" -m pip install --disable-pip-version-check -q -r "$req" \
    || die "pip install -r $req failed (see above); PyPI must be reachable"
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
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error) \
      || die "npm ci in $dir failed (see above); the npm registry must be reachable"
    echo "$want" > "$stamp"
  else
    echo "node deps up to date ($dir/node_modules)"
  fi
}
npm_ci "$oidc" oidc-provider

if [ "$demo" = 1 ]; then
  echo "ready for the demo: tests/demo.sh"
  exit 0
fi

npm_ci "$repo/tests/clients/js" @aws-sdk/credential-providers

# --- SDK compatibility matrix: Go v2 and Ruby from Debian ----------------------
# No Go module proxy or rubygems is needed: Debian packages the SDKs.
# Also: systemd (systemd-analyze, for the unit-file tests), util-linux
# (runuser, unshare: clients as other users, network namespaces), and podman
# with runc (crun fails on some cgroup layouts) plus debootstrap for the
# container test, which builds its Debian base offline (tests/e2e/test_container.py).
compat_debs=(golang-go golang-github-aws-aws-sdk-go-v2-dev ruby ruby-aws-sdk-core systemd util-linux podman runc debootstrap)
# The old botocore (1.29) and boto3 (1.26) of Debian 12, run by the system Python (issue 12).
# And Debian 12's AWS CLI v2 (`awscli` 2.9, /usr/bin/aws, with its own vendored botocore).
compat_debs+=(python3-botocore python3-boto3 awscli)
# A real Secret Service for the keyring token store (tests/e2e/test_keyring.py):
# gnome-keyring on a private session bus (dbus), checked with libsecret's secret-tool.
compat_debs+=(dbus dbus-session-bus-common gnome-keyring libsecret-tools)
deb_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
if command -v dpkg-query >/dev/null 2>&1; then
  missing_debs=()
  for deb in "${compat_debs[@]}"; do deb_installed "$deb" || missing_debs+=("$deb"); done
  if [ ${#missing_debs[@]} -gt 0 ]; then
    apt_install "the SDK compatibility matrix's Go and Ruby SDKs, the systemd tools and the Secret Service (tests/demo.sh needs none of them)" "${missing_debs[@]}"
  else
    echo "debian packages up to date (${compat_debs[*]})"
  fi
else
  command -v go >/dev/null 2>&1 && command -v ruby >/dev/null 2>&1 \
    || die "the SDK compatibility matrix needs Go with aws-sdk-go-v2 and Ruby with aws-sdk-core (Debian: apt-get install ${compat_debs[*]})"
fi

# --- Prometheus: tests/e2e/test_metrics.py scrapes the daemon with the real server
command -v prometheus >/dev/null 2>&1 \
  || apt_install "Prometheus (tests/e2e/test_metrics.py scrapes /metrics with it)" prometheus

# --- SDK compatibility matrix: the Go client, built offline -------------------
gosdk=/usr/share/gocode/src/github.com/aws/aws-sdk-go-v2
go_src="$repo/tests/clients/go/probe.go"
compat_dir="$repo/target/compat"
go_out="$compat_dir/go-probe"
stamp="$compat_dir/go-probe.sha256"
[ -d "$gosdk" ] || die "$gosdk not found; install it: sudo apt-get install -y golang-github-aws-aws-sdk-go-v2-dev"
want="$( { sha256sum < "$go_src"; go version; dpkg-query -W golang-github-aws-aws-sdk-go-v2-dev 2>/dev/null || true; } | sha256sum | cut -d' ' -f1)"
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
