#!/usr/bin/env bash
# Create .venv (Python 3.11) and install ngm with its test tools (re-run only when pyproject.toml changes), then
# bring the compiled hot path up to date.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=""
for candidate in python3.11 python3; do
  if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    PY=$candidate; break
  fi
done
[ -n "$PY" ] || { echo "ngm needs Python 3.11 (python3.11 or python3 on PATH)" >&2; exit 1; }
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.ngm-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/pip install -q --disable-pip-version-check --upgrade pip
  .venv/bin/pip install -q --disable-pip-version-check -e '.[test,build]'
  echo "$want" > "$stamp"
fi
# the hot path's compiled modules (setup.py), rebuilt from sources changed since their build; without a C
# compiler, or if Cython fails, they run as Python (the test suite says so: tests/unit/test_compiled.py)
.venv/bin/python -W ignore setup.py -q build_ext --inplace -j 2 >/dev/null \
  || echo "warning: the hot path was not compiled; ngm runs it as Python" >&2
