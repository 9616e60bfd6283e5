"""The Judge (domain/policy.py) compiled to SQL, so a SQL table store can count, select and
delete without handing a million rows to Python. What differs between databases (how a value's
type is told, how text becomes a time, collations, hints) is asked of the store's `Dialect`;
expressions are written with `:name` parameters, which the store binds as its driver wants.

Exactness comes first. SQL decides only rows whose time columns it can read exactly as
`parse_timestamp` would: NULL, a non-negative number (epoch seconds, milliseconds or
microseconds, told apart by the same magnitudes), or, when naive times are UTC, text of the
form `YYYY-MM-DD HH:MM:SS[.f{1,6}]` that names a real instant. Every other row is
"undecidable" and goes to the Python judge, so verdicts are the same either way; the tests
compare both paths on stores full of odd values.

Each reason is an SQL expression counting how often it applies to a row, written with the same
arithmetic as the Python judge so that floats round the same way.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field

from ...domain import model
from ...domain.mapping import KEY_PATH, ROLES, Mapping
from ...domain.model import AGE_BUCKETS, Record
from ...domain.policy import IDLE_FROM_CREATED, PLAUSIBLE_SINCE, Policy
from ...domain.timeparse import UTC
from .table import _BadRow
from .table import quote_identifier as quote

#: Aliases of the epoch-second values the inner query computes once per row.
TIME_ALIASES = {"created": "_c", "accessed": "_a", "expires": "_e"}
#: Names the inner query gives its own values: a column so named would be shadowed by them.
RESERVED_ALIASES = {"_k", "_u", *TIME_ALIASES.values()}
DUPLICATES_TABLE = "temp.sessionctl_duplicate_rows"
#: Rows with TEXT that is not UTF-8, found once per run for the read queries.
UNSOUND_TABLE = "temp.sessionctl_unsound_rows"
#: Stands in `duplicates` for the test of the rows' text, which differs by connection.
SOUND = "\x00sound\x00"
PAGE = 2000
#: A time-budgeted cleanup's first batch, in rows; later ones grow or shrink to keep each
#: write transaction near the budget, by at most these factors at a time.
FIRST_TIMED_BATCH = 2000
TIMED_GROWTH = (0.5, 4.0)
#: The fewest rows a time-budgeted batch takes (so it always makes headway).
MIN_TIMED_BATCH = 100


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def named_parameters(sql: str, backslash_escapes: bool = False) -> str:
    """The judge's `:name` parameters as a driver's `%(name)s`, found outside quoted names and
    literals (a table may be named `x'y` or `a:b`; doubled quotes inside toggle twice, and with
    `backslash_escapes` (MySQL) a backslash escapes the next character of a '...' literal);
    `::type` casts left alone; every `%` doubled so the driver takes none of the SQL's own
    for a parameter."""
    out, quote, escaped, i = [], None, False, 0
    while i < len(sql):
        char = sql[i]
        if quote is not None:
            if escaped:
                escaped = False
            elif backslash_escapes and quote == "'" and char == "\\":
                escaped = True
            elif char == quote:
                quote = None
        elif char in "\"'`":
            quote = char
        elif char == ":" and (i == 0 or not (sql[i - 1].isalnum() or sql[i - 1] in ":_")):
            end = i + 1
            while end < len(sql) and (sql[end].isalnum() or sql[end] == "_"):
                end += 1
            if end > i + 1 and not sql[i + 1].isdigit():
                out.append(f"%({sql[i + 1 : end]})s")
                i = end
                continue
        out.append("%%" if char == "%" else char)
        i += 1
    return "".join(out)


class Dialect(ABC):
    """What the judge needs to know of one SQL dialect. Each method returns SQL over the
    expression `x` (a quoted column), true exactly when Python would say the same of the value;
    where a dialect cannot say it exactly, the row is left to Python (see `decided`)."""

    def key_problem(self, store) -> str:
        """Why the judge cannot address this table's rows in key order ("" when it can)."""
        return ""

    @abstractmethod
    def numeric_time(self, x: str) -> str:
        """The value is a number Python reads as an epoch time (non-negative, below 1e17)."""
        ...

    def text_epoch(self, x: str) -> str | None:
        """` WHEN <x is a text time SQL reads exactly> THEN <its epoch seconds>` for naive times
        in UTC, or None when text times are left to Python."""
        return None

    @abstractmethod
    def is_text(self, x: str) -> str: ...

    @abstractmethod
    def is_number(self, x: str) -> str: ...

    def text_in(self, x: str, literals: str) -> str:
        """The text value is one of the quoted literals, byte for byte (no collation)."""
        return f"{x} IN ({literals})"

    def blank(self, x: str) -> str:
        """The value is the empty string, byte for byte (not blanks under RTRIM)."""
        return f"{x} = ''"

    @abstractmethod
    def type_test(self, x: str, type_name: str) -> str | None:
        """The value holds `type_name` (string, integer, number, ...); None: no value here ever
        does (the column cannot hold that type)."""
        ...

    @abstractmethod
    def text_key(self, x: str) -> str:
        """The value as the text Python compares ids by, byte for byte."""
        ...

    def group_key(self, x: str) -> str:
        """GROUP BY terms forming groups as Python forms them."""
        return self.text_key(x)

    @abstractmethod
    def holds_reals(self, store, column: str) -> bool:
        """Whether the column may hold floats, whose text SQL and Python write differently."""
        ...

    def sound(self, columns: list[str]) -> str:
        """True when Python can read every value of the row (its text is valid)."""
        return "TRUE"

    def as_float(self, x: str) -> str:
        """The number as a double, so divisions round as Python's floats do."""
        return x

    def other_epoch(self, x: str, utc: bool) -> str | None:
        """` WHEN ... THEN <epoch seconds>` for values that are not numbers: text times (when
        naive times are UTC), the dialect's own time types."""
        return self.text_epoch(x) if utc else None

    def unique_ids_only(self) -> bool:
        """Whether duplicate ids can be found here only when the table keeps ids unique."""
        return False

    def group_value(self, x: str) -> str:
        """The value a group is shown by, in a query grouped by `group_key`."""
        return x

    def scan_hint(self) -> str:
        """Written after the table in a full scan (SQLite: NOT INDEXED)."""
        return ""

    def outer_order(self) -> str:
        """Written before the LIMIT of a query over an inner one, where the database may not
        keep the inner query's order (MariaDB drops a derived table's ORDER BY): ` ORDER BY
        _k`. Paging by key needs the rows in key order."""
        return ""

    def materialize(self) -> str:
        """Written after an inner query's ORDER BY so it is computed once per row."""
        return ""


