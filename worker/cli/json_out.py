"""``--json`` output: one JSON document on stdout, with times as ISO 8601."""

from __future__ import annotations

import json
from datetime import datetime
from enum import Enum
from typing import Any


def _plain(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    raise TypeError(f"{type(value).__name__} is not JSON")


def print_json(document: Any) -> None:
    print(json.dumps(document, default=_plain, ensure_ascii=False, indent=2))
