#!/usr/bin/env bash
set -euo pipefail
sqlite3 "$ORDERS_DB" < db/schema.sql
echo "schema applied to $ORDERS_DB"
