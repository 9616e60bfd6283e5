"""A session table in PostgreSQL, through psycopg 3 (imported only when such a store is used).

Addresses: `postgresql://USER@HOST:PORT/DB?table=NAME&schema=NAME` (or `postgres://`); HOST may
be a Unix socket folder (`%2Fvar%2Frun%2Fpostgresql`, or `?host=/var/run/postgresql`), and
anything left out comes from libpq's own sources (PGHOST, PGUSER, PGPASSWORD, ~/.pgpass, service
files): the conninfo handed to libpq carries no password unless one was given, so libpq finds it
as psql does. A password comes from `password_env` / `password_file` settings, or from the
address itself (which works, with a warning); it never appears in what is shown or stored.

Reads stream through a server-side cursor. Removal goes batch by batch in short transactions
in primary-key order, with `lock_timeout` and `statement_timeout` set on the tool's own session:
re-read the batch (FOR UPDATE), keep only rows still exactly as selected, archive them with the
rows their delete cascades to, DELETE, COMMIT. A batch that meets a deadlock or a lock timeout
is retried with backoff, then reported. One run per store across hosts: `pg_try_advisory_lock`
on a key derived from the store's identity, held on a connection of its own.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import hashlib
import os
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from ...domain.errors import SessionctlError, busy_error, store_error, usage_error
from ...domain.mapping import CANDIDATES, norm_name
from ...domain.model import Record
from ...domain.timeparse import format_duration
from ..base import (
    Address,
    ArchiveFn,
    Candidate,
    RemoveOutcome,
    StoreSettings,
    canonical_bytes,
    configured_password,
)
from .judge import Dialect, named_parameters
from .table import READ_PAGE, TableStore, decode_value, quote_identifier

SCHEMES = ("postgresql", "postgres")
#: Parameters an address takes besides the table and schema (handed to libpq as they are).
LIBPQ_PARAMETERS = ("host", "port", "sslmode", "sslrootcert", "service", "connect_timeout")
PARAMETERS = ("table", "schema", *LIBPQ_PARAMETERS)
INSTALL_HINT = (
    "install the driver: pip install 'sessionctl[postgres]' "
    "(or pipx inject sessionctl 'psycopg[binary]')"
)
#: Retries of a batch that met a deadlock or a lock timeout, and the first pause between them.
RETRIES = 4
#: Removed rows from which a cleanup says how much dead space it left.
LARGE_CLEANUP = 1000
BACKOFF = 0.2
#: Naive-timestamp tables whose framework writes them in the connection's TimeZone
#: (connect-pg-simple: `expire < to_timestamp(now)`); other naive columns are read as written.
SERVER_ZONE_TABLES = {("session", "expire")}


def _psycopg():
    try:
        import psycopg
    except ImportError:
        raise store_error(
            "PostgreSQL stores need psycopg 3, which is not installed", INSTALL_HINT
        ) from None
    return psycopg


def _split_host(netloc: str) -> tuple[str | None, str | None]:
    """(host, port) of the part of a URL after any `user@`; a socket folder percent-encoded."""
    hostport = netloc.rpartition("@")[2]
    if hostport.startswith("["):
        host, _, rest = hostport[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else None
    elif ":" in hostport:
        host, _, port = hostport.rpartition(":")
    else:
        host, port = hostport, None
    return (unquote(host) or None), (port or None)


def parse_postgres_address(text: str) -> Address:
    text = text.strip()
    # What does not parse is never echoed: a password with an unencoded @ : / ? # spills into
    # the host, port, path or fragment, and would be shown as one of them.
    unparsed = usage_error(
        "store postgresql://...: the address does not read as "
        "postgresql://USER@HOST:PORT/DB?table=NAME",
        "percent-encode @ : / ? # in a password (%40 %3A %2F %3F %23), or better, "
        "give it through password_env, password_file or ~/.pgpass",
    )
    try:
        url = urlsplit(text)
        url.port  # noqa: B018 - raises on a bracketed host that does not close
    except ValueError:
        raise unparsed from None
    if url.scheme.lower() not in SCHEMES:
        raise usage_error(f"store {text.split(':')[0]}: is not a PostgreSQL address")
    if url.fragment or "#" in text or "@" in url.path or "@" in url.query:
        raise unparsed
    userinfo = url.netloc.rpartition("@")[0] if "@" in url.netloc else ""
    user, colon, password = userinfo.partition(":")
    user = unquote(user) or None
    secret = unquote(password) if colon else None
    host, port = _split_host(url.netloc)
    shown_scheme = url.scheme.lower()
    if port is not None and not port.isdigit():
        raise unparsed
    dbname = unquote(url.path[1:]) if url.path.startswith("/") else ""
    pairs = parse_qsl(url.query, keep_blank_values=True)
    params: dict[str, str] = {}
    for key, value in pairs:
        if key not in PARAMETERS:
            raise usage_error(
                f"store {shown_scheme}://...: unknown parameter {key!r}",
                f"a PostgreSQL address takes {', '.join(PARAMETERS)}",
            )
        if key in params:
            raise usage_error(f"store {shown_scheme}://...: {key}= given twice")
        if not value.strip():
            raise usage_error(f"store {shown_scheme}://...: empty {key}", f"give ?{key}=NAME")
        params[key] = value
    if host is not None:
        params.setdefault("host", host)
    if port is not None:
        params.setdefault("port", port)
    if user:
        params["user"] = user
    if dbname:
        params["dbname"] = dbname
    display = _display(params)
    return Address(
        kind="postgresql",
        display=display,
        identity=store_identity(params),
        pinned=display,
        params=tuple(sorted(params.items())),
        secret=secret,
    )


def store_identity(params: dict[str, str], schema: str | None = None, info=None) -> str:
    """What names a table whoever connects: `postgresql://HOST:PORT/DB/SCHEMA.TABLE`, never
    the user (two users' runs are one store's history). What the address leaves out comes from
    libpq's environment as libpq takes it; the schema is always spelled (`public`, or the one
    the search_path resolved to once the store is open). Through a service file, the server
    the connection reached (`info`) names it."""
    env = os.environ
    from_service = info is not None and ("service" in params or "PGSERVICE" in env)
    if from_service:
        host, port, dbname = info.host, str(info.port), info.dbname
    else:
        host = params.get("host") or env.get("PGHOST") or ""
        port = params.get("port") or env.get("PGPORT") or "5432"
        dbname = (
            params.get("dbname")
            or env.get("PGDATABASE")
            or params.get("user")
            or env.get("PGUSER")
            or (info.dbname if info is not None else _os_user())
        )
    schema = schema or params.get("schema") or "public"
    table = params.get("table") or ""
    return f"postgresql://{host}:{port}/{dbname}/{schema}.{table}"


def _os_user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""


def _display(params: dict[str, str]) -> str:
    """A postgresql:// URL of the parameters, never with a password."""
    from urllib.parse import quote

    host = params.get("host", "")
    shown_host = quote(host, safe="") if host.startswith("/") else host
    if ":" in shown_host:
        shown_host = f"[{shown_host}]"
    netloc = (quote(params["user"], safe="") + "@" if params.get("user") else "") + shown_host
    if params.get("port"):
        netloc += ":" + params["port"]
    query = "&".join(
        f"{key}={params[key]}"
        for key in ("table", "schema", "sslmode", "sslrootcert", "service", "connect_timeout")
        if key in params
    )
    path = "/" + quote(params.get("dbname", ""), safe="")
    return f"postgresql://{netloc}{path}" + (f"?{query}" if query else "")


