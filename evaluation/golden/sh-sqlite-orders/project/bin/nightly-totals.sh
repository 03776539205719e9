#!/usr/bin/env bash
# Totals of yesterday's orders for the finance mail.
set -euo pipefail
sqlite3 -bail "$ORDERS_DB" "SELECT count(*), coalesce(sum(total_cents), 0) FROM orders WHERE placed_at >= date('now', '-1 day');"
