"""A tenant's own failure patterns (CRUD, validated with line numbers) and people's corrections
of the classifier ("this failure was X"), each kept as a labelled example with a proposed pattern
that an admin can accept."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fastapi import APIRouter
from pydantic import BaseModel, Field

from metabuilder.api.deps import Admin, Operator, SessionDep, Viewer
from metabuilder.api.errors import ApiError, ErrorOut, FieldError, responses
from metabuilder.api.routes import V3
from metabuilder.domain.classifier import failure_window
from metabuilder.domain.knowledge import (
    KnowledgeBaseError,
    PatternEntry,
    bundled_knowledge_base,
    entries_to_yaml,
    parse_entries,
)
from metabuilder.domain.knowledge import propose_pattern as propose
from metabuilder.domain.scanner import make_engine
from metabuilder.domain.taxonomy import FailureType
from metabuilder.service.errors import Conflict, NotFound
from metabuilder.service.tenancy import own_run, own_tenant
from metabuilder.store import knowledge
from metabuilder.store import steps as step_rows
from metabuilder.store.audit import write_audit

router = APIRouter(tags=["classifier knowledge"])
READ = responses(401, 403, 404, 422)
WRITE = responses(401, 403, 404, 409, 422)
MAX_YAML = 200_000
MAX_ENTRIES = 500


class PatternsIn(BaseModel):
    yaml: str = Field(max_length=MAX_YAML, description="knowledge-base entries, as in domain/failure_patterns.yaml")


class PatternOut(BaseModel):
    id: str
    failure_type: str | None
    pattern: str
    weight: float
    description: str
    kind: str


class PatternsOut(BaseModel):
    tenant: str
    entries: list[PatternOut]
    yaml: str
    """The same entries as YAML, ready to edit and post back."""


class CorrectionIn(BaseModel):
    step: str = Field(min_length=1, max_length=64, description="the failed step's name")
    failure_type: FailureType = Field(description="what the failure really was")
    note: str = Field(default="", max_length=2000)


class CorrectionOut(BaseModel):
    id: str
    run_id: str | None
    step: str
    predicted: str
    corrected: str
    note: str
    status: str
    created_by: str
    proposed_pattern: str | None
    """A knowledge-base entry (YAML) proposed from the failure window; an admin may accept it."""
    log_window: list[str]


def _out(entry: PatternEntry) -> PatternOut:
    return PatternOut(id=entry.id, failure_type=entry.failure_type.value if entry.failure_type else None,
                      pattern=entry.pattern, weight=entry.weight, description=entry.description, kind=entry.kind.value)


def _patterns_out(session: SessionDep, tenant: str) -> PatternsOut:
    entries = knowledge.tenant_entries(session, tenant)
    return PatternsOut(tenant=tenant, entries=[_out(e) for e in entries], yaml=entries_to_yaml(entries))


def _invalid(problems: Sequence[tuple[int | None, str, str]]) -> ApiError:
    """422 naming each problem by its line in the posted YAML."""
    errors = [FieldError(loc=["body", "yaml", *([line] if line else [])], msg=f"{where}: {msg}" if where else msg,
                         type="pattern") for line, where, msg in problems]
    detail = "invalid failure patterns: " + "; ".join(
        (f"line {line}: " if line else "") + (f"{where}: " if where else "") + msg for line, where, msg in problems)
    return ApiError(422, detail, body=ErrorOut(detail=detail, errors=errors).model_dump())


def _validated(text: str, tenant_entries: list[PatternEntry]) -> list[PatternEntry]:
    try:
        entries = parse_entries(text, "yaml")
    except KnowledgeBaseError as err:
        raise _invalid([(p.line, p.field, p.message) for p in err.problems]) from None
    if not entries:
        raise _invalid([(None, "", "no entries: give a list of pattern entries")])
    if len(entries) + len(tenant_entries) > MAX_ENTRIES:
        raise _invalid([(None, "", f"a tenant may have at most {MAX_ENTRIES} entries")])
    bundled = {e.id for e in bundled_knowledge_base().entries}
    clashes = [(None, e.id, "is a bundled entry's id: choose another") for e in entries if e.id in bundled]
    if clashes:
        raise _invalid(clashes)
    mine = {e.id: e for e in tenant_entries}
    mine.update({e.id: e for e in entries})
    try:  # what the runs will compile: the bundled base and all of the tenant's entries
        make_engine(bundled_knowledge_base().extended(mine.values()))
    except KnowledgeBaseError as err:
        raise _invalid([(None, p.field, p.message) for p in err.problems]) from None
    return entries


@router.get(V3 + "/tenants/{tenant_id}/patterns", responses=READ)
def list_patterns(tenant_id: str, principal: Viewer, session: SessionDep) -> PatternsOut:
    """The tenant's own knowledge-base entries, used with the bundled ones in its runs."""
    return _patterns_out(session, own_tenant(tenant_id, principal.tenant))


@router.post(V3 + "/tenants/{tenant_id}/patterns", responses=WRITE)
def add_patterns(tenant_id: str, body: PatternsIn, principal: Admin, session: SessionDep) -> PatternsOut:
    """Add entries (YAML); an entry with an id the tenant already has replaces it. A bad entry is
    refused with every problem and its line."""
    tenant = own_tenant(tenant_id, principal.tenant)
    before = knowledge.tenant_entries(session, tenant)
    entries = _validated(body.yaml, before)
    knowledge.put_entries(session, tenant, entries, by=principal.user)
    _audit_patterns(session, "patterns.added", tenant, principal.user, before, [e.id for e in entries])
    return _patterns_out(session, tenant)


