"""The operator docs are true to the code: every setting in docs/SETTINGS.md, every table in docs/operations.md."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "SETTINGS.md"
PACKAGES = ("domain", "store", "workflows", "adapters", "activities", "service", "worker", "api", "telemetry",
            "migrations")
PREFIXES = (r"(?:META_BUILDER_|META_V\d_|FEATURE_META_|TEMPORAL_|DATABASE_URL\b|RUN_SMOKE\b|SMOKE_|RC_CHECKS\b"
            r"|STAGING_|METABUILDER\b)")
NAME = re.compile(rf"\b({PREFIXES}[A-Z0-9_]*)")

NOT_SETTINGS = {
    "domain/sandbox.py",  # names worker-only variables in order to strip them from steps' environments
}
SDK_READS = {
    # connect() hands the environment to temporalio.envconfig, which reads these itself
    "TEMPORAL_API_KEY", "TEMPORAL_TLS", "TEMPORAL_TLS_CLIENT_CERT_PATH", "TEMPORAL_TLS_CLIENT_KEY_PATH",
    "TEMPORAL_TLS_CLIENT_CERT_DATA", "TEMPORAL_TLS_CLIENT_KEY_DATA", "TEMPORAL_TLS_SERVER_CA_CERT_PATH",
    "TEMPORAL_TLS_SERVER_CA_CERT_DATA", "TEMPORAL_TLS_SERVER_NAME", "TEMPORAL_TLS_DISABLE_HOST_VERIFICATION",
    "TEMPORAL_GRPC_META_",
}


def _code_variables() -> set[str]:
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")
             if p.relative_to(ROOT).as_posix() not in NOT_SETTINGS and "examples" not in p.parts]
    files += [*(ROOT / "tests" / "smoke").glob("*.py"), *(ROOT / "scripts").glob("*.sh"), ROOT / "Makefile"]
    found: set[str] = set()
    for path in files:
        found |= {name for name in NAME.findall(path.read_text()) if not name.endswith("_")}
    return found


def _documented_variables() -> set[str]:
    rows = [line for line in DOC.read_text().splitlines() if line.startswith("| `")]
    return {name.rstrip("*") for row in rows for name in re.findall(r"`([A-Z][A-Z0-9_]*\*?)`", row.split("|")[1])}


def test_every_variable_the_code_reads_is_documented() -> None:
    missing = _code_variables() - _documented_variables()
    assert not missing, f"read by the code but not in docs/SETTINGS.md: {sorted(missing)}"


def test_every_documented_variable_is_read_by_the_code() -> None:
    stale = _documented_variables() - _code_variables() - SDK_READS
    assert not stale, f"in docs/SETTINGS.md but read by nothing: {sorted(stale)}"


def test_the_operations_guide_lists_every_table() -> None:
    from metabuilder.store.models import Base

    section = (ROOT / "docs" / "operations.md").read_text().split("## Database", 1)[1]
    listed = set(re.findall(r"`([a-z0-9_]+)`", "\n".join(line.split("|")[1] for line in section.splitlines()
                                                          if line.startswith("| `"))))
    assert listed == set(Base.metadata.tables)
