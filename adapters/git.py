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
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from metabuilder.telemetry.spans import span

BOT_CONFIG = ("-c", "user.name=Meta-Builder", "-c", "user.email=metabuilder@localhost",
              "-c", "commit.gpgsign=false", "-c", "core.hooksPath=/dev/null")


class GitError(RuntimeError):
    """A git command failed; the message names the command and what git said."""


class NotAGitRepository(ValueError):
    """The workspace given by the user is not inside a git repository."""


async def git(*args: str, cwd: Path | str | None = None, env: dict[str, str] | None = None,
              check: bool = True) -> str:
    """Run git and return its stdout; ``GitError`` with stderr when it fails and ``check``."""
    # EMAIL: with no user.email, git names reflog entries (a checkout, a worktree) after the host's
    # DNS name; a worker whose hostname does not resolve (a container, a fresh VM) then waits out
    # the resolver's timeout (10 s) on every checkout. A configured user.email still wins.
    full_env = {"EMAIL": "metabuilder@localhost", **os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C",
                **(env or {})}
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
    # Made beside it and renamed into place: concurrent first submissions (threads, processes)
    # never run `git init` in one directory at once; the one whose rename loses uses the winner's.
    path.parent.mkdir(parents=True, exist_ok=True)
    fresh = path.parent / f".{path.name}.init-{uuid.uuid4().hex[:8]}"
    await git("init", "--quiet", "--bare", str(fresh))
    try:
        os.rename(fresh, path)  # atomic; onto an empty directory too, never onto a repository
    except OSError:
        shutil.rmtree(fresh, ignore_errors=True)
        if not (path / "HEAD").exists():
            raise


async def snapshot(workspace: Path) -> tuple[Path, str]:
    """Commit the working tree of ``workspace`` as it is, including uncommitted and untracked
    (not ignored) files, without changing the user's branch, index or files.

    Returns the repository top level and the commit id (HEAD itself when the tree is clean).
    """
    if not workspace.is_dir():
        raise NotAGitRepository(f"workspace {workspace} does not exist or is not a directory")
    with span("submit.snapshot"):
        return await _snapshot(workspace)


async def _snapshot(workspace: Path) -> tuple[Path, str]:
    # One rev-parse for the top level, the index and HEAD with its tree: each git spawn counts
    # on every submission. It fails on an unborn HEAD after printing the first two.
    out = await git("rev-parse", "--path-format=absolute", "--show-toplevel", "--git-path", "index",
                    "HEAD^{commit}", "HEAD^{tree}", cwd=workspace, check=False)
    lines = out.splitlines()
    if len(lines) < 2:
        raise NotAGitRepository(
            f"workspace {workspace} is not inside a git repository (run `git init` there first)")
    top, user_index = Path(lines[0]), Path(lines[1])
    head, head_tree = (lines[2], lines[3]) if len(lines) == 4 else ("", "")
    if not head:  # no commit yet, or a HEAD git could not read: ask the plain way
        head = (await git("rev-parse", "--verify", "--quiet", "HEAD^{commit}", cwd=top, check=False)).strip()
        if head:
            head_tree = (await git("rev-parse", "HEAD^{tree}", cwd=top)).strip()
    # A clean tree (nothing staged, changed or untracked) is HEAD itself: one `git status`
    # instead of building a tree. No optional locks: the user's index is not even refreshed.
    if head and not (await git("status", "--porcelain=v1", "-z", "--untracked-files=all", "--no-renames",
                               cwd=top, env={"GIT_OPTIONAL_LOCKS": "0"})):
        return top, head
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
    if head and tree == head_tree:
        return top, head
    parents = ["-p", head] if head else []
    commit = (await git(*BOT_CONFIG, "commit-tree", tree, *parents, "-m",
                        "metabuilder: snapshot of the working tree", cwd=top)).strip()
    return top, commit


async def checked_out_branch(top: Path) -> str:
    """The branch checked out in the user's repository at ``top`` ('' for a detached HEAD)."""
    return (await git("symbolic-ref", "--quiet", "--short", "HEAD", cwd=top, check=False)).strip()


class TargetMoved(GitError):
    """The branch to fast-forward holds commits the new head does not: it moved since the run began."""


