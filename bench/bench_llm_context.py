"""Files the LLM fixer is sent per kind of failure, before and after the context work of issue 13.

"Before" is ``relevant_files`` of ``activities/llm.py`` at BEFORE_REV, loaded from git; "after"
is :func:`activities.llm_context.gather`. Both read the same workspace and the same logs (the
cases of ``tests/adapters/test_llm_context.py``), and are timed in the same process.

    python bench/bench_llm_context.py [--repeat 200]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from metabuilder.adapters.llm_context import gather  # noqa: E402
from tests.adapters.test_llm_context import CASES, make_workspace  # noqa: E402

BEFORE_REV = "41a1f6d"
"""The last commit before the change."""


def load_before() -> Callable[[Path, list[str]], dict[str, str]]:
    source = subprocess.run(["git", "show", f"{BEFORE_REV}:activities/llm.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(source)
    spec = importlib.util.spec_from_file_location("llm_before", f.name)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    os.unlink(f.name)
    return module.relevant_files  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    before = load_before()
    with tempfile.TemporaryDirectory() as tmp:
        root = make_workspace(Path(tmp))
        print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores\n")
        print("| failure kind | files before | files after | sent after (why) | before µs | after µs |")
        print("|---|---|---|---|---|---|")
        for case in CASES:
            texts = [case.command, *case.evidence, case.log]
            old = before(root, texts)
            new = gather(root, case.command, case.evidence, case.log)
            t0 = time.perf_counter()
            for _ in range(args.repeat):
                before(root, texts)
            t1 = time.perf_counter()
            for _ in range(args.repeat):
                gather(root, case.command, case.evidence, case.log)
            t2 = time.perf_counter()
            why = ", ".join(f.label() for f in new) or "-"
            print(f"| {case.kind} | {len(old)} ({', '.join(old) or '-'}) | {len(new)} | {why} | "
                  f"{(t1 - t0) / args.repeat * 1e6:.0f} | {(t2 - t1) / args.repeat * 1e6:.0f} |")


if __name__ == "__main__":
    main()
