"""Classifier throughput and memory against ``LC_ALL=C grep -E -c`` with the same patterns.

Generates a large, realistic CI log (GitHub Actions timestamps, pip and compiler chatter, pytest
progress, ANSI colour, a few warnings that match patterns, a failure at the end), then, in the
same run and on the same file (read once beforehand, so both read from the page cache):

- grep: ``LC_ALL=C grep -E -c -f PATTERNS LOG`` with the knowledge base's patterns, exactly as
  the engines compile them;
- the classifier: ``classify()`` on the file, in a child process that compiles the knowledge base,
  then restarts its peak-RSS mark (``/proc/self/clear_refs``) so that "extra memory" is what
  classifying the log adds;
- the pure-Python reference engine on a small slice, for scale;
- the worst case: a log of the same size where most lines match some pattern (real failure
  lines, each with a timestamp of its own), against the typical log; the goal is at most 4x
  slower per MiB;
- whole processes, each with its output to a file (GNU grep stops at its first match when its
  output is /dev/null): ``metabuilder classify LOG`` against ``LC_ALL=C grep -E -c -f`` on a
  100 MiB log (goal: at least 2x grep), ``metabuilder classify`` on a 50-line log and
  ``metabuilder --help`` against ``python3 -c pass`` (goals: at most 10x and 5x). The runs
  alternate A B A B and the median of the pairwise ratios is printed, so a drift in the machine's
  speed affects both sides alike. The knowledge-base cache is warmed first.

    python bench/bench_classifier.py [--mib 200] [--repeat 3] [--process-mib 100] [--process-runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from metabuilder.domain.knowledge import bundled_knowledge_base  # noqa: E402

CHILD = """
import json, sys, time
sys.path.insert(0, {root!r})
from metabuilder.domain.classifier import classify, _scanner
from metabuilder.domain.knowledge import bundled_knowledge_base

def status(key):
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(key + ":"))

scanner = _scanner(bundled_knowledge_base(), {engine!r})
classify(b"warm up: E   assert 1 == 2", engine={engine!r})
scanner.engine.present(b"warm up")  # its second database too, as a worker or the CLI's cache has it
loaded_kib = status("VmRSS")
with open("/proc/self/clear_refs", "w") as fh:  # restart the peak (VmHWM) from here
    fh.write("5")
started, cpu = time.perf_counter(), time.process_time()
with open({path!r}, "rb") as fh:
    signal = classify(fh, engine={engine!r})
elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
peak_kib = status("VmHWM")
with open({path!r}, "rb") as fh:
    matched = scanner.scan(fh).matched_lines
print(json.dumps(dict(seconds=elapsed, cpu=cpu, type=signal.type.value, evidence=[e.text for e in signal.evidence],
                      matched_lines=matched, loaded_kib=loaded_kib, peak_kib=peak_kib)))
