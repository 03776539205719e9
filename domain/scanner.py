"""Streaming a log through every knowledge-base pattern at once, in bounded memory.

The log is read in chunks cut at line ends. Each chunk is cleaned (ANSI escapes removed, CRLF
made LF) and handed to a multi-pattern engine, which reports candidate matches; each candidate
line is then confirmed with Python ``re`` on that line alone, so both engines agree exactly:

- :class:`HyperscanEngine` (the default where the ``hyperscan`` wheel exists) scans a chunk for all
  patterns in one pass, at hundreds of MB/s.
- :class:`RegexEngine` tries each pattern in turn with ``re``: a thousand times slower, kept as
  the portable fallback and as the reference the fast engine is tested against.

Only the last few hits per pattern are kept, so memory does not grow with the log.
"""

from __future__ import annotations

import itertools
import queue
import re
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol

from domain.knowledge import EntryKind, KnowledgeBase, KnowledgeBaseError, Problem

CHUNK_BYTES = 256 << 10
"""Bytes read at a time; a chunk ends at a line end."""
MAX_LINE_BYTES = 64 << 10
"""A longer line (or a log without newlines) is cut into pieces of this size."""
HITS_KEPT = 3
"""Hits kept per pattern: the last ones, nearest the failure."""

# One literal prefix (ESC) lets ``re`` skip to candidates quickly; CSI, OSC and two-byte escapes.
_ANSI = re.compile(rb"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b\n]*(?:\x07|\x1b\\)?|[@-Z\\-_])")

OnMatch = Callable[[int, int], None]
"""Called with (entry index, end offset in the chunk) for every candidate match."""


class Engine(Protocol):
    name: str

    def scan(self, chunk: bytes, on_match: OnMatch) -> None: ...


class RegexEngine:
    """Every pattern tried in turn with Python ``re`` (the reference engine)."""

    name = "re"

    def __init__(self, kb: KnowledgeBase) -> None:
        self._compiled = [re.compile(p.encode(), re.MULTILINE) for p in kb.patterns]

    def scan(self, chunk: bytes, on_match: OnMatch) -> None:
        for index, rx in enumerate(self._compiled):
            for m in rx.finditer(chunk):
                on_match(index, m.end())


class HyperscanEngine:
    """All patterns in one Hyperscan block-mode database."""

    name = "hyperscan"

    def __init__(self, kb: KnowledgeBase) -> None:
        import hyperscan

        self._hs = hyperscan
        self._db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
        patterns = [p.encode() for p in kb.patterns]
        try:
            self._db.compile(expressions=patterns, ids=list(range(len(patterns))), elements=len(patterns),
                             flags=hyperscan.HS_FLAG_MULTILINE)
        except hyperscan.error as err:
            raise KnowledgeBaseError([Problem("<knowledge base>", None, "pattern", f"hyperscan: {err}")]) from err
        self._local = threading.local()

    def scan(self, chunk: bytes, on_match: OnMatch) -> None:
        # One scratch space per thread: activities classify concurrently in a thread pool.
        scratch = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = self._local.scratch = self._hs.Scratch(self._db)

        def handler(index: int, _start: int, end: int, _flags: int, _ctx: object) -> None:
            on_match(index, end)

        self._db.scan(chunk, match_event_handler=handler, scratch=scratch)


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
    counts: dict[int, int] = field(default_factory=dict)
    lines: int = 0
    matched_lines: int = 0
    """Lines that matched at least one entry (what ``grep -c`` counts)."""
    bytes_read: int = 0
    nonblank: bool = False

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
    """Pieces of ``source`` that end at line ends (except the last), each about ``chunk_bytes``."""
    blocks: Iterable[bytes]
    if hasattr(source, "read"):
        reader = source.read  # type: ignore[union-attr]
        blocks = iter(lambda: reader(chunk_bytes), b"")
    else:
        blocks = source  # type: ignore[assignment]
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
            yield pending + head if pending else bytes(head)
            pending = block[cut + 1:]
        while len(pending) >= MAX_LINE_BYTES:
            # No line end in sight: cut the line rather than grow without bound.
            yield pending[:MAX_LINE_BYTES] + b"\n"
            pending = pending[MAX_LINE_BYTES:]
    if pending:
        yield pending


