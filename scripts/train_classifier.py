"""Build the learned fallback, ``domain/classifier_model.json``, from the labelled corpus.

    python scripts/train_classifier.py [--corpus DIR ...] [--folds 5] [--out FILE]

The same corpus and code give the same file byte for byte: features are CRC-32 hashes, training
is counting, and the temperature and abstention threshold are chosen on leave-tools-out folds
(the figures are printed). Besides each log of 20 lines or more, its first three lines are an UNKNOWN
example, so that a truncated log is not answered. By default it trains on the corpus kept in the repository
(``tests/corpus/own``), so anyone can rebuild it; other corpora can be added with ``--corpus``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from metabuilder.domain.crossval import leave_tools_out, read  # noqa: E402
from metabuilder.domain.evaluation import read_corpus  # noqa: E402
from metabuilder.domain.knowledge import bundled_knowledge_base  # noqa: E402
from metabuilder.domain.learned import BUNDLED_MODEL, train  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", action="append", type=Path, help="labelled corpus (default: tests/corpus/own)")
    parser.add_argument("--folds", type=int, default=5, help="leave-tools-out folds (default 5)")
    parser.add_argument("--out", type=Path, default=BUNDLED_MODEL)
    args = parser.parse_args()
    corpora = args.corpus or [ROOT / "tests" / "corpus" / "own"]
    corpus = [item for directory in corpora for item in read_corpus(directory)]
    kb = bundled_knowledge_base()
    held_out = leave_tools_out(corpus, kb, args.folds)
    print(f"{len(corpus)} logs, {len({i.tool for i in corpus})} tools, {len(held_out.folds)} leave-tools-out folds")
    print(f"  patterns only    {held_out.patterns.summary()}")
    print(f"  model only       {held_out.model.summary()}")
    print(f"  patterns + model {held_out.combined.summary()}")
    print(f"  truncated heads left UNKNOWN: {held_out.heads.accuracy():.3f} of {len(held_out.heads.pairs)}")
    print(f"chosen on the held-out folds: temperature {held_out.temperature:g}, threshold {held_out.threshold:g}")
    reads = read(corpus, kb, heads=True)
    names = ", ".join(str(d.relative_to(ROOT) if d.resolve().is_relative_to(ROOT) else d) for d in corpora)
    model = train([(r.feats, r.item.label) for r in reads], temperature=held_out.temperature,
                  threshold=held_out.threshold, trained_on=f"{len(corpus)} logs of {names}")
    args.out.write_text(model.to_json(), encoding="utf-8")
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
