"""``metabuilder``: the command line. ``entry`` parses and dispatches; each command group has
its module, whose command bodies import what they use when they run, so that building the
parser (every call, ``--help`` and completion included) stays cheap."""

from metabuilder.worker.cli.entry import entry_point, main

__all__ = ["entry_point", "main"]
