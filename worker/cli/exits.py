"""Exit statuses, and the one table that maps an error to its status.

0 success; 1 the run failed or was cancelled; 2 bad input (plan, workspace, settings, arguments,
an unknown id, a state that does not allow it); 3 Temporal or the database could not be reached.
"""

from __future__ import annotations

from metabuilder.service.errors import ErrorKind, kind_of

EXIT_OK, EXIT_RUN_FAILED, EXIT_BAD_INPUT, EXIT_UNAVAILABLE = 0, 1, 2, 3

EXITS: dict[ErrorKind, int] = {
    ErrorKind.BAD_INPUT: EXIT_BAD_INPUT,
    ErrorKind.NOT_FOUND: EXIT_BAD_INPUT,
    ErrorKind.CONFLICT: EXIT_BAD_INPUT,
    ErrorKind.UNAVAILABLE: EXIT_UNAVAILABLE,
}
"""What each kind of refusal is to a shell, as ``api/errors.py``'s ``STATUS`` says it in HTTP."""

PROCESS_ERRORS: tuple[tuple[str, str, ErrorKind], ...] = (
    ("metabuilder.adapters.git", "NotAGitRepository", ErrorKind.BAD_INPUT),
    ("metabuilder.worker.devserver", "DevServerError", ErrorKind.UNAVAILABLE),
    ("metabuilder.adapters.git", "GitError", ErrorKind.UNAVAILABLE),
    ("temporalio.service", "RPCError", ErrorKind.UNAVAILABLE),
)
"""What the CLI meets beyond the service layer's errors (``service.errors.KINDS``): the user's
git checkout, the embedded dev server, a Temporal call made directly. By module and class name,
like ``KINDS``: a module never imported cannot have raised."""


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        self.code = code


def known_exit(err: BaseException) -> int | None:
    """The exit status for ``err``; None for an error nothing expects (a bug: the caller logs it)."""
    if isinstance(err, CliError):
        return err.code
    kind = kind_of(err) or kind_of(err, PROCESS_ERRORS)
    if kind is not None:
        return EXITS[kind]
    if isinstance(err, (ValueError, OSError)):
        return getattr(err, "code", EXIT_BAD_INPUT)
    return None

