"""File writes that never leave a half-written file behind, and private folders."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

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
) -> bool:
    """Replace `path` with `data`: temp file in the same folder, fsync, rename, fsync folder.

    `mode` sets the permissions; `like` copies mode and (when allowed) owner of a file being
    replaced, so an application's store keeps the permissions it had. `check`, when given, is
    asked right before the rename, after the slow part (writing, fsync): if it says no (the
    file changed meanwhile), nothing is replaced and the result is False.
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
