"""``python -m metabuilder.worker.cli``: the same as the ``metabuilder`` console script."""

from metabuilder.worker.cli.entry import entry_point

entry_point()
