"""The tenant's audit log (seed 001 events and the approval events), for compliance reviews."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated

from fastapi import APIRouter, Query, Response

from metabuilder.api.deps import Admin, PagerDep, SessionDep
from metabuilder.api.errors import ApiError, responses
from metabuilder.api.routes import V3, V4
from metabuilder.api.schemas import AuditEventOut
from metabuilder.service.tenancy import own_run
from metabuilder.store import audit as audit_rows
from metabuilder.store.models import AuditEvent

router = APIRouter(tags=["audit"])

EVENT_PATTERN = r"^[a-z_]+(\.([a-z_]+|\*))?$"


@router.get(V3 + "/audit", responses=responses(401, 403, 404, 422))
def audit_log(principal: Admin, session: SessionDep, pager: PagerDep, run_id: str | None = None,
              event: Annotated[str | None, Query(pattern=EVENT_PATTERN, max_length=64,
                                                 description="An event name, or a family: `approval.*`")] = None,
              limit: Annotated[int, Query(ge=1, le=1000)] = 200,
              offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0) -> list[AuditEventOut]:
    """The caller's tenant's audit events, oldest first; of one run and one event or family if asked
    (admin or owner: the log names who decided what). A ``Link`` header points to the next page."""
    if run_id is not None:
        own_run(session, run_id, principal.tenant)
    rows = audit_rows.audit_events(session, tenant=principal.tenant, run_id=run_id, event=event,
                                   limit=limit + 1, offset=offset)
    return [_out(a) for a in pager.page(rows, limit, offset)]


def _out(a: AuditEvent) -> AuditEventOut:
    return AuditEventOut(id=a.id, event=a.event, actor=a.actor, run_id=a.run_id, data=dict(a.data),
                         created_at=a.created_at, target=a.target, request_id=a.request_id, before=a.before,
                         after=a.after)


class ExportFormat(StrEnum):
    JSON = "json"
    JSONL = "jsonl"


MAX_EXPORT = 100_000
ISO_TIME = r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?([Zz]|[+-]\d{2}:?\d{2})?$"
"""A date and time (seconds, fraction and offset optional): a number (epoch seconds) is not one."""


@router.get(V4 + "/audit", responses={**responses(401, 403, 422), 200: {
    "content": {"application/json": {}, "application/x-ndjson": {}},
    "description": "The events: a JSON list, or one JSON object a line (``format=jsonl``)"}})
def export_audit(principal: Admin, session: SessionDep,
                 since: Annotated[str | None, Query(description="From this time (inclusive, ISO 8601)",
                                                    pattern=ISO_TIME, max_length=40)] = None,
                 until: Annotated[str | None, Query(description="To this time (exclusive, ISO 8601)",
                                                    pattern=ISO_TIME, max_length=40)] = None,
                 event: Annotated[str | None, Query(pattern=EVENT_PATTERN, max_length=64)] = None,
                 format: ExportFormat = ExportFormat.JSON) -> Response:  # noqa: A002 - the query parameter's name
    """The tenant's audit events of a time range, oldest first, as JSON or JSON lines (admin or
    owner), at most 100000 at a time: page on with ``since`` the last event's ``created_at``."""
    start, end = _time(since, "since"), _time(until, "until")
    if start and end and start >= end:
        raise ApiError(422, f"since ({start.isoformat()}) is not before until ({end.isoformat()})")
    rows = audit_rows.audit_events(session, tenant=principal.tenant, since=start, until=end, event=event,
                                   limit=MAX_EXPORT)
    events = [audit_rows.audit_fields(a) for a in rows]
    if format is ExportFormat.JSONL:
        body = "".join(json.dumps(e, default=str, sort_keys=True) + "\n" for e in events)
        return Response(body, media_type="application/x-ndjson")
    return Response(json.dumps(events, default=str), media_type="application/json")


def _time(text: str | None, name: str) -> datetime | None:
    """``text`` (ISO 8601 date and time) in UTC, a time without an offset taken as UTC; 422 naming
    ``name`` when it is no such time or has no UTC equivalent (an offset past year 1 or 9999)."""
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ApiError(422, f"{name} {text!r}: not an ISO 8601 date and time (2026-12-03T08:00:00Z)") from None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ApiError(422, f"{name} {value.isoformat()}: out of range once in UTC") from None
