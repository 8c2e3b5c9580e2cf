#!/usr/bin/env bash
# Runs the README's test command N times in a row (default 5) with two busy CPU hogs beside it, as
# on a shared 2-core CI machine, and stops at the first failure. Prints each run's result and time;
# the last line is `under-load runs=N passed=P`.
#   scripts/under-load.sh [N]
set -uo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
hogs=()
for _ in 1 2; do
  (while :; do :; done) &
  hogs+=($!)
done
trap 'kill "${hogs[@]}" 2>/dev/null' EXIT
# Compiled before the hogs count against it: the series measures the tests, not the build.
cargo test --workspace --no-run >/dev/null 2>&1
passed=0
for run in $(seq 1 "$runs"); do
  started=$SECONDS
  log="target/under-load-$run.log"
  if cargo test --workspace >"$log" 2>&1; then
    passed=$((passed + 1))
    echo "run $run: passed in $((SECONDS - started)) s"
  else
    echo "run $run: FAILED in $((SECONDS - started)) s (see $log)"
    grep -E '^test .* FAILED|^    [a-z_:]+$|panicked' "$log" | head -20
    break
  fi
done
echo "under-load runs=$runs passed=$passed"
[ "$passed" -eq "$runs" ]
