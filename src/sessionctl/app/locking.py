"""One cleanup at a time per store: an flock'ed file in the state folder, named after the store.

The kernel drops an flock when its holder dies, even by SIGKILL, so a crashed run never leaves a
stale lock behind. The file records who holds it, for the message the second run prints.

The state folder is one host's: two hosts sharing a store (a JSON file or a folder on NFS) do
not see each other's locks there. With `lock = "store"` a second lock is taken beside the store
itself (`sessions.json.sessionctl.lock`, or `.sessionctl.lock` inside a folder store), which
every host that mounts the store sees; flock over NFS relies on the NFS lock manager.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import socket
import stat
import time
from pathlib import Path

from ..domain.errors import busy_error, store_error
from ..fsutil import ensure_private_dir, os_error_text

#: Where the lock is: "state" (this host's state folder) or "store" (beside the store too).
LOCK_PLACES = ("state", "store")
#: The name of the lock beside a store file (appended to its name) or inside a folder store.
BESIDE_SUFFIX = ".sessionctl.lock"


def lock_path(state_dir: Path, identity: str) -> Path:
    digest = hashlib.sha256(identity.encode()).hexdigest()[:20]
    return state_dir / "locks" / f"{digest}.lock"


def lock_beside(store) -> Path:
    """The lock file beside a store: the store kind's own choice (a folder store keeps it
    inside, as a hidden file it never reads as a session), else `<file>.sessionctl.lock`."""
    own = getattr(store, "lock_beside", None)
    if own is not None:
        return own()
    target = Path(os.path.realpath(store.path))
    return target.with_name(target.name + BESIDE_SUFFIX)


def store_lock(ctx) -> StoreLock:
    """The lock a cleanup or restore of this store takes, as its `lock` setting says."""
    beside = lock_beside(ctx.store) if ctx.settings.get("lock") == "store" else None
    return StoreLock(ctx.state_dir, ctx.identity, ctx.label, beside=beside)


class StoreLock:
    def __init__(self, state_dir: Path, identity: str, label: str, beside: Path | None = None):
        self.path = lock_path(state_dir, identity)
        #: The second lock, beside the store, that other hosts see (`lock = "store"`).
        self.beside = beside
        self.identity = identity
        self.label = label
        self._fd: int | None = None
        self._beside_fd: int | None = None

    def acquire(self) -> StoreLock:
        ensure_private_dir(self.path.parent)
        fd = self._take(self.path)
        if self.beside is not None:
            # The host's own lock first: a run here that does not use `lock = "store"` still
            # excludes this one; then the one every host sharing the store sees.
            try:
                self._beside_fd = self._take(self.beside, where="beside the store")
            except BaseException:
                os.close(fd)
                raise
            self._write_holder(self._beside_fd)
        self._write_holder(fd)
        self._fd = fd
        return self

    def _take(self, path: Path, where: str = "") -> int:
        try:
            # Read-write: over NFS an exclusive flock is a POSIX lock, which needs it. Never
            # through a symlink, and only a regular file with no other name: whoever can write
            # in the store's folder must not make a root cleanup truncate another file.
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o600)
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
                os.close(fd)
                raise OSError(errno.ELOOP, "not a regular file of its own")
        except OSError as exc:
            hint = "nothing was changed"
            if where:
                hint += '; the folder of the store must be writable for lock = "store"'
            if exc.errno == errno.ELOOP:  # a symlink, a hard link, a FIFO...
                raise store_error(
                    f"lock file {path} is a link or not a regular file; nothing was changed",
                    "remove it: sessionctl creates its own",
                ) from None
            raise store_error(
                f"cannot create lock file {path}{' ' + where if where else ''}: "
                f"{os_error_text(exc)}",
                hint,
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
            hint = "nothing was changed"
            if where:
                hint += "; on NFS, flock needs the NFS lock manager (lockd)"
            raise store_error(f"cannot lock {path}: {os_error_text(exc)}", hint) from None
        return fd

    def _write_holder(self, fd: int) -> None:
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

    def release(self) -> None:
        # The lock files stay: removing one would let a third run lock a new file while the
        # second still waits on the old one.
        for name in ("_beside_fd", "_fd"):
            fd = getattr(self, name)
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)
                os.close(fd)  # closing drops the flock
                setattr(self, name, None)

    def __enter__(self) -> StoreLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _describe_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        info = {}
    if not info or not isinstance(info, dict):
        return "holder unknown"
    return f"pid {info.get('pid')} on {info.get('host')} since {info.get('since')}"
