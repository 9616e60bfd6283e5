"""A whole store in one JSON document: an array of sessions, an object keyed by session id, or
an object wrapping either (`{"sessions": [...]}`). Written back in the same shape and style,
through a temp file and a rename, with the previous file kept as `.bak`."""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..core.errors import busy_error, store_error
from ..core.fsutil import PRIVATE_FILE, atomic_write, os_error_text, remove_stale_temps
from ..core.mapping import lookup
from ..core.model import Record
from .base import ArchiveFn, Candidate, RemoveOutcome, Store, canonical_bytes, require_exists
from .restoring import place_id, text_id

WRAPPER_KEYS = ("sessions", "items", "data", "records", "results", "entries")
#: How often to re-read and retry when the application rewrites the file under us.
REWRITE_ATTEMPTS = 5


class Document:
    """A parsed JSON store: the top-level value and the container that holds the sessions."""

    def __init__(self, raw: bytes, path: Path, value: Any = None, like: Document | None = None):
        self.raw = raw
        self.value = _parse(raw, path) if value is None else value
        if like is not None:
            # Our own rewrite of `like` keeps its shape, whatever detection would make of what
            # is left (an object keyed by id with a null among few sessions looks like nothing).
            self.wrapper_key = like.wrapper_key
            self.container = self.value[like.wrapper_key] if like.wrapper_key else self.value
        else:
            self.wrapper_key, self.container = _find_container(self.value, path)

    @property
    def shape(self) -> str:
        inner = "array" if isinstance(self.container, list) else "object keyed by id"
        return f"object wrapping {inner} in {self.wrapper_key!r}" if self.wrapper_key else inner

    def items(self) -> Iterator[tuple[Any, Any]]:
        if isinstance(self.container, list):
            return iter(enumerate(self.container))
        return iter(self.container.items())

    def get(self, key: Any) -> Any:
        try:
            return self.container[key]
        except (KeyError, IndexError, TypeError):
            return _ABSENT

    def without(self, keys: set) -> Any:
        """The top-level value with the entries at `keys` left out (self is not changed)."""
        if isinstance(self.container, list):
            kept: Any = [item for index, item in enumerate(self.container) if index not in keys]
        else:
            kept = {k: v for k, v in self.container.items() if k not in keys}
        return self._rewrap(kept)

    def with_added(self, entries: list[tuple[Any, Any]]) -> Any:
        if isinstance(self.container, list):
            grown: Any = self.container + [value for _, value in entries]
        else:
            grown = dict(self.container)
            for key, value in entries:
                grown[str(key)] = value
        return self._rewrap(grown)

    def _rewrap(self, container: Any) -> Any:
        if self.wrapper_key is None:
            return container
        top = dict(self.value)
        top[self.wrapper_key] = container
        return top

    def dump(self, value: Any) -> bytes:
        return _dump_like(value, self.raw)


_ABSENT = object()


