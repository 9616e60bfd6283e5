"""The JSON codec: one JSON object per file, as the application wrote it."""

from __future__ import annotations

import base64
import json
import os
import re

from ...domain.archive_format import archived_text
from ...domain.model import Record
from ..restoring import encoded_value_problem, place_id
from .folder import Codec

#: A \u escape of a UTF-16 surrogate: only where one occurs can a lone one hide.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def decode_json(name: str, raw: bytes) -> Record:
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


def _is_text(data: dict) -> bool:
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class JsonCodec(Codec):
    name = "json"

    def decode(self, key: str, raw: bytes, info: os.stat_result) -> Record:
        return decode_json(key, raw)

    def restore_problem(self, entry: dict, source_kind: str | None, own_kind: str) -> str | None:
        record = entry.get("record")
        if not isinstance(record, dict):
            if record is not None or entry.get("raw_b64") is None:
                return "the archive holds no record for it"
            try:
                base64.b64decode(entry["raw_b64"], validate=True)
            except (ValueError, TypeError):
                return "its archived bytes are damaged"
        return (isinstance(record, dict) and encoded_value_problem(record, source_kind)) or None

    def place_id(self, entry: dict, id_path: str | None) -> None:
        from ..restoring import text_id

        record = entry.get("record")
        if isinstance(record, dict):
            place_id(record, id_path, text_id(entry))

    def restored_bytes(self, entry: dict) -> bytes:
        """A restored file: the archived bytes of one that did not parse, else the record as
        JSON (escaped as ASCII when it holds text UTF-8 cannot carry, such as a lone
        surrogate)."""
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
