"""Replay bundles as use cases: re-drive a run's decisions offline, export a bundle to a file,
import one from a file (to reproduce a run on another machine).

Re-driving runs the pure decisions again on the current code (:mod:`domain.replay`): the stored
log classified with the tenant's knowledge base as it is now, the retry decision of the current
per-class policy tables (with the run's own budgets and delays), the ladder's rungs and fixers,
the sandbox's review of each patch, and the extraction of each LLM answer's diff. Nothing runs
and no model is asked.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import yaml
from sqlalchemy.orm import Session, sessionmaker

from metabuilder.adapters.llm import extract_diff
from metabuilder.domain import policy as policy_tables
from metabuilder.domain.knowledge import KnowledgeBase
from metabuilder.domain.plans import Queue, Step
from metabuilder.domain.policy import AutofixPolicy
from metabuilder.domain.protected import ProtectedCheck, default_checks, parse_checks
from metabuilder.domain.replay import Difference, differences, review_decision, step_decisions
from metabuilder.domain.taxonomy import FailureType
from metabuilder.domain.yaml_reader import YamlReader, compose
from metabuilder.service.errors import BadRequest, NotFound
from metabuilder.store import replay as bundle
from metabuilder.store.db import transaction
from metabuilder.store.knowledge import tenant_knowledge_base
from metabuilder.store.models import ReplayEntry

FORMAT = "metabuilder-replay-bundle/1"


@dataclass(frozen=True)
class Entry:
    key: str
    kind: str
    step_name: str
    facts: dict[str, Any]
    blobs: dict[str, str]


@dataclass
class ReplayReport:
    """What a re-drive compared and what differed."""

    run_id: str
    entries: int
    redriven: int
    """Entries whose decisions were taken again (a fix command's own run is not: it is a command)."""
    differences: list[Difference] = field(default_factory=list)
    histories: list[dict[str, Any]] = field(default_factory=list)
    """The Temporal histories kept in the bundle (an imported one), as JSON."""


def _entries(session: Session, run_id: str) -> list[Entry]:
    rows: list[ReplayEntry] = bundle.entries(session, run_id)
    if not rows:
        raise NotFound(f"no replay bundle for run {run_id!r} (runs record one from this version on; "
                       "import an exported one with `metabuilder replay import FILE`)")
    return [Entry(r.key, r.kind, r.step_name, dict(r.facts), dict(r.blobs)) for r in rows]


def current_policy(recorded: Mapping[str, Any]) -> AutofixPolicy:
    """The run's policy with the per-class tables of the current code (the run's budgets, base
    delay, cap and jitter stay as the run had them)."""
    run = AutofixPolicy(**{k: v for k, v in recorded.items() if k in AutofixPolicy.__dataclass_fields__})
    return replace(run, max_retries=dict(policy_tables.DEFAULT_MAX_RETRIES),
                   backoff_multiplier=dict(policy_tables.DEFAULT_BACKOFF_MULTIPLIER))


def _step(data: Mapping[str, Any]) -> Step:
    return Step(name=str(data["name"]), command=str(data["command"]), queue=Queue(data.get("queue", "cpu")),
                fix_command=data.get("fix"), rollback_command=data.get("rollback"),
                fallback_command=data.get("fallback"), optional=bool(data.get("optional", False)))


def _checks(data: list[dict[str, Any]]) -> list[ProtectedCheck]:
    if not data:
        return []
    reader = YamlReader("bundle")
    node = compose(yaml.safe_dump(data), "bundle")
    assert node is not None
    return parse_checks(reader, node, "protected_checks")


def redrive(sessions: sessionmaker[Session], run_id: str, *, kb: KnowledgeBase | None = None) -> ReplayReport:
    """Take every recorded decision of ``run_id`` again from its bundle; ``kb`` replaces the
    tenant's knowledge base (a test's deliberate change). ``NotFound`` without a bundle."""
    with transaction(sessions) as session:
        entries = _entries(session, run_id)
        data = bundle.blobs(session, [d for e in entries for d in e.blobs.values()])
        tenants = {str(e.facts.get("tenant", "default")) for e in entries if e.kind == "step"}
        kbs = {t: kb or tenant_knowledge_base(session, t) for t in tenants}
    report = ReplayReport(run_id, len(entries), 0)
    for e in entries:
        f = e.facts
        if e.kind == "step" and f.get("classification") and "log" in e.blobs:
            policy = current_policy(f["policy"]) if f.get("policy") else None
            replayed = step_decisions(data[e.blobs["log"]], int(f["exit_code"]), _step(f["step"]),
                                      kbs[str(f.get("tenant", "default"))], policy, int(f["temporal_attempt"]),
                                      int(f["retry_budget"]))
            recorded = {"classification": f["classification"], **f["decision"]}
            if policy is not None and policy.jitter_ratio:
                recorded["retry"] = {**recorded["retry"], "delay": None}  # jittered: the decision, not the draw
                replayed["retry"] = {**replayed["retry"], "delay": None}
            report.differences += differences(f"step {e.step_name} attempt {f['attempt']}", recorded, replayed)
            report.redriven += 1
        elif e.kind == "apply":
            checks = [*default_checks(), *_checks(f.get("protected_checks") or [])]
            replayed = review_decision(data[e.blobs["diff"]].decode(), FailureType(f["signal_type"]),
                                       f["write_scope"], checks)
            report.differences += differences(f"patch {f['seq']} of {e.step_name}", f["review"], replayed)
            report.redriven += 1
        elif e.kind == "llm":
            diff = extract_diff(data[e.blobs["answer"]].decode())
            replayed = {"diff_sha256": hashlib.sha256(diff.encode()).hexdigest()}
            report.differences += differences(f"llm answer {f['label']} of {e.step_name}",
                                              {"diff_sha256": f["diff_sha256"]}, replayed)
            report.redriven += 1
        elif e.kind == "history":
            report.histories.append({"workflow_id": f["workflow_id"], "json": data[e.blobs["history"]].decode()})
    return report


def export_bundle(sessions: sessionmaker[Session], run_id: str,
                  histories: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The bundle of ``run_id`` as one JSON document (blobs base64, each once), with the run's
    Temporal histories (workflow id -> history JSON) when given."""
    with transaction(sessions) as session:
        entries = _entries(session, run_id)
        data = bundle.blobs(session, [d for e in entries for d in e.blobs.values()])
    items = [{"key": e.key, "kind": e.kind, "step_name": e.step_name, "facts": e.facts, "blobs": e.blobs}
             for e in entries if e.kind != "history"]
    for wf_id, text in (histories or {}).items():
        digest = hashlib.sha256(text.encode()).hexdigest()
        data[digest] = text.encode()
        items.append({"key": f"history:{wf_id}", "kind": "history", "step_name": "", "facts": {"workflow_id": wf_id},
                      "blobs": {"history": digest}})
    return {"format": FORMAT, "run_id": run_id, "entries": items,
            "blobs": {d: base64.b64encode(b).decode() for d, b in sorted(data.items())}}


def import_bundle(sessions: sessionmaker[Session], doc: object, *, run_id: str | None = None) -> tuple[str, int]:
    """Store an exported bundle (under ``run_id`` if given); ``BadRequest`` naming what is wrong.
    Returns the run id and the number of entries that were new."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise BadRequest(f"not a replay bundle (expected \"format\": \"{FORMAT}\")")
    target = run_id or str(doc.get("run_id") or "")
    if not target:
        raise BadRequest("the bundle names no run_id")
    raw = doc.get("blobs") or {}
    blobs: dict[str, bytes] = {}
    for digest, text in raw.items():
        try:
            value = base64.b64decode(text, validate=True)
        except (ValueError, TypeError):
            raise BadRequest(f"blob {digest[:12]}: not base64") from None
        if hashlib.sha256(value).hexdigest() != digest:
            raise BadRequest(f"blob {digest[:12]}: its content does not match its sha256")
        blobs[digest] = value
    new = 0
    with transaction(sessions) as session:
        for i, item in enumerate(doc.get("entries") or []):
            refs = item.get("blobs") or {}
            missing = [d for d in refs.values() if d not in blobs]
            if missing:
                raise BadRequest(f"entries[{i}] ({item.get('key')}): blob {missing[0][:12]} is not in the bundle")
            new += bundle.record_entry(session, target, str(item["key"]), str(item["kind"]),
                                       str(item.get("step_name", "")), item.get("facts") or {},
                                       {name: blobs[d] for name, d in refs.items()})
    return target, new
