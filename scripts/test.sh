#!/usr/bin/env bash
# Set up, make sure PostgreSQL and Redis run, and run the whole test suite (pytest arguments pass through).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/services.sh
exec .venv/bin/python -m pytest "$@"
