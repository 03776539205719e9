"""Request dependencies: the DB session, the caller (from the bearer token), the Temporal client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from types import UnionType
from typing import Annotated, TypeVar, Union, get_args, get_origin
from urllib.parse import urlencode

from fastapi import Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.dependencies.models import Dependant
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session
from temporalio.client import Client

from metabuilder.api.config import ApiConfig
from metabuilder.api.errors import ApiError
from metabuilder.domain.access import Principal, Role
from metabuilder.store import access
from metabuilder.store.access import hash_token
from metabuilder.store.db import transaction

T = TypeVar("T")

_bearer = HTTPBearer(auto_error=False, description="An API token: `metabuilder tokens create --role ...`")


# Dependencies that do no I/O are ``async def``: FastAPI runs a plain ``def`` dependency in the
# bounded thread pool, a hop that costs as much as the work and queues behind every request.

async def get_config(request: Request) -> ApiConfig:
    config: ApiConfig = request.app.state.config
    return config


ConfigDep = Annotated[ApiConfig, Depends(get_config)]


async def open_session(config: ConfigDep) -> Session:
    """The request's session, for a ``def`` route: it connects on its first query, in the route's
    thread, and ``onehop`` ends its transaction in that same thread as the route returns or fails.
    Not a generator: one with a cleanup would cost an exit stack and two context managers per
    request, a tenth of a short read's CPU, to close what ``onehop`` has closed already."""
    return config.sessions()


SessionDep = Annotated[Session, Depends(open_session)]
"""The session of a ``def`` route (``onehop.wrap`` refuses it anywhere else)."""


async def get_session(config: ConfigDep) -> AsyncIterator[Session]:
    """One transaction per request, committed when the route returns without an error, for an
    ``async def`` route: the session connects on its first query and is ended here, in the
    thread pool."""
    session = config.sessions()
    try:
        yield session
    except BaseException:
        if session.in_transaction():
            await run_in_threadpool(end_session, session, False)
        else:
            session.close()
        raise
    if session.in_transaction():
        await run_in_threadpool(end_session, session, True)
    else:
        session.close()


def end_session(session: Session, commit: bool) -> None:
    """Commit (or roll back) the session's transaction and give its connection back. Blocking."""
    try:
        if commit and session.in_transaction():
            session.commit()
    finally:
        session.close()  # rolls back whatever was not committed


AsyncSessionDep = Annotated[Session, Depends(get_session, scope="function")]
"""The session of an ``async def`` route. ``scope="function"``: the transaction ends (and its
pooled connection goes back) as soon as the route returns, not after the response is sent. Held
until then, connections sat ``idle in transaction`` while the responses queued, and the pool ran
dry under load."""


def principal_of(config: ApiConfig, token: str) -> Principal | None:
    """The user a token stands for; None for an empty, unknown or revoked token. Blocking: it
    takes a connection and gives it back before returning."""
    if not token:
        return None
    with transaction(config.sessions) as session:
        return access.authenticate(session, token)


class TokenCache:
    """Who a token stands for, remembered for ``ttl`` seconds after a lookup in the DB, so that a
    request with a known token needs no thread-pool hop and no query to say who sent it. A token
    revoked (or a role changed) in the DB is seen within ``ttl``. Unknown tokens are not kept, and
    at most ``max_entries`` are (all are dropped when full: a miss costs only one lookup)."""

    def __init__(self, ttl: float, max_entries: int = 10_000) -> None:
        self.ttl, self.max_entries = ttl, max_entries
        self._entries: dict[str, tuple[Principal, float]] = {}

    def get(self, token: str) -> Principal | None:
        found = self._entries.get(hash_token(token))
        if found is None:
            return None
        if time.monotonic() >= found[1]:
            self._entries.pop(hash_token(token), None)
            return None
        return found[0]

    def put(self, token: str, principal: Principal) -> None:
        if self.ttl <= 0:
            return
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[hash_token(token)] = (principal, time.monotonic() + self.ttl)


