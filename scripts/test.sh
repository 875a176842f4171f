#!/usr/bin/env bash
# Set up, make sure PostgreSQL and Redis run, lint and type-check, and run the test suite (pytest arguments pass through).
# Without test paths among the arguments, unit and integration tests first run with the data plane as plain
# Python (NGM_COMPILED=0), then the whole suite with it compiled: both ways of running must hold. Tests run on
# NGM_TEST_WORKERS pytest-xdist workers (3; most of a test's time is waiting on servers and sockets), a module's
# tests on one worker; `-n 0` runs them in this process.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/services.sh
.venv/bin/ruff check --quiet ngm tests bench setup.py
.venv/bin/mypy  # pyproject's [tool.mypy]: all of ngm, strictly the data plane, models and stores
paths=0
xdist=(-n "${NGM_TEST_WORKERS:-3}" --dist loadfile)
for arg in "$@"; do
  [[ "$arg" == -* ]] || paths=1
  [[ "$arg" == -n* || "$arg" == --numprocesses* ]] && xdist=()
done
if [ "$paths" = 0 ]; then
  NGM_COMPILED=0 .venv/bin/python -m pytest "${xdist[@]}" "$@" tests/unit tests/integration
fi
exec .venv/bin/python -m pytest "${xdist[@]}" "$@"
