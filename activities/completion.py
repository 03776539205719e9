"""A step command's end, recorded durably where any later attempt finds it.

The command runs under a small shell wrapper in its own session, so it outlives a worker that
dies. When it exits, the wrapper commits what it changed, pushes the commit to the run branch and
to the attempt's ref, and only then writes ``attempt-<n>.result`` beside the attempt's log (in the
shared artifacts directory): exit code and commit, renamed into place whole. The worker reports
from that file; a retried attempt whose predecessor's worker died finds the file and adopts the
result instead of running the command again.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from metabuilder.adapters.git import BOT_CONFIG

_WRAPPER = """\
bash -c "$1"
status=$?
commit=
if [ "$status" -eq 0 ]; then
  unset GIT_DIR GIT_WORK_TREE GIT_INDEX_FILE GIT_OBJECT_DIRECTORY GIT_COMMON_DIR
  export GIT_TERMINAL_PROMPT=0 LC_ALL=C
  if changes=$(git status --porcelain --untracked-files=all) \\
      && { [ -z "$changes" ] || { git add --all && @GIT@ commit --quiet --no-verify -m "$4"; }; } \\
      && commit=$(git rev-parse HEAD) \\
      && { [ "$commit" = "$5" ] || git push --quiet --force "$3" "$commit:$6" "$commit:$7"; }; then
    :
  else
    commit=
    echo "[metabuilder] the step's changes could not be committed and pushed" >&2
  fi
fi
printf 'exit=%s\\ncommit=%s\\n' "$status" "$commit" > "$2.tmp" && mv -f "$2.tmp" "$2"
exit "$status"
""".replace("@GIT@", shlex.join(["git", *BOT_CONFIG]))


@dataclass(frozen=True)
class Completion:
    """Where and how the wrapper records the end of one attempt's command."""

    result_path: Path
    repo_url: str
    message: str
    """Commit message of the step's changes."""
    commit_before: str
    refs: tuple[str, str]
    """The run branch and the attempt's ref, both pointed at the commit."""

    def argv(self, command: str) -> list[str]:
        return ["bash", "-c", _WRAPPER, "metabuilder-step", command, str(self.result_path), self.repo_url,
                self.message, self.commit_before, *self.refs]


@dataclass(frozen=True)
class Recorded:
    """An attempt's command end as its wrapper wrote it."""

    exit_code: int
    commit: str
    """The commit after the step (pushed), or "" when its changes could not be committed and pushed."""

    @property
    def adoptable(self) -> bool:
        return self.exit_code == 0 and bool(self.commit)


def read_recorded(path: Path) -> Recorded | None:
    """The result file at ``path``, or None when there is none (the command did not finish, or
    was killed) or it is not one the wrapper wrote."""
    try:
        fields = dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
        return Recorded(exit_code=int(fields["exit"]), commit=fields.get("commit", "").strip())
    except (OSError, KeyError, ValueError):
        return None


def result_path(log_path: Path) -> Path:
    return log_path.with_suffix(".result")
