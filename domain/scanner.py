"""Streaming a log through every knowledge-base pattern at once, in bounded memory.

The log is read in chunks cut at line ends. Each chunk is cleaned (ANSI escapes removed, CRLF
made LF) and handed to a multi-pattern engine, which reports candidate matches; each candidate
line is then confirmed with Python ``re`` on that line alone, so both engines agree exactly:

- :class:`HyperscanEngine` (the default where the ``hyperscan`` wheel exists) scans a chunk for all
  patterns in one pass, at hundreds of MB/s.
- :class:`RegexEngine` tries each pattern in turn with ``re``: a thousand times slower, kept as
  the portable fallback and as the reference the fast engine is tested against.

Only the last few hits per pattern are kept, so memory does not grow with the log.

A *dense* chunk, where more than :data:`DENSE_CANDIDATES` candidates turn up (a log where most
lines match something, such as a wall of repeated warnings), is not confirmed line by line at
Python speed. Only its last hits matter: the scan stops, a second database that reports each
pattern once says which patterns occur in the chunk, and the chunk is then read backwards in
windows of :data:`DENSE_WINDOW_BYTES` until each of them has its last :data:`HITS_KEPT` hits; a
window where that database finds none of the patterns still wanted is skipped at C speed.
``matched_lines`` then counts only the lines so examined.
"""

from __future__ import annotations

import itertools
import mmap
import os
import queue
import re
import stat
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Protocol

from metabuilder.domain.knowledge import EntryKind, KnowledgeBase, KnowledgeBaseError, expand_anchors
from metabuilder.domain.problems import Problem

CHUNK_BYTES = 256 << 10
"""Bytes read at a time; a chunk ends at a line end."""
MAX_LINE_BYTES = 64 << 10
"""A longer line (or a log without newlines) is cut into pieces of this size."""
HITS_KEPT = 3
"""Hits kept per pattern: the last ones, nearest the failure."""
DENSE_CANDIDATES = 128
"""Candidates in one chunk beyond which the chunk is read backwards for its last hits only."""
DENSE_WINDOW_BYTES = 4 << 10
"""Size of the windows a dense chunk is read in, from its end."""
DENSE_LINES_PER_WINDOW = 8
"""Matching lines per window read below which a dense chunk's successor is read the usual way."""
TAIL_BYTES = 16 << 10
"""How much of the log's end is kept for the failure window (cross-tool cues, the learned model)."""
SHADOWED_LINES = 2 * HITS_KEPT
"""In a dense chunk, a pattern confirmed on this many lines but owned by a heavier entry on each
is taken as done: any lone hit of it further up is that much further from the failure."""

# One literal prefix (ESC) lets ``re`` skip to candidates quickly; CSI, OSC and two-byte escapes.
_ANSI = re.compile(rb"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b\n]*(?:\x07|\x1b\\)?|[@-Z\\-_])")

OnMatch = Callable[[int, int], None]
"""Called with (entry index, end offset in the chunk) for every candidate match."""


class DenseChunk(Exception):
    """Raised by ``on_match`` to stop scanning a chunk with too many candidates."""


class Engine(Protocol):
    name: str

    def scan(self, chunk: bytes, on_match: OnMatch) -> None: ...

    def present(self, chunk: bytes) -> set[int]:
        """The entries with at least one candidate match in ``chunk``."""
        ...


class RegexEngine:
    """Every pattern tried in turn with Python ``re`` (the reference engine)."""

    name = "re"

    def __init__(self, kb: KnowledgeBase) -> None:
        self._compiled = [re.compile(p.encode(), re.MULTILINE) for p in kb.patterns]

    def scan(self, chunk: bytes, on_match: OnMatch) -> None:
        for index, rx in enumerate(self._compiled):
            for m in rx.finditer(chunk):
                on_match(index, m.end())

    def present(self, chunk: bytes) -> set[int]:
        return {index for index, rx in enumerate(self._compiled) if rx.search(chunk)}


