import textwrap

import pytest

from metabuilder.domain.plans import (
    PlanError,
    Queue,
    load_plan,
    parse_duration,
    parse_plan,
    plan_to_dict,
    step_to_dict,
)

GOOD = """\
name: demo
description: a plan
write_scope: ["src/**"]
steps:
  - name: lint
    command: ruff check .
    queue: cpu
    timeout: 2m
    env: {RUFF_CACHE_DIR: /tmp/ruff, STRICT: true, LEVEL: 3}
    fix: ruff check --fix .
  - name: migrate
    command: alembic upgrade head
    queue: io
    timeout: 1h30m
    rollback: alembic downgrade -1
    requires_approval: true
  - name: docs
    command: make docs
    optional: true
    fallback: echo skipped
"""


def test_good_plan_parses_every_field() -> None:
    plan = parse_plan(GOOD, "good.yaml")
    assert plan.name == "demo" and plan.description == "a plan" and plan.write_scope == ["src/**"]
    lint, migrate, docs = plan.steps
    assert (lint.queue, lint.timeout_seconds, lint.fix_command) == (Queue.CPU, 120.0, "ruff check --fix .")
    assert lint.env == {"RUFF_CACHE_DIR": "/tmp/ruff", "STRICT": "true", "LEVEL": "3"}
    assert (migrate.queue, migrate.timeout_seconds, migrate.requires_approval) == (Queue.IO, 5400.0, True)
    assert migrate.rollback_command == "alembic downgrade -1"
    assert (docs.queue, docs.timeout_seconds, docs.optional, docs.fallback_command) == (
        Queue.CPU, 600.0, True, "echo skipped")


def test_plan_round_trips_through_its_dict_form() -> None:
    import yaml

    plan = parse_plan(GOOD)
    assert parse_plan(yaml.safe_dump(plan_to_dict(plan), sort_keys=False)) == plan


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: p\nsteps:\n  - name: a\n    command: x\n    colour: red\n",
         "bad.yaml:5: steps[0].colour: unknown key"),
        ("name: p\nsteps:\n  - name: a\n    queue: cpu\n",
         "bad.yaml:3: steps[0] (a).command: missing"),
        ("name: p\nsteps:\n  - name: a\n    command: '  '\n",
         "bad.yaml:4: steps[0] (a).command: must not be empty"),
        ("name: p\nsteps:\n  - name: a\n    command: x\n  - name: a\n    command: y\n",
         "bad.yaml:5: steps[1].name: duplicate step name 'a' (first used at line 3)"),
        ("name: p\nsteps:\n  - name: a\n    command: x\n    timeout: soon\n",
         "bad.yaml:5: steps[0] (a).timeout: expected a duration like 30s, 5m or 1h30m (each number with its unit), "
         "got 'soon'"),
        ("name: p\nsteps:\n  - name: a\n    command: x\n    timeout: 0s\n",
         "bad.yaml:5: steps[0] (a).timeout: duration must be more than 0"),
        ("name: p\nsteps:\n  - name: a\n    command: x\n    queue: gpu\n",
         "bad.yaml:5: steps[0] (a).queue: unknown queue 'gpu' (expected one of: cpu, io, llm)"),
        ("steps:\n  - name: a\n    command: x\n", "bad.yaml:1: name: missing"),
        ("name: p\n", "bad.yaml:1: steps: missing"),
        ("name: p\nsteps: []\n", "bad.yaml:2: steps: a plan needs at least one step"),
        ("name: p\nsteps:\n  - just a string\n", "bad.yaml:3: steps[0]: expected a mapping"),
        ("name: p\nname: q\nsteps:\n  - {name: a, command: x}\n", "bad.yaml:2: name: duplicate key"),
        ("name: p\nsteps:\n  - name: a b\n    command: x\n", "bad.yaml:3: steps[0].name: 'a b' is not a valid"),
        ("name: p\nsteps:\n  - name: a\n    command: x\n    optional: maybe\n",
         "bad.yaml:5: steps[0] (a).optional: expected true or false, got 'maybe'"),
        ("name: p\nsteps:\n  - name: a\n    command: x\n    env: {1BAD: x}\n",
         "bad.yaml:5: steps[0] (a).env: '1BAD' is not a valid variable name"),
        ("name: p\nsteps:\n  - name: a\n    command: [x\n", "bad.yaml:5: not valid YAML"),
        ("", "bad.yaml: the plan is empty"),
        ("- a\n- b\n", "bad.yaml:1: expected a mapping, got a list"),
    ],
)
def test_bad_plans_are_rejected_with_file_line_and_field(text: str, expected: str) -> None:
    with pytest.raises(PlanError) as info:
        parse_plan(text, "bad.yaml")
    assert any(str(p).startswith(expected) for p in info.value.problems), str(info.value)


