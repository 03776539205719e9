"""Who may decide a gate, asked when the decision arrives: a short local activity of the run's
workflow (an Update's validator cannot do I/O, so the handler asks this before it decides)."""

from __future__ import annotations

import asyncio

from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity

from metabuilder.domain.approvals import ApproverQuery
from metabuilder.store import access
from metabuilder.store.db import transaction


class ApproverActivities:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    @activity.defn(name="approver_role")
    async def approver_role(self, query: ApproverQuery) -> str | None:
        """The user's current role in the tenant, None when there is no such user. A read:
        idempotent; the workflow gives it a few seconds."""

        def work() -> str | None:
            with transaction(self.sessions) as session:
                role = access.user_role(session, query.tenant, query.user.strip())
                return role.value if role is not None else None

        return await asyncio.to_thread(work)
