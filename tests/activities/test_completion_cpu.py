"""The step wrapper records its command's CPU time (the children's rusage, from ``times``)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from metabuilder.activities.completion import Completion, read_recorded


def test_the_wrapper_records_the_commands_cpu_seconds(tmp_path: Path) -> None:
    result = tmp_path / "attempt-1.result"
    wrapper = Completion(result_path=result, repo_url="/nowhere.git", message="m", commit_before="a" * 40,
                         refs=("refs/heads/b", "refs/metabuilder/r/0/1"))
    # A failing command: the wrapper commits nothing, and records its end all the same.
    burn = "python3 -c 'sum(i * i for i in range(3_000_000))'; sleep 0.2; exit 3"
    subprocess.run(wrapper.argv(burn), cwd=tmp_path, check=False)
    recorded = read_recorded(result)
    assert recorded is not None and recorded.exit_code == 3
    # CPU time, not wall time: the sleep is not in it, the loop in the grandchild is.
    assert 0.05 < recorded.cpu_seconds < (recorded.times[1] - recorded.times[0])


def test_a_record_cut_short_after_the_cpu_line_is_no_record(tmp_path: Path) -> None:
    result = tmp_path / "attempt-1.result"
    result.write_text("0m0.001s 0m0.000s\n0m0.500s 0m0.100s\nexit=0\n")
    assert read_recorded(result) is None
    result.write_text("0m0.001s 0m0.000s\n1m0.500s 0m0,100s\nexit=0\ncommit=abc\nend\n")
    recorded = read_recorded(result)
    assert recorded is not None and abs(recorded.cpu_seconds - 60.6) < 1e-9
