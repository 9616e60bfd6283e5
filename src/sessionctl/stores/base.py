"""The one small interface every store kind implements.

A store iterates its records, fetches one, describes itself, tells its size, and removes a batch
of records atomically: only records still exactly as they were when they were selected (the
application may have touched them since), each one handed to the archive before it goes.
"""

from __future__ import annotations

import json
import os
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, NamedTuple
from urllib.parse import parse_qs

from ..domain.errors import store_error, usage_error
from ..domain.model import Record

#: The name of the lock file beside a store file (appended to its name), or inside a folder.
LOCK_SUFFIX = ".sessionctl.lock"

#: Called with the records about to be removed; returns once they are durably archived.
ArchiveFn = Callable[[list[Record]], None]


@dataclass(frozen=True)
class Address:
    """Where a store is, parsed by its kind: what to show, what names it, what cron pins.

    `display` and `pinned` never carry a secret; a password written in the address is kept
    apart in `secret`, which the repr and comparisons leave out.
    """

    kind: str  # the registry name: "json", "jsondir", "sqlite", later "postgresql"
    display: str  # what output, errors, logs, archives show: never a secret
    identity: str  # stable across spellings: locks, the audit log's store_id, archive folders
    pinned: str  # what a crontab line carries: absolute, no secret
    path: Path | None = None  # file kinds
    params: tuple[tuple[str, str], ...] = ()  # e.g. table, schema, host, port, dbname, user
    name: str | None = None  # the config name, when chosen by name
    secret: str | None = field(default=None, repr=False, compare=False)

    @property
    def label(self) -> str:
        return self.name or self.display

    def param(self, key: str, default: str | None = None) -> str | None:
        for name, value in self.params:
            if name == key:
                return value
        return default

    def matches(self, store_id: str) -> bool:
        """Whether an audit entry's `store_id` is about this store. A file store named without
        parameters (no ?table=) matches every entry about its file, as history always did."""
        if store_id == self.identity:
            return True
        if self.path is None or self.params:
            return False
        kind, colon, rest = store_id.partition(":")
        return bool(colon) and rest.partition("?")[0] == os.path.realpath(self.path)


@dataclass(frozen=True)
class StoreSettings:
    """What a store may need from the configuration and the command line (add fields freely:
    every one has a default)."""

    busy_timeout: float = 5.0
    #: PostgreSQL: the environment variable holding the password, or a 0600 file with it.
    password_env: str | None = None
    password_file: str | None = None
    #: PostgreSQL: how long the tool's statements wait for a row lock, and run at most.
    lock_timeout: float = 2.0
    statement_timeout: float = 60.0
    #: PHP: the php.ini to read session.save_path, gc_maxlifetime and serialize_handler from.
    php_ini: str | None = None
    #: PHP: also leave alone files a php-fpm or apache2 process has open (/proc/PID/fd).
    check_open: bool = False
    #: MySQL: where the server refuses GET_LOCK (Galera), make a lease table for the
    #: cross-host lock (`sessionctl_lock`); without it, such runs are not kept apart.
    create_lock_table: bool = False

    @classmethod
    def from_settings(cls, settings) -> StoreSettings:
        """Each field from the effective setting of the same name (anything with `.get`),
        where one is set: a new field needs only a setting of its name."""
        given = {f.name: settings.get(f.name) for f in fields(cls)}
        return cls(**{name: value for name, value in given.items() if value is not None})


def read_password_file(path: str) -> str:
    """The first line of a password file, refused unless only its owner can read it."""
    target = os.path.expanduser(path)
    try:
        info = os.stat(target)
    except OSError as exc:
        raise usage_error(f"password_file {target}: {exc.strerror or exc}") from None
    if info.st_mode & 0o077:
        raise usage_error(
            f"password_file {target} is readable by others (mode {info.st_mode & 0o777:04o})",
            f"chmod 600 {target}",
        )
    try:
        with open(target, encoding="utf-8") as handle:
            return handle.readline().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise usage_error(f"cannot read password_file {target}: {exc}") from None


