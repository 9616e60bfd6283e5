"""A whole store in one JSON document: an array of sessions, an object keyed by session id, or
an object wrapping either (`{"sessions": [...]}`). Written back in the same shape and style,
through a temp file and a rename, with the previous file kept as `.bak`."""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import re
from collections.abc import Callable, Iterator
from json.decoder import scanstring as _scanstring
from pathlib import Path
from typing import Any

from ..domain.archive_format import archived_text
from ..domain.errors import busy_error, store_error
from ..domain.mapping import lookup
from ..domain.model import Record
from ..fsutil import PRIVATE_FILE, atomic_write, os_error_text, remove_stale_temps
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
from .restoring import encoded_value_problem, place_id, text_id

WRAPPER_KEYS = ("sessions", "items", "data", "records", "results", "entries")
#: How often to re-read and retry when the application rewrites the file under us.
REWRITE_ATTEMPTS = 5


_ABSENT = object()


class Document:
    """A parsed JSON store: the top-level value, the container that holds the sessions, and
    where each session's text lies in the file ("raw spans").

    A rewrite is a splice of the original text: the spans of the removed sessions (with the
    separator before each) are cut out, everything else is copied as it was, so survivors keep
    their bytes exactly (number spellings such as `1E5` or `1e400`, duplicate keys, CRLF line
    ends, spacing). Nothing that stays is ever serialised again.
    """

    def __init__(self, raw: bytes, path: Path, layout: _Layout | None = None, **_ignored):
        self.raw = raw
        self.bom = raw.startswith(_BOM)
        if layout is None:
            layout = _read_layout(raw, path)
        self.layout = layout
        self.text = layout.text
        self.value = layout.top
        self.wrapper_key = layout.wrapper_key
        self.container = layout.container
        self._by_key: dict | None = None

    @property
    def shape(self) -> str:
        inner = "array" if isinstance(self.container, list) else "object keyed by id"
        return f"object wrapping {inner} in {self.wrapper_key!r}" if self.wrapper_key else inner

    @property
    def keyed(self) -> bool:
        return not isinstance(self.container, list)

    def items(self) -> Iterator[tuple[Any, Any]]:
        if isinstance(self.container, list):
            return iter(enumerate(self.container))
        if self.layout.aliases:
            real = set(self.layout.aliases.values())
            return ((json.dumps(k)[1:-1] if k in real else k, v) for k, v in self.container.items())
        return iter(self.container.items())

    def records(self) -> Iterator[Record]:
        broken = self.layout.broken
        for key, item in self.items():
            if not broken and type(item) is dict:
                yield Record(key=key, data=item, size=None)
            else:
                yield self.record(key, item)

    def record(self, key: Any, item: Any = _ABSENT, with_raw: bool = False) -> Record:
        """The record at `key` (as shown); `with_raw` adds its original text (for archives)."""
        if item is _ABSENT:
            item = self.get(key)
        index = self._index(key)
        if index is None:
            return _record(key, item)
        if index in self.layout.broken:
            return Record(
                key=key,
                data=None,
                size=None,
                error="record holds a lone surrogate (such as \\ud800) in a string, "
                "which is not Unicode text",
                raw=self.raw_text(key).encode(),
            )
        record = _record(key, item)
        if record.data is None or with_raw:
            # The original text: what an archive keeps, and restore puts back, exactly.
            record.raw = self.raw_text(key).encode()
        return record

    def _real_key(self, key: Any) -> Any:
        return self.layout.aliases.get(key, key) if self.layout.aliases else key

    def _index(self, key: Any) -> int | None:
        """The position in the layout of the entry `key` names (the last one of duplicates)."""
        if not self.keyed:
            return key if isinstance(key, int) and 0 <= key < len(self.container) else None
        indexes = self.by_key().get(self._real_key(key))
        return indexes[-1] if indexes else None

    def by_key(self) -> dict[Any, list[int]]:
        if self._by_key is None:
            found: dict[Any, list[int]] = {}
            for index, key in enumerate(self.layout.keys):
                found.setdefault(key, []).append(index)
            self._by_key = found
        return self._by_key

    def get(self, key: Any) -> Any:
        try:
            return self.container[self._real_key(key)]
        except (KeyError, IndexError, TypeError):
            return _ABSENT

    def raw_text(self, key: Any) -> str:
        """The original text of the value at `key` (for an object member: its value only)."""
        index = self._index(key)
        if index is None:
            return ""
        layout = self.layout
        start = layout.value_starts[index] if self.keyed else layout.starts[index]
        return layout.text[start : layout.ends[index]]

    def without(self, keys: set) -> Document:
        """The document with the entries at `keys` cut out of the original text."""
        layout = self.layout
        if self.keyed:
            # A key written twice: only the member parsers read (the last) was judged and is
            # archived, so only it goes; the one before it is another session's text.
            by_key = self.by_key()
            doomed = {by_key[real][-1] for key in keys if (real := self._real_key(key)) in by_key}
        else:
            doomed = {key for key in keys if isinstance(key, int)}
        if not doomed:
            return self
        n = len(layout.starts)
        kept = [i for i in range(n) if i not in doomed]
        text = layout.text
        pieces: list[str] = []
        starts: list[int] = []
        ends: list[int] = []
        value_starts: list[int] = []
        if not kept:
            pieces.append(text[: layout.open + 1])
            length = layout.open + 1
        else:
            pieces.append(text[: layout.starts[0]])
            length = layout.starts[0]
            # Runs of consecutive survivors are copied whole; after the first run, with the
            # separator that stood before it. One pass, the new spans shifted as they go.
            old_starts, old_ends = layout.starts, layout.ends
            old_values = layout.value_starts if self.keyed else None
            add_start, add_end, add_value = starts.append, ends.append, value_starts.append
            begin = old_starts[kept[0]]
            shift = length - begin
            previous = kept[0] - 1
            for index in kept:
                if index != previous + 1:  # the run that ended at `previous` is copied
                    pieces.append(text[begin : old_ends[previous]])
                    length += old_ends[previous] - begin
                    begin = old_ends[index - 1]
                    shift = length - begin
                add_start(old_starts[index] + shift)
                add_end(old_ends[index] + shift)
                if old_values is not None:
                    add_value(old_values[index] + shift)
                previous = index
            pieces.append(text[begin : old_ends[previous]])
            length += old_ends[previous] - begin
        tail = layout.close if not kept else layout.ends[n - 1]
        shift = length - tail
        pieces.append(text[tail:])
        new_text = "".join(pieces)
        if isinstance(self.container, list):
            container: Any = [self.container[i] for i in kept]
            keys: list = []
        else:
            keys = [layout.keys[i] for i in kept]
            last = {key: i for i, key in enumerate(keys)}  # of what is left, per key
            container = {}
            for key, value in self.container.items():
                if key not in last:
                    continue  # removed
                index = kept[last[key]]
                if by_key[key][-1] != index:  # an earlier member of a duplicated key is read now
                    value = _DECODER.scan_once(text, layout.value_starts[index])[0]
                container[key] = value
        top = container
        if self.wrapper_key is not None:
            top = dict(self.value)
            top[self.wrapper_key] = container
        new_layout = _Layout(
            text=new_text,
            top=top,
            wrapper_key=self.wrapper_key,
            container=container,
            open=layout.open,
            close=layout.open + 1 if not kept else layout.close + shift,
            starts=starts,
            ends=ends,
            value_starts=value_starts,
            keys=keys,
            broken={kept.index(i) for i in layout.broken if i in kept} if layout.broken else set(),
            aliases=layout.aliases,
        )
        return Document(self.encode(new_text), Path(), layout=new_layout)

    def encode(self, text: str) -> bytes:
        data = text.encode("utf-8", "surrogatepass")
        return _BOM + data if self.bom else data

    def with_added(self, added: list[tuple]) -> bytes:
        """The file's bytes with entries appended in its own style; the rest as it was.

        Each entry is (key, value, original text of the value or None): an entry that carries
        its original text goes back exactly as it was.
        """
        layout = self.layout
        text = layout.text
        style = _Style(text)
        keyed = self.keyed
        n = len(layout.starts)
        if n >= 2:
            separator = text[layout.ends[n - 2] : layout.starts[n - 1]]
        elif n == 1:
            lead = text[layout.open + 1 : layout.starts[0]]
            separator = "," + lead if "\n" in lead else style.comma
        else:
            separator = ""
        if n:
            base = separator.rsplit("\n", 1)[1] if "\n" in separator else ""
        else:
            line_start = text.rfind("\n", 0, layout.open) + 1
            outer = text[line_start : layout.open]
            outer = outer[: len(outer) - len(outer.lstrip(" \t"))]
            base = outer + style.unit if style.indent is not None else ""
            separator = ("," + style.newline + base) if style.indent is not None else style.comma
        pieces = [_entry_text(entry, keyed, style, base) for entry in added]
        if n:
            insert_at = layout.ends[n - 1]
            middle = "".join(separator + piece for piece in pieces)
            new_text = text[:insert_at] + middle + text[insert_at:]
        else:
            body = separator.join(pieces)
            if style.indent is not None:
                body = style.newline + base + body + style.newline + outer
            new_text = text[: layout.open + 1] + body + text[layout.close :]
        return self.encode(new_text)