class HyperscanEngine:
    """All patterns in one Hyperscan block-mode database, and again in one that reports each once."""

    name = "hyperscan"

    def __init__(self, kb: KnowledgeBase, serialized: tuple[bytes, bytes] | None = None) -> None:
        """Compile ``kb``'s patterns, or load them from ``serialized`` (what :meth:`serialize` gave)."""
        import hyperscan

        self._hs = hyperscan
        self._kb = kb
        self._once: Any = None
        if serialized is not None:
            self._db, self._once = (hyperscan.loadb(blob, hyperscan.HS_MODE_BLOCK) for blob in serialized)
        else:
            self._db = self._compile(self._patterns(), hyperscan.HS_FLAG_MULTILINE)
        self._local = threading.local()
        self._lock = threading.Lock()

    def _once_db(self) -> Any:
        # Compiled when first needed (only dense chunks use it): it would double the compile time.
        with self._lock:
            if self._once is None:
                self._once = self._compile(self._patterns(), self._hs.HS_FLAG_MULTILINE | self._hs.HS_FLAG_SINGLEMATCH)
            return self._once

    def _patterns(self) -> list[bytes]:
        # Not computed for databases loaded from a cache: expanding the anchors costs start-up time.
        return [p.encode() for p in self._kb.patterns]

    def _compile(self, patterns: list[bytes], flags: int) -> Any:
        db = self._hs.Database(mode=self._hs.HS_MODE_BLOCK)
        try:
            db.compile(expressions=patterns, ids=list(range(len(patterns))), elements=len(patterns),
                       flags=[flags] * len(patterns))
        except self._hs.error as err:
            raise KnowledgeBaseError([Problem("<knowledge base>", None, "pattern", f"hyperscan: {err}")]) from err
        return db

    def serialize(self) -> tuple[bytes, bytes]:
        return self._hs.dumpb(self._db), self._hs.dumpb(self._once_db())

    def _scratch(self, once: bool = False) -> Any:  # a hyperscan.Scratch (hyperscan is imported lazily)
        # Scratch spaces per thread: activities classify concurrently in a thread pool.
        name = "once" if once else "scratch"
        scratch = getattr(self._local, name, None)
        if scratch is None:
            scratch = self._hs.Scratch(self._once_db() if once else self._db)
            setattr(self._local, name, scratch)
        return scratch

    def scan(self, chunk: bytes, on_match: OnMatch) -> None:
        def handler(index: int, _start: int, end: int, _flags: int, _ctx: object) -> None:
            on_match(index, end)

        self._db.scan(chunk, match_event_handler=handler, scratch=self._scratch())

    def present(self, chunk: bytes) -> set[int]:
        found: set[int] = set()

        def handler(index: int, _start: int, _end: int, _flags: int, _ctx: object) -> None:
            found.add(index)

        once = self._once_db()
        once.scan(chunk, match_event_handler=handler, scratch=self._scratch(once=True))
        return found


def make_engine(kb: KnowledgeBase, prefer: str = "auto") -> Engine:
    """The fastest engine available (``prefer``: auto, hyperscan or re)."""
    if prefer == "re":
        return RegexEngine(kb)
    try:
        return HyperscanEngine(kb)
    except ImportError:
        if prefer == "hyperscan":
            raise
        return RegexEngine(kb)


@dataclass(slots=True)
class Hit:
    """A confirmed match of one entry on one line."""

    line: int
    """1-based line number in the log."""
    text: bytes
    """The line, cleaned of ANSI escapes and CR."""


@dataclass
class ScanResult:
    """What a scan found: per entry, how many lines matched and the last few hits."""

    hits: dict[int, deque[Hit]] = field(default_factory=dict)
    lines: int = 0
    matched_lines: int = 0
    """Lines that matched at least one entry (what ``grep -c`` counts), except in dense chunks,
    where only the lines read for the last hits are counted."""
    dense_chunks: int = 0
    bytes_read: int = 0
    nonblank: bool = False
    tail: bytes = b""
    """The last :data:`TAIL_BYTES` of the cleaned log, cut at a line start: the failure window."""

    def last_hit(self, index: int) -> Hit | None:
        kept = self.hits.get(index)
        return kept[-1] if kept else None


