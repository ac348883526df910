#!/usr/bin/env bash
# Make sure PostgreSQL and Redis answer on 127.0.0.1; start them if not; fail loudly otherwise.
set -u

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() {
  local name=$1 port=$2
  for _ in $(seq 1 40); do
    answers "$port" && return 0
    sleep 0.25
  done
  return 1
}

ensure() {
  local name=$1 port=$2 start=$3
  if answers "$port"; then
    echo "$name answers on 127.0.0.1:$port"
    return 0
  fi
  echo "$name does not answer on 127.0.0.1:$port; starting it: $start"
  bash -c "$start" || true
  if wait_for "$name" "$port"; then
    echo "$name started"
  else
    echo "ERROR: $name still does not answer on 127.0.0.1:$port; the tests need it." >&2
    exit 1
  fi
}

ensure PostgreSQL 5432 'pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start'
ensure Redis 6379 'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log'

# Answering on the port is not enough: the test database must accept queries.
if ! psql -h 127.0.0.1 -U postgres -d test -Atc 'select 1' >/dev/null 2>&1; then
  echo "ERROR: PostgreSQL answers but database 'test' (user postgres, trust auth) does not accept queries." >&2
  exit 1
fi
