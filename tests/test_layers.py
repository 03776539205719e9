"""Imports point inward: domain is pure; nothing imports worker, and only worker (the process
entry points, which serve the API) imports api."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
ALLOWED = {
    "domain": {"domain"},
    "store": {"domain", "store"},
    "telemetry": {"domain", "telemetry"},
    "workflows": {"domain", "workflows"},
    "activities": {"domain", "store", "telemetry", "activities"},
    "service": {"domain", "store", "activities", "workflows", "service"},
    "migrations": {"store", "migrations"},
    "api": {"domain", "store", "service", "workflows", "telemetry", "api"},
    "worker": {"domain", "store", "workflows", "activities", "service", "worker", "migrations", "api",
               "telemetry"},
}
FORBIDDEN_IN_DOMAIN = {"temporalio", "sqlalchemy", "subprocess", "socket", "asyncio", "httpx", "fastapi"}


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_layer_imports(package: str) -> None:
    for path in (ROOT / package).rglob("*.py"):
        bad = (imports(path) & set(ALLOWED)) - ALLOWED[package]
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"
        if package == "domain":
            assert not imports(path) & FORBIDDEN_IN_DOMAIN, f"{path.relative_to(ROOT)} is not pure"