def clean(chunk: bytes) -> bytes:
    """``chunk`` without ANSI escape sequences and with CRLF line ends made LF."""
    if b"\x1b" in chunk:
        # split + join is faster than sub here: no match objects for the many short escapes.
        chunk = b"".join(_ANSI.split(chunk))
    if b"\r" in chunk:
        chunk = chunk.replace(b"\r\n", b"\n")
    return chunk


def line_chunks(source: BinaryIO | Iterable[bytes], chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    """Pieces of ``source`` that end at line ends (except the last), each about ``chunk_bytes``;
    a run of :data:`MAX_LINE_BYTES` bytes without a line end is cut off with one added."""
    blocks: Iterable[bytes]
    if hasattr(source, "read"):
        reader = source.read
        blocks = iter(lambda: reader(chunk_bytes), b"")
    else:
        blocks = source
    pending = b""
    for block in blocks:
        if not block:
            continue
        cut = block.rfind(b"\n")
        if cut < 0:
            pending += block
        else:
            # One copy per chunk: the carried partial line joined to the block up to its last line end.
            head = memoryview(block)[: cut + 1]
            yield from _cut_runs(pending + head if pending else bytes(head))
            pending = block[cut + 1:]
        while len(pending) >= MAX_LINE_BYTES:
            # No line end in sight: cut the line rather than grow without bound.
            yield pending[:MAX_LINE_BYTES] + b"\n"
            pending = pending[MAX_LINE_BYTES:]
    if pending:
        yield pending


def _cut_runs(chunk: bytes) -> Iterator[bytes]:
    if len(chunk) < MAX_LINE_BYTES:
        yield chunk
        return
    pieces: list[tuple[int, int, bool]] = []
    _split_runs(chunk, 0, len(chunk), pieces)
    if len(pieces) == 1:
        yield chunk
        return
    for start, end, cut in pieces:
        yield chunk[start:end] + b"\n" if cut else chunk[start:end]


Buffer = bytes | mmap.mmap
Source = Buffer | bytearray | memoryview | BinaryIO | Iterable[bytes]


def _as_buffer(source: Source) -> tuple[Buffer | None, Callable[[], None]]:
    """``source`` as one buffer that can be read from any end (bytes, or a regular file mapped
    into memory, read-only), and what releases it; None for a pipe, a socket or an iterable."""
    if isinstance(source, bytes):
        return source, lambda: None
    if isinstance(source, (bytearray, memoryview)):
        return bytes(source), lambda: None
    fileno = getattr(source, "fileno", None)
    if fileno is None:
        return None, lambda: None
    try:
        fd = fileno()
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size == 0 or source.tell() != 0:  # type: ignore[union-attr]
            return None, lambda: None
        mapped = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError, AttributeError):  # no real file behind it, or one that cannot be mapped
        return None, lambda: None
    return mapped, mapped.close


def _split_runs(buffer: Buffer, start: int, stop: int, pieces: list[tuple[int, int, bool]]) -> None:
    """Append ``buffer[start:stop]`` (which starts a line) to ``pieces`` as (start, end, cut), with
    every run of :data:`MAX_LINE_BYTES` bytes without a line end cut off as a piece of its own."""
    at = start
    while stop - at >= MAX_LINE_BYTES:
        line_end = buffer.rfind(b"\n", at, at + MAX_LINE_BYTES)
        if line_end >= 0:
            at = line_end + 1  # a few steps per chunk: each skips up to MAX_LINE_BYTES
            continue
        if at > start:
            pieces.append((start, at, False))
        pieces.append((at, at + MAX_LINE_BYTES, True))
        start = at = at + MAX_LINE_BYTES
    if start < stop:
        pieces.append((start, stop, False))