@router.put(V3 + "/tenants/{tenant_id}/patterns/{entry_id}", responses=WRITE)
def replace_pattern(tenant_id: str, entry_id: str, body: PatternsIn, principal: Admin,
                    session: SessionDep) -> PatternOut:
    """Replace (or create) one entry; the YAML holds that one entry."""
    tenant = own_tenant(tenant_id, principal.tenant)
    entries = _validated(body.yaml, knowledge.tenant_entries(session, tenant))
    if len(entries) != 1 or entries[0].id != entry_id:
        raise _invalid([(None, "", f"expected exactly one entry, with id {entry_id!r}")])
    before = knowledge.tenant_entries(session, tenant)
    knowledge.put_entries(session, tenant, entries, by=principal.user)
    _audit_patterns(session, "patterns.replaced", tenant, principal.user, before, [entry_id])
    return _out(entries[0])


@router.delete(V3 + "/tenants/{tenant_id}/patterns/{entry_id}", responses=READ)
def delete_pattern(tenant_id: str, entry_id: str, principal: Admin, session: SessionDep) -> PatternsOut:
    tenant = own_tenant(tenant_id, principal.tenant)
    before = knowledge.tenant_entries(session, tenant)
    if not knowledge.delete_entry(session, tenant, entry_id):
        raise NotFound(f"tenant {tenant!r} has no pattern {entry_id!r}")
    _audit_patterns(session, "patterns.deleted", tenant, principal.user, before, [entry_id])
    return _patterns_out(session, tenant)


def _audit_patterns(session: SessionDep, event: str, tenant: str, actor: str, before: Sequence[PatternEntry],
                    ids: Sequence[str]) -> None:
    """An audit event of a change to the tenant's patterns: each changed entry before and after."""
    after = {e.id: e for e in knowledge.tenant_entries(session, tenant)}
    was = {e.id: e for e in before}
    write_audit(session, event, tenant=tenant, actor=actor, target=f"tenant:{tenant}/patterns:{','.join(ids)}",
                before={i: entries_to_yaml([was[i]]) for i in ids if i in was},
                after={i: entries_to_yaml([after[i]]) for i in ids if i in after})


def _correction_out(row: knowledge.Correction) -> CorrectionOut:
    return CorrectionOut(id=row.id, run_id=row.run_id, step=row.step_name, predicted=row.predicted,
                         corrected=row.corrected, note=row.note, status=row.status, created_by=row.created_by,
                         proposed_pattern=row.proposed_pattern, log_window=row.log_window.splitlines())


@router.post(V3 + "/runs/{run_id}/corrections", responses=WRITE)
def correct(run_id: str, body: CorrectionIn, principal: Operator, session: SessionDep) -> CorrectionOut:
    """Say what a failed step's failure really was. It is kept as a labelled example (its failure
    window and exit code), with a pattern proposed from it."""
    run = own_run(session, run_id, principal.tenant)
    attempts = [s for s in step_rows.run_steps(session, run.id) if s.name == body.step]
    failed = [s for s in attempts if s.exit_code not in (None, 0)]
    if not failed:
        raise Conflict(f"step {body.step!r} of run {run_id!r} has no failed attempt to correct")
    step = failed[-1]
    try:
        data = Path(step.log_path).read_bytes() if step.log_path else step.log_tail.encode()
    except OSError:
        data = step.log_tail.encode()  # the log lives on a worker's disk: its tail is in the projection
    kb = knowledge.tenant_knowledge_base(session, principal.tenant)
    window = failure_window(data, kb=kb)
    proposal = None
    if body.failure_type is not FailureType.UNKNOWN:
        entry = propose(window, body.failure_type, f"correction.{run.id[:8].lower()}-{body.step.lower()[:20]}")
        proposal = entries_to_yaml([entry]) if entry else None
    row = knowledge.add_correction(session, principal.tenant, run_id=run.id, step_name=body.step,
                                   predicted=step.signal_type or FailureType.UNKNOWN.value,
                                   corrected=body.failure_type.value, log_window="\n".join(window),
                                   exit_code=step.exit_code, proposed=proposal, note=body.note, by=principal.user)
    write_audit(session, "correction.created", tenant=principal.tenant, actor=principal.user,
                target=f"correction:{row.id}", run_id=run.id,
                after={"step": body.step, "predicted": row.predicted, "corrected": row.corrected})
    return _correction_out(row)


@router.get(V3 + "/tenants/{tenant_id}/corrections", responses=READ)
def list_corrections(tenant_id: str, principal: Viewer, session: SessionDep) -> list[CorrectionOut]:
    """The tenant's corrections, newest first (at most 500)."""
    rows = knowledge.list_corrections(session, own_tenant(tenant_id, principal.tenant))
    return [_correction_out(r) for r in rows]


@router.post(V3 + "/tenants/{tenant_id}/corrections/{correction_id}/accept", responses=WRITE)
def accept_correction(tenant_id: str, correction_id: str, principal: Admin, session: SessionDep) -> PatternOut:
    """Make the correction's proposed pattern one of the tenant's patterns."""
    tenant = own_tenant(tenant_id, principal.tenant)
    row = knowledge.get_correction(session, tenant, correction_id)
    if row is None:
        raise NotFound(f"unknown correction {correction_id!r}")
    if row.status != "open" or not row.proposed_pattern:
        raise Conflict(f"correction {correction_id!r} is {row.status} and has "
                       + ("a pattern" if row.proposed_pattern else "no proposed pattern"))
    before = knowledge.tenant_entries(session, tenant)
    entries = _validated(row.proposed_pattern, before)
    knowledge.put_entries(session, tenant, entries, by=principal.user)
    knowledge.accept_correction(session, row)
    _audit_patterns(session, "correction.accepted", tenant, principal.user, before, [e.id for e in entries])
    return _out(entries[0])
