"""How an archive spells a removed session: valid JSON whatever the store held.

Bytes become {"$b64": ...}, NaN and infinities {"$float": "Infinity"}; a JSON record whose value
cannot say all its text did (`1e400`, duplicate keys, a lone surrogate) also keeps that text, so
restore puts back the same bytes. Pure: the stores decode with it, the archive writer encodes.
"""

from __future__ import annotations

import base64
import json
import math
import re
from typing import Any

from .model import Record
from .redact import json_safe

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
        if record.keep_raw and record.raw is not None:
            # The file as the application wrote it (PHP serialization): what restore writes.
            entry["file_b64"] = base64.b64encode(record.raw).decode("ascii")
        elif record.raw is not None and not _says_all(record.raw, record.data, value):
            # The store's own text of the record (JSON stores), when the value cannot say it
            # all (`1e400`, duplicate keys): what restore puts back, byte for byte.
            entry["raw_json"] = record.raw.decode("utf-8", "replace")
    else:
        entry["record"] = None
        if record.raw is not None:
            entry["raw_b64"] = base64.b64encode(record.raw).decode("ascii")
            value = None if record.keep_raw else _json_object(record.raw)
            if value is not None:
                # JSON that is not Unicode text (a lone surrogate, "\ud800"): invalid as a
                # session, yet an object; kept as the value too, its strings escaped.
                entry["record"] = _archivable(value)
                entry["raw_json"] = record.raw.decode("utf-8")
    if record.children:
        entry["children"] = _archivable(record.children)
    return entry


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
    # A loop, not recursion: a record nested hundreds of levels deep that parsed is archived
    # (two frames a level overflowed at ~500, and the real run failed where the dry run did not).
    stack = [value]
    while stack:
        item = stack.pop()
        if type(item) is dict:
            if len(item) == 1 and "$float" in item:
                return True
            stack.extend(v for v in item.values() if type(v) in (dict, list))
        elif type(item) is list:
            stack.extend(v for v in item if type(v) in (dict, list))
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


def archive_lines(entries: list[dict]) -> bytes:
    """Archive lines, valid JSON whatever the entries hold."""
    try:
        text = "".join(json.dumps(e, ensure_ascii=False, allow_nan=False) + "\n" for e in entries)
        return text.encode()
    except (ValueError, UnicodeEncodeError):
        # A lone surrogate ("\ud800", which JSON can escape but UTF-8 cannot carry), or a
        # non-finite float outside a record: escaped, line by line, rather than a crash.
        return "".join(json.dumps(json_safe(e), ensure_ascii=True) + "\n" for e in entries).encode()


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