@dataclass
class CompiledJudge:
    """SQL pieces for one store, mapping and policy; named parameters (:now and friends)."""

    #: Per-row values the inner query computes: alias -> expression.
    computed: dict[str, str]
    #: Over the inner query: 1 when SQL judges the row exactly, 0 when Python must.
    decided: str
    #: Reason code -> expression counting that reason for a row, over the inner query.
    reasons: dict[str, str]
    expired_codes: list[str]
    invalid_codes: list[str]
    id_column: str | None
    group_column: str | None
    #: Rowids whose id an earlier row already has (None when the store keeps ids unique).
    duplicates: str | None
    #: The table's own columns the expressions read (so inner queries carry only those).
    columns_used: list[str] = field(default_factory=list)
    #: Over the table: 1 when every TEXT value of the row is UTF-8 (Python can read the row).
    sound: str = "TRUE"
    params: dict = field(default_factory=dict)

    def any_of(self, codes: list[str]) -> str:
        if not codes:
            return "0"
        return "(" + " OR ".join(f"({self.reasons[c]}) > 0" for c in codes) + ")"


def compile_judge(store, mapping: Mapping, policy: Policy, tz, now: float):
    """(CompiledJudge, "") or (None, why SQL cannot judge this store exactly)."""
    dialect: Dialect = store.dialect
    problem = dialect.key_problem(store)
    if problem:
        return None, problem
    shadowed = sorted(c for c in store.columns if c.lower() in RESERVED_ALIASES)
    if shadowed:
        return None, f"the column {shadowed[0]!r} has a name the SQL judge uses itself"
    columns = set(store.columns)
    for role in ROLES:
        path = mapping.path(role)
        if path is not None and ("." in path or path == KEY_PATH):
            return None, f"the {role} field {path!r} is not a plain column"
    for path in [*policy.rules.required, *policy.rules.allowed, *policy.rules.types]:
        if path not in ROLES and "." in path:
            return None, f"a rule on {path!r} reaches inside a column"

    used: dict[str, None] = {}

    def column(path: str | None) -> str | None:
        """A role's column; "NULL" when the path names no column (the value is absent)."""
        if path is None:
            return None
        if path not in columns:
            return "NULL"
        used[quote(path)] = None
        return quote(path)

    utc = tz is UTC or getattr(tz, "key", None) == "UTC"
    computed: dict[str, str] = {}
    checks = []
    times = {}
    for role, alias in TIME_ALIASES.items():
        x = column(mapping.path(role))
        if x in (None, "NULL"):
            times[role] = None
            continue
        numeric, f = dialect.numeric_time(x), dialect.as_float(x)
        cases = ""
        if numeric != "FALSE":  # (a column that never holds numbers is not compared to one)
            cases = (
                f" WHEN {numeric} THEN CASE WHEN {x} >= 1e14 THEN {f} / 1e6"
                f" WHEN {x} >= 1e11 THEN {f} / 1e3 ELSE {f} * 1.0 END"
            )
        cases += dialect.other_epoch(x, utc) or ""
        computed[alias] = f"CASE{cases} END" if cases else "CAST(NULL AS DOUBLE PRECISION)"
        # The value is NULL exactly when the column is NULL or SQL cannot read it: checked in
        # the outer query, so each row's text is validated once. Times before 2000 are
        # implausible (invalid, and not used for expiry): Python judges those rows.
        checks.append(f"({x} IS NULL OR COALESCE({alias}, 0) >= {PLAUSIBLE_SINCE!r})")
        times[role] = alias
    # A row with a TEXT value that is not UTF-8 is a corrupt record to Python: SQL leaves it
    # to Python, and counts it neither among the duplicates nor in the groups.
    sound = dialect.sound(store.columns)
    computed["_u"] = sound
    checks.append("_u")
    decided = "(" + " AND ".join(checks) + ")"
    created, accessed, expires = times["created"], times["accessed"], times["expires"]

    reasons: dict[str, str] = {}

    def add(code: str, expression: str) -> None:
        part = f"(CASE WHEN {expression} THEN 1 ELSE 0 END)"
        reasons[code] = part if code not in reasons else f"{reasons[code]} + {part}"

    expired_codes = []
    if expires:
        add(model.EXPIRED, f"{expires} <= :now")
        expired_codes.append(model.EXPIRED)
    if policy.idle_timeout is not None and (accessed or created):
        last_active = (
            f"COALESCE({accessed}, {created})" if accessed and created else accessed or created
        )
        if policy.idle_from == IDLE_FROM_CREATED:
            last_active = created or "NULL"
        add(model.IDLE, f"(:now - {last_active}) > :idle")
        expired_codes.append(model.IDLE)
    if policy.max_age is not None and created:
        add(model.MAX_AGE, f"(:now - {created}) > :max_age")
        expired_codes.append(model.MAX_AGE)

    # Every row needs an id, required or not, as in Python.
    missing_id = column(mapping.path("id"))
    add(model.MISSING_ID, "TRUE" if missing_id is None else f"{missing_id} IS NULL")
    for name in policy.rules.required:
        if name == "id":
            continue  # missing_id, above
        if name in ROLES:
            x = column(mapping.path(name))
            add(model.MISSING_FIELD, "TRUE" if x is None else f"{x} IS NULL")
        else:
            x = column(name)
            # BINARY: under RTRIM, "  " = "" (Python says a blank is there).
            add(model.MISSING_FIELD, f"{x} IS NULL OR {dialect.blank(x)}")
    for path, allowed in policy.rules.allowed.items():
        x = column(path)
        if x == "NULL":
            continue  # an absent field is not checked, as in Python
        texts = [v for v in allowed if isinstance(v, str)]
        numbers = [
            int(v) if isinstance(v, bool) else v for v in allowed if isinstance(v, (int, float))
        ]
        member = []
        if texts:
            listed = ", ".join(map(_literal, texts))
            if dialect.is_text(x) != "FALSE":
                member.append(f"({dialect.is_text(x)} AND {dialect.text_in(x, listed)})")
        if numbers:
            listed = ", ".join(repr(n) for n in numbers)
            if dialect.is_number(x) != "FALSE":
                member.append(f"({dialect.is_number(x)} AND {x} IN ({listed}))")
        add(model.NOT_ALLOWED, f"{x} IS NOT NULL AND NOT ({' OR '.join(member) or 'FALSE'})")
    for path, type_name in policy.rules.types.items():
        x = column(path)
        if x == "NULL":
            continue
        holds = dialect.type_test(x, type_name)
        if holds is not None:
            add(model.WRONG_TYPE, f"{x} IS NOT NULL AND NOT ({holds})")
        else:  # the column never holds that type: any value has the wrong type
            add(model.WRONG_TYPE, f"{x} IS NOT NULL")
    if created:
        add(model.FUTURE_TIMESTAMP, f"{created} > :ahead")
    if accessed:
        add(model.FUTURE_TIMESTAMP, f"{accessed} > :ahead")
    if expires:
        add(model.FUTURE_TIMESTAMP, f"{expires} > :horizon_at")
    if created and accessed:
        add(model.INCONSISTENT, f"{accessed} < {created} - :skew")

    id_column = column(mapping.path("id"))
    rowid = store.key_sql
    duplicates = None
    if id_column not in (None, "NULL") and mapping.path("id") not in store.unique_fields():
        if dialect.unique_ids_only():
            return None, "the id column is not kept unique by the table"
        if dialect.holds_reals(store, mapping.path("id")):
            return None, "the id column holds real numbers, which SQL writes unlike Python"
        # Ids compare as Python compares them: as their text, byte for byte, whatever the
        # column's collation (NOCASE would make ABC and abc one id) or the values' types.
        duplicates = (
            f"SELECT k FROM (SELECT {rowid} AS k, ROW_NUMBER() OVER (PARTITION BY"
            f" {dialect.text_key(id_column)} ORDER BY {rowid}) AS n"
            f" FROM {store.qualified} WHERE {id_column} IS NOT NULL AND {SOUND}) AS t WHERE n > 1"
        )
        add(model.DUPLICATE_ID, f"_k IN {DUPLICATES_TABLE}")
    invalid_order = [
        model.MISSING_ID,
        model.MISSING_FIELD,
        model.NOT_ALLOWED,
        model.WRONG_TYPE,
        model.FUTURE_TIMESTAMP,
        model.INCONSISTENT,
        model.DUPLICATE_ID,
    ]
    group = column(mapping.path("group"))
    if group not in (None, "NULL") and dialect.holds_reals(store, mapping.path("group")):
        return None, "the group column holds real numbers, which SQL writes unlike Python"
    return (
        CompiledJudge(
            computed=computed,
            decided=decided,
            reasons=reasons,
            expired_codes=expired_codes,
            invalid_codes=[code for code in invalid_order if code in reasons],
            id_column=None if id_column in (None, "NULL") else id_column,
            group_column=None if group in (None, "NULL") else group,
            sound=sound,
            duplicates=duplicates,
            columns_used=list(used),
            params={
                "now": now,
                "ahead": now + policy.skew,
                "horizon_at": now + policy.expiry_horizon,
                "skew": policy.skew,
                "idle": policy.idle_timeout,
                "max_age": policy.max_age,
            },
        ),
        "",
    )


