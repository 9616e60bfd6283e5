"""A session table in a SQL database the application may have open right now: what every SQL
dialect shares.

Reads page through the table by its key in short read transactions. Removal goes batch by
batch, each batch one short write transaction: re-read the batch, keep only rows still exactly
as selected, archive them with the rows their delete cascades to, DELETE, COMMIT. A dialect's
store (sqlite.py, postgres.py) supplies the connections, the catalogue queries and the error
translation; the SQL here is written with `self.mark` for a parameter.
"""

from __future__ import annotations

import base64
import contextlib
import json
from abc import abstractmethod
from collections.abc import Iterator
from typing import Any

from ...domain.errors import store_error, usage_error
from ...domain.mapping import CANDIDATES, detect_preset, norm_name
from ...domain.model import Record
from ..base import ArchiveFn, Candidate, RemoveOutcome, Store

READ_PAGE = 2000
#: Bound parameters per statement, well under every SQLite build's limit.
MAX_PARAMS = 500


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class BadText(bytes):
    """A TEXT value whose bytes are not UTF-8 (`CAST(x'ff41' AS TEXT)`): kept as its bytes,
    archived as {"$text_b64": ...} and put back as TEXT, byte for byte."""


class _BadRow(tuple):
    """A fetched row holding at least one BadText value."""


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


_ID_NAMES = {norm_name(n) for n in CANDIDATES["id"]}
_TIME_NAMES = {
    norm_name(n) for role in ("created", "accessed", "expires") for n in CANDIDATES[role]
}


def _looks_like_sessions(columns: list[str]) -> bool:
    normalised = {norm_name(c) for c in columns}
    return bool(normalised & _ID_NAMES) and bool(normalised & _TIME_NAMES)