_BOM = b"\xef\xbb\xbf"
_WHITESPACE = re.compile(r"[ \t\n\r]*")
_SEPARATOR = re.compile(r"[ \t\n\r]*,[ \t\n\r]*")
#: A \u escape of a UTF-16 surrogate: only where one occurs can a lone one hide.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_DECODER = json.JSONDecoder()


class _Bad(Exception):
    """The fast reader met something it does not accept: json.loads says what, exactly."""


class _Layout:
    """Where things are in a store's text. Spans are offsets in `text` (the file without its
    byte order mark); for an object, `starts` is where a member's key begins, `value_starts`
    where its value does. `broken`: entries that are not Unicode text; `aliases`: keys as shown
    (escaped) -> keys as they are, for keys that are not Unicode text."""

    text: str
    top: Any
    wrapper_key: str | None
    container: Any
    open: int
    close: int
    starts: list[int]
    ends: list[int]
    value_starts: list[int]
    keys: list

    def __init__(self, **fields):
        self.broken: set[int] = set()
        self.aliases: dict = {}
        for name, value in fields.items():
            setattr(self, name, value)


def _read_layout(raw: bytes, path: Path) -> _Layout:
    if not raw.strip() or raw.strip() == _BOM:
        _parse(raw, path)  # raises, with the message of an empty store
    try:
        text = raw[3:].decode("utf-8") if raw.startswith(_BOM) else raw.decode("utf-8")
    except UnicodeDecodeError:
        _parse(raw, path)
        raise
    try:
        layout = _scan_document(text)
    except (_Bad, StopIteration, IndexError, ValueError, RecursionError):
        _parse(raw, path)  # raises with json's own words for what is wrong
        raise store_error(f"{path} is not valid JSON") from None
    layout.wrapper_key, layout.container = _find_container(layout.top, path)
    if layout.wrapper_key is not None:
        inner = layout.inner.get(layout.wrapper_key)
        if inner is None:  # not walked in the first pass (never for a wrapper key)
            inner = _walk(text, layout.inner_start[layout.wrapper_key])
        for name in ("open", "close", "starts", "ends", "value_starts", "keys"):
            setattr(layout, name, getattr(inner, name))
        layout.container = inner.container
    del layout.inner, layout.inner_start
    _find_broken(layout)
    return layout


