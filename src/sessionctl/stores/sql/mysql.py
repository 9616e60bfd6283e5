"""A session table in MySQL or MariaDB, through PyMySQL (pure Python; imported only when such a
store is used).

Addresses: `mysql://USER@HOST:PORT/DB?table=NAME` (or `mariadb://`); a Unix socket as
`?unix_socket=/path` or a percent-encoded host (`%2Frun%2Fmysqld%2Fmysqld.sock`); anything left
out comes from the `[client]` section of `~/.my.cnf`, or of the option file `?option_file=PATH`
names (PyMySQL's read_default_file). A password comes from `password_env` / `password_file`,
the option file, or the address itself (which works, with a warning); it never appears in what
is shown or stored.

The tool's sessions are pinned to UTC (`SET time_zone = '+00:00'`: TIMESTAMP columns read in
UTC; DATETIME columns have no zone and are read as written), use READ COMMITTED (no gap locks)
and ANSI_QUOTES (the neutral layer's "quoted" identifiers), and wait at most
`innodb_lock_wait_timeout` (from `lock_timeout`) for a row lock. Reads stream through an
unbuffered cursor (SSCursor) on a connection of their own. Removal goes batch by batch, each batch
one short transaction: lock the batch's rows in ascending primary-key order (SELECT ... FOR
UPDATE), keep only rows still exactly as selected, archive them with the rows their delete
cascades to, DELETE, COMMIT. A deadlock (1213) or lock wait timeout (1205) rolls the batch back
whole and retries it with backoff; after the last try its sessions are reported as left, and the
run goes on. One run per store across hosts: `GET_LOCK(name, 0)` on a connection of its own;
where the server refuses it (Galera), a lease row in `sessionctl_lock`, a table the tool creates
only when told to (`create_lock_table`).
"""

from __future__ import annotations

import configparser
import contextlib
import datetime as dt
import decimal
import hashlib
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from ...domain.errors import SessionctlError, busy_error, store_error, usage_error
from ...domain.model import Record
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
from .table import (
    BadText,
    TableStore,
    _looks_like_sessions,
    decode_value,
    encode_value,
    quote_identifier,
)

SCHEMES = ("mysql", "mariadb")
PARAMETERS = ("table", "unix_socket", "option_file", "connect_timeout")
INSTALL_HINT = (
    "install the driver: pip install 'sessionctl[mysql]' (or pipx inject sessionctl PyMySQL)"
)
#: Retries of a batch that met a deadlock or a lock wait timeout, and the first pause.
RETRIES = 4
BACKOFF = 0.2
#: Rows per delete transaction at most: far under Galera's write-set limits
#: (wsrep_max_ws_rows / wsrep_max_ws_size), and short enough to hold locks briefly.
MAX_BATCH = 500
#: The lease table, made only when asked (`create_lock_table`), where GET_LOCK is refused.
LOCK_TABLE = "sessionctl_lock"
LEASE_SECONDS = 600
DEADLOCK, LOCK_WAIT_TIMEOUT = 1213, 1205
#: Rows removed from which a cleanup says how the space comes back.
LARGE_CLEANUP = 1000
#: Server errors: access denied, unknown database, unknown table, command denied.
ACCESS_DENIED, BAD_DB, NO_TABLE = 1045, 1049, 1146
DENIED = (1142, 1143, 1044, 1227)
#: SIGNAL in a trigger (or a procedure): SQLSTATE 45000 and the like.
SIGNAL_EXCEPTION = 1644
#: The server runs read-only (--read-only, super_read_only), or InnoDB does (innodb_read_only).
READ_ONLY = (1290, 1836, 1874)
TEXT_TYPES = {"char", "varchar", "tinytext", "text", "mediumtext", "longtext"}


def _pymysql():
    try:
        import pymysql
        import pymysql.cursors
    except ImportError:
        raise store_error(
            "MySQL/MariaDB stores need PyMySQL, which is not installed", INSTALL_HINT
        ) from None
    return pymysql


