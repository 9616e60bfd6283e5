"""A session table in a SQLite database the application may have open right now.

Reads page through the table by rowid in short read transactions, so a rollback-journal
database is never held against the application's writers for more than a moment. Removal goes
batch by batch: BEGIN IMMEDIATE (waiting at most the busy timeout), re-read the batch, keep only
rows still exactly as selected, archive them, DELETE, COMMIT.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from typing import Any

from ..core.errors import SessionctlError, busy_error, store_error, usage_error
from ..core.mapping import CANDIDATES, detect_preset, is_missing, norm_name, resolve, split_path
from ..core.model import Record
from .base import ArchiveFn, Candidate, RemoveOutcome, Store, require_exists

SQLITE_HEADER = b"SQLite format 3\x00"
READ_PAGE = 2000
#: Bound parameters per statement, well under every SQLite build's limit.
MAX_PARAMS = 500
DEFAULT_BUSY_TIMEOUT = 5.0


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


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
        self._reader = self._connect("rw" if os.access(self.path, os.W_OK) else "ro")
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

    def _writer_conn(self) -> sqlite3.Connection:
        if self._writer is None:
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
            return self._reader.execute(sql, params).fetchall()

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
        table = quote_identifier(self.table)
        try:
            self._reader.execute(f"SELECT rowid FROM {table} LIMIT 1").fetchall()
            return "rowid"
        except sqlite3.OperationalError:
            pass
        primary = [row[1] for row in self.query(f"PRAGMA table_info({table})") if row[5]]
        if len(primary) != 1:
            raise store_error(
                f"table {self.table} has neither a rowid nor a single-column primary key",
                "sessionctl cannot address its rows one by one",
            )
        return primary[0]

    def _cascade_children(self) -> list[tuple[str, str, str]]:
        """(child table, child column, our column) for foreign keys ON DELETE CASCADE to us."""
        children = []
        for name in self.tables():
            if name == self.table:
                continue
            for row in self.query(f"PRAGMA foreign_key_list({quote_identifier(name)})"):
                _, seq, parent, child_column, parent_column, _, on_delete, _ = row
                ours = parent.lower() == self.table.lower()
                if ours and on_delete.upper() == "CASCADE" and seq == 0:
                    children.append((name, child_column, parent_column or self._primary()))
        return children

    def _primary(self) -> str:
        rows = self.query(f"PRAGMA table_info({quote_identifier(self.table)})")
        primary = [row[1] for row in rows if row[5]]
        return primary[0] if primary else "rowid"

    def indexed_columns(self) -> set[str]:
        """Columns that lead an index (or the primary key): comparisons on them are cheap."""
        table = quote_identifier(self.table)
        leading = {self._primary()} if self._primary() != "rowid" else set()
        for row in self.query(f"PRAGMA index_list({table})"):
            info = self.query(f"PRAGMA index_info({quote_identifier(row[1])})")
            for seqno, _cid, column in info:
                if seqno == 0 and column is not None:
                    leading.add(column)
        return {c.lower() for c in leading}

    def unique_fields(self) -> set[str]:
        table = quote_identifier(self.table)
        unique = {self._primary()}
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
        key = quote_identifier(self.key_column) if self.key_column != "rowid" else "rowid"
        return f"SELECT {key}, * FROM {quote_identifier(self.table)}"

    def _record(self, row: tuple) -> Record:
        return Record(key=row[0], data=dict(zip(self.columns, row[1:])), size=None)

    def iter_records(self) -> Iterator[Record]:
        key = quote_identifier(self.key_column) if self.key_column != "rowid" else "rowid"
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
            rows = self.query(
                f"{self._select()} WHERE {quote_identifier(id_path)} = ? LIMIT 1", (session_id,)
            )
            if rows:
                return self._record(rows[0])
            return None
        if id_path:
            parts = split_path(id_path)
            for record in self.iter_records():
                value = resolve(record.data, parts, record.key)
                if not is_missing(value) and str(value) == session_id:
                    return record
        return None

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
            "cascades_to": [child for child, _, _ in self._children],
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
        return hash(tuple(record.data.values()))

    def _fetch(self, conn: sqlite3.Connection, keys: list) -> dict[Any, Record]:
        key = quote_identifier(self.key_column) if self.key_column != "rowid" else "rowid"
        found = {}
        for chunk in _chunks(keys):
            marks = ",".join("?" * len(chunk))
            for row in conn.execute(f"{self._select()} WHERE {key} IN ({marks})", chunk):
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
        key = quote_identifier(self.key_column) if self.key_column != "rowid" else "rowid"
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
        for child_table, child_column, parent_column in self._children:
            columns = self._columns(child_table)
            for row in rows:
                parent_value = row.data.get(parent_column, row.key)
                found = conn.execute(
                    f"SELECT * FROM {quote_identifier(child_table)} "
                    f"WHERE {quote_identifier(child_column)} = ?",
                    (parent_value,),
                ).fetchall()
                if found:
                    row.children = row.children or {}
                    row.children[child_table] = [dict(zip(columns, v)) for v in found]

    def insert(self, entries: list[dict], id_path: str | None) -> tuple[int, int]:
        conn = self._writer_conn()
        restored = skipped = 0
        id_column = id_path if id_path in self.columns else None
        with self.translate_errors("write"):
            conn.execute("BEGIN IMMEDIATE")
            try:
                for entry in entries:
                    record = entry.get("record")
                    if not isinstance(record, dict):
                        skipped += 1
                        continue
                    if (
                        id_column is not None
                        and conn.execute(
                            f"SELECT 1 FROM {quote_identifier(self.table)} "
                            f"WHERE {quote_identifier(id_column)} = ? LIMIT 1",
                            (record.get(id_column),),
                        ).fetchone()
                    ):
                        skipped += 1
                        continue
                    try:
                        self._insert_row(conn, self.table, record)
                        for child_table, rows in (entry.get("children") or {}).items():
                            for child in rows:
                                self._insert_row(conn, child_table, child)
                        restored += 1
                    except sqlite3.IntegrityError:
                        skipped += 1
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
        return restored, skipped

    def _insert_row(self, conn: sqlite3.Connection, table: str, row: dict) -> None:
        known = set(self._columns(table))
        names = [name for name in row if name in known]
        marks = ",".join("?" * len(names))
        columns = ",".join(quote_identifier(n) for n in names)
        conn.execute(
            f"INSERT INTO {quote_identifier(table)} ({columns}) VALUES ({marks})",
            [row[name] for name in names],
        )


_ID_NAMES = {norm_name(n) for n in CANDIDATES["id"]}
_TIME_NAMES = {
    norm_name(n) for role in ("created", "accessed", "expires") for n in CANDIDATES[role]
}


def _looks_like_sessions(columns: list[str]) -> bool:
    normalised = {norm_name(c) for c in columns}
    return bool(normalised & _ID_NAMES) and bool(normalised & _TIME_NAMES)
