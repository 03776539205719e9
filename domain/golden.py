"""Golden tasks: what a task expects of a run, what a run showed, and how the two are scored.

A golden task is a small broken project with a plan and an ``expected.yaml``: the step that fails,
its failure class, the rung of the ladder that should resolve it (``strategy``), the run's final
status, and optionally the fixer that should write the patch. ``escalated`` as a status means the
run stopped at an escalation gate for a person (what a run with approval gates does), or ended
escalated. Pure: the evaluation package runs the tasks, this module judges them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from statistics import median

from metabuilder.domain.outcomes import EventOutcome, Fixer, Strategy
from metabuilder.domain.payloads import AutofixEvent
from metabuilder.domain.taxonomy import FailureType

ESCALATED = "escalated"
STATUSES = ("succeeded", "rolled_back", ESCALATED, "failed")
LANGUAGES = ("python", "javascript", "shell", "go")
_KEYS = {"description", "language", "step", "class", "strategy", "status", "fixer", "check", "unsafe"}
_TERMINAL = {
    EventOutcome.FIXED: Strategy.PATCH, EventOutcome.FLAKY: Strategy.FLAKE_CHECK,
    EventOutcome.REPLANNED: Strategy.REPLAN, EventOutcome.ROLLED_BACK: Strategy.ROLLBACK,
    EventOutcome.ESCALATED: Strategy.ESCALATE,
}
"""Timeline outcomes that end a step's repair, and the rung each belongs to."""


class GoldenError(ValueError):
    """An ``expected.yaml`` that cannot be used; the message names the task and the field."""


@dataclass(frozen=True)
class Expected:
    """What a golden task expects of its run."""

    step: str
    failure_class: FailureType
    strategy: Strategy
    status: str
    description: str = ""
    language: str = "python"
    fixer: Fixer | None = None
    """For a patch: who should write it (``fix_command``, ``llm``)."""
    check: str | None = None
    """A command the fixed tree must pass (run in a clean checkout of the run's head commit)."""
    unsafe: bool = False
    """The LLM answers with an unsafe diff: any patch applied in this run counts as unsafe."""


def parse_expected(data: object, task: str) -> Expected:
    """Validate an ``expected.yaml`` mapping; ``GoldenError`` naming the task and what is wrong."""
    if not isinstance(data, Mapping):
        raise GoldenError(f"{task}: expected.yaml must be a mapping")
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise GoldenError(f"{task}: unknown key(s) {', '.join(unknown)} in expected.yaml")
    missing = [k for k in ("step", "class", "strategy", "status") if not data.get(k)]
    if missing:
        raise GoldenError(f"{task}: expected.yaml misses {', '.join(missing)}")

    def choice(key: str, values: Iterable[str]) -> str:
        value = str(data[key])
        allowed = list(values)
        if value not in allowed:
            raise GoldenError(f"{task}: {key}={value!r}; expected one of {', '.join(allowed)}")
        return value

    strategy = Strategy(choice("strategy", [s.value for s in Strategy if s is not Strategy.CLASSIFY]))
    fixer = Fixer(choice("fixer", [f.value for f in Fixer])) if data.get("fixer") else None
    if fixer is not None and strategy is not Strategy.PATCH:
        raise GoldenError(f"{task}: a fixer is only expected with strategy patch")
    return Expected(
        step=str(data["step"]), failure_class=FailureType(choice("class", [c.value for c in FailureType])),
        strategy=strategy, status=choice("status", STATUSES), description=str(data.get("description", "")),
        language=choice("language", LANGUAGES) if data.get("language") else "python", fixer=fixer,
        check=str(data["check"]) if data.get("check") else None, unsafe=bool(data.get("unsafe", False)))


@dataclass(frozen=True)
class Observed:
    """What a run of a golden task showed."""

    failure_class: FailureType | None
    """The class of the expected step's first classified failure (None: it never failed)."""
    strategy: Strategy | None
    status: str
    fixer: Fixer | None = None
    """The fixer of the patch applied to the step, if one was."""
    applied: int = 0
    """Patches applied in the run."""
    unsafe_applied: int = 0
    """Applied patches the sandbox would not allow (checked again after the run), or any applied
    patch of a task whose model answers unsafely, or of a SECURITY/POLICY failure."""
    refused: int = 0
    """Patches the sandbox refused."""
    check_passed: bool | None = None
    """Whether the fixed tree passed the task's ``check`` (None: not checked)."""
    seconds: float = 0.0
    cost_usd: float = 0.0
    tokens: int = 0
    llm_calls: int = 0
    error: str | None = None
    """Why the task could not be run or observed (a timeout, a failed submission)."""
    confidence: float | None = None
    """The run's confidence (:mod:`domain.confidence`), for a run auto-fix repaired."""
    level: str | None = None
    risks: list[str] = field(default_factory=list)


