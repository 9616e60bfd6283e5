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


def lock_path(state_dir: Path, identity: str) -> Path:
    digest = hashlib.sha256(identity.encode()).hexdigest()[:20]
    return state_dir / "locks" / f"{digest}.lock"


def store_lock(ctx) -> StoreLock:
    """The lock a cleanup or restore of this store takes, as its `lock` setting says: the
    state folder's always; the file beside the store with `lock = "store"`; and the store's own
    cross-host lock (a database's advisory lock) whenever the store has one."""
    beside = ctx.store.lock_beside() if ctx.settings.get("lock") == "store" else None
    lock = StoreLock(
        ctx.state_dir,
        ctx.identity,
        ctx.label,
        beside=beside,
        cross_host=ctx.store.cross_host_lock(ctx.identity),
    )
    if beside is not None:
        with contextlib.suppress(OSError, AttributeError, TypeError):
            info = os.stat(ctx.store.path)  # the store's file or folder, through a symlink
            lock.beside_owner = (info.st_uid, info.st_gid)
    return lock


class StoreLock:
    def __init__(
        self,
        state_dir: Path,
        identity: str,
        label: str,
        beside: Path | None = None,
        cross_host: contextlib.AbstractContextManager | None = None,
    ):
        self.path = lock_path(state_dir, identity)
        #: The second lock, beside the store, that other hosts see (`lock = "store"`).
        self.beside = beside
        #: The store's own lock every host sees (entering it raises a busy error when held).
        self.cross_host = cross_host
        self._cross_held = False
        self.identity = identity
        self.label = label
        self._fd: int | None = None
        self._beside_fd: int | None = None
        #: Who owns the store: the lock beside it is theirs too (see `_own_beside`).
        self.beside_owner: tuple[int, int] | None = None

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
            self._own_beside(self._beside_fd)
            self._write_holder(self._beside_fd)
        self._write_holder(fd)
        self._fd = fd
        if self.cross_host is not None:
            # Last: the local locks keep this host's runs from even asking the store.
            try:
                self.cross_host.__enter__()
            except BaseException:
                self.release()
                raise
            self._cross_held = True
        return self

    def _own_beside(self, fd: int) -> None:
        """A lock file beside the store that root created (a cleanup run by hand) goes to the
        store's owner: left 0600 root's, it kept out every later run as the application's
        user (the cron entry), "cannot create lock file: permission denied" for good."""
        if self.beside_owner is None or os.geteuid() != 0:
            return
        with contextlib.suppress(OSError):
            info = os.fstat(fd)
            if info.st_uid == 0 and (info.st_uid, info.st_gid) != self.beside_owner:
                os.fchown(fd, *self.beside_owner)

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
        if self._cross_held:
            self._cross_held = False
            self.cross_host.__exit__(None, None, None)
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
