"""The one small interface every store kind implements.

A store iterates its records, fetches one, describes itself, tells its size, and removes a batch
of records atomically: only records still exactly as they were when they were selected (the
application may have touched them since), each one handed to the archive before it goes.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from ..domain.errors import store_error
from ..domain.model import Record

#: Called with the records about to be removed; returns once they are durably archived.
ArchiveFn = Callable[[list[Record]], None]


@dataclass(frozen=True)
class StoreSpec:
    kind: str  # json | jsondir | sqlite
    path: Path
    table: str | None = None
    name: str | None = None  # the config name, when chosen by name

    @property
    def address(self) -> str:
        text = f"{self.kind}:{self.path}"
        return f"{text}?table={self.table}" if self.table else text

    @property
    def label(self) -> str:
        return self.name or self.address


class Candidate(NamedTuple):
    """A record selected for removal, with what proves it unchanged at removal time.

    A tuple, not a dataclass: a cleanup with caps holds one per session of the store.
    """

    key: Any
    fingerprint: Any
    id: str | None = None


@dataclass
class RemoveOutcome:
    removed: list[Record] = field(default_factory=list)
    #: Keys whose records changed or vanished since selection: left alone.
    changed: list[Any] = field(default_factory=list)
    #: Key -> error for records that could not be removed.
    failed: dict[Any, str] = field(default_factory=dict)


class Store(ABC):
    kind: str = ""
    #: How many records one `remove` call should get at most; None means "all at once"
    #: (a JSON file is rewritten whole, so batching it would only multiply the work).
    natural_batch: int | None = 1

    def __init__(self, spec: StoreSpec):
        self.spec = spec

    @property
    def path(self) -> Path:
        return self.spec.path

    @abstractmethod
    def iter_records(self) -> Iterator[Record]: ...

    @abstractmethod
    def sample(self, limit: int = 50) -> tuple[list[str], list[dict]]:
        """Field names (columns, or keys seen in the first records) and some decoded records."""

    def find(self, session_id: str, id_path: str | None) -> Record | None:
        """The record whose id is `session_id` (or whose key is, as a fallback)."""
        from ..domain.mapping import lookup

        for record in self.iter_records():
            if str(record.key) == session_id and id_path in (None, "$key"):
                return record
            if record.data is not None and id_path:
                value = lookup(record.data, id_path, record.key)
                if str(value) == session_id:
                    return record
        for record in self.iter_records():
            if str(record.key) == session_id:
                return record
        return None

    def unique_fields(self) -> set[str]:
        """Fields the store itself keeps unique (a primary key, a UNIQUE index)."""
        return set()

    def delete_triggers(self) -> list[tuple[str, str]]:
        """(table, trigger) for triggers a removal here sets off: what they change is beyond
        the archive, so a cleanup removes from such a store only when told to."""
        return []

    @abstractmethod
    def size_bytes(self) -> int: ...

    @abstractmethod
    def describe(self) -> dict: ...

    @abstractmethod
    def fingerprint(self, record: Record) -> Any: ...

    @abstractmethod
    def current(self, candidates: list[Candidate]) -> dict[Any, Record]:
        """The records of `candidates` still unchanged, by key (for hooks to see them)."""

    @abstractmethod
    def remove(self, candidates: list[Candidate], archive: ArchiveFn) -> RemoveOutcome: ...

    @abstractmethod
    def insert(self, entries: list[dict], id_path: str | None) -> tuple[int, int]:
        """Put archived entries back, skipping ids present again. Returns (restored, skipped)."""

    def close(self) -> None:
        return None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def require_exists(path: Path, what: str) -> os.stat_result:
    try:
        return path.stat()
    except FileNotFoundError:
        raise store_error(f"{what} {path} does not exist", "check the path or --store") from None
    except PermissionError:
        raise store_error(f"cannot read {path}: permission denied") from None
    except OSError as exc:
        raise store_error(f"cannot read {path}: {exc.strerror or exc}") from None


def canonical_bytes(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=repr).encode()