def configured_password(
    settings: StoreSettings, address: Address, own_sources: str | None = None
) -> str | None:
    """The password from `password_env`, then `password_file`, then one written in the address
    (with a warning naming `own_sources`, the driver's own places, when given); None leaves it
    to the driver's own sources."""
    if settings.password_env:
        value = os.environ.get(settings.password_env)
        if value is None:
            raise usage_error(f"password_env names ${settings.password_env}, which is not set")
        return value
    if settings.password_file:
        return read_password_file(str(settings.password_file))
    if address.secret is not None and own_sources:
        print(
            "sessionctl: warning: a password written in the store address; use "
            f"password_env, password_file or {own_sources} (it is never shown or stored)",
            file=sys.stderr,
        )
    return address.secret


def file_address(
    kind: str, text: str, parameters: tuple[str, ...] = (), describe: str = ""
) -> Address:
    """`KIND:PATH`, `KIND:PATH?NAME=VALUE` (for the `parameters` a kind takes) or a bare PATH.

    A file whose name holds the `?` is taken as it is; otherwise what follows is parameters.
    A bare path is pinned bare (absolute), so cron detects its kind as the shell did.
    """
    text = text.strip()
    prefix = kind + ":"
    explicit = text.startswith(prefix) and not text.startswith(prefix + "//")
    rest = text[len(prefix) :] if explicit else text
    if not rest:
        raise usage_error(f"store {text}: no path after {prefix}")
    query = None
    if "?" in rest and not Path(rest).expanduser().exists():
        base, _, tail = rest.rpartition("?")
        if (explicit and parameters) or Path(base).expanduser().exists():
            rest, query = base, tail
    params = _file_parameters(kind, text, query, parameters, describe) if query is not None else ()
    path = Path(rest).expanduser().absolute()
    suffix = "".join(f"?{key}={value}" for key, value in params[:1]) + "".join(
        f"&{key}={value}" for key, value in params[1:]
    )
    display = f"{kind}:{path}{suffix}"
    return Address(
        kind=kind,
        display=display,
        identity=f"{kind}:{os.path.realpath(path)}{suffix}",
        pinned=display if explicit else f"{path}{suffix}",
        path=path,
        params=params,
    )