def _json_value(value):
    """A value as the tool's records carry it (JSON-able, exact where it matters)."""
    if value is None or isinstance(value, (str, int, float, bool, bytes)):
        return value
    if isinstance(value, memoryview):
        return bytes(value)
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():  # NaN, Infinity: no number a time could be read from
            return str(value)
        if value == value.to_integral_value():
            return int(value)
        # A float where it holds the number; else its digits (the archive keeps them all, and
        # the judge reads a numeric string as the number).
        return float(value) if decimal.Decimal(repr(float(value))) == value else str(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (dict, list)):
        return value
    return str(value)


class Unsupported(Exception):
    """The judge cannot say this in SQL exactly as Python would: Python judges the store."""


_INTEGERS = ("smallint", "integer", "bigint")
_NUMBERS = (*_INTEGERS, "numeric", "real", "double precision")
_TEXTS = ("text", "character varying")


class PostgresDialect(Dialect):
    """PostgreSQL for the judge. A column has one type, so each test is decided by the column's
    type when the SQL is written; values Python would read differently than SQL (floats as
    text, padded char(n), JSON documents) make the judge give up on the store, not guess."""

    def __init__(self, store: PostgresStore):
        self.store = store
        self.types = {
            quote_identifier(column): kind.split("(")[0].strip()
            for column, kind in store.column_types.items()
        }
        self.server_zone = {quote_identifier(c) for c in store.server_zone_columns()}

    def _type(self, x: str) -> str:
        return self.types.get(x, "unknown")

    def numeric_time(self, x: str) -> str:
        if self._type(x) in _NUMBERS:
            return f"{x} >= 0 AND {x} < 1e17"
        return "FALSE"

    def as_float(self, x: str) -> str:
        return f"({x})::float8"

    def other_epoch(self, x: str, utc: bool) -> str | None:
        kind = self._type(x)
        # `infinity` and `-infinity` are no time to Python (it reads them as text): left to it.
        if kind == "timestamp with time zone":
            return f" WHEN isfinite({x}) THEN extract(epoch from {x})::float8"
        if kind == "timestamp without time zone":
            if x in self.server_zone:
                return f" WHEN isfinite({x}) THEN extract(epoch from {x}::timestamptz)::float8"
            if utc:
                return f" WHEN isfinite({x}) THEN extract(epoch from {x})::float8"
        return None  # text times, dates: Python reads them

    def is_text(self, x: str) -> str:
        return "TRUE" if self._type(x) in _TEXTS else "FALSE"

    def is_number(self, x: str) -> str:
        kind = self._type(x)
        if kind in ("real", "double precision"):
            raise Unsupported(f"the column {x} holds floating-point numbers")
        return "TRUE" if kind in _NUMBERS else "FALSE"

    def text_in(self, x: str, literals: str) -> str:
        return f'{x} COLLATE "C" IN ({literals})'

    def blank(self, x: str) -> str:
        if self._type(x) not in _TEXTS:
            raise Unsupported(f"a rule reads the column {x} as text")
        return f"{x} = ''"

    def type_test(self, x: str, type_name: str) -> str | None:
        kind = self._type(x)
        if kind in ("json", "jsonb", "real", "double precision", "unknown"):
            raise Unsupported(f"the column {x} holds values whose type varies for Python")
        if type_name == "string":
            return "TRUE" if kind in _TEXTS else "FALSE"
        if type_name == "integer":
            if kind == "numeric":
                return f"{x} = trunc({x})"
            return "TRUE" if kind in _INTEGERS else "FALSE"
        if type_name == "number":
            return "TRUE" if kind in _NUMBERS else "FALSE"
        if type_name == "boolean":
            return "TRUE" if kind == "boolean" else "FALSE"
        return "FALSE"

    def text_key(self, x: str) -> str:
        if self._type(x) not in (*_TEXTS, *_INTEGERS):
            raise Unsupported(f"the column {x} is not text or integers")
        return f'({x})::text COLLATE "C"'

    def group_value(self, x: str) -> str:
        return f"MIN(({x})::text)"

    def holds_reals(self, store, column: str) -> bool:
        return self._type(quote_identifier(column)) not in (*_TEXTS, *_INTEGERS)

    def unique_ids_only(self) -> bool:
        return True

    def materialize(self) -> str:
        # OFFSET 0 keeps PostgreSQL from pulling the subquery up into the outer query.
        return " OFFSET 0"


