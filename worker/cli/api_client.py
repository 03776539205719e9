"""The CLI as a client of Meta-Builder's API, for commands that act as a user when a token is
configured (``META_BUILDER_API_TOKEN``): the API checks the token's role as for any caller."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any

from metabuilder.service.errors import Conflict, NotFound
from metabuilder.worker.cli.exits import EXIT_BAD_INPUT, EXIT_UNAVAILABLE, CliError

if TYPE_CHECKING:
    from metabuilder.worker.settings import Settings

TIMEOUT_SECONDS = 30.0


def api_base(settings: Settings) -> str:
    return settings.api_url or f"http://{settings.api_host}:{settings.api_port}"


def call_api(settings: Settings, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """The decoded JSON answer of ``method path`` sent with the configured token; a refusal
    becomes the error its status means (the problem's ``detail`` as the message)."""
    url = api_base(settings) + path
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={
        "Authorization": f"Bearer {settings.api_token}", "Content-Type": "application/json",
        "Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as answer:  # noqa: S310 - the operator's own API
            raw = answer.read()
    except urllib.error.HTTPError as err:
        detail = _detail(err)
        if err.code == 404:
            raise NotFound(detail) from None
        if err.code == 409:
            raise Conflict(detail) from None
        code = EXIT_UNAVAILABLE if err.code >= 500 else EXIT_BAD_INPUT
        raise CliError(f"the API at {api_base(settings)} refused ({err.code}): {detail}", code) from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
        reason = getattr(err, "reason", err)
        raise CliError(f"the API at {api_base(settings)} cannot be reached: {reason} "
                       "(META_BUILDER_API_URL)", EXIT_UNAVAILABLE) from None
    return json.loads(raw) if raw else None


def _detail(err: urllib.error.HTTPError) -> str:
    try:
        problem = json.loads(err.read() or b"{}")
    except ValueError:
        return err.reason or str(err.code)
    return str(problem.get("detail") or problem.get("title") or err.reason)