class TableStore(Store):
    """The dialect-neutral part of a SQL table store. A subclass sets `table`, `columns` and
    `key_column`, and supplies the hooks below."""

    #: How a statement writes a bound parameter.
    mark = "?"
    #: A parameter holding text as its exact bytes (text that is not valid UTF-8).
    text_bytes_mark = "CAST(? AS TEXT)"
    #: What the driver raises when a constraint refuses a statement.
    integrity_errors: tuple[type[BaseException], ...] = ()
    #: How an address names the table (for messages).
    table_hint = "?table=NAME"

    # -- hooks a dialect's store supplies --------------------------------------------------

    @property
    def where(self) -> str:
        """The database as messages name it (never with a password)."""
        return str(self.path)

    @abstractmethod
    def query(self, sql: str, params=()) -> list[tuple]: ...

    def fetch_rows(self, conn, sql: str, params=()) -> list[tuple]:
        return conn.execute(sql, params).fetchall()

    @contextlib.contextmanager
    def translate_errors(self, doing: str):
        yield

    @abstractmethod
    def _writer_conn(self): ...

    def begin_write(self, conn) -> None:
        conn.execute("BEGIN")

    def commit(self, conn) -> None:
        conn.execute("COMMIT")

    def rollback(self, conn) -> None:
        with contextlib.suppress(Exception):
            conn.execute("ROLLBACK")

    def refusal(self, exc: BaseException) -> str:
        return str(exc)

    @abstractmethod
    def tables(self) -> list[str]: ...

    @abstractmethod
    def _columns(self, table: str) -> list[str]: ...

    @abstractmethod
    def _primary_columns(self, table: str) -> list[str]: ...

    @abstractmethod
    def cascading_keys(self, table: str) -> list[tuple[str, tuple, tuple]]:
        """(parent table, child columns, parent columns) for each foreign key of `table` with
        ON DELETE CASCADE; a parent column is None where the key names the parent's primary key."""
        ...

    def parent_key_where(self, parent: str, parent_columns: tuple, child_columns: tuple) -> str:
        """SQL: the child columns hold the parameters, compared as the database's foreign key
        compares them with the parent key `parent_columns` of table `parent`."""
        return " AND ".join(f"{quote_identifier(c)} = {self.mark}" for c in child_columns)

    def child_rows_sql(
        self, parent: str, parent_columns: tuple, child: str, child_columns: tuple, key: list
    ) -> tuple[str, list]:
        """SQL and parameters selecting the rows of `child` whose foreign key `child_columns`
        refers to the row of `parent` whose key `parent_columns` holds `key`, as the database's
        foreign key matches them (the rows an ON DELETE CASCADE removes with it)."""
        where = self.parent_key_where(parent, parent_columns, child_columns)
        return f"SELECT * FROM {quote_identifier(child)} WHERE {where}", list(key)

    def same_text(self, column: str) -> str:
        """SQL: the column's value is the parameter, as text byte for byte (no collation)."""
        return f"{quote_identifier(column)} = {self.mark} COLLATE BINARY"

    @property
    def key_sql(self) -> str:
        return quote_identifier(self.key_column)

    @property
    def qualified(self) -> str:
        """The table as SQL names it."""
        return quote_identifier(self.table)

    #: Whether a write batch must lock its rows and judge them again (a database whose write
    #: transaction does not keep the application out, unlike SQLite's BEGIN IMMEDIATE).
    lock_then_recheck = False
    #: Rows one delete transaction takes at most, whatever batch_size says (None: no cap).
    max_batch: int | None = None
    #: Whether a cleanup sizes its delete batches by time (`max_lock`) rather than by count:
    #: where a write transaction keeps the application out (SQLite), not elsewhere.
    timed_batches = False

    def lock_rows(self, conn, keys: list) -> dict | None:
        """Lock these rows until the transaction ends (where the database locks rows); the
        records read doing so, by key, or None."""
        return None

    def retrying(self, batch):
        """Run one batch (a function doing one transaction); a dialect whose database reports
        lock timeouts, deadlocks or concurrent updates retries it with backoff."""
        return batch()

    def row_columns(self) -> list[str]:
        """SQL for the row's own values, in column order, read as `make_record` wants them."""
        return ["*"]

    # -- finding the table -----------------------------------------------------------------

    def _choose_table(self, wanted: str | None) -> str:
        tables = self.tables()
        if wanted:
            for name in tables:
                if name == wanted or name.lower() == wanted.lower():
                    return name
            listed = ", ".join(tables) or "none"
            raise store_error(f"{self.where} has no table {wanted!r} (tables: {listed})")
        scored = []
        for name in tables:
            columns = self._columns(name)
            preset = detect_preset(columns, self.shape, name)
            if preset is not None:
                scored.append((2 + int((preset.table or "").lower() == name.lower()), name))
            elif _looks_like_sessions(columns):
                scored.append((1, name))
        if not scored:
            listed = ", ".join(tables) or "none"
            raise store_error(
                f"no table in {self.where} looks like a session table (tables: {listed})",
                f"name one with {self.table_hint} and map fields with --field",
            )
        best = max(score for score, _ in scored)
        winners = [name for score, name in scored if score == best]
        session_named = [name for name in winners if "session" in name.lower()]
        if len(winners) > 1 and len(session_named) == 1:
            winners = session_named
        if len(winners) > 1:
            raise usage_error(
                f"several tables in {self.where} look like sessions: {', '.join(winners)}",
                f"choose one with {self.table_hint}",
            )
        return winners[0]

    def _cascade_children(self) -> list[tuple[str, tuple, tuple]]:
        """Every foreign key ON DELETE CASCADE below our table, as (child table, child
        columns, parent table): a delete here removes rows down the whole tree."""
        edges: dict[str, list[tuple[str, tuple, tuple]]] = {}
        for name in self.tables():
            for parent, child_columns, parent_columns in self.cascading_keys(name):
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
        sql = f"{self._select()} WHERE {key} > {self.mark} ORDER BY {key} LIMIT {READ_PAGE}"
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

    def count(self) -> int:
        return self.query(f"SELECT COUNT(*) FROM {quote_identifier(self.table)}")[0][0]

    def fingerprint(self, record: Record) -> Any:
        if record.data is None:
            return hash(record.raw)
        return hash(tuple(record.data.values()))

    def _fetch(self, conn, keys: list) -> dict[Any, Record]:
        key = self.key_sql
        found = {}
        for chunk in _chunks(keys):
            marks = ",".join([self.mark] * len(chunk))
            for row in self.fetch_rows(conn, f"{self._select()} WHERE {key} IN ({marks})", chunk):
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
            self.begin_write(conn)
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
                self.commit(conn)
            except BaseException:
                self.rollback(conn)
                raise
        return outcome

    def delete_keys(self, conn, keys: list) -> dict:
        """DELETE rows by key inside the caller's transaction; {key: error} for refused ones."""
        key = self.key_sql
        table = quote_identifier(self.table)
        refused = self._cascades_to_sessions(conn, keys)
        keys = [value for value in keys if value not in refused]
        before = self._cascade_rows(conn, keys)
        # A savepoint, so that a refusal undoes only this statement, not the transaction.
        conn.execute("SAVEPOINT sessionctl_delete")
        try:
            for chunk in _chunks(keys):
                marks = ",".join([self.mark] * len(chunk))
                conn.execute(f"DELETE FROM {table} WHERE {key} IN ({marks})", chunk)
            conn.execute("RELEASE SAVEPOINT sessionctl_delete")
            self._check_cascade(conn, before, keys)
            return refused
        except self.integrity_errors:
            conn.execute("ROLLBACK TO sessionctl_delete")
            conn.execute("RELEASE SAVEPOINT sessionctl_delete")
        # A foreign key without CASCADE refuses some rows: go one by one so the others go.
        failed = dict(refused)
        for value in keys:
            try:
                conn.execute(f"DELETE FROM {table} WHERE {key} = {self.mark}", (value,))
            except self.integrity_errors as exc:
                failed[value] = f"database refused: {self.refusal(exc)}"
        self._check_cascade(conn, before, [value for value in keys if value not in failed])
        return failed

    def _cascade_rows(self, conn, keys: list) -> int | None:
        """Rows in our table and every table its cascades reach, counted before a delete of
        `keys` whose cascade rows were all archived; None when there is nothing to check (no
        cascade, no archive, or DELETE triggers allowed to change those tables too)."""
        archived = getattr(self, "_archived_children", {})
        if not self._children or any(value not in archived for value in keys):
            return None
        if self.delete_triggers():
            return None
        # Each table once, by its own name (MySQL's names are case-sensitive on Linux).
        tables = {t.lower(): t for t in [self.table, *self.cascade_tables()]}
        total = 0
        for name in tables.values():
            total += self.fetch_rows(conn, f"SELECT COUNT(*) FROM {quote_identifier(name)}")[0][0]
        return total

    def _check_cascade(self, conn, before: int | None, deleted: list) -> None:
        """Stop the batch (the caller rolls it back) when its delete removed more rows than
        its sessions and the cascade rows archived with them: rows no archive holds."""
        archived = getattr(self, "_archived_children", {})
        if before is None:
            return
        expected = sum(1 + archived.pop(value, 0) for value in deleted)
        tables = {t.lower(): t for t in [self.table, *self.cascade_tables()]}
        after = sum(
            self.fetch_rows(conn, f"SELECT COUNT(*) FROM {quote_identifier(name)}")[0][0]
            for name in tables.values()
        )
        if before - after > expected:
            raise store_error(
                f"deleting {len(deleted)} session(s) removed {before - after - expected} more "
                "row(s) through ON DELETE CASCADE than were found and archived; that batch was "
                "rolled back",
                "please report the schema: sessionctl did not foresee these rows",
            )

    def _cascades_to_sessions(self, conn, keys: list) -> dict:
        """{key: why} for the rows whose delete would also remove, through ON DELETE CASCADE
        (a session table referring to itself, or a cycle back to it), sessions that are not
        among `keys`: the dry run never named those, so these rows stay."""
        if self.table.lower() not in {t.lower() for t in self.cascade_tables()}:
            return {}
        rows = [r for r in self._fetch(conn, keys).values() if r.data is not None]
        self._attach_children(conn, rows)
        refused: dict = {}
        while True:
            going = {tuple(r.data.values()) for r in rows if r.key not in refused}
            more = {}
            for row in rows:
                if row.key in refused:
                    continue
                own = [
                    child
                    for name, children in (row.children or {}).items()
                    if name.lower() == self.table.lower()
                    for child in children
                ]
                kept = [child for child in own if tuple(child.values()) not in going]
                if kept:
                    more[row.key] = (
                        f"removing it would also remove {len(kept)} other session(s) of "
                        f"{self.table} through ON DELETE CASCADE"
                    )
            if not more:
                return refused
            refused.update(more)

    def _attach_children(self, conn, rows: list[Record]) -> None:
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
                    sql, params = self.child_rows_sql(
                        table, parent_columns, child, child_columns, key
                    )
                    for values_found in self.fetch_rows(conn, sql, params):
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
            # What the archive holds for it, which the delete is checked against.
            self.__dict__.setdefault("_archived_children", {})[row.key] = sum(
                len(found_rows) for found_rows in found.values()
            )

    def insert(self, entries: list[dict], id_path: str | None) -> tuple[int, int]:
        conn = self._writer_conn()
        restored = skipped = 0
        refused: list[tuple[dict, str]] = []
        stuck: list[tuple[dict, dict, str]] = []
        id_column = id_path if id_path in self.columns else None
        with self.translate_errors("write"):
            self.begin_write(conn)
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
                            # The table itself (PostgreSQL: its schema spelled, not the one
                            # the search_path finds first).
                            f"SELECT 1 FROM {self.qualified} "
                            # BINARY: under NOCASE, abc would pass for ABC, a session
                            # of its own to every other command.
                            f"WHERE {self.same_text(id_column)} LIMIT 1",
                            (decode_value(record.get(id_column)),),
                        ).fetchone()
                    ):
                        skipped += 1
                        continue
                    # All of a session or none of it: a refused cascade row takes its parent
                    # row back out, so no session is left half restored.
                    conn.execute("SAVEPOINT sessionctl_restore")
                    doing = "row"
                    try:
                        self._insert_row(conn, self.table, record)
                        doing = "cascade rows"
                        self._insert_children(conn, entry.get("children"))
                        conn.execute("RELEASE SAVEPOINT sessionctl_restore")
                        restored += 1
                    except self.integrity_errors as exc:
                        conn.execute("ROLLBACK TO sessionctl_restore")
                        conn.execute("RELEASE SAVEPOINT sessionctl_restore")
                        if doing == "row" and self._key_taken(exc):
                            skipped += 1  # its key is taken: the session is there again
                        elif doing == "cascade rows":
                            # Maybe a row shared with another session of the archive, which
                            # needs both back first: tried again with the others, below.
                            stuck.append(
                                (
                                    entry,
                                    record,
                                    f"the database refused its {doing}: {self.refusal(exc)}",
                                )
                            )
                        else:
                            # Not "there again": a value the table refuses (a STRICT or CHECK
                            # column), or a row the application wrote meanwhile took the place
                            # of one of its cascade rows. Said, with why.
                            refused.append(
                                (entry, f"the database refused its {doing}: {self.refusal(exc)}")
                            )
                if stuck:
                    restored += self._insert_together(conn, stuck, refused)
                self.commit(conn)
            except BaseException:
                self.rollback(conn)
                raise
        # A third member: (entry, why) for sessions the database refused as they went in.
        return restored, skipped, refused

    def _key_taken(self, exc: BaseException) -> bool:
        """Whether an INSERT was refused because its key (or another unique value) is there."""
        text = self.refusal(exc).lower()
        return "unique" in text or "duplicate" in text

    def _insert_together(self, conn, stuck: list, refused: list) -> int:
        """Sessions whose cascade rows refer to one another (a row linking two sessions
        removed together): every session row first, then all their cascade rows. All of them
        go in, or none, each refused with its own reason; returns how many went in."""
        merged: dict[str, list] = {}
        for entry, _, _ in stuck:
            children = entry.get("children")
            for table, rows in children.items() if isinstance(children, dict) else ():
                merged.setdefault(table, []).extend(rows if isinstance(rows, list) else [])
        conn.execute("SAVEPOINT sessionctl_together")
        try:
            for _, record, _ in stuck:
                self._insert_row(conn, self.table, record)
            self._insert_children(conn, merged)
        except self.integrity_errors:
            conn.execute("ROLLBACK TO sessionctl_together")
            conn.execute("RELEASE SAVEPOINT sessionctl_together")
            refused.extend((entry, why) for entry, _, why in stuck)
            return 0
        conn.execute("RELEASE SAVEPOINT sessionctl_together")
        return len(stuck)

    #: SQL comparing two values equal when both are NULL too; None where not known, and then
    #: a cascade row already there is not recognised as such.
    null_safe_equal: str | None = None

    def _row_present(self, conn, table: str, row: dict) -> bool:
        """Whether `row` is in `table` as it is, every value the same (a cascade row archived
        with two sessions, which the first one put back)."""
        if self.null_safe_equal is None:
            return False
        known = set(self._columns(table)) - self.generated_columns(table)
        names = [name for name in row if name in known]
        if not names:
            return False
        values = [decode_value(row[name]) for name in names]
        where = " AND ".join(
            f"{quote_identifier(n)} {self.null_safe_equal} "
            + (self.text_bytes_mark if type(v) is BadText else self.mark)  # noqa: E721
            for n, v in zip(names, values)
        )
        found = self.fetch_rows(
            conn,
            f"SELECT 1 FROM {quote_identifier(table)} WHERE {where} LIMIT 1",
            [bytes(v) if type(v) is BadText else v for v in values],  # noqa: E721
        )
        return bool(found)

    def _insert_children(self, conn, children) -> None:
        """Put archived cascade rows back, parents first. A row whose parent row comes later
        (tables that refer to each other, a table that refers to itself) waits for the next
        pass; when a pass puts nothing in, the database's refusal is raised."""
        pending = [(table, row) for table, rows in self._restore_order(children) for row in rows]
        while pending:
            waiting, refusal = [], None
            for table, row in pending:
                conn.execute("SAVEPOINT sessionctl_row")
                try:
                    self._insert_row(conn, table, row)
                except self.integrity_errors as exc:
                    conn.execute("ROLLBACK TO sessionctl_row")
                    if not (self._key_taken(exc) and self._row_present(conn, table, row)):
                        waiting.append((table, row))
                        refusal = exc
                conn.execute("RELEASE SAVEPOINT sessionctl_row")
            if len(waiting) == len(pending):
                raise refusal
            pending = waiting

    def _restore_order(self, children, order: list[str] | None = None) -> list[tuple[str, list]]:
        """Archived cascade rows by table, parents before children as the schema has them."""
        if not isinstance(children, dict):
            return []
        rank = {t.lower(): i for i, t in enumerate(order or self.cascade_tables())}
        return sorted(children.items(), key=lambda item: rank.get(item[0].lower(), len(rank)))

    def generated_columns(self, table: str) -> set[str]:
        """Columns the database computes, which a row read has and an INSERT cannot name."""
        return set()

    def _insert_row(self, conn, table: str, row: dict) -> None:
        known = set(self._columns(table)) - self.generated_columns(table)
        names = [name for name in row if name in known]
        values = [decode_value(row[name]) for name in names]
        # Text that is not UTF-8 goes back as TEXT with its exact bytes.
        marks = ",".join(
            self.text_bytes_mark if type(v) is BadText else self.mark  # noqa: E721
            for v in values
        )
        columns = ",".join(quote_identifier(n) for n in names)
        conn.execute(
            f"INSERT INTO {quote_identifier(table)} ({columns}) VALUES ({marks})",
            [bytes(v) if type(v) is BadText else v for v in values],  # noqa: E721
        )
