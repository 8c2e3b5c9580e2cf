#!/usr/bin/env bash
# Fuzzes the configuration loader and the rate-limit header parser for a bounded time.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]      (default 60; or FUZZ_SECONDS)
#
# FUZZ_FLAGS adds cargo-fuzz build flags; the default build is optimised with debug assertions and
# overflow checks on (FUZZ_FLAGS=-O turns those off, e.g. to reuse a `cargo fuzz build -O`).
#
# With a nightly toolchain: installs cargo-fuzz if needed and runs each libFuzzer target
# (coverage-guided, AddressSanitizer) for the given time, seeded from fuzz/corpus/<target>;
# what it learns goes to fuzz/.work/<target>, crashes to fuzz/artifacts/<target>.
# Without nightly: runs the same entry points under a plain random-mutation loop
# (`cargo test --release` in fuzz/), which needs only stable but has no coverage guidance.
#
# Not part of CI: it is slow to build and its findings need a person.
set -euo pipefail

cd "$(dirname "$0")/.."
seconds="${1:-${FUZZ_SECONDS:-60}}"
targets=(config_loader rate_headers)

if rustup run nightly rustc --version >/dev/null 2>&1; then
    if ! cargo fuzz --version >/dev/null 2>&1; then
        echo "== installing cargo-fuzz"
        cargo install cargo-fuzz --locked
    fi
    for target in "${targets[@]}"; do
        echo "== fuzzing $target for ${seconds}s (libFuzzer, nightly)"
        mkdir -p "fuzz/.work/$target"
        # shellcheck disable=SC2086 # FUZZ_FLAGS is a list of flags
        cargo +nightly fuzz run ${FUZZ_FLAGS:-} "$target" "fuzz/.work/$target" "fuzz/corpus/$target" -- \
            -max_total_time="$seconds" -max_len=8192 -timeout=10 -print_final_stats=1
    done
else
    echo "== no nightly toolchain: random-input loop instead of libFuzzer (${seconds}s per target)"
    FUZZ_SECONDS="$seconds" cargo test --release --manifest-path fuzz/Cargo.toml --lib -- \
        --nocapture --test-threads 1
fi
