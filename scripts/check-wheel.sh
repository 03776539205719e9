#!/usr/bin/env bash
# A user's install: build the wheel, install it WITHOUT the dev extras into a fresh virtualenv
# outside the repository, and run the CLI and the demo from there.
#   scripts/check-wheel.sh [PYTHON]     PYTHON builds the wheel (default .venv/bin/python)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
python="${1:-$repo/.venv/bin/python}"
work="$(mktemp -d)"
cleanup() {
  [ -x "$work/venv/bin/metabuilder" ] && (cd "$work" && META_BUILDER_HOME="$work/home" \
    META_BUILDER_DEV_SERVER_PORT="$port" "$work/venv/bin/metabuilder" server stop >/dev/null 2>&1 || true)
  rm -rf "$work"
}
port=$("$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
trap cleanup EXIT

echo "==> wheel"
"$python" -m build --wheel --no-isolation --outdir "$work/dist" "$repo" >"$work/build.log" 2>&1 \
  || { cat "$work/build.log" >&2; exit 1; }
wheel=$(ls "$work"/dist/*.whl)
echo "    $(basename "$wheel")"
tops=$("$python" - "$wheel" <<'PY'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
print(" ".join(sorted({n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")})))
PY
)
[ "$tops" = "metabuilder" ] || { echo "check-wheel: the wheel installs '$tops' into site-packages, not only metabuilder" >&2; exit 1; }
echo "    one import package: $tops"

echo "==> fresh virtualenv, runtime dependencies only"
python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --disable-pip-version-check "$wheel" >"$work/pip.log" 2>&1 \
  || { cat "$work/pip.log" >&2; exit 1; }
if "$work/venv/bin/python" -c 'import pytest' 2>/dev/null; then
  echo "check-wheel: pytest came with the runtime dependencies" >&2; exit 1
fi

cd "$work"  # outside the repository: nothing may be imported from the source tree
export META_BUILDER_HOME="$work/home" META_BUILDER_DEV_SERVER_PORT="$port"
mb="$work/venv/bin/metabuilder"
version=$("$mb" --version)
[[ "$version" == "metabuilder "* ]] || { echo "check-wheel: --version printed '$version'" >&2; exit 1; }
echo "==> $version"
"$mb" --help >/dev/null

echo "==> PostgreSQL without its driver names the extra"
set +e
out=$(DATABASE_URL=postgresql://nobody@127.0.0.1:1/none "$mb" status some-run 2>&1); code=$?
set -e
if [ "$code" -ne 2 ] || [[ "$out" != *"meta-builder[postgres]"* ]]; then
  echo "check-wheel: expected exit 2 naming meta-builder[postgres], got $code: $out" >&2; exit 1
fi

echo "==> metabuilder demo (from $work)"
"$mb" demo >"$work/demo.log" 2>&1 || { cat "$work/demo.log" >&2; echo "check-wheel: the demo failed" >&2; exit 1; }
tail -n 3 "$work/demo.log"
echo "check-wheel: ok"
