"""``/healthz`` (liveness: the process answers) and ``/readyz`` (readiness: it can serve, because
the database and Temporal answer)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field
from sqlalchemy import text

from metabuilder.api.config import ApiConfig
from metabuilder.api.deps import TemporalGateway
from metabuilder.api.errors import ApiError, ErrorOut
from metabuilder.store.db import transaction

CHECK_TIMEOUT_SECONDS = 2.0
"""Each dependency gets this long to answer a readiness probe (probes time out at a few seconds)."""


class Health(BaseModel):
    status: str = "ok"


class Readiness(BaseModel):
    status: str = Field(description="``ready``")
    checks: dict[str, str] = Field(description="Each dependency (``database``, ``temporal``): ``ok``.")


class NotReady(ErrorOut):
    checks: dict[str, str] = Field(description="Each dependency: ``ok``, or why it is down.")


def install(app: FastAPI) -> None:
    @app.get("/healthz", tags=["health"])
    async def healthz() -> Health:
        """Liveness: the process answers (also when it refuses other requests at capacity). No I/O."""
        return Health()

    @app.get("/readyz", tags=["health"], responses={503: {"model": NotReady, "description": "A dependency is down"}})
    async def readyz(request: Request) -> Readiness:
        """Readiness: the database answers a query and Temporal its health check, each within 2 s;
        503 naming what is down otherwise (no token needed)."""
        config: ApiConfig = request.app.state.config
        gateway: TemporalGateway = request.app.state.temporal
        database, temporal = await asyncio.gather(_check(lambda: _database(config)), _check(lambda: _temporal(gateway)))
        checks = {"database": database, "temporal": temporal}
        down = {name: why for name, why in checks.items() if why != "ok"}
        if down:
            raise ApiError(503, "not ready: " + "; ".join(f"{name}: {why}" for name, why in down.items()),
                           body={"checks": checks})
        return Readiness(status="ready", checks=checks)


async def _check(probe: Callable[[], Awaitable[None]]) -> str:
    try:
        await asyncio.wait_for(probe(), CHECK_TIMEOUT_SECONDS)
    except TimeoutError:
        return f"no answer within {CHECK_TIMEOUT_SECONDS:g} s"
    except ApiError as err:
        return err.detail
    except Exception as err:  # noqa: BLE001 - whatever fails, the probe's answer is why
        return f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}".rstrip(": ")
    return "ok"


async def _database(config: ApiConfig) -> None:
    def query() -> None:
        with transaction(config.sessions) as session:
            session.execute(text("SELECT 1"))

    await run_in_threadpool(query)


async def _temporal(gateway: TemporalGateway) -> None:
    client = await gateway.client()
    if not await client.service_client.check_health(timeout=timedelta(seconds=CHECK_TIMEOUT_SECONDS)):
        raise RuntimeError("its health check says it is not serving")