def _scan_document(text: str) -> _Layout:
    start = _WHITESPACE.match(text, 0).end()
    opener = text[start] if start < len(text) else ""
    if opener in "[{":
        top = _walk(text, start, wrappers=True)
        end = top.close + 1
    else:
        value, end = _DECODER.scan_once(text, start)
        top = _Layout(text=text, container=value, inner={}, inner_start={})
    if _WHITESPACE.match(text, end).end() != len(text):
        raise _Bad("extra data")
    top.text = text
    top.top = top.container
    return top


def _walk(text: str, at: int, wrappers: bool = False) -> Any:
    """The array or object starting at `at`, with the span of each element or member. At the top
    (`wrappers`), a member that may be the sessions' wrapper is walked the same way."""
    scan = _DECODER.scan_once
    skip = _WHITESPACE.match
    starts: list[int] = []
    ends: list[int] = []
    value_starts: list[int] = []
    keys: list = []
    inner: dict = {}
    inner_start: dict = {}
    j = skip(text, at + 1).end()
    if text[at] == "[":
        container: Any = []
        append = container.append
        if text[j] != "]":
            separator = _SEPARATOR.match
            start = starts.append
            end = ends.append
            # Each element is scanned on its own, so json's memo of keys does not reach across
            # elements: one shared copy of each key name (a third of the memory of small
            # sessions) instead of one per session.
            names: dict = {}
            name = names.setdefault
            while True:
                start(j)
                value, j = scan(text, j)
                if type(value) is dict:
                    value = {name(k, k): v for k, v in value.items()}
                append(value)
                end(j)
                # One regex call per element: the comma and the whitespace around it.
                after = separator(text, j)
                if after is None:
                    j = skip(text, j).end()
                    if text[j] != "]":
                        raise _Bad
                    break
                j = after.end()
    else:
        container = {}
        if text[j] != "}":
            while True:
                if text[j] != '"':
                    raise _Bad
                key, k = _scanstring(text, j + 1, True)
                k = skip(text, k).end()
                if text[k] != ":":
                    raise _Bad
                k = skip(text, k + 1).end()
                if wrappers and (text[k] == "[" or (text[k] == "{" and key in WRAPPER_KEYS)):
                    walked = _walk(text, k)
                    value, end = walked.container, walked.close + 1
                    inner[key] = walked
                    inner_start[key] = k
                else:
                    value, end = scan(text, k)
                container[key] = value
                keys.append(key)
                starts.append(j)
                value_starts.append(k)
                ends.append(end)
                j = skip(text, end).end()
                if text[j] == "}":
                    break
                if text[j] != ",":
                    raise _Bad
                j = skip(text, j + 1).end()
    return _Layout(
        text=text,
        container=container,
        open=at,
        close=j,
        starts=starts,
        ends=ends,
        value_starts=value_starts,
        keys=keys,
        inner=inner,
        inner_start=inner_start,
    )


