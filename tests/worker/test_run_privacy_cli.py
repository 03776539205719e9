"""``metabuilder run --privacy-mode``: a run's own mode, kept for its calls out; only as strict as
its tenant's or stricter (a looser one is refused before anything starts, exit status 2)."""

from __future__ import annotations

import contextlib
from pathlib import Path

from temporalio.client import Client
from temporalio.service import RPCError

from metabuilder.domain.runs import workflow_id
from metabuilder.store import governance
from metabuilder.store.audit import audit_events
from metabuilder.store.db import transaction
from metabuilder.worker.settings import Settings
from tests.worker.test_cli import env, metabuilder, write_plan  # noqa: F401 - the env fixture


async def test_a_run_tightens_its_privacy_from_the_cli(  # type: ignore[no-untyped-def]
        env: dict[str, str], settings: Settings, sessions, client: Client, user_repo: Path,  # noqa: F811
        tmp_path: Path) -> None:
    plan = write_plan(tmp_path / "plan.yaml", "  - name: a\n    command: 'true'\n")
    looser = metabuilder("run", str(plan), "-w", str(user_repo), "--detach", "--privacy-mode", "open", env=env)
    assert looser.returncode == 2 and "Traceback" not in looser.stderr
    assert looser.stderr.strip() == ("metabuilder: --privacy-mode: privacy mode 'open' would loosen the tenant's "
                                     "'redacted': a run may only tighten its privacy (none, local, redacted, open: "
                                     "strictest first)")
    started = metabuilder("run", str(plan), "-w", str(user_repo), "--detach", "--privacy-mode", "none", env=env)
    assert started.returncode == 0, started.stderr
    run_id = started.stdout.strip()
    with contextlib.suppress(RPCError):
        await client.get_workflow_handle(workflow_id(run_id)).terminate("test over")
    with transaction(sessions) as session:
        kept = governance.effective(session, settings.privacy, "default", run_id)
        [event] = audit_events(session, tenant="default", run_id=run_id, event="run.started")
    assert (kept.mode.value, kept.sources["mode"]) == ("none", "run")
    assert event.after["privacy"] == {"mode": "none"}
