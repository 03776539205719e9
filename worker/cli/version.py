"""The package's version, and the commit it was built from when that is known."""

from __future__ import annotations

import argparse
from pathlib import Path

DISTRIBUTION = "meta-builder"


def package_version() -> str:
    from importlib import metadata  # imported when asked: every `metabuilder` process builds --version

    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:  # imported from a source tree that was never installed
        return "0+unknown"


def source_commit() -> str | None:
    """The commit of the source tree this code runs from, or None (a wheel install has none)."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    import subprocess

    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
                             capture_output=True, text=True, timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def version_string() -> str:
    commit = source_commit()
    return f"{package_version()} ({commit})" if commit else package_version()


class VersionAction(argparse.Action):
    """``--version``, worked out only when asked for (it may spawn git)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        print(f"metabuilder {version_string()}")
        parser.exit()