def _find_broken(layout: _Layout) -> None:
    """Entries holding a lone surrogate (`"\\ud800"`): JSON's syntax allows one, Unicode text
    does not; such an entry is kept as text, and judged invalid. Keys that hold one are shown
    escaped."""
    text = layout.text
    hits = [m.start() for m in _SURROGATE_ESCAPE.finditer(text, layout.open, layout.close)]
    if not hits:
        return
    import bisect

    keyed = not isinstance(layout.container, list)
    for index in sorted({bisect.bisect_right(layout.starts, hit) - 1 for hit in hits}):
        if index < 0 or hit_outside(layout, index, hits):
            continue
        if keyed:
            key = layout.keys[index]
            if not _is_text(key):
                layout.aliases[json.dumps(key)[1:-1]] = key
                layout.broken.add(index)
                continue
            value = layout.container.get(key)
        else:
            value = layout.container[index]
        if not _is_text(value):
            layout.broken.add(index)


def hit_outside(layout: _Layout, index: int, hits: list[int]) -> bool:
    start, end = layout.starts[index], layout.ends[index]
    return not any(start <= hit < end for hit in hits)


def _is_text(value: Any) -> bool:
    """Whether every string in `value` is Unicode text (no lone surrogate)."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    except (ValueError, TypeError, RecursionError):
        return True
    return True


class _Style:
    """How a store's file is written: indentation, separators, escaping, line ends."""

    def __init__(self, text: str):
        head = text[:65536]
        self.indent: int | str | None = None
        self.unit = ""
        if "\n" in head.strip():
            match = re.search(r"\n([ \t]+)\S", head)
            if match:
                whitespace = match.group(1)
                self.indent = "\t" if "\t" in whitespace else len(whitespace)
                self.unit = "\t" if self.indent == "\t" else " " * len(whitespace)
        self.newline = "\r\n" if "\r\n" in head else "\n"
        self.colon = ": " if re.search(r'"\s*:\s', head) else ":"
        self.comma = ", " if self.indent is None and re.search(r",\s", head) else ","
        self.ascii = text.isascii()

    def dump(self, value: Any, base: str) -> str:
        text = json.dumps(
            value,
            indent=self.indent,
            separators=(self.comma, self.colon),
            ensure_ascii=self.ascii,
        )
        if self.indent is not None:
            text = text.replace("\n", self.newline + base)
        return text


