#!/usr/bin/env bash
# Set up and serve ngm on its embedded defaults: SQLite and the encryption key file under
# ~/.local/share/ngm (NGM_DATA_DIR), in-memory rate limits, http://127.0.0.1:8000.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/ngm serve "$@"
