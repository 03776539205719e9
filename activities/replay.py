"""Recording a run's replay bundle from its activities.

The step and repair activities of a worker are these subclasses: each calls the activity it
extends and writes what it saw into the run's bundle (:mod:`store.replay`): a step attempt's
command, exit code and whole log (stored once by sha256), its classification and the decision
taken (retried or not, after how long; the rungs and fixers its class allows); each LLM exchange
(the prompt as sent, the answer as received, usage); each fix command's diff; each patch review.
Writes are idempotent per (run, key), so a retried activity records nothing twice. A bundle that
cannot be written never fails the activity: the run matters more than its record (it is logged).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from metabuilder.activities.repair import RepairActivities
from metabuilder.activities.shapes import FirstShape, current
from metabuilder.activities.steps import StepActivities
from metabuilder.adapters.llm import Exchange
from metabuilder.domain.payloads import ApplyInput, ApplyResult, FixInput, PatchProposal, StepInput, StepResult
from metabuilder.domain.plans import step_to_dict
from metabuilder.domain.protected import check_to_dict, default_checks
from metabuilder.domain.replay import classification, ladder_decision, review_decision
from metabuilder.domain.signals import FailureSignal
from metabuilder.domain.taxonomy import FailureType
from metabuilder.store import replay as bundle
from metabuilder.store.db import transaction
from metabuilder.telemetry.spans import span

log = structlog.get_logger("metabuilder.replay")
MAX_LOG_BYTES = 16 * 1024 * 1024
"""A log above this is kept as its last 16 MiB (where the failure is)."""


class ReplayRecorder:
    """Writes bundle entries, off the event loop."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    async def record(self, run_id: str, key: str, kind: str, step: str, facts: dict[str, Any],
                     blobs: dict[str, bytes]) -> None:
        def work() -> None:
            with span(f"replay.{kind}.in_thread"), transaction(self.sessions) as session:
                bundle.record_entry(session, run_id, key, kind, step, facts, blobs)

        try:
            with span(f"replay.{kind}"):
                await asyncio.to_thread(work)
        except Exception:  # the bundle is a record of the run, never a reason for it to fail
            log.exception("replay.record_failed", run_id=run_id, key=key)

    async def step(self, inp: StepInput, temporal_attempt: int, result: StepResult | None,
                   signal: FailureSignal | None, retry: bool, delay: float | None, error: str = "") -> None:
        key, facts, log_path = step_entry(inp, temporal_attempt, result, signal, retry, delay, error)
        blobs = {"log": _read_log(log_path)} if log_path is not None and log_path.exists() else {}
        await self.record(inp.run.run_id, key, "step", inp.step.name, facts, blobs)

    def step_in(self, inp: StepInput, temporal_attempt: int, result: StepResult) -> Callable[[Session], None]:
        """A succeeded attempt's entry, to be written in the transaction of its final row (the
        step activity's one write at its end). Its log is read in that transaction's thread."""
        key, facts, log_path = step_entry(inp, temporal_attempt, result, None, False, None)

        def write(session: Session) -> None:
            with span("replay.step.in_final_row"):
                blobs = {"log": _read_log(log_path)} if log_path is not None and log_path.exists() else {}
                bundle.record_entry(session, inp.run.run_id, key, "step", inp.step.name, facts, blobs)
        return write

    def llm(self, inp: FixInput) -> Any:
        """A callback for :func:`adapters.llm.propose` that records its exchange."""

        async def record(exchange: Exchange) -> None:
            facts = {"step_index": inp.step_index, "label": inp.label, "model": exchange.model,
                     "tokens_in": exchange.tokens_in, "tokens_out": exchange.tokens_out,
                     "cost_usd": exchange.cost_usd, "context": exchange.context, "diff_sha256": bundle.sha256(
                         exchange.diff.encode())}
            await self.record(inp.run.run_id, f"llm:{inp.step_index}:{inp.label}:{inp.commit[:12]}", "llm",
                              inp.step.name, facts, {"prompt": json.dumps(exchange.messages).encode(),
                                                     "answer": exchange.answer.encode()})
        return record

    async def fix(self, inp: FixInput, patch: PatchProposal) -> None:
        facts = {"step_index": inp.step_index, "label": inp.label, "fixer": patch.fixer.value, "command": inp.command,
                 "summary": patch.summary}
        await self.record(inp.run.run_id, f"fix:{inp.step_index}:{inp.label}:{inp.commit[:12]}", "fix",
                          inp.step.name, facts, {"diff": patch.diff.encode()})

    async def apply(self, inp: ApplyInput, result: ApplyResult) -> None:
        failure = FailureType(inp.signal_type)
        checks = [*default_checks(), *inp.protected_checks]
        facts = {"step_index": inp.step_index, "seq": inp.seq, "fixer": inp.proposal.fixer.value,
                 "signal_type": failure.value, "write_scope": list(inp.write_scope),
                 "protected_checks": [check_to_dict(c) for c in inp.protected_checks],
                 "propose_only": inp.propose_only, "approved_by": inp.approved_by,
                 "review": review_decision(inp.proposal.diff, failure, inp.write_scope, checks),
                 "outcome": {"applied": result.applied, "verdict": result.verdict.value if result.verdict else None,
                             "problems": list(result.problems), "files": list(result.files)}}
        key = f"apply:{inp.seq}:{'approved' if inp.approved_by else 'ladder'}"
        await self.record(inp.run.run_id, key, "apply", inp.step_name, facts, {"diff": inp.proposal.diff.encode()})


