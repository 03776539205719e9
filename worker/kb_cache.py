"""The knowledge base and its compiled Hyperscan databases, cached on disk for the CLI.

Parsing the YAML and compiling about 150 patterns takes longer than classifying a short log, and a
``metabuilder classify`` process starts afresh each time. The cache key is a hash of everything the
result depends on: the bytes of each pattern file, the source of the modules that parse and expand
the patterns, and the Hyperscan and Python versions. So an edited pattern file, or a new release,
is simply a new key, and the old files are left to age out (they are a few hundred KB).

The files are JSON (the entries) and Hyperscan's own serialized format; nothing is unpickled. A
cache that cannot be read or written is rebuilt or skipped, never an error.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from metabuilder.domain import knowledge, scanner
from metabuilder.domain.knowledge import BUNDLED_PATH, KnowledgeBase, bundled_knowledge_base, load_knowledge_base
from metabuilder.domain.scanner import Engine, HyperscanEngine, make_engine

FORMAT = "kb-cache-1"


def cache_dir() -> Path:
    home = os.environ.get("META_BUILDER_HOME")
    if home:
        return Path(home).expanduser() / "kb-cache"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "metabuilder" / "kb"


def _key(files: Sequence[Path]) -> str:
    digest = hashlib.sha256(FORMAT.encode())
    try:
        import hyperscan

        digest.update(f"hyperscan {getattr(hyperscan, '__version__', '?')}".encode())
    except ImportError:
        digest.update(b"no hyperscan")
    digest.update(sys.version.encode())
    for module in (knowledge, scanner):
        digest.update(Path(module.__file__ or "").read_bytes())
    for path in files:
        data = path.read_bytes()
        digest.update(f"{len(data)}:".encode())
        digest.update(data)
    return digest.hexdigest()[:32]


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)  # atomic: a concurrent reader sees the old file or the whole new one
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _parse(extra_files: Sequence[Path]) -> KnowledgeBase:
    kb = bundled_knowledge_base()
    for path in extra_files:
        kb = kb.extended(load_knowledge_base(path).entries)
    return kb


def load(extra_files: Sequence[str | Path] = (), engine: str = "auto",
         directory: Path | None = None) -> tuple[KnowledgeBase, Engine]:
    """The bundled base plus ``extra_files``, and an engine for it, from the cache when it can."""
    extra = [Path(p) for p in extra_files]
    for path in extra:
        if not path.is_file():
            # Let the loader name the problem as it does for any bad file.
            load_knowledge_base(path)
    if engine == "re":
        kb = _parse(extra)
        return kb, make_engine(kb, "re")
    directory = directory or cache_dir()
    try:
        key = _key([BUNDLED_PATH, *extra])
    except OSError:
        kb = _parse(extra)
        return kb, make_engine(kb, engine)
    entries_file, db_file, once_file = (directory / f"{key}.{ext}" for ext in ("json", "hs", "once.hs"))
    try:
        kb = KnowledgeBase.from_records(json.loads(entries_file.read_bytes()))
        return kb, HyperscanEngine(kb, (db_file.read_bytes(), once_file.read_bytes()))
    except ImportError:
        return kb, make_engine(kb, engine)
    except Exception:  # missing, partial or foreign-platform cache: rebuild it
        pass
    kb = _parse(extra)
    built = make_engine(kb, engine)
    if isinstance(built, HyperscanEngine):
        try:
            db, once = built.serialize()
            _write(db_file, db)
            _write(once_file, once)
            _write(entries_file, json.dumps(kb.to_records()).encode())  # last: it marks the set complete
        except OSError:
            pass
    return kb, built
