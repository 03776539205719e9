"""A step command's end, recorded durably where any later attempt finds it.

The command runs under a small shell wrapper in its own session, so it outlives a worker that
dies. When it exits, the wrapper commits what it changed, pushes the commit to the run branch and
to the attempt's ref, and only then writes ``attempt-<n>.result`` beside the attempt's log (in the
shared artifacts directory): exit code and commit, and an ``end`` line that marks it whole. The worker reports
from that file; a retried attempt whose predecessor's worker died finds the file and adopts the
result instead of running the command again.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, replace
from pathlib import Path

from metabuilder.adapters.git import BOT_CONFIG

# One process per step beyond the command's own shell: `git status` says both what changed and
# where HEAD is (porcelain v2 headers), so a step that changes nothing costs one git spawn; the
# result is written by one printf (a builtin: no `mv` process) and ends with an `end` line, so a
# record cut short is never taken for a whole one. EPOCHREALTIME (a bash variable, no spawn)
# times the command and the bookkeeping for the benchmark's breakdown.
_WRAPPER = """\
t0=$EPOCHREALTIME
bash -c "$1"
status=$?
t1=$EPOCHREALTIME
times >"$2"
commit=
if [ "$status" -eq 0 ]; then
  unset GIT_DIR GIT_WORK_TREE GIT_INDEX_FILE GIT_OBJECT_DIRECTORY GIT_COMMON_DIR
  export GIT_TERMINAL_PROMPT=0 LC_ALL=C GIT_OPTIONAL_LOCKS=0
  nl=$'\\n'
  if out=$(git status --porcelain=v2 --branch --untracked-files=all --no-renames); then
    head=${out#*"# branch.oid "}
    head=${head%%"$nl"*}
    if [[ "$nl$out" != *"$nl"[!#]* ]]; then
      commit=$head
    elif git add --all && @GIT@ commit --quiet --no-verify -m "$4"; then
      commit=$(git rev-parse HEAD)
    fi
  fi
  if [ -n "$commit" ] && [ "$commit" != "$5" ] && ! git push --quiet --force "$3" "$commit:$6" "$commit:$7"; then
    commit=
  fi
  [ -n "$commit" ] || echo "[metabuilder] the step's changes could not be committed and pushed" >&2
fi
printf 'exit=%s\\ncommit=%s\\ntimes=%s %s %s\\nend\\n' "$status" "$commit" "$t0" "$t1" "$EPOCHREALTIME" >> "$2"
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
    times: tuple[float, ...] = ()
    """Wall clock (epoch seconds) at the wrapper's start, the command's end and the record's writing."""
    cpu_seconds: float = 0.0
    """User and system CPU time of the command and everything it ran (the wrapper's children's
    rusage, from the shell's ``times`` builtin: no process is spawned to take it)."""

    @property
    def adoptable(self) -> bool:
        return self.exit_code == 0 and bool(self.commit)


def read_recorded(path: Path) -> Recorded | None:
    """The result file at ``path``, or None when there is none (the command did not finish, or
    was killed), it is not one the wrapper wrote, or it was cut short (no ``end`` line, e.g. a
    full disk). None is the safe side: the attempt's end counts as unknown. (A record of the
    wrapper before the ``end`` line, during an upgrade, counts so too.)"""
    try:
        lines = path.read_text().splitlines()
        fields = dict(line.split("=", 1) for line in lines if "=" in line)
        if "end" not in lines:
            return None
        recorded = Recorded(exit_code=int(fields["exit"]), commit=fields.get("commit", "").strip(),
                            cpu_seconds=_children_cpu(lines))
    except (OSError, KeyError, ValueError):
        return None
    try:  # only for the benchmark: a locale's decimal comma, or anything odd, leaves them out
        return replace(recorded, times=tuple(float(t.replace(",", ".")) for t in fields.get("times", "").split()))
    except ValueError:
        return recorded


_CLOCK = re.compile(r"(\d+)m(\d+(?:[.,]\d+)?)s")


def _children_cpu(lines: list[str]) -> float:
    """CPU seconds from ``times``' second line (the children's user and system time), else 0."""
    plain = [line for line in lines if "=" not in line and line != "end"]
    if len(plain) < 2:
        return 0.0
    return sum(int(m) * 60 + float(sec.replace(",", ".")) for m, sec in _CLOCK.findall(plain[1]))


def result_path(log_path: Path) -> Path:
    return log_path.with_suffix(".result")
