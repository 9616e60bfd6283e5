"""File writes that never leave a half-written file behind, and private folders."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .domain.errors import store_error

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def os_error_text(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "no space left on device"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if exc.errno == errno.EROFS:
        return "read-only file system"
    return exc.strerror or str(exc)


def ensure_private_dir(path: Path, tighten: bool = True) -> Path:
    """Create `path` and any missing parents, each with mode 0700 whatever the umask.

    An existing `path` is tightened to 0700 when `tighten` (sessionctl's own folders: the state
    folder and what is in it). A folder the operator chose, such as the one of
    `--archive /backup/x.ndjson.gz`, keeps its mode: it may be shared (it may be /tmp), and the
    files sessionctl puts there are 0600 anyway.
    """
    try:
        missing = []
        current = path
        while not os.path.lexists(current) and current.parent != current:
            missing.append(current)
            current = current.parent
        for folder in reversed(missing):
            try:
                folder.mkdir(mode=PRIVATE_DIR)
            except FileExistsError:
                continue  # made meanwhile by someone else: not ours to change
            os.chmod(folder, PRIVATE_DIR)  # mkdir's mode is filtered by the umask
        if not path.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
        info = path.stat()
        if tighten and info.st_mode & 0o777 != PRIVATE_DIR and info.st_uid == os.getuid():
            os.chmod(path, PRIVATE_DIR)
    except OSError as exc:
        raise store_error(f"cannot create folder {path}: {os_error_text(exc)}") from None
    return path


def temp_prefix(path: Path) -> str:
    """Temp files of `atomic_write` for `path`: named so that only ours match."""
    return f".{path.name}.sessionctl-"


def remove_stale_temps(path: Path) -> int:
    """Delete temp files a killed `atomic_write` of `path` left beside it. Call only while
    holding the store's lock: then no other sessionctl is writing one."""
    removed = 0
    prefix = temp_prefix(path)
    with contextlib.suppress(OSError), os.scandir(path.parent) as entries:
        for entry in entries:
            ours = entry.name.startswith(prefix) and entry.name.endswith(".tmp")
            if ours and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    removed += 1
    return removed


def atomic_write(
    path: Path,
    data: bytes,
    mode: int | None = None,
    like: os.stat_result | None = None,
    check: Callable[[], bool] | None = None,
    expected: os.stat_result | None = None,
) -> bool:
    """Replace `path` with `data`: temp file in the same folder, fsync, rename, fsync folder.

    `mode` sets the permissions; `like` copies mode and (when allowed) owner of a file being
    replaced, so an application's store keeps the permissions it had. `check`, when given, is
    asked right before the rename, after the slow part (writing, fsync): if it says no (the
    file changed meanwhile), nothing is replaced and the result is False.

    `expected` (the stat of the file `path` must still be) closes the gap between that check
    and the rename, where an application's own rename could land and be overwritten: where
    the system can (Linux renameat2 RENAME_EXCHANGE), the new file is swapped in and the file
    swapped out is compared with `expected`; when it is another (an application's write that
    landed after the check), it is swapped back at once and the result is False.
    """
    folder = path.parent
    try:
        fd, temp_name = tempfile.mkstemp(prefix=temp_prefix(path), suffix=".tmp", dir=folder)
    except OSError as exc:
        raise store_error(f"cannot write {path}: {os_error_text(exc)}") from None
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if like is not None:
            os.chmod(temp, like.st_mode & 0o7777)
            with contextlib.suppress(OSError):
                os.chown(temp, like.st_uid, like.st_gid)
        elif mode is not None:
            os.chmod(temp, mode)
        if check is not None and not check():
            temp.unlink()
            return False
        if expected is not None:
            outcome = _swap_in(temp, path, expected)
            if outcome is not None:
                if not outcome:
                    return False
                fsync_dir(folder)
                return True
        os.replace(temp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            temp.unlink()
        if not isinstance(exc, OSError):
            raise
        raise store_error(
            f"cannot write {path}: {os_error_text(exc)}", f"{path.name} is unchanged"
        ) from None
    fsync_dir(folder)
    return True


def fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _same_file(info: os.stat_result, expected: os.stat_result) -> bool:
    # Not st_ctime: a rename changes it. The caller keeps `expected` open, so its inode
    # number is not reused meanwhile.
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns) == (
        expected.st_dev,
        expected.st_ino,
        expected.st_size,
        expected.st_mtime_ns,
    )


def _swap_in(temp: Path, path: Path, expected: os.stat_result) -> bool | None:
    """Swap `temp` in at `path` if `path` still holds `expected`; None when the system cannot
    swap (the caller renames instead). Whatever ends up at `temp` is deleted."""
    placed = os.lstat(temp)  # ours, about to be at `path`
    if not _exchange(temp, path):
        return None
    displaced = os.lstat(temp)
    if _same_file(displaced, expected):
        os.unlink(temp)
        return True
    # An application's rename landed after the check: put its file back. Should it have
    # renamed again meanwhile (a newer file at `path`, ours gone), that newer one stays.
    try:
        for _ in range(8):
            _exchange(temp, path)
            back = os.lstat(temp)
            if (back.st_dev, back.st_ino) == (placed.st_dev, placed.st_ino):
                break
            placed = displaced  # the older application file, now at `path`: swap it out again
            displaced = back
    except OSError:
        # `temp` may hold the application's file now: never delete it; put it back in place
        # (the caller's cleanup then finds no temp file to remove).
        os.replace(temp, path)
        return False
    os.unlink(temp)
    return False


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_renameat2: Any = None


def _exchange(first: Path, second: Path) -> bool:
    """Atomically swap two names (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    global _renameat2
    if _renameat2 is None:
        _renameat2 = False
        with contextlib.suppress(Exception):
            libc = ctypes.CDLL(None, use_errno=True)
            function = libc.renameat2
            function.argtypes = [
                ctypes.c_int,
                ctypes.c_char_p,
                ctypes.c_int,
                ctypes.c_char_p,
                ctypes.c_uint,
            ]
            function.restype = ctypes.c_int
            _renameat2 = function
    if _renameat2 is False:
        return False
    names = (os.fsencode(first), os.fsencode(second))
    if _renameat2(_AT_FDCWD, names[0], _AT_FDCWD, names[1], _RENAME_EXCHANGE) == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(error, os.strerror(error), str(second))
