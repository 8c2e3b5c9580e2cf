#!/usr/bin/env bash
# Database outage with the full 30 s (the test suite uses 10 s): a private embedded PostgreSQL
# server is stopped under the running service and started again; nothing shared is touched.
set -euo pipefail
cd "$(dirname "$0")/.."
export OUTAGE_SECONDS="${OUTAGE_SECONDS:-30}"
exec cargo test --test it hardening_outage:: -- --nocapture "$@"
