"""Workspace snapshots and checkouts with real git."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from metabuilder.adapters.git import NotAGitRepository, WorkspaceCache, ensure_shared_repo, publish, snapshot
from tests.conftest import git


async def test_snapshot_of_a_clean_tree_is_head(user_repo: Path) -> None:
    top, commit = await snapshot(user_repo)
    assert top == user_repo and commit == git(user_repo, "rev-parse", "HEAD")


async def test_snapshot_takes_uncommitted_and_untracked_files_and_leaves_the_repo_alone(user_repo: Path) -> None:
    (user_repo / "app.py").write_text("print('changed')\n")
    (user_repo / "new.txt").write_text("new\n")
    (user_repo / ".gitignore").write_text("*.log\n")
    (user_repo / "debug.log").write_text("ignored\n")
    git(user_repo, "add", "app.py")  # something staged, too
    before = (git(user_repo, "rev-parse", "HEAD"), git(user_repo, "status", "--porcelain"),
              (Path(user_repo) / ".git" / "index").read_bytes())
    _, commit = await snapshot(user_repo / "")
    assert git(user_repo, "show", f"{commit}:app.py") == "print('changed')"
    assert git(user_repo, "show", f"{commit}:new.txt") == "new"
    files = git(user_repo, "ls-tree", "-r", "--name-only", commit).splitlines()
    assert "debug.log" not in files
    after = (git(user_repo, "rev-parse", "HEAD"), git(user_repo, "status", "--porcelain"),
             (Path(user_repo) / ".git" / "index").read_bytes())
    assert after == before


async def test_snapshot_of_a_repo_without_commits(tmp_path: Path) -> None:
    git(tmp_path, "init", "--quiet")
    (tmp_path / "a.txt").write_text("a\n")
    _, commit = await snapshot(tmp_path)
    assert git(tmp_path, "show", f"{commit}:a.txt") == "a"


async def test_not_a_repository_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(NotAGitRepository, match="is not inside a git repository"):
        await snapshot(tmp_path)
    with pytest.raises(NotAGitRepository, match="does not exist"):
        await snapshot(tmp_path / "missing")


async def test_checkout_commit_and_push_through_the_shared_repo(user_repo: Path, tmp_path: Path) -> None:
    shared = str(tmp_path / "shared.git")
    _, base = await snapshot(user_repo)
    await publish(user_repo, base, shared, "metabuilder/runs/r1")
    cache = WorkspaceCache(tmp_path / "cache")
    async with cache.lock("r1"):
        path = await cache.checkout(shared, "r1", "metabuilder/runs/r1", base)
        (path / "out.txt").write_text("x\n")
        head, changed = await cache.commit_changes("r1", "step one")
        assert changed == ["out.txt"] and head != base
        await cache.push("r1", shared, head, ["refs/heads/metabuilder/runs/r1"])
    assert git(Path(shared), "rev-parse", "metabuilder/runs/r1") == head
    # Another worker (its own cache) starts the next step from that commit.
    other = WorkspaceCache(tmp_path / "cache2")
    async with other.lock("r1"):
        path2 = await other.checkout(shared, "r1", "metabuilder/runs/r1", head)
        assert (path2 / "out.txt").read_text() == "x\n"
        # Going back to the base commit removes the step's file.
        path2 = await other.checkout(shared, "r1", "metabuilder/runs/r1", base)
        assert not (path2 / "out.txt").exists()


async def test_two_workers_sharing_a_cache_check_out_concurrent_runs(user_repo: Path, tmp_path: Path) -> None:
    """Two workers of one machine share the cache (as the docs allow). A fetch into the shared
    mirror reads every worktree's HEAD, and one half-made by the other worker's `git worktree add`
    failed it ("bad object worktrees/<id>/HEAD", "failed to read worktrees/<id>/commondir"); two
    first checkouts at once raced on `git init` of the mirror."""
    shared = str(tmp_path / "shared.git")
    commits = {}
    for i in range(40):
        (user_repo / "run.txt").write_text(f"{i}\n")
        _, commits[f"r{i}"] = await snapshot(user_repo)  # a commit of its own: its checkout fetches
        await publish(user_repo, commits[f"r{i}"], shared, f"metabuilder/runs/r{i}")

    async def worker(cache: WorkspaceCache, runs: list[str], commit_of: str | None) -> list[str]:
        texts = []
        for run in runs:
            async with cache.lock(run):
                commit = commits[commit_of or run]
                path = await cache.checkout(shared, run, f"metabuilder/runs/{commit_of or run}", commit)
                texts.append((path / "run.txt").read_text())
        return texts

    fetching = worker(WorkspaceCache(tmp_path / "cache"), list(commits), None)
    adding = worker(WorkspaceCache(tmp_path / "cache"), [f"o{i}" for i in range(40)], "r0")
    fetched, added = await asyncio.gather(fetching, adding)
    assert fetched == [f"{i}\n" for i in range(40)] and added == ["0\n"] * 40


async def test_branches_of_a_shared_repository_given_as_a_url(user_repo: Path, tmp_path: Path) -> None:
    """A shared repository the client reaches by URL only (a retry's branch, a refused run's cleanup)."""
    from metabuilder.adapters.git import GitError, branch_at, branch_exists, delete_branch

    shared = tmp_path / "shared.git"
    git(tmp_path, "init", "--quiet", "--bare", str(shared))
    url = f"file://{shared}"
    _, commit = await snapshot(user_repo)
    await publish(user_repo, commit, url, "metabuilder/run-1")
    await branch_at(url, "metabuilder/run-2", commit)
    assert git(shared, "rev-parse", "refs/heads/metabuilder/run-2") == commit
    (user_repo / "other.txt").write_text("other\n")
    _, other = await snapshot(user_repo)
    await publish(user_repo, other, url, "metabuilder/run-3")
    with pytest.raises(GitError):
        await branch_at(url, "metabuilder/run-2", other)  # it exists: never moved
    assert git(shared, "rev-parse", "refs/heads/metabuilder/run-2") == commit
    with pytest.raises(GitError):
        await delete_branch(url, "metabuilder/run-2", "0" * 39 + "1")  # not at that commit: kept
    await delete_branch(url, "metabuilder/run-2", commit)
    assert not await branch_exists(url, "metabuilder/run-2")
    assert await branch_exists(url, "metabuilder/run-1")


async def test_first_submissions_at_once_make_one_shared_repository(tmp_path: Path) -> None:
    """Many at once (as the eval's concurrent tasks did) found it missing; one made it, none failed."""
    for round_ in range(10):
        repo = tmp_path / f"home-{round_}" / "workspaces.git"
        await asyncio.gather(*(ensure_shared_repo(str(repo)) for _ in range(16)))
        assert git(repo, "rev-parse", "--is-bare-repository") == "true"
        assert sorted(p.name for p in repo.parent.iterdir()) == ["workspaces.git"]  # no leftovers beside it
        await ensure_shared_repo(str(repo))  # and again once it exists: nothing to do
