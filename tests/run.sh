#!/usr/bin/env bash
# Run every test: formatting and lints, unit + router + property tests (cargo
# test), bounded fuzzing (fuzz/run.sh), then the end-to-end suite that drives
# the built binary against moto (AWS) and oidc-provider (a real OpenID
# provider) with real SDK clients: scenarios, the SDK compatibility matrix
# (writes docs/compatibility.md) and the adversarial suite (writes
# docs/security.md). CREDBROKER_LONG=1 runs the long crash loops;
# FUZZ_SECONDS=N fuzzes longer.
# Installs what it needs first (tests/setup.sh: toolchain checks, .venv, npm ci,
# the SDK matrix's Debian packages); idempotent.
# Usage: tests/run.sh            (from anywhere)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

start=$(date +%s)
# Everything the tests start listens on loopback: never send it through a proxy.
export NO_PROXY="127.0.0.1,localhost,::1${NO_PROXY:+,$NO_PROXY}" no_proxy="127.0.0.1,localhost,::1${no_proxy:+,$no_proxy}"
bash tests/setup.sh
# setup.sh installs Node 20 under .cache/node when the system's is missing or older.
if [ -x .cache/node/bin/node ]; then export PATH="$PWD/.cache/node/bin:$PATH"; fi
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
# The binary and the Rust SDK test client (examples/sdk_probe.rs) for the e2e suite.
cargo build --locked --bins --examples
cargo test --locked
# Bounded fuzzing (FUZZ_SECONDS per target, default 60; needs nightly, else a
# loud skip): before pytest, whose session end writes docs/security.md from
# target/security/*.json, fuzz figures included.
fuzz/run.sh
.venv/bin/python -m pytest tests/e2e -q -p no:cacheprovider -rA --durations=10
# The benchmark suite's quick mode (debug build, a few seconds per figure,
# nothing published): fails when a figure can no longer be produced.
bench/run.sh --quick
echo "tests/run.sh: all tests passed in $(( $(date +%s) - start )) s"
