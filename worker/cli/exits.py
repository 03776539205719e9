"""Exit statuses, and the one table that maps an error to its status.

0 success; 1 the run failed or was cancelled; 2 bad input (plan, workspace, settings, arguments);
3 Temporal or the database could not be reached.
"""

from __future__ import annotations

import sys

EXIT_OK, EXIT_RUN_FAILED, EXIT_BAD_INPUT, EXIT_UNAVAILABLE = 0, 1, 2, 3


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        self.code = code


# Error type -> exit status, by module and class name: a module that was never imported cannot
# have raised, so the table is checked without importing anything.
_ERROR_EXITS: list[tuple[str, tuple[str, ...], int]] = [
    ("metabuilder.domain.plans", ("PlanError",), EXIT_BAD_INPUT),
    ("metabuilder.activities.git", ("NotAGitRepository",), EXIT_BAD_INPUT),
    ("metabuilder.service.runs", ("RunExistsError",), EXIT_BAD_INPUT),
    ("metabuilder.service.errors", ("NotFound",), EXIT_BAD_INPUT),
    ("metabuilder.worker.devserver", ("DevServerError",), EXIT_UNAVAILABLE),
    ("metabuilder.activities.git", ("GitError",), EXIT_UNAVAILABLE),
    ("temporalio.service", ("RPCError",), EXIT_UNAVAILABLE),
    ("metabuilder.service.errors", ("Unavailable",), EXIT_UNAVAILABLE),
]


def known_exit(err: BaseException) -> int | None:
    if isinstance(err, CliError):
        return err.code
    for module_name, names, code in _ERROR_EXITS:
        module = sys.modules.get(module_name)
        if module is not None and isinstance(err, tuple(getattr(module, n) for n in names)):
            return code
    if isinstance(err, (ValueError, OSError)):
        return getattr(err, "code", EXIT_BAD_INPUT)
    return None
