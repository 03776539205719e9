"""Auto-fix settings at the tenant and run levels: the one use case the CLI, the API and the portal call."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session, sessionmaker

from metabuilder.domain.policy import AutofixSettings, PolicyError
from metabuilder.service.errors import NotFound
from metabuilder.service.settings import change_run_overrides, change_tenant_settings, tenant_settings
from metabuilder.store import runs, tenants
from metabuilder.store.db import transaction

PLATFORM = AutofixSettings(enabled=True, max_total_attempts=6, max_per_step_attempts=3, backoff_cap_seconds=60.0)


def test_a_tenant_without_overrides_gets_the_platform(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as session:
        current = tenant_settings(session, PLATFORM, "acme", tenant="acme")
    assert current.overrides == {}
    assert current.effective.settings == PLATFORM
    assert set(current.effective.sources.values()) == {"platform"}


@pytest.mark.parametrize(("first", "then", "merge", "expected"), [
    ({"max_total_attempts": "8"}, {"enabled": "false"}, True, {"max_total_attempts": 8, "enabled": False}),
    ({"max_total_attempts": 8}, {"enabled": False}, False, {"enabled": False}),
    ({"max_total_attempts": 8}, {}, False, {}),  # a reset
])
def test_change_tenant_settings_replaces_or_merges(sessions: sessionmaker[Session], first: dict[str, object],
                                                   then: dict[str, object], merge: bool,
                                                   expected: dict[str, object]) -> None:
    with transaction(sessions) as session:
        change_tenant_settings(session, PLATFORM, "acme", first, merge=True, where="--set", tenant=None, actor="tests")
        changed = change_tenant_settings(session, PLATFORM, "acme", then, merge=merge, where="--set", tenant=None,
                                         actor="tests")
    assert changed.overrides == expected
    with transaction(sessions) as session:
        assert tenants.tenant_autofix(session, "acme") == expected
        assert tenant_settings(session, PLATFORM, "acme", tenant="acme").effective == changed.effective
    assert {k: changed.effective.sources[k] for k in expected} == dict.fromkeys(expected, "tenant")


def test_a_bad_value_names_where_and_changes_nothing(sessions: sessionmaker[Session]) -> None:
    with pytest.raises(PolicyError, match=r"^--set\.max_total_attempts='many': expected a whole number$"):
        with transaction(sessions) as session:
            change_tenant_settings(session, PLATFORM, "acme", {"max_total_attempts": "many"}, merge=True,
                                   where="--set", tenant=None, actor="tests")
    with transaction(sessions) as session:
        assert tenants.tenant_autofix(session, "acme") == {}


def test_another_tenants_settings_are_unknown(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as session:
        with pytest.raises(NotFound, match="^unknown tenant 'acme'$"):
            tenant_settings(session, PLATFORM, "acme", tenant="globex")
        with pytest.raises(NotFound, match="^unknown tenant 'acme'$"):
            change_tenant_settings(session, PLATFORM, "acme", {}, merge=False, where="body", tenant="globex",
                                   actor="tests")


def test_run_overrides_for_the_retries(seeded: sessionmaker[Session]) -> None:
    with transaction(seeded) as session:
        change_run_overrides(session, "acme-1", {"max_total_attempts": 9}, merge=False,
                             where="body", tenant="acme", actor="tests")
        run = change_run_overrides(session, "acme-1", {"enabled": False}, merge=True, where="body",
                                   tenant="acme", actor="tests")
        assert run.next_overrides == {"max_total_attempts": 9, "enabled": False}
    with transaction(seeded) as session:
        run = runs.get_run(session, "acme-1")
        assert run is not None and run.next_overrides == {"max_total_attempts": 9, "enabled": False}
        with pytest.raises(NotFound, match="^unknown run id 'acme-1'$"):
            change_run_overrides(session, "acme-1", {}, merge=False, where="body", tenant="globex", actor="tests")
