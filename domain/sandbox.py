"""Rules for what a step's process may see."""

from __future__ import annotations

import re
from collections.abc import Mapping

_SECRET_NAME = re.compile(
    r"(TOKEN|SECRET|PASSWORD|PASSWD|PRIVATE|CREDENTIAL|API_?KEY|ACCESS_?KEY|AUTH)", re.IGNORECASE
)
_WORKER_ONLY = {"DATABASE_URL", "TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE", "TEMPORAL_API_KEY"}


def is_secret_name(name: str) -> bool:
    return name in _WORKER_ONLY or name.startswith("META_BUILDER_") or bool(_SECRET_NAME.search(name))


def step_environment(worker_env: Mapping[str, str], step_env: Mapping[str, str],
                     run_vars: Mapping[str, str]) -> dict[str, str]:
    """The environment of a step's command: the worker's, minus its secrets and its own
    settings, plus the step's declared variables and the run's ``METABUILDER_*`` facts."""
    env = {k: v for k, v in worker_env.items() if not is_secret_name(k)}
    env.update(step_env)
    env.update(run_vars)
    return env
