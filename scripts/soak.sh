#!/usr/bin/env bash
# Soak: the service against all four sandbox vendors for SOAK_SECONDS (default 600) with 10 %
# injected faults and seconds-long tokens; prints runs, faults, rows checked, RSS and connections.
# Needs PostgreSQL: DATABASE_URL (a role allowed to create databases), else an embedded server.
set -euo pipefail
cd "$(dirname "$0")/.."
export SOAK_SECONDS="${SOAK_SECONDS:-600}"
exec cargo test --test it soak:: -- --ignored --nocapture "$@"
