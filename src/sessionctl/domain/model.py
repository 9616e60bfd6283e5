"""What a store hands out (Record), what sessionctl reads from it (Session), and the judgement
passed on it (Verdict with its Reasons)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

# Reason codes. They are stable keys of the JSON output and of per-reason counts.
EXPIRED = "expired"  # the expiry field is in the past
IDLE = "idle"  # not accessed for longer than the idle timeout
MAX_AGE = "max_age"  # created longer ago than the maximum age
CORRUPT = "corrupt"  # the record cannot be read at all (bad JSON, not an object)
MISSING_FIELD = "missing_field"
MISSING_ID = "missing_id"  # no id: nothing could name the session (in a list, a hook, a restore)
BAD_TIMESTAMP = "bad_timestamp"
FUTURE_TIMESTAMP = "future_timestamp"
#: A time before 2000: a unit mix-up (epoch seconds read from days, ms from s) far more often
#: than a real session.
IMPLAUSIBLE_TIMESTAMP = "implausible_timestamp"
INCONSISTENT = "inconsistent"  # e.g. last access before creation
NOT_ALLOWED = "not_allowed"  # a value outside the allowed set
WRONG_TYPE = "wrong_type"
DUPLICATE_ID = "duplicate_id"
# Reasons a cleanup adds when it selects beyond expiry and validity.
GROUP_CAP = "group_cap"
COUNT_CAP = "count_cap"
SIZE_CAP = "size_cap"
ALL = "all"
#: A session without the TTL its framework always sets (Redis: `cleanup --no-ttl`).
NO_TTL = "no_ttl"
#: An index member or lock key whose session is gone (`cleanup --orphans`).
ORPHAN = "orphan"


ACTIVE, EXPIRED_STATUS, INVALID = "active", "expired", "invalid"

#: Age histogram buckets of `stats`: label and upper bound in seconds (the last is open-ended).
AGE_BUCKETS: list[tuple[str, float]] = [
    ("<1h", 3600),
    ("1h-6h", 6 * 3600),
    ("6h-1d", 86400),
    ("1d-7d", 7 * 86400),
    ("7d-30d", 30 * 86400),
    ("30d-90d", 90 * 86400),
    ("90d-1y", 365 * 86400),
    (">1y", float("inf")),
]


@dataclass(slots=True)
class Record:
    """One entry as the store keeps it.

    `key` is the store's own handle on it (a list index, an object key, a file name, a rowid);
    `data` the decoded object, or None when it could not be decoded, with `error` saying why and
    `raw` holding the undecoded bytes so that an archive can still keep them.
    """

    key: Any
    data: dict | None
    #: Bytes the record takes in the store; None until asked for when costly to know.
    size: int | None
    error: str | None = None
    raw: bytes | None = None
    #: Rows of other tables that go with this one (SQLite ON DELETE CASCADE), by table.
    children: dict | None = None
    #: The store's token for this exact version of the record (a file's inode, size, mtime).
    version: Any = None
    #: The store's bytes are what a restore puts back (a format the decoded value cannot say
    #: all of, such as PHP serialization): the archive keeps them.
    keep_raw: bool = False

    def byte_size(self) -> int:
        if self.size is None:
            if self.raw is not None:
                self.size = len(self.raw)
            else:
                text = json.dumps(self.data, ensure_ascii=False, separators=(",", ":"), default=str)
                self.size = len(text.encode())
        return self.size


class Reason:
    """Why a session is expired or invalid: a stable code, a message, the field concerned.

    The message may be given as a function that makes it: a million expired sessions need
    their codes counted, not a million sentences written, so text is made only when shown.
    """

    __slots__ = ("code", "field", "_message")

    def __init__(self, code: str, message, field: str | None = None):
        self.code = code
        self.field = field
        self._message = message

    @property
    def message(self) -> str:
        if callable(self._message):
            self._message = self._message()
        return self._message

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Reason) and (self.code, self.message, self.field) == (
            other.code,
            other.message,
            other.field,
        )

    def __hash__(self) -> int:
        return hash((self.code, self.field))

    def __repr__(self) -> str:
        return f"Reason({self.code!r}, {self.message!r}, {self.field!r})"

    def as_dict(self) -> dict:
        out = {"code": self.code, "message": self.message}
        if self.field is not None:
            out["field"] = self.field
        return out


@dataclass(slots=True)
class Session:
    """A record read through the field mapping. Times are epoch seconds (UTC) or None."""

    id: str | None
    key: Any
    record: Record
    created: float | None = None
    accessed: float | None = None
    expires: float | None = None
    group: str | None = None
    #: Problems met while reading the record (unparseable timestamps, wrong types, corruption).
    problems: list[Reason] = field(default_factory=list)

    @property
    def size(self) -> int:
        return self.record.byte_size()

    @property
    def last_active(self) -> float | None:
        """The best known moment of last use, for "newest"/"oldest" ordering."""
        if self.accessed is not None:
            return self.accessed
        return self.created


@dataclass(slots=True)
class Verdict:
    expired: list[Reason] = field(default_factory=list)
    invalid: list[Reason] = field(default_factory=list)

    @property
    def status(self) -> str:
        if self.invalid:
            return INVALID
        if self.expired:
            return EXPIRED_STATUS
        return ACTIVE

    @property
    def reasons(self) -> list[Reason]:
        return self.invalid + self.expired

    @property
    def is_expired(self) -> bool:
        return bool(self.expired)

    @property
    def is_invalid(self) -> bool:
        return bool(self.invalid)
