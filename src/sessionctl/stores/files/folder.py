"""One folder store for every format of one-file-per-session folders.

A `FolderStore` subclass names its files (a prefix and a suffix), how many levels of
subfolders hold them, and a `Codec` (how a file's bytes become a record, and an archived
session bytes again): `*.json` with the JSON codec (jsondir), `sess_*` with a PHP codec (php).
Adding a file format means writing a codec.

What every format gets here: symlinks are never followed or removed, only regular files at the
layout's depth are touched, a file that does not decode is an invalid session (never a crash),
folders are read with `os.scandir` as a stream. Removal moves a file aside atomically, checks it
is the file that was selected (inode, size, modification time), then unlinks it; a file the
application rewrote meanwhile is put back, and so are leftovers of a killed run (`recover`).
Optionally (`respect_flock`) a file another process holds `flock(LOCK_EX)` on is left alone.
Restored files get the mode and owner most of the folder's files have.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

from ...domain.errors import store_error
from ...domain.mapping import lookup
from ...domain.model import Record
from ...fsutil import PRIVATE_FILE, fsync_dir, os_error_text
from ..base import (
    Address,
    ArchiveFn,
    Candidate,
    RemoveOutcome,
    Store,
    StoreSettings,
    require_exists,
)
from ..restoring import unsafe_file_name, write_new

#: Files being removed are renamed to this prefix first; leftovers of a killed run are put back.
TRASH_PREFIX = ".sessionctl-removing."
#: Selected records kept in memory until their batch is removed (see `fingerprint`).
SELECTED_CACHE = 20_000


class Codec(ABC):
    """A file format: bytes to a record, an archived session back to bytes, ids to names."""

    #: The name shown by `describe`.
    name: ClassVar[str] = ""

    @abstractmethod
    def decode(self, key: str, raw: bytes, info: os.stat_result) -> Record:
        """The record of one file (`key` its path below the folder); an undecodable file is a
        Record with data None and `error` saying why, never an exception."""
        ...

    def restore_problem(self, entry: dict, source_kind: str | None, own_kind: str) -> str | None:
        """Why this format cannot hold the archived entry (one sentence), or None."""
        return None

    @abstractmethod
    def restored_bytes(self, entry: dict) -> bytes: ...

    def place_id(self, entry: dict, id_path: str | None) -> None:  # noqa: B027 (a no-op by default)
        """Put the session id where the mapping reads it, once the entry can go in (formats
        whose records carry no id leave the entry as it is)."""

    def restored_owner(self, entry: dict) -> Any:
        """The mode and owner (st_mode, st_uid, st_gid) the archived file had, if the entry
        says; else None, and the restored file gets those most of the folder's files have."""
        return None


class TooLarge(OSError):
    """A file larger than its store reads (`FolderStore.max_file_bytes`)."""

    def __init__(self, info: os.stat_result):
        super().__init__(errno.EFBIG, "too large")
        self.info = info


