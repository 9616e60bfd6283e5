"""One cleanup at a time per store: an flock'ed file in the state folder, named after the store.

The kernel drops an flock when its holder dies, even by SIGKILL, so a crashed run never leaves a
stale lock behind. The file records who holds it, for the message the second run prints.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
import time
from pathlib import Path

from .errors import busy_error, store_error
from .fsutil import ensure_private_dir, os_error_text


def lock_path(state_dir: Path, identity: str) -> Path:
    digest = hashlib.sha256(identity.encode()).hexdigest()[:20]
    return state_dir / "locks" / f"{digest}.lock"


class StoreLock:
    def __init__(self, state_dir: Path, identity: str, label: str):
        self.path = lock_path(state_dir, identity)
        self.identity = identity
        self.label = label
        self._fd: int | None = None

    def acquire(self) -> StoreLock:
        ensure_private_dir(self.path.parent)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise store_error(
                f"cannot create lock file {self.path}: {os_error_text(exc)}", "nothing was changed"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe_holder(fd)
            os.close(fd)
            raise busy_error(
                f"another cleanup of {self.label} is running ({holder})",
                "nothing was changed; it will be done by that run",
            ) from None
        except OSError as exc:
            os.close(fd)
            raise store_error(
                f"cannot lock {self.path}: {os_error_text(exc)}", "nothing was changed"
            ) from None
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "store": self.identity,
        }
        # Who holds the lock is only for the message a second run prints: a full disk must
        # not stop the cleanup (the flock is what counts).
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps(holder).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> StoreLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _describe_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "holder unknown"
    return f"pid {info.get('pid')} on {info.get('host')} since {info.get('since')}"