class PostgresStore(TableStore):
    kind = "postgresql"
    schemes = SCHEMES
    shape = "table"
    mark = "%s"
    text_bytes_mark = "%s"
    table_hint = "postgresql://...?table=NAME"
    natural_batch = 500

    @classmethod
    def parse_address(cls, text: str) -> Address:
        return parse_postgres_address(text)

    def __init__(self, address: Address, settings: StoreSettings | None = None):
        super().__init__(address, settings)
        self.psycopg = _psycopg()
        self.integrity_errors = (self.psycopg.errors.IntegrityError,)
        params = dict(address.params)
        self.where_text = (
            f"{params.get('host') or os.environ.get('PGHOST') or 'localhost'}:"
            f"{params.get('port') or os.environ.get('PGPORT') or 5432}, database "
            f"{params.get('dbname') or os.environ.get('PGDATABASE') or '(default)'}"
        )
        self._password = self._find_password(address)
        self._reader = self._connect()
        self._writer = None
        self._write_checked = False
        self.schema = params.get("schema") or self.query("SELECT current_schema()")[0][0]
        if self.schema is None:
            raise store_error(
                f"{self.where}: the search_path names no schema that exists",
                "give the table's schema: ?schema=NAME",
            )
        self.server_zone = self.query("SHOW TimeZone")[0][0]
        self.table = self._choose_table(params.get("table"))
        self.columns = self._columns(self.table)
        self.column_types = self._column_types(self.table)
        self.key_column = self._key_column()
        self._children = self._cascade_children()
        self.dialect = PostgresDialect(self)
        self.database = self.query("SELECT current_database()")[0][0]
        identity = store_identity(
            {**params, "table": self.table}, schema=self.schema, info=self._reader.info
        )
        self.address = replace(address, identity=identity)

    # -- connections and errors ------------------------------------------------------------

    def _find_password(self, address: Address) -> str | None:
        # None: libpq's own sources (PGPASSWORD, ~/.pgpass, service files).
        return configured_password(self.settings, address, "~/.pgpass")

    @property
    def where(self) -> str:
        return f"PostgreSQL at {self.where_text}"

    def _conninfo(self) -> str:
        from psycopg.conninfo import make_conninfo

        params = {k: v for k, v in self.address.params if k not in ("table", "schema")}
        if self._password is not None:
            params["password"] = self._password
        params.setdefault("application_name", "sessionctl")
        params.setdefault("connect_timeout", "10")
        return make_conninfo("", **params)

    def _timeouts(self) -> tuple[int, int]:
        """lock_timeout and statement_timeout in milliseconds. PostgreSQL reads 0 as "wait
        for ever" (a batch would hold its locks while it waits): refused, as is what does not
        fit PostgreSQL's integer."""
        out = []
        for name, default in (("lock_timeout", 2.0), ("statement_timeout", 60.0)):
            seconds = getattr(self.settings, name, default)
            millis = int(seconds * 1000)
            if not 1 <= millis <= 2**31 - 1:
                raise usage_error(
                    f"{name} = {format_duration(seconds)}: PostgreSQL takes from 1ms to 24 "
                    "days here "
                    "(0 would mean waiting for ever)",
                    f'give e.g. {name} = "{default:g}s"',
                )
            out.append(millis)
        return out[0], out[1]

    def _connect(self):
        lock_ms, statement_ms = self._timeouts()
        with self.translate_errors("connect to"):
            conn = self.psycopg.connect(
                self._conninfo(), autocommit=True, cursor_factory=_percent_safe_cursor()
            )
            conn.execute(f"SET lock_timeout = {lock_ms}")
            conn.execute(f"SET statement_timeout = {statement_ms}")
            _lenient_times(conn)
            _uuids_as_text(conn)
            if conn.info.encoding == "ascii":
                # A SQL_ASCII database: psycopg would hand every text value over as bytes
                # (and send names as bytea). Its text read as UTF-8, as applications write it.
                conn.execute("SET client_encoding TO 'UTF8'")
        return conn

    def _scrub(self, text: str) -> str:
        text = " ".join(str(text).split())
        if self._password:
            text = text.replace(self._password, "***")
        secret = self.address.secret
        if secret:
            text = text.replace(secret, "***")
        return text

    @contextlib.contextmanager
    def translate_errors(self, doing: str):
        psycopg = self.psycopg
        try:
            yield
        except SessionctlError:
            raise
        except psycopg.errors.LockNotAvailable:
            raise
        except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure):
            raise
        except psycopg.errors.InsufficientPrivilege as exc:
            reason = self._scrub(exc.diag.message_primary or exc)
            raise store_error(f"cannot {doing} {self.where}: {reason}") from None
        except psycopg.errors.QueryCanceled:
            raise store_error(
                f"{self.where}: a statement ran past statement_timeout; nothing half-removed",
                "raise statement_timeout or lower batch_size",
            ) from None
        except psycopg.OperationalError as exc:
            raise store_error(f"cannot {doing} {self.where}: {self._reason(exc)}") from None
        except psycopg.Error as exc:
            raise store_error(f"cannot {doing} {self.where}: {self._scrub(exc)}") from None

    def _reason(self, exc) -> str:
        text = self._scrub(exc)
        lowered = text.lower()
        if "password authentication failed" in lowered:
            return "password authentication failed (wrong password or user)"
        if "no password supplied" in lowered:
            return "the server wants a password (set password_env, password_file or ~/.pgpass)"
        match = re.search(r'database "([^"]*)" does not exist', text)
        if match:
            return f"database {match.group(1)!r} does not exist"
        if "connection refused" in lowered or "could not connect" in lowered:
            return "the server is not answering (connection refused or no such socket)"
        if "terminating connection" in lowered or "server closed the connection" in lowered:
            return "the server closed the connection"
        if "timeout expired" in lowered:
            return "the server did not answer in time"
        return text.removeprefix("connection failed: ")

    def close(self) -> None:
        for conn in (self._reader, self._writer):
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()

    def query(self, sql: str, params=()) -> list[tuple]:
        with self.translate_errors("read"):
            return self.fetch_rows(self._reader, sql, params)

    def fetch_rows(self, conn, sql: str, params=()) -> list[tuple]:
        if isinstance(params, dict):
            sql, params = named_parameters(sql), params
        else:
            params = list(params) or None
        return conn.execute(sql, params).fetchall()

    def _writer_conn(self):
        if self._writer is None:
            self._check_writable()
            self._writer = self._connect()
        return self._writer

    def _check_writable(self) -> None:
        """Before anything is archived: the DELETE privilege on the table (and on the tables
        its cascades reach, which the delete removes from too)."""
        if self._write_checked:
            return
        standby, read_only = self.query(
            "SELECT pg_is_in_recovery(), current_setting('default_transaction_read_only') = 'on'"
        )[0]
        if standby or read_only:
            raise store_error(
                f"PostgreSQL at {self.where_text} is read-only "
                + ("(a hot standby)" if standby else "(default_transaction_read_only)")
                + "; nothing was changed",
                "run the cleanup against the primary" if standby else "ask for a writable role",
            )
        for table in [self.table, *self.cascade_tables()]:
            name = f"{quote_identifier(self.schema)}.{quote_identifier(table)}"
            allowed = self.query("SELECT has_table_privilege(%s, 'DELETE')", (name,))[0][0]
            if not allowed:
                raise store_error(
                    f"no DELETE privilege on {self.schema}.{table} at {self.where_text}; "
                    "nothing was changed",
                    f"GRANT SELECT, DELETE ON {self.schema}.{table} TO the tool's user",
                )
        # A batch locks its rows (SELECT ... FOR UPDATE) before it deletes them, which
        # PostgreSQL allows only with the UPDATE privilege on at least one column.
        if not self.query("SELECT has_any_column_privilege(%s, 'UPDATE')", (self.qualified,))[0][0]:
            raise store_error(
                f"no UPDATE privilege on {self.schema}.{self.table} at {self.where_text}: a "
                "batch locks its rows (SELECT ... FOR UPDATE) before it deletes them; nothing "
                "was changed",
                f"GRANT UPDATE ({quote_identifier(self.key_column)}) ON {self.qualified} TO the "
                "tool's user (it is never used to change a row)",
            )
        self._write_checked = True

    #: A batch locks the rows it chose (FOR UPDATE, in key order) and judges them again as
    #: they are then: a row the application updated after the batch read it is judged anew.
    lock_then_recheck = True

    def key_among(self, name: str) -> str:
        """SQL: the row's key is in the list parameter `name` (one array, one plan)."""
        return f"{self.key_sql} = ANY(:{name})"

    def lock_rows(self, conn, keys: list) -> dict:
        """Lock the rows (FOR UPDATE, in key order) and read them: the archive takes these."""
        return self._fetch(conn, keys)

    def begin_write(self, conn) -> None:
        conn.execute("BEGIN")

    def begin_read(self, conn) -> None:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")

    def rollback(self, conn) -> None:
        with contextlib.suppress(Exception):
            conn.execute("ROLLBACK")

    # -- schema ----------------------------------------------------------------------------

    @property
    def qualified(self) -> str:
        return f"{quote_identifier(self.schema)}.{quote_identifier(self.table)}"

    def tables(self) -> list[str]:
        rows = self.query(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s"
            " AND table_type = 'BASE TABLE' ORDER BY table_name",
            (self.schema,),
        )
        return [name for (name,) in rows]

    def _choose_table(self, wanted: str | None) -> str:
        tables = self.tables()
        if wanted and wanted not in tables:
            matching = [name for name in tables if name.lower() == wanted.lower()]
            if len(matching) == 1:
                return matching[0]
            session_like = [t for t in tables if _looks_like_sessions(self._columns(t))]
            raise store_error(
                f"{self.where} has no table {self.schema}.{wanted} (session-like tables: "
                f"{', '.join(session_like) or 'none'})"
            )
        return super()._choose_table(wanted)

    def _columns(self, table: str) -> list[str]:
        return [name for name, _ in self._column_types(table).items()]

    def _column_types(self, table: str) -> dict[str, str]:
        rows = self.query(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a"
            " WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped"
            " ORDER BY a.attnum",
            (f"{quote_identifier(self.schema)}.{quote_identifier(table)}",),
        )
        return dict(rows)

    def _primary_columns(self, table: str) -> list[str]:
        rows = self.query(
            "SELECT a.attname FROM pg_index i JOIN LATERAL unnest(i.indkey) WITH ORDINALITY"
            " AS k(attnum, n) ON TRUE JOIN pg_attribute a ON a.attrelid = i.indrelid"
            " AND a.attnum = k.attnum WHERE i.indrelid = %s::regclass AND i.indisprimary"
            " ORDER BY k.n",
            (f"{quote_identifier(self.schema)}.{quote_identifier(table)}",),
        )
        return [name for (name,) in rows]

    def _key_column(self) -> str:
        primary = self._primary_columns(self.table)
        if len(primary) != 1:
            raise store_error(
                f"table {self.schema}.{self.table} has no single-column primary key",
                "sessionctl addresses rows one by one by their primary key",
            )
        return primary[0]

    def cascading_keys(self, table: str) -> list[tuple[str, tuple, tuple]]:
        rows = self.query(
            "SELECT p.relname,"
            " ARRAY(SELECT attname FROM unnest(c.conkey) WITH ORDINALITY k(n, i)"
            "   JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.i),"
            " ARRAY(SELECT attname FROM unnest(c.confkey) WITH ORDINALITY k(n, i)"
            "   JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n ORDER BY k.i)"
            " FROM pg_constraint c JOIN pg_class p ON p.oid = c.confrelid"
            " JOIN pg_namespace ns ON ns.oid = p.relnamespace"
            " WHERE c.contype = 'f' AND c.confdeltype = 'c' AND c.conrelid = %s::regclass"
            " AND ns.nspname = %s",
            (f"{quote_identifier(self.schema)}.{quote_identifier(table)}", self.schema),
        )
        return [(parent, tuple(child), tuple(par)) for parent, child, par in rows]

    def delete_triggers(self) -> list[tuple[str, str]]:
        """(table, trigger) for user DELETE triggers on our table or a table its cascades
        reach (the foreign keys' own triggers are internal and left out)."""
        found = []
        for table in [self.table, *self.cascade_tables()]:
            rows = self.query(
                "SELECT tgname FROM pg_trigger WHERE tgrelid = %s::regclass"
                " AND NOT tgisinternal AND (tgtype & 8) <> 0 ORDER BY tgname",
                (f"{quote_identifier(self.schema)}.{quote_identifier(table)}",),
            )
            found.extend((table, name) for (name,) in rows)
            # A DELETE rule (DO INSTEAD NOTHING keeps rows the report would call removed), a
            # foreign key ON DELETE SET NULL / SET DEFAULT (changes another table's rows), and
            # one ON DELETE CASCADE from a table in another schema (the archive follows
            # cascades within the store's schema only: those rows would go unarchived):
            # like a trigger, each changes what no archive keeps.
            rows = self.query(
                "SELECT 'rule ' || r.rulename FROM pg_rewrite r"
                " WHERE r.ev_class = %s::regclass AND r.ev_type = '4'"
                " UNION ALL SELECT 'foreign key ' || c.conname || ' ON DELETE '"
                " || CASE c.confdeltype WHEN 'n' THEN 'SET NULL' WHEN 'd' THEN 'SET DEFAULT'"
                " ELSE 'CASCADE' END || ' from ' || c.conrelid::regclass::text"
                " FROM pg_constraint c JOIN pg_class child ON child.oid = c.conrelid"
                " JOIN pg_class parent ON parent.oid = c.confrelid"
                " WHERE c.contype = 'f' AND c.confrelid = %s::regclass AND (c.confdeltype IN"
                " ('n', 'd') OR (c.confdeltype = 'c'"
                " AND child.relnamespace <> parent.relnamespace)) ORDER BY 1",
                (f"{quote_identifier(self.schema)}.{quote_identifier(table)}",) * 2,
            )
            found.extend((table, name) for (name,) in rows)
        return found

    def _index_rows(self) -> list[tuple[bool, bool, list[str]]]:
        return [
            (unique, primary, list(names))
            for unique, primary, names in self.query(
                "SELECT i.indisunique, i.indisprimary, ARRAY(SELECT a.attname FROM"
                " unnest(i.indkey) WITH ORDINALITY k(n, o) JOIN pg_attribute a ON"
                " a.attrelid = i.indrelid AND a.attnum = k.n ORDER BY k.o)"
                " FROM pg_index i WHERE i.indrelid = %s::regclass",
                (self.qualified,),
            )
        ]

    def indexed_columns(self) -> set[str]:
        return {names[0].lower() for _, _, names in self._index_rows() if names}

    def index_statement(self, column: str) -> str:
        """What would make the expiry query cheap (sessionctl never runs it)."""
        return f"CREATE INDEX CONCURRENTLY ON {self.qualified} ({quote_identifier(column)})"

    def unique_fields(self) -> set[str]:
        return {names[0] for unique, _, names in self._index_rows() if unique and len(names) == 1}

    # -- reading ---------------------------------------------------------------------------

    def _select(self) -> str:
        parts = [quote_identifier(self.key_column), *self._select_columns()]
        return f"SELECT {', '.join(parts)} FROM {self.qualified}"

    def _select_columns(self) -> list[str]:
        parts = []
        for column in self.columns:
            x = quote_identifier(column)
            if column in self.server_zone_columns():
                # Written in the connection's TimeZone: read as the framework reads it.
                x = f"{x}::timestamptz AS {x}"
            parts.append(x)
        return parts

    def server_zone_columns(self) -> list[str]:
        """Naive timestamp columns the application writes in the connection's TimeZone."""
        return [
            column
            for column, kind in self.column_types.items()
            if "without time zone" in kind
            and kind.startswith("timestamp")
            and (self.table.lower(), column.lower()) in SERVER_ZONE_TABLES
        ]

    def _record(self, row: tuple) -> Record:
        return self.make_record(row[0], row[1:])

    def make_record(self, key, values, suspect: bool = False) -> Record:
        return super().make_record(key, [_json_value(v) for v in values])

    def row_columns(self) -> list[str]:
        return self._select_columns()

    def pushdown(self, mapping, policy, tz, now: float):
        """Counting and selecting in SQL when it can judge exactly as Python would."""
        from .judge import Pushdown, compile_judge

        try:
            compiled, why = compile_judge(self, mapping, policy, tz, now)
        except Unsupported as exc:
            compiled, why = None, str(exc)
        if compiled is None:
            self.no_pushdown_reason = why
            return None
        return Pushdown(self, compiled)

    def iter_records(self) -> Iterator[Record]:
        """Every row in key order through a server-side cursor (one read transaction)."""
        with self.translate_errors("read"):
            conn = self._reader
            with conn.transaction():
                cursor = conn.cursor(name=f"sessionctl_{os.getpid()}")
                cursor.itersize = READ_PAGE
                cursor.execute(f"{self._select()} ORDER BY {self.key_sql}")
                for row in cursor:
                    yield self._record(row)
                cursor.close()

    def sample(self, limit: int = 50) -> tuple[list[str], list[dict]]:
        rows = self.query(f"{self._select()} LIMIT {int(limit)}")
        return list(self.columns), [
            dict(zip(self.columns, (_json_value(v) for v in row[1:]))) for row in rows
        ]

    def find(self, session_id: str, id_path: str | None) -> Record | None:
        if id_path and id_path in self.columns:
            rows = self.query(
                f"{self._select()} WHERE {quote_identifier(id_path)}::text = %s LIMIT 1",
                (session_id,),
            )
            return self._record(rows[0]) if rows else None
        return super().find(session_id, id_path)

    def same_text(self, column: str) -> str:
        # Both as text: an id column of any type (uuid, integers, bytea) against the value.
        return f"{quote_identifier(column)}::text = (%s)::text"

    def count(self) -> int:
        return self.query(f"SELECT COUNT(*) FROM {self.qualified}")[0][0]

    def size_bytes(self) -> int:
        # A partitioned table holds nothing itself: its partitions hold the rows.
        return int(
            self.query(
                "SELECT pg_total_relation_size(%s::regclass) + COALESCE((SELECT"
                " sum(pg_total_relation_size(relid)) FROM pg_partition_tree(%s::regclass)"
                " WHERE relid <> %s::regclass), 0)",
                (self.qualified,) * 3,
            )[0][0]
        )

    def space_note(self, removed: int) -> str | None:
        """After a large cleanup: the dead rows left in the table, and what reclaims them."""
        if removed < LARGE_CLEANUP:
            return None
        try:
            dead = self.dead_rows()
        except SessionctlError:
            dead = None
        counted = max(dead or 0, removed)  # the statistics lag the deletes a little
        return (
            f"{counted} dead rows left in {self.schema}.{self.table}: autovacuum reclaims the "
            f"space for reuse, or run VACUUM (ANALYZE) {self.qualified} now (VACUUM FULL "
            "gives it back to the system but locks the table)"
        )

    def dead_rows(self) -> int | None:
        rows = self.query(
            "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relid = %s::regclass",
            (self.qualified,),
        )
        return rows[0][0] if rows else None

    def describe(self) -> dict:
        naive = [
            c for c, t in self.column_types.items() if "without time zone" in t and "stamp" in t
        ]
        zone = self.server_zone_columns()
        return {
            "kind": self.kind,
            "address": self.address.display,
            "server": self.where_text,
            "schema": self.schema,
            "table": self.table,
            "columns": list(self.columns),
            "column_types": dict(self.column_types),
            "key": self.key_column,
            "server_timezone": self.server_zone,
            "naive_times": [
                f"{c} read in the session TimeZone ({self.server_zone}), as the application "
                "writes it"
                if c in zone
                else f"{c} read as written (the timezone setting applies)"
                for c in naive
            ],
            "indexed_columns": sorted(self.indexed_columns()),
            "cascades_to": self.cascade_tables(),
            "delete_triggers": [f"{name} on {table}" for table, name in self.delete_triggers()],
            "rows": self.count(),
        }

    # -- removing --------------------------------------------------------------------------

    def fingerprint(self, record: Record) -> Any:
        if record.data is None:
            return hash(record.raw)
        return hashlib.sha256(canonical_bytes(record.data)).hexdigest()

    def _fetch(self, conn, keys: list) -> dict[Any, Record]:
        found = {}
        key = self.key_sql
        lock = " FOR UPDATE" if conn is self._writer else ""
        for start in range(0, len(keys), 5000):  # one array parameter: no limit to mind
            chunk = keys[start : start + 5000]
            sql = f"{self._select()} WHERE {key} = ANY(%s) ORDER BY {key}{lock}"
            for row in conn.execute(sql, (chunk,)).fetchall():
                found[row[0]] = self._record(row)
        return found

    def delete_keys(self, conn, keys: list) -> dict:
        conn.execute("SAVEPOINT sessionctl_delete")
        try:
            sql = f"DELETE FROM {self.qualified} WHERE {self.key_sql} = ANY(%s)"
            done = conn.execute(sql, (keys,)).rowcount
            conn.execute("RELEASE SAVEPOINT sessionctl_delete")
            return self._kept(conn, keys) if done < len(keys) else {}
        except self.integrity_errors:
            conn.execute("ROLLBACK TO SAVEPOINT sessionctl_delete")
        failed = {}
        for value in keys:
            conn.execute("SAVEPOINT sessionctl_one")
            try:
                conn.execute(f"DELETE FROM {self.qualified} WHERE {self.key_sql} = %s", (value,))
                conn.execute("RELEASE SAVEPOINT sessionctl_one")
            except self.integrity_errors as exc:
                conn.execute("ROLLBACK TO SAVEPOINT sessionctl_one")
                failed[value] = f"database refused: {self._scrub(exc)}"
        conn.execute("RELEASE SAVEPOINT sessionctl_delete")
        return {**self._kept(conn, [k for k in keys if k not in failed]), **failed}

    def _kept(self, conn, keys: list) -> dict:
        """The rows a DELETE left in place without an error (a row-level security policy
        that hides them from DELETE, a DO INSTEAD rule, a trigger returning NULL): failed,
        not counted removed."""
        sql = f"SELECT {self.key_sql} FROM {self.qualified} WHERE {self.key_sql} = ANY(%s)"
        return {
            key: "the database kept the row (a row-level security policy, a rule or a trigger)"
            for (key,) in conn.execute(sql, (keys,)).fetchall()
        }

    #: The connection holding the run's advisory lock, while one is held.
    _lock_conn = None

    def _check_still_locked(self) -> None:
        """Before a batch: the run's lock is still held. It goes with its connection (killed,
        or cut by idle_session_timeout), and then another run may start: this one stops."""
        conn = self._lock_conn
        if conn is None:
            return
        try:
            conn.execute("SELECT 1")
        except self.psycopg.Error:
            raise busy_error(
                f"{self.where}: the connection holding this run's lock "
                "(pg_try_advisory_lock) was lost, so another run may start; stopped before the "
                "next batch, and what was removed before is archived",
                "run again to finish",
            ) from None

    def remove(self, candidates: list[Candidate], archive: ArchiveFn) -> RemoveOutcome:
        """One short transaction in key order (see `retrying`)."""
        self._check_still_locked()
        candidates = sorted(candidates, key=lambda c: (str(type(c.key)), c.key))
        return self.retrying(lambda: TableStore.remove(self, candidates, archive))

    def retrying(self, batch):
        """A batch that meets a deadlock, a lock timeout or a row updated since it read it is
        rolled back and tried again with backoff, then reported (exit 4)."""
        psycopg = self.psycopg
        retried = (
            psycopg.errors.LockNotAvailable,
            psycopg.errors.DeadlockDetected,
            psycopg.errors.SerializationFailure,
        )
        pause = BACKOFF
        for attempt in range(RETRIES + 1):
            try:
                return batch()
            except retried as exc:
                if attempt == RETRIES:
                    what = {
                        psycopg.errors.DeadlockDetected: "a deadlock",
                        psycopg.errors.SerializationFailure: "rows the application kept updating",
                    }.get(type(exc), "rows the application holds locked")
                    raise busy_error(
                        f"{self.where}: a batch met {what} {RETRIES + 1} times; it stays as it "
                        "was, and what was removed before is archived",
                        "run again later, or lower batch_size",
                    ) from None
                time.sleep(pause)
                pause *= 2
        raise AssertionError("unreachable")

    def _attach_children(self, conn, rows: list[Record]) -> None:
        super()._attach_children(conn, rows)
        for row in rows:
            for table_rows in (row.children or {}).values():
                for child in table_rows:
                    for column, value in list(child.items()):
                        child[column] = _archive_value(value)

    def _insert_row(self, conn, table: str, row: dict) -> None:
        from psycopg.types.json import Json

        known = self._column_types(table)
        target = f"{quote_identifier(self.schema)}.{quote_identifier(table)}"
        # A generated column is computed again; an identity GENERATED ALWAYS is put back as
        # it was (OVERRIDING SYSTEM VALUE); JSON scalars stay JSON; an interval was archived
        # as seconds.
        special = self.query(
            "SELECT attname, attgenerated <> '', attidentity = 'a' FROM pg_attribute"
            " WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
            (target,),
        )
        generated = {name for name, computed, _ in special if computed}
        always = {name for name, _, identity in special if identity}
        names = [name for name in row if name in known and name not in generated]
        values, marks = [], []
        for name in names:
            value = decode_value(row[name])
            mark = "%s"
            if value is not None and known[name] in ("json", "jsonb"):
                value = Json(value)
            elif known[name] == "interval" and isinstance(value, (int, float)):
                value, mark = float(value), "%s * interval '1 second'"
            values.append(value)
            marks.append(mark)
        columns = ",".join(quote_identifier(n) for n in names)
        overriding = " OVERRIDING SYSTEM VALUE" if always & set(names) else ""
        conn.execute(
            f"INSERT INTO {target} ({columns}){overriding} VALUES ({','.join(marks)})", values
        )

    def prepare_restore(self, entry: dict, id_path: str | None, source_kind: str | None):
        record = entry.get("record")
        if not isinstance(record, dict):
            return "the archived session has no row to put back"
        unknown = [name for name in record if name not in self.column_types]
        if unknown and id_path not in self.columns:
            return f"the table has no column {unknown[0]!r}"
        return None

    def cross_host_lock(self, identity: str):
        return _AdvisoryLock(self, identity)


