"""The golden tasks shipped with the package (``golden/<task>/``), loaded and checked.

A task folder holds ``project/`` (the user's broken project, committed as the run's workspace),
``plan.yaml``, ``expected.yaml`` (:mod:`domain.golden`), and optionally ``llm.yaml`` (the
recorded model answers, :mod:`evaluation.recorded_llm`) and ``fixture.yaml`` (the routes of the
local services the project talks to, :mod:`evaluation.services`). A plan may use ``@SERVICE@``
(the base URL of the task's services), ``@STATE@`` (a scratch folder of the run, outside the
workspace: databases, caches) and ``@FAULTS@`` (the fault injectors in ``faults/``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from metabuilder.domain.golden import Expected, GoldenError, parse_expected
from metabuilder.domain.plans import parse_plan
from metabuilder.evaluation.recorded_llm import Recorded

GOLDEN = Path(__file__).with_name("golden")
FAULTS = Path(__file__).with_name("faults")


@dataclass(frozen=True)
class GoldenTask:
    name: str
    path: Path
    plan_text: str
    expected: Expected
    responses: list[Recorded] = field(default_factory=list)
    routes: dict[str, list[str]] = field(default_factory=dict)

    @property
    def project(self) -> Path:
        return self.path / "project"


def _yaml(path: Path, task: str) -> object:
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise GoldenError(f"{task}: {path.name}: {err}") from None


def load_task(path: Path) -> GoldenTask:
    """One task folder; ``GoldenError`` naming the task and what is wrong."""
    name = path.name
    for needed in ("project", "plan.yaml", "expected.yaml"):
        if not (path / needed).exists():
            raise GoldenError(f"{name}: {needed} is missing")
    plan_text = (path / "plan.yaml").read_text()
    plan = parse_plan(plan_text, source=str(path / "plan.yaml"))
    expected = parse_expected(_yaml(path / "expected.yaml", name), name)
    if expected.step not in {s.name for s in plan.steps}:
        raise GoldenError(f"{name}: expected.yaml names step {expected.step!r}, which the plan does not have")
    responses: list[Recorded] = []
    if (path / "llm.yaml").exists():
        data = _yaml(path / "llm.yaml", name)
        items = data.get("responses") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise GoldenError(f"{name}: llm.yaml must hold a list under responses")
        for i, item in enumerate(items):
            if not (isinstance(item, dict) and isinstance(item.get("match"), list) and item["match"]
                    and isinstance(item.get("answer"), str)):
                raise GoldenError(f"{name}: llm.yaml responses[{i}] needs match (a list of strings) and answer")
            responses.append(Recorded(name, tuple(str(m) for m in item["match"]), item["answer"]))
    routes: dict[str, list[str]] = {}
    if (path / "fixture.yaml").exists():
        data = _yaml(path / "fixture.yaml", name)
        service = data.get("service") if isinstance(data, dict) else None
        if not isinstance(service, dict):
            raise GoldenError(f"{name}: fixture.yaml must map paths to answers under service")
        routes = {str(k): [str(a) for a in (v if isinstance(v, list) else [v])] for k, v in service.items()}
    return GoldenTask(name, path, plan_text, expected, responses, routes)


def load_tasks(names: Sequence[str] | None = None, root: Path = GOLDEN) -> list[GoldenTask]:
    """Every task under ``root`` (sorted by name), or the ``names`` given; ``GoldenError`` for an
    unknown name."""
    found = {p.name: p for p in sorted(root.iterdir()) if p.is_dir() and (p / "expected.yaml").exists()}
    if names:
        unknown = [n for n in names if n not in found]
        if unknown:
            raise GoldenError(f"unknown task(s) {', '.join(unknown)}; see `metabuilder eval --list`")
        return [load_task(found[n]) for n in names]
    return [load_task(p) for p in found.values()]


def render_plan(task: GoldenTask, *, service: str, state: Path) -> str:
    return (task.plan_text.replace("@SERVICE@", service).replace("@STATE@", str(state))
            .replace("@FAULTS@", str(FAULTS)))
