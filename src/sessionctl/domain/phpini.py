"""php.ini, read as PHP reads it (pure: the text in, settings out; php is never run).

The grammar is Zend's ini scanner in its normal mode, as far as session settings need it:
`;` comments, `[section]` lines (they do not scope settings, except `[PATH=...]` and
`[HOST=...]`, which apply to some requests only and are skipped here), `key = value`, values in
double quotes (`\\"` and `\\\\` escapes), single quotes (raw) or bare (up to a `;`, trimmed;
`on`/`yes`/`true` are "1", `off`/`no`/`false`/`none`/`null` ""), adjacent pieces joined.
`${NAME}` is replaced from the environment given. The last setting of a key wins.

`session.save_path` is "DIR", "N;DIR" or "N;MODE;DIR" (ext/session/mod_files.c): N levels of
one-character subfolders named by the first characters of the session id.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from .errors import usage_error

_TRUE = {"on", "yes", "true"}
_FALSE = {"off", "no", "false", "none", "null"}
_ENV = re.compile(r"\$\{([^}]*)\}")

#: PHP's defaults (main/php.ini's built-in values; Debian's php.ini sets save_path).
DEFAULT_GC_MAXLIFETIME = 1440
#: session.sid_length's largest value.
MAX_SID_LENGTH = 256
DEFAULT_HANDLER = "php"


class IniError(ValueError):
    def __init__(self, message: str, line: int):
        super().__init__(f"{message} on line {line}")
        self.line = line


def parse_ini(text: str, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """{key: value} of every setting outside [PATH=]/[HOST=] sections, the last one winning."""
    env = env or {}
    out: dict[str, str] = {}
    scoped = False
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith(";"):
            continue
        if stripped.startswith("["):
            close = stripped.find("]")
            if close < 0:
                raise IniError("a section without ']'", number)
            name = stripped[1:close].strip().upper()
            scoped = name.startswith("PATH=") or name.startswith("HOST=")
            continue
        key, equals, rest = stripped.partition("=")
        key = key.strip()
        if not equals or not key:
            if not key or ";" in key:
                continue
            value = ""  # a bare name: PHP sets it to ""
        else:
            value = _value(rest, number, env)
        if not scoped:
            out[key] = value
    return out


def _value(text: str, line: int, env: Mapping[str, str]) -> str:
    pieces: list[str] = []
    pos = 0
    bare: list[str] = []

    def flush():
        if bare:
            word = "".join(bare).strip()
            lowered = word.lower()
            if len(pieces) == 0 and lowered in _TRUE:
                word = "1"
            elif len(pieces) == 0 and lowered in _FALSE:
                word = ""
            pieces.append(_ENV.sub(lambda m: env.get(m.group(1), ""), word))
            bare.clear()

    while pos < len(text):
        char = text[pos]
        if char == ";":
            break
        if char == '"':
            flush()
            pos += 1
            piece = []
            while True:
                if pos >= len(text):
                    raise IniError("a string without its closing '\"'", line)
                char = text[pos]
                if char == "\\" and pos + 1 < len(text) and text[pos + 1] in '"\\':
                    piece.append(text[pos + 1])
                    pos += 2
                    continue
                if char == '"':
                    pos += 1
                    break
                piece.append(char)
                pos += 1
            pieces.append(_ENV.sub(lambda m: env.get(m.group(1), ""), "".join(piece)))
            continue
        if char == "'":
            flush()
            close = text.find("'", pos + 1)
            if close < 0:
                raise IniError('a string without its closing "\'"', line)
            pieces.append(text[pos + 1 : close])
            pos = close + 1
            continue
        if char in " \t" and not bare:
            pos += 1
            continue
        bare.append(char)
        pos += 1
    flush()
    return "".join(pieces)


@dataclass(frozen=True)
class SavePath:
    folder: str
    depth: int = 0
    mode: int | None = None


def parse_save_path(text: str) -> SavePath:
    """`session.save_path`: "DIR", "N;DIR" or "N;MODE;DIR" (as mod_files.c splits it)."""
    parts = text.split(";")
    folder = parts[-1].strip()
    depth, mode = 0, None
    if len(parts) > 1:
        first = parts[0].strip()
        if not re.fullmatch(r"[0-9]{1,3}", first):
            raise usage_error(
                f"session.save_path {text!r}: the first part, {first!r}, is not a number of levels"
            )
        depth = int(first)
        if depth > MAX_SID_LENGTH:
            # A level per character of the id: deeper than an id is long holds no file.
            raise usage_error(
                f"session.save_path {text!r}: {depth} levels, more than a session id "
                f"has characters (at most {MAX_SID_LENGTH})"
            )
    if len(parts) > 2:
        if not re.fullmatch(r"[0-7]{1,4}", parts[1].strip()):
            raise usage_error(f"session.save_path {text!r}: {parts[1]!r} is not an octal mode")
        mode = int(parts[1].strip(), 8)
    if len(parts) > 3:
        raise usage_error(f"session.save_path {text!r}: at most N;MODE;DIR")
    if not folder:
        raise usage_error(f"session.save_path {text!r} names no folder")
    return SavePath(folder=folder, depth=depth, mode=mode)


@dataclass(frozen=True)
class PhpSessionSettings:
    save_path: str | None = None
    gc_maxlifetime: int = DEFAULT_GC_MAXLIFETIME
    serialize_handler: str = DEFAULT_HANDLER
    #: session.save_handler: "files" (PHP's default) is the only one that keeps sessions in
    #: save_path's folder; with redis or memcached, save_path is a server address.
    save_handler: str = "files"


def session_settings(ini: Mapping[str, str], source: str = "php.ini") -> PhpSessionSettings:
    """The session settings of a parsed php.ini, checked."""
    from .phpserial import HANDLERS

    lifetime_text = ini.get("session.gc_maxlifetime", str(DEFAULT_GC_MAXLIFETIME)).strip()
    if not re.fullmatch(r"[0-9]{1,12}", lifetime_text):
        raise usage_error(f"{source}: session.gc_maxlifetime {lifetime_text!r} is not seconds")
    handler = ini.get("session.serialize_handler", DEFAULT_HANDLER).strip() or DEFAULT_HANDLER
    if handler not in HANDLERS:
        raise usage_error(
            f"{source}: session.serialize_handler {handler!r} is not supported",
            f"sessionctl reads {', '.join(HANDLERS)}",
        )
    save_path = ini.get("session.save_path")
    return PhpSessionSettings(
        save_path=save_path.strip() if save_path is not None and save_path.strip() else None,
        gc_maxlifetime=int(lifetime_text),
        serialize_handler=handler,
        save_handler=ini.get("session.save_handler", "files").strip().lower() or "files",
    )