class Pushdown:
    """Counting and selecting inside the database, with the undecidable rest handed to Python.
    Runs on the store's read connection (`_reader`) and write connection (`_writer_conn()`),
    through its transaction hooks; temporary tables hold the keys found once per run."""

    def __init__(self, store, compiled: CompiledJudge):
        self.store = store
        self.compiled = compiled
        self.table = store.qualified
        self.rowid = store.key_sql  # a rowid alias no column shadows
        self._read_sound: str | None = None
        if compiled.duplicates:
            # Temp tables on the read connection: the application's database is not touched.
            with store.translate_errors("read"):
                self._fill_duplicates(store._reader, self.read_sound)
        self.left_to_python: list = []
        #: Rows the last aggregate could not decide (None: unknown, so scan for them).
        self.undecided: int | None = None
        self.duplicate_keys = (
            {k for (k,) in store.query(f"SELECT k FROM {DUPLICATES_TABLE}")}
            if compiled.duplicates
            else set()
        )

    @property
    def read_sound(self) -> str:
        """SQL telling the rows whose text Python can read, for the read queries.

        Reading every text value costs a scan: one, the first time a read query needs it, for
        all of them, which then test a row by its rowid (or not at all on a clean table).
        Deleting tests each row in its own transaction, exactly, so a cleanup never scans
        for it."""
        if self._read_sound is None:
            with self.store.translate_errors("read"):
                self._read_sound = self._find_unsound(self.store._reader)
        return self._read_sound

    def _find_unsound(self, conn) -> str:
        """Note the rows whose text Python cannot read; SQL that tells them from the rest."""
        if self.compiled.sound == "TRUE":
            return "TRUE"  # the dialect's text is always what Python reads
        name = UNSOUND_TABLE.split(".")[1]
        conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS {name}(k INTEGER PRIMARY KEY)")
        conn.execute(f"DELETE FROM {UNSOUND_TABLE}")
        conn.execute(
            f"INSERT INTO {UNSOUND_TABLE} SELECT {self.rowid} FROM {self.table}"
            f" WHERE NOT ({self.compiled.sound})"
        )
        if conn.execute(f"SELECT 1 FROM {UNSOUND_TABLE} LIMIT 1").fetchone() is None:
            return "1"
        return f"{self.rowid} NOT IN {UNSOUND_TABLE}"

    def _inner(
        self, where: str = "", whole_rows: bool = False, exact: bool = False, ordered: bool = True
    ) -> str:
        """Each row once, in rowid order, with its computed values and the columns needed
        (all of them when the rows themselves are wanted). `exact`: the rows' text is
        tested here and now, not looked up in what `_find_unsound` found."""
        parts = [f"{self.rowid} AS _k"]
        parts += [
            f"{sql if alias != '_u' or exact else self.read_sound} AS {alias}"
            for alias, sql in self.compiled.computed.items()
        ]
        parts += self.store.row_columns() if whole_rows else self.compiled.columns_used
        # The dialect keeps the database from flattening the subquery into the outer one,
        # which would repeat each per-row expression everywhere it is used.
        d = self.store.dialect
        return (
            f"SELECT {', '.join(parts)} FROM {self.table}{d.scan_hint()}{where}"
            + (f" ORDER BY {self.rowid}" if ordered else "")
            + d.materialize()
        )

    def _run(self, sql: str, params: dict | None = None) -> list[tuple]:
        merged = {**self.compiled.params, **(params or {})}
        return self.store.query(sql, {k: v for k, v in merged.items() if f":{k}" in sql})

    def total(self) -> int:
        return self.store.count()

    def reason_codes(self, expired: bool, invalid: bool) -> list[str]:
        """The reason codes a cleanup --expired / --invalid selects by."""
        return (self.compiled.expired_codes if expired else []) + (
            self.compiled.invalid_codes if invalid else []
        )

    def aggregate(self, top: int, cap: int | None) -> dict:
        """Counts over the decidable rows, and groups over all rows."""
        c = self.compiled
        expired = c.any_of(c.expired_codes)
        invalid = c.any_of(c.invalid_codes)
        dated = [alias for alias in ("_c", "_a") if alias in c.computed]
        born = f"COALESCE({', '.join(dated)}, NULL)" if dated else "NULL"
        buckets = []
        previous = None
        for _, bound in AGE_BUCKETS if dated else []:  # nothing to bucket without a time
            condition = f"(:now - {born}) < {bound!r}" if bound != float("inf") else "TRUE"
            if previous is not None:
                condition += f" AND NOT ((:now - {born}) < {previous!r})"
            buckets.append(f"SUM(CASE WHEN {born} IS NOT NULL AND {condition} THEN 1 ELSE 0 END)")
            previous = bound
        codes = list(c.reasons)
        sql = (
            f"SELECT COUNT(*), SUM(CASE WHEN {expired} THEN 1 ELSE 0 END),"
            f" SUM(CASE WHEN {invalid} THEN 1 ELSE 0 END),"
            f" SUM(CASE WHEN NOT {expired} AND NOT {invalid} THEN 1 ELSE 0 END),"
            f" SUM(CASE WHEN {born} IS NULL THEN 1 ELSE 0 END)"
            + "".join(f", SUM({c.reasons[code]})" for code in codes)
            + "".join(f", {b}" for b in buckets)
            # In no order: an aggregate needs none (and random keys make key order costly).
            + f" FROM ({self._inner(ordered=False)}) AS t WHERE {c.decided}"
        )
        store = self.store
        params = {k: v for k, v in self.compiled.params.items() if f":{k}" in sql}
        with store.translate_errors("read"):
            # One read transaction: the count of all rows and the aggregate of the decidable
            # ones see the same table, so their difference says whether any row is left for
            # Python, and a clean table is not scanned a second time.
            store.begin_read(store._reader)
            try:
                total = store.fetch_rows(store._reader, f"SELECT COUNT(*) FROM {self.table}")
                total = total[0][0]
                row = store.fetch_rows(store._reader, sql, params)[0]
            finally:
                store.commit(store._reader)
        n, n_expired, n_invalid, n_active, undated = (v or 0 for v in row[:5])
        self.undecided = total - n
        by_reason = {code: row[5 + i] or 0 for i, code in enumerate(codes)}
        histogram = [v or 0 for v in row[5 + len(codes) :]] or [0] * len(AGE_BUCKETS)
        result = {
            "decided": n,
            "expired": n_expired,
            "invalid": n_invalid,
            "active": n_active,
            "undated": undated,
            "by_reason": {code: count for code, count in by_reason.items() if count},
            "histogram": histogram,
            "oldest": self._extreme("_c", "ASC"),
            "newest": self._extreme("_c", "DESC"),
            "least_recent": self._extreme("_a", "ASC"),
        }
        result.update(self._groups(top, cap))
        return result

    def _extreme(self, alias: str, direction: str) -> tuple[float, str | None] | None:
        if alias not in self.compiled.computed:
            return None
        id_column = self.compiled.id_column or "NULL"
        rows = self._run(
            f"SELECT {alias}, {id_column} FROM ({self._inner()}) AS t"
            f" WHERE {alias} IS NOT NULL AND {self.compiled.decided}"
            f" ORDER BY {alias} {direction}, _k ASC LIMIT 1"
        )
        if not rows:
            return None
        value, session_id = rows[0]
        return value, None if session_id is None else _as_id(session_id)

    def _groups(self, top: int, cap: int | None) -> dict:
        group = self.compiled.group_column
        if group is None:
            return {"group_count": 0, "top_groups": [], "groups_over_cap": None}
        # Groups as Python forms them: by their text, byte for byte, whatever the collation;
        # a blob is its own group (Python names it by its repr).
        text = self.store.dialect.group_key(group)
        counted = (
            f"SELECT {self.store.dialect.group_value(group)} AS g, COUNT(*) AS n,"
            f" MIN({self.rowid}) AS first FROM {self.table}"
            f" WHERE {group} IS NOT NULL AND {self.read_sound} GROUP BY {text}"
        )
        group_count = self.store.query(f"SELECT COUNT(*) FROM ({counted}) AS t")[0][0]
        top_rows = self._run(f"{counted} ORDER BY n DESC, first ASC LIMIT :top", {"top": top})
        over = None
        if cap:
            over = self._run(f"SELECT COUNT(*) FROM ({counted}) AS t WHERE n > :cap", {"cap": cap})
            over = over[0][0]
        return {
            "group_count": group_count,
            "top_groups": [(g if type(g) is str else str(g), n) for g, n, _ in top_rows],
            "groups_over_cap": over,
        }

    def delete_decided(
        self,
        codes: list[str],
        everything: bool,
        batch: int,
        archive=None,
        max_lock: float | None = None,
    ) -> Iterator[tuple[list[tuple], dict]]:
        """Delete the decidable rows to remove, batch by batch, each batch one transaction in
        which the rows are chosen, archived (when `archive` is given) and deleted.

        `max_lock` (seconds), on a store whose `timed_batches` says its write transaction
        keeps the application out: `batch` is then not used, and each batch takes as many rows
        (in rowid order) as keep its transaction near `max_lock`, judged from the batches
        before it. Elsewhere, and without it, every batch takes `batch` rows.

        Choosing inside the write transaction means a row the application touched a moment
        ago is judged as it is now. Yields ([(key, id, codes)] removed, {key: error} refused)
        per batch. Undecidable rows met on the way are not touched; their keys are collected
        in `self.left_to_python` (the same scan finds them, so none is needed afterwards).
        """
        c = self.compiled
        store = self.store
        flagged = [code for code in codes if code in c.reasons]
        wanted = "TRUE" if everything else c.any_of(flagged)
        prefix = ["all"] if everything else []
        flags = "".join(f", ({c.reasons[code]}) > 0" for code in flagged)
        conn = store._writer_conn()
        if store.max_batch:
            batch = min(batch, store.max_batch)
        timed = bool(max_lock) and getattr(store, "timed_batches", False)
        size = FIRST_TIMED_BATCH if timed else batch
        if c.duplicates:
            self._fill_duplicates(conn, c.sound)
        last = None
        while True:
            where = f" WHERE {self.rowid} > :last" if last is not None else ""
            sql = (
                f"SELECT _k, {c.id_column or 'NULL'}, {c.decided}{flags}"
                f" FROM ({self._inner(where, exact=True)}) AS t"
                f" WHERE ({c.decided} AND ({wanted})) OR NOT {c.decided}"
                f"{store.dialect.outer_order()} LIMIT {int(size)}"
            )
            params = {**c.params, "last": last}
            params = {k: v for k, v in params.items() if f":{k}" in sql}

            held = [0.0, 0.0]  # when the write transaction began and committed

            def one_batch(sql=sql, params=params, held=held):
                with store.translate_errors("write"):
                    store.begin_write(conn)
                    held[0] = time.perf_counter()  # the lock is ours from here to COMMIT
                    try:
                        found = store.fetch_rows(conn, sql, params)
                        picked = [row for row in found if row[2]]
                        if picked and store.lock_then_recheck:
                            picked, locked = self._lock_and_recheck(conn, picked, flags, wanted)
                        else:
                            locked = None
                        keys = [row[0] for row in picked]
                        reasons = {
                            row[0]: prefix + [code for code, on in zip(flagged, row[3:]) if on]
                            for row in picked
                        }
                        if keys and archive is not None:
                            rows = (
                                [locked[key] for key in keys]
                                if locked is not None
                                else list(store._fetch(conn, keys).values())
                            )
                            store._attach_children(conn, rows)
                            archive(rows, reasons)
                        failed = store.delete_keys(conn, keys) if keys else {}
                        store.commit(conn)
                        held[1] = time.perf_counter()
                    except BaseException:
                        store.rollback(conn)
                        raise
                return found, picked, reasons, failed

            # A batch that met a lock or a concurrent update is tried again (by stores whose
            # database can say so), from the same place.
            found, picked, reasons, failed = store.retrying(one_batch)
            took = held[1] - held[0]
            self.left_to_python.extend(row[0] for row in found if not row[2])
            if not found:
                return
            removed = [
                (row[0], None if row[1] is None else _as_id(row[1]), reasons[row[0]])
                for row in picked
                if row[0] not in failed
            ]
            yield removed, failed
            if len(found) < size:
                return
            last = found[-1][0]
            if timed:
                # The transaction's time grows with its rows: scale the next one to the budget.
                low, high = TIMED_GROWTH
                factor = min(max(max_lock / max(took, 1e-6), low), high)
                size = int(max(size * factor, MIN_TIMED_BATCH))

    def _lock_and_recheck(self, conn, picked: list, flags: str, wanted: str):
        """For a database whose batch read does not lock (PostgreSQL at READ COMMITTED): lock
        the chosen rows, then judge them again as they are now. A row the application changed
        since the batch read it is judged anew; one no longer to remove stays. Returns the rows
        still chosen, and the locked records by key when locking read them (else None)."""
        c = self.compiled
        keys = [row[0] for row in picked]
        locked = self.store.lock_rows(conn, keys)
        inner = self._inner(f" WHERE {self.store.key_among('keys')}", exact=True)
        sql = (
            f"SELECT _k, {c.id_column or 'NULL'}, {c.decided}{flags} FROM ({inner}) AS t"
            f" WHERE {c.decided} AND ({wanted})"
        )
        params = {**c.params, "keys": keys}
        params = {k: v for k, v in params.items() if f":{k}" in sql}
        rows = self.store.fetch_rows(conn, sql, params)
        if locked is not None:
            # A row the lock did not reach (row-level security lets FOR UPDATE see fewer rows
            # than SELECT) is not the batch's to remove: it stays.
            rows = [row for row in rows if row[0] in locked]
        return rows, locked

    def _fill_duplicates(self, conn, sound: str) -> None:
        """The duplicate-id rowids as a temp table of `conn` (temp tables are per connection),
        among the rows `sound` says Python can read."""
        name = DUPLICATES_TABLE.split(".")[1]
        conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS {name}(k INTEGER PRIMARY KEY)")
        conn.execute(f"DELETE FROM {DUPLICATES_TABLE}")
        duplicates = self.compiled.duplicates.replace(SOUND, f"({sound})")
        conn.execute(f"INSERT INTO {DUPLICATES_TABLE} {duplicates}")

    def records(self, keys: list) -> Iterator[Record]:
        """The rows with these keys as they are now (those still there)."""
        for start in range(0, len(keys), PAGE):
            with self.store.translate_errors("read"):
                found = self.store._fetch(self.store._reader, keys[start : start + PAGE])
            yield from found.values()

    def undecidable(self) -> Iterator[Record]:
        """Rows SQL cannot judge exactly; the caller judges them in Python."""
        if self.undecided == 0:
            return
        yield from self._pages(f"NOT {self.compiled.decided}", [])

    def select(self, codes: list[str], everything: bool) -> Iterator[tuple[Record, list | None]]:
        """(record, reason codes) for every decidable row to remove, in rowid order, and
        (record, None) for every undecidable row, which Python must judge."""
        c = self.compiled
        flagged = [code for code in codes if code in c.reasons]
        wanted = "TRUE" if everything else c.any_of(flagged)
        prefix = ["all"] if everything else []
        condition = f"({wanted}) OR NOT {c.decided}"
        for record, flags in self._pages(condition, flagged, with_decided=True):
            if flags is None:
                yield record, None
            else:
                yield record, prefix + [code for code, on in zip(flagged, flags) if on]

    def _pages(self, condition: str, flagged: list[str], with_decided: bool = False):
        c = self.compiled
        flags = "".join(f", ({c.reasons[code]}) > 0" for code in flagged)
        skip = 2 + len(flagged)
        last = None
        while True:
            where = f" WHERE {self.rowid} > :last" if last is not None else ""
            inner = self._inner(where, whole_rows=True)
            sql = (
                f"SELECT _k, {c.decided}{flags}, t.* FROM ({inner}) AS t"
                f" WHERE {condition}{self.store.dialect.outer_order()} LIMIT {PAGE}"
            )
            rows = self._run(sql, {"last": last})
            width = len(c.computed) + 1  # _k and the computed values precede the row's own
            for row in rows:
                record = self.store.make_record(row[0], row[skip + width :], type(row) is _BadRow)
                if not with_decided:
                    yield record
                elif row[1]:
                    yield record, row[2:skip]
                else:
                    yield record, None
            if len(rows) < PAGE:
                return
            last = rows[-1][0]


def _as_id(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


#: The name this class had when only SQLite had it.
SqlitePushdown = Pushdown
