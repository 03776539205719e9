"""How big a plan may be, and why: the limits of the OS that runs its commands and of Temporal,
which carries the plan in the run's workflow input.

A plan over one of these is refused when it is parsed or submitted, naming the limit, rather
than failing at run time with an OS or gRPC error that names neither the plan nor the field.
"""

from __future__ import annotations

KiB, MiB = 1024, 1024 * 1024

# Temporal server defaults (dynamic config), which a submission must stay under.
BLOB_ERROR_BYTES = 2 * MiB
"""``limit.blobSize.error``: one payload (a workflow's input, an activity's input or result)."""
BLOB_WARN_BYTES = 512 * KiB
"""``limit.blobSize.warn``: the server logs a warning for a payload over this."""
GRPC_MESSAGE_BYTES = 4 * MiB
"""The gRPC message size that clients and the server accept by default."""
SEARCH_ATTRIBUTE_VALUE_BYTES = 2 * KiB
"""``frontend.searchAttributesSizeOfValueLimit``: one search attribute's value (the plan's name)."""
SEARCH_ATTRIBUTES_TOTAL_BYTES = 40 * KiB
"""``frontend.searchAttributesTotalSizeLimit``: all of a workflow's search attributes."""

# Linux (execve): one argument or ``NAME=value`` string is at most MAX_ARG_STRLEN (32 pages,
# with its terminating NUL); all of them together at most ARG_MAX (a quarter of the stack
# limit, 2 MiB by default), which the worker's own environment shares with the step's.
OS_ARG_STRING_BYTES = 128 * KiB
OS_ARG_TOTAL_BYTES = 2 * MiB

MAX_PLAN_BYTES = 256 * KiB
"""A plan's YAML text. Hand-written plans are a few KiB; the text travels in the run's input."""
MAX_YAML_DEPTH = 32
"""Nesting levels of a YAML document (a plan nests 5 deep); deeper input is refused before it
can exhaust the parser's recursion."""
MAX_YAML_VALUES = 100_000
"""Values of a YAML document once its aliases (``*name``) are expanded: a short text can repeat
a big mapping many times over."""
MAX_PLAN_NAME_CHARS = 128
"""Within the plan name column (200) and Temporal's search attribute value limit."""
MAX_STEPS = 500
"""Each step adds some 10 to 20 events to the run's history (Temporal stops a run at 51,200)."""
MAX_COMMAND_BYTES = OS_ARG_STRING_BYTES - 1
"""A command is one argument of ``bash -c``."""
MAX_ENV_ENTRY_BYTES = OS_ARG_STRING_BYTES - 1
"""``NAME=value``, one string of the step's environment."""
MAX_STEP_ENV_BYTES = 512 * KiB
"""All of a step's ``NAME=value`` strings: a quarter of ARG_MAX, the rest left to the command
and the worker's own environment."""
MAX_RUN_INPUT_BYTES = BLOB_ERROR_BYTES // 2
"""The run's encoded workflow input (the plan, parsed and as text). Half of Temporal's limit,
since the run's bookkeeping payloads carry the plan again with more beside it."""


def size(n: int) -> str:
    """``262144`` -> ``"256 KiB"``, for messages."""
    if n >= MiB:
        return f"{n / MiB:.3g} MiB"
    if n >= KiB:
        return f"{n / KiB:.3g} KiB"
    return f"{n} bytes"
