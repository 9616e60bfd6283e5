"""The one error type of sessionctl and the exit codes it maps to.

Every failure the user can cause or meet (bad input, a missing or corrupt store, a lock held by
someone else) is raised as `SessionctlError`; the command line prints it as one line on stderr
and exits with its code. Anything else is a bug.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Documented exit statuses (README, man page). Keep them few and stable."""

    OK = 0
    #: The command worked and found something: invalid sessions (validate), a threshold crossed
    #: (stats), some deletions failed while others succeeded (cleanup), archived sessions the
    #: store cannot hold (restore).
    FINDINGS = 1
    #: Bad command line or configuration: nothing was read or changed.
    USAGE = 2
    #: The store is missing, unreadable, corrupt or not recognised: nothing was changed.
    STORE = 3
    #: The store or its cleanup lock is held by another process. Nothing was changed, except
    #: by a cleanup that met a locked SQLite database part-way: it stops there, and reports and
    #: archives what it had removed.
    BUSY = 4
    #: A cleanup selected sessions but could remove none of them (every hook or delete failed).
    FAILED = 5
    #: An unexpected internal error (a bug): please report it.
    INTERNAL = 70
    #: Interrupted (Ctrl-C, SIGINT): a cleanup stops between batches; what it removed is archived.
    INTERRUPTED = 130


class SessionctlError(Exception):
    """A failure with a message for the operator and the exit code that goes with it.

    `hint` says what to do about it; it is appended to the one-line message.
    """

    def __init__(self, message: str, code: ExitCode = ExitCode.STORE, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.code = ExitCode(code)
        self.hint = hint

    def one_line(self) -> str:
        text = self.message if not self.hint else f"{self.message} ({self.hint})"
        # One line, whatever the message carried (paths and ids may hold newlines).
        return " ".join(text.split())


def usage_error(message: str, hint: str | None = None) -> SessionctlError:
    return SessionctlError(message, ExitCode.USAGE, hint)


def store_error(message: str, hint: str | None = None) -> SessionctlError:
    return SessionctlError(message, ExitCode.STORE, hint)


def busy_error(message: str, hint: str | None = None) -> SessionctlError:
    return SessionctlError(message, ExitCode.BUSY, hint)


def nested_too_deeply() -> SessionctlError:
    """Data nested hundreds of levels deep (a RecursionError met while reading or writing it)."""
    return store_error(
        "the store holds data nested too deeply to be read or archived safely",
        "no session nests hundreds of levels deep: is this the right store?",
    )