_DONE = object()


def _line_ends(chunk: bytes) -> int:
    # Measuring what replace() removes is about twice as fast as bytes.count here.
    return len(chunk) - len(chunk.replace(b"\n", b""))


def _read_ahead(chunks: Iterator[bytes]) -> Iterator[tuple[int, bytes, int]]:
    """(raw size, cleaned chunk, line ends in it) triples; past the first chunk, reading and cleaning run in a helper
    thread while the caller scans (Hyperscan releases the GIL), at most two chunks ahead."""
    first = next(chunks, None)
    if first is None:
        return
    second = next(chunks, None)
    if second is None:
        cleaned = clean(first)
        yield len(first), cleaned, _line_ends(cleaned)
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
                cleaned = clean(raw)
                if not offer((len(raw), cleaned, _line_ends(cleaned))):
                    return
            offer(_DONE)
        except BaseException as err:  # a read error reaches the caller, in its thread
            offer(err)

    helper = threading.Thread(target=produce, name="log-read-ahead", daemon=True)
    helper.start()
    try:
        cleaned = clean(first)
        yield len(first), cleaned, _line_ends(cleaned)
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
        self._confirm = [re.compile(p.encode()) for p in kb.patterns]
        # Anchors never own a line; among the others the heavier entry wins (ties: by id).
        self._rank = [(-1.0, e.id) if e.kind is EntryKind.ANCHOR else (e.weight, e.id) for e in kb.entries]
        self._always_kept = [e.kind is not EntryKind.CAUSE for e in kb.entries]

    def scan(self, source: BinaryIO | Iterable[bytes]) -> ScanResult:
        result = ScanResult()
        line_base = 0  # lines before the current chunk
        for raw_size, chunk, line_ends in _read_ahead(line_chunks(source, self.chunk_bytes)):
            result.bytes_read += raw_size
            if not result.nonblank and chunk.strip():
                result.nonblank = True
            self._scan_chunk(chunk, line_base, result)
            line_base += line_ends
            if not chunk.endswith(b"\n"):
                line_base += 1
        result.lines = line_base
        return result

    def _scan_chunk(self, chunk: bytes, line_base: int, result: ScanResult) -> None:
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

        self.engine.scan(chunk, on_match)
        candidates.sort()
        counted_to, line = 0, line_base + 1
        confirmed: list[int] = []
        for position, (start, index, stop) in enumerate(candidates):
            if self._confirm[index].search(chunk[start:stop]):
                confirmed.append(index)
            if position + 1 < len(candidates) and candidates[position + 1][0] == start:
                continue  # more candidates on this line
            if confirmed:
                line += chunk.count(b"\n", counted_to, start)
                counted_to = start
                self._record(result, line, chunk[start:stop], confirmed)
                confirmed = []

    def _record(self, result: ScanResult, line: int, text: bytes, indexes: list[int]) -> None:
        # Where entries of several classes match one line, the most specific entry decides what
        # the line is: "java.io.IOException: No space left on device" is a full disk, not a
        # generic exception. Anchors and retry-after entries are kept whatever the owner.
        result.matched_lines += 1
        if len(indexes) > 1:
            owner = max(indexes, key=self._rank.__getitem__)
            owner_class = self.kb.entries[owner].failure_type
            indexes = [i for i in indexes if self._always_kept[i] or self.kb.entries[i].failure_type is owner_class]
        for index in indexes:
            result.counts[index] = result.counts.get(index, 0) + 1
            kept = result.hits.get(index)
            if kept is None:
                kept = result.hits[index] = deque(maxlen=HITS_KEPT)
            kept.append(Hit(line, text))
