"""The release and deployment files are valid, and every command they run exists."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
WORKFLOW = ROOT / ".github" / "workflows" / "release.yml"
COMPOSE = ROOT / "ops" / "compose" / "compose.yaml"


def _run(*cmd: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=120)


def _make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"(?m)^([a-z][a-z0-9_-]*):", text))


def _workflow_run_lines() -> list[str]:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    return [line.strip() for job in workflow["jobs"].values() for step in job["steps"]
            for line in str(step.get("run", "")).splitlines() if line.strip()]


@pytest.mark.parametrize("path, schema", [
    (WORKFLOW, "vendor.github-workflows"),
    (COMPOSE, "vendor.compose-spec"),
])
def test_files_match_their_published_schema(path: Path, schema: str) -> None:
    result = _run(BIN / "check-jsonschema", "--builtin-schema", schema, path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_release_workflow_runs_on_rc_tags_and_publishes() -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    on = workflow[True] if True in workflow else workflow["on"]  # YAML 1.1 reads `on` as true
    assert on == {"push": {"tags": ["v*-rc*"]}}
    assert {"test", "smoke", "build", "release"} <= set(workflow["jobs"])
    assert workflow["jobs"]["smoke"]["if"] == "vars.RUN_SMOKE == 'true'"
    lines = _workflow_run_lines()
    assert any(line.startswith("gh release create") for line in lines)
    assert any(line.startswith("docker build") for line in lines)


def test_every_make_target_and_script_the_workflow_runs_exists() -> None:
    targets = _make_targets()
    lines = _workflow_run_lines()
    made = {m for line in lines for m in re.findall(r"(?:^|[;&|]\s*)make (\w+)", line)}
    assert made and made <= targets, made - targets
    scripts = {s for line in lines for s in re.findall(r"\bscripts/[\w./-]+", line)}
    for script in scripts:
        path = ROOT / script
        assert path.is_file() and path.stat().st_mode & 0o111, f"{script} is missing or not executable"


def test_the_dockerfile_passes_hadolint() -> None:
    result = _run(BIN / "hadolint", "--no-color", "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_runs_as_an_unprivileged_user() -> None:
    users = re.findall(r"(?m)^USER\s+(\S+)", (ROOT / "Dockerfile").read_text())
    assert users and users[-1].split(":")[0] not in ("root", "0")


def test_compose_runs_real_commands_and_mounts_files_that_exist() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert {"postgresql", "temporal", "api", "worker", "prometheus", "grafana"} <= set(services)
    for name in ("api", "worker"):
        command = services[name]["command"]
        result = _run(BIN / "metabuilder", command[0], "--help")
        assert result.returncode == 0, f"compose service {name}: metabuilder {command[0]}: {result.stderr}"
    for name, service in services.items():
        if "image" in service and "build" not in service:
            assert ":" in service["image"] and not service["image"].endswith(":latest"), f"{name}: pin the image"
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (COMPOSE.parent / source).exists(), f"{name}: {source} does not exist"


def test_the_compose_prometheus_config_is_valid(tmp_path: Path) -> None:
    shutil.copy(ROOT / "ops" / "compose" / "prometheus.yml", tmp_path / "prometheus.yml")
    shutil.copy(ROOT / "ops" / "prometheus" / "alerts.yml", tmp_path / "alerts.yml")
    result = _run("promtool", "check", "config", tmp_path / "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("unit, instance", [
    ("metabuilder-worker@.service", "metabuilder-worker@cpu.service"),
    ("metabuilder-api.service", "metabuilder-api.service"),
])
def test_systemd_units_run_unprivileged_and_hardened(tmp_path: Path, unit: str, instance: str) -> None:
    units = tmp_path / "etc" / "systemd" / "system"
    units.mkdir(parents=True)
    shutil.copy(ROOT / "ops" / "systemd" / unit, units / unit)
    result = _run("systemd-analyze", "security", "--offline=true", f"--root={tmp_path}", "--no-pager", instance)
    out = result.stdout + result.stderr
    user_line = next(line for line in out.splitlines() if "User=/DynamicUser=" in line)
    assert user_line.lstrip().startswith("✓"), user_line
    exposure = float(re.search(r"Overall exposure level for \S+: ([0-9.]+)", out).group(1))
    assert exposure <= 4.0, out
