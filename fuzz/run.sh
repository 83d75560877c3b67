#!/usr/bin/env bash
# Bounded cargo-fuzz run of every target (CI and local use).
#
#   fuzz/run.sh                      # every target, FUZZ_SECONDS (60) each
#   FUZZ_SECONDS=600 fuzz/run.sh     # longer
#   FUZZ_TARGETS="router jwt_exp" fuzz/run.sh
#   FUZZ_BUILD=dev fuzz/run.sh       # unoptimized build (no faster to build here, ~20x slower to run)
#
# Needs a nightly toolchain (cargo-fuzz uses -Zsanitizer and libFuzzer). When
# rustup has no nightly, or cargo-fuzz is missing and cannot be installed, it
# says so loudly and exits 0: the property tests (tests/properties.rs, part of
# plain `cargo test`) still cover the schedule, backoff and format code.
#
# Writes target/security/fuzz.json (per target: executions, exec/s, seconds,
# corpus size, coverage, crashes) and target/security/fuzz-<target>.log.
# Exits non-zero when any target crashes (panics, times out or runs out of
# memory); the reproducer is in fuzz/artifacts/<target>/ (see fuzz/README.md).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SECONDS_PER_TARGET="${FUZZ_SECONDS:-60}"
TARGETS="${FUZZ_TARGETS:-config_parse router jwt_exp imds_tokens}"
# release: cargo-fuzz's default (optimized, debug assertions and overflow
# checks on, AddressSanitizer); fuzz/Cargo.toml leaves the crates no target
# executes (AWS SDK, TLS, HTTP client) unoptimized, which halves the build.
# See fuzz/README.md for the measured trade-off.
BUILD="${FUZZ_BUILD:-release}"
OUT_DIR="target/security"
OUT="$OUT_DIR/fuzz.json"
mkdir -p "$OUT_DIR"

say() { printf 'fuzz/run.sh: %s\n' "$*" >&2; }

