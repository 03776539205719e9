"""The published plan JSON Schema and the plan parser agree: on the fields, and on examples."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from metabuilder.domain import limits, plans, protected
from metabuilder.domain.plans import PlanError, parse_plan

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "domain" / "plan.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)

STEP = "steps:\n  - name: lint\n    command: ruff check .\n"
VALID = {
    "minimal": "name: p\n" + STEP,
    "readme": "name: my-service\nsteps:\n  - name: lint\n    command: ruff check .\n    queue: cpu\n"
              "    timeout: 2m\n    env: {RUFF_CACHE_DIR: /tmp/ruff}\n  - name: test\n    command: pytest -q\n",
    "every field": "name: p\ndescription: all of it\nwrite_scope: ['src/**']\n"
                   "repair: {migrate: make migrate, install: 'pip install {package}', install_allowlist: [yaml]}\n"
                   "approvals: {timeout: 2h, on_expiry: approve}\n"
                   "steps:\n  - name: a.b-c_d\n    command: 'true'\n    queue: io\n    timeout: 90\n"
                   "    env: {A: 1, B: true, C: text}\n    fix: fix it\n    rollback: undo\n    fallback: other\n"
                   "    requires_approval: true\n    optional: false\n    idempotent: false\n"
                   "    needs: [pypi, 'staging-db:5432']\n",
    "protected checks": "name: p\nprotected_checks:\n  - {name: notices, paths: [NOTICE], action: refuse}\n"
                        "  - {name: golden, classes: [TEST_ASSERT], in_paths: ['golden/*'], deleted: true,"
                        " removed: ['.'], why: reviewed by hand, waived_by_test_scope: false}\n" + STEP,
    "duration with units": "name: p\nsteps:\n  - name: a\n    command: x\n    timeout: 1h30m\n",
    "bare seconds": "name: p\nsteps:\n  - name: a\n    command: x\n    timeout: '45'\n",
}
INVALID = {
    "no name": STEP,
    "no steps": "name: p\n",
    "empty steps": "name: p\nsteps: []\n",
    "unknown key": "name: p\nowner: me\n" + STEP,
    "unknown step key": "name: p\nsteps:\n  - name: a\n    command: x\n    retries: 3\n",
    "step without command": "name: p\nsteps:\n  - name: a\n",
    "bad queue": "name: p\nsteps:\n  - name: a\n    command: x\n    queue: gpu\n",
    "bad step name": "name: p\nsteps:\n  - name: -a\n    command: x\n",
    "empty command": "name: p\nsteps:\n  - name: a\n    command: '  '\n",
    "number command": "name: p\nsteps:\n  - name: a\n    command: 5\n",
    "bad duration": "name: p\nsteps:\n  - name: a\n    command: x\n    timeout: soon\n",
    "hours then a bare number": "name: p\nsteps:\n  - name: a\n    command: x\n    timeout: 1h30\n",
    "minutes then a bare number": "name: p\nsteps:\n  - name: a\n    command: x\n    timeout: 5m30\n",
    "negative duration": "name: p\nsteps:\n  - name: a\n    command: x\n    timeout: -5\n",
    "bad env name": "name: p\nsteps:\n  - name: a\n    command: x\n    env: {1X: y}\n",
    "list env value": "name: p\nsteps:\n  - name: a\n    command: x\n    env: {X: [1]}\n",
    "string flag": "name: p\nsteps:\n  - name: a\n    command: x\n    optional: sometimes\n",
    "install without package": "name: p\nrepair: {install: pip install x}\n" + STEP,
    "bad expiry": "name: p\napprovals: {on_expiry: maybe}\n" + STEP,
    "protected check matching nothing": "name: p\nprotected_checks:\n  - {name: x, classes: [LINT]}\n" + STEP,
    "protected check with a bad action": "name: p\nprotected_checks:\n  - {name: x, paths: [a], action: warn}\n"
                                         + STEP,
    "protected check with a bad class": "name: p\nprotected_checks:\n  - {name: x, paths: [a], classes: [LINTS]}\n"
                                        + STEP,
    "a need with a space": "name: p\nsteps:\n  - name: a\n    command: x\n    needs: [two words]\n",
    "needs not a list": "name: p\nsteps:\n  - name: a\n    command: x\n    needs: pypi\n",
    "too many needs": "name: p\nsteps:\n  - name: a\n    command: x\n    needs: ["
                      + ", ".join(f"s{i}" for i in range(17)) + "]\n",
    # the limits of domain/limits.py
    "a plan name too long": f"name: {'p' * (limits.MAX_PLAN_NAME_CHARS + 1)}\n" + STEP,
    "a plan name that is a path": "name: ../../tmp/evil\n" + STEP,
    "too many steps": "name: p\nsteps:\n" + "".join(f"  - {{name: s{i}, command: x}}\n"
                                                     for i in range(limits.MAX_STEPS + 1)),
    "a NUL in a command": 'name: p\nsteps:\n  - name: a\n    command: "echo \\0"\n',
    "a NUL in an env value": 'name: p\nsteps:\n  - name: a\n    command: x\n    env: {A: "x\\0y"}\n',
    "a command over one execve argument": f"name: p\nsteps:\n  - name: a\n"
                                          f"    command: {'x' * (limits.MAX_COMMAND_BYTES + 1)}\n",
    "an env value over one execve string": f"name: p\nsteps:\n  - name: a\n    command: x\n"
                                           f"    env: {{A: {'x' * (limits.MAX_ENV_ENTRY_BYTES + 1)}}}\n",
}


def _parser_accepts(text: str) -> bool:
    try:
        parse_plan(text)
    except PlanError:
        return False
    return True


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_plans_pass_both(name: str) -> None:
    text = VALID[name]
    assert _parser_accepts(text)
    assert not list(VALIDATOR.iter_errors(yaml.safe_load(text))), name


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_plans_fail_both(name: str) -> None:
    text = INVALID[name]
    assert not _parser_accepts(text), name
    assert list(VALIDATOR.iter_errors(yaml.safe_load(text))), name


@pytest.mark.parametrize("path", sorted((ROOT / "worker" / "cli" / "examples").rglob("*.yaml")), ids=lambda p: p.name)
def test_the_bundled_example_plans_pass_both(path: Path) -> None:
    text = path.read_text()
    assert _parser_accepts(text)
    assert not list(VALIDATOR.iter_errors(yaml.safe_load(text)))


def test_the_schema_names_exactly_the_parsers_fields() -> None:
    assert set(SCHEMA["properties"]) == plans._PLAN_KEYS
    assert set(SCHEMA["$defs"]["step"]["properties"]) == plans._STEP_KEYS
    assert set(SCHEMA["properties"]["repair"]["properties"]) == plans._REPAIR_KEYS
    assert set(SCHEMA["properties"]["approvals"]["properties"]) == plans._APPROVAL_KEYS
    assert set(SCHEMA["$defs"]["protected_check"]["properties"]) == protected._KEYS


def test_the_schema_is_a_valid_json_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_the_schemas_limits_are_the_parsers() -> None:
    defs = SCHEMA["$defs"]
    assert SCHEMA["properties"]["name"]["maxLength"] == limits.MAX_PLAN_NAME_CHARS
    assert SCHEMA["properties"]["name"]["pattern"] == f"^{plans._PLAN_NAME.pattern}$"
    assert SCHEMA["properties"]["steps"]["maxItems"] == limits.MAX_STEPS
    assert defs["os_string"]["maxLength"] == limits.MAX_COMMAND_BYTES == limits.MAX_ENV_ENTRY_BYTES
