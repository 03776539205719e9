#!/usr/bin/env bash
# mypy over the installed layout: the top-level folders install as metabuilder.<layer> through an
# import hook (setuptools package-dir) that mypy cannot follow, so link them where it can look.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
mkdir -p .mypy-src/metabuilder
for layer in domain store workflows activities service worker api telemetry migrations; do
    ln -sfn "../../$layer" ".mypy-src/metabuilder/$layer"
done
exec "$PYTHON" -m mypy "$@"
