#!/usr/bin/env bash
# Database-restart soak: the service running two jobs on a private embedded PostgreSQL server that
# is restarted mid-window every two minutes for RESTART_SOAK_MINUTES (default 10); checks that no
# run is left running or changes status twice, no row is lost or duplicated, and the service is
# never declared dead. The test command runs the short form (three restarts, ten seconds apart).
set -euo pipefail
cd "$(dirname "$0")/.."
export RESTART_SOAK_MINUTES="${RESTART_SOAK_MINUTES:-10}"
exec cargo test --test it db_restart::soak_with_a_database_restart_every_two_minutes -- --ignored --nocapture "$@"
