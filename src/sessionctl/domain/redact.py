"""Session payloads carry tokens: show them as `<redacted: N bytes>` unless asked not to."""

from __future__ import annotations

import base64
import json
import math
from typing import Any

from .mapping import ALL_FIELDS, is_secret_name, is_secret_path


def _size_of(value: Any) -> int:
    if isinstance(value, bytes):
        return len(value)
    if isinstance(value, str):
        return len(value.encode("utf-8", "replace"))
    return len(json.dumps(value, default=str).encode())


def redacted_marker(value: Any) -> str:
    return f"<redacted: {_size_of(value)} bytes>"


_PLAIN_TYPES = frozenset({str, int, bool, type(None)})


def _plain(mapping: dict, numbers_as_text: bool) -> bool:
    """Whether JSON carries this flat mapping as it is (text keys, scalar values)."""
    for key, item in mapping.items():
        kind = type(item)
        if type(key) is not str:
            return False
        if kind in _PLAIN_TYPES:
            continue
        if kind is float and (not numbers_as_text or math.isfinite(item)):
            continue
        return False
    return True


def json_safe(value: Any, numbers_as_text: bool = True) -> Any:
    """A value JSON can carry: bytes become {"$b64": ...}; NaN and infinities become strings,
    unless `numbers_as_text` is False (archives keep them as numbers, so that a restore gives
    back what was removed, not its picture: Python's json writes and reads NaN / Infinity)."""
    if isinstance(value, bytes):
        return {"$b64": base64.b64encode(value).decode("ascii")}
    if numbers_as_text and isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if type(value) is dict and _plain(value, numbers_as_text):
        return value  # the common row or record: nothing to convert, nothing to copy
    # Loops rather than comprehensions: one frame per level, so deep data stays within reach.
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            out[str(key)] = json_safe(item, numbers_as_text)
        return out
    if isinstance(value, list):
        items = []
        for item in value:
            items.append(json_safe(item, numbers_as_text))
        return items
    return value


def redact_record(data: dict | None, payload: tuple[str, ...], show_secrets: bool) -> Any:
    """The record for display: payload fields and secret-looking names replaced by markers."""
    if data is None:
        return None
    if show_secrets:
        return json_safe(data)
    payload_names = {p.split(".")[0] for p in payload}
    everything = ALL_FIELDS in payload_names
    out = {}
    for key, value in data.items():
        if value is not None and (
            key in payload_names
            or (everything and not str(key).startswith("$"))
            or is_secret_name(str(key))
        ):
            out[key] = redacted_marker(value)
        else:
            out[key] = _redact_nested(value)
    return out


def _redact_nested(value: Any) -> Any:
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            secret = item is not None and is_secret_name(str(key))
            out[key] = redacted_marker(item) if secret else _redact_nested(item)
        return out
    if isinstance(value, list):
        items = []
        for item in value:
            items.append(_redact_nested(item))
        return items
    if isinstance(value, bytes):
        return f"<binary: {len(value)} bytes>"
    if isinstance(value, str):
        return _redact_json_text(value)
    return json_safe(value)


def _decoded_json_text(value: str) -> Any:
    """The object or array a text field holds as JSON (`{"api_key": ...}`), else None."""
    if value.lstrip()[:1] not in ("{", "["):
        return None
    try:
        decoded = json.loads(value)
    except (ValueError, RecursionError):
        return None
    return decoded if isinstance(decoded, (dict, list)) else None


def _redact_json_text(value: str) -> str:
    """JSON held in a text field is redacted like nested fields; otherwise left as it is."""
    decoded = _decoded_json_text(value)
    if decoded is None:
        return value
    try:
        redacted = _redact_nested(decoded)
    except RecursionError:
        return redacted_marker(value)
    if redacted == json_safe(decoded):
        return value
    return json.dumps(redacted, ensure_ascii=False)


def secret_texts(data: Any, minimum: int = 6, payload: tuple[str, ...] = ()) -> list[str]:
    """Every text a redacted view hides in `data` (values of payload and secret-looking fields,
    nested or in JSON text), longest first: what must not be quoted back from elsewhere."""
    found: set[str] = set()

    def collect(value: Any, secret: bool, depth: int = 0) -> None:
        if depth > 50:
            return
        if isinstance(value, dict):
            for key, item in value.items():
                collect(item, secret or is_secret_name(str(key)), depth + 1)
        elif isinstance(value, list):
            for item in value:
                collect(item, secret, depth + 1)
        elif isinstance(value, (str, bytes)):
            text = value if isinstance(value, str) else value.decode("utf-8", "replace")
            if secret and len(text) >= minimum:
                found.add(text)
            decoded = _decoded_json_text(text) if isinstance(value, str) else None
            if decoded is not None:
                collect(decoded, secret, depth + 1)
        elif secret and value is not None and not isinstance(value, bool):
            text = str(value)
            if len(text) >= minimum:
                found.add(text)

    collect(data, False)
    tops = {p.split(".")[0] for p in payload}
    if tops and isinstance(data, dict):
        # Payload fields (the mapping's; "*": all but the store's own $fields) are secret whole.
        everything = ALL_FIELDS in tops
        for key, item in data.items():
            if key in tops or (everything and not str(key).startswith("$")):
                collect(item, True, 1)
    return sorted(found, key=len, reverse=True)


def scrub(text: str, secrets: list[str]) -> str:
    """`text` with every one of `secrets` in it replaced by a redaction marker."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, f"<redacted: {len(secret.encode())} bytes>")
    return text


def display_value(value: Any, field: str, payload: tuple[str, ...], show_secrets: bool) -> Any:
    """One field's value for a table or CSV cell, redacted when it should be."""
    if value is None:
        return None
    # Any part of the path counts (`meta.data`), as it does in the record shown whole.
    if not show_secrets and is_secret_path(field, payload):
        return redacted_marker(value)
    if isinstance(value, (dict, list)):
        return redact_record({"v": value}, (), show_secrets)["v"] if not show_secrets else value
    if isinstance(value, bytes):
        return f"<binary: {len(value)} bytes>" if not show_secrets else json_safe(value)
    if isinstance(value, str) and not show_secrets:
        return _redact_json_text(value)
    return value
