"""Build plans: an ordered list of steps, loaded from YAML and validated.

A plan file looks like::

    name: demo
    steps:
      - name: lint
        command: ruff check .
        queue: cpu
        timeout: 2m
        env: {RUFF_CACHE_DIR: /tmp/ruff}
        fix: ruff check --fix .

Validation reports every problem at once, each with the file, the line and the
field it concerns, so that a user fixes a bad plan in one pass.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import yaml

from metabuilder.domain import limits
from metabuilder.domain.approvals import MAX_GATE_TIMEOUT_SECONDS, ApprovalOptions, Decision
from metabuilder.domain.pools import PriorityClass
from metabuilder.domain.protected import ProtectedCheck, check_to_dict, parse_checks
from metabuilder.domain.sla import SlaClass
from metabuilder.domain.yaml_reader import Problem as PlanProblem
from metabuilder.domain.yaml_reader import YamlReader, YamlSyntaxError, compose, kind_of


class Queue(StrEnum):
    """Worker pool a step runs on; each maps to one Temporal task queue."""

    CPU = "cpu"
    IO = "io"
    LLM = "llm"


@dataclass(frozen=True)
class Step:
    """One command of a plan, run in a checkout of the run's workspace."""

    name: str
    command: str
    """Shell command, run with ``bash -c`` in the workspace checkout."""
    queue: Queue = Queue.CPU
    timeout_seconds: float = 600.0
    env: dict[str, str] = field(default_factory=dict)
    fix_command: str | None = None
    """Deterministic fixer tried by the repair ladder (e.g. ``ruff check --fix``)."""
    rollback_command: str | None = None
    fallback_command: str | None = None
    requires_approval: bool = False
    optional: bool = False
    idempotent: bool = True
    """False: the command must not run twice (a deploy, a payment); after an attempt whose end is
    unknown (its worker died while it ran) the step is not run again and the run fails."""
    needs: list[str] = field(default_factory=list)
    """Services the step depends on (``pypi``, ``staging-db:5432``): while a circuit breaker on one
    of them is open, the step waits instead of running (``domain.breakers``)."""
    priority: PriorityClass | None = None
    """``high``, ``normal`` or ``low`` (None: the plan's); a run's ``--priority`` beats it (``domain.pools``)."""


@dataclass(frozen=True)
class RepairOptions:
    """What re-plans may add to a plan (its ``repair`` section)."""

    migrate_command: str = "alembic upgrade head"
    """Inserted before a step that fails on a missing table or column."""
    install_command: str = "python -m pip install {package}"
    """Inserted before a step that fails on a missing module, if the module is allowed."""
    install_allowlist: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Plan:
    """A named, ordered list of steps."""

    name: str
    steps: list[Step]
    description: str = ""
    write_scope: list[str] = field(default_factory=list)
    """Glob patterns of workspace paths that patches may touch (empty: whole workspace)."""
    repair: RepairOptions = field(default_factory=RepairOptions)
    approvals: ApprovalOptions = field(default_factory=ApprovalOptions)
    protected_checks: list[ProtectedCheck] = field(default_factory=list)
    """Checks patches may not weaken, on top of the bundled ones (:mod:`domain.protected`)."""
    priority: PriorityClass | None = None
    """The priority of the plan's steps that name none (None: normal)."""
    sla: SlaClass | None = None
    """The run's SLA class (``fast``, ``normal``, ``thorough``; ``domain.sla``); the API's or CLI's beats it."""


class PlanError(ValueError):
    """A plan file that cannot be used; ``problems`` lists every reason."""

    def __init__(self, problems: list[PlanProblem]) -> None:
        self.problems = problems
        super().__init__("invalid plan:\n" + "\n".join(f"  {p}" for p in problems))


# "90", "90s", or parts each with its unit: "1h30m", "5m30s". "1h30" is refused: 30 what?
_DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)\s*s?|(?=\d)(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*"
                       r"(?:(\d+(?:\.\d+)?)s)?)\s*$")
