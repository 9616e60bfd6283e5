"""The audit log (one JSON line per run) and archives of removed sessions (gzip'd NDJSON).

Both are private (files 0600, folders 0700): archives hold whole sessions, tokens included.
An archive is flushed and fsync'ed after every batch, before that batch is deleted, so a run
killed at any moment leaves every removed session readable in its archive.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import getpass
import gzip
import hashlib
import json
import math
import os
import re
import secrets
import socket
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import store_error, usage_error
from .fsutil import PRIVATE_FILE, ensure_private_dir, os_error_text
from .model import Record
from .redact import json_safe

ARCHIVE_FORMAT = 1
#: An audit line lists at most this many removed ids; the archive has them all.
AUDIT_ID_LIMIT = 10_000


def timestamp_slug(epoch: float | None = None) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(epoch))


def store_slug(label: str) -> str:
    """A folder name for a store: its config name, or its file name and a short hash."""
    if "/" not in label:
        return re.sub(r"[^A-Za-z0-9._-]+", "-", label).strip("-.") or "store"
    base = label.split("?")[0].rstrip("/").rsplit("/", 1)[-1]
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-.")[:40] or "store"
    return f"{base}-{hashlib.sha256(label.encode()).hexdigest()[:8]}"


def default_archive_path(archive_dir: Path, label: str) -> Path:
    unique = f"{timestamp_slug()}-{os.getpid()}-{secrets.token_hex(3)}"
    return archive_dir / store_slug(label) / f"{unique}.ndjson.gz"


_PLAIN = (str, int, bool, type(None))
#: How an archive spells the floats JSON has no number for.
_FLOAT_NAMES = {"inf": "Infinity", "-inf": "-Infinity", "nan": "NaN"}


def _archivable(value: Any) -> Any:
    """A value as the archive keeps it, valid JSON: bytes as {"$b64": ...}, NaN and infinities
    as {"$float": "Infinity"} (a bare `Infinity` is not JSON: jq and Node refuse it)."""
    kind = type(value)
    if kind is dict:
        for item in value.values():
            if type(item) not in _PLAIN and not (type(item) is float and math.isfinite(item)):
                break
        else:
            if all(type(key) is str for key in value):
                return value  # the common row or record: nothing to convert, nothing to copy
        out = {}
        for key, item in value.items():
            out[str(key)] = _archivable(item)
        return out
    if kind is list:
        items = []
        for item in value:
            items.append(_archivable(item))
        return items
    if kind is float and not math.isfinite(value):
        return {"$float": _FLOAT_NAMES[repr(value)]}
    if isinstance(value, bytes):
        return json_safe(value)
    if isinstance(value, (dict, list, tuple)):
        return _archivable(dict(value) if isinstance(value, dict) else list(value))
    return value


def archive_entry(record: Record, session_id: str | None, reasons: list[str]) -> dict:
    entry: dict[str, Any] = {"key": json_safe(record.key), "id": session_id, "reasons": reasons}
    if record.data is not None:
        value = entry["record"] = _archivable(record.data)
        if record.raw is not None and not _says_all(record.raw, record.data, value):
            # The store's own text of the record (JSON stores), when the value cannot say it
            # all (`1e400`, duplicate keys): what restore puts back, byte for byte.
            entry["raw_json"] = record.raw.decode("utf-8", "replace")
    else:
        entry["record"] = None
        if record.raw is not None:
            entry["raw_b64"] = base64.b64encode(record.raw).decode("ascii")
            value = _json_object(record.raw)
            if value is not None:
                # JSON that is not Unicode text (a lone surrogate, "\ud800"): invalid as a
                # session, yet an object; kept as the value too, its strings escaped.
                entry["record"] = _archivable(value)
                entry["raw_json"] = record.raw.decode("utf-8")
    if record.children:
        entry["children"] = _archivable(record.children)
    return entry


class ArchiveWriter:
    """Appends removed sessions to one archive; opened on the first write, private from birth."""

    def __init__(self, path: Path, header: dict):
        self.path = path
        self.header = header
        self.count = 0
        self._raw = None
        self._gzip: gzip.GzipFile | None = None

    def _open(self) -> None:
        # Folders made here are 0700; an existing one may be the operator's (--archive
        # /tmp/x.ndjson.gz) and keeps its mode: the archive itself is 0600 from birth.
        ensure_private_dir(self.path.parent, tighten=False)
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
        except FileExistsError:
            raise usage_error(
                f"archive {self.path} already exists", "choose another --archive"
            ) from None
        except OSError as exc:
            raise store_error(
                f"cannot create archive {self.path}: {os_error_text(exc)}",
                "nothing was removed",
            ) from None
        self._raw = os.fdopen(fd, "wb")
        try:
            self._gzip = gzip.GzipFile(fileobj=self._raw, mode="wb", filename="", compresslevel=6)
        except OSError as exc:
            self._raw.close()
            raise store_error(
                f"cannot write archive {self.path}: {os_error_text(exc)}", "nothing was removed"
            ) from None
        self._write_lines([{"sessionctl_archive": ARCHIVE_FORMAT, **self.header}])

    def write(self, entries: list[dict]) -> None:
        """Write and make durable; only then may the caller delete these sessions."""
        if not entries:
            return
        if self._gzip is None:
            self._open()
        self._write_lines(entries)
        self.count += len(entries)

    def _write_lines(self, entries: list[dict]) -> None:
        assert self._gzip is not None and self._raw is not None
        data = _lines(entries)
        try:
            self._gzip.write(data)
            # A sync flush ends a deflate block: everything so far can be read back even if the
            # process dies before the gzip trailer is written.
            self._gzip.flush(zlib.Z_SYNC_FLUSH)
            self._raw.flush()
            os.fsync(self._raw.fileno())
        except OSError as exc:
            raise store_error(
                f"cannot write archive {self.path}: {os_error_text(exc)}",
                "the sessions of this batch were not removed",
            ) from None

    def close(self) -> None:
        if self._gzip is not None:
            with contextlib.suppress(OSError):
                self._gzip.close()
                self._raw.flush()
                os.fsync(self._raw.fileno())
                self._raw.close()
            self._gzip = None


#: Where a member's key ends; counted, it is at least the number of members (a string value
#: holding `\":` only makes the count larger).
_KEY_END = re.compile(rb'"[ \t\r\n]*:')


def _says_all(raw: bytes, data: dict, archived: Any) -> bool:
    """Whether the archived value says all the record's text did: no float JSON has no number
    for (converted), and no duplicate key (which parsing keeps one of)."""
    if archived is not data and _has_marker(archived):
        return False
    return len(_KEY_END.findall(raw)) <= _count_keys(data)


def _has_marker(value: Any) -> bool:
    if type(value) is dict:
        if len(value) == 1 and "$float" in value:
            return True
        return any(type(v) in (dict, list) and _has_marker(v) for v in value.values())
    if type(value) is list:
        return any(type(v) in (dict, list) and _has_marker(v) for v in value)
    return False


def _count_keys(value: Any) -> int:
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if type(item) is dict:
            total += len(item)
            stack.extend(v for v in item.values() if type(v) in (dict, list))
        elif type(item) is list:
            stack.extend(v for v in item if type(v) in (dict, list))
    return total


def _json_object(raw: bytes) -> dict | None:
    try:
        value = json.loads(raw.decode("utf-8-sig"))
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def archived_text(entry: dict) -> str | None:
    """The original text of an archived JSON record, when the archive kept it and it still
    says what the entry's record says (a restore may have placed an id in the record): then
    restore puts back exactly those bytes."""
    text = entry.get("raw_json")
    if not isinstance(text, str):
        return None
    try:
        value = json.loads(text.lstrip("\ufeff"))
    except (ValueError, RecursionError):
        return None
    record = entry.get("record")
    if isinstance(value, dict) and isinstance(record, dict) and value.keys() != record.keys():
        return None
    return text


def _lines(entries: list[dict]) -> bytes:
    """Archive lines, valid JSON whatever the entries hold."""
    try:
        text = "".join(json.dumps(e, ensure_ascii=False, allow_nan=False) + "\n" for e in entries)
        return text.encode()
    except (ValueError, UnicodeEncodeError):
        # A lone surrogate ("\ud800", which JSON can escape but UTF-8 cannot carry), or a
        # non-finite float outside a record: escaped, line by line, rather than a crash.
        return "".join(json.dumps(json_safe(e), ensure_ascii=True) + "\n" for e in entries).encode()


@dataclass
class ArchiveContents:
    header: dict
    entries: list[dict]
    truncated: bool


def read_archive(path: Path) -> ArchiveContents:
    """Every entry that can be read; a run killed mid-write leaves a readable prefix."""
    try:
        compressed = path.read_bytes()
    except FileNotFoundError:
        raise usage_error(f"archive {path} does not exist") from None
    except OSError as exc:
        raise usage_error(f"cannot read archive {path}: {os_error_text(exc)}") from None
    # zlib rather than gzip.open: it hands over what it decoded even when the stream was cut
    # short, which is exactly the archive a killed run leaves behind.
    decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        data = decoder.decompress(compressed)
    except zlib.error as exc:
        raise usage_error(f"{path} is not a sessionctl archive ({exc})") from None
    truncated = not decoder.eof
    *lines, buffer = data.split(b"\n")
    if buffer.strip():
        truncated = True  # a last line without its newline was cut off mid-write
    parsed = []
    for line in lines:
        if not line.strip():
            continue
        try:
            parsed.append(json.loads(line))
        except ValueError:
            truncated = True
    if not parsed and truncated and not any(line.strip() for line in lines):
        # A run killed between creating its archive and writing its first line leaves an
        # empty archive (nothing was removed after that), not a foreign file.
        start = b'{"sessionctl_archive"'
        if start.startswith(buffer.strip()) or buffer.startswith(start):
            return ArchiveContents(header={}, entries=[], truncated=True)
    if not parsed or not isinstance(parsed[0], dict) or "sessionctl_archive" not in parsed[0]:
        raise usage_error(f"{path} is not a sessionctl archive")
    return ArchiveContents(header=parsed[0], entries=parsed[1:], truncated=truncated)


def decode_column_values(record: dict) -> dict:
    """Undo `json_safe` for a SQLite row: {"$b64": ...} back to bytes, {"$float": ...} back to
    an infinity or NaN."""
    return {k: _decoded_column(v) for k, v in record.items()}


def _decoded_column(value: Any) -> Any:
    if isinstance(value, dict) and len(value) == 1:
        if isinstance(value.get("$b64"), str):
            return base64.b64decode(value["$b64"])
        if value.get("$float") in ("Infinity", "-Infinity", "NaN"):
            return float(value["$float"])
    return value


# --- audit log -------------------------------------------------------------------------------


def audit_path(state_dir: Path) -> Path:
    return state_dir / "audit.log"


def run_identity() -> dict:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return {"user": user, "host": socket.gethostname(), "pid": os.getpid()}


def append_audit(state_dir: Path, entry: dict) -> Path:
    path = audit_path(state_dir)
    ensure_private_dir(state_dir)
    line = (json.dumps(entry, ensure_ascii=False, default=str) + "\n").encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE_FILE)
    except OSError as exc:
        raise store_error(f"cannot write audit log {path}: {os_error_text(exc)}") from None
    try:
        # Concurrent runs on several stores share the log: one whole line at a time.
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, line)
    except OSError as exc:
        raise store_error(f"cannot write audit log {path}: {os_error_text(exc)}") from None
    finally:
        os.close(fd)
    return path


def read_audit(state_dir: Path) -> Iterator[dict]:
    path = audit_path(state_dir)
    try:
        with open(path, "rb") as handle:
            lines = handle.readlines()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise store_error(f"cannot read audit log {path}: {os_error_text(exc)}") from None
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a line cut short by a crash: skip it, keep the rest
        if isinstance(entry, dict):
            yield entry
