#!/usr/bin/env bash
# The test suite needs the PostgreSQL on 127.0.0.1:5432 (trust auth). Start it if it is down.
# PGHOST names another server (CI's service container); that one is only waited for.
set -euo pipefail
host="${PGHOST:-127.0.0.1}"
if pg_isready -q -h "$host" -p 5432 2>/dev/null; then
  exit 0
fi
echo "PostgreSQL is not answering on $host:5432; starting it" >&2
if [ "$host" = 127.0.0.1 ] && command -v pg_ctlcluster >/dev/null 2>&1; then
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  pg_ctlcluster --skip-systemctl-redirect "$version" main start
fi
for _ in $(seq 1 30); do
  pg_isready -q -h "$host" -p 5432 && exit 0
  sleep 1
done
echo "PostgreSQL did not come up on $host:5432; the store and workflow tests need it" >&2
exit 1
