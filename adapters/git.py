"""Workspaces through git.

A run's workspace is a branch of a *shared repository* that every worker can reach
(a path on shared storage, or any git URL). The client snapshots the user's working
tree into a commit without touching the user's branch, index or files, and pushes it
to the run branch. Each step starts from a commit id carried in the workflow; a step
that changes files commits them and pushes the commit to the run branch.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

BOT_CONFIG = ("-c", "user.name=Meta-Builder", "-c", "user.email=metabuilder@localhost",
              "-c", "commit.gpgsign=false", "-c", "core.hooksPath=/dev/null")


class GitError(RuntimeError):
    """A git command failed; the message names the command and what git said."""


class NotAGitRepository(ValueError):
    """The workspace given by the user is not inside a git repository."""


async def git(*args: str, cwd: Path | str | None = None, env: dict[str, str] | None = None,
              check: bool = True) -> str:
    """Run git and return its stdout; ``GitError`` with stderr when it fails and ``check``."""
    full_env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", **(env or {})}
    proc = await asyncio.create_subprocess_exec(
        "git", *args, cwd=cwd, env=full_env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    if check and proc.returncode != 0:
        shown = " ".join(a for a in args if not a.startswith("user.") and a != "-c")
        raise GitError(f"git {shown} (in {cwd}) failed with {proc.returncode}: {err.decode(errors='replace').strip()}")
    return out.decode(errors="replace")


async def ensure_shared_repo(repo_url: str) -> None:
    """Create the shared repository if it is a local path that does not exist yet."""
    if _is_remote(repo_url):
        return  # it must exist already
    path = Path(repo_url)
    if (path / "HEAD").exists():
        return
    path.mkdir(parents=True, exist_ok=True)
    await git("init", "--quiet", "--bare", str(path))


async def snapshot(workspace: Path) -> tuple[Path, str]:
    """Commit the working tree of ``workspace`` as it is, including uncommitted and untracked
    (not ignored) files, without changing the user's branch, index or files.

    Returns the repository top level and the commit id (HEAD itself when the tree is clean).
    """
    if not workspace.is_dir():
        raise NotAGitRepository(f"workspace {workspace} does not exist or is not a directory")
    try:
        top = Path((await git("rev-parse", "--show-toplevel", cwd=workspace)).strip())
    except GitError:
        raise NotAGitRepository(
            f"workspace {workspace} is not inside a git repository (run `git init` there first)"
        ) from None
    head = (await git("rev-parse", "--verify", "--quiet", "HEAD^{commit}", cwd=top, check=False)).strip()
    user_index = Path((await git("rev-parse", "--path-format=absolute", "--git-path", "index", cwd=top)).strip())
    with tempfile.TemporaryDirectory(prefix="metabuilder-index-") as tmp:
        index = Path(tmp) / "index"
        env = {"GIT_INDEX_FILE": str(index)}
        if user_index.exists():
            # copy2 keeps the index mtime, which git needs to spot files changed in the same second
            # as the index was written ("racily clean"); the stat cache spares rehashing the rest.
            shutil.copy2(user_index, index)
        elif head:
            await git("read-tree", "HEAD", cwd=top, env=env)  # keeps tracked files that .gitignore matches
        await git("add", "--all", cwd=top, env=env)
        tree = (await git("write-tree", cwd=top, env=env)).strip()
    if head and tree == (await git("rev-parse", "HEAD^{tree}", cwd=top)).strip():
        return top, head
    parents = ["-p", head] if head else []
    commit = (await git(*BOT_CONFIG, "commit-tree", tree, *parents, "-m",
                        "metabuilder: snapshot of the working tree", cwd=top)).strip()
    return top, commit


async def publish(top: Path, commit: str, repo_url: str, branch: str) -> None:
    """Push ``commit`` of the user's repository to ``branch`` of the shared repository, a new
    branch: ``GitError`` if it exists already (another run's, which must stay as it is).

    Pushing to a URL (not a named remote) changes nothing in the user's repository.
    """
    await ensure_shared_repo(repo_url)
    # An empty expected value: the push is refused if the branch exists, atomically.
    await git("push", "--quiet", f"--force-with-lease=refs/heads/{branch}:", repo_url,
              f"{commit}:refs/heads/{branch}", cwd=top)


async def branch_exists(repo_url: str, branch: str) -> bool:
    if not _is_remote(repo_url) and not (Path(repo_url) / "HEAD").exists():
        return False  # not created yet
    return bool((await git("ls-remote", "--heads", repo_url, f"refs/heads/{branch}")).strip())


def _is_remote(repo_url: str) -> bool:
    return "://" in repo_url or ":" in repo_url.split("/")[0]


async def delete_branch(repo_url: str, branch: str, commit: str) -> None:
    """Delete ``branch`` of the shared repository if it is still at ``commit``."""
    await git("update-ref", "-d", f"refs/heads/{branch}", commit, cwd=repo_url)


async def branch_at(repo_url: str, branch: str, commit: str) -> None:
    """Create ``branch`` of the shared repository at ``commit`` (already in it), e.g. for a retry."""
    await git("update-ref", f"refs/heads/{branch}", commit, "0" * 40, cwd=repo_url)


@dataclass
class _Checkout:
    path: Path
    commit: str | None
    """Commit the checkout is known to be at with a clean tree, or None when unknown."""
    lock: asyncio.Lock


class WorkspaceCache:
    """Checkouts of run branches on one worker, kept between steps of the same run.

    One local repository per shared repository holds the objects; each run gets a
    worktree of it. When the next step of a run starts from the commit this worker
    left the worktree at, nothing is fetched or checked out again.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._checkouts: dict[str, _Checkout] = {}

    def _mirror(self, repo_url: str) -> Path:
        return self.root / "repos" / hashlib.sha1(repo_url.encode()).hexdigest()[:16]

    def _entry(self, run_id: str) -> _Checkout:
        if run_id not in self._checkouts:
            self._checkouts[run_id] = _Checkout(self.root / "runs" / run_id, None, asyncio.Lock())
        return self._checkouts[run_id]

    @contextlib.asynccontextmanager
    async def lock(self, run_id: str) -> AsyncIterator[Path]:
        """Exclusive use of a run's checkout, within this process (asyncio) and across the
        processes sharing this cache (``flock``, released by the kernel if a worker dies).

        Yields the path of a file where the holder records its step's process group, so the
        next holder can kill what a dead worker left running in the checkout.
        """
        entry = self._entry(run_id)
        async with entry.lock, _flock(entry.path.parent / f"{run_id}.lock"):
            pgid_file = entry.path.parent / f"{run_id}.pgid"
            _kill_leftover(pgid_file)
            yield pgid_file

    async def checkout(self, repo_url: str, run_id: str, branch: str, commit: str) -> Path:
        """A clean worktree of ``commit``; ignored files of earlier steps on this worker stay
        (they are a local cache, never carried to other workers)."""
        entry = self._entry(run_id)
        if entry.commit == commit and entry.path.exists():
            return entry.path
        entry.commit = None
        mirror = self._mirror(repo_url)
        mirror.parent.mkdir(parents=True, exist_ok=True)
        # The workers of one machine may share the mirror: a fetch reads every worktree's HEAD and
        # fails on one that another worker's `worktree add` has half made; `init` races with itself.
        async with _flock(mirror.parent / f"{mirror.name}.lock"):
            if not (mirror / "HEAD").exists():
                mirror.mkdir(parents=True, exist_ok=True)
                await git("init", "--quiet", "--bare", str(mirror))
            if not await self._has_commit(mirror, commit):
                await git("fetch", "--quiet", "--no-tags", "--force", repo_url,
                          f"+refs/heads/{branch}:refs/heads/{branch}",
                          f"+refs/metabuilder/{run_id}/*:refs/metabuilder/{run_id}/*", cwd=mirror)
                if not await self._has_commit(mirror, commit):
                    raise GitError(f"commit {commit} of run {run_id} is not in {repo_url}")
            if not (entry.path / ".git").exists():
                if entry.path.exists():
                    shutil.rmtree(entry.path)
                await git("worktree", "prune", cwd=mirror)
                entry.path.parent.mkdir(parents=True, exist_ok=True)
                await git("worktree", "add", "--quiet", "--detach", "--force", str(entry.path), commit, cwd=mirror)
                entry.commit = commit
                return entry.path
        await git("checkout", "--quiet", "--detach", "--force", commit, cwd=entry.path)
        await git("clean", "--quiet", "-d", "--force", cwd=entry.path)
        entry.commit = commit
        return entry.path

    @staticmethod
    async def _has_commit(mirror: Path, commit: str) -> bool:
        out = await git("cat-file", "-t", commit, cwd=mirror, check=False)
        return out.strip() == "commit"

    async def commit_changes(self, run_id: str, message: str) -> tuple[str, list[str]]:
        """Commit whatever the step changed; return (HEAD commit, changed paths)."""
        entry = self._entry(run_id)
        entry.commit = None
        status = await git("status", "--porcelain=v1", "-z", "--untracked-files=all", cwd=entry.path)
        changed = _paths_from_status(status)
        if changed:
            await git("add", "--all", cwd=entry.path)
            await git(*BOT_CONFIG, "commit", "--quiet", "--no-verify", "-m", message, cwd=entry.path)
        head = (await git("rev-parse", "HEAD", cwd=entry.path)).strip()
        entry.commit = head
        return head, changed

    async def committed(self, run_id: str, before: str, head: str) -> list[str]:
        """Note that the checkout is at ``head``, clean (a step's command wrapper committed its
        changes there); return the paths changed since ``before``."""
        entry = self._entry(run_id)
        entry.commit = head
        if head == before:
            return []
        names = await git("diff", "--name-only", "-z", "--no-renames", before, head, cwd=entry.path)
        return [n for n in names.split("\0") if n]

    async def capture_diff(self, run_id: str) -> tuple[str, list[str]]:
        """The checkout's changes as a unified diff against HEAD (new files included), then undo
        them: the checkout is back at its commit, clean."""
        entry = self._entry(run_id)
        status = await git("status", "--porcelain=v1", "-z", "--untracked-files=all", cwd=entry.path)
        changed = _paths_from_status(status)
        diff = ""
        if changed:
            await git("add", "--all", cwd=entry.path)
            diff = await git("diff", "--cached", "--no-color", "--no-ext-diff", "HEAD", cwd=entry.path)
        await self.discard(run_id)
        return diff, changed

    async def discard(self, run_id: str) -> None:
        """Throw away uncommitted changes of the checkout."""
        entry = self._entry(run_id)
        await git("reset", "--quiet", "--hard", "HEAD", cwd=entry.path)
        await git("clean", "--quiet", "-d", "--force", cwd=entry.path)

    async def apply(self, run_id: str, diff: str) -> list[str]:
        """Apply a unified diff to the checkout (index and files); return the paths it changed.
        ``GitError`` if it does not apply cleanly (nothing is changed then)."""
        entry = self._entry(run_id)
        entry.commit = None
        with tempfile.NamedTemporaryFile("w", suffix=".patch", delete=False) as f:
            f.write(diff if diff.endswith("\n") else diff + "\n")
        try:
            await git("apply", "--check", "--whitespace=nowarn", f.name, cwd=entry.path)
            await git("apply", "--index", "--whitespace=nowarn", f.name, cwd=entry.path)
        finally:
            os.unlink(f.name)
        names = await git("diff", "--cached", "--name-only", "-z", "--no-renames", "HEAD", cwd=entry.path)
        return [n for n in names.split("\0") if n]

    async def push(self, run_id: str, repo_url: str, commit: str, refs: list[str]) -> None:
        """Point each of ``refs`` of the shared repository at ``commit``."""
        entry = self._entry(run_id)
        await git("push", "--quiet", "--force", repo_url, *(f"{commit}:{ref}" for ref in refs), cwd=entry.path)

    def forget(self, run_id: str) -> None:
        """Drop what is known about a run's checkout (after a failure left it in an unknown state)."""
        entry = self._checkouts.get(run_id)
        if entry is not None:
            entry.commit = None


@contextlib.asynccontextmanager
async def _flock(path: Path) -> AsyncIterator[None]:
    """An exclusive ``flock`` on ``path`` (created if missing), across processes; the kernel
    releases it if the holder dies."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                await asyncio.sleep(0.05)
        yield
    finally:
        os.close(fd)  # closing releases the flock


def _kill_leftover(pgid_file: Path) -> None:
    """Kill the process group recorded by a previous holder that did not clean up (it died)."""
    try:
        pgid = int(pgid_file.read_text())
    except (OSError, ValueError):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    pgid_file.unlink(missing_ok=True)


def _paths_from_status(status: str) -> list[str]:
    """Paths named by ``git status --porcelain=v1 -z`` (renames give the new path)."""
    paths = []
    fields = status.split("\0")
    i = 0
    while i < len(fields):
        entry = fields[i]
        if len(entry) < 4:
            i += 1
            continue
        code, path = entry[:2], entry[3:]
        paths.append(path)
        i += 2 if code[0] in "RC" else 1
    return paths