def _buffer_chunks(buffer: Buffer, chunk_bytes: int) -> list[tuple[int, int, bool]]:
    """(start, end, cut) of ``buffer``'s chunks: about ``chunk_bytes`` each, ending at line ends;
    ``cut`` marks a piece of an over-long line, which reads as if a line end followed it."""
    pieces: list[tuple[int, int, bool]] = []
    start, size, released = 0, len(buffer), 0
    while start < size:
        end = min(start + chunk_bytes, size)
        cut = buffer.rfind(b"\n", start, end) if end < size else size - 1
        if cut < start:  # no line end within chunk_bytes: up to the next one
            line_end = buffer.find(b"\n", end)
            cut = size - 1 if line_end < 0 else line_end
        _split_runs(buffer, start, cut + 1, pieces)
        _release(buffer, released, cut + 1 - (cut + 1) % mmap.PAGESIZE)
        released = max(released, cut + 1 - (cut + 1) % mmap.PAGESIZE)
        start = cut + 1
    return pieces


FAULT_AROUND_BYTES = 256 << 10
"""How far past what was read the pages of a mapped log are released again (Linux maps 64 KiB)."""


def _release(buffer: Buffer, start: int, end: int) -> None:
    """Drop the pages of a mapped file in [start, end) (page-aligned) from this process's memory:
    they stay in the page cache, and are mapped again if read again."""
    if end > start and isinstance(buffer, mmap.mmap) and hasattr(buffer, "madvise"):
        buffer.madvise(mmap.MADV_DONTNEED, start, end - start)


def _copies(buffer: Buffer, pieces: Iterable[tuple[int, int, bool]]) -> Iterator[bytes]:
    """Each piece of ``buffer`` as bytes (with its line end added if it was cut). Pages of a mapped
    file are released once copied, so that resident memory does not grow with the log (they stay
    in the page cache)."""
    released = len(buffer)
    for start, end, cut in pieces:
        piece = buffer[start:end]
        yield piece + b"\n" if cut else piece
        page = start - start % mmap.PAGESIZE
        # Reading a page maps its neighbours too (the kernel's fault-around): some above the piece.
        _release(buffer, page, min(len(buffer), released + FAULT_AROUND_BYTES))
        released = min(released, page)


@dataclass
class _Backward:
    """What a backward scan has found so far, from the end of the log up."""

    hits: dict[int, list[Hit]] = field(default_factory=dict)
    """Per entry, its hits, last first; ``Hit.line`` holds minus the lines below the hit until the end."""
    confirmed_on: dict[int, int] = field(default_factory=dict)
    """Per entry, the lines of dense chunks where it was confirmed (owned or not)."""
    done: set[int] = field(default_factory=set)
    """Entries whose last hits are all found."""


_DONE = object()


def _line_ends(chunk: bytes) -> int:
    # Measuring what replace() removes is about twice as fast as bytes.count here.
    return len(chunk) - len(chunk.replace(b"\n", b""))


def _cleaned(raw: bytes) -> tuple[int, bytes, int, bool]:
    """(raw size, cleaned chunk, line ends in it, whether its last line is open). Openness is the
    raw chunk's: a last line made only of escapes cleans to nothing, yet it is a line of the log."""
    cleaned = clean(raw)
    return len(raw), cleaned, _line_ends(cleaned), not raw.endswith(b"\n")