async def fast_forward(repo_url: str, branch: str, commit: str) -> str | None:
    """Move ``branch`` of the shared repository to ``commit`` (already in it) if that is a
    fast-forward, atomically: ``TargetMoved`` if the branch holds a commit ``commit`` does not
    (or it moved while this ran). A missing branch is created. Returns where the branch was
    (None: it did not exist)."""
    if _is_remote(repo_url):
        return await _fast_forward_remote(repo_url, branch, commit)
    if not (Path(repo_url) / "HEAD").exists():
        raise GitError(f"the shared repository {repo_url} does not exist")
    ref = f"refs/heads/{branch}"
    before = (await git("rev-parse", "--verify", "--quiet", ref, cwd=repo_url, check=False)).strip() or None
    if before is not None and before != commit and not await _is_ancestor(repo_url, before, commit):
        raise TargetMoved(f"branch {branch} is at {before[:12]}, which {commit[:12]} does not contain: "
                          "it moved since the run started; fast-forward only")
    try:
        await git("update-ref", ref, commit, before or "0" * 40, cwd=repo_url)
    except GitError:
        raise TargetMoved(f"branch {branch} moved while it was being fast-forwarded to {commit[:12]}") from None
    return before


async def _is_ancestor(repo: str, ancestor: str, commit: str) -> bool:
    proc = await asyncio.create_subprocess_exec("git", "merge-base", "--is-ancestor", ancestor, commit, cwd=repo,
                                                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    return await proc.wait() == 0


async def _fast_forward_remote(repo_url: str, branch: str, commit: str) -> str | None:
    ref = f"refs/heads/{branch}"
    listed = (await git("ls-remote", "--heads", repo_url, ref)).split()
    before = listed[0] if listed else None
    async with _scratch() as tmp:
        await git("fetch", "--quiet", "--no-tags", repo_url, commit, *([before] if before else []), cwd=tmp)
        if before is not None and before != commit and not await _is_ancestor(tmp, before, commit):
            raise TargetMoved(f"branch {branch} is at {before[:12]}, which {commit[:12]} does not contain: "
                              "it moved since the run started; fast-forward only")
        try:  # the lease: refused if the branch moved since it was read
            await git("push", "--quiet", f"--force-with-lease={ref}:{before or ''}", repo_url, f"{commit}:{ref}",
                      cwd=tmp)
        except GitError:
            raise TargetMoved(f"branch {branch} moved while it was being fast-forwarded to {commit[:12]}") from None
    return before


async def publish(top: Path, commit: str, repo_url: str, branch: str) -> None:
    """Push ``commit`` of the user's repository to ``branch`` of the shared repository, a new
    branch: ``GitError`` if it exists already (another run's, which must stay as it is).

    Pushing to a URL (not a named remote) changes nothing in the user's repository.
    """
    await ensure_shared_repo(repo_url)
    if not _is_remote(repo_url):
        # A commit the local shared repository has already (an earlier run of the same tree) only
        # needs its branch: one update-ref, created only if absent ("0"*40), instead of a push.
        with span("submit.update_ref"):
            try:
                await branch_at(repo_url, branch, commit)
                return
            except GitError:
                pass  # the commit is not there yet (or the branch exists: the push says so)
    # An empty expected value: the push is refused if the branch exists, atomically.
    with span("submit.push"):
        await git("push", "--quiet", f"--force-with-lease=refs/heads/{branch}:", repo_url,
                  f"{commit}:refs/heads/{branch}", cwd=top)


async def branch_exists(repo_url: str, branch: str) -> bool:
    if _is_remote(repo_url):
        return bool((await git("ls-remote", "--heads", repo_url, f"refs/heads/{branch}")).strip())
    if not (Path(repo_url) / "HEAD").exists():
        return False  # not created yet
    # A local repository is read directly: one git, not ls-remote's two.
    with span("submit.branch_exists"):
        found = await git("rev-parse", "--verify", "--quiet", f"refs/heads/{branch}", cwd=repo_url, check=False)
    return bool(found.strip())


def _is_remote(repo_url: str) -> bool:
    return "://" in repo_url or ":" in repo_url.split("/")[0]


async def delete_branch(repo_url: str, branch: str, commit: str) -> None:
    """Delete ``branch`` of the shared repository if it is still at ``commit``."""
    if _is_remote(repo_url):
        async with _scratch() as tmp:
            await git("push", "--quiet", f"--force-with-lease=refs/heads/{branch}:{commit}", repo_url,
                      f":refs/heads/{branch}", cwd=tmp)
        return
    await git("update-ref", "-d", f"refs/heads/{branch}", commit, cwd=repo_url)


async def branch_at(repo_url: str, branch: str, commit: str) -> None:
    """Create ``branch`` of the shared repository at ``commit`` (already in it), e.g. for a retry;
    ``GitError`` if the branch exists. A remote one gets a push from a scratch repository holding
    just that commit (a shallow fetch: the server has the rest)."""
    if _is_remote(repo_url):
        async with _scratch() as tmp:
            await git("fetch", "--quiet", "--no-tags", "--depth=1", repo_url, commit, cwd=tmp)
            await git("push", "--quiet", f"--force-with-lease=refs/heads/{branch}:", repo_url,
                      f"{commit}:refs/heads/{branch}", cwd=tmp)
        return
    await git("update-ref", f"refs/heads/{branch}", commit, "0" * 40, cwd=repo_url)


@contextlib.asynccontextmanager
async def _scratch() -> AsyncIterator[str]:
    """An empty bare repository to push from, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="metabuilder-git-") as tmp:
        await git("init", "--quiet", "--bare", tmp)
        yield tmp


@dataclass
class _Checkout:
    path: Path
    commit: str | None
    """Commit the checkout is known to be at with a clean tree, or None when unknown."""
    lock: asyncio.Lock


class WorkspaceCache:
    """Checkouts of run branches on one worker, kept between steps of the same run.

    One local repository per shared repository holds the objects (a local shared repository
    lends them through ``objects/info/alternates``, so nothing is fetched; a remote one is
    fetched from); each run gets a worktree of it. When the next step of a run starts from the
    commit this worker left the worktree at, nothing is fetched or checked out again.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._checkouts: dict[str, _Checkout] = {}
        self._prepared: set[Path] = set()

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
        async with contextlib.AsyncExitStack() as held:
            with span("git.lock"):
                await held.enter_async_context(entry.lock)
                await held.enter_async_context(_flock(entry.path.parent / f"{run_id}.lock"))
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
        # fails on one that another worker's `worktree add` has half made, a prune may remove one
        # half made, `init` races with itself. So these hold the mirror's lock alone, and adding
        # worktrees (of different runs) shares it.
        lock = mirror.parent / f"{mirror.name}.lock"
        if mirror not in self._prepared or _is_remote(repo_url):
            async with _flock(lock):
                await self._fetch(mirror, repo_url, run_id, branch, commit)
        failed = False
        async with _flock(lock, shared=True):
            if not (entry.path / ".git").exists():
                if entry.path.exists():
                    shutil.rmtree(entry.path)
                entry.path.parent.mkdir(parents=True, exist_ok=True)
                add = ("worktree", "add", "--quiet", "--detach", "--force", str(entry.path), commit)
                with span("git.worktree_add"):
                    try:
                        await git(*add, cwd=mirror)
                    except GitError:
                        failed = True
                if not failed:
                    entry.commit = commit
                    return entry.path
        if failed:
            await self._must_have(mirror, repo_url, run_id, commit)
            async with _flock(lock):
                # A worktree of a dead worker left registered under this path: forget it, once.
                await git("worktree", "prune", cwd=mirror)
                await git(*add, cwd=mirror)
            entry.commit = commit
            return entry.path
        with span("git.checkout"):
            try:
                await git("checkout", "--quiet", "--detach", "--force", commit, cwd=entry.path)
            except GitError:
                await self._must_have(mirror, repo_url, run_id, commit)
                raise
            await git("clean", "--quiet", "-d", "--force", cwd=entry.path)
        entry.commit = commit
        return entry.path

    async def _fetch(self, mirror: Path, repo_url: str, run_id: str, branch: str, commit: str) -> None:
        """Make the mirror (once), and fetch the run's refs into it when it lacks ``commit`` (a remote
        shared repository; a local one lends the mirror its objects: nothing to fetch, and a
        missing commit shows as a failed checkout)."""
        with span("git.mirror"):
            await self._prepare_mirror(mirror, repo_url)
            if _is_remote(repo_url) and not await self._has_commit(mirror, commit):
                await git("fetch", "--quiet", "--no-tags", "--force", repo_url,
                          f"+refs/heads/{branch}:refs/heads/{branch}",
                          f"+refs/metabuilder/{run_id}/*:refs/metabuilder/{run_id}/*", cwd=mirror)
                await self._must_have(mirror, repo_url, run_id, commit)

    async def _must_have(self, mirror: Path, repo_url: str, run_id: str, commit: str) -> None:
        if not await self._has_commit(mirror, commit):
            raise GitError(f"commit {commit} of run {run_id} is not in {repo_url}")

    async def _prepare_mirror(self, mirror: Path, repo_url: str) -> None:
        """Create the mirror once; a local shared repository's objects are its alternates."""
        if mirror in self._prepared:
            return
        if not (mirror / "HEAD").exists():
            mirror.mkdir(parents=True, exist_ok=True)
            await git("init", "--quiet", "--bare", str(mirror))
        if not _is_remote(repo_url):
            alternates = mirror / "objects" / "info" / "alternates"
            objects = str((Path(repo_url) / "objects").resolve())
            if not alternates.exists() or objects not in alternates.read_text().split("\n"):
                alternates.parent.mkdir(parents=True, exist_ok=True)
                alternates.write_text(objects + "\n")
        self._prepared.add(mirror)

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
async def _flock(path: Path, *, shared: bool = False) -> AsyncIterator[None]:
    """An exclusive (or ``shared``) ``flock`` on ``path`` (created if missing), across processes;
    the kernel releases it if the holder dies."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        while True:
            try:
                fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
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
