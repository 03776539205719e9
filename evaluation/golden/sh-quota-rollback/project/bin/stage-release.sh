#!/usr/bin/env bash
set -euo pipefail
mkdir -p "$STAGE_DIR"
echo 2.7.0 > "$STAGE_DIR/staged"
echo "staged 2.7.0"