def _read_ahead(chunks: Iterator[bytes]) -> Iterator[tuple[int, bytes, int, bool]]:
    """:func:`_cleaned` chunks; past the first chunk, reading and cleaning run in a helper thread
    while the caller scans (Hyperscan releases the GIL), at most two chunks ahead."""
    first = next(chunks, None)
    if first is None:
        return
    second = next(chunks, None)
    if second is None:
        yield _cleaned(first)
        return
    ahead: queue.Queue[object] = queue.Queue(maxsize=2)
    stop = threading.Event()

    def offer(item: object) -> bool:
        """Queue ``item`` unless the caller has stopped reading; False once it has."""
        while not stop.is_set():
            try:
                ahead.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for raw in itertools.chain([second], chunks):
                if not offer(_cleaned(raw)):
                    return
            offer(_DONE)
        except BaseException as err:  # a read error reaches the caller, in its thread
            offer(err)

    helper = threading.Thread(target=produce, name="log-read-ahead", daemon=True)
    helper.start()
    try:
        yield _cleaned(first)
        while (item := ahead.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        helper.join()


class Scanner:
    """Runs one engine over a log and confirms each candidate line."""

    def __init__(self, kb: KnowledgeBase, engine: Engine | None = None, chunk_bytes: int = CHUNK_BYTES) -> None:
        self.kb = kb
        self.engine = engine or make_engine(kb)
        self.chunk_bytes = chunk_bytes
        # Compiled on first use: a short log needs only a few of them, and start-up counts for the CLI.
        self._confirm: list[re.Pattern[bytes] | None] = [None] * len(kb.entries)
        # Anchors never own a line; among the others the heavier entry wins (ties: by id).
        self._rank = [(-1.0, e.id) if e.kind is EntryKind.ANCHOR else (e.weight, e.id) for e in kb.entries]
        self._always_kept = [e.kind is not EntryKind.CAUSE for e in kb.entries]

    def _confirmed(self, index: int, line: bytes) -> bool:
        rx = self._confirm[index]
        if rx is None:
            rx = self._confirm[index] = re.compile(expand_anchors(self.kb.entries[index].pattern).encode())
        return rx.search(line) is not None

    def scan(self, source: Source) -> ScanResult:
        """Scan a log: bytes, a binary file or an iterable of byte blocks. Bytes and regular files
        are read from the end backwards (:meth:`_scan_buffer`); other streams from the start."""
        buffer, close = _as_buffer(source)
        if buffer is None:
            return self._scan_stream(source)  # type: ignore[arg-type]
        try:
            return self._scan_buffer(buffer)
        finally:
            close()

    def _scan_stream(self, source: BinaryIO | Iterable[bytes]) -> ScanResult:
        result = ScanResult()
        line_base = 0  # lines before the current chunk
        tail = b""
        dense = False
        for raw_size, chunk, line_ends, open_end in _read_ahead(line_chunks(source, self.chunk_bytes)):
            result.bytes_read += raw_size
            if not result.nonblank and chunk.strip():
                result.nonblank = True
            dense = self._scan_chunk(chunk, line_base, result, dense)
            line_base += line_ends + open_end
            tail = (tail + chunk)[-TAIL_BYTES:] if len(chunk) < TAIL_BYTES else chunk[-TAIL_BYTES:]
        result.lines = line_base
        if len(tail) == TAIL_BYTES and (cut := tail.find(b"\n")) >= 0:
            tail = tail[cut + 1:]
        result.tail = tail
        return result

    def _scan_buffer(self, buffer: Buffer) -> ScanResult:
        """Scan ``buffer`` from its end backwards: only the last :data:`HITS_KEPT` hits of each entry
        are kept, so once an entry has them, nothing further up can change them. A dense chunk
        (see the module's doc) in which no entry still wanted occurs costs one fast pass."""
        result = ScanResult()
        state = _Backward()
        pieces = _buffer_chunks(buffer, self.chunk_bytes)
        raw = _copies(buffer, reversed(pieces))
        lines_below, tail, dense = 0, b"", False
        everything = len(self.kb.entries)
        for raw_size, chunk, line_ends, open_end in _read_ahead(raw):
            result.bytes_read += raw_size
            if not result.nonblank and chunk.strip():
                result.nonblank = True
            lines = line_ends + open_end
            if len(tail) < TAIL_BYTES:
                tail = chunk[-TAIL_BYTES:] + tail
            if len(state.done) < everything:
                dense = self._scan_back(chunk, lines, lines_below, line_ends, result, state, dense)
            lines_below += lines
        result.lines = lines_below
        for index, kept in state.hits.items():
            for hit in kept:
                hit.line += lines_below
            result.hits[index] = deque(reversed(kept), maxlen=HITS_KEPT)
        tail = tail[-TAIL_BYTES:]
        if len(tail) == TAIL_BYTES and (cut := tail.find(b"\n")) >= 0:
            tail = tail[cut + 1:]
        result.tail = tail
        return result

    def _scan_back(self, chunk: bytes, lines: int, lines_below: int, line_ends: int, result: ScanResult,
                   state: _Backward, after_dense: bool) -> bool:
        """Record ``chunk``'s hits that are still wanted; True if it was read as a dense chunk."""
        if not after_dense:
            try:
                candidates = self._candidates(chunk, DENSE_CANDIDATES)
            except DenseChunk:
                after_dense = True
        if after_dense:
            return self._scan_back_dense(chunk, lines, lines_below, line_ends, result, state)
        # A line starting at p has lines - 1 - (line ends before p) lines below it in the chunk.
        found, counted_to, before = [], 0, 0
        for start, stop, confirmed in self._confirmed_lines(chunk, candidates):
            before += chunk.count(b"\n", counted_to, start)
            counted_to = start
            found.append((lines_below + lines - 1 - before, chunk[start:stop], confirmed))
        for below, text, confirmed in reversed(found):
            self._record_back(result, state, below, text, confirmed)
        return False

    def _scan_back_dense(self, chunk: bytes, lines: int, lines_below: int, line_ends: int, result: ScanResult,
                         state: _Backward) -> bool:
        result.dense_chunks += 1
        wanted = self.engine.present(chunk) - state.done
        if not wanted:
            return True  # one fast pass: nothing here can change the hits kept
        read, windows = 0, 0
        end, ends_after = len(chunk), 0  # line ends in chunk[end:]
        while end > 0 and wanted:
            begin = chunk.rfind(b"\n", 0, end - DENSE_WINDOW_BYTES) + 1 if end > DENSE_WINDOW_BYTES else 0
            window = chunk[begin:end]
            window_ends = ends_after
            ends_after += window.count(b"\n")
            end = begin
            if not self.engine.present(window) & wanted:
                continue  # one fast pass says nothing still wanted is here: skip the line-by-line work
            windows += 1
            found = list(self._confirmed_lines(window, self._candidates(window, None)))
            read += len(found)
            for start, stop, confirmed in reversed(found):
                # Line ends at or after the line's start, in the chunk: those below it, plus its own.
                ends_from = window_ends + window.count(b"\n", start)
                below = lines_below + lines - 1 - (line_ends - ends_from)
                self._record_back(result, state, below, window[start:stop], confirmed)
                for index in confirmed:
                    state.confirmed_on[index] = state.confirmed_on.get(index, 0) + 1
            # Taken as done once shadowed on enough lines, but only after the whole window, as
            # every line of a window read is recorded.
            state.done.update(i for i in wanted if state.confirmed_on.get(i, 0) >= SHADOWED_LINES)
            wanted -= state.done
        return read >= DENSE_LINES_PER_WINDOW * max(1, windows)

    def _record_back(self, result: ScanResult, state: _Backward, below: int, text: bytes, indexes: list[int]) -> None:
        result.matched_lines += 1
        for index in self._owned(indexes):
            if index in state.done:
                continue
            kept = state.hits.setdefault(index, [])
            kept.append(Hit(-below, text))
            if len(kept) >= HITS_KEPT:
                state.done.add(index)

    def _candidates(self, chunk: bytes, limit: int | None) -> list[tuple[int, int, int]]:
        """(line start, entry, line end) of each entry's candidate lines in ``chunk``, in order;
        DenseChunk once more than ``limit`` turn up."""
        seen_until: dict[int, int] = {}
        candidates: list[tuple[int, int, int]] = []

        def on_match(index: int, end: int) -> None:
            # An engine reports every end offset; one candidate per entry and line is enough.
            if end <= seen_until.get(index, -1):
                return
            start = chunk.rfind(b"\n", 0, end) + 1
            stop = chunk.find(b"\n", end)
            if stop < 0:
                stop = len(chunk)
            seen_until[index] = stop
            candidates.append((start, index, stop))
            if limit is not None and len(candidates) > limit:
                raise DenseChunk

        self.engine.scan(chunk, on_match)  # DenseChunk raised in on_match stops the scan and comes through
        candidates.sort()
        return candidates

    def _confirmed_lines(
        self, chunk: bytes, candidates: list[tuple[int, int, int]]
    ) -> Iterator[tuple[int, int, list[int]]]:
        """(line start, line end, confirmed entries) of each line with at least one confirmed candidate."""
        confirmed: list[int] = []
        for position, (start, index, stop) in enumerate(candidates):
            if self._confirmed(index, chunk[start:stop]):
                confirmed.append(index)
            if position + 1 < len(candidates) and candidates[position + 1][0] == start:
                continue  # more candidates on this line
            if confirmed:
                yield start, stop, confirmed
                confirmed = []

    def _scan_chunk(self, chunk: bytes, line_base: int, result: ScanResult, after_dense: bool = False) -> bool:
        """Record ``chunk``'s hits; True if it was read as a dense chunk. After a dense chunk the
        next is taken as dense too, without first paying for the candidates that prove it."""
        if after_dense:
            return self._scan_dense(chunk, line_base, result)
        try:
            candidates = self._candidates(chunk, DENSE_CANDIDATES)
        except DenseChunk:
            return self._scan_dense(chunk, line_base, result)
        counted_to, line = 0, line_base + 1
        for start, stop, confirmed in self._confirmed_lines(chunk, candidates):
            line += chunk.count(b"\n", counted_to, start)
            counted_to = start
            self._record(result, line, chunk[start:stop], confirmed)
        return False

    def _scan_dense(self, chunk: bytes, line_base: int, result: ScanResult) -> bool:
        """Read ``chunk`` backwards for its last hits; True if it still looked dense (many matching
        lines in the windows read), so the next chunk is read this way too."""
        result.dense_chunks += 1
        wanted = self.engine.present(chunk)
        recorded: dict[int, int] = {}
        confirmed_on: dict[int, int] = {}
        windows: list[tuple[int, list[tuple[int, int, list[int]]]]] = []
        end = len(chunk)
        while end > 0 and wanted:
            begin = chunk.rfind(b"\n", 0, end - DENSE_WINDOW_BYTES) + 1 if end > DENSE_WINDOW_BYTES else 0
            window = chunk[begin:end]
            end = begin
            if not self.engine.present(window) & wanted:
                continue  # one fast pass says nothing still wanted is here: skip the line-by-line work
            lines = list(self._confirmed_lines(window, self._candidates(window, None)))
            windows.append((begin, lines))
            for _start, _stop, confirmed in lines:
                owned = self._owned(confirmed)
                for index in confirmed:
                    confirmed_on[index] = confirmed_on.get(index, 0) + 1
                    if index in owned:
                        recorded[index] = recorded.get(index, 0) + 1
            wanted = {i for i in wanted
                      if recorded.get(i, 0) < HITS_KEPT and confirmed_on.get(i, 0) < SHADOWED_LINES}
        line, counted_to = line_base + 1, 0
        for begin, lines in reversed(windows):
            for start, stop, confirmed in lines:
                line += chunk.count(b"\n", counted_to, begin + start)
                counted_to = begin + start
                self._record(result, line, chunk[begin + start:begin + stop], confirmed)
        return sum(len(lines) for _begin, lines in windows) >= DENSE_LINES_PER_WINDOW * max(1, len(windows))

    def _owned(self, indexes: list[int]) -> list[int]:
        # Where entries of several classes match one line, the most specific entry decides what
        # the line is: "java.io.IOException: No space left on device" is a full disk, not a
        # generic exception. Anchors and retry-after entries are kept whatever the owner.
        if len(indexes) == 1:
            return indexes
        owner = max(indexes, key=self._rank.__getitem__)
        owner_class = self.kb.entries[owner].failure_type
        return [i for i in indexes if self._always_kept[i] or self.kb.entries[i].failure_type is owner_class]

    def _record(self, result: ScanResult, line: int, text: bytes, indexes: list[int]) -> None:
        result.matched_lines += 1
        for index in self._owned(indexes):
            kept = result.hits.get(index)
            if kept is None:
                kept = result.hits[index] = deque(maxlen=HITS_KEPT)
            kept.append(Hit(line, text))