def test_every_problem_is_reported_at_once() -> None:
    text = textwrap.dedent("""\
        name: p
        steps:
          - name: a
            queue: gpu
          - name: b
            command: x
            timeout: -5
        """)
    with pytest.raises(PlanError) as info:
        parse_plan(text, "p.yaml")
    lines = [str(p) for p in info.value.problems]
    assert lines == [
        "p.yaml:3: steps[0] (a).command: missing (every step needs a command)",
        "p.yaml:4: steps[0] (a).queue: unknown queue 'gpu' (expected one of: cpu, io, llm)",
        "p.yaml:7: steps[1] (b).timeout: duration must be more than 0 and at most 24h, got -5",
    ]


def test_missing_file_names_the_path(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(PlanError, match=r"nope\.yaml: file not found"):
        load_plan(tmp_path / "nope.yaml")


@pytest.mark.parametrize(("value", "seconds"), [
    (90, 90.0), ("90", 90.0), ("90s", 90.0), ("5m", 300.0), ("1h", 3600.0), ("1h30m", 5400.0),
    ("2m30s", 150.0), ("0.5s", 0.5),
])
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["", "5x", "m", True, None, "25h", -1, 0, "1h30", "5m30", "1h 30"])
def test_bad_durations(value: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)


def test_idempotent_defaults_to_true_and_round_trips_when_false() -> None:
    import yaml

    plan = parse_plan("name: p\nsteps:\n  - {name: a, command: x}\n  - {name: deploy, command: y, idempotent: false}\n")
    assert [s.idempotent for s in plan.steps] == [True, False]
    assert plan_to_dict(plan)["steps"][1] == {"name": "deploy", "command": "y", "queue": "cpu", "timeout": "600s",
                                              "idempotent": False}
    assert parse_plan(yaml.safe_dump(plan_to_dict(plan), sort_keys=False)) == plan
    with pytest.raises(PlanError, match=r"p\.yaml:5: steps\[0\] \(a\)\.idempotent: expected true or false"):
        parse_plan("name: p\nsteps:\n  - name: a\n    command: x\n    idempotent: sometimes\n", "p.yaml")


# --- limits: what a plan may hold, found when it is parsed -----------------------------------------

def _steps(n: int) -> str:
    return "".join(f"  - {{name: s{i}, command: x}}\n" for i in range(n))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: p\nsteps: " + "[" * 600 + "]" * 600 + "\n", "bad.yaml:2: not valid YAML: nested more than 32 levels"),
        ("name: p\nsteps: " + "{a: " * 600 + "1" + "}" * 600 + "\n", "bad.yaml:2: not valid YAML: nested more than 32"),
        ("name: p\ndescription:\n" + "".join(" " * i + "a:\n" for i in range(1, 300)) + "steps: []\n",
         "bad.yaml:33: not valid YAML: nested more than 32"),
        ('name: p\nsteps:\n  - name: a\n    command: "echo \\0 x"\n',
         "bad.yaml:4: steps[0] (a).command: contains a NUL"),
        ('name: p\nsteps:\n  - name: a\n    command: x\n    env: {A: "\\0"}\n',
         "bad.yaml:5: steps[0] (a).env.A: contains a NUL"),
        ("name: p\nsteps:\n  - name: a\n    command: x\n    env: {BIG: " + "v" * 131_068 + "}\n",
         "bad.yaml:5: steps[0] (a).env.BIG: 128 KiB; NAME=value may be at most 131071 bytes"),
        ("name: p\nsteps:\n  - name: a\n    command: " + "c" * 131_072 + "\n",
         "bad.yaml:3: steps[0] (a).command: 128 KiB; a command may be at most 131071 bytes"),
        ("name: p\nsteps:\n  - name: a\n    command: x\n    env: {" + ", ".join(f"K{i}: &v{i} {'v' * 100_000}"
                                                                      for i in range(2)) + "}\n"
         "  - {name: b, command: x, env: {A: *v0, B: *v1, C: *v0, D: *v1, E: *v0, F: *v1}}\n",
         "bad.yaml:6: steps[1] (b).env: 586 KiB in all; a step's environment may be at most 512 KiB"),
        ("name: p\nsteps:\n" + _steps(501), "bad.yaml:3: steps: 501 steps; a plan may have at most 500"),
        ("name: ../../../tmp/evil\n" + "steps:\n" + _steps(1), "bad.yaml:1: name: '../../../tmp/evil' is not a valid"),
        ("name: " + "n" * 100_000 + "\nsteps:\n" + _steps(1), "bad.yaml:1: name: 100000 characters; a plan name may"),
        ('name: "a\\nb"\nsteps:\n' + _steps(1), "bad.yaml:1: name: 'a\\nb' is not a valid plan name"),
        ("name: p\nsteps:\n" + _steps(1) + "# " + "x" * 300_000 + "\n", "bad.yaml: the plan is 293 KiB; a plan may be"),
        ("name: p\nx: &m {" + ", ".join(f"k{i}: {i}" for i in range(400)) + "}\nsteps: [" + ", ".join(["*m"] * 300)
         + "]\n", "bad.yaml: more than 100000 values once its aliases"),
    ],
)
def test_plans_over_a_limit_are_refused_naming_it(text: str, expected: str) -> None:
    with pytest.raises(PlanError) as info:
        parse_plan(text, "bad.yaml")
    assert any(str(p).startswith(expected) for p in info.value.problems), str(info.value)


