#!/usr/bin/env bash
# Make sure PostgreSQL (127.0.0.1:5432, user postgres without password) and Redis (127.0.0.1:6379) answer,
# and that Chromium is there for the dashboard's browser tests. Starts the services when they are installed
# but down; installs what is missing from Debian's packages (root). Never downloads a browser elsewhere.
set -euo pipefail

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
  echo "need root to run: $*" >&2; return 1; fi; }
apt_install() {
  command -v apt-get >/dev/null || { echo "cannot install $*: no apt-get" >&2; return 1; }
  as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
pg_ok() { PGCONNECT_TIMEOUT=3 psql -h 127.0.0.1 -p 5432 -U postgres -d postgres -tAc 'select 1' >/dev/null 2>&1; }

ensure_postgres() {
  pg_ok && return 0
  command -v pg_ctlcluster >/dev/null || apt_install postgresql
  local version; version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -1)
  if [ -z "$version" ]; then
    version=$(ls /usr/lib/postgresql | sort -V | tail -1)
    as_root pg_createcluster "$version" main >/dev/null
  fi
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null || true
  for _ in $(seq 50); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.2; done
  if ! pg_ok; then  # a fresh cluster asks loopback clients for a password: trust them (test machine)
    local hba=/etc/postgresql/$version/main/pg_hba.conf
    as_root sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main reload
    sleep 1
  fi
  pg_ok || { echo "PostgreSQL on 127.0.0.1:5432 does not accept user postgres" >&2; return 1; }
}

ensure_redis() {
  redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && return 0
  command -v redis-server >/dev/null || apt_install redis-server
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /tmp --logfile /tmp/ngm-redis.log
  for _ in $(seq 50); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "Redis did not start on 127.0.0.1:6379" >&2; return 1
}

ensure_chromium() {
  [ -n "${NGM_TEST_CHROMIUM:-}" ] && return 0
  command -v chromium >/dev/null || apt_install chromium
}

ensure_postgres
ensure_redis
ensure_chromium
