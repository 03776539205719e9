"""Privacy modes and allowlists against the local fake LLM server: under ``redacted`` it receives
no secret; under ``none`` nothing at all; an endpoint off the allowlist is never contacted
(connections counted on the server). Each refusal is on the run's timeline and in the audit log."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from metabuilder.domain.privacy import parse_privacy
from metabuilder.store import governance, replay, repository
from metabuilder.store.db import transaction
from metabuilder.worker.runtime import POOLS, build_workers, running_workers
from metabuilder.worker.settings import Settings
from tests.autofix.conftest import finish, start_autofix, with_llm
from tests.autofix.test_ladder import TEST
from tests.conftest import git
from tests.fakes.openai_server import fake_openai

GITHUB_TOKEN = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
INTERNAL = "ACME-PROJECT-4711"
SECRET_STEP = TEST.replace("echo 'FAILED", f"echo 'token={GITHUB_TOKEN} ticket {INTERNAL}'; echo 'FAILED")


def set_privacy(sessions, **fields: Any) -> None:  # type: ignore[no-untyped-def]
    with transaction(sessions) as session:
        governance.set_tenant_privacy(session, "default", parse_privacy(fields, "test"))


async def test_nothing_leaves_where_it_must_not(
        ts_env: WorkflowEnvironment, settings: Settings, sessions, user_repo: Path) -> None:  # type: ignore[no-untyped-def]
    (user_repo / "app.py").write_text(f"print('bad')\nGITHUB = '{GITHUB_TOKEN}'  # {INTERNAL}\n")
    git(user_repo, "add", "--all")
    git(user_repo, "commit", "--quiet", "-m", "a secret in the code")
    plan = f"name: t\nwrite_scope: ['*.py']\nsteps:\n{SECRET_STEP}"
    with fake_openai() as (fake, url):
        async with running_workers(build_workers(ts_env.client, with_llm(settings, url), sessions, POOLS)):
            runs: list[str] = []

            async def run() -> list[str]:
                started = await start_autofix(ts_env.client, settings, user_repo, plan,
                                              max_total_attempts=12, max_per_step_attempts=8)
                runs.append(started.run_id)
                view = await finish(started.handle)
                return [e.detail for e in view.timeline if e.strategy == "patch"]

            # redacted (the platform's default): the prompt is sent with the secret and the tenant's pattern masked.
            set_privacy(sessions, mode="redacted", redact_patterns=[r"ACME-PROJECT-\d+"])
            details = await run()
            assert len(fake.requests) == 1, details
            sent = str(fake.requests)
            assert GITHUB_TOKEN not in sent and INTERNAL not in sent and "[REDACTED]" in sent
            assert "print('bad')" in fake.requests[0]["messages"][1]["content"]  # the code itself is sent
            assert any("redacted" in d for d in details), details
            # The replay bundle keeps the prompt as it was sent: redacted.
            with transaction(sessions) as session:
                llm = [e for e in replay.entries(session, runs[-1]) if e.kind == "llm"]
                kept = replay.blobs(session, [d for e in llm for d in e.blobs.values()])
            assert len(llm) == 1 and kept
            prompt = kept[llm[0].blobs["prompt"]].decode()
            assert GITHUB_TOKEN not in prompt and INTERNAL not in prompt and "[REDACTED]" in prompt

            # none: nothing at all reaches the server.
            before = fake.connections
            set_privacy(sessions, mode="none")
            details = await run()
            assert fake.connections == before and len(fake.requests) == 1
            assert any("LLM call refused: privacy mode 'none'" in d for d in details), details

            # local: an endpoint off the tenant's LLM allowlist is never contacted; on it, it is.
            set_privacy(sessions, mode="local", llm_allowlist=["llm.internal"])
            details = await run()
            assert fake.connections == before, details
            assert any("'127.0.0.1' is not on the tenant's LLM allowlist (llm.internal)" in d for d in details)

            # open, but off the tenant's domain allowlist: refused all the same.
            set_privacy(sessions, mode="open", domain_allowlist=["*.example.com"])
            details = await run()
            assert fake.connections == before
            assert any("not on the tenant's domain allowlist (*.example.com)" in d for d in details), details

            set_privacy(sessions, mode="local", llm_allowlist=["127.0.0.1"])
            await run()
            assert fake.connections > before and len(fake.requests) == 2
            assert GITHUB_TOKEN not in str(fake.requests[-1])  # local redacts too

            # open: sent as gathered.
            set_privacy(sessions, mode="open")
            await run()
            assert GITHUB_TOKEN in str(fake.requests[-1])
    with transaction(sessions) as session:
        refused = [(a.target, a.data["reason"]) for a in repository.audit_events(
            session, tenant="default", event="egress.refused")]
    assert [t for t, _ in refused] == ["llm:127.0.0.1"] * 3
    assert "privacy mode 'none'" in refused[0][1] and "domain allowlist" in refused[2][1]


async def test_a_run_may_tighten_its_tenants_privacy_never_loosen_it(
        ts_env: WorkflowEnvironment, settings: Settings, sessions, user_repo: Path) -> None:  # type: ignore[no-untyped-def]
    from metabuilder.domain.policy import effective_settings
    from metabuilder.service import privacy as service
    from metabuilder.service.errors import BadRequest
    from metabuilder.service.runs import SubmitOptions, submit
    from tests.autofix.conftest import AUTOFIX

    plan = f"name: t\nwrite_scope: ['*.py']\nsteps:\n{TEST}"
    set_privacy(sessions, mode="redacted")
    with transaction(sessions) as session:
        with pytest.raises(BadRequest, match=r"privacy.mode: privacy mode 'open' would loosen the tenant's 'redacted'"):
            service.run_privacy(session, settings.privacy, "default", {"mode": "open"}, where="privacy")
    with fake_openai() as (fake, url):
        async with running_workers(build_workers(ts_env.client, with_llm(settings, url), sessions, POOLS)):
            async def run(name: str, **privacy: Any) -> list[str]:
                with transaction(sessions) as session:
                    service.keep_run_privacy(session, name, "default", service.run_privacy(
                        session, settings.privacy, "default", privacy, where="privacy"))
                opts = SubmitOptions.of(settings, autofix=effective_settings(AUTOFIX, None, {
                    "max_total_attempts": 12, "max_per_step_attempts": 8}), search_attributes=False)
                view = await finish((await submit(ts_env.client, plan, "plan.yaml", user_repo, opts,
                                                  run_id=name)).handle)
                return [e.detail for e in view.timeline if e.strategy == "patch"]

            details = await run(f"rp-none-{uuid.uuid4().hex[:8]}", mode="none")
            assert fake.connections == 0, details
            assert any("privacy mode 'none'" in d for d in details), details
            details = await run(f"rp-dom-{uuid.uuid4().hex[:8]}", domain_allowlist=["*.example.com"])
            assert fake.connections == 0, details
            assert any("not on the run's domain allowlist (*.example.com)" in d for d in details), details
            await run(f"rp-pat-{uuid.uuid4().hex[:8]}", redact_patterns=["good"])
            assert fake.connections > 0 and len(fake.requests) == 1
            assert "grep -q [REDACTED]" in str(fake.requests[0])  # the run's own pattern, masked
