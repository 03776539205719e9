#!/usr/bin/env bash
rm -f "$STAGE_DIR/staged"
echo "unstaged"
