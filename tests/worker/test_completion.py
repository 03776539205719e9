"""The shell completion script, sourced in a real bash, completes what the parser has."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.worker.test_cli import metabuilder


def _complete(script: Path, line: str) -> list[str]:
    words = line.split(" ")
    program = (f"source {script}\nCOMP_WORDS=({' '.join(repr(w) for w in words)})\n"
               f"COMP_CWORD={len(words) - 1}\n_metabuilder_complete\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n")
    out = subprocess.run(["bash", "-c", program], capture_output=True, text=True, timeout=30, check=True)
    return out.stdout.split()


@pytest.fixture(scope="module")
def script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    res = metabuilder("completion", "bash", env={"META_BUILDER_HOME": str(tmp_path_factory.mktemp("home"))})
    assert res.returncode == 0, res.stderr
    path = tmp_path_factory.mktemp("completion") / "metabuilder.bash"
    path.write_text(res.stdout)
    return path


@pytest.mark.parametrize("line, expected", [
    ("metabuilder ru", ["run"]),
    ("metabuilder ap", ["api", "approvals", "approve"]),
    ("metabuilder run --det", ["--detach"]),
    ("metabuilder server st", ["start", "status", "stop"]),
    ("metabuilder classify --ev", ["--eval"]),
    ("metabuilder completion ", ["--help", "bash", "zsh"]),
])
def test_bash_completes_commands_options_and_choices(script: Path, line: str, expected: list[str]) -> None:
    assert sorted(_complete(script, line)) == expected


def test_zsh_script_loads_the_same_completion() -> None:
    res = subprocess.run([sys.executable, "-m", "metabuilder.worker.cli", "completion", "zsh"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.startswith("#compdef metabuilder")
    assert "complete -o filenames -F _metabuilder_complete metabuilder" in res.stdout
