#!/usr/bin/env bash
# TAP tests for bin/rotate.sh
set -uo pipefail
echo "1..2"
work=$(mktemp -d)
for i in 1 2 3 4 5; do touch -d "2024-01-0$i" "$work/db-$i.tar.gz"; done
KEEP=3 bin/rotate.sh "$work"
left=$(ls "$work" | wc -l)
if [ "$left" -eq 3 ]; then echo "ok 1 - keeps 3 backups"; else
  echo "not ok 1 - keeps 3 backups"; echo "# expected: 3"; echo "# got: $left"; fail=1; fi
if [ -e "$work/db-5.tar.gz" ]; then echo "ok 2 - newest is kept"; else echo "not ok 2 - newest is kept"; fail=1; fi
rm -rf "$work"
exit ${fail:-0}