def read_regular(path: str | Path, limit: int | None = None) -> tuple[bytes, os.stat_result] | None:
    """The bytes of `path` if it is a regular file (never through a symlink), else None.
    Raises TooLarge, without reading, for a file of more than `limit` bytes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        # ENAMETOOLONG: no file has that name (`inspect` of a 300-character id showed one).
        if exc.errno in (errno.ELOOP, errno.ENOENT, errno.ENXIO, errno.ENOTDIR, errno.ENAMETOOLONG):
            return None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None
        if limit is not None and info.st_size > limit:
            raise TooLarge(info)
        # One read of the size fstat gave (plus one byte to see the end); more only if the file
        # grew meanwhile. Session files are small: this is most of a folder scan's syscalls.
        chunks = [os.read(fd, info.st_size + 1)]
        if len(chunks[0]) > info.st_size:
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
        return b"".join(chunks), info
    finally:
        os.close(fd)


def identity(info: os.stat_result) -> tuple:
    return info.st_ino, info.st_size, info.st_mtime_ns


class FolderStore(Store):
    """A folder of one file per session, in the format of `codec`."""

    codec: ClassVar[Codec]
    #: Session files are named PREFIX...SUFFIX (hidden files never are sessions).
    prefix: ClassVar[str] = ""
    suffix: ClassVar[str] = ""
    natural_batch = 1
    #: Whether a file's key is its name (else the part between prefix and suffix).
    key_is_name: ClassVar[bool] = True
    #: Leave alone a file another process holds flock(LOCK_EX) on (PHP requests hold one).
    respect_flock: ClassVar[bool] = False
    #: Files larger than this are invalid, never read (so never archived, so never removed).
    max_file_bytes: ClassVar[int | None] = None

    def __init__(self, address: Address, settings: StoreSettings | None = None):
        super().__init__(address, settings)
        self._selected: dict[str, Record] = {}
        self._folder = str(self.path)
        #: Levels of one-character subfolders between the folder and its files.
        self.depth = 0
        #: Why a file was kept by `remove` (in use, ...), by key, for the last call.
        self.kept_reasons: dict[str, str] = {}
        #: Subfolders files were removed from, to sync when the store closes.
        self._dirty: set[str] = set()

    # -- names -----------------------------------------------------------------------------

    def is_session_name(self, name: str) -> bool:
        return (
            not name.startswith(".")
            and name.startswith(self.prefix)
            and name.endswith(self.suffix)
            and len(name) > len(self.prefix) + len(self.suffix)
        )

    def key_of_name(self, name: str) -> str:
        """A session file's key: its name, or (`key_is_name` False) the part between the
        prefix and the suffix (PHP's session id)."""
        if self.key_is_name:
            return name
        return name[len(self.prefix) : len(name) - len(self.suffix)]

    def name_of_key(self, key: str) -> str:
        return key if self.key_is_name else self.prefix + key + self.suffix

    def relpath(self, key: str) -> str | None:
        """Where the file of `key` is below the folder (None if it cannot be one of its
        files): with levels, in the subfolders named by the characters after the prefix."""
        name = self.name_of_key(key)
        if "/" in name or "\x00" in name or os.sep in name or not self.is_session_name(name):
            return None
        if not self.depth:
            return name
        stem = name[len(self.prefix) :]
        if len(stem) - len(self.suffix) < self.depth or "." in stem[: self.depth]:
            return None
        return os.path.join(*stem[: self.depth], name)

    def file_of(self, key: str) -> str:
        """The path of the file of `key` (a key of this store's own records: checked only
        that it stays inside the folder; this runs once or twice per removed file)."""
        name = key if self.key_is_name else self.prefix + key + self.suffix
        levels = name[len(self.prefix) : len(self.prefix) + self.depth]
        if "/" in name or "\x00" in name or name[:1] == "." or "." in levels:
            raise store_error(f"{name!r} cannot be a session file of {self.path}")
        return os.sep.join((self._folder, *levels, name))

    # -- reading ---------------------------------------------------------------------------

    def _check_folder(self) -> None:
        require_exists(self.path, "session folder")
        if not self.path.is_dir():
            raise store_error(f"{self.path} is not a folder")

    def _entries(self) -> Iterator[tuple[str, os.DirEntry]]:
        """(key, entry) of each session file, streaming (one scandir open per level)."""
        self._check_folder()
        try:
            yield from self._walk(self._folder, self.depth)
        except PermissionError as exc:
            where = exc.filename or self.path
            hint = None
            with contextlib.suppress(OSError):
                info = os.stat(where)
                if info.st_mode & 0o7777 & ~0o1000 == 0o733 and info.st_uid != os.geteuid():
                    # Debian's /var/lib/php/sessions (root's, 1733): anyone writes, only its
                    # owner lists; sessionclean runs as root for that reason.
                    hint = (
                        f"{where} (mode {info.st_mode & 0o7777:04o}) can be listed only by its "
                        "owner: run as that user (root for Debian's /var/lib/php/sessions, as "
                        "sessionclean does)"
                    )
            raise store_error(f"cannot list {where}: permission denied", hint) from None

    def _walk(self, folder: str, levels: int) -> Iterator[tuple[str, os.DirEntry]]:
        try:
            listing = os.scandir(folder)
        except (FileNotFoundError, NotADirectoryError):
            if folder == self._folder:
                raise
            return  # a subfolder removed (or replaced) since its level was listed
        with listing as entries:
            if levels:
                # Subfolders are collected first, so that one scandir is open per level.
                subfolders = [
                    entry.name
                    for entry in entries
                    if len(entry.name) == 1
                    and entry.name != "."
                    and entry.is_dir(follow_symlinks=False)
                ]
            else:
                for entry in entries:
                    name = entry.name
                    # DirEntry.is_file(follow_symlinks=False) is False for symlinks.
                    if self.is_session_name(name) and entry.is_file(follow_symlinks=False):
                        yield self.key_of_name(name), entry
                return
        for name in sorted(subfolders):
            yield from self._walk(os.path.join(folder, name), levels - 1)

    def _record(self, key: str, path: str) -> Record | None:
        try:
            read = read_regular(path, self.max_file_bytes)
        except TooLarge as exc:
            # No version: a file that was not read cannot be archived, so it is never removed.
            size = exc.info.st_size
            why = f"file of {size} bytes, larger than a session can be ({self.max_file_bytes})"
            return Record(key=key, data=None, size=size, error=f"{why}: not read")
        except OSError as exc:
            return Record(key=key, data=None, size=0, error=f"cannot read: {os_error_text(exc)}")
        if read is None:
            return None
        record = self.codec.decode(key, read[0], read[1])
        record.version = identity(read[1])
        return record

    def iter_records(self) -> Iterator[Record]:
        for key, entry in self._entries():
            record = self._record(key, entry.path)
            if record is not None:
                yield record

    def sample(self, limit: int = 50) -> tuple[list[str], list[dict]]:
        records = []
        for record in self.iter_records():
            if record.data is not None:
                records.append(record.data)
                if len(records) >= limit:
                    break
        keys: dict[str, None] = {}
        for data in records:
            keys.update(dict.fromkeys(data))
        keys.setdefault("$key", None)
        return list(keys), records

    def find(self, session_id: str, id_path: str | None) -> Record | None:
        for name in (session_id, self.name_of_key(session_id)):
            if not self.is_session_name(name):
                continue
            key = self.key_of_name(name)
            if self.relpath(key) is None or not self._in_real_subfolders(key):
                continue
            record = self._record(key, self.file_of(key))
            if record is not None:
                if id_path in (None, "$key") or record.data is None:
                    return record
                if str(lookup(record.data, id_path, key)) == session_id:
                    return record
        return super().find(session_id, id_path)

    def _in_real_subfolders(self, key: str) -> bool:
        """Whether the subfolders of `key`'s file are folders, not symlinks (the scan never
        follows one: `inspect` read a file elsewhere through one)."""
        parent = os.path.dirname(self.file_of(key))
        for _ in range(self.depth):
            try:
                if not stat.S_ISDIR(os.lstat(parent).st_mode):
                    return False
            except OSError:
                return False
            parent = os.path.dirname(parent)
        return True

    def size_bytes(self) -> int:
        total = 0
        for _, entry in self._entries():
            with contextlib.suppress(OSError):
                total += entry.stat(follow_symlinks=False).st_size
        return total

    def describe(self) -> dict:
        files = skipped_links = others = 0
        self._check_folder()
        folders = [(self._folder, self.depth)]
        subfolders = 0
        while folders:
            folder, levels = folders.pop()
            try:
                listing = os.scandir(folder)
            except (FileNotFoundError, NotADirectoryError):
                if folder == self._folder:
                    raise
                continue  # removed since it was listed
            except PermissionError:
                raise store_error(f"cannot list {folder}: permission denied") from None
            with listing as entries:
                for entry in entries:
                    if entry.is_symlink():
                        skipped_links += 1
                    elif levels and len(entry.name) == 1 and entry.is_dir(follow_symlinks=False):
                        folders.append((entry.path, levels - 1))
                        subfolders += 1
                    elif (
                        not levels
                        and self.is_session_name(entry.name)
                        and entry.is_file(follow_symlinks=False)
                    ):
                        files += 1
                    elif not entry.name.startswith("."):
                        others += 1
        out = {
            "kind": self.kind,
            "path": str(self.path),
            "files": files,
            "symlinks_ignored": skipped_links,
            "other_entries_ignored": others,
        }
        if self.depth:
            out["levels"] = self.depth
            out["subfolders"] = subfolders
        return out

    # -- removing --------------------------------------------------------------------------

    def fingerprint(self, record: Record) -> Any:
        # Selected records wait here for their batch, so that removing one costs an lstat, not
        # a second read; bounded, because caps fingerprint every record of the folder.
        if len(self._selected) < SELECTED_CACHE:
            self._selected[record.key] = record
        return record.version, hash(record.raw)

    def current(self, candidates: list[Candidate]) -> dict[Any, Record]:
        return {name: record for name, (record, _) in self._unchanged(candidates).items()}

    def _unchanged(self, candidates: list[Candidate]) -> dict[Any, tuple[Record, tuple]]:
        """Each candidate still holding what was selected, with its file's identity."""
        found = {}
        for candidate in candidates:
            version, digest = candidate.fingerprint
            kept = self._selected.pop(candidate.key, None)
            path = self.file_of(candidate.key)
            if kept is not None:
                try:
                    if identity(os.lstat(path)) == version:
                        found[candidate.key] = (kept, version)
                except OSError:
                    pass
                continue
            record = self._record(candidate.key, path)
            if record is not None and record.raw is not None and hash(record.raw) == digest:
                found[candidate.key] = (record, record.version)
        return found

    def _check_writable(self) -> None:
        """Before anything is archived: files leave a folder we may not write (or that was made
        read-only, chmod a-w) one by one with "permission denied": say it once instead."""
        info = require_exists(self.path, "session folder")
        if not info.st_mode & 0o222 or not os.access(self.path, os.W_OK | os.X_OK):
            raise store_error(
                f"{self.path} is read-only for this user (mode {info.st_mode & 0o7777:04o})",
                "sessions are removed by renaming and unlinking files in it",
            )

    def in_use(self, candidates: list[Candidate]) -> dict[Any, str]:
        """Keys of candidates to leave alone because something is using them, with why (the
        PHP store: files open in php-fpm or apache2 processes). None here."""
        return {}

    def remove(self, candidates: list[Candidate], archive: ArchiveFn) -> RemoveOutcome:
        self._check_writable()
        outcome = RemoveOutcome()
        self.kept_reasons = self.in_use(candidates)
        for candidate in candidates:
            # A file that was not read (too large, unreadable) has no version: its bytes could
            # not be archived, so it stays, a failure to say so.
            if candidate.fingerprint is not None and candidate.fingerprint[0] is None:
                outcome.failed[candidate.key] = "not read, so not archived: kept"
                self.kept_reasons.setdefault(candidate.key, "not read")
        unchanged = self._unchanged([c for c in candidates if c.key not in self.kept_reasons])
        outcome.changed = [
            c.key for c in candidates if c.key not in unchanged and c.key not in outcome.failed
        ]
        if not unchanged:
            return outcome
        archive([record for record, _ in unchanged.values()])
        touched: set[str] = set()
        for name, (record, expected) in unchanged.items():
            try:
                if self._remove_one(name, expected):
                    outcome.removed.append(record)
                    if self.depth:
                        touched.add(os.path.dirname(self.file_of(name)))
                else:
                    outcome.changed.append(name)
            except OSError as exc:
                outcome.failed[name] = f"cannot remove {name}: {os_error_text(exc)}"
        if not self.depth:
            fsync_dir(self.path)
        else:
            # Subfolders are synced once, when the store is closed: a batch touches most of
            # them (1,024 for "2;DIR"), and syncing each per batch made a million-file cleanup
            # spend most of its time there. A file whose unlink a crash undid was archived: the
            # next run removes it again.
            self._dirty.update(touched)
        return outcome

    def close(self) -> None:
        dirty, self._dirty = self._dirty, set()
        for folder in sorted(dirty):
            with contextlib.suppress(OSError):
                fsync_dir(Path(folder))

    def _remove_one(self, key: str, expected: tuple) -> bool:
        """Take `key` out of the folder if it is still the file read (same inode, size and
        modification time: a rewrite, in place or by rename, changes one) and, with
        `respect_flock`, no other process holds its lock. False if not."""
        # Plain strings, not Paths: this runs once per removed file.
        path = self.file_of(key)
        head, name = os.path.split(path)
        trash = os.path.join(head, TRASH_PREFIX + name)
        lock_fd = None
        if self.respect_flock:
            # Take the file's lock first and hold it through the rename and unlink: a request
            # holding it is running (PHP holds it from session_start() to the end), and one
            # starting meanwhile waits for it and then finds the file gone.
            try:
                lock_fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENXIO):
                    return False
                raise
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(lock_fd)
                self.kept_reasons[key] = "another process holds its lock (a request in progress)"
                return False
        try:
            if lock_fd is not None and identity(os.fstat(lock_fd)) != expected:
                return False
            # The rename is atomic and never follows a symlink: whatever sits at `path` now is
            # what we examine, and anything the application writes from here on lands at `path`.
            try:
                os.rename(path, trash)
            except OSError as exc:
                if exc.errno == errno.ENOENT:
                    return False  # gone meanwhile: the application, or another cleanup
                if exc.errno != errno.ENAMETOOLONG or lock_fd is None:
                    raise
                # A name too long to take the trash prefix (PHP ids run to 256 characters):
                # removed in place, under its lock, if it is still the file read and locked.
                if identity(os.lstat(path)) != expected:
                    return False
                os.unlink(path)
                return True
            moved = os.lstat(trash)
            if stat.S_ISREG(moved.st_mode) and identity(moved) == expected:
                os.unlink(trash)
                return True
            self._put_back(trash, path)
            return False
        finally:
            if lock_fd is not None:
                os.close(lock_fd)

    @staticmethod
    def _put_back(trash, path) -> None:
        try:
            # link() never replaces: if the application wrote a newer file, that one stays.
            os.link(trash, path, follow_symlinks=False)
        except FileExistsError:
            pass
        os.unlink(trash)

    def lock_beside(self) -> Path:
        """The cleanup lock other hosts see (`lock = "store"`): inside the folder, hidden, so
        never read as a session."""
        return Path(os.path.realpath(self.path)) / ".sessionctl.lock"

    def _folders(self) -> Iterator[str]:
        """The folder and its subfolders of the layout (where files and trash may be)."""
        level = [self._folder]
        for _ in range(self.depth):
            deeper = []
            for folder in level:
                with contextlib.suppress(OSError), os.scandir(folder) as entries:
                    deeper.extend(
                        e.path
                        for e in entries
                        if len(e.name) == 1 and e.is_dir(follow_symlinks=False)
                    )
            level = deeper
        yield from level

    def recover(self) -> int:
        """Put back files a killed cleanup had moved aside and not yet verified."""
        restored = 0
        for folder in self._folders():
            try:
                with os.scandir(folder) as entries:
                    leftovers = [e.name for e in entries if e.name.startswith(TRASH_PREFIX)]
            except (FileNotFoundError, NotADirectoryError):
                continue  # removed since it was listed
            for leftover in leftovers:
                original = leftover[len(TRASH_PREFIX) :]
                trash = Path(folder, leftover)
                if trash.is_symlink() or not trash.is_file():
                    continue
                self._put_back(trash, Path(folder, original))
                restored += 1
        return restored

    # -- restoring -------------------------------------------------------------------------

    def insert(self, entries: list[dict], id_path: str | None) -> tuple[int, int]:
        self._check_writable()
        existing_ids = set()
        if id_path and id_path != "$key":
            for record in self.iter_records():
                if record.data is not None:
                    existing_ids.add(str(lookup(record.data, id_path, record.key)))
        like = self._typical_file()
        restored = skipped = 0
        for entry in entries:
            # The file name `prepare_restore` chose; checked again here, so that nothing is
            # ever written outside the folder, whoever calls.
            name = str(entry.get("key") or "")
            where = None
            if not unsafe_file_name(name) and self.is_session_name(name):
                where = self.relpath(self.key_of_name(name))
            if where is None:
                skipped += 1
                continue
            session_id = entry.get("id")
            path = Path(self._folder, where)
            if (
                os.path.lexists(path)
                or not path.parent.is_dir()
                or (session_id is not None and str(session_id) in existing_ids)
            ):
                skipped += 1
                continue
            owner = self.codec.restored_owner(entry) or like
            if not write_new(path, self.codec.restored_bytes(entry), owner):
                skipped += 1  # the application wrote it meanwhile: its file stays
                continue
            existing_ids.add(str(session_id))
            restored += 1
        return restored, skipped

    def restore_name(self, entry: dict, source_kind: str | None) -> tuple[str, str] | str:
        """(file name, what it comes from) for an archived session, or why there is none."""
        from ..restoring import text_id

        session_id = text_id(entry)
        key = entry.get("key")
        if source_kind == self.kind and isinstance(key, str):
            base, what = key, "its archived file name"
        elif session_id is not None:
            base, what = session_id, "its id"
        else:
            return "it has no id to name its file by"
        why = unsafe_file_name(base)
        name = base if self.is_session_name(base) else self.prefix + base + self.suffix
        why = why or unsafe_file_name(name)
        if why:
            return f"{what} is not a safe file name ({why})"
        if self.relpath(self.key_of_name(name)) is None:
            return f"{what} cannot name a file of this folder's layout"
        return name, what

    def prepare_restore(self, entry: dict, id_path: str | None, source_kind: str | None):
        """Name the file of an archived session: the file name it had when the archive came
        from a store of this kind, else its id. None if it can go in, else why not."""
        why = self.codec.restore_problem(entry, source_kind, self.kind)
        if why:
            return why
        named = self.restore_name(entry, source_kind)
        if isinstance(named, str):
            return named
        where = self.relpath(self.key_of_name(named[0]))
        if self.depth and where:
            # Not created here (PHP creates none either): without it the file cannot go in,
            # which restore counted as "exists again", exit 0.
            subfolder = os.path.dirname(where)
            if not os.path.isdir(os.path.join(self._folder, subfolder)):
                return f"its subfolder {subfolder} does not exist in {self.path}"
        entry["key"] = named[0]
        self.codec.place_id(entry, id_path)
        return None

    def _typical_file(self):
        """The mode and owner restored files get: those most of the folder's session files have
        (the application's user, say, and 0640), so the application can read them; in an empty
        folder, the folder's owner and 0600."""
        seen: Counter = Counter()
        for _, entry in self._entries():
            with contextlib.suppress(OSError):
                info = entry.stat(follow_symlinks=False)
                seen[(info.st_mode & 0o7777, info.st_uid, info.st_gid)] += 1
                if sum(seen.values()) >= 50:
                    break
        if seen:
            mode, uid, gid = seen.most_common(1)[0][0]
        else:
            folder = self.path.stat()
            mode, uid, gid = PRIVATE_FILE, folder.st_uid, folder.st_gid
        return SimpleNamespace(st_mode=mode, st_uid=uid, st_gid=gid)
