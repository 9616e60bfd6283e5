"""A session table in a SQLite database the application may have open right now.

Reads page through the table by rowid in short read transactions, so a rollback-journal
database is never held against the application's writers for more than a moment. Removal goes
batch by batch: BEGIN IMMEDIATE (waiting at most the busy timeout), re-read the batch, keep only
rows still exactly as selected, archive them, DELETE, COMMIT.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
from dataclasses import replace
from pathlib import Path

from ...domain.errors import SessionctlError, busy_error, store_error
from ...domain.mapping import is_missing, resolve, split_path
from ...domain.model import Record
from ..base import Address, StoreSettings, file_address, require_exists
from .judge import Dialect
from .table import (  # noqa: F401 (BadText, encode_value, decode_value: the SQLite names)
    BadText,
    TableStore,
    _BadRow,
    decode_value,
    encode_value,
    quote_identifier,
)

SQLITE_HEADER = b"SQLite format 3\x00"
#: File names a bare path is taken as SQLite by, before reading it.
SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3", ".db3")
DEFAULT_BUSY_TIMEOUT = 5.0
#: The names SQLite gives the rowid, unless a column of the table takes them.
ROWID_ALIASES = ("rowid", "_rowid_", "oid")


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


_DATE_TIME = "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9] [0-9][0-9]:[0-9][0-9]:[0-9][0-9]"
#: `YYYY-MM-DD HH:MM:SS[.f{1,6}]`: one GLOB for the row's length (cheaper than a GLOB plus
#: substr checks), then a round trip through a date modifier, because SQLite's date functions
#: accept 2026-02-30 and 24:00:00 and the modifier normalises them away.
TEXT_TIME = (
    "(CASE length({x}) WHEN 19 THEN {x} GLOB '"
    + _DATE_TIME
    + "'"
    + "".join(
        f" WHEN {19 + 1 + digits} THEN {{x}} GLOB '{_DATE_TIME}.{'[0-9]' * digits}'"
        for digits in range(1, 7)
    )
    + " ELSE 0 END)"
    " AND datetime(substr({x}, 1, 19), '+0 seconds') = substr({x}, 1, 19)"
)
NUMERIC_TIME = "typeof({x}) IN ('integer', 'real') AND {x} >= 0 AND {x} < 1e17"


class SqliteDialect(Dialect):
    """SQLite for the judge (judge.Dialect): values carry their own type (`typeof`), text
    compares under the column's collation unless told BINARY, and text that is not UTF-8 is
    found by a Python function (`sound_text`)."""

    def key_problem(self, store) -> str:
        return "" if store.rowid_key else "the table has no rowid that no column shadows"

    def numeric_time(self, x: str) -> str:
        return NUMERIC_TIME.format(x=x)

    def text_epoch(self, x: str) -> str:
        return (
            f" WHEN typeof({x}) = 'text' AND {TEXT_TIME.format(x=x)} THEN"
            f" CAST(strftime('%s', {x}) AS INTEGER) + CASE WHEN"
            f" length({x}) > 19 THEN CAST('0' || substr({x}, 20) AS REAL) ELSE 0 END"
        )

    def is_text(self, x: str) -> str:
        return f"typeof({x}) = 'text'"

    def is_number(self, x: str) -> str:
        return f"typeof({x}) IN ('integer', 'real')"

    def text_in(self, x: str, literals: str) -> str:
        return f"{x} COLLATE BINARY IN ({literals})"

    def blank(self, x: str) -> str:
        # BINARY: under RTRIM, "  " = "" (Python says a blank is there).
        return f"{x} = '' COLLATE BINARY"

    def type_test(self, x: str, type_name: str) -> str | None:
        wanted = {"string": "('text')", "integer": "('integer')", "number": "('integer', 'real')"}
        if type_name not in wanted:
            return None  # SQLite holds no booleans, objects or arrays
        return f"typeof({x}) IN {wanted[type_name]}"

    def text_key(self, x: str) -> str:
        # Ids compare as Python compares them: as their text, byte for byte, whatever the
        # column's collation (NOCASE would make ABC and abc one id) or the values' types.
        return f"CAST({x} AS TEXT) COLLATE BINARY"

    def group_key(self, x: str) -> str:
        # A blob is its own group (Python names it by its repr).
        return f"typeof({x}) = 'blob', CAST({x} AS TEXT) COLLATE BINARY"

    def holds_reals(self, store, column: str) -> bool:
        """REAL values are written differently by SQLite and Python (0.30000000000000004 is
        '0.3' to SQLite): a TEXT column never holds one (its affinity makes numbers text), any
        other is looked at."""
        if store._text_affinity(column):
            return False
        x = quote_identifier(column)
        table = quote_identifier(store.table)
        return bool(store.query(f"SELECT 1 FROM {table} WHERE typeof({x}) = 'real' LIMIT 1"))

    def sound(self, columns: list[str]) -> str:
        return sound_text(columns)

    def scan_hint(self) -> str:
        return " NOT INDEXED"

    def materialize(self) -> str:
        # LIMIT -1 keeps SQLite from flattening the subquery into the outer one.
        return " LIMIT -1"


class SqliteStore(TableStore):
    kind = "sqlite"
    dialect = SqliteDialect()
    schemes = ("sqlite",)
    shape = "table"
    integrity_errors = (sqlite3.IntegrityError,)
    null_safe_equal = "IS"
    table_hint = "sqlite:PATH?table=NAME"
    #: BEGIN IMMEDIATE keeps every other writer out until COMMIT: batches are sized by time.
    timed_batches = True

    @classmethod
    def parse_address(cls, text: str) -> Address:
        return file_address(cls.kind, text, ("table",), describe="a SQLite address")

    @classmethod
    def claims(cls, path: Path) -> bool:
        """A file with a SQLite suffix (there or not yet), or one that starts as SQLite does."""
        if path.suffix.lower() in SQLITE_SUFFIXES:
            return True
        try:
            with open(path, "rb") as handle:
                return handle.read(len(SQLITE_HEADER)) == SQLITE_HEADER
        except OSError:
            return False

    def __init__(self, address: Address, settings: StoreSettings | None = None):
        super().__init__(address, settings)
        self.busy_timeout = self.settings.busy_timeout
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
        self.table = self._choose_table(address.param("table"))
        # Named by the table it holds, however the address spelled it or left it out.
        identity = f"{self.kind}:{os.path.realpath(self.path)}?table={self.table}"
        self.address = replace(address, identity=identity)
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
        folder = self.path.parent.stat().st_mode
        # A folder made read-only (chmod a-w) too, even for root, as a JSON folder store is.
        if not folder & 0o222 or not os.access(self.path.parent, os.W_OK | os.X_OK):
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
        # table_xinfo: generated columns too, which SELECT * returns (hidden 2 and 3; with
        # table_info the values after one were read under the wrong names), but not the
        # hidden columns of a virtual table (1), which it does not.
        rows = self.query(f"PRAGMA table_xinfo({quote_identifier(table)})")
        return [row[1] for row in rows if row[6] != 1]

    def generated_columns(self, table: str) -> set[str]:
        rows = self.query(f"PRAGMA table_xinfo({quote_identifier(table)})")
        return {row[1] for row in rows if row[6] in (2, 3)}

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

    def fetch_rows(self, conn, sql: str, params=()) -> list[tuple]:
        return fetch_rows(conn, sql, params)

    def begin_write(self, conn) -> None:
        conn.execute("BEGIN IMMEDIATE")

    def begin_read(self, conn) -> None:
        conn.execute("BEGIN")

    def rollback(self, conn) -> None:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")

    def child_rows_sql(
        self, parent: str, parent_columns: tuple, child: str, child_columns: tuple, key: list
    ) -> tuple[str, list]:
        # Joined to the parent row, so that SQLite compares as its foreign keys do: the parent
        # column, on the left, gives the collation (a NOCASE key k0 takes a child's K0), and
        # its affinity applies to the child's value (an INTEGER key 5 takes '5' and ' 5').
        on = " AND ".join(
            f"p.{quote_identifier(p)} = c.{quote_identifier(c)}"
            for p, c in zip(parent_columns, child_columns)
        )
        where, params = [], []
        for column, value in zip(parent_columns, key):
            if type(value) is BadText:  # noqa: E721  (text that is not UTF-8: by its bytes)
                where.append(f"CAST(p.{quote_identifier(column)} AS BLOB) = ?")
                params.append(bytes(value))
            else:
                where.append(f"p.{quote_identifier(column)} = ?")
                params.append(value)
        sql = (
            f"SELECT c.* FROM {quote_identifier(child)} AS c JOIN {quote_identifier(parent)} AS p"
            f" ON {on} WHERE {' AND '.join(where)}"
        )
        return sql, params

    def cascading_keys(self, table: str) -> list[tuple[str, tuple, tuple]]:
        keys: dict[int, list] = {}
        for row in self.query(f"PRAGMA foreign_key_list({quote_identifier(table)})"):
            keys.setdefault(row[0], []).append(row)
        found = []
        for rows in keys.values():
            rows.sort(key=lambda r: r[1])
            if rows[0][6].upper() == "CASCADE":
                found.append((rows[0][2], tuple(r[3] for r in rows), tuple(r[4] for r in rows)))
        return found

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
        # A foreign key ON DELETE SET NULL or SET DEFAULT is one too: it changes the rows
        # that referred to a removed session, and no archive keeps what they held.
        for name in self.tables():
            for row in self.query(f"PRAGMA foreign_key_list({quote_identifier(name)})"):
                action = str(row[6]).upper()
                if row[1] == 0 and row[2].lower() in reached and action.startswith("SET"):
                    found.append((name, f"ON DELETE {action} of {name} to {row[2]}"))
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

    def _foreign_collations(self) -> list[str]:
        """Collations the table or its indexes name that SQLite does not have built in."""
        found = []
        for (sql,) in self.query(
            "SELECT sql FROM sqlite_master WHERE tbl_name = ? AND sql IS NOT NULL", (self.table,)
        ):
            for name in re.findall(r"\bCOLLATE\s+[\"'`\[]?(\w+)", sql, re.IGNORECASE):
                if name.upper() not in ("BINARY", "NOCASE", "RTRIM") and name not in found:
                    found.append(name)
        return found

    def pushdown(self, mapping, policy, tz, now: float):
        """Counting and selecting in SQL when it can judge exactly: a plan, or None (and
        `no_pushdown_reason` says why)."""
        from .judge import Pushdown, compile_judge

        foreign = self._foreign_collations()
        if foreign:
            # Only the application has it: SQL that orders or compares those columns fails,
            # while Python reads the rows without it.
            self.no_pushdown_reason = f"the table uses the collation {foreign[0]}, not SQLite's own"
            return None
        compiled, why = compile_judge(self, mapping, policy, tz, now)
        if compiled is None:
            self.no_pushdown_reason = why
            return None
        return Pushdown(self, compiled)

    # -- removing --------------------------------------------------------------------------

    def prepare_restore(self, entry: dict, id_path: str | None, source_kind: str | None):
        """Map an archived session onto a row of this table by role (its id into the id
        column), and check SQLite can hold each value. None if it can go in, else why not (one
        sentence). A row archived byte for byte, as corrupt, goes back as it was."""
        from ..restoring import children_problem, prepare_row

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
        generated = self.generated_columns(self.table)
        if generated and isinstance(entry.get("record"), dict):
            # Computed by SQLite from the others: archived for reading, never written back.
            entry["record"] = {k: v for k, v in entry["record"].items() if k not in generated}
        return prepare_row(entry, self.table, self._restore_columns, id_path)
