"""Errors as JSON with a clear message, mapped to status codes in one place."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from domain.plans import PlanError
from domain.policy import PolicyError
from service.errors import BadRequest, Conflict, NotFound, Unavailable


class FieldError(BaseModel):
    loc: list[str | int]
    """Where: ``body``, ``query`` or ``path``, then the field's name (and index)."""
    msg: str
    type: str


class ErrorOut(BaseModel):
    detail: str
    """What is wrong, naming the field, the id or the state that makes it so."""
    errors: list[FieldError] | None = None
    """For an invalid request: each problem with its location."""


class ApiError(Exception):
    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers


STATUS = {NotFound: 404, Conflict: 409, Unavailable: 503, BadRequest: 422, PlanError: 422, PolicyError: 422}


def install(app: FastAPI) -> None:
    async def api_error(_: Request, err: Exception) -> JSONResponse:
        if isinstance(err, ApiError):
            return JSONResponse({"detail": err.detail}, status_code=err.status, headers=err.headers)
        status = next(code for kind, code in STATUS.items() if isinstance(err, kind))
        return JSONResponse({"detail": str(err)}, status_code=status)

    async def invalid(_: Request, err: Exception) -> JSONResponse:
        assert isinstance(err, RequestValidationError)
        problems = [FieldError(loc=[str(p) if not isinstance(p, int) else p for p in e["loc"]], msg=e["msg"],
                               type=e["type"]) for e in err.errors()]
        detail = "; ".join(f"{'.'.join(map(str, p.loc))}: {p.msg}" for p in problems) or "invalid request"
        return JSONResponse(ErrorOut(detail=detail, errors=problems).model_dump(), status_code=422)

    async def http_error(_: Request, err: Exception) -> JSONResponse:
        assert isinstance(err, HTTPException)
        if err.status_code == 400:  # Starlette could not read the body at all
            return JSONResponse({"detail": f"the request body is not valid JSON: {err.detail}"}, status_code=422)
        headers: Any = getattr(err, "headers", None)
        return JSONResponse({"detail": str(err.detail)}, status_code=err.status_code, headers=headers)

    for kind in (ApiError, *STATUS):
        app.add_exception_handler(kind, api_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(HTTPException, http_error)


def responses(*codes: int) -> dict[int | str, dict[str, object]]:
    """OpenAPI entries for the error statuses a route can answer with."""
    text = {401: "Missing or unknown token", 403: "The token's role may not do this",
            404: "No such id for this tenant", 409: "Not allowed in the current state",
            422: "Invalid request", 503: "Temporal cannot be reached"}
    return {code: {"model": ErrorOut, "description": text[code]} for code in codes}