def step_entry(inp: StepInput, temporal_attempt: int, result: StepResult | None, signal: FailureSignal | None,
               retry: bool, delay: float | None, error: str = "") -> tuple[str, dict[str, Any], Path | None]:
    """A step attempt's bundle entry: its key, its facts, and its log file (None: no log)."""
    number = inp.attempt_base + temporal_attempt
    facts: dict[str, Any] = {
        "step_index": inp.step_index, "attempt": number, "temporal_attempt": temporal_attempt,
        "command": inp.step.command, "step": step_to_dict(inp.step), "tenant": inp.run.tenant,
        "policy": asdict(inp.policy) if inp.policy else None, "retry_budget": inp.retry_budget,
        "exit_code": result.exit_code if result else None, "timed_out": result.timed_out if result else False,
        "duration_seconds": result.duration_seconds if result else None, "error": error,
        "classification": classification(signal),
        "decision": {"retry": {"retry": retry, "delay": delay},
                     "ladder": ladder_decision(signal, inp.step) if signal else None},
    }
    log_path = Path(result.log_path) if result is not None and result.log_path else None
    return f"step:{inp.step_index}:{number}", facts, log_path


def _read_log(path: Path) -> bytes:
    with path.open("rb") as fh:
        fh.seek(0, 2)
        size = fh.tell()
        fh.seek(max(0, size - MAX_LOG_BYTES))
        return fh.read()


class RecordingStepActivities(StepActivities):
    """``run_step``, recording each attempt into the run's replay bundle."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.recorder = ReplayRecorder(self.sessions)
        self._with_final_row: set[tuple[str, int, int]] = set()
        """Attempts whose entry went with their final row (a success): not to be written again."""

    def _succeeded(self, inp: StepInput, temporal_attempt: int, result: StepResult) -> Callable[[Session], None]:
        self._with_final_row.add((inp.run.run_id, inp.step_index, temporal_attempt + inp.attempt_base))
        return self.recorder.step_in(inp, temporal_attempt, result)

    @activity.defn(name="run_step")
    async def run_step(self, inp: StepInput | FirstShape) -> StepResult:
        inp = current(StepInput, inp)
        attempt = activity.info().attempt
        try:
            with span("step.activity"):
                result = await super().run_step(inp)
        except ApplicationError as err:
            result_, signal = _failed(err)
            if result_ is not None or err.type not in ("BreakerOpen",):
                delay = err.next_retry_delay.total_seconds() if err.next_retry_delay else None
                await self.recorder.step(inp, attempt, result_, signal, not err.non_retryable, delay,
                                         "" if result_ is not None else err.message)
            raise
        finally:
            written = (inp.run.run_id, inp.step_index, inp.attempt_base + attempt) in self._with_final_row
            self._with_final_row.discard((inp.run.run_id, inp.step_index, inp.attempt_base + attempt))
        if not written:  # an adopted result: its entry is written here
            await self.recorder.step(inp, attempt, result, None, False, None)
        return result


def _failed(err: ApplicationError) -> tuple[StepResult | None, FailureSignal | None]:
    """The step's result carried by a failed attempt's error (None when the command never ran)."""
    details = err.details[0] if err.details else None
    if not isinstance(details, dict) or "exit_code" not in details:
        return None, None
    raw = details.get("signal")
    signal = None
    if isinstance(raw, dict):
        signal = FailureSignal(type=FailureType(raw["type"]), confidence=float(raw.get("confidence", 0.0)),
                               fingerprint=str(raw.get("fingerprint", "")), patterns=list(raw.get("patterns", [])),
                               retry_after=raw.get("retry_after"))
    fields = {k: v for k, v in details.items() if k in StepResult.__dataclass_fields__ and k not in
              ("signal", "retries")}
    return StepResult(**fields), signal


class RecordingRepairActivities(RepairActivities):
    """The repair activities, recording each proposal, LLM exchange and patch review."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.recorder = ReplayRecorder(self.sessions)
        self.on_exchange = self.recorder.llm

    @activity.defn(name="propose_fix")
    async def propose_fix(self, inp: FixInput | FirstShape) -> PatchProposal:
        inp = current(FixInput, inp)
        patch = await super().propose_fix(inp)
        await self.recorder.fix(inp, patch)
        return patch

    @activity.defn(name="apply_patch")
    async def apply_patch(self, inp: ApplyInput | FirstShape) -> ApplyResult:
        inp = current(ApplyInput, inp)
        result = await super().apply_patch(inp)
        await self.recorder.apply(inp, result)
        return result

