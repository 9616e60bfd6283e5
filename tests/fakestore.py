"""A store kind that lives only in this test module: `memo://USER:PASSWORD@HOST:PORT/SPACE`.

It plugs into sessionctl the way a network store does (a scheme of its own, a password in the
address, a lock every host sees), with no edit outside this module: tests put it in the
registry's tuple with monkeypatch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sessionctl.domain.errors import busy_error, usage_error
from sessionctl.domain.model import Record
from sessionctl.stores.base import Address, Candidate, RemoveOutcome, Store, canonical_bytes

#: The registry entry a test adds (module, class: imported lazily like every kind).
ENTRY = ("memo", ("memo",), "fakestore", "MemoStore", False)
#: identity -> {key: record}: what the "server" holds.
SPACES: dict[str, dict[str, dict]] = {}
#: identities whose cross-host lock another "host" holds; identities locked so far.
HELD: set[str] = set()
TAKEN: list[str] = []
#: Every password a MemoStore was opened with (the store gets it; nothing else may show it).
PASSWORDS_SEEN: list[str] = []


class MemoStore(Store):
    kind = "memo"
    schemes = ("memo",)
    shape = "document"
    natural_batch = 2

    @classmethod
    def parse_address(cls, text: str) -> Address:
        parts = urlsplit(text.strip())
        if parts.scheme.lower() != "memo" or not parts.hostname or not parts.path.strip("/"):
            raise usage_error(f"store {parts.scheme}://...: give memo://HOST[:PORT]/SPACE")
        unknown = sorted(set(parse_qs(parts.query, keep_blank_values=True)))
        if unknown:
            raise usage_error(f"store memo://{parts.hostname}: unknown parameter {unknown[0]!r}")
        host, port, space = parts.hostname.lower(), parts.port or 7000, parts.path.strip("/")
        user = f"{parts.username}@" if parts.username else ""
        shown = f"memo://{user}{host}:{port}/{space}"
        return Address(
            kind=cls.kind,
            display=shown,
            identity=f"memo://{host}:{port}/{space}",
            pinned=shown,
            params=(("host", host), ("port", str(port)), ("space", space)),
            secret=parts.password,
        )

    def __init__(self, address, settings=None):
        super().__init__(address, settings)
        if address.secret:
            PASSWORDS_SEEN.append(address.secret)
        self.records = SPACES.setdefault(address.identity, {})

    def iter_records(self) -> Iterator[Record]:
        for key, data in list(self.records.items()):
            yield Record(key=key, data=dict(data), size=len(canonical_bytes(data)))

    def sample(self, limit: int = 50) -> tuple[list[str], list[dict]]:
        records = [dict(data) for data in list(self.records.values())[:limit]]
        keys: dict[str, None] = {}
        for data in records:
            keys.update(dict.fromkeys(data))
        keys.setdefault("$key", None)
        return list(keys), records

    def count(self) -> int:
        return len(self.records)

    def size_bytes(self) -> int:
        return sum(len(canonical_bytes(data)) for data in self.records.values())

    def describe(self) -> dict:
        return {"kind": self.kind, "space": self.address.param("space"), "keys": self.count()}

    def fingerprint(self, record: Record) -> Any:
        return canonical_bytes(record.data)

    def current(self, candidates: list[Candidate]) -> dict[Any, Record]:
        found = {}
        for candidate in candidates:
            data = self.records.get(candidate.key)
            if data is not None and canonical_bytes(data) == candidate.fingerprint:
                found[candidate.key] = Record(key=candidate.key, data=dict(data), size=None)
        return found

    def remove(self, candidates: list[Candidate], archive) -> RemoveOutcome:
        outcome = RemoveOutcome()
        unchanged = self.current(candidates)
        outcome.changed = [c.key for c in candidates if c.key not in unchanged]
        if unchanged:
            archive(list(unchanged.values()))
            for key, record in unchanged.items():
                del self.records[key]
                outcome.removed.append(record)
        return outcome

    def insert(self, entries: list[dict], id_path: str | None) -> tuple[int, int]:
        restored = skipped = 0
        for entry in entries:
            key = entry.get("key")
            if key in self.records:
                skipped += 1
            else:
                self.records[key] = entry["record"]
                restored += 1
        return restored, skipped

    def cross_host_lock(self, identity: str):
        @contextlib.contextmanager
        def held():
            if identity in HELD:
                raise busy_error(f"another cleanup of {self.address.display} is running")
            TAKEN.append(identity)
            HELD.add(identity)
            try:
                yield
            finally:
                HELD.discard(identity)

        return held()
