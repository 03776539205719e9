#!/usr/bin/env bash
# make rc TAG=vX.Y.Z-rcN: cut a release candidate from a clean main.
#   1. refuses a bad tag, a dirty tree or a tag that exists;
#   2. runs the checks ($RC_CHECKS, default: make lint test);
#   3. sets the package version (X.Y.ZrcN), writes the CHANGELOG.md section from the commits
#      since the last tag, and commits both;
#   4. builds the sdist and the wheel into dist/ (with the venv's setuptools: no download) and
#      checks their version;
#   5. tags the commit (annotated, the changelog section as its message).
# Pushing is left to you: git push origin HEAD "$TAG" (the release workflow runs on the tag).
set -euo pipefail

die() { echo "make rc: $*" >&2; exit 2; }

tag="${1:-}"
[[ "$tag" =~ ^v([0-9]+\.[0-9]+\.[0-9]+)-rc([0-9]+)$ ]] \
  || die "TAG='$tag': expected vX.Y.Z-rcN, e.g. make rc TAG=v0.2.0-rc1"
version="${BASH_REMATCH[1]}rc${BASH_REMATCH[2]}"
python="${PYTHON:-.venv/bin/python}"

cd "$(git rev-parse --show-toplevel)"
[ -z "$(git status --porcelain)" ] || die "the work tree has uncommitted changes; commit or stash them first"
if git rev-parse -q --verify "refs/tags/$tag" >/dev/null; then
  die "tag $tag exists already"
fi

echo "==> checks: ${RC_CHECKS:-make lint test}"
bash -c "${RC_CHECKS:-make lint test}" || { echo "make rc: the checks failed; nothing was changed" >&2; exit 1; }

last=$(git describe --tags --abbrev=0 2>/dev/null || true)
range="${last:+$last..}HEAD"
section=$(mktemp)
trap 'rm -f "$section"' EXIT
{
  echo "## $tag ($(date -u +%Y-%m-%d))"
  echo
  if [ -n "$last" ]; then echo "Changes since $last:"; else echo "First release; every change so far:"; fi
  echo
  git log --no-merges --format='- %s (%h)' "$range"
} > "$section"

"$python" - "$version" "$section" <<'PY'
import pathlib, re, sys
version, section = sys.argv[1], pathlib.Path(sys.argv[2]).read_text()
pyproject = pathlib.Path("pyproject.toml")
text, n = re.subn(r'(?m)^version = "[^"]*"$', f'version = "{version}"', pyproject.read_text(), count=1)
if n != 1:
    sys.exit("make rc: pyproject.toml has no version line")
pyproject.write_text(text)
changelog = pathlib.Path("CHANGELOG.md")
old = changelog.read_text() if changelog.exists() else "# Changelog\n"
head, _, rest = old.partition("\n")
changelog.write_text(f"{head}\n\n{section}\n{rest.lstrip(chr(10))}")
PY

git add pyproject.toml CHANGELOG.md
git -c commit.gpgsign=false commit --quiet -m "Release $tag"

echo "==> building sdist and wheel into dist/"
rm -rf dist
if ! "$python" -m build --no-isolation --outdir dist . >dist-build.log 2>&1 \
   || ! ls "dist/meta_builder-$version-py3-none-any.whl" "dist/meta_builder-$version.tar.gz" >/dev/null 2>&1; then
  cat dist-build.log >&2; rm -f dist-build.log
  git reset --quiet --hard HEAD~1
  echo "make rc: the build failed; the release commit was undone" >&2
  exit 1
fi
rm -f dist-build.log

git -c tag.gpgsign=false tag --annotate --file "$section" "$tag"
echo "==> $tag: version $version, $(ls dist | tr '\n' ' ')"
echo "push it with: git push origin HEAD $tag"