def _entry_text(entry: tuple, keyed: bool, style: _Style, base: str) -> str:
    key, value, raw_value = entry
    piece = raw_value.strip(" \t\r\n\ufeff") if raw_value else style.dump(value, base)
    if not keyed:
        return piece
    return json.dumps(str(key), ensure_ascii=style.ascii) + style.colon + piece


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


def canonical_bytes(value: Any) -> bytes:
    """A value's content, comparable whatever it holds (a lone surrogate too)."""
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, default=repr)
    return text.encode("utf-8", "surrogatepass")


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
    schemes = ("json",)
    natural_batch = None

    def __init__(self, address: Address, settings: StoreSettings | None = None):
        super().__init__(address, settings)
        self._document: Document | None = None

    @classmethod
    def parse_address(cls, text: str) -> Address:
        return file_address(cls.kind, text, describe="a JSON address")

    @classmethod
    def claims(cls, path: Path) -> bool:
        """A `.json` file (there or not yet), or a file whose text starts an array or object."""
        if path.suffix.lower() == ".json":
            return True
        try:
            with open(path, "rb") as handle:
                head = handle.read(64)
        except OSError:
            return False
        return head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] in (b"[", b"{")

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
        yield from self.load().records()

    def sample(self, limit: int = 50) -> tuple[list[str], list[dict]]:
        document = self._document or self.load()
        # Sessions that could be read (not one holding a lone surrogate), the first `limit`.
        readable = (record.data for record in document.records() if record.data is not None)
        records = list(itertools.islice(readable, limit))
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
        return {c.key: latest.record(located[c.key]) for c in candidates if c.key in located}

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
                outcome.removed = [_removed(latest, key, position) for key, position in doomed]
                fresh = [r for r in outcome.removed if r.key not in archived]
                if fresh:
                    archive(fresh)
                    archived.update(r.key for r in fresh)
                # A splice of the original text: survivors keep their bytes.
                rewritten = latest.without({position for _, position in doomed})
                new_bytes = rewritten.raw
                # Each write checks, after its fsync and right before its rename, that the
                # file is still the one read: an application write in between is never lost.
                if not atomic_write(
                    self.backup_path, latest.raw, mode=PRIVATE_FILE, check=unchanged
                ):
                    continue
                # The swap-in also catches an application rename landing after that check.
                if not atomic_write(
                    self.target, new_bytes, like=self._stat, check=unchanged, expected=self._stat
                ):
                    continue
                self._document = rewritten
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
                known = self._document.raw if self._document is not None else None
                raw = _read_all(fd, known)
            except OSError as exc:
                raise store_error(f"cannot read {self.path}: {os_error_text(exc)}") from None
            document = self._document_of(raw)
            self._stat = info

            def unchanged() -> bool:
                try:
                    same_bytes = _holds(fd, document.raw)
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
        folder = self.target.parent
        # A folder without write bits is read-only even for root, as for the folder store.
        if not folder.stat().st_mode & 0o222 or not os.access(folder, os.W_OK | os.X_OK):
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
                content = canonical_bytes(_archived_value(entry))
                if content in existing_records:
                    skipped += 1
                    continue
                existing_records.add(content)
            if (session_id is not None and str(session_id) in existing_ids) or (
                keyed and str(key) in existing_keys
            ):
                skipped += 1
                continue
            added.append((key, entry.get("record"), archived_text(entry)))
            existing_ids.add(str(session_id))
            existing_keys.add(str(key))
        if not added:
            return 0, skipped
        new_bytes = document.with_added(added)
        if not atomic_write(self.backup_path, document.raw, mode=PRIVATE_FILE, check=unchanged):
            return None
        if not atomic_write(
            self.target, new_bytes, like=self._stat, check=unchanged, expected=self._stat
        ):
            return None
        return len(added), skipped

    def prepare_restore(self, entry: dict, id_path: str | None, source_kind: str | None):
        """Map an archived session onto this document by role: in an object keyed by id, its
        key is its id (the key it had when the archive came from such an object), and its id
        goes where the mapping reads it. None if it can go in, else why not (one sentence)."""
        record = entry.get("record")
        if record is None and source_kind == self.kind and (text := _own_value_text(entry)):
            # A value that is not an object (`1`, `null`, `"x"`), removed from a JSON file as
            # invalid: its own text goes back, into an array or under its key.
            entry["raw_json"] = text
            document = self._document or self.load()
            if not isinstance(document.container, list) and not isinstance(entry.get("key"), str):
                return "it has no key to put it under"
            return None
        if not isinstance(record, dict):
            return (
                "the archive holds no JSON object for it (it did not parse in its store), "
                "and a JSON file store holds objects only"
            )
        why = encoded_value_problem(record, source_kind)
        if why:
            return why
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


