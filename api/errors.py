"""Errors as RFC 9457 problem details (``application/problem+json``) with a clear message in
``detail``, mapped to status codes in one place."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from metabuilder.service.errors import ErrorKind, error_types, kind_of


class FieldError(BaseModel):
    loc: list[str | int]
    """Where: ``body``, ``query`` or ``path``, then the field's name (and index)."""
    msg: str
    type: str


PROBLEM_JSON = "application/problem+json"
ABOUT_BLANK = "about:blank"
"""RFC 9457's type for a problem that means no more than its status code (its ``title`` is the
status's phrase): the API's problems are told apart by status and ``detail``."""


class ErrorOut(BaseModel):
    """An RFC 9457 problem: ``type``, ``title``, ``status``, ``detail``, ``instance``."""

    type: str = ABOUT_BLANK
    title: str = ""
    """The status's phrase: ``Not Found``, ``Unprocessable Content``..."""
    status: int = 0
    detail: str
    """What is wrong, naming the field, the id or the state that makes it so."""
    instance: str | None = None
    """The request's path."""
    errors: list[FieldError] | None = None
    """For an invalid request: each problem with its location."""


class ApiError(Exception):
    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None,
                 body: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.headers, self.body = status, detail, headers, body


PORTAL_PREFIX = "/portal"

STATUS: dict[ErrorKind, int] = {ErrorKind.NOT_FOUND: 404, ErrorKind.CONFLICT: 409, ErrorKind.UNAVAILABLE: 503,
                                ErrorKind.BAD_INPUT: 422}
"""What each kind of refusal (``service.errors.KINDS``) is in HTTP; the CLI's ``EXITS`` says it to a shell."""


def install(app: FastAPI) -> None:
    async def api_error(request: Request, err: Exception) -> Response:
        if isinstance(err, ApiError):
            return respond(request, err.status, err.detail, err.headers, err.body)
        kind = kind_of(err)
        assert kind is not None  # installed for the types of KINDS only
        return respond(request, STATUS[kind], str(err))

    async def crashed(request: Request, err: Exception) -> Response:
        # Starlette raises the error again after this answer, so the server logs its traceback.
        return respond(request, 500, "internal error: the server could not answer this request (its log has why)")

    async def invalid(request: Request, err: Exception) -> Response:
        assert isinstance(err, RequestValidationError)
        problems = [FieldError(loc=[str(p) if not isinstance(p, int) else p for p in e["loc"]], msg=e["msg"],
                               type=e["type"]) for e in err.errors()]
        detail = "; ".join(f"{'.'.join(map(str, p.loc))}: {p.msg}" for p in problems) or "invalid request"
        return respond(request, 422, detail, body=ErrorOut(detail=detail, errors=problems).model_dump())

    async def http_error(request: Request, err: Exception) -> Response:
        assert isinstance(err, HTTPException)
        if err.status_code == 400:  # Starlette could not read the body at all
            return respond(request, 422, f"the request body is not valid JSON: {err.detail}")
        headers: Any = getattr(err, "headers", None)
        return respond(request, err.status_code, str(err.detail), headers)

    handled: list[type[Exception]] = [ApiError, *error_types()]
    for kind in handled:
        app.add_exception_handler(kind, api_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, crashed)


def respond(request: Request, status: int, detail: str, headers: dict[str, str] | None = None,
            body: dict[str, Any] | None = None) -> Response:
    """A problem+json body (``body`` adds to it, e.g. ``errors``); on a portal page
    (``app.state.error_page``), a page saying the same."""
    error_page = getattr(request.app.state, "error_page", None)
    if error_page is not None and request.url.path.startswith(PORTAL_PREFIX):
        response: Response = error_page(request, status, detail)
        return response
    problem = {**(body or {}), **problem_fields(status, detail, request.url.path)}
    if problem.get("errors") is None:
        problem.pop("errors", None)
    return JSONResponse(problem, status_code=status, headers=headers, media_type=PROBLEM_JSON)


def problem_fields(status: int, detail: str, instance: str) -> dict[str, Any]:
    """The RFC 9457 members of a problem."""
    return {"type": ABOUT_BLANK, "title": title(status), "status": status, "detail": detail, "instance": instance}


def title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def responses(*codes: int) -> dict[int | str, dict[str, object]]:
    """OpenAPI entries for the error statuses a route can answer with."""
    text = {401: "Missing or unknown token", 403: "The token's role may not do this",
            404: "No such id for this tenant", 409: "Not allowed in the current state",
            413: "The request body is over the limit", 422: "Invalid request", 503: "Temporal cannot be reached"}
    return {code: {"model": ErrorOut, "description": text[code]} for code in codes}


def problem_media_type(openapi: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI document with every 4xx/5xx response body under ``application/problem+json``,
    the media type they are sent with (FastAPI puts them under ``application/json``, or under the
    route's own media type for a route that answers text)."""
    for item in openapi.get("paths", {}).values():
        for operation in item.values():
            for code, response in operation.get("responses", {}).items():
                content = response.get("content", {})
                if str(code)[:1] not in "45":
                    continue
                # A route answering text (a step log) has its error models under its own media type.
                for media in ("application/json", "text/plain"):
                    if media in content:
                        content[PROBLEM_JSON] = content.pop(media)
                        break
    return openapi
