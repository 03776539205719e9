#!/usr/bin/env bash
# Download the GeoLite snapshot the importer needs.
set -euo pipefail
mkdir -p data
curl --fail --silent --show-error -o data/countries.csv "$GEO_MIRROR/geo/countries.csv"
echo "downloaded $(wc -l < data/countries.csv) rows"
