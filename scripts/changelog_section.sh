#!/usr/bin/env bash
# The CHANGELOG.md section of one tag (the release notes of its GitHub Release).
set -euo pipefail
tag="${1:?usage: scripts/changelog_section.sh vX.Y.Z-rcN}"
awk -v tag="$tag" '
  /^## / { inside = ($2 == tag) }
  inside { print }
' CHANGELOG.md | grep . >/dev/null || { echo "no section for $tag in CHANGELOG.md" >&2; exit 1; }
awk -v tag="$tag" '/^## / { inside = ($2 == tag) } inside { print }' CHANGELOG.md