async def get_principal(request: Request, config: ConfigDep,
                        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Principal:
    challenge = {"WWW-Authenticate": "Bearer"}
    if creds is None:
        raise ApiError(401, "missing bearer token (send 'Authorization: Bearer <token>')", challenge)
    cache: TokenCache = request.app.state.tokens
    principal = cache.get(creds.credentials)
    if principal is None:
        principal = await run_in_threadpool(principal_of, config, creds.credentials)
        if principal is None:
            raise ApiError(401, "unknown or revoked token", challenge)
        cache.put(creds.credentials, principal)
    return principal


def require(role: Role):  # type: ignore[no-untyped-def]
    """A dependency that lets through callers whose role is ``role`` or above."""

    async def check(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        if not principal.role.allows(role):
            raise ApiError(403, f"this needs the {role} role or above; {principal.user!r} is {principal.role}")
        return principal

    return check


Viewer = Annotated[Principal, Depends(require(Role.VIEWER))]
Operator = Annotated[Principal, Depends(require(Role.OPERATOR))]
Admin = Annotated[Principal, Depends(require(Role.ADMIN))]


class TemporalGateway:
    """Connects to Temporal on first use and keeps the client; failures answer 503, not hang."""

    def __init__(self, config: ApiConfig) -> None:
        self._config = config
        self._client: Client | None = None
        self._lock = asyncio.Lock()

    async def client(self) -> Client:
        async with self._lock:
            if self._client is None:
                try:
                    self._client = await asyncio.wait_for(self._config.connect(), timeout=10)
                except Exception as err:  # noqa: BLE001 - any failure to connect is the same 503 to a caller
                    raise ApiError(503, f"Temporal cannot be reached: {err}") from err
            return self._client


async def get_gateway(request: Request) -> TemporalGateway:
    gateway: TemporalGateway = request.app.state.temporal
    return gateway


TemporalDep = Annotated[TemporalGateway, Depends(get_gateway)]
"""Routes ask it for the client only after their own checks, so that a bad id is a 404 even
when Temporal is down."""


async def known_query_only(request: Request) -> None:
    """Refuse a query parameter the route does not take (a typo would otherwise be ignored), and
    one of a single value given twice (which of them counts would be a guess)."""
    route = request.scope.get("route")
    if route is None or not request.url.path.startswith("/api/") or not request.query_params:
        return
    known, many = _query_names_of(route.dependant)
    given = request.query_params
    unknown = sorted(set(given) - known)
    if unknown:
        expected = ", ".join(sorted(known)) or "none"
        raise ApiError(422, f"unknown query parameter {', '.join(map(repr, unknown))} (expected: {expected})")
    if len(given.multi_items()) > len(given):  # some name is repeated
        twice = sorted(k for k in given if k not in many and len(given.getlist(k)) > 1)
        if twice:
            raise ApiError(422, f"query parameter {', '.join(map(repr, twice))} given more than once "
                                "(it takes one value)")


_QUERY_NAMES: dict[int, tuple[Dependant, frozenset[str], frozenset[str]]] = {}
"""A route's query parameter names and those that take several values, by its dependant (kept
with it, so that an id is not reused)."""


def _query_names_of(dependant: Dependant) -> tuple[frozenset[str], frozenset[str]]:
    found = _QUERY_NAMES.get(id(dependant))
    if found is None or found[0] is not dependant:
        if len(_QUERY_NAMES) >= 10_000:  # apps made and dropped (tests): forget the routes of old ones
            _QUERY_NAMES.clear()
        names, many = _query_names(dependant)
        found = _QUERY_NAMES[id(dependant)] = (dependant, frozenset(names), frozenset(many))
    return found[1], found[2]


def _query_names(dependant: Dependant) -> tuple[set[str], set[str]]:
    names = {p.alias for p in dependant.query_params}
    many = {p.alias for p in dependant.query_params if _takes_many(p.field_info.annotation)}
    for sub in dependant.dependencies:
        sub_names, sub_many = _query_names(sub)
        names |= sub_names
        many |= sub_many
    return names, many


def _takes_many(annotation: object) -> bool:
    """Whether a query parameter's type is a sequence (``list[str]``, ``list[int] | None``...)."""
    origin = get_origin(annotation)
    if origin in (list, tuple, set, frozenset):
        return True
    return origin in (Union, UnionType) and any(_takes_many(a) for a in get_args(annotation))


class Pager:
    """Pagination metadata of a list endpoint, in headers so that the body stays the list that
    clients read today: the route asks its query for one row more than ``limit``, and
    ``page`` drops it and, when there was one, adds ``Link: <...&offset=N>; rel="next"`` (RFC 8288)
    with the query parameters of this request; no ``next`` link means the last page."""

    def __init__(self, request: Request, response: Response) -> None:
        self.request, self.response = request, response
        self.headers: dict[str, str] = {}

    def page(self, rows: Sequence[T], limit: int, offset: int) -> Sequence[T]:
        if len(rows) > limit:
            query = urlencode({**self.request.query_params, "limit": limit, "offset": offset + limit})
            self.headers["Link"] = f'<{self.request.url.path}?{query}>; rel="next"'
            self.response.headers.update(self.headers)  # for FastAPI's own path (onehop copies ``headers``)
        return rows[:limit]


async def get_pager(request: Request, response: Response) -> Pager:
    return Pager(request, response)


PagerDep = Annotated[Pager, Depends(get_pager)]
"""Made by an ``async def``: FastAPI calls a class given to ``Depends`` in the thread pool, a hop."""
