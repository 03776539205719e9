"""An OpenAPI-driven fuzz run (schemathesis) over the live API as a tenant's owner: whatever the
input, no 5xx, every status documented, every body matching its schema, and invalid input
(negative cases) refused."""

from __future__ import annotations

import hypothesis
import hypothesis.errors
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy.orm import Session, sessionmaker

from metabuilder.domain.access import Role
from tests.api.conftest import LiveApi, make_tenant

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES = 15
"""Per operation and mode: about 1,100 requests in all, some 30 s on two quiet cores (80 to 100 s
on a loaded machine)."""


@pytest.mark.timeout(300)  # a bound for a loaded machine (see EXAMPLES), not a speed asserted
def test_api_conforms_to_its_schema(live_api: LiveApi, api_sessions: sessionmaker[Session]) -> None:
    _, tokens = make_tenant(api_sessions)
    headers = {"Authorization": f"Bearer {tokens[Role.OWNER]}"}
    schema = schemathesis.openapi.from_url(f"{live_api.url}/openapi.json")
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 30
    for operation in operations:
        for mode, checks in ((GenerationMode.POSITIVE, CHECKS),
                             (GenerationMode.NEGATIVE, [*CHECKS, negative_data_rejection])):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck), phases=[hypothesis.Phase.generate])
            def fuzz(case: schemathesis.Case) -> None:
                case.call_and_validate(headers=headers, checks=checks)  # noqa: B023

            try:
                try:
                    fuzz()
                except hypothesis.errors.FlakyFailure as first:
                    # A failure that did not happen again on the same input: on a loaded machine, a
                    # slow answer. The operation runs once more; failing again, in any way, counts.
                    print(f"{operation.label} ({mode.value}): not reproduced, run again: {first}")
                    fuzz()
            except hypothesis.errors.Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE  # an operation without inputs has no invalid ones
            except (Exception, BaseExceptionGroup) as err:  # noqa: BLE001 - report every operation's failure
                failures.append(f"{operation.label} ({mode.value}): {err}")
    assert not failures, "\n\n".join(failures)
