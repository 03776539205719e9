"""`metabuilder chaos stats|enable|disable` as an operator runs them: audited, refused in
production unless forced, bad input named."""

from __future__ import annotations

import json
from pathlib import Path

from metabuilder.domain.chaos import Fault, FaultType
from metabuilder.migrations import upgrade
from metabuilder.store import chaos, repository
from metabuilder.store.db import make_engine, session_factory, transaction
from metabuilder.worker.settings import Settings
from tests.worker.test_cli import metabuilder


def test_enable_stats_disable_and_the_audit_log(tmp_path: Path) -> None:
    env = {"META_BUILDER_HOME": str(tmp_path / "home"), "NO_COLOR": "1"}
    settings = Settings.from_env(env)
    upgrade(settings.database_url)
    sessions = session_factory(make_engine(settings.database_url))

    on = metabuilder("chaos", "enable", "--tenant", "acme", "--probability", "0.2", "--weights",
                     "transient_error=3,latency=1", "--for", "30m", "--user", "ops", env=env)
    assert on.returncode == 0, on.stderr
    assert "chaos on for tenant 'acme': probability 0.2, transient_error=3,latency=1" in on.stdout
    assert "until 30m from now (audited)" in on.stdout
    assert "workers inject only where META_V4_CHAOS_ENABLED=true" in on.stdout

    with transaction(sessions) as s:
        for attempt, fault in ((1, FaultType.TRANSIENT_ERROR), (2, FaultType.TRANSIENT_ERROR), (1, FaultType.LATENCY)):
            chaos.record_injection(s, tenant="acme", run_id=f"r-{fault}", step_index=0, step_name="build",
                                   attempt=attempt, fault=Fault(fault), worker="w")
        chaos.mark_recovered(s, "r-transient_error", "build", 3)
    stats = metabuilder("chaos", "stats", "--tenant", "acme", env=env)
    assert stats.returncode == 0, stats.stderr
    assert "on: tenant 'acme', every run: probability 0.2, transient_error=3,latency=1" in stats.stdout
    [transient] = [line.split() for line in stats.stdout.splitlines() if line.startswith("transient_error ")]
    assert transient[:6] == ["transient_error", "2", "2", "0", "0", "1"]
    data = json.loads(metabuilder("chaos", "stats", "--tenant", "acme", "--json", env=env).stdout)
    assert data["total"]["injections"] == 3 and data["by_type"]["latency"]["pending"] == 1
    assert data["by_type"]["transient_error"]["recovery_rate"] == 1.0
    assert [s["probability"] for s in data["scopes"]] == [0.2]

    off = metabuilder("chaos", "disable", "--tenant", "acme", "--user", "ops", env=env)
    assert off.returncode == 0 and "chaos off for tenant 'acme' (audited)" in off.stdout
    again = metabuilder("chaos", "disable", "--tenant", "acme", env=env)
    assert again.returncode == 2 and "no chaos scope for tenant 'acme'" in again.stderr
    with transaction(sessions) as s:
        events = repository.audit_events(s, tenant="acme", event="chaos.*")
        assert [(e.event, e.actor) for e in events] == [("chaos.enabled", "cli:ops"), ("chaos.disabled", "cli:ops")]
        assert events[0].data["before"] is None and events[0].data["after"]["probability"] == 0.2
        assert events[1].data["before"]["weights"] == {**dict.fromkeys(FaultType, 0.0), "transient_error": 3.0,
                                                       "latency": 1.0}


def test_refused_in_production_unless_forced_and_bad_input_is_named(tmp_path: Path) -> None:
    env = {"META_BUILDER_HOME": str(tmp_path / "home"), "META_BUILDER_ENV": "production"}
    refused = metabuilder("chaos", "enable", "--tenant", "acme", env=env)
    assert refused.returncode == 2 and "refused in the production environment" in refused.stderr
    forced = metabuilder("chaos", "enable", "--tenant", "acme", "--force", "--run", "r1", env=env)
    assert forced.returncode == 0, forced.stderr
    assert "chaos on for run r1" in forced.stdout
    conformance = metabuilder("chaos", "conformance", env=env)
    assert conformance.returncode == 2 and "refused in the production environment" in conformance.stderr
    worker = metabuilder("chaos", "stats", env={**env, "META_V4_CHAOS_ENABLED": "true"})
    assert worker.returncode == 2 and "META_V4_CHAOS_FORCE=true" in worker.stderr
    for args, message in ((["--weights", "boom=1"], "--weights: 'boom' is not a fault type"),
                          (["--probability", "1.5"], "probability=1.5: expected a probability from 0 to 1"),
                          (["--max-attempt", "0"], "max_attempt=0: expected at least 1")):
        bad = metabuilder("chaos", "enable", "--tenant", "acme", "--force", *args, env=env)
        assert bad.returncode == 2 and message in bad.stderr, bad.stderr
        assert "Traceback" not in bad.stderr
