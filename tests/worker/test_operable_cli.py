"""The CLI as an operator meets it: its version, clear errors, and an external Temporal server
reached through the SDK's environment configuration."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import Client

from metabuilder.worker.devserver import DevServer, free_port
from metabuilder.workflows import search_attributes
from tests.worker.test_cli import metabuilder


def test_version_names_the_package_version(tmp_path: Path) -> None:
    res = metabuilder("--version", env={"META_BUILDER_HOME": str(tmp_path)})
    assert res.returncode == 0, res.stderr
    assert re.fullmatch(r"metabuilder \d+\.\d+\.\d+\S*( \([0-9a-f]{12}\))?\n", res.stdout), res.stdout


@pytest.mark.parametrize("args, message", [
    (("tenants", "create"), "a tenant id is required"),
    (("tenants", "create", "Acme Corp"), "use 1 to 64 lowercase letters"),
    (("tenants", "create", "x" * 65), "use 1 to 64 lowercase letters"),
])
def test_a_bad_tenant_id_is_refused_by_name(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    res = metabuilder(*args, env={"META_BUILDER_HOME": str(tmp_path)})
    assert res.returncode == 2, res.stdout + res.stderr
    assert message in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize("command", [("status", "some-run"), ("tenants", "list"), ("approvals", "list")])
def test_a_database_that_is_down_is_exit_3_with_a_message(tmp_path: Path, command: tuple[str, ...]) -> None:
    env = {"META_BUILDER_HOME": str(tmp_path), "DATABASE_URL": "postgresql+psycopg2://postgres:pw@127.0.0.1:1/none"}
    res = metabuilder(*command, env=env)
    assert res.returncode == 3, res.stdout + res.stderr
    assert "cannot reach the database postgresql+psycopg2://postgres:***@127.0.0.1:1/none" in res.stderr
    assert "Traceback" not in res.stderr and "pw@" not in res.stderr


class BareDevServer(DevServer):
    """A Temporal server that, like a new cluster, has none of Meta-Builder's search attributes."""

    def command(self) -> list[str]:
        cmd = super().command()
        while "--search-attribute" in cmd:
            at = cmd.index("--search-attribute")
            del cmd[at:at + 2]
        return cmd


async def _our_attributes(address: str) -> set[str]:
    client = await Client.connect(address)
    listed = await client.operator_service.list_search_attributes(ListSearchAttributesRequest(namespace="default"))
    return {key.name for key in search_attributes.ALL} & set(listed.custom_attributes)


def test_an_external_server_is_set_up_once_by_an_admin_not_on_connect(tmp_path: Path) -> None:
    server = BareDevServer(tmp_path / "temporal", port=free_port(), ui=False)
    server.start(detach=False)
    try:
        asyncio.run(server.wait_ready())
        profile = tmp_path / "temporal.toml"
        profile.write_text(f'[profile.prod]\naddress = "{server.address}"\nnamespace = "default"\n')
        env = {"META_BUILDER_HOME": str(tmp_path / "home"), "TEMPORAL_CONFIG_FILE": str(profile),
               "TEMPORAL_PROFILE": "prod"}

        plan = tmp_path / "plan.yaml"
        plan.write_text("name: p\nsteps:\n  - name: s\n    command: 'true'\n")
        metabuilder("run", str(plan), "--workspace", str(tmp_path), "--detach", env=env)  # connects, then refuses
        assert asyncio.run(_our_attributes(server.address)) == set()  # connecting registered nothing

        res = metabuilder("temporal", "setup", env=env)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "registered in namespace 'default'" in res.stdout
        assert asyncio.run(_our_attributes(server.address)) == {k.name for k in search_attributes.ALL}
    finally:
        server.stop()


@pytest.mark.parametrize("setup, message", [
    ('[profile.prod]\naddress = "127.0.0.1:1"\n', "Profile 'staging' not found"),  # not in the file
    ("[profile.default\n", "temporal.toml"),  # not TOML
])
def test_a_bad_temporal_configuration_is_named(tmp_path: Path, setup: str, message: str) -> None:
    profile = tmp_path / "temporal.toml"
    profile.write_text(setup)
    env = {"META_BUILDER_HOME": str(tmp_path / "home"), "TEMPORAL_CONFIG_FILE": str(profile),
           "TEMPORAL_PROFILE": "staging"}
    res = metabuilder("temporal", "setup", env=env)
    assert res.returncode == 2, res.stdout + res.stderr
    assert message in res.stderr and "Traceback" not in res.stderr