@pytest.mark.parametrize("name", ["demo", "My service build", "svc-2.1_rc+1", "team@core: nightly"])
def test_plan_names_people_write_are_accepted(name: str) -> None:
    assert parse_plan(f"name: '{name}'\nsteps:\n" + _steps(1)).name == name


def test_a_plan_at_the_limits_parses() -> None:
    big_env = "v" * (131_071 - len("BIG="))
    plan = parse_plan("name: " + "n" * 128 + "\nsteps:\n" + _steps(499)
                      + f"  - name: last\n    command: x\n    env: {{BIG: {big_env}}}\n")
    assert len(plan.steps) == 500 and len(plan.steps[-1].env["BIG"]) == len(big_env)


def test_a_binary_or_huge_plan_file_is_named_as_such(tmp_path) -> None:  # type: ignore[no-untyped-def]
    binary = tmp_path / "plan.bin"
    binary.write_bytes(b"\xea\x00\x01name: p\n")
    with pytest.raises(PlanError, match=r"plan\.bin: not UTF-8 text \(byte 0xea at offset 0\); a plan is a YAML"):
        load_plan(binary)
    huge = tmp_path / "huge.yaml"
    with huge.open("wb") as fh:
        fh.truncate(50 * 1024 * 1024)
    with pytest.raises(PlanError, match=r"huge\.yaml: the plan is 50 MiB; a plan may be at most 256 KiB"):
        load_plan(huge)


def test_env_values_keep_the_text_the_user_wrote() -> None:
    plan = parse_plan("name: p\nsteps:\n  - name: a\n    command: x\n"
                      "    env: {ANSWER: NO, MODE: 0755, VERSION: 1.10, AT: '12:30', WHEN: 12:30, ON: yes, N: 007,"
                      " QUOTED: \"true\", HEX: 0x1F}\n")
    assert plan.steps[0].env == {"ANSWER": "NO", "MODE": "0755", "VERSION": "1.10", "AT": "12:30", "WHEN": "12:30",
                                 "ON": "yes", "N": "007", "QUOTED": "true", "HEX": "0x1F"}


def test_a_step_declares_the_services_it_needs() -> None:
    plan = parse_plan("name: p\nsteps:\n  - name: a\n    command: x\n    needs: [pypi, 'db:5432', pypi]\n")
    assert plan.steps[0].needs == ["pypi", "db:5432"]
    assert step_to_dict(plan.steps[0])["needs"] == ["pypi", "db:5432"]
    assert parse_plan("name: p\nsteps:\n  - {name: a, command: x}\n").steps[0].needs == []
    with pytest.raises(PlanError, match=r"steps\[0\] \(a\)\.needs\[1\]: 'a b' is not a service name"):
        parse_plan("name: p\nsteps:\n  - name: a\n    command: x\n    needs: [ok, a b]\n")
