"""``metabuilder canary``'s refusals, and the worker settings of the canary."""

from __future__ import annotations

import uuid

import pytest

from metabuilder.domain.canary import build_id_of
from metabuilder.worker.cli.version import package_version, source_commit
from metabuilder.worker.runtime import deployment_version
from metabuilder.worker.settings import Settings, SettingsError
from tests.worker.test_cli import env, metabuilder  # noqa: F401 - env is a fixture


def test_worker_versioning_settings() -> None:
    assert deployment_version(Settings.from_env({})) is None  # off by default: unversioned workers
    on = Settings.from_env({"META_BUILDER_WORKER_VERSIONING": "true"})
    version = deployment_version(on)
    assert version is not None and version.deployment_name == "meta-builder"
    assert version.build_id == build_id_of(package_version(), source_commit())
    named = deployment_version(Settings.from_env({"META_BUILDER_WORKER_VERSIONING": "1",
                                                  "META_BUILDER_DEPLOYMENT_NAME": "mb-eu",
                                                  "META_BUILDER_BUILD_ID": "2.0.0+gabc"}))
    assert named is not None and named.to_canonical_string() == "mb-eu.2.0.0+gabc"
    settings = Settings.from_env({"FEATURE_META_V4_CANARY_PERCENT": "25", "META_V4_CANARY_AUTO_ACT": "on"})
    assert (settings.v4.canary.percent, settings.v4.canary.auto_act) == (25, True)


@pytest.mark.parametrize(("env_", "message"), [
    ({"META_BUILDER_DEPLOYMENT_NAME": "meta.builder"}, "META_BUILDER_DEPLOYMENT_NAME"),
    ({"META_BUILDER_BUILD_ID": "1 2"}, "META_BUILDER_BUILD_ID"),
    ({"META_BUILDER_WORKER_VERSIONING": "sometimes"}, "META_BUILDER_WORKER_VERSIONING"),
    ({"FEATURE_META_V4_CANARY_PERCENT": "150"}, "FEATURE_META_V4_CANARY_PERCENT"),
    ({"META_V4_CANARY_DRILL_FAIL_PATCH": "true", "META_BUILDER_ENV": "production"}, "refused in the production"),
])
def test_bad_canary_settings_stop_the_start_naming_the_variable(env_: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env_)


def test_refusals_are_one_line_with_exit_status_2(env: dict[str, str]) -> None:  # noqa: F811
    deployment = {"META_BUILDER_DEPLOYMENT_NAME": f"mb-cli-{uuid.uuid4().hex[:8]}"}
    no_id = metabuilder("canary", "ramp", env={**env, **deployment})
    assert no_id.returncode == 2 and no_id.stderr.strip() == "metabuilder: canary ramp: name the candidate's build id"
    no_share = metabuilder("canary", "ramp", "2.0", env={**env, **deployment})
    assert no_share.returncode == 2 and "pass --percent from 1 to 100" in no_share.stderr
    elsewhere = metabuilder("canary", "ramp", "2.0", "--percent", "10",
                            env={**env, **deployment, "META_BUILDER_WORKER_VERSIONING": "true",
                                 "META_BUILDER_BUILD_ID": "1.0"})
    assert elsewhere.returncode == 2
    assert "replays on this installation's code, which is 1.0, not 2.0" in elsewhere.stderr
    nothing = metabuilder("canary", "rollback", env={**env, **deployment})
    assert nothing.returncode == 2 and "nothing ramps" in nothing.stderr and "Traceback" not in nothing.stderr
    no_current = metabuilder("canary", "ramp", "2.0", "--percent", "10", "--no-gate", env={**env, **deployment})
    assert no_current.returncode == 2 and "has no current version" in no_current.stderr
    unknown = metabuilder("canary", "promote", "3.0", env={**env, **deployment})
    assert unknown.returncode == 2 and "setting " in unknown.stderr and "Temporal refused it" in unknown.stderr, \
        unknown.stderr
    status = metabuilder("canary", "status", env={**env, **deployment})
    assert status.returncode == 0 and "current (none: unversioned workers), nothing ramps" in status.stdout
