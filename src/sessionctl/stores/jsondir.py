"""A folder holding one JSON file per session (`*.json`).

Symlinks are never followed or removed, only regular files directly inside the folder are
touched, a file that does not parse is an invalid session (never a crash). Removal moves a file
aside atomically, checks it is the file that was selected, then unlinks it; a file the
application rewrote meanwhile is put back.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import json
import os
import re
import stat
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ..domain.archive_format import archived_text
from ..domain.errors import store_error
from ..domain.mapping import lookup
from ..domain.model import Record
from ..fsutil import PRIVATE_FILE, fsync_dir, os_error_text
from .base import (
    Address,
    ArchiveFn,
    Candidate,
    RemoveOutcome,
    Store,
    StoreSettings,
    file_address,
    require_exists,
)
from .restoring import (
    encoded_value_problem,
    place_id,
    text_id,
    unsafe_file_name,
    write_new,
)

SUFFIX = ".json"
#: Files being removed are renamed to this prefix first; leftovers of a killed run are put back.
TRASH_PREFIX = ".sessionctl-removing."
#: Selected records kept in memory until their batch is removed (see `fingerprint`).
SELECTED_CACHE = 20_000


def _read_regular(path: str | Path) -> tuple[bytes, os.stat_result] | None:
    """The bytes of `path` if it is a regular file (never through a symlink), else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOENT, errno.ENXIO):
            return None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None
        # One read of the size fstat gave (plus one byte to see the end); more only if the file
        # grew meanwhile. Session files are small: this is most of a folder scan's syscalls.
        chunks = [os.read(fd, info.st_size + 1)]
        if len(chunks[0]) > info.st_size:
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
        return b"".join(chunks), info
    finally:
        os.close(fd)


def _identity(info: os.stat_result) -> tuple:
    return info.st_ino, info.st_size, info.st_mtime_ns


def _decode(name: str, raw: bytes) -> Record:
    try:
        data = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError:
        return Record(key=name, data=None, size=len(raw), error="file is not UTF-8", raw=raw)
    except json.JSONDecodeError as exc:
        error = f"file is not valid JSON ({exc.msg} at line {exc.lineno})"
        return Record(key=name, data=None, size=len(raw), error=error, raw=raw)
    except ValueError as exc:  # a number of more than 4300 digits, which Python refuses
        error = f"file cannot be read as JSON ({str(exc).split(';')[0]})"
        return Record(key=name, data=None, size=len(raw), error=error, raw=raw)
    except RecursionError:
        return Record(key=name, data=None, size=len(raw), error="file nests too deeply", raw=raw)
    if not isinstance(data, dict):
        kind = "null" if data is None else type(data).__name__
        error = f"file holds a {kind}, not an object"
        return Record(key=name, data=None, size=len(raw), error=error, raw=raw)
    if b"\\u" in raw and _SURROGATE_ESCAPE.search(raw) and not _is_text(data):
        error = "file holds a lone surrogate (such as \\ud800) in a string: not Unicode text"
        return Record(key=name, data=None, size=len(raw), error=error, raw=raw)
    return Record(key=name, data=data, size=len(raw), raw=raw)


