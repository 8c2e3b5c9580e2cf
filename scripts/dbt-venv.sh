#!/usr/bin/env bash
# The dbt that tests/it/operator.rs runs: a virtualenv in target/dbt-venv, created on first use and
# reused after. Prints the path of its `dbt`. The dbt test calls this (so `cargo test` works on a
# fresh machine with python3), and .ci/run calls it in the background while cargo compiles (so the
# test finds it ready). Test processes and CI may call it at the same time: an exclusive lock on
# target/dbt-venv.lock lets one install while the others wait, and a virtualenv counts as ready
# only once its marker file exists (an interrupted install is thrown away and redone).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="$PWD/target/dbt-venv"
mkdir -p target
exec 9>target/dbt-venv.lock
flock 9
if [ ! -e "$venv/.installed" ]; then
  started=$SECONDS
  rm -rf "$venv"
  python3 -m venv "$venv"
  # Newer dbt-core releases pull a parser that downloads from GitHub at install time; 1.10 installs from PyPI alone.
  "$venv/bin/pip" install --quiet --disable-pip-version-check "dbt-core>=1.9,<1.11" "dbt-postgres>=1.9,<1.11" >&2
  touch "$venv/.installed"
  echo "dbt installed in $venv in $((SECONDS - started)) s" >&2
fi
echo "$venv/bin/dbt"
