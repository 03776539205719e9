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
    "adapters": {"domain", "telemetry", "adapters"},
    "activities": {"domain", "store", "telemetry", "adapters", "activities"},
    "service": {"domain", "store", "adapters", "activities", "workflows", "service"},
    "migrations": {"store", "migrations"},
    "api": {"domain", "store", "service", "workflows", "telemetry", "api"},
    "evaluation": {"domain", "store", "adapters", "service", "evaluation"},
    "worker": {"domain", "store", "workflows", "adapters", "activities", "service", "worker", "migrations", "api",
               "telemetry", "evaluation"},
}
FORBIDDEN_IN_DOMAIN = {"temporalio", "sqlalchemy", "subprocess", "socket", "asyncio", "httpx", "fastapi"}


def _layer(module: str) -> str:
    """The layer a module belongs to: metabuilder.store.repository -> store; yaml -> yaml."""
    parts = module.split(".")
    return parts[1] if parts[0] == "metabuilder" and len(parts) > 1 else parts[0]


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {_layer(a.name) for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(_layer(node.module))
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_layer_imports(package: str) -> None:
    for path in (ROOT / package).rglob("*.py"):
        if "golden" in path.parts:  # the golden tasks' projects: users' code, not ours
            continue
        bad = (imports(path) & set(ALLOWED)) - ALLOWED[package]
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"
        if package == "domain":
            assert not imports(path) & FORBIDDEN_IN_DOMAIN, f"{path.relative_to(ROOT)} is not pure"


def test_imports_name_the_one_package() -> None:
    """The wheel installs metabuilder.<layer> only: a bare `import domain` works in the checkout
    and fails for a user, so none is written anywhere."""
    bare = []
    for path in [*ROOT.glob("*/**/*.py")]:
        if ".venv" in path.parts or "examples" in path.parts or "golden" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
                     else [])
            bare += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in ALLOWED]
    assert not bare
