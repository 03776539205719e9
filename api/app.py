"""The FastAPI facade: seed v2/v3 endpoints over the DB projection and a Temporal client."""

from __future__ import annotations

from fastapi import Depends, FastAPI

from metabuilder.api import errors, health, metrics, onehop, openapi, portal, portal_settings
from metabuilder.api.config import ApiConfig
from metabuilder.api.deps import TemporalGateway, TokenCache, known_query_only
from metabuilder.api.guards import LimitBody, ShedLoad
from metabuilder.api.request_id import RequestId
from metabuilder.api.routes import (
    approvals,
    audit,
    breakers,
    budgets,
    canary,
    chaos,
    classify,
    hosts,
    plans,
    privacy,
    promote,
    runs,
    settings,
    stats,
    timeline,
    v4_settings,
    webhooks,
)
from metabuilder.api.routes import knowledge as knowledge_routes

DESCRIPTION = """\
Meta-Builder's API. Authenticate with `Authorization: Bearer <token>` (`metabuilder tokens create`).
Roles: viewer reads; operator also starts, retries and cancels runs; admin and owner also decide
approval gates and change settings. Another tenant's ids answer 404, like unknown ones.
"""


def create_app(config: ApiConfig) -> FastAPI:
    app = FastAPI(title="Meta-Builder", version="3", description=DESCRIPTION,
                  dependencies=[Depends(known_query_only)], generate_unique_id_function=openapi.operation_id)
    app.state.config = config
    app.state.temporal = TemporalGateway(config)
    app.state.tokens = TokenCache(config.token_cache_seconds)
    errors.install(app)
    app.add_middleware(LimitBody, max_bytes=config.max_body_bytes,
                       per_path={path: classify.MAX_BODY_BYTES for path in classify.PATHS})
    app.add_middleware(ShedLoad, max_in_flight=config.max_in_flight)
    # outside the shedding: shed requests are counted (503)
    metrics.install(app, config.sessions, config.breaker_alert_after_seconds, queue_prefix=config.task_queue_prefix)
    app.add_middleware(RequestId)  # outermost: a shed or refused request has an id too
    onehop.wrap(portal.router)
    app.include_router(onehop.wrap(portal_settings.router))
    portal.install(app)
    for module in (runs, approvals, settings, plans, classify, audit, knowledge_routes, breakers, timeline, stats,
                   v4_settings, chaos, hosts, privacy, budgets, promote, canary, webhooks):
        app.include_router(onehop.wrap(module.router))

    health.install(app)
    openapi.install(app)
    return app