def _own_value_text(entry: dict) -> str | None:
    """The archived text of a JSON value that is not an object, if it is one."""
    try:
        text = base64.b64decode(entry.get("raw_b64") or "", validate=True).decode("utf-8")
        json.loads(text.lstrip("\ufeff"))
    except (ValueError, TypeError, RecursionError):
        return None
    return text if text.strip() else None


def _archived_value(entry: dict) -> Any:
    """What an archived entry holds: its record, or the value its own text says."""
    if entry.get("record") is None and isinstance(entry.get("raw_json"), str):
        with contextlib.suppress(ValueError, RecursionError):
            return json.loads(entry["raw_json"].lstrip("\ufeff"))
    return entry.get("record")


_CHUNK = 1 << 20


def _read_all(fd: int, known: bytes | None) -> bytes:
    """The bytes of the file open at `fd`; `known` itself when they are the same, so that a
    store read again before its rewrite is not held twice in memory."""
    view = memoryview(known) if known is not None else None
    chunks: list = []
    offset = 0
    while chunk := os.read(fd, _CHUNK):
        if view is not None:
            if view[offset : offset + len(chunk)] == chunk:
                offset += len(chunk)
                continue
            chunks.append(known[:offset])
            view = None
        chunks.append(chunk)
        offset += len(chunk)
    if view is not None:
        return known if offset == len(known) else known[:offset]
    return b"".join(chunks)


def _holds(fd: int, expected: bytes) -> bool:
    """Whether the file open at `fd` holds exactly `expected`, compared a chunk at a time."""
    view = memoryview(expected)
    offset = 0
    while offset < len(expected):
        chunk = os.pread(fd, min(_CHUNK, len(expected) - offset), offset)
        if not chunk or view[offset : offset + len(chunk)] != chunk:
            return False
        offset += len(chunk)
    return os.pread(fd, 1, offset) == b""


def _identity(info: os.stat_result) -> tuple:
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def _removed(document: Document, key: Any, position: Any) -> Record:
    """The record at `position`, known by the key selection gave it, with its original text."""
    layout = document.layout
    # The common case, an object in an array, without the lookups `record` makes.
    if (
        type(position) is int
        and not document.keyed
        and position not in layout.broken
        and 0 <= position < len(document.container)
        and type(item := document.container[position]) is dict
    ):
        raw = layout.text[layout.starts[position] : layout.ends[position]].encode()
        return Record(key=key, data=item, size=None, raw=raw)
    record = document.record(position, with_raw=True)
    record.key = key
    return record


def _locate(candidates: list[Candidate], selected: Document, latest: Document) -> dict[Any, Any]:
    """Where each candidate's record sits in `latest`, if it is still there unchanged.

    When the file is byte-identical to the one selection read, keys are positions as they were.
    Otherwise records are matched by their original text: one the application changed (even by
    a byte) is left alone.
    """
    if latest.raw == selected.raw:
        return {c.key: c.key for c in candidates}
    located = {}
    if latest.keyed:
        for candidate in candidates:
            if selected._index(candidate.key) is None or latest._index(candidate.key) is None:
                continue
            if latest.raw_text(candidate.key) == selected.raw_text(candidate.key):
                located[candidate.key] = candidate.key
        return located
    positions: dict[str, list] = {}
    for index in range(len(latest.container)):
        positions.setdefault(latest.raw_text(index), []).append(index)
    for candidate in candidates:
        if selected._index(candidate.key) is None:
            continue
        spots = positions.get(selected.raw_text(candidate.key))
        if spots:
            located[candidate.key] = spots.pop(0)
    return located
