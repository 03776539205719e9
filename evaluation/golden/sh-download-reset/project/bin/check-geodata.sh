#!/usr/bin/env bash
set -euo pipefail
head -1 data/countries.csv | grep -q '^code,name$' || { echo "bad header"; exit 1; }
echo "geodata ok"
