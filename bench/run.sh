#!/usr/bin/env bash
# The benchmark suite (issue 13): credbroker side by side with a bare hyper
# baseline (examples/bench_baseline.rs) and the peer aws-export-credentials,
# fed by moto + oidc-provider through tests/e2e/harness.py (bench/bench.py).
#
# Usage: bench/run.sh           full run: release build, oha load generator,
#                               ~15 min; writes docs/benchmarks.md + docs/benchmarks.png
#        bench/run.sh --quick   a few seconds per figure, debug build, the in-repo
#                               load generator only; publishes nothing (tests/run.sh
#                               runs it so the bench never rots); fails when a
#                               figure cannot be produced
# Installs its tools under .cache/bench (ignored): oha from crates.io
# (cargo install --locked, full run only), and a venv with aws-export-credentials
# (its last release needs boto3/botocore <= 1.36, so not in .venv) plus
# matplotlib for the plot. Idempotent: a second run installs nothing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

quick=0
case "${1:-}" in
  "") ;;
  --quick) quick=1 ;;
  *) echo "usage: bench/run.sh [--quick]" >&2; exit 64 ;;
esac
die() { echo "bench/run.sh: $*" >&2; exit 1; }

export NO_PROXY="127.0.0.1,localhost,::1${NO_PROXY:+,$NO_PROXY}" no_proxy="127.0.0.1,localhost,::1${no_proxy:+,$no_proxy}"
cache="$PWD/.cache/bench"
mkdir -p "$cache"

# moto, boto3, oidc-provider (and Node 20 when the system's is older).
bash tests/setup.sh --demo >/dev/null || die "tests/setup.sh --demo failed (run it to see why)"
if [ -x .cache/node/bin/node ]; then export PATH="$PWD/.cache/node/bin:$PATH"; fi

# The peer, in its own venv (pinned: the versions measured).
peer_venv="$cache/peer-venv"
peer_req="aws-export-credentials==0.18.0 boto3==1.36.0 botocore==1.36.0"
[ "$quick" = 1 ] || peer_req="$peer_req matplotlib==3.11.2"
stamp="$peer_venv/.bench-stamp"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$peer_req" ]; then
  echo "bench: installing $peer_req into $peer_venv"
  [ -x "$peer_venv/bin/pip" ] || python3 -m venv "$peer_venv" || die "python3 -m venv $peer_venv failed"
  # shellcheck disable=SC2086
  "$peer_venv/bin/pip" install --disable-pip-version-check -q $peer_req \
    || die "pip install $peer_req failed (PyPI must be reachable)"
  echo "$peer_req" > "$stamp"
fi

oha_version=1.16.0
if [ "$quick" = 1 ]; then
  cargo build --locked --bins --examples || die "cargo build failed"
  bins=target/debug
  oha=""
else
  oha="$cache/tools/bin/oha"
  if [ ! -x "$oha" ] || ! "$oha" --version 2>/dev/null | grep -q "$oha_version"; then
    echo "bench: cargo install --locked oha@$oha_version (cold: several minutes)"
    t0=$(date +%s)
    CARGO_TARGET_DIR="$cache/oha-target" cargo install --locked "oha@$oha_version" --root "$cache/tools" \
      || die "cargo install oha failed (crates.io must be reachable)"
    echo "bench: oha built in $(( $(date +%s) - t0 )) s"
  fi
  # Unstripped (symbols for perf); bench.py reports the size after strip(1),
  # which is what `strip = true` in [profile.release] produces.
  CARGO_PROFILE_RELEASE_STRIP=false cargo build --locked --release --bins --examples || die "cargo build --release failed"
  bins=target/release
fi

# 1,000 clients and 1,000 open connections need more than the usual 1024 descriptors.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n 20000 2>/dev/null || true

out="$cache/results-$([ "$quick" = 1 ] && echo quick || echo full).json"
args=(--bin-dir "$bins" --peer-venv "$peer_venv" --json-out "$out")
if [ "$quick" = 1 ]; then
  .venv/bin/python bench/bench.py --quick "${args[@]}" || die "a figure could not be produced (see above)"
  echo "bench/run.sh --quick: every figure produced ($out; not published)"
else
  .venv/bin/python bench/bench.py --oha "$oha" "${args[@]}" || die "a figure could not be produced (see above)"
  "$peer_venv/bin/python" bench/report.py "$out" docs/benchmarks.md docs/benchmarks.png "bench/run.sh" \
    || die "writing docs/benchmarks.md failed"
  echo "bench/run.sh: wrote docs/benchmarks.md and docs/benchmarks.png"
fi