#: A \u escape of a UTF-16 surrogate: only where one occurs can a lone one hide.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _is_text(data: dict) -> bool:
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class JsonDirStore(Store):
    kind = "jsondir"
    schemes = ("jsondir",)
    natural_batch = 1

    def __init__(self, address: Address, settings: StoreSettings | None = None):
        super().__init__(address, settings)
        self._selected: dict[str, Record] = {}
        self._folder = str(self.path)

    @classmethod
    def parse_address(cls, text: str) -> Address:
        return file_address(cls.kind, text, describe="a folder address")

    @classmethod
    def claims(cls, path: Path) -> bool:
        return path.is_dir()

    def _entries(self) -> Iterator[os.DirEntry]:
        require_exists(self.path, "session folder")
        if not self.path.is_dir():
            raise store_error(f"{self.path} is not a folder")
        try:
            with os.scandir(self.path) as entries:
                for entry in entries:
                    if entry.name.startswith(".") or not entry.name.endswith(SUFFIX):
                        continue
                    # DirEntry.is_file(follow_symlinks=False) is False for symlinks.
                    if entry.is_file(follow_symlinks=False):
                        yield entry
        except PermissionError:
            raise store_error(f"cannot list {self.path}: permission denied") from None

    def iter_records(self) -> Iterator[Record]:
        for entry in self._entries():
            try:
                read = _read_regular(entry.path)
            except OSError as exc:
                yield Record(
                    key=entry.name, data=None, size=0, error=f"cannot read: {os_error_text(exc)}"
                )
                continue
            if read is not None:
                record = _decode(entry.name, read[0])
                record.version = _identity(read[1])
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
        for name in (session_id, session_id + SUFFIX):
            if "/" in name or "\x00" in name or name.startswith(".") or not name.endswith(SUFFIX):
                continue
            read = _read_regular(self.path / name)
            if read is not None:
                record = _decode(name, read[0])
                if id_path in (None, "$key") or record.data is None:
                    return record
                if str(lookup(record.data, id_path, name)) == session_id:
                    return record
        return super().find(session_id, id_path)

    def size_bytes(self) -> int:
        total = 0
        for entry in self._entries():
            with contextlib.suppress(OSError):
                total += entry.stat(follow_symlinks=False).st_size
        return total

    def describe(self) -> dict:
        files = skipped_links = others = 0
        require_exists(self.path, "session folder")
        with os.scandir(self.path) as entries:
            for entry in entries:
                if entry.is_symlink():
                    skipped_links += 1
                elif entry.name.endswith(SUFFIX) and entry.is_file(follow_symlinks=False):
                    files += 1 if not entry.name.startswith(".") else 0
                else:
                    others += 1
        return {
            "kind": self.kind,
            "path": str(self.path),
            "files": files,
            "symlinks_ignored": skipped_links,
            "other_entries_ignored": others,
        }

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
            if kept is not None:
                try:
                    if _identity(os.lstat(os.path.join(self._folder, candidate.key))) == version:
                        found[candidate.key] = (kept, version)
                except OSError:
                    pass
                continue
            read = _read_regular(os.path.join(self._folder, candidate.key))
            if read is not None and hash(read[0]) == digest:
                found[candidate.key] = (_decode(candidate.key, read[0]), _identity(read[1]))
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

    def remove(self, candidates: list[Candidate], archive: ArchiveFn) -> RemoveOutcome:
        self._check_writable()
        outcome = RemoveOutcome()
        unchanged = self._unchanged(candidates)
        outcome.changed = [c.key for c in candidates if c.key not in unchanged]
        if not unchanged:
            return outcome
        archive([record for record, _ in unchanged.values()])
        for name, (record, identity) in unchanged.items():
            try:
                if self._remove_one(name, identity):
                    outcome.removed.append(record)
                else:
                    outcome.changed.append(name)
            except OSError as exc:
                outcome.failed[name] = f"cannot remove {name}: {os_error_text(exc)}"
        fsync_dir(self.path)
        return outcome

    def _remove_one(self, name: str, expected: tuple) -> bool:
        """Take `name` out of the folder if it is still the file read (same inode, size and
        modification time: a rewrite, in place or by rename, changes one). False if not."""
        # Plain strings, not Paths: this runs once per removed file.
        path = os.path.join(self._folder, name)
        trash = os.path.join(self._folder, TRASH_PREFIX + name)
        # The rename is atomic and never follows a symlink: whatever sits at `path` now is what
        # we examine, and anything the application writes from here on lands at `path`.
        os.rename(path, trash)
        moved = os.lstat(trash)
        if stat.S_ISREG(moved.st_mode) and _identity(moved) == expected:
            os.unlink(trash)
            return True
        self._put_back(trash, path)
        return False

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

    def recover(self) -> int:
        """Put back files a killed cleanup had moved aside and not yet verified."""
        restored = 0
        with os.scandir(self.path) as entries:
            leftovers = [e.name for e in entries if e.name.startswith(TRASH_PREFIX)]
        for leftover in leftovers:
            original = leftover[len(TRASH_PREFIX) :]
            trash = self.path / leftover
            if trash.is_symlink() or not trash.is_file():
                continue
            self._put_back(trash, self.path / original)
            restored += 1
        return restored

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
            if unsafe_file_name(name) or not name.endswith(SUFFIX):
                skipped += 1
                continue
            session_id = entry.get("id")
            path = self.path / name
            if os.path.lexists(path) or (
                session_id is not None and str(session_id) in existing_ids
            ):
                skipped += 1
                continue
            if not write_new(path, _restored_bytes(entry), like):
                skipped += 1  # the application wrote it meanwhile: its file stays
                continue
            existing_ids.add(str(session_id))
            restored += 1
        return restored, skipped

    def prepare_restore(self, entry: dict, id_path: str | None, source_kind: str | None):
        """Name the file of an archived session, by role: the file name it had when the archive
        came from a folder, else its id. None if it can go in, else why not (one sentence)."""
        record = entry.get("record")
        if not isinstance(record, dict):
            if record is not None or entry.get("raw_b64") is None:
                return "the archive holds no record for it"
            try:
                base64.b64decode(entry["raw_b64"], validate=True)
            except (ValueError, TypeError):
                return "its archived bytes are damaged"
        why = isinstance(record, dict) and encoded_value_problem(record, source_kind)
        if why:
            return why
        session_id = text_id(entry)
        key = entry.get("key")
        if source_kind == self.kind and isinstance(key, str):
            base, what = key, "its archived file name"
        elif session_id is not None:
            base, what = session_id, "its id"
        else:
            return "it has no id to name its file by"
        why = unsafe_file_name(base)
        name = base if base.endswith(SUFFIX) else base + SUFFIX
        why = why or unsafe_file_name(name)
        if why:
            return f"{what} is not a safe file name ({why})"
        entry["key"] = name
        if isinstance(record, dict):
            place_id(record, id_path, session_id)
        return None

    def _typical_file(self):
        """The mode and owner restored files get: those most of the folder's session files have
        (the application's user, say, and 0640), so the application can read them; in an empty
        folder, the folder's owner and 0600."""
        seen: Counter = Counter()
        for entry in self._entries():
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


def _restored_bytes(entry: dict) -> bytes:
    """A restored file: the archived bytes of one that did not parse, else the record as JSON
    (escaped as ASCII when it holds text UTF-8 cannot carry, such as a lone surrogate)."""
    if entry.get("raw_b64") is not None:
        return base64.b64decode(entry["raw_b64"])
    original = archived_text(entry)
    if original is not None:
        return original.encode()  # the file as it was, byte for byte
    record = entry.get("record")
    try:
        return json.dumps(record, indent=2, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return json.dumps(record, indent=2).encode()
