"""A session table in a SQLite database the application may have open right now.

Reads page through the table by rowid in short read transactions, so a rollback-journal
database is never held against the application's writers for more than a moment. Removal goes
batch by batch: BEGIN IMMEDIATE (waiting at most the busy timeout), re-read the batch, keep only
rows still exactly as selected, archive them, DELETE, COMMIT.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import sqlite3
from collections.abc import Iterator
from typing import Any

from ..domain.errors import SessionctlError, busy_error, store_error, usage_error
from ..domain.mapping import CANDIDATES, detect_preset, is_missing, norm_name, resolve, split_path
from ..domain.model import Record
from .base import ArchiveFn, Candidate, RemoveOutcome, Store, require_exists

SQLITE_HEADER = b"SQLite format 3\x00"
READ_PAGE = 2000
#: Bound parameters per statement, well under every SQLite build's limit.
MAX_PARAMS = 500
DEFAULT_BUSY_TIMEOUT = 5.0
#: The names SQLite gives the rowid, unless a column of the table takes them.
ROWID_ALIASES = ("rowid", "_rowid_", "oid")


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class BadText(bytes):
    """A TEXT value whose bytes are not UTF-8 (`CAST(x'ff41' AS TEXT)`): kept as its bytes,
    archived as {"$text_b64": ...} and put back as TEXT, byte for byte."""


class _BadRow(tuple):
    """A fetched row holding at least one BadText value."""


def _decode_text(raw: bytes):
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return BadText(raw)


def _is_utf8(*values) -> int:
    """SQL function: 1 when every argument (bytes, or NULL) is UTF-8 as Python reads it."""
    try:
        for value in values:
            if value is not None:
                value.decode()
    except (UnicodeDecodeError, AttributeError):
        return 0
    return 1


#: Arguments per call of the SQL function (SQLite allows 127 at least).
_UTF8_ARGS = 100


def sound_text(columns: list[str]) -> str:
    """SQL, 1 when every TEXT value of the row is text Python can read (UTF-8, strictly):
    one function call per row with each TEXT value's bytes, which costs less than any test
    built of SQLite's own functions (a GLOB for non-ASCII takes five times as long)."""
    texts = [
        f"CASE WHEN typeof({quote_identifier(c)}) = 'text' THEN CAST({quote_identifier(c)} AS BLOB)"
        " END"
        for c in columns
    ]
    calls = [
        f"sessionctl_utf8({', '.join(texts[i : i + _UTF8_ARGS])})"
        for i in range(0, len(texts), _UTF8_ARGS)
    ]
    return " AND ".join(calls) or "1"


def trigger_event(sql: str) -> str | None:
    """DELETE, INSERT or UPDATE: what fires a trigger, read from its CREATE TRIGGER text as
    SQLite reads it (quoted names and comments skipped, so neither `"BEGIN"` as a name nor
    `DELETE/**/ON` hides it); None when it cannot be told, which callers take for DELETE."""
    i, n = 0, len(sql)
    while i < n:
        if sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end < 0 else end + 1
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            i = n if end < 0 else end + 2
        elif sql[i] in "'\"`[":
            close = "]" if sql[i] == "[" else sql[i]
            j = i + 1
            while True:
                end = sql.find(close, j)
                if end < 0:
                    return None
                if close != "]" and sql.startswith(close * 2, end):
                    j = end + 2  # a doubled quote inside the name
                    continue
                i = end + 1
                break
        elif sql[i].isalnum() or sql[i] == "_":
            word = re.match(r"\w+", sql[i:]).group(0)
            if word.upper() in ("DELETE", "INSERT", "UPDATE"):
                return word.upper()
            i += len(word)
        else:
            i += 1
    return None