json_str() { # JSON string literal for $1
  local s=${1//\\/\\\\}
  s=${s//\"/\\\"}
  s=${s//$'\n'/\\n}
  s=${s//$'\r'/}
  s=${s//$'\t'/ }
  printf '"%s"' "$s"
}

skip() { # loud, but not a CI failure: the property tests still run
  local reason="$1"
  {
    echo
    echo "################################################################"
    echo "#  FUZZING SKIPPED: $reason"
    echo "#  No fuzz targets were run. The property tests"
    echo "#  (cargo test --test properties) still run in plain cargo test."
    echo "#  To fuzz: rustup toolchain install nightly && cargo install cargo-fuzz --locked"
    echo "################################################################"
    echo
  } >&2
  printf '{"status": "skipped", "reason": %s, "seconds_per_target": %s, "targets": {}}\n' \
    "$(json_str "$reason")" "$SECONDS_PER_TARGET" >"$OUT"
  exit 0
}

command -v cargo >/dev/null 2>&1 || skip "cargo not found"
command -v rustup >/dev/null 2>&1 || skip "rustup not found (needed to select a nightly toolchain)"
rustup toolchain list 2>/dev/null | grep -q '^nightly' \
  || skip "no nightly toolchain (rustup toolchain list shows none); cargo fuzz needs one"
NIGHTLY="$(rustc +nightly --version 2>/dev/null || echo unknown)"

if ! cargo fuzz --version >/dev/null 2>&1; then
  say "cargo-fuzz not installed; installing (cargo install cargo-fuzz --locked)"
  cargo install cargo-fuzz --locked >&2 || skip "cargo-fuzz is not installed and could not be installed"
fi

case "$BUILD" in
  dev) BUILD_FLAGS=(--dev) ;;
  release) BUILD_FLAGS=() ;; # not -O: that would turn debug assertions off
  *) say "FUZZ_BUILD must be dev or release, not '$BUILD'"; exit 2 ;;
esac

say "$NIGHTLY, $(cargo fuzz --version), build: $BUILD, ${SECONDS_PER_TARGET}s per target: $TARGETS"
t0=$(date +%s)
# One cargo invocation builds every target (cargo fuzz build takes at most one name).
if ! cargo +nightly fuzz build "${BUILD_FLAGS[@]}"; then
  say "the fuzz targets do not build"
  exit 1
fi
build_seconds=$(( $(date +%s) - t0 ))
say "build took ${build_seconds}s"

stat_of() { # stat_of LOG NAME -> value of libFuzzer's "stat::NAME:" line
  sed -n "s/^stat::$2:[[:space:]]*\([0-9]*\).*/\1/p" "$1" | tail -n1
}

failed=0
entries=()
summary=()
for t in $TARGETS; do
  seeds="fuzz/corpus/$t"
  work="fuzz/target/corpus/$t" # new inputs land here (git-ignored); seeds stay as committed
  artifacts="fuzz/artifacts/$t"
  log="$OUT_DIR/fuzz-$t.log"
  mkdir -p "$work" "$artifacts"
  # (cargo fuzz run sets -artifact_prefix=fuzz/artifacts/<target>/ itself)
  args=(-max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1)
  [ -f "fuzz/dict/$t.dict" ] && args+=(-dict="fuzz/dict/$t.dict")
  before=$(find "$artifacts" -type f | sort)
  say "running $t for ${SECONDS_PER_TARGET}s"
  s0=$(date +%s)
  cargo +nightly fuzz run "${BUILD_FLAGS[@]}" "$t" "$work" "$seeds" -- "${args[@]}" >"$log" 2>&1
  rc=$?
  secs=$(( $(date +%s) - s0 ))
  execs=$(stat_of "$log" number_of_executed_units)
  eps=$(stat_of "$log" average_exec_per_sec)
  rss=$(stat_of "$log" peak_rss_mb)
  done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n1)
  corp=$(sed -n 's/.* corp: \([0-9]*\)\/.*/\1/p' <<<"$done_line")
  cov=$(sed -n 's/.* cov: \([0-9]*\) .*/\1/p' <<<"$done_line")
  ft=$(sed -n 's/.* ft: \([0-9]*\) .*/\1/p' <<<"$done_line")
  new=$(comm -13 <(printf '%s\n' "$before") <(find "$artifacts" -type f | sort) | grep -v '^$' || true)
  crashes=0
  crash_json="[]"
  panic=""
  if [ "$rc" -ne 0 ] || [ -n "$new" ]; then
    crashes=$(grep -c . <<<"$new" || true)
    [ "$crashes" -eq 0 ] && crashes=1 # non-zero exit without an artifact still counts
    failed=1
    panic=$(grep -m1 -A2 "panicked at" "$log" | tr '\n' ' ' | cut -c1-400)
    [ -z "$panic" ] && panic=$(grep -m1 -E "ERROR: libFuzzer|==ERROR|SUMMARY" "$log" | cut -c1-400)
    crash_json="[$(sed 's/.*/"&"/' <<<"$new" | paste -sd, -)]"
    say "$t: CRASH (exit $rc) after ${secs}s: ${panic:-see $log}"
    while read -r f; do [ -n "$f" ] && say "  reproduce: cargo +nightly fuzz run ${BUILD_FLAGS[*]} $t $f"; done <<<"$new"
  fi
  summary+=("$(printf '%-13s %10s execs %7s/s %4ss corpus %5s cov %5s crashes %s' \
    "$t" "${execs:-?}" "${eps:-?}" "$secs" "${corp:-?}" "${cov:-?}" "$crashes")")
  entries+=("$(printf '%s: {"executions": %s, "exec_per_sec": %s, "seconds": %s, "corpus": %s, "coverage": %s, "features": %s, "peak_rss_mb": %s, "crashes": %s, "artifacts": %s, "panic": %s, "log": %s}' \
    "$(json_str "$t")" "${execs:-null}" "${eps:-null}" "$secs" "${corp:-null}" "${cov:-null}" \
    "${ft:-null}" "${rss:-null}" "$crashes" "${crash_json:-[]}" "$(json_str "$panic")" "$(json_str "$log")")")
done

status=ok
[ "$failed" -ne 0 ] && status=crash
{
  printf '{"status": "%s", "toolchain": %s, "build": "%s", "build_seconds": %s, "seconds_per_target": %s, "targets": {\n' \
    "$status" "$(json_str "$NIGHTLY")" "$BUILD" "$build_seconds" "$SECONDS_PER_TARGET"
  for i in "${!entries[@]}"; do
    sep=","; [ "$i" -eq $(( ${#entries[@]} - 1 )) ] && sep=""
    printf '  %s%s\n' "${entries[$i]}" "$sep"
  done
  printf '}}\n'
} >"$OUT"

echo "fuzz results (${SECONDS_PER_TARGET}s per target, $BUILD build; $OUT):"
printf '  %s\n' "${summary[@]}"
if [ "$failed" -ne 0 ]; then
  say "at least one target crashed; see fuzz/README.md (reproduce, minimize)"
  exit 1
fi
