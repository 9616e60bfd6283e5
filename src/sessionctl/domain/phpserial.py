"""PHP's `unserialize` and session payload formats, read safely (pure: no I/O).

Nothing is ever instantiated: an object stays its class name plus its fields, a `C:` (custom
`Serializable`) payload stays opaque bytes, an enum its class and case name. References (`r:`
and `R:`) are resolved to the value they name; one that names a value still being read (a
cycle) becomes a `PhpRecursion` marker, so the result never contains a cycle. Depth, input
length, the number of values and their expansion through references are bounded. A malformed
payload raises `PhpFormatError`, carrying the byte offset of the error.

The grammar is php-src's ext/standard/var_unserializer.re (PHP 8); the session formats are
ext/session/session.c's `php`, `php_binary` and `php_serialize` serializers. Where PHP refuses a
payload (trailing bytes, `b:2;`, a string shorter than its length), so does this.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from typing import Any

#: Bounds. A session nested deeper than this, or larger, is not one an application wrote.
MAX_DEPTH = 128
MAX_BYTES = 64 << 20
#: Values after resolving references (`r:`/`R:` can repeat a subtree: expanded, a few hundred
#: bytes could name billions of values).
MAX_VALUES = 1_000_000

HANDLERS = ("php", "php_binary", "php_serialize")
#: PHP's key for the class of an object it cannot instantiate (`__PHP_Incomplete_Class`): the
#: decoded form of an object here, as `json_encode` shows one.
CLASS_KEY = "__PHP_Incomplete_Class_Name"
RECURSION = "*RECURSION*"
_INT64 = (-(1 << 63), (1 << 63) - 1)


class PhpFormatError(ValueError):
    """A payload that is not PHP serialization: what is wrong, at which byte."""

    def __init__(self, message: str, offset: int):
        super().__init__(f"{message} at byte {offset}")
        self.message = message
        self.offset = offset


class PhpObject(dict):
    """An object, never instantiated: its class name and its properties (a dict of them)."""

    __slots__ = ("class_name",)

    def __init__(self, class_name: str):
        super().__init__()
        self.class_name = class_name

    def __repr__(self) -> str:
        return f"PhpObject({self.class_name!r}, {dict.__repr__(self)})"


@dataclass(frozen=True)
class PhpCustom:
    """`C:` (a class implementing Serializable): its own bytes, never interpreted."""

    class_name: str
    payload: bytes


@dataclass(frozen=True)
class PhpEnum:
    """`E:` (an enum case, PHP 8.1): class and case names."""

    class_name: str
    case: str


@dataclass(frozen=True)
class PhpRecursion:
    """A reference to a value that contains it (a cycle): the slot it named."""

    slot: int


# var_unserializer.re: iv = [+-]? [0-9]+; nv = [+-]? ([0-9]* "." [0-9]+|[0-9]+ "." [0-9]*);
# nvexp = (iv | nv) [eE] iv; and NAN, INF, -INF.
_INT = re.compile(rb"[+-]?[0-9]+;")
_UINT = re.compile(rb"[0-9]+")
_FLOAT = re.compile(
    rb"(?:[+-]?(?:[0-9]*\.[0-9]+|[0-9]+\.[0-9]*|[0-9]+)(?:[eE][+-]?[0-9]+)?|NAN|-?INF);"
)
# zend's class names: [a-zA-Z0-9_\x80-\xff\\]+ (PHP refuses others when unserializing).
_CLASS = re.compile(rb"[A-Za-z0-9_\x80-\xff\\]+\Z")
_HEX_RUN = re.compile(rb"(?:\\[0-9A-Fa-f]{2})+")


class _Parser:
    def __init__(self, data: bytes, max_depth: int, max_values: int):
        self.data = data
        self.end = len(data)
        self.max_depth = max_depth
        self.max_values = max_values
        #: Every value but `R:` takes a slot, numbered from 1 (keys take none).
        self.slots: list[Any] = []
        #: Slots whose container is still being read: a reference to one is a cycle.
        self.open: set[int] = set()

    def fail(self, message: str, offset: int):
        raise PhpFormatError(message, offset)

    def expect(self, pos: int, token: bytes, what: str) -> int:
        if self.data[pos : pos + len(token)] != token:
            self.fail(f"expected {what}", pos)
        return pos + len(token)

    def uint(self, pos: int, what: str) -> tuple[int, int]:
        match = _UINT.match(self.data, pos)
        if not match or len(match.group()) > 19:
            self.fail(f"expected {what}", pos)
        return int(match.group()), match.end()

    def quoted(self, pos: int, what: str) -> tuple[bytes, int]:
        """`LEN:"BYTES"` from pos (after the type letter and colon)."""
        length, pos = self.uint(pos, f"the length of {what}")
        pos = self.expect(pos, b':"', f'":\\"" before {what}')
        if length > self.end - pos:
            self.fail(f"{what} of {length} bytes runs past the end", pos)
        text = self.data[pos : pos + length]
        return text, self.expect(pos + length, b'"', f"'\"' after {length} bytes of {what}")

    def class_name(self, pos: int) -> tuple[str, int]:
        raw, after = self.quoted(pos, "a class name")
        if not _CLASS.match(raw):
            self.fail("not a class name", pos)
        return raw.decode("utf-8", "surrogateescape"), after

    def value(self, pos: int, depth: int, key: bool = False) -> tuple[Any, int]:
        if pos >= self.end:
            self.fail("unexpected end of data", pos)
        if depth > self.max_depth:
            self.fail(f"nested deeper than {self.max_depth} levels", pos)
        kind = self.data[pos : pos + 1]
        if key and kind not in (b"i", b"s", b"S"):
            self.fail("an array key must be an integer or a string", pos)
        if kind == b"R" and self.data[pos + 1 : pos + 2] == b":":
            return self.reference(pos, hard=True)
        if self.data[pos + 1 : pos + 2] != (b";" if kind == b"N" else b":"):
            self.fail("not a PHP serialized value", pos)
        slot = 0
        if not key:
            if len(self.slots) >= self.max_values:
                self.fail(f"more than {self.max_values} values", pos)
            self.slots.append(None)
            slot = len(self.slots)
        start, pos = pos, pos + 2
        if kind == b"N":
            value, pos = None, start + 2
        elif kind == b"b":
            digit = self.data[pos : pos + 2]
            if digit not in (b"0;", b"1;"):
                self.fail("a boolean is b:0; or b:1;", pos)
            value, pos = digit == b"1;", pos + 2
        elif kind == b"i":
            match = _INT.match(self.data, pos)
            if not match or len(match.group()) > 4096:
                self.fail("expected an integer and ';'", pos)
            # PHP saturates an integer beyond 64 bits to the nearest bound.
            value = min(max(int(match.group()[:-1]), _INT64[0]), _INT64[1])
            pos = match.end()
        elif kind == b"d":
            match = _FLOAT.match(self.data, pos)
            if not match or len(match.group()) > 4096:
                self.fail("expected a number and ';'", pos)
            value, pos = float(match.group()[:-1].decode()), match.end()
        elif kind == b"s":
            raw, pos = self.quoted(pos, "a string")
            value, pos = _text(raw), self.expect(pos, b";", "';' after a string")
        elif kind == b"S":
            value, pos = self.escaped(pos)
        elif kind == b"a":
            value, pos = self.array(pos, slot, depth)
        elif kind == b"O":
            name, pos = self.class_name(pos)
            value = PhpObject(name)
            pos = self.expect(pos, b":", "':' after the class name")
            pos = self.members(pos, slot, value, depth, "properties")
        elif kind == b"C":
            name, pos = self.class_name(pos)
            pos = self.expect(pos, b":", "':' after the class name")
            raw, pos = self.braced(pos)
            value = PhpCustom(name, raw)
        elif kind == b"E":
            raw, pos = self.quoted(pos, "an enum case")
            name, colon, case = raw.partition(b":")
            if not colon or not _CLASS.match(name) or not case:
                self.fail("an enum case is Class:Case", start + 2)
            value = PhpEnum(_str(name), _str(case))
            pos = self.expect(pos, b";", "';' after an enum case")
        elif kind == b"r":
            self.slots.pop()  # `r:` takes its slot once resolved, as PHP pushes the copy
            value, pos = self.reference(start, hard=False)
            self.slots.append(value)
            return value, pos
        else:
            self.fail("not a PHP serialized value", start)
        if slot:
            self.slots[slot - 1] = value
        return value, pos

    def escaped(self, pos: int) -> tuple[Any, int]:
        """`S:LEN:"..."`: a string whose bytes may be written \\hh (LEN counts bytes)."""
        length, pos = self.uint(pos, "the length of a string")
        pos = self.expect(pos, b':"', "':\"' before a string")
        out = bytearray()
        data = self.data
        while len(out) < length:
            if pos >= self.end:
                self.fail("unexpected end of data in a string", pos)
            # Plain bytes up to the next backslash go in one slice (byte by byte, a 60 MB
            # string took 13 s); each \hh is one step.
            need = length - len(out)
            slash = data.find(b"\\", pos, pos + need)
            if slash < 0:
                if pos + need > self.end:
                    self.fail("unexpected end of data in a string", self.end)
                out += data[pos : pos + need]
                pos += need
                continue
            out += data[pos:slash]
            need -= slash - pos
            pos = slash
            if not need:
                continue
            # A run of \hh escapes at once, no longer than the string still needs.
            run = _HEX_RUN.match(data, pos, min(self.end, pos + 3 * need))
            if not run:
                self.fail("expected two hex digits after '\\'", pos + 1)
            out += bytes.fromhex(run.group().replace(b"\\", b"").decode("ascii"))
            pos = run.end()
        pos = self.expect(pos, b'";', "'\";' after a string")
        return _text(bytes(out)), pos

    def braced(self, pos: int) -> tuple[bytes, int]:
        length, pos = self.uint(pos, "the length of a custom payload")
        pos = self.expect(pos, b":{", "':{'")
        if length > self.end - pos:
            self.fail(f"a custom payload of {length} bytes runs past the end", pos)
        return self.data[pos : pos + length], self.expect(pos + length, b"}", "'}'")

    def array(self, pos: int, slot: int, depth: int) -> tuple[dict, int]:
        value: dict = {}
        return value, self.members(pos, slot, value, depth, "elements")

    def members(self, pos: int, slot: int, into: dict, depth: int, what: str) -> int:
        count, pos = self.uint(pos, f"the number of {what}")
        pos = self.expect(pos, b":{", f"':{{' before the {what}")
        # Each member takes at least 6 bytes (`i:0;N;`): a count beyond that is a lie.
        if count > (self.end - pos) // 6:
            self.fail(f"{count} {what} cannot fit in what follows", pos)
        self.open.add(slot)
        try:
            for _ in range(count):
                key, pos = self.value(pos, depth, key=True)
                if isinstance(into, PhpObject) and isinstance(key, int):
                    key = str(key)
                elif isinstance(key, bytes):
                    key = key.decode("utf-8", "surrogateescape")
                into[key], pos = self.value(pos, depth + 1)
        finally:
            self.open.discard(slot)
        return self.expect(pos, b"}", f"'}}' after {count} {what}")

    def reference(self, pos: int, hard: bool) -> tuple[Any, int]:
        target, end = self.uint(pos + 2, "a reference number")
        end = self.expect(end, b";", "';' after a reference")
        if not 0 < target <= len(self.slots):
            self.fail(f"reference to value {target}, of {len(self.slots)} so far", pos)
        if target in self.open:
            return PhpRecursion(target), end
        return self.slots[target - 1], end


def _text(raw: bytes) -> str | bytes:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


def _str(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _check_size(data: bytes, max_bytes: int) -> None:
    if len(data) > max_bytes:
        raise PhpFormatError(f"payload larger than {max_bytes} bytes", max_bytes)


def unserialize(
    data: bytes,
    *,
    max_depth: int = MAX_DEPTH,
    max_bytes: int = MAX_BYTES,
    max_values: int = MAX_VALUES,
) -> Any:
    """One serialized value, the whole of `data` (trailing bytes are an error)."""
    data = bytes(data)
    _check_size(data, max_bytes)
    parser = _Parser(data, max_depth, max_values)
    value, end = parser.value(0, 0)
    if end != len(data):
        raise PhpFormatError("unexpected bytes after the value", end)
    return value


def decode_session(
    data: bytes,
    handler: str = "php",
    *,
    max_depth: int = MAX_DEPTH,
    max_bytes: int = MAX_BYTES,
    max_values: int = MAX_VALUES,
) -> dict:
    """$_SESSION from a session file's bytes, as `session.serialize_handler` wrote it: a dict
    of its variables (raw parser values; see `to_data`). Raises PhpFormatError where PHP's own
    decoder fails (PHP then destroys the session)."""
    data = bytes(data)
    _check_size(data, max_bytes)
    parser = _Parser(data, max_depth, max_values)
    out: dict = {}
    if handler == "php_serialize":
        if not data:
            return out
        value, end = parser.value(0, 0)
        # PHP reads one value and ignores what follows; a non-array leaves $_SESSION a scalar,
        # which no application writes: refused here.
        if not isinstance(value, dict) or isinstance(value, PhpObject):
            raise PhpFormatError("the session is not an array", 0)
        for key, item in value.items():
            out[str(key)] = item
        return out
    pos = 0
    if handler == "php":
        # name|value repeated; a name runs to the next '|' (PHP never writes one holding '|').
        while pos < len(data):
            bar = data.find(b"|", pos)
            if bar < 0:
                raise PhpFormatError("a variable name without '|' and a value", pos)
            name = _str(data[pos:bar])
            out[name], pos = parser.value(bar + 1, 1)
        return out
    if handler == "php_binary":
        while pos < len(data):
            length = data[pos]
            if length & 0x80:  # PS_BIN_UNDEF: PHP 8 refuses it
                raise PhpFormatError("an undefined variable marker", pos)
            if pos + 1 + length >= len(data):
                raise PhpFormatError("a variable name runs past the end", pos)
            name = _str(data[pos + 1 : pos + 1 + length])
            out[name], pos = parser.value(pos + 1 + length, 1)
        return out
    raise ValueError(f"unknown serialize_handler {handler!r}: one of {', '.join(HANDLERS)}")


def to_data(value: Any, *, max_values: int = MAX_VALUES) -> Any:
    """A parsed value as JSON-like data, as PHP's json_encode shows it: arrays with keys
    0..n-1 become lists, other arrays dicts (string keys); an object a dict of its properties
    with its class under `__PHP_Incomplete_Class_Name`; bytes that are not UTF-8 {"$b64": ...};
    a cycle "*RECURSION*". Subtrees shared through references are counted once per use: more
    than `max_values` in all raises PhpFormatError (at offset 0)."""
    sizes: dict[int, int] = {}
    if _expanded(value, sizes) > max_values:
        raise PhpFormatError(f"references expand to more than {max_values} values", 0)
    done: dict[int, Any] = {}
    return _convert(value, done)


def _expanded(value: Any, sizes: dict[int, int]) -> int:
    if not isinstance(value, dict):
        return 1
    known = sizes.get(id(value))
    if known is not None:
        return known
    sizes[id(value)] = 1  # a reference back to itself cannot happen (cycles are markers)
    total = 1 + sum(_expanded(item, sizes) for item in value.values())
    sizes[id(value)] = total
    return total


def _convert(value: Any, done: dict[int, Any]) -> Any:
    if isinstance(value, dict):
        known = done.get(id(value))
        if known is not None:
            return known
        if isinstance(value, PhpObject):
            out: Any = {CLASS_KEY: value.class_name}
            for key, item in value.items():
                out[_property_name(key, out)] = _convert(item, done)
        elif list(value) == list(range(len(value))) and value:
            out = [_convert(item, done) for item in value.values()]
        elif not value:
            out = []
        else:
            out = {str(key): _convert(item, done) for key, item in value.items()}
        done[id(value)] = out
        return out
    if isinstance(value, bytes):
        return {"$b64": base64.b64encode(value).decode()}
    if isinstance(value, PhpCustom):
        return {CLASS_KEY: value.class_name, "__serialized": _convert(_text(value.payload), done)}
    if isinstance(value, PhpEnum):
        return {CLASS_KEY: value.class_name, "__case": value.case}
    if isinstance(value, PhpRecursion):
        return RECURSION
    return value


def _property_name(key: str, taken: dict) -> str:
    """A protected ("\\0*\\0name") or private ("\\0Class\\0name") property by its plain name,
    unless that name is taken."""
    if key.startswith("\x00"):
        plain = key.rpartition("\x00")[2]
        if plain and plain not in taken:
            return plain
    return key


def session_data(session: dict, *, max_values: int = MAX_VALUES) -> dict:
    """`decode_session`'s result as JSON-like data (see `to_data`), always a dict."""
    sizes: dict[int, int] = {}
    if sum(_expanded(item, sizes) for item in session.values()) > max_values:
        raise PhpFormatError(f"references expand to more than {max_values} values", 0)
    done: dict[int, Any] = {}
    return {str(key): _convert(item, done) for key, item in session.items()}
