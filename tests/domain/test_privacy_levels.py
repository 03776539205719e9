"""Platform -> tenant -> run: a run's own privacy settings only ever tighten its tenant's."""

from __future__ import annotations

import pytest

from metabuilder.domain.privacy import (
    PLATFORM_DEFAULT,
    Privacy,
    PrivacyMode,
    effective_privacy,
    egress_refusal,
    llm_refusal,
    run_loosening,
    with_run,
)

M = PrivacyMode


@pytest.mark.parametrize(("tenant", "run", "refused"), [
    (M.REDACTED, M.OPEN, True), (M.LOCAL, M.REDACTED, True), (M.NONE, M.LOCAL, True),
    (M.OPEN, M.NONE, False), (M.REDACTED, M.LOCAL, False), (M.REDACTED, M.REDACTED, False),
])
def test_a_run_may_not_loosen_the_mode(tenant: PrivacyMode, run: PrivacyMode, refused: bool) -> None:
    base = effective_privacy(PLATFORM_DEFAULT, Privacy(mode=tenant))
    why = run_loosening(base, Privacy(mode=run))
    assert (why is not None) == refused
    if refused:
        assert why and f"{run.value!r} would loosen the tenant's {tenant.value!r}" in why
    else:
        got = with_run(base, Privacy(mode=run))
        assert got.mode == min(tenant, run, key=[M.NONE, M.LOCAL, M.REDACTED, M.OPEN].index)
        assert got.sources["mode"] == ("run" if run != tenant else "tenant")


def test_a_runs_lists_narrow_and_its_patterns_add_up() -> None:
    base = effective_privacy(PLATFORM_DEFAULT, Privacy(mode=M.LOCAL, llm_allowlist=("llm.internal", "*.corp"),
                                                       domain_allowlist=("*.corp", "llm.internal"),
                                                       redact_patterns=("ACME-\\d+",)))
    run = with_run(base, Privacy(llm_allowlist=("a.corp", "elsewhere.example"), domain_allowlist=("a.corp",),
                                 redact_patterns=("TICKET-\\d+",)))
    assert llm_refusal(run, "https://a.corp/v1") is None
    assert "not on the run's LLM allowlist" in (llm_refusal(run, "https://llm.internal/v1") or "")
    assert "not on the tenant's LLM allowlist" in (llm_refusal(run, "https://elsewhere.example/v1") or "")
    assert "not on the run's domain allowlist (a.corp)" in (egress_refusal(run, "http://b.corp/hook") or "")
    assert run.redact_patterns == ("ACME-\\d+", "TICKET-\\d+")
    assert with_run(base, None) == base == with_run(base, Privacy())
