"""One table of what each service-layer error means, read by the API (an HTTP status) and the CLI
(an exit status)."""

from __future__ import annotations

import pytest

from metabuilder.api.errors import STATUS
from metabuilder.domain.plans import PlanError
from metabuilder.domain.policy import PolicyError
from metabuilder.service.errors import (
    KINDS,
    BadRequest,
    Conflict,
    ErrorKind,
    NotFound,
    Unavailable,
    error_types,
    kind_of,
)
from metabuilder.service.runs import RunExistsError
from metabuilder.worker.cli.exits import EXITS, known_exit


def test_every_kind_has_a_status_and_an_exit() -> None:
    assert set(STATUS) == set(EXITS) == set(ErrorKind)
    assert set(error_types().values()) == set(ErrorKind)
    assert len(error_types()) == len(KINDS)


@pytest.mark.parametrize(("err", "kind", "status", "code"), [
    (NotFound("unknown run id 'x'"), ErrorKind.NOT_FOUND, 404, 2),
    (Conflict("finished"), ErrorKind.CONFLICT, 409, 2),
    (RunExistsError("run x exists already"), ErrorKind.CONFLICT, 409, 2),
    (Unavailable("Temporal is unavailable"), ErrorKind.UNAVAILABLE, 503, 3),
    (BadRequest("not a git checkout"), ErrorKind.BAD_INPUT, 422, 2),
    (PlanError([]), ErrorKind.BAD_INPUT, 422, 2),
    (PolicyError("body.enabled='x': expected true or false"), ErrorKind.BAD_INPUT, 422, 2),
])
def test_each_error_is_one_kind_to_both_callers(err: Exception, kind: ErrorKind, status: int, code: int) -> None:
    assert kind_of(err) is kind
    assert (STATUS[kind], known_exit(err)) == (status, code)


def test_what_no_use_case_raises_on_purpose_has_no_kind() -> None:
    assert kind_of(KeyError("bug")) is None
    assert known_exit(KeyError("bug")) is None  # the CLI logs it with its traceback
