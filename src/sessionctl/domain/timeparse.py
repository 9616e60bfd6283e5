"""Timestamps, durations and sizes as operators and session stores write them.

Internally every instant is a float of seconds since the Unix epoch (UTC): it is what SQLite
compares fastest, and a million of them cost far less than a million `datetime` objects.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, tzinfo

from .errors import usage_error

UTC = UTC

# Epoch numbers are told apart by magnitude: 1e11 seconds is the year 5138, while 1e11
# milliseconds is 1973; 1e14 milliseconds is again the year 5138, so larger values are
# microseconds. Anything beyond is nonsense rather than a unit we could guess.
_MS_THRESHOLD = 1e11
_US_THRESHOLD = 1e14
_MAX_EPOCH_MAGNITUDE = 1e17

_NUMERIC = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
#: ISO 8601 basic dates, `YYYYMMDD`: all digits, yet a date (as `fromisoformat` reads them), not
#: epoch seconds (as seconds, 8 digits are a moment of 1970-1973).
_BASIC_DATE = re.compile(r"\d{8}")
# Year 9999 is the last one `datetime` represents; later values cannot be real timestamps.
_MAX_EPOCH_SECONDS = 253402300799.0


class TimestampError(ValueError):
    """A value that cannot be read as an instant. The message says why, for a verdict."""


def parse_timestamp(value: object, tz: tzinfo = UTC) -> float:
    """Read `value` as an instant and return epoch seconds.

    Accepts ISO 8601 with or without offset, basic (`20261231`, `20261231T235959Z`) or extended,
    `YYYY-MM-DD HH:MM:SS[.ffffff]`, and epoch seconds, milliseconds or microseconds as numbers or
    numeric strings. Naive times are in `tz`.
    """
    if isinstance(value, bool) or value is None:
        raise TimestampError(f"not a timestamp: {value!r}")
    if isinstance(value, (int, float)):
        return _from_epoch_number(value)
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise TimestampError("not a timestamp: undecodable bytes") from None
    if not isinstance(value, str):
        raise TimestampError(f"not a timestamp: a {type(value).__name__}")
    text = value.strip()
    if not text:
        raise TimestampError("empty timestamp")
    if _NUMERIC.fullmatch(text) and not _BASIC_DATE.fullmatch(text):
        return _from_epoch_number(float(text))
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise TimestampError(f"unparseable timestamp: {_shorten(text)!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=tz)
    try:
        return parsed.timestamp()
    except (OverflowError, ValueError, OSError):
        raise TimestampError(f"timestamp out of range: {_shorten(text)!r}") from None


def _from_epoch_number(number: float) -> float:
    if isinstance(number, float) and not math.isfinite(number):
        raise TimestampError(f"not a finite timestamp: {number!r}")
    magnitude = abs(number)
    if magnitude >= _MAX_EPOCH_MAGNITUDE:
        raise TimestampError(f"timestamp out of range: {number!r}")
    if magnitude >= _US_THRESHOLD:
        seconds = number / 1_000_000
    elif magnitude >= _MS_THRESHOLD:
        seconds = number / 1000
    else:
        seconds = float(number)
    if seconds < 0:
        raise TimestampError(f"timestamp before 1970: {number!r}")
    if seconds > _MAX_EPOCH_SECONDS:
        raise TimestampError(f"timestamp out of range: {number!r}")
    return seconds


def _shorten(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def to_iso(epoch: float | None) -> str | None:
    """Epoch seconds as ISO 8601 UTC with a `Z`, to the second (what tables and JSON show)."""
    if epoch is None:
        return None
    moment = datetime.fromtimestamp(epoch, UTC).replace(microsecond=0)
    return moment.isoformat().replace("+00:00", "Z")


def parse_now(text: str | None) -> float:
    """The instant to judge sessions against: `text` when given (for "what if" runs), else now."""
    if text is None:
        return datetime.now(UTC).timestamp()
    try:
        return parse_timestamp(text)
    except TimestampError as exc:
        raise usage_error(f"--now: {exc}", "use ISO 8601, e.g. 2026-01-31T12:00:00Z") from None


# --- durations -------------------------------------------------------------------------------

_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|[smhdw])")
#: The longest duration any option takes: 100 years. Far beyond it a value is a typo, and
#: sleeps, timeouts and date arithmetic would overflow.
MAX_DURATION = 36500 * 86400.0


def parse_duration(text: str | int | float, what: str = "duration") -> float:
    """`200ms`, `90s`, `30m`, `12h`, `7d`, `2w`, `1d12h` (or a bare number of seconds) ->
    seconds."""
    if isinstance(text, bool):
        raise usage_error(f"{what}: not a duration: {text!r}")
    if isinstance(text, (int, float)):
        if not math.isfinite(text) or text < 0:
            raise usage_error(f"{what}: must be a positive duration, got {text!r}")
        return _bounded(float(text), text, what)
    compact = str(text).strip().lower().replace(" ", "")
    if re.fullmatch(r"\d+(\.\d+)?", compact):
        return _bounded(float(compact), text, what)
    position = 0
    total = 0.0
    for match in _DURATION_PART.finditer(compact):
        if match.start() != position:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        position = match.end()
    if not compact or position != len(compact):
        raise usage_error(
            f"{what}: not a duration: {str(text)!r}", "use e.g. 90s, 30m, 12h, 7d, 2w or 1d12h"
        )
    return _bounded(total, text, what)


def _bounded(seconds: float, text: object, what: str) -> float:
    if not math.isfinite(seconds) or seconds > MAX_DURATION:
        raise usage_error(
            f"{what}: {_shorten(str(text))!r} is too long a duration", "the longest is 36500d"
        )
    return seconds


def format_duration(seconds: float | None) -> str | None:
    """Seconds as the two largest units, e.g. `3d4h`, `12m30s`, `45s`; negative gets a `-`."""
    if seconds is None:
        return None
    sign = "-" if seconds < 0 else ""
    remaining = int(abs(seconds))
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, remaining = divmod(remaining, size)
        if count or (unit == "s" and not parts):
            parts.append(f"{count}{unit}")
        if len(parts) == 2:
            break
    return sign + "".join(parts)


# --- sizes -----------------------------------------------------------------------------------

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kib": 1024,
    "m": 1024**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gib": 1024**3,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
}


def parse_size(text: str | int, what: str = "size") -> int:
    """`500`, `10K`/`10KiB` (1024), `10KB` (1000), `5M`, `5MB`, `1G` -> bytes."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise usage_error(f"{what}: must not be negative")
        return text
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(text))
    unit = match.group(2).lower() if match else None
    if not match or unit not in _SIZE_UNITS:
        raise usage_error(f"{what}: not a size: {str(text)!r}", "use e.g. 500K, 10MB or 1G")
    number = float(match.group(1)) * _SIZE_UNITS[unit]
    if not math.isfinite(number):
        raise usage_error(f"{what}: {_shorten(str(text).strip())!r} is too large a size")
    return int(number)


def format_size(size: int | None) -> str | None:
    if size is None:
        return None
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover - loop always returns