_STEP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PLAN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.+@:-]*")
MAX_TIMEOUT_SECONDS = 24 * 3600.0


def parse_duration(value: object, maximum: float = MAX_TIMEOUT_SECONDS) -> float:
    """Seconds from ``90``, ``"90s"``, ``"5m"``, ``"1h30m"``; ``ValueError`` otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like 30s, 5m or 1h, got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and value.strip() and (m := _DURATION.match(value)):
        bare, hours, minutes, secs = (float(g) if g else 0.0 for g in m.groups())
        seconds = bare + hours * 3600 + minutes * 60 + secs
    else:
        raise ValueError(f"expected a duration like 30s, 5m or 1h30m (each number with its unit), got {value!r}")
    if not 0 < seconds <= maximum:
        raise ValueError(f"duration must be more than 0 and at most {maximum / 3600:g}h, got {value!r}")
    return seconds


_PLAN_KEYS = {"name", "description", "steps", "write_scope", "repair", "approvals", "protected_checks", "priority",
              "sla"}
_APPROVAL_KEYS = {"timeout", "on_expiry"}
_REPAIR_KEYS = {"migrate", "install", "install_allowlist"}
_STEP_KEYS = {
    "name", "command", "queue", "timeout", "env", "fix", "rollback", "fallback",
    "requires_approval", "optional", "idempotent", "needs", "priority",
}
_NEED = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,254}")
MAX_NEEDS = 16


def parse_plan(text: str, source: str = "<plan>") -> Plan:
    """Parse and validate plan YAML; raises :class:`PlanError` naming every problem."""
    size = len(text.encode("utf-8", "surrogatepass"))  # lone surrogates can come in JSON; YAML refuses them
    if size > limits.MAX_PLAN_BYTES:
        raise PlanError([PlanProblem(source, None, "", f"the plan is {limits.size(size)}; a plan may be at most "
                                                       f"{limits.size(limits.MAX_PLAN_BYTES)}")])
    reader = YamlReader(source)
    try:
        root = compose(text, source)
    except YamlSyntaxError as err:
        raise PlanError([err.problem]) from err
    if root is None:
        raise PlanError([PlanProblem(source, None, "", "the plan is empty")])

    top = reader.mapping(root, "", _PLAN_KEYS)
    name = reader.string(top["name"][1], "name") if "name" in top else None
    if name is not None and not _valid_plan_name(reader, top["name"][1], name):
        name = None
    if "name" not in top and isinstance(root, yaml.MappingNode):
        reader.problem(root, "name", "missing (every plan needs a name)")
    description = ""
    if "description" in top:
        description = reader.string(top["description"][1], "description", required_nonempty=False) or ""
    write_scope: list[str] = []
    if "write_scope" in top:
        write_scope = reader.string_list(top["write_scope"][1], "write_scope")

    repair = _parse_repair(reader, top["repair"][1]) if "repair" in top else RepairOptions()
    approvals = _parse_approvals(reader, top["approvals"][1]) if "approvals" in top else ApprovalOptions()
    protected = parse_checks(reader, top["protected_checks"][1], "protected_checks") \
        if "protected_checks" in top else []
    priority = reader.choice(top["priority"][1], "priority", PriorityClass, "priority") if "priority" in top else None
    sla = reader.choice(top["sla"][1], "sla", SlaClass, "SLA class") if "sla" in top else None

    steps: list[Step] = []
    if "steps" not in top:
        if isinstance(root, yaml.MappingNode):
            reader.problem(root, "steps", "missing (a plan needs at least one step)")
    else:
        steps_node = top["steps"][1]
        if not isinstance(steps_node, yaml.SequenceNode):
            reader.problem(steps_node, "steps", f"expected a list of steps, got {kind_of(steps_node)}")
        elif not steps_node.value:
            reader.problem(steps_node, "steps", "a plan needs at least one step")
        elif len(steps_node.value) > limits.MAX_STEPS:
            reader.problem(steps_node, "steps", f"{len(steps_node.value)} steps; a plan may have at most "
                                                f"{limits.MAX_STEPS}")
        else:
            seen: dict[str, int] = {}
            for index, step_node in enumerate(steps_node.value):
                step = _parse_step(reader, step_node, index)
                if step is None:
                    continue
                if step.name in seen:
                    reader.problem(
                        step_node, f"steps[{index}].name",
                        f"duplicate step name {step.name!r} (first used at line {seen[step.name]})",
                    )
                else:
                    seen[step.name] = step_node.start_mark.line + 1
                steps.append(step)

    if reader.problems:
        raise PlanError(reader.problems)
    assert name is not None
    return Plan(name=name, steps=steps, description=description, write_scope=write_scope, repair=repair,
                approvals=approvals, protected_checks=protected, priority=priority, sla=sla)


def _valid_plan_name(reader: YamlReader, node: yaml.Node, name: str) -> bool:
    """A plan's name shows in lists, logs and Temporal's search attributes: one line of plain text."""
    if len(name) > limits.MAX_PLAN_NAME_CHARS:
        reader.problem(node, "name", f"{len(name)} characters; a plan name may have at most "
                                     f"{limits.MAX_PLAN_NAME_CHARS}")
        return False
    if not _PLAN_NAME.fullmatch(name):
        reader.problem(node, "name", f"{name!r} is not a valid plan name (letters, digits, spaces and "
                                     "'_', '.', '+', '@', ':', '-', starting with a letter or digit)")
        return False
    return True


def _os_limits(reader: YamlReader, node: yaml.Node, label: str, command: str | None,
               env_nodes: dict[str, yaml.Node], env: dict[str, str]) -> None:
    """What ``execve`` would refuse ("Argument list too long"), found before the run starts."""
    if command is not None and len(command.encode()) > limits.MAX_COMMAND_BYTES:
        reader.problem(node, f"{label}.command", f"{limits.size(len(command.encode()))}; a command may be at "
                                                 f"most {limits.MAX_COMMAND_BYTES} bytes (the OS limit for "
                                                 "one argument)")
    total = 0
    for key, value in env.items():
        entry = len(key.encode()) + 1 + len(value.encode())
        total += entry + 1
        if entry > limits.MAX_ENV_ENTRY_BYTES:
            reader.problem(env_nodes[key], f"{label}.env.{key}",
                           f"{limits.size(entry)}; NAME=value may be at most {limits.MAX_ENV_ENTRY_BYTES} bytes "
                           "(the OS limit for one environment string)")
    if total > limits.MAX_STEP_ENV_BYTES:
        reader.problem(node, f"{label}.env", f"{limits.size(total)} in all; a step's environment may be at most "
                                             f"{limits.size(limits.MAX_STEP_ENV_BYTES)}")


def _parse_approvals(reader: YamlReader, node: yaml.Node) -> ApprovalOptions:
    keys = reader.mapping(node, "approvals", _APPROVAL_KEYS)
    defaults = ApprovalOptions()
    timeout = defaults.timeout_seconds
    if "timeout" in keys:
        try:
            timeout = parse_duration(reader.scalar(keys["timeout"][1], "approvals.timeout"),
                                     MAX_GATE_TIMEOUT_SECONDS)
        except ValueError as err:
            reader.problem(keys["timeout"][1], "approvals.timeout", str(err))
    on_expiry = defaults.on_expiry
    if "on_expiry" in keys:
        on_expiry = reader.choice(keys["on_expiry"][1], "approvals.on_expiry", Decision, "decision") or on_expiry
    return ApprovalOptions(timeout_seconds=timeout, on_expiry=on_expiry)


def _parse_repair(reader: YamlReader, node: yaml.Node) -> RepairOptions:
    keys = reader.mapping(node, "repair", _REPAIR_KEYS)
    defaults = RepairOptions()
    migrate = reader.string(keys["migrate"][1], "repair.migrate") if "migrate" in keys else None
    install = reader.string(keys["install"][1], "repair.install") if "install" in keys else None
    if install is not None and "{package}" not in install:
        reader.problem(keys["install"][1], "repair.install", "must contain {package}, replaced by the module name")
    allow = reader.string_list(keys["install_allowlist"][1], "repair.install_allowlist") \
        if "install_allowlist" in keys else []
    for i, package in enumerate(allow):
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", package):
            reader.problem(keys["install_allowlist"][1], f"repair.install_allowlist[{i}]",
                           f"{package!r} is not a module name")
    return RepairOptions(migrate_command=migrate or defaults.migrate_command,
                         install_command=install or defaults.install_command, install_allowlist=allow)


def _parse_step(reader: YamlReader, node: yaml.Node, index: int) -> Step | None:
    where = f"steps[{index}]"
    before = len(reader.problems)
    keys = reader.mapping(node, where, _STEP_KEYS)
    if not isinstance(node, yaml.MappingNode):
        return None

    def get(key: str) -> yaml.Node | None:
        return keys[key][1] if key in keys else None

    name = None
    if (n := get("name")) is None:
        reader.problem(node, f"{where}.name", "missing (every step needs a name)")
    else:
        name = reader.string(n, f"{where}.name")
        if name is not None and not _STEP_NAME.match(name):
            reader.problem(n, f"{where}.name",
                           f"{name!r} is not a valid step name (letters, digits, '_', '-', '.'; at most 64)")
            name = None
    label = f"steps[{index}]" if name is None else f"steps[{index}] ({name})"

    command = None
    if (n := get("command")) is None:
        reader.problem(node, f"{label}.command", "missing (every step needs a command)")
    else:
        command = reader.string(n, f"{label}.command")

    queue = Queue.CPU
    if (n := get("queue")) is not None:
        queue = reader.choice(n, f"{label}.queue", Queue, "queue") or Queue.CPU

    timeout = 600.0
    if (n := get("timeout")) is not None:
        try:
            timeout = parse_duration(reader.scalar(n, f"{label}.timeout"))
        except ValueError as err:
            reader.problem(n, f"{label}.timeout", str(err))

    env: dict[str, str] = {}
    env_nodes: dict[str, yaml.Node] = {}
    if (n := get("env")) is not None:
        if not isinstance(n, yaml.MappingNode):
            reader.problem(n, f"{label}.env", f"expected a mapping of NAME: value, got {kind_of(n)}")
        else:
            for key_node, value_node in n.value:
                key = key_node.value
                if not isinstance(key_node, yaml.ScalarNode) or not _ENV_NAME.match(str(key)):
                    reader.problem(key_node, f"{label}.env", f"{key!r} is not a valid variable name")
                    continue
                value = reader.scalar(value_node, f"{label}.env.{key}")
                if isinstance(value, (dict, list)) or value is None:
                    reader.problem(value_node, f"{label}.env.{key}", "expected a text, number or boolean value")
                    continue
                # The text as written: YAML 1.1 would turn NO into false, 0755 into 493, 1.10 into 1.1
                # and 12:30 into 750, none of which the user meant for an environment variable.
                env[str(key)] = value_node.value
                env_nodes[str(key)] = value_node
    _os_limits(reader, node, label, command, env_nodes, env)

    optional_text = {
        key: reader.string(n, f"{label}.{key}") if (n := get(key)) is not None else None
        for key in ("fix", "rollback", "fallback")
    }
    for key, text in optional_text.items():
        if text is not None and len(text.encode()) > limits.MAX_COMMAND_BYTES:
            reader.problem(get(key), f"{label}.{key}", f"{limits.size(len(text.encode()))}; a command may be at "
                                                       f"most {limits.MAX_COMMAND_BYTES} bytes")
    flags = {
        key: reader.boolean(n, f"{label}.{key}") if (n := get(key)) is not None else False
        for key in ("requires_approval", "optional")
    }
    idempotent = reader.boolean(n, f"{label}.idempotent") if (n := get("idempotent")) is not None else True
    needs = _needs(reader, get("needs"), f"{label}.needs")
    priority = reader.choice(n, f"{label}.priority", PriorityClass, "priority") \
        if (n := get("priority")) is not None else None
    if len(reader.problems) != before or name is None or command is None:
        return None
    return Step(
        name=name, command=command, queue=queue, timeout_seconds=timeout, env=env,
        fix_command=optional_text["fix"], rollback_command=optional_text["rollback"],
        fallback_command=optional_text["fallback"],
        requires_approval=flags["requires_approval"], optional=flags["optional"],
        idempotent=idempotent, needs=needs, priority=priority,
    )


def _needs(reader: YamlReader, node: yaml.Node | None, fld: str) -> list[str]:
    if node is None:
        return []
    needs = reader.string_list(node, fld)
    for i, need in enumerate(needs):
        if not _NEED.fullmatch(need):
            reader.problem(node.value[i], f"{fld}[{i}]", f"{need!r} is not a service name (a host, host:port "
                                                         "or a name: letters, digits, '_', '.', ':', '-')")
    if len(needs) > MAX_NEEDS:
        reader.problem(node, fld, f"{len(needs)} services; a step may need at most {MAX_NEEDS}")
    return list(dict.fromkeys(needs))


def read_plan_file(path: str | Path) -> str:
    """A plan file's text: refused, naming the file, when missing, too big or not UTF-8 text."""
    path = Path(path)

    def refuse(message: str) -> PlanError:
        return PlanError([PlanProblem(str(path), None, "", message)])

    try:
        with path.open("rb") as fh:
            data = fh.read(limits.MAX_PLAN_BYTES + 1)
            if len(data) > limits.MAX_PLAN_BYTES:
                fh.seek(0, 2)
                raise refuse(f"the plan is {limits.size(fh.tell())}; a plan may be at most "
                             f"{limits.size(limits.MAX_PLAN_BYTES)}")
    except FileNotFoundError:
        raise refuse("file not found") from None
    except OSError as err:
        raise refuse(f"cannot read the plan: {err.strerror or err}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise refuse(f"not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start}); "
                     "a plan is a YAML text file") from None


