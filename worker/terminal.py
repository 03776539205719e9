"""What the terminal on the other end of a stream can take."""

from __future__ import annotations

import os
from typing import TextIO


def use_color(stream: TextIO) -> bool:
    """Colour only for a terminal, and never when ``NO_COLOR`` is set to anything (no-color.org)."""
    return not os.environ.get("NO_COLOR") and stream.isatty()
