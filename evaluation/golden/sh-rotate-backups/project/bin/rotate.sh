#!/usr/bin/env bash
# Keep the newest $KEEP backups in $1, delete the rest.
set -euo pipefail
dir=$1
keep=${KEEP:-3}
ls -1t "$dir"/*.tar.gz | tail -n +$keep | xargs -r rm --