def _file_parameters(
    kind: str, address: str, query: str, parameters: tuple[str, ...], describe: str
) -> tuple[tuple[str, str], ...]:
    what = describe or f"a {kind} address"
    if not parameters:
        raise usage_error(f"store {address}: {what} takes no parameters")
    values = parse_qs(query, keep_blank_values=True)
    unknown = sorted(set(values) - set(parameters))
    if unknown or (query and not values):
        named = ", ".join(repr(name) for name in unknown) or repr(query)
        raise usage_error(
            f"store {address}: unknown parameter {named}",
            f"{what} takes only {', '.join(p + '=NAME' for p in parameters)}",
        )
    out = []
    for key in parameters:
        given = values.get(key)
        if given is None:
            continue
        if len(given) > 1:
            raise usage_error(f"store {address}: {key}= given {len(given)} times")
        if not given[0].strip():
            raise usage_error(f"store {address}: empty {key} name", f"give ?{key}=NAME")
        out.append((key, given[0]))
    return tuple(out)


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
    """A store kind: parses its own addresses, and declares what it can do.

    Nothing outside `stores/` asks which kind a store is: where kinds differ, the difference is
    a capability here, with a default every kind gets for free.
    """

    #: The registry name, and the address schemes (`json:`, `postgresql://`) this kind parses.
    kind: ClassVar[str] = ""
    schemes: ClassVar[tuple[str, ...]] = ()
    #: "table" (rows with fixed columns) or "document" (records with the fields they carry):
    #: presets are matched by shape, not by kind.
    shape: ClassVar[str] = "document"
    #: How many records one `remove` call should get at most; None means "all at once"
    #: (a JSON file is rewritten whole, so batching it would only multiply the work).
    natural_batch: int | None = 1
    #: The table's name, for table stores; None for documents.
    table: str | None = None
    #: The table's columns, known for sure; None for documents (their fields vary).
    columns: list[str] | None = None
    #: Why `pushdown` gave no plan, when it did not (for `--explain`).
    no_pushdown_reason: str = "records are judged one by one"

    def __init__(self, address: Address, settings: StoreSettings | None = None):
        self.address = address
        self.settings = settings or StoreSettings()

    @classmethod
    @abstractmethod
    def parse_address(cls, text: str) -> Address:
        """This kind's address from `text` (scheme included, or a bare path for file kinds);
        a usage error for what the kind does not take."""

    @classmethod
    def claims(cls, path: Path) -> bool:
        """For a bare path: whether this kind recognises the file or folder there."""
        return False

    @property
    def path(self) -> Path | None:
        return self.address.path

    def fields(self) -> list[str]:
        """The table's columns, or the fields seen in the first records of a document store."""
        if self.columns is not None:
            return list(self.columns)
        return self.sample()[0]

    def count(self) -> int:
        return sum(1 for _ in self.iter_records())

    def indexed_columns(self) -> set[str] | None:
        """Lowercased columns an index leads with; None where indexes do not apply."""
        return None

    def pushdown(self, mapping, policy, tz, now: float):
        """A plan that counts and selects in the store itself, when it can judge exactly as
        Python does; else None (and `no_pushdown_reason` says why)."""
        return None

    def setting_defaults(self) -> dict[str, tuple[Any, str]]:
        """Settings the store itself knows a default for, {name: (value, where it comes
        from)}: below the configuration and the command line, above the built-in defaults and
        presets (PHP's session.gc_maxlifetime is the idle timeout of its sessions)."""
        return {}

    def lock_beside(self) -> Path | None:
        """The lock file `lock = "store"` takes beside the store, which every host that mounts
        it sees; None for stores that are not files (their `cross_host_lock` serves)."""
        if self.path is None:
            return None
        target = Path(os.path.realpath(self.path))
        return target.with_name(target.name + LOCK_SUFFIX)

    def cross_host_lock(self, identity: str) -> AbstractContextManager | None:
        """A lock every host using this store sees, always taken by a cleanup or restore (a
        database's advisory lock); None for files (see `lock_beside`). Entering it raises a
        busy error when another run holds it."""
        return None

    def index_statement(self, column: str) -> str:
        """The statement that would index `column` (shown in a warning, never run)."""
        return f"CREATE INDEX ON {self.table} ({column})"

    def space_note(self, removed: int) -> str | None:
        """After a cleanup that removed `removed` records: what is left to reclaim, if the
        store keeps dead space (a database's dead rows), in one sentence."""
        return None

    def recover(self) -> int:
        """Finish or undo what a killed run left half done; how many records it put back."""
        return 0

    #: Whether records can carry an expiry the store enforces itself (a Redis TTL), so that
    #: `cleanup --no-ttl` means something here.
    has_ttl: ClassVar[bool] = False
    #: Whether the store keeps entries beside its sessions that can outlive them (index
    #: members, lock keys), which `orphans` finds and `remove` takes.
    has_orphans: ClassVar[bool] = False

    def preset_hint(self) -> str | None:
        """The preset the store knows it holds (from its key names, say), or None to detect
        one from the records' fields."""
        return None

    def lacks_expected_ttl(self, record: Record) -> bool:
        """Whether a record has no TTL where what wrote it always sets one (`--no-ttl`)."""
        return False

    def orphans(self) -> list[Candidate]:
        """Entries whose session is gone (dead index members, lock keys of crashed requests),
        as candidates `remove` takes (their keys are not session keys)."""
        return []

    def extra_stats(self) -> dict:
        """Figures only this kind of store has, for `stats` (JSON-ready)."""
        return {}

    def prepare_restore(self, entry: dict, id_path: str | None, source_kind: str | None):
        """None if the archived `entry` can go in (mapped onto this store's shape in place),
        else why not (one sentence)."""
        return None

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
