"""`make rc` on a scratch clone: what it refuses, and what a release candidate is made of."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GIT = ["git", "-c", "user.name=Release Test", "-c", "user.email=release@localhost", "-c", "commit.gpgsign=false"]


def _git(repo: Path, *args: str) -> str:
    return subprocess.run([*GIT, *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    """A copy of this project's files as a fresh repository with two commits and a v0.0.1 tag."""
    repo = tmp_path / "scratch"
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file():
            target = repo / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
            target.chmod(source.stat().st_mode)
    _git(repo, "init", "--quiet", "--initial-branch=main")
    _git(repo, "add", "--all")
    _git(repo, "commit", "--quiet", "-m", "First version")
    _git(repo, "tag", "v0.0.1")
    (repo / "NOTES.txt").write_text("notes\n")
    _git(repo, "add", "NOTES.txt")
    _git(repo, "commit", "--quiet", "-m", "Add release notes file")
    return repo


def _rc(repo: Path, tag: str, checks: str = "true") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RC_CHECKS": checks, "PYTHON": sys.executable,
           "GIT_AUTHOR_NAME": "Release Test", "GIT_AUTHOR_EMAIL": "release@localhost",
           "GIT_COMMITTER_NAME": "Release Test", "GIT_COMMITTER_EMAIL": "release@localhost"}
    return subprocess.run(["bash", "scripts/release_rc.sh", tag], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=300)


def test_a_release_candidate_is_versioned_changelogged_built_and_tagged(scratch: Path) -> None:
    result = _rc(scratch, "v0.2.0-rc1")
    assert result.returncode == 0, result.stdout + result.stderr

    assert 'version = "0.2.0rc1"' in (scratch / "pyproject.toml").read_text()
    changelog = (scratch / "CHANGELOG.md").read_text()
    section = changelog.split("## v0.2.0-rc1", 1)[1]
    assert "Changes since v0.0.1" in section
    assert "- Add release notes file (" in section
    assert "First version" not in section  # before the last tag

    assert _git(scratch, "log", "-1", "--format=%s") == "Release v0.2.0-rc1"
    assert _git(scratch, "cat-file", "-t", "v0.2.0-rc1") == "tag"  # annotated
    assert _git(scratch, "rev-parse", "v0.2.0-rc1^{commit}") == _git(scratch, "rev-parse", "HEAD")
    assert "Add release notes file" in _git(scratch, "tag", "-l", "--format=%(contents)", "v0.2.0-rc1")
    assert _git(scratch, "status", "--porcelain") == ""

    wheel = scratch / "dist" / "meta_builder-0.2.0rc1-py3-none-any.whl"
    assert (scratch / "dist" / "meta_builder-0.2.0rc1.tar.gz").is_file()
    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read("meta_builder-0.2.0rc1.dist-info/METADATA").decode()
    assert "Version: 0.2.0rc1" in metadata
    assert "Requires-Dist: httpx" in metadata

    again = _rc(scratch, "v0.2.0-rc1")
    assert again.returncode == 2 and "exists already" in again.stderr


@pytest.mark.parametrize("tag", ["0.2.0-rc1", "v0.2-rc1", "v0.2.0", "v0.2.0-beta1", ""])
def test_a_tag_that_is_not_a_release_candidate_is_refused(scratch: Path, tag: str) -> None:
    result = _rc(scratch, tag)
    assert result.returncode == 2
    assert "expected vX.Y.Z-rcN" in result.stderr


def test_a_dirty_tree_is_refused_and_left_alone(scratch: Path) -> None:
    (scratch / "NOTES.txt").write_text("changed\n")
    head = _git(scratch, "rev-parse", "HEAD")
    result = _rc(scratch, "v0.2.0-rc1")
    assert result.returncode == 2 and "uncommitted changes" in result.stderr
    assert _git(scratch, "rev-parse", "HEAD") == head
    assert (scratch / "NOTES.txt").read_text() == "changed\n"


def test_failing_checks_change_nothing(scratch: Path) -> None:
    head = _git(scratch, "rev-parse", "HEAD")
    result = _rc(scratch, "v0.2.0-rc1", checks="false")
    assert result.returncode == 1 and "the checks failed" in result.stderr
    assert _git(scratch, "rev-parse", "HEAD") == head
    assert _git(scratch, "tag", "-l", "v0.2.0-rc1") == ""
    assert not (scratch / "CHANGELOG.md").exists()