def parse_mysql_address(text: str) -> Address:
    text = text.strip()
    try:
        url = urlsplit(text)
    except ValueError as exc:  # "Invalid IPv6 URL": an unclosed [
        raise usage_error(f"store {text.split(':')[0]}://...: {exc}") from None
    scheme = url.scheme.lower()
    if scheme not in SCHEMES:
        raise usage_error(f"store {text.split(':')[0]}: is not a MySQL address")
    if "#" in text or "@" in url.path or "@" in url.query:
        # A password with an unencoded / ? # splits the address early: what then looks like a
        # host, port or database is part of the password. Nothing of it is echoed.
        raise usage_error(
            f"store {scheme}://...: a '#' or an '@' after the host (a password's own / ? # @"
            " not percent-encoded?)",
            "percent-encode them (/ is %2F, ? is %3F, # is %23, @ is %40), or better give the"
            " password by password_env, password_file or ~/.my.cnf",
        )
    userinfo = url.netloc.rpartition("@")[0] if "@" in url.netloc else ""
    user, colon, password = userinfo.partition(":")
    hostport = url.netloc.rpartition("@")[2]
    if hostport.startswith("["):
        host, _, rest = hostport[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = hostport.partition(":")
    host = unquote(host)
    if port and not (port.isascii() and port.isdigit() and int(port) <= 65535):
        raise usage_error(f"store {scheme}://{host}:{port}: the port is not a number (0-65535)")
    params: dict[str, str] = {}
    for key, value in parse_qsl(url.query, keep_blank_values=True):
        if key not in PARAMETERS:
            raise usage_error(
                f"store {scheme}://...: unknown parameter {key!r}",
                f"a MySQL address takes {', '.join(PARAMETERS)}",
            )
        if key in params:
            raise usage_error(f"store {scheme}://...: {key}= given twice")
        if not value.strip():
            raise usage_error(f"store {scheme}://...: empty {key}", f"give ?{key}=VALUE")
        params[key] = value
    timeout = params.get("connect_timeout")
    if timeout is not None and not (
        timeout.isascii() and timeout.isdigit() and 1 <= int(timeout) <= 31536000
    ):
        raise usage_error(
            f"store {scheme}://...: connect_timeout={timeout} is not a number of seconds",
            "give ?connect_timeout=SECONDS (1 to 31536000)",
        )
    if host.startswith("/"):
        params.setdefault("unix_socket", host)
    elif host:
        params["host"] = host
    if port:
        params["port"] = port
    if unquote(user):
        params["user"] = unquote(user)
    database = unquote(url.path[1:]) if url.path.startswith("/") else ""
    if database:
        params["database"] = database
    if "option_file" in params:
        params["option_file"] = str(Path(params["option_file"]).expanduser().absolute())
    display = _display(scheme, params)
    return Address(
        kind="mysql",
        display=display,
        identity=_display("mysql", params),
        pinned=display,
        params=tuple(sorted(params.items())),
        secret=unquote(password) if colon else None,
    )


def _display(scheme: str, params: dict[str, str]) -> str:
    """A mysql:// URL of the parameters, never with a password."""
    netloc = quote(params["user"], safe="") + "@" if params.get("user") else ""
    host = params.get("host", "")
    netloc += f"[{host}]" if ":" in host else host
    if params.get("port"):
        netloc += ":" + params["port"]
    query = "&".join(
        f"{key}={params[key]}"
        for key in ("table", "unix_socket", "option_file", "connect_timeout")
        if key in params
    )
    path = "/" + quote(params.get("database", ""), safe="")
    return f"{scheme}://{netloc}{path}" + (f"?{query}" if query else "")


def _option_file(params: dict[str, str]) -> str | None:
    """The option file to read: the one the address names, else ~/.my.cnf when there is one."""
    if params.get("option_file"):
        return params["option_file"]
    default = Path("~/.my.cnf").expanduser()
    return str(default) if default.is_file() else None


def _check_option_file(path: str | None, named: bool) -> None:
    """The option file PyMySQL is to read parses the way PyMySQL reads it; else one line that
    names the file and the line, never a line's text (it may hold a password)."""
    if not path:
        return
    if not Path(path).is_file():
        if named:
            raise store_error(f"option file {path}: no such file (or not a file)")
        return
    from pymysql.optionfile import Parser

    parser = Parser()
    why = None
    try:
        parser.read(path)
    except configparser.MissingSectionHeaderError as exc:
        why = f"line {exc.lineno} comes before any section header such as [client]"
    except configparser.DuplicateOptionError as exc:
        why = (
            f"line {exc.lineno}: {exc.option!r} is given twice in [{exc.section}]"
            " (PyMySQL reads each option once)"
        )
    except configparser.DuplicateSectionError as exc:
        why = f"line {exc.lineno}: [{exc.section}] is given twice"
    except configparser.ParsingError as exc:
        lines = ", ".join(str(lineno) for lineno, _ in exc.errors[:3])
        why = f"line {lines} cannot be read as option = value"
    except configparser.Error as exc:
        why = f"it cannot be parsed ({type(exc).__name__})"
    except UnicodeDecodeError:
        why = "it is not UTF-8 text"
    except OSError as exc:
        why = f"it cannot be read ({exc.strerror or type(exc).__name__})"
    if why is None and parser.has_section("client") and parser.has_option("client", "port"):
        port = configparser.RawConfigParser.get(parser, "client", "port")
        if not (port or "").strip().strip("\"'").isdigit():
            why = "port in [client] is not a number"
    if why:
        raise store_error(f"option file {path}: {why}", "it holds [client] and key = value lines")


#: sql_mode flags the tool's sessions drop: each changes what the tool's SQL means.
_DROPPED_MODES = {
    "NO_BACKSLASH_ESCAPES",
    "EMPTY_STRING_IS_NULL",
    "PIPES_AS_CONCAT",
    "PAD_CHAR_TO_FULL_LENGTH",
    "REAL_AS_FLOAT",
    "IGNORE_SPACE",
    "ORACLE",
    "MSSQL",
    "DB2",
    "POSTGRESQL",
    "MAXDB",
    "ANSI",
    "SIMULTANEOUS_ASSIGNMENT",
}


def _option_password(path: str) -> str | None:
    """The [client] password of an option file, as PyMySQL reads it (quotes removed)."""
    from pymysql.optionfile import Parser

    parser = Parser()
    try:
        parser.read(path)
        if parser.has_option("client", "password"):
            return parser.get("client", "password")
    except (configparser.Error, OSError, UnicodeError, TypeError):
        pass
    return None


def _client_options(path: str | None) -> dict[str, str]:
    """The [client] section of an option file (what PyMySQL reads), for messages."""
    if not path:
        return {}
    parser = configparser.RawConfigParser(allow_no_value=True, strict=False)
    try:
        parser.read(path)
    except (configparser.Error, OSError, UnicodeDecodeError):
        return {}
    if not parser.has_section("client"):
        return {}
    return {k: (v or "").strip().strip("\"'") for k, v in parser.items("client")}


def _json_value(value):
    """A value as the tool's records carry it (JSON-able, exact where it matters)."""
    if value is None or isinstance(value, (str, int, float, bool, bytes)):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return ",".join(sorted(value))
    return str(value)


_INTEGERS = ("tinyint", "smallint", "mediumint", "int", "integer", "bigint")
_NUMBERS = (*_INTEGERS, "decimal")
_TIMES = ("datetime", "timestamp")


class Unsupported(Exception):
    """The SQL judge cannot say what Python would of this store's values."""


class MysqlDialect(Dialect):
    """MySQL/MariaDB for the SQL judge. A column has one type, so each test is decided by the
    column's type when the SQL is written: integer and decimal epochs as doubles, DATETIME and
    TIMESTAMP to the microsecond (the tool's session is UTC), when naive times are UTC. Text
    times, FLOAT/DOUBLE (their text is what Python reads), JSON and dates go to Python."""

    def __init__(self, store: MysqlStore):
        self.store = store
        self.types = {quote_identifier(c): info[0] for c, info in store.column_info.items()}

    def _type(self, x: str) -> str:
        return self.types.get(x, "unknown")

    def numeric_time(self, x: str) -> str:
        if self._type(x) in _NUMBERS:
            return f"{x} >= 0 AND {x} < 1e17"
        return "FALSE"

    def as_float(self, x: str) -> str:
        return f"CAST({x} AS DOUBLE)"

    def other_epoch(self, x: str, utc: bool) -> str | None:
        kind = self._type(x)
        # TIMESTAMP is read in the session's time_zone, UTC: the record says +00:00.
        if kind == "timestamp" or (kind == "datetime" and utc):
            return (
                f" WHEN {x} IS NOT NULL THEN"
                f" TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', {x}) / 1e6"
            )
        return " WHEN FALSE THEN NULL"  # text times, dates: Python reads them

    def is_text(self, x: str) -> str:
        return "TRUE" if self._type(x) in TEXT_TYPES else "FALSE"

    def is_number(self, x: str) -> str:
        kind = self._type(x)
        if kind in ("float", "double"):
            raise Unsupported(f"the column {x} holds floating-point numbers")
        return "TRUE" if kind in _NUMBERS else "FALSE"

    def text_in(self, x: str, literals: str) -> str:
        # The judge's literals double their quotes; MySQL also reads a backslash in them as an
        # escape (`'a\'` is not closed): doubled, every backslash is itself.
        return f"CAST({x} AS BINARY) IN ({literals.replace(chr(92), chr(92) * 2)})"

    def blank(self, x: str) -> str:
        if self._type(x) not in TEXT_TYPES:
            raise Unsupported(f"a rule reads the column {x} as text")
        return f"CAST({x} AS BINARY) = ''"

    def type_test(self, x: str, type_name: str) -> str | None:
        kind = self._type(x)
        if kind not in (*TEXT_TYPES, *_NUMBERS):
            raise Unsupported(f"the column {x} holds values whose type varies for Python")
        if type_name == "string":
            return "TRUE" if kind in TEXT_TYPES else "FALSE"
        if type_name == "integer":
            if kind == "decimal":
                return f"{x} = FLOOR({x})"
            return "TRUE" if kind in _INTEGERS else "FALSE"
        if type_name == "number":
            return "TRUE" if kind in _NUMBERS else "FALSE"
        return "FALSE"

    def text_key(self, x: str) -> str:
        kind = self._type(x)
        if kind in TEXT_TYPES:
            return f"CAST({x} AS BINARY)"
        if kind in _INTEGERS:
            return f"CAST({x} AS CHAR)"
        raise Unsupported(f"the column {x} is not text or integers")

    def group_value(self, x: str) -> str:
        return f"MIN({x})"

    def holds_reals(self, store, column: str) -> bool:
        return self._type(quote_identifier(column)) not in (*TEXT_TYPES, *_INTEGERS)

    def unique_ids_only(self) -> bool:
        return True

    def outer_order(self) -> str:
        # MariaDB merges the inner query and drops its ORDER BY: paging needs it here, where
        # the primary key gives it without a sort.
        return " ORDER BY _k"


def _percents_quoted(sql: str) -> str:
    """`%` doubled inside quoted names and literals (a table may be named `sess%s`), so
    PyMySQL's `%` formatting of a query with parameters takes only the bare `%s`."""
    if "%" not in sql:
        return sql
    out, quote, escaped = [], None, False
    for char in sql:
        if escaped:
            escaped = False
        elif quote == "'" and char == "\\":
            escaped = True
        elif quote is None and char in "\"'`":
            quote = char
        elif char == quote:
            quote = None
        out.append("%%" if char == "%" and quote is not None else char)
    return "".join(out)


class _Conn:
    """A PyMySQL connection with the `execute(sql, params) -> cursor` the neutral layer uses."""

    def __init__(self, raw):
        self.raw = raw

    #: On a table without transactions: SAVEPOINT, RELEASE and ROLLBACK TO are skipped.
    no_savepoints = False

    def execute(self, sql: str, params=None):
        cursor = self.raw.cursor()
        if self.no_savepoints and sql.startswith(
            ("SAVEPOINT ", "RELEASE SAVEPOINT ", "ROLLBACK TO ")
        ):
            return cursor
        if params is not None:
            sql = _percents_quoted(sql)
        try:
            cursor.execute(sql, None if params is None else tuple(params))
        except Exception as exc:
            # A DELETE trigger's SIGNAL refuses that row, as a foreign key does: the row fails,
            # the others of its batch go (the neutral layer retries them one by one).
            args = getattr(exc, "args", ())
            if sql.startswith("DELETE ") and args and args[0] == SIGNAL_EXCEPTION:
                import pymysql

                raise pymysql.err.IntegrityError(*args) from None
            raise
        return cursor

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.raw.close()


class MysqlStore(TableStore):
    kind = "mysql"
    schemes = SCHEMES
    shape = "table"
    mark = "%s"
    text_bytes_mark = "%s"
    table_hint = "mysql://...?table=NAME"
    natural_batch = MAX_BATCH
    max_batch = MAX_BATCH
    #: The judge's batch read does not lock (READ COMMITTED): lock the rows, judge them again.
    lock_then_recheck = True

    @classmethod
    def parse_address(cls, text: str) -> Address:
        return parse_mysql_address(text)

    def __init__(self, address: Address, settings: StoreSettings | None = None):
        super().__init__(address, settings)
        self.pymysql = _pymysql()
        params = dict(address.params)
        self.option_file = _option_file(params)
        _check_option_file(self.option_file, named="option_file" in params)
        options = _client_options(self.option_file)
        self.database = params.get("database") or options.get("database") or None
        socket_path = params.get("unix_socket") or (
            options.get("socket") if not params.get("host") else None
        )
        if socket_path:
            place = socket_path
        else:
            host = params.get("host") or options.get("host") or "localhost"
            place = f"{host}:{params.get('port') or options.get('port') or 3306}"
        self.where_text = f"{place}/{self.database or ''}"
        self._password = self._find_password(address)
        if not self.database:
            raise usage_error(
                f"store {address.display}: no database named",
                "give one in the address: mysql://USER@HOST:PORT/DB?table=NAME",
            )
        self.integrity_errors = (self.pymysql.err.IntegrityError,)
        self._reader = self._connect()
        self._writer = None
        self._write_checked = False
        #: Deadlocks (1213) and lock wait timeouts (1205) met and retried, by error code.
        self.retried: dict[int, int] = {}
        self.table = self._choose_table(params.get("table"))
        self.column_info = self._column_info(self.table)
        self.columns = list(self.column_info)
        self.column_types = {c: info[1] for c, info in self.column_info.items()}
        self.key_column = self._key_column()
        self._children = self._cascade_children()
        self.dialect = MysqlDialect(self)
        version = self.query("SELECT VERSION()")[0][0]
        self.server_version = str(version)
        host, port = self._reader.raw.host_info, None
        with contextlib.suppress(Exception):
            host, port = self._reader.raw.host, self._reader.raw.port
        server = socket_path if socket_path else f"{host}:{port}"
        self.address = replace(
            address, identity=f"mysql://{server}/{self.database}?table={self.table}"
        )

    # -- connections and errors ------------------------------------------------------------

    def _find_password(self, address: Address) -> str | None:
        # None: the option file's, or none.
        return configured_password(self.settings, address, "~/.my.cnf")

    @property
    def where(self) -> str:
        return f"MySQL at {self.where_text}"

    @property
    def lock_wait_timeout(self) -> int:
        return max(1, int(round(getattr(self.settings, "lock_timeout", 2.0) or 2.0)))

    def _connect(self, streaming: bool = False) -> _Conn:
        params = dict(self.address.params)
        args: dict[str, Any] = {
            "charset": "utf8mb4",
            "autocommit": True,
            "connect_timeout": int(params.get("connect_timeout", 10)),
            "program_name": "sessionctl",
        }
        if self.option_file:
            args["read_default_file"] = self.option_file
        for ours, theirs in (
            ("host", "host"),
            ("user", "user"),
            ("database", "database"),
            ("unix_socket", "unix_socket"),
        ):
            if params.get(ours):
                args[theirs] = params[ours]
        if params.get("port"):
            args["port"] = int(params["port"])
        if self.database:
            args["database"] = self.database
        password = self._password
        if password is None and self.option_file:
            password = _option_password(self.option_file)
        if password is not None:
            # As UTF-8 bytes, as the mysql client sends them (PyMySQL would encode a str as
            # latin-1: 'é' then fails to log in, and '€' raised an error quoting it).
            args["password"] = password.encode("utf-8", "surrogateescape")
        if streaming:
            args["cursorclass"] = self.pymysql.cursors.SSCursor
        # Pinned for every connection of the tool: UTC, ANSI quotes, no gap locks, short waits.
        with self.translate_errors("connect to"):
            try:
                raw = self.pymysql.connect(**args)
            except TypeError:  # an older PyMySQL without program_name
                args.pop("program_name", None)
                raw = self.pymysql.connect(**args)
            conn = _Conn(raw)
            server_mode = conn.execute("SELECT @@SESSION.sql_mode").fetchone()[0] or ""
            if isinstance(server_mode, bytes):
                server_mode = server_mode.decode("ascii", "replace")
            # The server's strictness is kept; modes that change what SQL means are not: ANSI
            # quotes for names, backslashes escaping in literals (the judge's literals and the
            # quoting here count on it), '' not NULL, CHAR values as stored.
            modes = [m for m in server_mode.split(",") if m and m.upper() not in _DROPPED_MODES]
            conn.execute(
                "SET time_zone = '+00:00', sql_mode = %s,"
                f" innodb_lock_wait_timeout = {self.lock_wait_timeout},"
                # Table and metadata locks too (LOCK TABLES, an ALTER waiting): not a day.
                f" lock_wait_timeout = {self.lock_wait_timeout},"
                # Idle while hooks run or the other connection streams a large table: a
                # server's short wait_timeout (a minute on some) would cut it mid-run.
                " wait_timeout = GREATEST(@@SESSION.wait_timeout, 86400)",
                (",".join([*modes, "ANSI_QUOTES"]),),
            )
            conn.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        return conn

    def _scrub(self, text: str) -> str:
        text = " ".join(str(text).split())
        for secret in (self._password, self.address.secret):
            if secret:
                text = text.replace(secret, "***")
        return text

    @staticmethod
    def error_code(exc: BaseException) -> int | None:
        args = getattr(exc, "args", ())
        return args[0] if args and isinstance(args[0], int) else None

    def is_retryable(self, exc: BaseException) -> bool:
        return isinstance(exc, self.pymysql.err.MySQLError) and self.error_code(exc) in (
            DEADLOCK,
            LOCK_WAIT_TIMEOUT,
        )

    @contextlib.contextmanager
    def translate_errors(self, doing: str):
        pymysql = self.pymysql
        try:
            yield
        except SessionctlError:
            raise
        except pymysql.err.MySQLError as exc:
            if self.is_retryable(exc):
                if self._in_retry:
                    raise  # the batch is rolled back and tried again (`retrying`)
                # Outside a batch: a table lock (LOCK TABLES) or a metadata lock (an ALTER
                # waiting behind a long transaction) held longer than lock_wait_timeout.
                raise busy_error(
                    f"cannot {doing} {self.where}: {self.table} stayed locked by another"
                    f" session for {self.lock_wait_timeout}s (LOCK TABLES, or DDL waiting);"
                    " nothing more was changed",
                    "try again later",
                ) from None
            raise store_error(f"cannot {doing} {self.where}: {self._reason(exc)}") from None
        except OSError as exc:
            raise store_error(f"cannot {doing} {self.where}: {self._scrub(exc)}") from None

    def _reason(self, exc) -> str:
        code = self.error_code(exc)
        message = self._scrub(exc.args[1] if len(exc.args) > 1 else exc)
        if code == ACCESS_DENIED:
            return "access denied (wrong password or user, or no password given)"
        if code == BAD_DB:
            return f"database {self.database!r} does not exist"
        if code in (2003, 2002):
            return "the server is not answering (connection refused or no such socket)"
        if code in (2006, 2013):
            return "the server closed the connection"
        if code in DENIED:
            return f"permission denied ({message})"
        return message

    def close(self) -> None:
        for conn in (self._reader, self._writer):
            if conn is not None:
                conn.close()

    def query(self, sql: str, params=()) -> list[tuple]:
        with self.translate_errors("read"):
            return self.fetch_rows(self._reader, sql, params)

    def fetch_rows(self, conn, sql: str, params=()) -> list[tuple]:
        if isinstance(params, dict):  # the judge's `:name` parameters
            cursor = conn.raw.cursor()
            cursor.execute(named_parameters(sql, backslash_escapes=True), params)
            # SUM() answers DECIMAL here: counts as the ints they are.
            return [
                tuple(_json_value(v) if isinstance(v, decimal.Decimal) else v for v in row)
                for row in cursor.fetchall()
            ]
        return list(conn.execute(sql, list(params) if params else None).fetchall())

    #: The run's cross-host lock, while one is held (checked before each batch).
    _held_lock = None
    #: Inside `retrying`: a deadlock or lock wait timeout goes to it, to be tried again.
    _in_retry = 0

    def _check_still_locked(self) -> None:
        """Before a batch: the run's lock is still held. GET_LOCK goes with its connection
        (killed, or cut by the server), and then another run may start: this one stops."""
        lock = self._held_lock
        if lock is None or lock.still_held():
            return
        raise busy_error(
            f"{self.where}: the connection holding this run's lock was lost, so another run may "
            "start; stopped before the next batch, and what was removed before is archived",
            "run again to finish",
        )

    def retrying(self, batch):
        """A batch (one transaction) that meets a deadlock or a lock wait timeout is rolled
        back and tried again with backoff; after the last try the run stops (exit 4), with
        every batch before it removed and archived, and nothing of this one."""
        pause = BACKOFF
        for attempt in range(RETRIES + 1):
            self._check_still_locked()
            self._in_retry += 1
            try:
                return batch()
            except self.pymysql.err.MySQLError as exc:
                if not self.is_retryable(exc):
                    raise
                code = self.error_code(exc)
                self.retried[code] = self.retried.get(code, 0) + 1
                if attempt == RETRIES:
                    what = "a deadlock" if code == DEADLOCK else "rows the application held locked"
                    raise busy_error(
                        f"{self.where}: a batch met {what} {RETRIES + 1} times; it stays as it "
                        "was, and what was removed before is archived",
                        "run again later, or lower batch_size",
                    ) from None
                time.sleep(pause)
                pause *= 2
            finally:
                self._in_retry -= 1
        raise AssertionError("unreachable")

    def key_among(self, name: str) -> str:
        """SQL: the row's key is in the list parameter `name` (PyMySQL writes it as a list)."""
        return f"{self.key_sql} IN :{name}"

    def lock_rows(self, conn, keys: list) -> dict:
        """Lock the rows in ascending key order, reading them whole as they are now (what the
        archive gets: no second read)."""
        return self._fetch(conn, keys)

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

    def _writer_conn(self):
        if self._writer is None:
            self._check_writable()
            self._writer = self._connect()
            # Aria refuses SAVEPOINT, MyISAM ignores it: neither can undo a statement.
            self._writer.no_savepoints = not self.transactional
        return self._writer

    def _check_writable(self) -> None:
        """Before anything is archived: whether the server lets this user DELETE from the
        table (a DELETE matching no row is checked for privileges, and changes nothing)."""
        if self._write_checked:
            return
        conn = self._connect()
        try:
            with self.translate_errors("check"):
                try:
                    conn.execute(f"DELETE FROM {self.qualified} WHERE 1 = 0")
                except self.pymysql.err.MySQLError as exc:
                    if self.error_code(exc) in READ_ONLY:
                        raise store_error(
                            f"MySQL at {self.where_text} is read-only (read_only,"
                            " super_read_only or innodb_read_only: a replica?); nothing was"
                            " changed",
                            "run the cleanup against the primary",
                        ) from None
                    if self.error_code(exc) in DENIED:
                        raise store_error(
                            f"no DELETE privilege on {self.table} at {self.where_text}; "
                            "nothing was changed",
                            f"GRANT SELECT, DELETE ON {self.database}.{self.table} TO the "
                            "tool's user",
                        ) from None
                    raise
        finally:
            conn.close()
        self._write_checked = True

    @property
    def transactional(self) -> bool:
        """Whether the table's engine has transactions (InnoDB: yes; MyISAM, Aria, MEMORY: no,
        and SELECT ... FOR UPDATE locks nothing there)."""
        if "_transactional" not in self.__dict__:
            rows = self.query(
                "SELECT e.ENGINE, e.TRANSACTIONS FROM information_schema.TABLES t JOIN"
                " information_schema.ENGINES e ON e.ENGINE = t.ENGINE WHERE"
                " t.TABLE_SCHEMA = DATABASE() AND t.TABLE_NAME = %s",
                (self.table,),
            )
            self.engine = str(rows[0][0]) if rows else "unknown"
            self._transactional = not rows or str(rows[0][1]).upper() == "YES"
        return self._transactional

    def begin_write(self, conn) -> None:
        if not self.transactional:
            # No row locks: the table itself is locked while a batch reads, compares, archives
            # and deletes, so an application's write lands before the batch reads the row or
            # after it is gone, never between (a session it just renewed is not removed).
            conn.execute("SET autocommit = 0")
            conn.execute(f"LOCK TABLES {self.qualified} WRITE")
        else:
            conn.execute("START TRANSACTION")

    def begin_read(self, conn) -> None:
        conn.execute("START TRANSACTION")

    def commit(self, conn) -> None:
        conn.execute("COMMIT")
        if not self.transactional:
            conn.execute("UNLOCK TABLES")
            conn.execute("SET autocommit = 1")

    def rollback(self, conn) -> None:
        with contextlib.suppress(Exception):
            conn.execute("ROLLBACK")
        if not self.transactional:
            with contextlib.suppress(Exception):
                conn.execute("UNLOCK TABLES")
                conn.execute("SET autocommit = 1")

    # -- schema ----------------------------------------------------------------------------

    @property
    def qualified(self) -> str:
        return quote_identifier(self.table)

    def tables(self) -> list[str]:
        rows = self.query(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()"
            " AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME"
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
                f"{self.where} has no table {wanted!r} (session-like tables: "
                f"{', '.join(session_like) or 'none'})"
            )
        return super()._choose_table(wanted)

    def _column_info(self, table: str) -> dict[str, tuple[str, str, str | None]]:
        """{column: (DATA_TYPE, COLUMN_TYPE, CHARACTER_SET_NAME)} in column order."""
        cache = self.__dict__.setdefault("_column_cache", {})
        if table not in cache:
            rows = self.query(
                "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, CHARACTER_SET_NAME"
                " FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE()"
                " AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION",
                (table,),
            )
            cache[table] = {
                name: (str(kind).lower(), str(full).lower(), charset)
                for name, kind, full, charset in rows
            }
        return cache[table]

    def _columns(self, table: str) -> list[str]:
        return list(self._column_info(table))

    def _primary_columns(self, table: str) -> list[str]:
        rows = self.query(
            "SELECT COLUMN_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA ="
            " DATABASE() AND TABLE_NAME = %s AND INDEX_NAME = 'PRIMARY' ORDER BY SEQ_IN_INDEX",
            (table,),
        )
        return [name for (name,) in rows]

    def _key_column(self) -> str:
        primary = self._primary_columns(self.table)
        if len(primary) != 1:
            raise store_error(
                f"table {self.table} at {self.where_text} has no single-column primary key",
                "sessionctl addresses rows one by one by their primary key",
            )
        return primary[0]

    def cascading_keys(self, table: str) -> list[tuple[str, tuple, tuple]]:
        rows = self.query(
            "SELECT k.CONSTRAINT_NAME, k.REFERENCED_TABLE_NAME, k.COLUMN_NAME,"
            " k.REFERENCED_COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE k"
            " JOIN information_schema.REFERENTIAL_CONSTRAINTS r"
            " ON r.CONSTRAINT_SCHEMA = k.CONSTRAINT_SCHEMA"
            " AND r.CONSTRAINT_NAME = k.CONSTRAINT_NAME AND r.TABLE_NAME = k.TABLE_NAME"
            " WHERE k.TABLE_SCHEMA = DATABASE() AND k.TABLE_NAME = %s"
            " AND k.REFERENCED_TABLE_SCHEMA = DATABASE() AND r.DELETE_RULE = 'CASCADE'"
            " ORDER BY k.CONSTRAINT_NAME, k.ORDINAL_POSITION",
            (table,),
        )
        keys: dict[str, tuple[str, list, list]] = {}
        for name, parent, child_column, parent_column in rows:
            entry = keys.setdefault(name, (parent, [], []))
            entry[1].append(child_column)
            entry[2].append(parent_column)
        return [(parent, tuple(c), tuple(p)) for parent, c, p in keys.values()]

    def child_rows_sql(
        self, parent: str, parent_columns: tuple, child: str, child_columns: tuple, key: list
    ) -> tuple[str, list]:
        # Locked: the rows the delete's cascade removes are the tool's before anything is
        # archived, so the DELETE itself waits on nobody.
        sql, params = super().child_rows_sql(parent, parent_columns, child, child_columns, key)
        return sql + " FOR UPDATE", params

    def delete_triggers(self) -> list[tuple[str, str]]:
        found = []
        for table in [self.table, *self.cascade_tables()]:
            rows = self.query(
                "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE"
                " EVENT_OBJECT_SCHEMA = DATABASE() AND EVENT_OBJECT_TABLE = %s"
                " AND EVENT_MANIPULATION = 'DELETE' ORDER BY TRIGGER_NAME",
                (table,),
            )
            found.extend((table, name) for (name,) in rows)
        return found

    def set_null_references(self) -> list[str]:
        """Foreign keys ON DELETE SET NULL / SET DEFAULT to the table or its cascade tables:
        a delete changes those rows, which no archive keeps (restore leaves them unlinked)."""
        found = []
        for table in [self.table, *self.cascade_tables()]:
            rows = self.query(
                "SELECT TABLE_NAME, CONSTRAINT_NAME, DELETE_RULE FROM"
                " information_schema.REFERENTIAL_CONSTRAINTS WHERE CONSTRAINT_SCHEMA ="
                " DATABASE() AND REFERENCED_TABLE_NAME = %s"
                " AND DELETE_RULE IN ('SET NULL', 'SET DEFAULT') ORDER BY 1, 2",
                (table,),
            )
            found.extend(f"{child}.{name} ({rule}, not archived)" for child, name, rule in rows)
        return found

    def _index_rows(self) -> list[tuple[bool, list[str]]]:
        rows = self.query(
            "SELECT INDEX_NAME, NON_UNIQUE, COLUMN_NAME FROM information_schema.STATISTICS"
            " WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s"
            " ORDER BY INDEX_NAME, SEQ_IN_INDEX",
            (self.table,),
        )
        found: dict[str, tuple[bool, list[str]]] = {}
        for name, non_unique, column in rows:
            found.setdefault(name, (not int(non_unique), []))[1].append(column)
        return list(found.values())

    def indexed_columns(self) -> set[str]:
        return {names[0].lower() for _, names in self._index_rows() if names}

    def index_statement(self, column: str) -> str:
        """What would make the expiry query cheap (sessionctl never runs it): online DDL."""
        name = f"{self.table}_{column}_idx"[:64].replace("`", "")
        return (
            f"CREATE INDEX `{name}` ON `{self.table.replace('`', '``')}`"
            f" (`{column.replace('`', '``')}`) ALGORITHM=INPLACE LOCK=NONE"
        )

    def unique_fields(self) -> set[str]:
        return {names[0] for unique, names in self._index_rows() if unique and len(names) == 1}

    # -- reading ---------------------------------------------------------------------------

    def _is_utf8_text(self, column: str) -> bool:
        kind, _, charset = self.column_info.get(column, ("", "", None))
        return kind in TEXT_TYPES and str(charset or "").startswith("utf8")

    def row_columns(self) -> list[str]:
        parts = []
        for column in self.columns:
            x = quote_identifier(column)
            # Text as its stored bytes, decoded here: one row whose bytes are not UTF-8 is
            # one invalid session, not a read that fails for the whole store.
            parts.append(f"CAST({x} AS BINARY) AS {x}" if self._is_utf8_text(column) else x)
        return parts

    def _select(self) -> str:
        parts = [quote_identifier(self.key_column), *self.row_columns()]
        return f"SELECT {', '.join(parts)} FROM {self.qualified}"

    def _record(self, row: tuple) -> Record:
        key = row[0]
        if isinstance(key, (bytes, bytearray)) and self._is_utf8_text(self.key_column):
            key = bytes(key).decode("utf-8", "surrogateescape")
        return self.make_record(key, row[1:])

    def make_record(self, key, values, suspect: bool = False) -> Record:
        decoded, suspect = [], False
        for column, value in zip(self.columns, values):
            if isinstance(value, (bytes, bytearray)) and self._is_utf8_text(column):
                try:
                    value = bytes(value).decode("utf-8")
                except UnicodeDecodeError:
                    value, suspect = BadText(value), True
            elif isinstance(value, dt.datetime) and self.column_info[column][0] == "timestamp":
                # Read in the tool's session time_zone, which is UTC.
                value = value.replace(tzinfo=dt.UTC).isoformat(sep=" ")
            else:
                value = _json_value(value)
            decoded.append(value)
        return super().make_record(key, decoded, suspect)

    def iter_records(self) -> Iterator[Record]:
        """Every row in key order through an unbuffered cursor, on a connection of its own
        (one consistent read: no row lock taken, the application writes on)."""
        conn = self._connect(streaming=True)
        try:
            with self.translate_errors("read"):
                conn.execute("SET SESSION net_write_timeout = 3600")
                conn.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
                cursor = conn.raw.cursor()
                cursor.execute(f"{self._select()} ORDER BY {self.key_sql}")
                while True:
                    rows = cursor.fetchmany(1000)
                    if not rows:
                        break
                    for row in rows:
                        yield self._record(row)
        finally:
            conn.close()

    def sample(self, limit: int = 50) -> tuple[list[str], list[dict]]:
        rows = self.query(f"{self._select()} LIMIT {int(limit)}")
        return list(self.columns), [self._record(row).data or {} for row in rows]

    def same_text(self, column: str) -> str:
        return f"CAST({quote_identifier(column)} AS BINARY) = CAST(%s AS BINARY)"

    def find(self, session_id: str, id_path: str | None) -> Record | None:
        if id_path and id_path in self.columns:
            x = quote_identifier(id_path)
            rows = self.query(
                f"{self._select()} WHERE {x} = %s AND CAST({x} AS BINARY) = CAST(%s AS BINARY)"
                " LIMIT 1",
                (session_id, session_id),
            )
            return self._record(rows[0]) if rows else None
        return super().find(session_id, id_path)

    def count(self) -> int:
        return self.query(f"SELECT COUNT(*) FROM {self.qualified}")[0][0]

    def size_bytes(self) -> int:
        rows = self.query(
            "SELECT COALESCE(DATA_LENGTH, 0) + COALESCE(INDEX_LENGTH, 0) FROM"
            " information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s",
            (self.table,),
        )
        return int(rows[0][0]) if rows else 0

    def space_note(self, removed: int) -> str | None:
        """After a large cleanup: InnoDB keeps the freed pages for the table's new rows."""
        if removed < LARGE_CLEANUP:
            return None
        try:
            free = self.query(
                "SELECT DATA_FREE FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()"
                " AND TABLE_NAME = %s",
                (self.table,),
            )
        except SessionctlError:
            free = []
        size = f" ({int(free[0][0]) / 1e6:.1f} MB free in it now)" if free and free[0][0] else ""
        return (
            f"InnoDB keeps the space of the {removed} removed rows for {self.table}'s new rows"
            f"{size}; OPTIMIZE TABLE `{self.table.replace('`', '``')}` gives it back to the "
            "file system (it rebuilds the table)"
        )

    def time_notes(self) -> list[str]:
        """How each time column is read (for --explain)."""
        out = []
        for column, (kind, full, _) in self.column_info.items():
            if kind == "datetime":
                out.append(f"{column} {full}: no zone, read as written (UTC for Django/Rails)")
            elif kind == "timestamp":
                out.append(f"{column} {full}: read in the tool's session time_zone, pinned to UTC")
        return out

    def describe(self) -> dict:
        return {
            "kind": self.kind,
            "address": self.address.display,
            "server": f"{self.where_text} ({self.server_version})",
            "table": self.table,
            "columns": list(self.columns),
            "column_types": {c: info[1] for c, info in self.column_info.items()},
            "key": self.key_column,
            "session_time_zone": "+00:00 (pinned)",
            "time_columns": self.time_notes(),
            "engine": self.engine
            if self.transactional
            else f"{self.engine} (no transactions: each batch holds the table locked)",
            "innodb_lock_wait_timeout": f"{self.lock_wait_timeout}s",
            "indexed_columns": sorted(self.indexed_columns()),
            "cascades_to": self.cascade_tables(),
            "delete_triggers": [f"{name} on {table}" for table, name in self.delete_triggers()],
            "set_null_on_delete": self.set_null_references(),
            "rows": self.count(),
        }

    def notes(self) -> list[str]:
        return self.time_notes()

    # -- removing --------------------------------------------------------------------------

    def fingerprint(self, record: Record) -> Any:
        if record.data is None:
            return hash(record.raw)
        return hashlib.sha256(canonical_bytes(record.data)).hexdigest()

    def _fetch(self, conn, keys: list) -> dict[Any, Record]:
        """The rows with these keys; on the write connection locked, in ascending key order
        (every batch takes its locks in one order)."""
        found = {}
        key = self.key_sql
        lock = " FOR UPDATE" if conn is self._writer else ""
        for start in range(0, len(keys), MAX_BATCH):
            chunk = sorted(keys[start : start + MAX_BATCH], key=_order)
            marks = ",".join(["%s"] * len(chunk))
            sql = f"{self._select()} WHERE {key} IN ({marks}) ORDER BY {key}{lock}"
            for row in conn.execute(sql, chunk).fetchall():
                record = self._record(row)
                found[record.key] = record
        return found

    def delete_keys(self, conn, keys: list) -> dict:
        if self.transactional:
            return super().delete_keys(conn, keys)
        # MyISAM, Aria, MEMORY: no savepoints (Aria refuses them), no foreign keys; the batch
        # holds the table locked (begin_write). A row a trigger refuses stays, the others go.
        table, key = self.qualified, self.key_sql
        failed: dict = {}
        for value in keys:
            try:
                conn.execute(f"DELETE FROM {table} WHERE {key} = %s", (value,))
            except self.integrity_errors as exc:
                failed[value] = f"database refused: {self.refusal(exc)}"
        return failed

    def remove(self, candidates: list[Candidate], archive: ArchiveFn) -> RemoveOutcome:
        """Transactions of at most MAX_BATCH rows, each locking its rows in ascending key
        order before archiving them (see `retrying` for deadlocks and lock wait timeouts)."""
        candidates = sorted(candidates, key=lambda c: _order(c.key))
        outcome = RemoveOutcome()
        for start in range(0, len(candidates), MAX_BATCH):
            part = candidates[start : start + MAX_BATCH]
            done = self.retrying(lambda part=part: TableStore.remove(self, part, archive))
            outcome.removed += done.removed
            outcome.changed += done.changed
            outcome.failed.update(done.failed)
        return outcome

    def _attach_children(self, conn, rows: list[Record]) -> None:
        super()._attach_children(conn, rows)
        for row in rows:
            for table_rows in (row.children or {}).values():
                for child in table_rows:
                    for column, value in list(child.items()):
                        if not isinstance(value, dict):
                            child[column] = encode_value(_json_value(value))

    def _insert_row(self, conn, table: str, row: dict) -> None:
        info = self._column_info(table)
        generated = self.generated_columns(table)
        names = [name for name in row if name in info and name not in generated]
        values = []
        for name in names:
            value = decode_value(row[name])
            if type(value) is BadText:  # noqa: E721
                value = bytes(value)
            elif info[name][0] == "timestamp" and isinstance(value, str):
                value = value.removesuffix("+00:00")  # read in UTC; written in UTC
            elif info[name][0] == "time" and isinstance(value, (int, float)):
                value = _time_text(value)  # archived as seconds; a number is HHMMSS to MySQL
            elif isinstance(value, (dict, list)):
                import json

                value = json.dumps(value, ensure_ascii=False)
            values.append(value)
        columns = ",".join(quote_identifier(n) for n in names)
        marks = ",".join(["%s"] * len(names))
        conn.execute(f"INSERT INTO {quote_identifier(table)} ({columns}) VALUES ({marks})", values)

    def generated_columns(self, table: str) -> set[str]:
        """VIRTUAL and STORED generated columns: read with the row, never named in an INSERT
        (strict mode refuses a value for one)."""
        rows = self.query(
            "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE()"
            " AND TABLE_NAME = %s AND (EXTRA LIKE '%GENERATED%' OR GENERATION_EXPRESSION"
            " IS NOT NULL AND GENERATION_EXPRESSION <> '')",
            (table,),
        )
        return {name for (name,) in rows}

    def prepare_restore(self, entry: dict, id_path: str | None, source_kind: str | None):
        record = entry.get("record")
        if not isinstance(record, dict):
            if isinstance(entry.get("raw_b64"), str):
                return None
            return "the archived session has no row to put back"
        unknown = [name for name in record if name not in self.column_info]
        if unknown and id_path not in self.columns:
            return f"the table has no column {unknown[0]!r}"
        return None

    @property
    def lock_key(self) -> str:
        """What the run's lock is named from: the database and table as the server knows them
        (not the route: a host spelling, a socket, a Galera node or the user)."""
        rows = self.query(
            "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = DATABASE()"
        )
        return f"{rows[0][0] if rows else self.database}/{self.table}"

    def cross_host_lock(self, identity: str):
        return _ServerLock(self, identity)


def _time_text(seconds: float) -> str:
    """A TIME value archived as seconds, as the text MySQL reads back exactly."""
    sign = "-" if seconds < 0 else ""
    micros = round(abs(seconds) * 1_000_000)
    whole, fraction = divmod(micros, 1_000_000)
    hours, rest = divmod(whole, 3600)
    return f"{sign}{hours:02d}:{rest // 60:02d}:{rest % 60:02d}.{fraction:06d}"


def _order(key):
    return (str(type(key)), key)


def lock_name(identity: str) -> str:
    """GET_LOCK's name for a store: at most 64 characters, the same from every host."""
    return "sessionctl:" + hashlib.sha256(identity.encode()).hexdigest()[:48]


class _ServerLock:
    """`GET_LOCK(name, 0)` on a connection of its own (session-scoped: released when the run
    ends or its connection goes). Where the server refuses GET_LOCK (a Galera cluster), a lease
    row in `sessionctl_lock`, when that table exists or `create_lock_table` allows making it;
    otherwise one line says that runs on other hosts are not kept out."""

    def __init__(self, store: MysqlStore, identity: str):
        self.store = store
        # GET_LOCK's names belong to the server: the name says the table as the server knows
        # it, so every route to it (127.0.0.1, localhost, a socket, another user) meets one lock.
        self.name = lock_name(store.lock_key)
        self.conn: _Conn | None = None
        self.lease: _Lease | None = None

    def _busy(self, how: str):
        return busy_error(
            f"another sessionctl run holds the lock on {self.store.address.display} ({how},"
            " any host)",
            "nothing was changed; try again when it has finished",
        )

    def __enter__(self):
        store = self.store
        self.conn = store._connect()
        try:
            got = self.conn.execute("SELECT GET_LOCK(%s, 0)", (self.name,)).fetchone()[0]
        except store.pymysql.err.MySQLError as exc:
            got = None
            refusal = store._scrub(exc.args[-1] if exc.args else exc)
        else:
            refusal = "GET_LOCK answered NULL"
        if got == 1:
            self._hold()
            return self
        if got == 0:
            self.conn.close()
            self.conn = None
            raise self._busy("GET_LOCK")
        self.lease = _Lease(store, self.conn, self.name)
        if not self.lease.available():
            self.lease = None
            print(
                f"sessionctl: warning: {store.where} refuses GET_LOCK ({refusal}); runs on "
                f"other hosts are not kept out (--create-lock-table, or create_lock_table = "
                f"true, makes a lease table {LOCK_TABLE} for that)",
                file=sys.stderr,
            )
            return self
        if not self.lease.take():
            self.lease = None
            self.conn.close()
            self.conn = None
            raise self._busy(f"lease row in {LOCK_TABLE}")
        self._hold()
        return self

    def _hold(self) -> None:
        # An idle connection is cut after wait_timeout (often minutes on managed servers),
        # and GET_LOCK with it: this one waits as long as the server allows.
        with contextlib.suppress(Exception):
            self.conn.execute("SET SESSION wait_timeout = 31536000")
        self.store._held_lock = self

    def still_held(self) -> bool:
        try:
            if self.lease is not None:
                row = self.conn.execute(
                    f"SELECT holder FROM {LOCK_TABLE} WHERE name = %s", (self.name,)
                ).fetchone()
                return bool(row) and row[0] == self.lease.holder
            row = self.conn.execute(
                "SELECT IS_USED_LOCK(%s) = CONNECTION_ID()", (self.name,)
            ).fetchone()
            return bool(row and row[0])
        except Exception:
            return False

    def __exit__(self, *exc):
        self.store._held_lock = None
        if self.lease is not None:
            self.lease.release()
        elif self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.execute("SELECT RELEASE_LOCK(%s)", (self.name,))
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class _Lease:
    """A row in `sessionctl_lock` held for LEASE_SECONDS and renewed while the run goes on;
    a lease whose holder stopped renewing it is taken over once it has run out."""

    def __init__(self, store: MysqlStore, conn: _Conn, name: str):
        self.store, self.conn, self.name = store, conn, name
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"[:128]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def available(self) -> bool:
        store = self.store
        exists = store.query(
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()"
            " AND TABLE_NAME = %s",
            (LOCK_TABLE,),
        )[0][0]
        if exists:
            return True
        if not store.settings.create_lock_table:
            return False
        with store.translate_errors("create the lock table in"):
            self.conn.execute(
                f"CREATE TABLE IF NOT EXISTS {LOCK_TABLE} (name VARCHAR(64) PRIMARY KEY,"
                " holder VARCHAR(128) NOT NULL, expires_at BIGINT NOT NULL) ENGINE=InnoDB"
            )
        return True

    def take(self) -> bool:
        now = int(time.time())
        with self.store.translate_errors("lock"):
            self.conn.execute(
                f"INSERT INTO {LOCK_TABLE} (name, holder, expires_at) VALUES (%s, %s, %s)"
                " ON DUPLICATE KEY UPDATE"
                " holder = IF(expires_at < %s, VALUES(holder), holder),"
                " expires_at = IF(holder = VALUES(holder), VALUES(expires_at), expires_at)",
                (self.name, self.holder, now + LEASE_SECONDS, now),
            )
            row = self.conn.execute(
                f"SELECT holder FROM {LOCK_TABLE} WHERE name = %s", (self.name,)
            ).fetchone()
        if not row or row[0] != self.holder:
            return False
        self._thread = threading.Thread(target=self._renew, daemon=True)
        self._thread.start()
        return True

    def _renew(self) -> None:
        while not self._stop.wait(LEASE_SECONDS / 3):
            with contextlib.suppress(Exception):
                self.conn.execute(
                    f"UPDATE {LOCK_TABLE} SET expires_at = %s WHERE name = %s AND holder = %s",
                    (int(time.time()) + LEASE_SECONDS, self.name, self.holder),
                )

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with contextlib.suppress(Exception):
            self.conn.execute(
                f"DELETE FROM {LOCK_TABLE} WHERE name = %s AND holder = %s",
                (self.name, self.holder),
            )