def fetch_rows(conn: sqlite3.Connection, sql: str, params=()) -> list[tuple]:
    """All rows of a SELECT; when a TEXT value is not UTF-8, the rows again with such values
    as BadText (and their rows as _BadRow) instead of the whole read failing."""
    try:
        return conn.execute(sql, params).fetchall()
    except sqlite3.OperationalError as exc:
        if not str(exc).startswith("Could not decode to UTF-8"):
            raise
    conn.text_factory = _decode_text
    try:
        rows = conn.execute(sql, params).fetchall()
    finally:
        conn.text_factory = str
    return [
        _BadRow(row) if any(type(v) is BadText for v in row) else row  # noqa: E721
        for row in rows
    ]


def encode_value(value):
    """A column value as JSON can carry it and `decode_value` gives back exactly."""
    if isinstance(value, BadText):
        return {"$text_b64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, bytes):
        return {"$b64": base64.b64encode(value).decode("ascii")}
    return value


def decode_value(value):
    if isinstance(value, dict) and len(value) == 1:
        if "$text_b64" in value:
            return BadText(base64.b64decode(value["$text_b64"]))
        if "$b64" in value:
            return base64.b64decode(value["$b64"])
    return value


def _chunks(items: list, size: int = MAX_PARAMS) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class SqliteStore(Store):
    kind = "sqlite"

    def __init__(self, spec, busy_timeout: float = DEFAULT_BUSY_TIMEOUT):
        super().__init__(spec)
        self.busy_timeout = busy_timeout
        info = require_exists(self.path, "SQLite database")
        if not self.path.is_file():
            raise store_error(f"{self.path} is not a file")
        if info.st_size == 0:
            raise store_error(f"{self.path} is empty (0 bytes), not a SQLite database")
        try:
            with open(self.path, "rb") as handle:
                header = handle.read(len(SQLITE_HEADER))
        except OSError as exc:
            raise store_error(f"cannot read {self.path}: {exc.strerror}") from None
        if header != SQLITE_HEADER:
            raise store_error(f"{self.path} is not a SQLite database", "is this the right file?")
        # Read-write where allowed even for reading: a reader must be able to roll back the
        # hot journal an application (or a killed cleanup) left behind, or SQLite refuses to
        # read at all. The reader itself never changes the database.
        # A file without write bits is read-only even for root (who `os.access` says may
        # write anything): it is opened read-only and never written.
        writable = bool(info.st_mode & 0o222) and os.access(self.path, os.W_OK)
        self._reader = self._connect("rw" if writable else "ro")
        self._writer: sqlite3.Connection | None = None
        self.table = self._choose_table(spec.table)
        self.columns = self._columns(self.table)
        self.key_column = self._key_column()
        self._children = self._cascade_children()

    # -- connections and errors ------------------------------------------------------------

    def _connect(self, mode: str) -> sqlite3.Connection:
        uri = self.path.resolve().as_uri() + f"?mode={mode}"
        with self.translate_errors("open"):
            conn = sqlite3.connect(
                uri,
                uri=True,
                timeout=self.busy_timeout,
                isolation_level=None,
                check_same_thread=False,
            )
            if mode == "rw":
                conn.execute("PRAGMA foreign_keys = ON")  # so ON DELETE CASCADE is honoured
            conn.create_function("sessionctl_utf8", -1, _is_utf8, deterministic=True)
        return conn

    @contextlib.contextmanager
    def translate_errors(self, doing: str):
        try:
            yield
        except SessionctlError:
            raise
        except sqlite3.OperationalError as exc:
            text = str(exc)
            if text.startswith("Could not decode to UTF-8"):
                # sqlite3 quotes the undecodable value, which may well be a token: never echo it.
                text = text.split(" with text ")[0] + " (the text is not valid UTF-8)"
            if "locked" in text or "busy" in text:
                raise busy_error(
                    f"{self.path} is locked by another process (waited {self.busy_timeout:g}s)",
                    "nothing was changed; try again or raise --busy-timeout",
                ) from None
            if "unable to open" in text or "readonly" in text or "read-only" in text:
                raise store_error(
                    f"cannot {doing} {self.path}: {text}", "check permissions"
                ) from None
            raise store_error(f"cannot {doing} {self.path}: {text}") from None
        except sqlite3.DatabaseError as exc:
            raise store_error(f"{self.path} is corrupt or not a database: {exc}") from None

    def _check_writable(self) -> None:
        """Before anything is archived: a database made read-only (chmod a-w, which even root
        is held to here, as `rm` asks first) or whose folder cannot take its journal is left
        as it is."""
        info = require_exists(self.path, "SQLite database")
        if not info.st_mode & 0o222 or not os.access(self.path, os.W_OK):
            raise store_error(
                f"{self.path} is read-only (mode {info.st_mode & 0o7777:04o}); nothing was changed",
                "make it writable to clean it up",
            )
        if not os.access(self.path.parent, os.W_OK | os.X_OK):
            raise store_error(
                f"cannot write in {self.path.parent}: permission denied or read-only "
                f"(SQLite keeps its journal beside {self.path.name}); nothing was changed"
            )

    def _writer_conn(self) -> sqlite3.Connection:
        if self._writer is None:
            self._check_writable()
            self._writer = self._connect("rw")
            with self.translate_errors("write"):
                if self._writer.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
                    # In WAL mode NORMAL cannot corrupt the database; a power cut may undo the
                    # last batches, whose sessions are in the archive and go again next run.
                    # It spares one fsync per batch, which is most of a small batch's cost.
                    self._writer.execute("PRAGMA synchronous = NORMAL")
        return self._writer

    def close(self) -> None:
        for conn in (self._reader, self._writer):
            if conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()

    def query(self, sql: str, params: tuple | list = ()) -> list[tuple]:
        with self.translate_errors("read"):
            return fetch_rows(self._reader, sql, params)

    # -- schema ----------------------------------------------------------------------------

    def tables(self) -> list[str]:
        rows = self.query(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
            "ORDER BY name"
        )
        return [name for (name,) in rows]

    def _columns(self, table: str) -> list[str]:
        return [row[1] for row in self.query(f"PRAGMA table_info({quote_identifier(table)})")]

    def _choose_table(self, wanted: str | None) -> str:
        tables = self.tables()
        if wanted:
            for name in tables:
                if name == wanted or name.lower() == wanted.lower():
                    return name
            listed = ", ".join(tables) or "none"
            raise store_error(f"{self.path} has no table {wanted!r} (tables: {listed})")
        scored = []
        for name in tables:
            columns = self._columns(name)
            preset = detect_preset(columns, "sqlite", name)
            if preset is not None:
                scored.append((2 + int((preset.table or "").lower() == name.lower()), name))
            elif _looks_like_sessions(columns):
                scored.append((1, name))
        if not scored:
            listed = ", ".join(tables) or "none"
            raise store_error(
                f"no table in {self.path} looks like a session table (tables: {listed})",
                "name one with sqlite:PATH?table=NAME and map fields with --field",
            )
        best = max(score for score, _ in scored)
        winners = [name for score, name in scored if score == best]
        session_named = [name for name in winners if "session" in name.lower()]
        if len(winners) > 1 and len(session_named) == 1:
            winners = session_named
        if len(winners) > 1:
            raise usage_error(
                f"several tables in {self.path} look like sessions: {', '.join(winners)}",
                "choose one with sqlite:PATH?table=NAME",
            )
        return winners[0]

    def _key_column(self) -> str:
        """The name the store addresses rows by: a rowid alias no column shadows (a column
        named `rowid`, `oid` or `_rowid_` takes that name over), else the primary key."""
        table = quote_identifier(self.table)
        names = {c.lower() for c in self.columns}
        for alias in ROWID_ALIASES:
            if alias in names:
                continue  # the name means the user's column here, not the rowid
            try:
                self._reader.execute(f"SELECT {alias} FROM {table} LIMIT 1").fetchall()
                return alias
            except sqlite3.OperationalError:
                break  # a WITHOUT ROWID table: no alias works
        primary = [row[1] for row in self.query(f"PRAGMA table_info({table})") if row[5]]
        if len(primary) != 1:
            raise store_error(
                f"table {self.table} has neither an unshadowed rowid nor a single-column "
                "primary key",
                "sessionctl cannot address its rows one by one",
            )
        return primary[0]

    @property
    def key_sql(self) -> str:
        """The key as SQL: a rowid alias bare, a column quoted."""
        if self.key_column in ROWID_ALIASES:
            return self.key_column
        return quote_identifier(self.key_column)

    @property
    def rowid_key(self) -> bool:
        """Whether rows are addressed by their rowid (an integer that orders them)."""
        return self.key_column in ROWID_ALIASES

    def _cascade_children(self) -> list[tuple[str, tuple, tuple]]:
        """Every foreign key ON DELETE CASCADE below our table, as (child table, child
        columns, parent table): a delete here removes rows down the whole tree."""
        edges: dict[str, list[tuple[str, tuple, tuple]]] = {}
        for name in self.tables():
            keys: dict[int, list] = {}
            for row in self.query(f"PRAGMA foreign_key_list({quote_identifier(name)})"):
                keys.setdefault(row[0], []).append(row)
            for rows in keys.values():
                rows.sort(key=lambda r: r[1])
                parent, on_delete = rows[0][2], rows[0][6]
                if on_delete.upper() != "CASCADE":
                    continue
                child_columns = tuple(r[3] for r in rows)
                parent_columns = tuple(r[4] for r in rows)
                if any(c is None for c in parent_columns):  # REFERENCES parent: its primary key
                    parent_columns = tuple(self._primary_columns(parent))
                # The clause may spell a parent column in another case than the table does
                # (REFERENCES s(SESSION_KEY)): the row's values are looked up by the real name.
                actual = {c.lower(): c for c in self._columns(parent)}
                parent_columns = tuple(actual.get(c.lower(), c) for c in parent_columns)
                edges.setdefault(parent.lower(), []).append((name, child_columns, parent_columns))
        self._edges = edges
        tree, seen, queue = [], {self.table.lower()}, [self.table]
        while queue:  # breadth first: every table after the one it hangs from
            for child, child_columns, _ in edges.get(queue.pop(0).lower(), []):
                tree.append((child, child_columns, ()))
                if child.lower() not in seen:
                    seen.add(child.lower())
                    queue.append(child)
        return tree

    def cascade_tables(self) -> list[str]:
        """Tables a delete here reaches through ON DELETE CASCADE, each after every table of
        the tree it hangs from (the order rows can be put back in)."""
        reached = list(dict.fromkeys(child for child, _, _ in self._children))
        inside = {t.lower() for t in reached} | {self.table.lower()}
        parents = {
            t.lower(): {
                p
                for p, edges in self._edges.items()
                if p in inside
                and p != t.lower()
                and any(c.lower() == t.lower() for c, _, _ in edges)
            }
            for t in reached
        }
        placed, order, pending = {self.table.lower()}, [], reached
        while pending:
            ready = [t for t in pending if parents[t.lower()] <= placed]
            if not ready:  # a cycle between tables: no order satisfies it, keep the found one
                order.extend(pending)
                break
            order.extend(ready)
            placed.update(t.lower() for t in ready)
            pending = [t for t in pending if t not in ready]
        return order

    def _key_collations(self, table: str, columns: tuple) -> tuple:
        """The collation of each column of `table`'s key `columns` (a foreign key's parent
        key is its primary key or a UNIQUE index, whose collations SQLite compares with)."""
        cache = self.__dict__.setdefault("_collation_cache", {})
        wanted = tuple(c.lower() for c in columns)
        if (table.lower(), wanted) not in cache:
            found = ("BINARY",) * len(columns)
            for index in self.query(f"PRAGMA index_list({quote_identifier(table)})"):
                if not index[2]:
                    continue  # not UNIQUE: cannot be a parent key
                info = self.query(f"PRAGMA index_xinfo({quote_identifier(index[1])})")
                keyed = [row for row in info if row[5] and row[2] is not None]
                if tuple(row[2].lower() for row in keyed) == wanted:
                    found = tuple(row[4] or "BINARY" for row in keyed)
                    break
            cache[(table.lower(), wanted)] = found
        return cache[(table.lower(), wanted)]

    def _primary_columns(self, table: str) -> list[str]:
        rows = self.query(f"PRAGMA table_info({quote_identifier(table)})")
        return [row[1] for row in sorted((r for r in rows if r[5]), key=lambda r: r[5])]

    def delete_triggers(self) -> list[tuple[str, str]]:
        """(table, trigger) for DELETE triggers on our table or a table its cascades reach."""
        reached = {t.lower() for t in [self.table, *self.cascade_tables()]}
        found = []
        for name, table, sql in self.query(
            "SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'trigger' ORDER BY name"
        ):
            if table.lower() in reached and trigger_event(sql or "") in ("DELETE", None):
                found.append((table, name))
        return found

    def _primary(self, table: str | None = None) -> str | None:
        """The table's single-column primary key, if it has one."""
        rows = self.query(f"PRAGMA table_info({quote_identifier(table or self.table)})")
        primary = [row[1] for row in rows if row[5]]
        return primary[0] if len(primary) == 1 else None

    def indexed_columns(self) -> set[str]:
        """Columns that lead an index (or the primary key): comparisons on them are cheap."""
        table = quote_identifier(self.table)
        leading = {self._primary()} - {None}
        for row in self.query(f"PRAGMA index_list({table})"):
            info = self.query(f"PRAGMA index_info({quote_identifier(row[1])})")
            for seqno, _cid, column in info:
                if seqno == 0 and column is not None:
                    leading.add(column)
        return {c.lower() for c in leading}

    def unique_fields(self) -> set[str]:
        table = quote_identifier(self.table)
        unique = {self._primary()} - {None}
        for row in self.query(f"PRAGMA index_list({table})"):
            if row[2]:  # the index is UNIQUE
                info = self.query(f"PRAGMA index_info({quote_identifier(row[1])})")
                if len(info) == 1 and info[0][2] is not None:
                    unique.add(info[0][2])
        return unique

    def journal_mode(self) -> str:
        return self.query("PRAGMA journal_mode")[0][0]

    # -- reading ---------------------------------------------------------------------------

    def _select(self) -> str:
        key = self.key_sql
        return f"SELECT {key}, * FROM {quote_identifier(self.table)}"

    def _record(self, row: tuple) -> Record:
        return self.make_record(row[0], row[1:], type(row) is _BadRow)

    def make_record(self, key, values, suspect: bool = False) -> Record:
        """A row as a Record; one with a TEXT value that is not UTF-8 is a corrupt record
        whose `raw` keeps every value exactly (see `row_from_raw`)."""
        if suspect:
            bad = [c for c, v in zip(self.columns, values) if type(v) is BadText]  # noqa: E721
            if bad:
                # [[column, value], ...]: JSON, yet no object, which an archive would take
                # for the record itself.
                raw = [[c, encode_value(v)] for c, v in zip(self.columns, values)]
                return Record(
                    key=key,
                    data=None,
                    size=None,
                    error=f"column {bad[0]} holds text that is not valid UTF-8",
                    raw=json.dumps(raw, ensure_ascii=False).encode(),
                )
        return Record(key=key, data=dict(zip(self.columns, values)), size=None)

    @staticmethod
    def row_from_raw(raw: bytes) -> dict | None:
        """The row `make_record` kept in a corrupt record's `raw`, values as stored."""
        try:
            row = {column: decode_value(value) for column, value in json.loads(raw)}
        except (ValueError, TypeError, RecursionError):
            return None
        return row if all(isinstance(column, str) for column in row) else None

    def iter_records(self) -> Iterator[Record]:
        key = self.key_sql
        sql = f"{self._select()} WHERE {key} > ? ORDER BY {key} LIMIT {READ_PAGE}"
        first = f"{self._select()} ORDER BY {key} LIMIT {READ_PAGE}"
        last = None
        while True:
            # fetchall ends the statement, and with it the read transaction: the application
            # can write between pages even in rollback-journal mode.
            rows = self.query(first) if last is None else self.query(sql, (last,))
            for row in rows:
                yield self._record(row)
            if len(rows) < READ_PAGE:
                return
            last = rows[-1][0]

    def sample(self, limit: int = 50) -> tuple[list[str], list[dict]]:
        rows = self.query(f"{self._select()} LIMIT {int(limit)}")
        return list(self.columns), [dict(zip(self.columns, row[1:])) for row in rows]

    def find(self, session_id: str, id_path: str | None) -> Record | None:
        if id_path and id_path in self.columns:
            # The id as the other commands read it: its text, byte for byte (a NOCASE column
            # finds ABC for abc, and that is another session).
            rows = self.query(
                f"{self._select()} WHERE {quote_identifier(id_path)} = ? COLLATE BINARY LIMIT 1",
                (session_id,),
            )
            if rows:
                return self._record(rows[0])
            if self._text_affinity(id_path):
                return None  # every id there is text: none is this one
            # Numbers and blobs may read as this id (7 as "7"): look as Python would.
        if id_path:
            parts = split_path(id_path)
            for record in self.iter_records():
                if record.data is None:
                    continue
                value = resolve(record.data, parts, record.key)
                if is_missing(value) or value is None:
                    continue
                text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
                if text == session_id:
                    return record
        return None

    def _text_affinity(self, column: str) -> bool:
        declared = {
            row[1]: (row[2] or "").upper()
            for row in self.query(f"PRAGMA table_info({quote_identifier(self.table)})")
        }.get(column, "")
        return any(word in declared for word in ("CHAR", "CLOB", "TEXT"))

    def size_bytes(self) -> int:
        total = self.path.stat().st_size
        wal = self.path.with_name(self.path.name + "-wal")
        with contextlib.suppress(OSError):
            total += wal.stat().st_size
        return total

    def count(self) -> int:
        return self.query(f"SELECT COUNT(*) FROM {quote_identifier(self.table)}")[0][0]

    def describe(self) -> dict:
        return {
            "kind": self.kind,
            "path": str(self.path),
            "table": self.table,
            "columns": list(self.columns),
            "key": self.key_column,
            "journal_mode": self.journal_mode(),
            "indexed_columns": sorted(self.indexed_columns()),
            "cascades_to": self.cascade_tables(),
            "delete_triggers": [f"{name} on {table}" for table, name in self.delete_triggers()],
            "rows": self.count(),
        }

    def pushdown(self, mapping, policy, tz, now: float):
        """Counting and selecting in SQL when it can judge exactly: (plan, "") or (None, why)."""
        from .sqlite_judge import SqlitePushdown, compile_judge

        compiled, why = compile_judge(self, mapping, policy, tz, now)
        if compiled is None:
            return None, why
        return SqlitePushdown(self, compiled), ""

    # -- removing --------------------------------------------------------------------------

    def fingerprint(self, record: Record) -> Any:
        if record.data is None:
            return hash(record.raw)
        return hash(tuple(record.data.values()))

    def _fetch(self, conn: sqlite3.Connection, keys: list) -> dict[Any, Record]:
        key = self.key_sql
        found = {}
        for chunk in _chunks(keys):
            marks = ",".join("?" * len(chunk))
            for row in fetch_rows(conn, f"{self._select()} WHERE {key} IN ({marks})", chunk):
                found[row[0]] = self._record(row)
        return found

    def current(self, candidates: list[Candidate]) -> dict[Any, Record]:
        with self.translate_errors("read"):
            rows = self._fetch(self._reader, [c.key for c in candidates])
        return {
            c.key: rows[c.key]
            for c in candidates
            if c.key in rows and self.fingerprint(rows[c.key]) == c.fingerprint
        }

    def remove(self, candidates: list[Candidate], archive: ArchiveFn) -> RemoveOutcome:
        outcome = RemoveOutcome()
        conn = self._writer_conn()
        with self.translate_errors("write"):
            conn.execute("BEGIN IMMEDIATE")
            try:
                rows = self._fetch(conn, [c.key for c in candidates])
                doomed = []
                for candidate in candidates:
                    row = rows.get(candidate.key)
                    if row is None or self.fingerprint(row) != candidate.fingerprint:
                        outcome.changed.append(candidate.key)
                    else:
                        doomed.append(row)
                if doomed:
                    self._attach_children(conn, doomed)
                    archive(doomed)
                    outcome.failed = self.delete_keys(conn, [r.key for r in doomed])
                    outcome.removed = [r for r in doomed if r.key not in outcome.failed]
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
        return outcome

    def delete_keys(self, conn: sqlite3.Connection, keys: list) -> dict:
        """DELETE rows by key inside the caller's transaction; {key: error} for refused ones."""
        key = self.key_sql
        table = quote_identifier(self.table)
        # A savepoint, so that a refusal undoes only this statement, not the transaction.
        conn.execute("SAVEPOINT sessionctl_delete")
        try:
            for chunk in _chunks(keys):
                marks = ",".join("?" * len(chunk))
                conn.execute(f"DELETE FROM {table} WHERE {key} IN ({marks})", chunk)
            conn.execute("RELEASE sessionctl_delete")
            return {}
        except sqlite3.IntegrityError:
            conn.execute("ROLLBACK TO sessionctl_delete")
            conn.execute("RELEASE sessionctl_delete")
        # A foreign key without CASCADE refuses some rows: go one by one so the others go.
        failed = {}
        for value in keys:
            try:
                conn.execute(f"DELETE FROM {table} WHERE {key} = ?", (value,))
            except sqlite3.IntegrityError as exc:
                failed[value] = f"database refused: {exc}"
        return failed

    def _attach_children(self, conn: sqlite3.Connection, rows: list[Record]) -> None:
        """Give each row the rows its delete removes through ON DELETE CASCADE, at any depth,
        by table, parents before children (the order `insert` puts them back in)."""
        if not self._children:
            return
        columns: dict[str, list[str]] = {}
        order = self.cascade_tables()
        for row in rows:
            values = row.data if row.data is not None else self.row_from_raw(row.raw or b"")
            if values is None:
                continue
            found: dict[str, list[dict]] = {}
            seen: set = set()
            queue = [(self.table, values)]
            while queue:
                table, parent = queue.pop(0)
                for child, child_columns, parent_columns in self._edges.get(table.lower(), []):
                    key = [parent.get(c) for c in parent_columns]
                    if any(v is None for v in key):
                        continue  # a NULL key matches no child
                    if child not in columns:
                        columns[child] = self._columns(child)
                    # Compared as SQLite's foreign key compares: with the parent key's
                    # collation (a NOCASE parent cascades to a child holding K0 for k0).
                    collations = self._key_collations(table, parent_columns)
                    where = " AND ".join(
                        f"{quote_identifier(c)} = ? COLLATE {quote_identifier(coll)}"
                        for c, coll in zip(child_columns, collations)
                    )
                    sql = f"SELECT * FROM {quote_identifier(child)} WHERE {where}"
                    for values_found in fetch_rows(conn, sql, key):
                        identity = (child.lower(), tuple(values_found))
                        if identity in seen:
                            continue  # a table that cascades to itself
                        seen.add(identity)
                        child_row = dict(zip(columns[child], values_found))
                        found.setdefault(child, []).append(
                            {
                                c: encode_value(v) if type(v) is BadText else v  # noqa: E721
                                for c, v in child_row.items()
                            }
                        )
                        queue.append((child, child_row))
            if found:
                row.children = dict(self._restore_order(found, order))

    def insert(self, entries: list[dict], id_path: str | None) -> tuple[int, int]:
        conn = self._writer_conn()
        restored = skipped = 0
        id_column = id_path if id_path in self.columns else None
        with self.translate_errors("write"):
            conn.execute("BEGIN IMMEDIATE")
            try:
                for entry in entries:
                    record = entry.get("record")
                    if record is None and isinstance(entry.get("raw_b64"), str):
                        # A row archived as corrupt (text that is not UTF-8): its exact values.
                        record = self.row_from_raw(base64.b64decode(entry["raw_b64"]))
                    if not isinstance(record, dict):
                        skipped += 1
                        continue
                    if (
                        id_column is not None
                        and conn.execute(
                            f"SELECT 1 FROM {quote_identifier(self.table)} "
                            # BINARY: under NOCASE, abc would pass for ABC, a session
                            # of its own to every other command.
                            f"WHERE {quote_identifier(id_column)} = ? COLLATE BINARY LIMIT 1",
                            (record.get(id_column),),
                        ).fetchone()
                    ):
                        skipped += 1
                        continue
                    # All of a session or none of it: a refused cascade row takes its parent
                    # row back out, so no session is left half restored.
                    conn.execute("SAVEPOINT sessionctl_restore")
                    try:
                        self._insert_row(conn, self.table, record)
                        for child_table, rows in self._restore_order(entry.get("children")):
                            for child in rows:
                                self._insert_row(conn, child_table, child)
                        conn.execute("RELEASE sessionctl_restore")
                        restored += 1
                    except sqlite3.IntegrityError:
                        conn.execute("ROLLBACK TO sessionctl_restore")
                        conn.execute("RELEASE sessionctl_restore")
                        skipped += 1
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
        return restored, skipped

    def _restore_order(self, children, order: list[str] | None = None) -> list[tuple[str, list]]:
        """Archived cascade rows by table, parents before children as the schema has them."""
        if not isinstance(children, dict):
            return []
        rank = {t.lower(): i for i, t in enumerate(order or self.cascade_tables())}
        return sorted(children.items(), key=lambda item: rank.get(item[0].lower(), len(rank)))

    def _insert_row(self, conn: sqlite3.Connection, table: str, row: dict) -> None:
        known = set(self._columns(table))
        names = [name for name in row if name in known]
        values = [decode_value(row[name]) for name in names]
        # Text that is not UTF-8 goes back as TEXT with its exact bytes.
        marks = ",".join(
            "CAST(? AS TEXT)" if type(v) is BadText else "?"  # noqa: E721
            for v in values
        )
        columns = ",".join(quote_identifier(n) for n in names)
        conn.execute(
            f"INSERT INTO {quote_identifier(table)} ({columns}) VALUES ({marks})",
            [bytes(v) if type(v) is BadText else v for v in values],  # noqa: E721
        )

    def prepare_restore(self, entry: dict, id_path: str | None, source_kind: str | None):
        """Map an archived session onto a row of this table by role (its id into the id
        column), and check SQLite can hold each value. None if it can go in, else why not (one
        sentence). A row archived byte for byte, as corrupt, goes back as it was."""
        from .restoring import children_problem, prepare_row

        if getattr(self, "_restore_cascades", None) is None:
            self._restore_cascades = {t.lower(): self._columns(t) for t in self.cascade_tables()}
        why = children_problem(entry.get("children"), self._restore_cascades)
        if why:
            return why
        raw = entry.get("record") is None and isinstance(entry.get("raw_b64"), str)
        if raw and source_kind == self.kind:
            return None
        if getattr(self, "_restore_columns", None) is None:
            self._restore_columns = self.query(f"PRAGMA table_info({quote_identifier(self.table)})")
        return prepare_row(entry, self.table, self._restore_columns, id_path)


_ID_NAMES = {norm_name(n) for n in CANDIDATES["id"]}
_TIME_NAMES = {
    norm_name(n) for role in ("created", "accessed", "expires") for n in CANDIDATES[role]
}


def _looks_like_sessions(columns: list[str]) -> bool:
    normalised = {norm_name(c) for c in columns}
    return bool(normalised & _ID_NAMES) and bool(normalised & _TIME_NAMES)