def _parse(raw: bytes, path: Path) -> Any:
    if not raw.strip():
        raise store_error(f"{path} is empty, not a JSON session store")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise store_error(
            f"{path} is not UTF-8 text (byte {exc.start})", "is this the right file?"
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise store_error(
            f"{path} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            f"a previous copy may be at {path.name}.bak",
        ) from None
    except ValueError as exc:  # a number of more than 4300 digits, which Python refuses
        raise store_error(f"{path} cannot be read as JSON: {exc}".split(";")[0]) from None
    except RecursionError:
        raise store_error(f"{path} nests too deeply to be a session store") from None


def _find_container(value: Any, path: Path) -> tuple[str | None, Any]:
    if isinstance(value, list):
        return None, value
    if isinstance(value, dict):
        for key in WRAPPER_KEYS:
            inner = value.get(key)
            # An empty object counts: `{"sessions": {}}` is a store with no sessions, not a
            # store whose one session is called "sessions".
            if isinstance(inner, list) or (
                isinstance(inner, dict) and all(isinstance(v, dict) for v in inner.values())
            ):
                return key, inner
        lists = [key for key, inner in value.items() if isinstance(inner, list)]
        if len(lists) == 1 and not any(isinstance(v, dict) for v in value.values()):
            return lists[0], value[lists[0]]
        if not value or sum(isinstance(v, dict) for v in value.values()) * 2 > len(value):
            return None, value
    raise store_error(
        f"{path}: unrecognised JSON shape",
        "expected an array of sessions, an object keyed by session id, "
        'or an object wrapping a list such as {"sessions": [...]}',
    )


def _dump_like(value: Any, original: bytes) -> bytes:
    """Serialise in the original's style: indentation, separators, escaping, final newline."""
    head = original[:65536].decode("utf-8", "replace")
    indent: int | str | None = None
    stripped = head.strip()
    if "\n" in stripped:
        match = re.search(r"\n([ \t]+)\S", head)
        if match:
            whitespace = match.group(1)
            indent = "\t" if "\t" in whitespace else len(whitespace)
    colon = ": " if re.search(r'"\s*:\s', head) else ":"
    comma = ", " if indent is None and re.search(r",\s", head) else ","
    text = json.dumps(
        value, indent=indent, separators=(comma, colon), ensure_ascii=original.isascii()
    )
    if original.startswith(b"\xef\xbb\xbf"):
        text = "\ufeff" + text
    if original.rstrip(b" \t").endswith(b"\n"):
        text += "\n"
    return text.encode("utf-8")


def _record(key: Any, item: Any) -> Record:
    if isinstance(item, dict):
        return Record(key=key, data=item, size=None)
    kind = "null" if item is None else type(item).__name__
    return Record(
        key=key,
        data=None,
        size=None,
        error=f"record is not an object (a {kind})",
        raw=canonical_bytes(item),
    )


class JsonFileStore(Store):
    kind = "json"
    natural_batch = None

    def __init__(self, spec):
        super().__init__(spec)
        self._document: Document | None = None

    # -- reading ---------------------------------------------------------------------------

    def _read(self) -> Document:
        info = require_exists(self.path, "JSON store")
        if not self.path.is_file():
            raise store_error(f"{self.path} is not a regular file", "for a folder use jsondir:")
        try:
            raw = self.path.read_bytes()
        except OSError as exc:
            raise store_error(f"cannot read {self.path}: {os_error_text(exc)}") from None
        self._stat = info
        return self._document_of(raw)

    def _document_of(self, raw: bytes) -> Document:
        """The parsed document for these bytes; the one already parsed when they are the same
        (a cleanup reads the file several times; parsing is most of the cost)."""
        if self._document is not None and self._document.raw == raw:
            return self._document
        return Document(raw, self.path)

    def load(self) -> Document:
        self._document = self._read()
        return self._document

    def iter_records(self) -> Iterator[Record]:
        document = self.load()
        for key, item in document.items():
            yield _record(key, item)

    def sample(self, limit: int = 50) -> tuple[list[str], list[dict]]:
        document = self._document or self.load()
        records = [item for _, item in document.items() if isinstance(item, dict)][:limit]
        keys: dict[str, None] = {}
        for item in records:
            keys.update(dict.fromkeys(item))
        if not isinstance(document.container, list):
            keys.setdefault("$key", None)
        return list(keys), records

    def size_bytes(self) -> int:
        return require_exists(self.path, "JSON store").st_size

    def describe(self) -> dict:
        document = self._document or self.load()
        return {
            "kind": self.kind,
            "path": str(self.path),
            "shape": document.shape,
            "records": len(document.container),
            "size_bytes": len(document.raw),
        }

    # -- removing --------------------------------------------------------------------------

    def fingerprint(self, record: Record) -> Any:
        # Cheap at selection time; the record's content is compared only if the file changed.
        return record.key

    def current(self, candidates: list[Candidate]) -> dict[Any, Record]:
        selected = self._document
        if selected is None:
            raise RuntimeError("current() before the store was read")
        latest = self._read()
        located = _locate(candidates, selected, latest)
        return {
            c.key: _record(located[c.key], latest.get(located[c.key]))
            for c in candidates
            if c.key in located
        }

    def remove(self, candidates: list[Candidate], archive: ArchiveFn) -> RemoveOutcome:
        selected = self._document
        if selected is None:
            raise RuntimeError("remove() before the store was read")
        self._check_writable()
        remove_stale_temps(self.path)  # a killed run's half-written temp file
        archived: set = set()
        for _attempt in range(REWRITE_ATTEMPTS):
            with self._latest() as (latest, unchanged):
                located = _locate(candidates, selected, latest)
                outcome = RemoveOutcome()
                outcome.changed = [c.key for c in candidates if c.key not in located]
                doomed = [(c.key, located[c.key]) for c in candidates if c.key in located]
                outcome.removed = [_record(key, latest.get(position)) for key, position in doomed]
                fresh = [r for r in outcome.removed if r.key not in archived]
                if fresh:
                    archive(fresh)
                    archived.update(r.key for r in fresh)
                new_value = latest.without({position for _, position in doomed})
                new_bytes = latest.dump(new_value)
                # Each write checks, after its fsync and right before its rename, that the
                # file is still the one read: an application write in between is never lost.
                if not atomic_write(
                    self.backup_path, latest.raw, mode=PRIVATE_FILE, check=unchanged
                ):
                    continue
                if not atomic_write(self.target, new_bytes, like=self._stat, check=unchanged):
                    continue
                self._document = Document(new_bytes, self.path, value=new_value, like=latest)
                return outcome
        raise busy_error(
            f"{self.path} kept changing while sessionctl tried to rewrite it; nothing was removed",
            "try again when the application is quieter",
        )

    @property
    def backup_path(self) -> Path:
        return self.target.with_name(self.target.name + ".bak")

    @property
    def target(self) -> Path:
        """The file a rewrite replaces: through a symlink, the file it points at (the one the
        application reads), never the link itself."""
        return Path(os.path.realpath(self.path))

    @contextlib.contextmanager
    def _latest(self) -> Iterator[tuple[Document, Callable[[], bool]]]:
        """The file as it is now, and a check that the path still holds exactly that file.

        The check is quick (it runs between a write's fsync and its rename): the bytes read
        again through the descriptor kept open, then the identity of whatever the path names
        now. The open descriptor keeps the file's inode number from being reused meanwhile.
        """
        require_exists(self.path, "JSON store")
        if not self.path.is_file():
            raise store_error(f"{self.path} is not a regular file", "for a folder use jsondir:")
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError as exc:
            raise store_error(f"cannot read {self.path}: {os_error_text(exc)}") from None
        try:
            try:
                info = os.fstat(fd)
                chunks = []
                while chunk := os.read(fd, 1 << 20):
                    chunks.append(chunk)
            except OSError as exc:
                raise store_error(f"cannot read {self.path}: {os_error_text(exc)}") from None
            document = self._document_of(b"".join(chunks))
            self._stat = info

            def unchanged() -> bool:
                try:
                    same_bytes = os.pread(fd, len(document.raw) + 1, 0) == document.raw
                    return same_bytes and _identity(os.stat(self.path)) == _identity(info)
                except OSError:
                    return False

            yield document, unchanged
        finally:
            os.close(fd)

    def _check_writable(self) -> None:
        """Before anything is archived: a store made read-only (chmod a-w, even for root, as
        `rm` asks first) or one whose folder cannot take the temp file is left as it is."""
        info = require_exists(self.path, "JSON store")
        if not info.st_mode & 0o222 or not os.access(self.path, os.W_OK):
            raise store_error(
                f"{self.path} is read-only (mode {info.st_mode & 0o7777:04o}); nothing was changed",
                "make it writable to clean it up",
            )
        if not os.access(self.target.parent, os.W_OK | os.X_OK):
            raise store_error(
                f"cannot write in {self.target.parent}: permission denied or read-only "
                f"(the new {self.target.name} is written beside it); nothing was changed"
            )

    def insert(self, entries: list[dict], id_path: str | None) -> tuple[int, int]:
        self._check_writable()
        remove_stale_temps(self.path)  # a killed run's half-written temp file
        for _attempt in range(REWRITE_ATTEMPTS):
            with self._latest() as (document, unchanged):
                restored = self._insert_into(document, unchanged, entries, id_path)
            if restored is not None:
                return restored
        raise busy_error(f"{self.path} kept changing; nothing was restored", "try again")

    def _insert_into(
        self, document: Document, unchanged: Callable[[], bool], entries: list, id_path
    ) -> tuple[int, int] | None:
        """One attempt of `insert`: None if the file changed under it."""
        existing_ids = set()
        existing_keys = set()
        for key, item in document.items():
            existing_keys.add(str(key))
            if isinstance(item, dict) and id_path:
                existing_ids.add(str(lookup(item, id_path, key)))
        # A session without an id is known by its content: restoring twice adds it once.
        existing_records = None
        added = []
        skipped = 0
        for entry in entries:
            session_id = entry.get("id")
            key = entry.get("key")
            keyed = not isinstance(document.container, list)
            if session_id is None and not keyed:
                if existing_records is None:
                    existing_records = {canonical_bytes(item) for _, item in document.items()}
                content = canonical_bytes(entry.get("record"))
                if content in existing_records:
                    skipped += 1
                    continue
                existing_records.add(content)
            if (session_id is not None and str(session_id) in existing_ids) or (
                keyed and str(key) in existing_keys
            ):
                skipped += 1
                continue
            added.append((key, entry.get("record")))
            existing_ids.add(str(session_id))
            existing_keys.add(str(key))
        if not added:
            return 0, skipped
        new_bytes = document.dump(document.with_added(added))
        if not atomic_write(self.backup_path, document.raw, mode=PRIVATE_FILE, check=unchanged):
            return None
        if not atomic_write(self.target, new_bytes, like=self._stat, check=unchanged):
            return None
        return len(added), skipped

    def prepare_restore(self, entry: dict, id_path: str | None, source_kind: str | None):
        """Map an archived session onto this document by role: in an object keyed by id, its
        key is its id (the key it had when the archive came from such an object), and its id
        goes where the mapping reads it. None if it can go in, else why not (one sentence)."""
        record = entry.get("record")
        if not isinstance(record, dict):
            return (
                "the archive holds no JSON object for it (it did not parse in its store), "
                "and a JSON file store holds objects only"
            )
        session_id = text_id(entry)
        place_id(record, id_path, session_id)
        document = self._document or self.load()
        if isinstance(document.container, list):
            return None
        if source_kind == self.kind and isinstance(entry.get("key"), str):
            return None
        if session_id is None:
            return "it has no id to key it by"
        entry["key"] = session_id
        return None


def _identity(info: os.stat_result) -> tuple:
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def _locate(candidates: list[Candidate], selected: Document, latest: Document) -> dict[Any, Any]:
    """Where each candidate's record sits in `latest`, if it is still there unchanged.

    When the file is byte-identical to the one selection read, keys are positions as they were.
    Otherwise records are matched by content: a record the application changed is left alone.
    """
    if latest.raw == selected.raw:
        return {c.key: c.key for c in candidates}
    positions: dict[bytes, list] = {}
    for key, item in latest.items():
        positions.setdefault(canonical_bytes(item), []).append(key)
    located = {}
    keyed = not isinstance(latest.container, list)
    for candidate in candidates:
        original = selected.get(candidate.key)
        if original is _ABSENT:
            continue
        spots = positions.get(canonical_bytes(original))
        if not spots:
            continue
        if keyed and candidate.key in spots:
            spots.remove(candidate.key)
            located[candidate.key] = candidate.key
        elif not keyed:
            located[candidate.key] = spots.pop(0)
    return located