"""


def make_log(path: Path, mib: int, seed: int = 7) -> None:
    """A log of about ``mib`` MiB: a long green preamble with the odd warning, then a pytest failure."""
    rng = random.Random(seed)
    packages = ["requests", "numpy", "sqlalchemy", "pydantic", "urllib3", "idna", "certifi", "attrs", "pytest"]
    modules = [f"src/app/module_{i}.py" for i in range(300)]
    templates = [
        lambda i: f"Collecting {rng.choice(packages)}=={rng.randint(1, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 9)}",
        lambda i: f"  Downloading {rng.choice(packages)}-{rng.randint(1, 9)}.{rng.randint(0, 9)}-py3-none-any.whl "
                  f"({rng.randint(10, 900)} kB)",
        lambda i: f"\x1b[32m     |████████████████████████████████| {rng.randint(10, 900)} kB "
                  f"{rng.randint(1, 90)}.{rng.randint(0, 9)} MB/s\x1b[0m",
        lambda i: f"Compiling {rng.choice(modules)} ...",
        lambda i: f"tests/unit/test_module_{rng.randint(0, 299)}.py::test_case_{i % 97} PASSED "
                  f"[{rng.randint(0, 99):>3}%]",
        lambda i: f"[INFO] Building jar: /home/runner/work/app/target/app-{i % 13}.jar",
        lambda i: f"DEBUG:urllib3.connectionpool:https://pypi.org:443 \"GET /simple/{rng.choice(packages)}/ "
                  f"HTTP/1.1\" 200 {rng.randint(1000, 90000)}",
        lambda i: f"  {rng.choice(modules)}:{rng.randint(1, 900)}: DeprecationWarning: "
                  f"datetime.utcnow() is deprecated",
        lambda i: "##[group]Run actions/setup-python@v5" if i % 50 == 0 else "##[endgroup]",
    ]
    block_lines = []
    for i in range(40_000):
        line = templates[rng.randrange(len(templates))](i)
        if i % 9_000 == 4_500:  # warnings that match patterns, as real preambles have
            line = ("WARNING: Retrying (Retry(total=4, connect=None, read=None, redirect=None, status=None)) "
                    "after connection broken by 'ReadTimeoutError(\"HTTPSConnectionPool(host='pypi.org', "
                    "port=443): Read timed out. (read timeout=15)\")': /simple/attrs/")
        block_lines.append(line)
    target = mib << 20
    with path.open("wb") as fh:
        written, minute = 0, 0
        while written < target:
            stamp = f"2026-11-21T10:{minute % 60:02d}:{minute % 57:02d}.{minute % 9999999:07d}Z "
            data = "".join(stamp + line + "\n" for line in block_lines).encode()
            fh.write(data)
            written += len(data)
            minute += 1
        tail = ["============================= FAILURES =============================",
                "____________________________ test_totals ____________________________",
                "    def test_totals():", ">       assert total([1, 2]) == 4", "E       assert 3 == 4",
                "E        +  where 3 = total([1, 2])", "tests/unit/test_totals.py:12: AssertionError",
                "FAILED tests/unit/test_totals.py::test_totals - assert 3 == 4",
                "========= 1 failed, 2410 passed in 312.45s (0:05:12) =========",
                "##[error]Process completed with exit code 1."]
        fh.write("".join(f"2026-11-21T11:00:00.0000000Z {line}\n" for line in tail).encode())


def make_dense_log(path: Path, mib: int, seed: int = 11) -> None:
    """A log of about ``mib`` MiB where most lines match a pattern: real failure lines, repeated."""
    rng = random.Random(seed)
    matching = ["E   assert 3 == 4", "FAILED tests/unit/test_totals.py::test_totals - assert 3 == 4",
                "WARNING: Retrying (Retry(total=4, connect=None, read=None, redirect=None, status=None)) after "
                "connection broken by 'NewConnectionError'", "npm ERR! code ECONNRESET",
                "src/app.py:12:5: F401 'os' imported but unused", "error[E0308]: mismatched types",
                "java.io.IOException: No space left on device", "fatal: unable to access 'https://example.com/'",
                "Traceback (most recent call last):", "curl: (7) Failed to connect to 127.0.0.1 port 9"]
    block = [rng.choice(matching) if rng.random() < 0.8 else f"step {i} ok" for i in range(20_000)]
    target = mib << 20
    with path.open("wb") as fh:
        written, n = 0, 0
        while written < target:
            # A timestamp of its own on every line, as GitHub Actions writes them: no two lines are equal.
            data = "".join(f"2026-11-21T10:{(n + i) // 600_000 % 60:02d}:{(n + i) // 10_000 % 60:02d}."
                           f"{(n + i) % 10_000:04d}000Z {line}\n" for i, line in enumerate(block)).encode()
            n += len(block)
            fh.write(data)
            written += len(data)
        fh.write(b"2026-11-21T11:00:00.0000000Z ##[error]Process completed with exit code 1.\n")


# Children write bytecode (an installed wheel has it; PYTHONDONTWRITEBYTECODE would make every
# run compile the package from source), and the warm-up run writes it.
CHILD_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _timed(argv: list[str], out: Path) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one whole process, its output appended to ``out``."""
    with out.open("ab") as fh:
        started = time.perf_counter()
        child = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=CHILD_ENV)
        _pid, _status, usage = os.wait4(child.pid, 0)
        return time.perf_counter() - started, usage.ru_utime + usage.ru_stime


