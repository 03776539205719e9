#!/usr/bin/env bash
# mypy over the installed layout: the top-level folders install as metabuilder.<layer> through an
# import hook (setuptools package-dir) that mypy cannot follow, so link them where it can look.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
mkdir -p .mypy-src/metabuilder
# the layers are the top-level folders that pyproject.toml maps into the package
layers=$("$PYTHON" -c 'import tomllib; d = tomllib.load(open("pyproject.toml", "rb"))["tool"]["setuptools"]["package-dir"]
print(" ".join(sorted({v.split("/")[0] for v in d.values()})))')
for layer in $layers; do
    ln -sfn "../../$layer" ".mypy-src/metabuilder/$layer"
done
exec "$PYTHON" -m mypy "$@"
