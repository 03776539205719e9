"""One thread-pool hop per request for the blocking routes.

FastAPI runs a plain ``def`` route in the thread pool, and around it, each in a hop of its own: a
``def`` dependency (the session's start, and its end), and the validation of the route's result.
Four hops cost as much CPU as the route's reads themselves (bench/RESULTS.md, the API section)
and queue behind one another under load. Here a ``def`` route's endpoint is replaced with one
that, in the single hop FastAPI gives it, also ends the request's transaction (the session opens
lazily, on the route's first query, in the same thread) and validates and serializes the result
to JSON with the route's own response field, as FastAPI would in a hop of its own.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter
from fastapi.datastructures import DefaultPlaceholder
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import ResponseValidationError
from fastapi.routing import APIRoute
from fastapi.utils import is_body_allowed_for_status_code
from sqlalchemy.orm import Session
from starlette.responses import Response

from metabuilder.api.deps import Pager, end_session, open_session


def wrap(router: APIRouter) -> APIRouter:
    """Give every ``def`` route of ``router`` the one-hop endpoint; call before including it in
    an app (the app builds its routes from the endpoints). Idempotent: routers are module-level
    and each app made from them (tests make many) wraps them again."""
    for route in router.routes:
        if not isinstance(route, APIRoute):
            continue
        asynchronous = inspect.iscoroutinefunction(route.endpoint)
        if _opens_session(route.dependant, top=not asynchronous):
            raise TypeError(f"{route.path}: SessionDep is for the parameters of a def route, which this ends; "
                            "an async def route takes AsyncSessionDep")
        if not asynchronous and not getattr(route.endpoint, WRAPPED, False):
            route.endpoint = route.dependant.call = _one_hop(route, route.endpoint)
    return router


def _opens_session(dependant: Dependant, top: bool) -> bool:
    """Whether ``open_session`` is among ``dependant``'s dependencies other than its own parameters
    (``top``: those are allowed): a session that the endpoint does not see is one it cannot end."""
    return any((sub.call is open_session and not top) or _opens_session(sub, top=False)
               for sub in dependant.dependencies)


WRAPPED = "__metabuilder_one_hop__"


def _one_hop(route: APIRoute, call: Callable[..., Any]) -> Callable[..., Any]:
    # A route that sets headers or background tasks on an injected Response, or that has a
    # response class of its own, keeps FastAPI's path for its result: a Response returned from
    # here would bypass them.
    field = route.response_field if (
        route.dependant.response_param_name is None and route.dependant.background_tasks_param_name is None
        and isinstance(route.response_class, DefaultPlaceholder)) else None
    status = route.status_code or 200
    options: dict[str, Any] = {"include": route.response_model_include, "exclude": route.response_model_exclude,
               "by_alias": route.response_model_by_alias, "exclude_unset": route.response_model_exclude_unset,
               "exclude_defaults": route.response_model_exclude_defaults,
               "exclude_none": route.response_model_exclude_none}

    @functools.wraps(call)
    def endpoint(**values: Any) -> Any:
        sessions = [v for v in values.values() if isinstance(v, Session)]
        try:
            result = call(**values)
        except BaseException:
            for session in sessions:
                end_session(session, commit=False)
            raise
        for session in sessions:
            end_session(session, commit=True)
        if field is None or isinstance(result, Response):
            return result
        value, errors = field.validate(result, {}, loc=("response",))
        if errors:
            raise ResponseValidationError(errors=errors, body=result)
        content = field.serialize_json(value, **options) if is_body_allowed_for_status_code(status) else b""
        headers = {k: v for pager in values.values() if isinstance(pager, Pager) for k, v in pager.headers.items()}
        return Response(content=content, status_code=status, media_type="application/json", headers=headers)

    setattr(endpoint, WRAPPED, True)
    return endpoint
