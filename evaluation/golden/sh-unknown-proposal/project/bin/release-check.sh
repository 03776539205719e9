#!/usr/bin/env bash
set -euo pipefail
version=$(cat VERSION)
grep -q "## $version" CHANGELOG.md || { echo "release-check: $version: no entry"; exit 2; }
echo "release $version checked"
