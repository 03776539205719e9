"""Scanning: no input bytes crash it, chunking never changes what is found, and the Hyperscan
engine finds exactly what the plain ``re`` reference engine finds."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from metabuilder.domain import scanner
from metabuilder.domain.classifier import classify
from metabuilder.domain.knowledge import bundled_knowledge_base
from metabuilder.domain.scanner import HyperscanEngine, RegexEngine, Scanner, clean, line_chunks
from metabuilder.domain.taxonomy import FailureType

KB = bundled_knowledge_base()
OWN = Path(__file__).resolve().parents[1] / "corpus" / "own"
# Real lines from the corpus, so that generated logs hit patterns often, mixed with noise.
REAL_LINES = sorted({line for log in OWN.glob("*/fail.log") for line in log.read_bytes().splitlines()
                     if 3 < len(line) < 200})[:400]
NOISE = st.binary(max_size=80)
DRESSING = st.sampled_from([b"", b"2026-11-21T10:00:00.1234567Z ", b"\x1b[31m", b"##[error]", b"[12:00:01] ",
                            b"\x00", b"\r", b"section_start:1732180000:build\r\x1b[0K"])
LINE = st.one_of(NOISE, st.tuples(DRESSING, st.sampled_from(REAL_LINES)).map(b"".join))
LOG = st.lists(LINE, max_size=60).map(lambda lines: b"\n".join(lines))
ENDINGS = st.sampled_from([b"\n", b"\r\n"])

HS_SCANNER = Scanner(KB, HyperscanEngine(KB))
RE_SCANNER = Scanner(KB, RegexEngine(KB))


def _found(scanner: Scanner, log: bytes | io.BufferedIOBase) -> dict[int, list[tuple[int, bytes]]]:
    return _hits(scanner.scan(io.BytesIO(log) if isinstance(log, bytes) else log))


def _hits(result: scanner.ScanResult) -> dict[int, list[tuple[int, bytes]]]:
    return {i: [(h.line, h.text) for h in hits] for i, hits in result.hits.items()} | {
        -1: [(result.lines, b"")]}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(LOG)
def test_hyperscan_and_re_engines_agree(log):
    assert _found(HS_SCANNER, log) == _found(RE_SCANNER, log)


@settings(max_examples=150, deadline=None)
@given(LOG, st.integers(min_value=1, max_value=300))
def test_chunk_size_does_not_change_the_hits(log, chunk_bytes):
    small = Scanner(KB, HS_SCANNER.engine, chunk_bytes=chunk_bytes)
    assert _found(small, log) == _found(HS_SCANNER, log)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=4096), st.one_of(st.none(), st.integers(min_value=-255, max_value=255)))
def test_any_bytes_classify_without_crashing(data, exit_code):
    signal = classify(data, exit_code=exit_code)
    assert isinstance(signal.type, FailureType)
    assert 0.0 <= signal.confidence <= 1.0
    assert len(signal.evidence) <= 5
    signal.to_dict()


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(LINE, st.binary(min_size=70, max_size=300)), max_size=60).map(b"\n".join),
       st.integers(min_value=1, max_value=300))
@example(b"\n\x1b[31m", 80)  # a last line of escapes only: still a line, read either way
def test_reading_from_the_end_finds_what_reading_from_the_start_finds(log, chunk_bytes):
    # bytes and regular files are read backwards, other streams forwards: the same hits either way
    small = Scanner(KB, HS_SCANNER.engine, chunk_bytes=chunk_bytes)
    backward, forward = small.scan(log), small.scan(io.BytesIO(log))
    assert _hits(backward) == _hits(forward)
    assert (backward.tail, backward.nonblank) == (forward.tail, forward.nonblank)
    assert backward.bytes_read == forward.bytes_read


def test_over_long_lines_are_cut_alike_whichever_way_the_log_is_read(tmp_path):
    log = b"x" * 150_000 + b"\nE   assert 1 == 2\n" + b"y" * 70_000 + b"\nok\n" + b"z" * 65_536
    log += b"\n" + b"w" * 300_000 + b"\nE   assert 2 == 3"  # a line longer than a chunk is cut in pieces
    path = tmp_path / "long.log"
    path.write_bytes(log)
    with path.open("rb") as fh:
        from_file = _found(HS_SCANNER, fh)
    assert from_file == _hits(HS_SCANNER.scan(log)) == _found(HS_SCANNER, log)
    assert from_file[-1] == [(15, b"")]  # pieces of 65,536 bytes: 3 + 1 + 2 + 1 + 2 (and an empty line) + 5 + 1


@settings(max_examples=100, deadline=None)
@given(LOG, ENDINGS)
def test_line_endings_do_not_change_the_class(log, ending):
    assert classify(log.replace(b"\n", ending)).type is classify(log).type


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=50), max_size=30), st.integers(min_value=1, max_value=64))
def test_line_chunks_lose_nothing(blocks, size):
    data = b"".join(blocks)
    pieces = list(line_chunks(iter(blocks), size))
    assert b"".join(pieces).replace(b"\n", b"") == data.replace(b"\n", b"")
    assert all(p.endswith(b"\n") for p in pieces[:-1])


def test_clean_removes_ansi_and_crlf():
    assert clean(b"\x1b[1;31mERROR\x1b[0m: x\r\n\x1b]0;title\x07y\n") == b"ERROR: x\ny\n"


def test_memory_is_bounded_by_hits_kept_not_by_matches():
    log = b"E   assert 1 == 2\n" * 200_000
    result = HS_SCANNER.scan(io.BytesIO(log))
    index = [e.id for e in KB.entries].index("pytest.assert-line")
    assert len(result.hits[index]) == 3
    assert [h.line for h in result.hits[index]] == [199_998, 199_999, 200_000]
    assert result.lines == 200_000


DENSE_LINES = [b"WARNING: Retrying (Retry(total=4)) after connection broken by 'ReadTimeoutError'",
               b"java.io.IOException: No space left on device", b"java.io.IOException: boom", b"ok line",
               b"E   assert 1 == 2", b"FAILED tests/x.py::t - assert 1 == 2", b"npm ERR! code E403",
               b"##[error]Process completed with exit code 1."]


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("read", ["forwards", "backwards"])
def test_a_dense_log_keeps_the_same_last_hits_as_a_line_by_line_scan(seed, read, monkeypatch):
    rng = random.Random(seed)
    lines = [rng.choice(DENSE_LINES) for _ in range(40_000)]
    for at in rng.sample(range(40_000), 40):  # a rare message: its last hits lie further back
        lines[at] = b"Segmentation fault (core dumped)"
    log = b"".join(line + b"\n" for line in lines) + b"a last quiet line\n"
    source = (lambda: io.BytesIO(log)) if read == "forwards" else (lambda: log)
    dense = HS_SCANNER.scan(source())
    assert dense.dense_chunks > 0
    monkeypatch.setattr(scanner, "DENSE_CANDIDATES", 10**9)
    exact = Scanner(KB, HyperscanEngine(KB)).scan(source())
    assert exact.dense_chunks == 0

    def hits(result):
        return {KB.entries[i].id: [(h.line, h.text) for h in kept] for i, kept in result.hits.items()}

    assert hits(dense) == hits(exact)
    assert dense.lines == exact.lines == 40_001
    assert dense.matched_lines < exact.matched_lines


def test_the_reference_engine_reads_dense_chunks_the_same_way():
    log = b"".join(line + b"\n" for line in DENSE_LINES) * 200
    hs, ref = HS_SCANNER.scan(io.BytesIO(log)), RE_SCANNER.scan(io.BytesIO(log))
    assert hs.dense_chunks == ref.dense_chunks > 0
    assert {i: list(v) for i, v in hs.hits.items()} == {i: list(v) for i, v in ref.hits.items()}


def test_a_dense_log_read_backwards_costs_one_fast_pass_per_chunk_once_its_last_hits_are_found():
    log = b"".join(line + b"\n" for line in DENSE_LINES) * 20_000
    result = Scanner(KB, HS_SCANNER.engine, chunk_bytes=64 << 10).scan(log)
    assert result.dense_chunks > 40
    # the lines read are those of the last chunk's windows, not of every chunk
    assert result.matched_lines < 2 * scanner.DENSE_WINDOW_BYTES // 20
    assert result.lines == 20_000 * len(DENSE_LINES)