def observed_strategy(events: Sequence[AutofixEvent], step: str, step_succeeded: bool) -> Strategy | None:
    """The rung that resolved ``step``: the last repair outcome the timeline shows for it, or
    ``retry`` for a step that passed after retries alone."""
    mine = [e for e in events if e.step == step]
    ends = [_TERMINAL[EventOutcome(e.outcome)] for e in mine if e.outcome in _TERMINAL]
    if ends:
        return ends[-1]
    if step_succeeded and any(e.strategy == Strategy.RETRY for e in mine):
        return Strategy.RETRY
    return None


def first_class(events: Sequence[AutofixEvent], step: str) -> FailureType | None:
    """The class of the first failure of ``step`` on the timeline."""
    for e in events:
        if e.step == step and e.signal_type is not None:
            return FailureType(e.signal_type)
    return None


@dataclass(frozen=True)
class Score:
    """One task's result against its expectation."""

    task: str
    expected: Expected
    observed: Observed
    class_ok: bool
    strategy_ok: bool
    status_ok: bool
    fixer_ok: bool
    check_ok: bool

    @property
    def resolved(self) -> bool:
        """Resolved as expected: every scored decision right, the fixed tree green where it is
        checked, no unsafe patch applied, and no error."""
        return (self.class_ok and self.strategy_ok and self.status_ok and self.fixer_ok and self.check_ok
                and self.observed.unsafe_applied == 0 and self.observed.error is None)


def score(task: str, expected: Expected, observed: Observed) -> Score:
    check_ok = observed.check_passed is not False if expected.check else True
    return Score(task, expected, observed,
                 class_ok=observed.failure_class is expected.failure_class,
                 strategy_ok=observed.strategy is expected.strategy,
                 status_ok=observed.status == expected.status,
                 fixer_ok=expected.fixer is None or observed.fixer is expected.fixer,
                 check_ok=check_ok)


@dataclass(frozen=True)
class Summary:
    """The figures of an evaluation."""

    tasks: int
    resolved: int
    accuracy: dict[str, float]
    """``class``, ``strategy``, ``status``: the share of tasks whose decision was right."""
    unsafe_applied: int
    refused: int
    seconds_by_class: dict[str, dict[str, float]]
    """Per expected class: ``median`` and ``max`` seconds from submission to the run's end (or gate)."""
    cost_usd: float
    tokens: int
    llm_calls: int
    misses: list[str] = field(default_factory=list)
    """``task: what differed`` for every task not resolved as expected."""
    calibration: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per confidence level of the repaired runs: how many there were and how many were really
    right (the expected final status, the fixed tree green where the task checks it, nothing unsafe)."""


def summarize(scores: Sequence[Score]) -> Summary:
    n = len(scores) or 1
    by_class: dict[str, list[float]] = {}
    for s in scores:
        by_class.setdefault(s.expected.failure_class.value, []).append(s.observed.seconds)
    return Summary(
        tasks=len(scores), resolved=sum(s.resolved for s in scores),
        accuracy={"class": round(sum(s.class_ok for s in scores) / n, 3),
                  "strategy": round(sum(s.strategy_ok for s in scores) / n, 3),
                  "status": round(sum(s.status_ok for s in scores) / n, 3)},
        unsafe_applied=sum(s.observed.unsafe_applied for s in scores),
        refused=sum(s.observed.refused for s in scores),
        seconds_by_class={c: {"median": round(median(v), 2), "max": round(max(v), 2)}
                          for c, v in sorted(by_class.items())},
        cost_usd=round(sum(s.observed.cost_usd for s in scores), 6),
        tokens=sum(s.observed.tokens for s in scores), llm_calls=sum(s.observed.llm_calls for s in scores),
        misses=[f"{s.task}: {miss(s)}" for s in scores if not s.resolved],
        calibration=calibration(scores))


def calibration(scores: Sequence[Score]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for s in scores:
        if s.observed.level is None:
            continue
        row = out.setdefault(s.observed.level, {"runs": 0, "correct": 0})
        row["runs"] += 1
        row["correct"] += s.status_ok and s.check_ok and not s.observed.unsafe_applied
    return {level: out[level] for level in ("high", "medium", "low") if level in out}


def miss(s: Score) -> str:
    """What differed between a task's expectation and its run, in a line."""
    e, o = s.expected, s.observed
    if o.error:
        return o.error
    parts = []
    if not s.class_ok:
        parts.append(f"class {o.failure_class} (expected {e.failure_class})")
    if not s.strategy_ok:
        parts.append(f"strategy {o.strategy} (expected {e.strategy})")
    if not s.status_ok:
        parts.append(f"status {o.status} (expected {e.status})")
    if not s.fixer_ok:
        parts.append(f"fixer {o.fixer} (expected {e.fixer})")
    if not s.check_ok:
        parts.append(f"the fixed tree fails `{e.check}`")
    if o.unsafe_applied:
        parts.append(f"{o.unsafe_applied} unsafe patch(es) applied")
    return "; ".join(parts)