def paired(a: list[str], b: list[str], runs: int, out_dir: Path) -> dict[str, float]:
    """Medians of A's and B's wall and CPU seconds and of the pairwise ratios A/B, over ``runs``
    alternating pairs."""
    a_s, b_s = [], []
    _timed(a, out_dir / "a.out"), _timed(b, out_dir / "b.out")  # warm-up
    for _ in range(runs):
        a_s.append(_timed(a, out_dir / "a.out"))
        b_s.append(_timed(b, out_dir / "b.out"))
    med = statistics.median
    return dict(a_wall=med(x[0] for x in a_s), b_wall=med(x[0] for x in b_s),
                a_cpu=med(x[1] for x in a_s), b_cpu=med(x[1] for x in b_s),
                wall=med(x[0] / y[0] for x, y in zip(a_s, b_s, strict=True)),
                cpu=med(x[1] / max(y[1], 1e-3) for x, y in zip(a_s, b_s, strict=True)))


def whole_processes(tmp: Path, patterns: Path, mib: int, runs: int) -> None:
    """The CLI as a user runs it, against grep and against a bare interpreter."""
    cli = [str(Path(sys.executable).with_name("metabuilder"))]
    if not Path(cli[0]).exists():
        cli = [sys.executable, "-m", "metabuilder.worker.cli"]
    os.environ["META_BUILDER_HOME"] = str(tmp / "home")  # a cache of our own, warmed by the warm-up run
    big = tmp / "process.log"
    make_log(big, mib)
    small = tmp / "small.log"
    with big.open("rb") as src:
        head = [next(src) for _ in range(40)]
    small.write_bytes(b"".join(head) + b"".join(f"2026-11-21T11:00:00.0Z {line}\n".encode() for line in (
        "E       assert 3 == 4", "tests/unit/test_totals.py:12: AssertionError",
        "FAILED tests/unit/test_totals.py::test_totals - assert 3 == 4",
        "##[error]Process completed with exit code 1.")))
    grep = ["env", "LC_ALL=C", "grep", "-E", "-c", "-f", str(patterns), str(big)]
    bare = ["python3", "-c", "pass"]
    print(f"whole processes ({runs} alternating pairs each, medians, output to files; CPU = user + system):")
    for label, a, b, goal in (
        (f"classify {mib} MiB log / grep -E -c", [*cli, "classify", str(big)], grep, "goal <= 0.5"),
        (f"classify {sum(1 for _ in small.open('rb'))}-line log / python3 -c pass", [*cli, "classify", str(small)],
         bare, "goal <= 10"),
        ("metabuilder --help / python3 -c pass", [*cli, "--help"], bare, "goal <= 5"),
    ):
        r = paired(a, b, runs, tmp)
        print(f"  {label:<44} cpu {r['a_cpu']:6.3f}s vs {r['b_cpu']:6.3f}s ratio {r['cpu']:5.2f} | "
              f"wall {r['a_wall']:6.3f}s vs {r['b_wall']:6.3f}s ratio {r['wall']:5.2f}  ({goal})")


def child(path: str, engine: str = "auto") -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT), path=path, engine=engine)],
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


