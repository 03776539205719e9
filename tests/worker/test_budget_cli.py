"""``metabuilder budget show|set``: the tenant and run levels from the command line, and bad input
refused with one line and a non-zero exit."""

from __future__ import annotations

import json
from pathlib import Path

from tests.worker.test_cli import metabuilder


def test_set_and_show_a_tenant_budget_and_refuse_bad_input(tmp_path: Path) -> None:
    env = {"META_BUILDER_HOME": str(tmp_path / "home"), "META_V4_DEFAULT_COST_BUDGET_USD": "3"}
    done = metabuilder("budget", "set", "--tenant", "acme", "--set", "cost_usd_per_day=5",
                       "--set", "run.attempts=12", "--set", "concurrent_runs=2", env=env)
    assert done.returncode == 0, done.stderr
    assert "cost_usd       limit          5" in done.stdout
    assert "its runs' defaults: time_seconds no limit, cost_usd 3, attempts 12" in done.stdout
    shown = json.loads(metabuilder("budget", "show", "--tenant", "acme", "--json", env=env).stdout)
    assert shown["settings"] == {"cost_usd_per_day": 5, "run": {"attempts": 12}, "concurrent_runs": 2}
    assert shown["run_defaults"] == {"time_seconds": None, "cost_usd": 3.0, "attempts": 12}
    merged = metabuilder("budget", "set", "--tenant", "acme", "--set", "tokens_per_month=1000000", "--json", env=env)
    assert json.loads(merged.stdout)["settings"]["cost_usd_per_day"] == 5  # set merges unless --reset
    for args, message in ((("--set", "dollars=1"), "unknown tenant budget key(s) 'dollars'"),
                          (("--set", "cost_usd_per_day=lots"), "'lots' is not a number"),
                          (("--set", "concurrent_runs=0"), "concurrent_runs: expected a whole number")):
        bad = metabuilder("budget", "set", "--tenant", "acme", *args, env=env)
        assert bad.returncode != 0 and message in bad.stderr and "Traceback" not in bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    missing = metabuilder("budget", "show", "--run", "no-such-run", env=env)
    assert missing.returncode != 0 and "unknown run id 'no-such-run'" in missing.stderr
    neither = metabuilder("budget", "show", env=env)
    assert neither.returncode != 0 and "give exactly one of --run RUN_ID and --tenant TENANT" in neither.stderr