def _percents_quoted(sql: str) -> str:
    """`%` doubled inside quoted names and literals (a table or column may be named
    `50%_off`), so psycopg takes only the bare `%s` as parameters."""
    if "%" not in sql:
        return sql
    out, quote = [], None
    for char in sql:
        if quote is None and char in "\"'":
            quote = char
        elif char == quote:
            quote = None
        out.append("%%" if char == "%" and quote is not None else char)
    return "".join(out)


_CURSOR = None


def _percent_safe_cursor():
    """A cursor class whose positional-parameter queries keep the `%` of quoted names."""
    global _CURSOR
    if _CURSOR is None:
        import psycopg

        class PercentSafeCursor(psycopg.Cursor):
            def execute(self, query, params=None, **kwargs):
                if isinstance(query, str) and params is not None and not isinstance(params, dict):
                    query = _percents_quoted(query)
                return super().execute(query, params, **kwargs)

        _CURSOR = PercentSafeCursor
    return _CURSOR


class UuidText(str):
    """A uuid read as its text (JSON carries it: keys, archives, reports), sent back as a
    uuid (a uuid column compared with text has no operator)."""

    __slots__ = ()


def _uuids_as_text(conn) -> None:
    from psycopg.adapt import Dumper, Loader

    class Load(Loader):
        def load(self, data):
            return UuidText(bytes(data).decode("ascii"))

    class Dump(Dumper):
        oid = conn.adapters.types["uuid"].oid

        def dump(self, obj):
            return str(obj).encode("ascii")

    conn.adapters.register_loader("uuid", Load)
    conn.adapters.register_dumper(UuidText, Dump)