def grep_count(patterns: Path, log: Path) -> tuple[float, int]:
    started = time.perf_counter()
    proc = subprocess.run(["grep", "-E", "-c", "-f", str(patterns), str(log)], capture_output=True,
                          env={**os.environ, "LC_ALL": "C"})
    elapsed = time.perf_counter() - started
    if proc.returncode > 1:
        raise SystemExit(f"grep failed: {proc.stderr.decode()}")
    return elapsed, int(proc.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=200, help="size of the generated log (default 200)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each side (median reported)")
    parser.add_argument("--process-mib", type=int, default=100, help="log size for the whole-process runs")
    parser.add_argument("--process-runs", type=int, default=5, help="alternating pairs per whole-process figure")
    args = parser.parse_args()

    kb = bundled_knowledge_base()
    with tempfile.TemporaryDirectory(prefix="mb-bench-") as tmp:
        log, patterns = Path(tmp) / "build.log", Path(tmp) / "patterns.txt"
        started = time.perf_counter()
        make_log(log, args.mib)
        patterns.write_text("\n".join(kb.patterns) + "\n")
        size_mib = log.stat().st_size / 2**20
        print(f"log: {size_mib:.0f} MiB, {sum(1 for _ in log.open('rb'))} lines, generated in "
              f"{time.perf_counter() - started:.1f}s; {len(kb.entries)} patterns")
        with log.open("rb") as fh:  # warm the page cache for both sides
            while fh.read(1 << 24):
                pass

        grep_runs, ours = [], []
        count = 0
        for _ in range(args.repeat):
            seconds, count = grep_count(patterns, log)
            grep_runs.append(seconds)
            ours.append(child(str(log)))
        ours_s = statistics.median(r["seconds"] for r in ours)
        grep_s = statistics.median(grep_runs)
        result = max(ours, key=lambda r: r["peak_kib"] - r["loaded_kib"])

        slice_path = Path(tmp) / "slice.log"
        with log.open("rb") as src:
            slice_path.write_bytes(src.read(2 << 20))
        reference = child(str(slice_path), engine="re")["seconds"]

        dense = Path(tmp) / "dense.log"
        log.unlink()
        make_dense_log(dense, args.mib)
        dense_mib = dense.stat().st_size / 2**20
        worst = [child(str(dense)) for _ in range(args.repeat)]
        worst_s = statistics.median(r["seconds"] for r in worst)
        worst_cpu = statistics.median(r["cpu"] for r in worst)
        ours_cpu = statistics.median(r["cpu"] for r in ours)
        worst_type = worst[0]["type"]
        dense.unlink()
        print_main(size_mib, grep_s, count, ours_s, result, reference)
        print(f"worst case        {dense_mib / worst_s:8.1f} MiB/s   ({worst_s:.2f}s on {dense_mib:.0f} MiB where "
              f"80% of lines match, answer {worst_type}): {worst_s / dense_mib / (ours_s / size_mib):.2f}x the typical "
              f"time per MiB (goal <= 4); CPU {worst_cpu / dense_mib / (ours_cpu / size_mib):.2f}x "
              f"({worst_cpu:.2f}s against {ours_cpu:.2f}s)")
        print()
        whole_processes(Path(tmp), patterns, args.process_mib, args.process_runs)


def print_main(size_mib: float, grep_s: float, count: int, ours_s: float, result: dict, reference: float) -> None:
    print(f"grep -E -c        {size_mib / grep_s:8.1f} MiB/s   ({grep_s:.2f}s, {count} matching lines)")
    print(f"classifier        {size_mib / ours_s:8.1f} MiB/s   ({ours_s:.2f}s, {result['matched_lines']} matching "
          f"lines, answer {result['type']})")
    print(f"ratio             {grep_s / ours_s:8.2f}x grep")
    print(f"pure-Python re    {2 / reference:8.2f} MiB/s   (reference engine on a 2 MiB slice)")
    print(f"memory            {(result['peak_kib'] - result['loaded_kib']) / 1024:8.1f} MiB extra   (peak RSS "
          f"{result['peak_kib'] / 1024:.1f} MiB while classifying, {result['loaded_kib'] / 1024:.1f} MiB "
          f"with the knowledge base compiled)")
    print("evidence:", *result["evidence"], sep="\n  ")


if __name__ == "__main__":
    main()
