"""Errors as JSON with a clear message, mapped to status codes in one place."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from domain.plans import PlanError
from domain.policy import PolicyError
from service.errors import BadRequest, Conflict, NotFound, Unavailable


class ErrorOut(BaseModel):
    detail: str
    """What is wrong, naming the field, the id or the state that makes it so."""


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

    for kind in (ApiError, *STATUS):
        app.add_exception_handler(kind, api_error)


def responses(*codes: int) -> dict[int | str, dict[str, object]]:
    """OpenAPI entries for the error statuses a route can answer with."""
    text = {401: "Missing or unknown token", 403: "The token's role may not do this",
            404: "No such id for this tenant", 409: "Not allowed in the current state",
            422: "Invalid request", 503: "Temporal cannot be reached"}
    return {code: {"model": ErrorOut, "description": text[code]} for code in codes}