def load_plan(path: str | Path) -> Plan:
    """Read and validate a plan file; errors name the file and line."""
    return parse_plan(read_plan_file(path), source=str(path))


def step_to_dict(step: Step) -> dict[str, object]:
    """Plain mapping of a step, in the YAML file's own key names."""
    out: dict[str, object] = {
        "name": step.name, "command": step.command, "queue": step.queue.value,
        "timeout": f"{step.timeout_seconds:g}s",
    }
    if step.env:
        out["env"] = dict(step.env)
    extras: Mapping[str, object] = {
        "fix": step.fix_command, "rollback": step.rollback_command, "fallback": step.fallback_command,
    }
    out.update({k: v for k, v in extras.items() if v is not None})
    if step.requires_approval:
        out["requires_approval"] = True
    if step.optional:
        out["optional"] = True
    if not step.idempotent:
        out["idempotent"] = False
    if step.needs:
        out["needs"] = list(step.needs)
    if step.priority is not None:
        out["priority"] = step.priority.value
    return out


def plan_to_dict(plan: Plan) -> dict[str, object]:
    """Plain mapping of a plan, in the YAML file's own key names (for storage and display)."""
    data: dict[str, object] = {"name": plan.name}
    if plan.description:
        data["description"] = plan.description
    if plan.write_scope:
        data["write_scope"] = list(plan.write_scope)
    if plan.repair != RepairOptions():
        data["repair"] = {"migrate": plan.repair.migrate_command, "install": plan.repair.install_command,
                          "install_allowlist": list(plan.repair.install_allowlist)}
    if plan.approvals != ApprovalOptions():
        data["approvals"] = {"timeout": f"{plan.approvals.timeout_seconds:g}s",
                             "on_expiry": plan.approvals.on_expiry.value}
    if plan.protected_checks:
        data["protected_checks"] = [check_to_dict(c) for c in plan.protected_checks]
    if plan.priority is not None:
        data["priority"] = plan.priority.value
    if plan.sla is not None:
        data["sla"] = plan.sla.value
    data["steps"] = [step_to_dict(s) for s in plan.steps]
    return data