def _lenient_times(conn) -> None:
    """Dates and timestamps Python cannot hold (`infinity`, `-infinity`, years past 9999 or
    BC) read as the text the server wrote, so one such row is that row's problem (the judge
    finds no time in it: invalid, never expired), not the whole store's."""
    from psycopg import DataError
    from psycopg.types import datetime as types

    for name, base in (
        ("date", types.DateLoader),
        ("timestamp", types.TimestampLoader),
        ("timestamptz", types.TimestamptzLoader),
    ):

        class Lenient(base):
            def load(self, data):
                try:
                    return super().load(data)
                except DataError:
                    return bytes(data).decode("utf-8", "replace")

        conn.adapters.register_loader(name, Lenient)


def _archive_value(value):
    from .table import encode_value

    return encode_value(_json_value(value))


class _AdvisoryLock:
    """`pg_try_advisory_lock` on a key from the store's identity, on a connection of its own
    (session-scoped: released when the run ends or its connection goes)."""

    def __init__(self, store: PostgresStore, identity: str):
        self.store = store
        self.identity = identity
        # Advisory locks belong to the database: the key names the table as the server knows
        # it, so every route to it (127.0.0.1, localhost, a socket, another user) meets one lock.
        table = f"{store.database}/{store.schema}.{store.table}"
        digest = hashlib.sha256(f"sessionctl:{table}".encode()).digest()
        self.key = int.from_bytes(digest[:8], "big", signed=True)
        self.conn = None

    def __enter__(self):
        store = self.store
        self.conn = store._connect()
        with store.translate_errors("lock"):
            got = self.conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()[0]
        if got:
            # An idle connection may be cut by the server (PostgreSQL 14+), and the lock with it.
            with contextlib.suppress(self.store.psycopg.Error):
                self.conn.execute("SET idle_session_timeout = 0")
            store._lock_conn = self.conn
        else:
            self.conn.close()
            self.conn = None
            raise busy_error(
                f"another sessionctl run holds the lock on {store.address.display} "
                "(pg_try_advisory_lock, any host)",
                "nothing was changed; try again when it has finished",
            )
        return self

    def __exit__(self, *exc):
        self.store._lock_conn = None
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
            with contextlib.suppress(Exception):
                self.conn.close()
            self.conn = None


_ID_NAMES = {norm_name(n) for n in CANDIDATES["id"]}
_TIME_NAMES = {
    norm_name(n) for role in ("created", "accessed", "expires") for n in CANDIDATES[role]
}


def _looks_like_sessions(columns: list[str]) -> bool:
    normalised = {norm_name(c) for c in columns}
    return bool(normalised & _ID_NAMES) and bool(normalised & _TIME_NAMES)
