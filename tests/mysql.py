"""Real MySQL/MariaDB session stores, written by the real frameworks, for the tests.

The server: $SESSIONCTL_TEST_MYSQL (a mysql:// or mariadb:// URL of a user with rights to create
databases; `?unix_socket=/path` for a socket), by default mysql://root@127.0.0.1:3306/test. When
it cannot be reached (or PyMySQL, Django, Node or the npm packages are missing), a test that
needs it is skipped with a one-line reason, and fails with that line under CI (the CI variable
set: .ci/run starts MariaDB).

Fixtures (registered in conftest.py):
- `mysql_server`: the server's URL, checked once per test session.
- `mysql_db`: a `MySqlDatabase` of the test's own, `sessionctl_test_<random>`, dropped afterwards.
- `node_modules` (tests/pg.py): the npm packages of tests/node/package-lock.json.

Stores, each made by the framework itself, with times relative to now. `sessions` is a list of
numbers (seconds until the session expires: negative for one already expired) or of dicts
{"expires_in": seconds, "data": {...}} with per-framework extras, as in tests/pg.py:
- `django_mysql_store(db, sessions)`: Django's MySQL backend (PyMySQL standing in for
  mysqlclient), its own migrations make django_session (expire_date datetime(6), naive UTC),
  its SessionStore writes. `django_clearsessions(db)` and `django_load(db, keys)` are the same
  helpers as for PostgreSQL (they take either kind of database).
- `express_mysql_session_store(db, sessions)`: express-mysql-session (npm) creates its table from
  its own schema.sql and writes through its Store.set. `express_mysql_session_prune(db)` runs its
  own clearExpiredSessions; `express_mysql_session_load(db, sids)`.
- `flask_session_mysql_store(db, sessions)`: Flask-Session's SQLAlchemy backend (SQLAlchemy with
  PyMySQL), through real requests. `flask_session_cleanup(db)`, `flask_session_load(db, sids)`
  as for PostgreSQL.
- `rails_mysql_table(db, sessions)` and `spring_mysql_tables(db, sessions)`: the frameworks' own
  DDL for MySQL (Ruby and Java are not installed here), rows written as those frameworks write
  them.

An application at work, for the deadlock tests: `spring_busy_application(db, primary_ids)` and
`django_busy_application(db, keys)` (a `BusyApplication`: threads saving random sessions with the
framework's own statements, one short transaction each, counting deadlocks and lock wait
timeouts that reach them, and `lost()` for writes that are not in the table afterwards).

For the bench: `django_mysql_bulk(db, n, expired_percent=50)` makes an n-row django_session in
seconds (1,000,000 rows: about 4 s here) from one session Django wrote.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import shutil
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

import pytest

from pg import (  # noqa: F401  (re-exported: these take a database of either kind)
    NODE_DIR,
    Sessions,
    Written,
    _need_module,
    _python_framework,
    _specs,
    django_clearsessions,
    django_load,
    ensure_node_modules,
    flask_session_cleanup,
    flask_session_load,
    java_serialized_string,
    ruby_marshal,
    run_json,
    unavailable,
    utcnow_naive,
)

DEFAULT_URL = "mysql://root@127.0.0.1:3306/test"


def server_url() -> str:
    return os.environ.get("SESSIONCTL_TEST_MYSQL") or DEFAULT_URL


def where(url: str) -> str:
    """host:port/db (or the socket path) of a URL, never its password."""
    parts = urlsplit(url)
    socket = dict(parse_qsl(parts.query)).get("unix_socket")
    place = socket or f"{parts.hostname or 'localhost'}:{parts.port or 3306}"
    return f"{place}{parts.path or '/'}"


def with_database(url: str, name: str) -> str:
    return urlsplit(url)._replace(path="/" + name).geturl()


def connect_args(url: str) -> dict:
    """PyMySQL's connect() arguments for a mysql:// or mariadb:// URL."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    args = {
        "user": unquote(parts.username or "root"),
        "password": unquote(parts.password or ""),
        "database": unquote(parts.path.lstrip("/")) or None,
        "charset": "utf8mb4",
        "autocommit": True,
        "connect_timeout": 5,
    }
    if query.get("unix_socket"):
        args["unix_socket"] = query["unix_socket"]
    else:
        args["host"] = parts.hostname or "127.0.0.1"
        args["port"] = parts.port or 3306
    return args


def _pymysql():
    try:
        import pymysql
    except ImportError:
        unavailable("PyMySQL is not installed: pip install -e '.[mysql,test]' (make venv)")
    return pymysql


def check_server(url: str | None = None) -> str:
    """The server's URL once it answers; skip (fail under CI) when it does not."""
    url = url or server_url()
    pymysql = _pymysql()
    try:
        conn = pymysql.connect(**connect_args(url))
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
        finally:
            conn.close()
        return url
    except pymysql.Error as exc:
        # (2003, "Can't connect to MySQL server on '127.0.0.1' ([Errno 111] ...)") -> the text
        said = exc.args[-1] if exc.args else type(exc).__name__
        first = (str(said).strip().splitlines() or [type(exc).__name__])[0]
    # Outside the except block: the report is the one line, not a chain of exceptions.
    unavailable(
        f"no MySQL/MariaDB test server at {where(url)} ({first}); start it (.ci/run does) "
        "or point SESSIONCTL_TEST_MYSQL at one"
    )


def quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


@dataclass
class MySqlDatabase:
    """A database of one test's own on the MySQL/MariaDB test server."""

    name: str
    url: str  # mysql://... of this database
    server_url: str  # the URL it was created from

    def connect(self, *, timezone: str | None = None, **kwargs):
        """A PyMySQL connection (autocommit, utf8mb4); `timezone` sets the session time_zone
        (which changes how TIMESTAMP columns read, never DATETIME ones)."""
        args = {**connect_args(self.url), **kwargs}
        if timezone:
            args["init_command"] = f"SET time_zone = '{timezone}'"
        return _pymysql().connect(**args)

    def execute(self, sql: str, params=None) -> int:
        """One statement; the number of rows it touched."""
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                return cur.execute(sql, params)
        finally:
            conn.close()

    def script(self, sql: str) -> None:
        """Several statements, each ending with ";" at the end of a line (DDL files)."""
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                for statement in sql.split(";\n"):
                    if statement.strip():
                        cur.execute(statement)
        finally:
            conn.close()

    def query(self, sql: str, params=None, *, timezone: str | None = None) -> list[tuple]:
        conn = self.connect(timezone=timezone)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return list(cur.fetchall())
        finally:
            conn.close()

    def query_dicts(self, sql: str, params=None, *, timezone: str | None = None) -> list[dict]:
        """Rows as {column: value} (EXPLAIN output, SHOW statements)."""
        conn = self.connect(timezone=timezone)
        try:
            with conn.cursor(_pymysql().cursors.DictCursor) as cur:
                cur.execute(sql, params)
                return list(cur.fetchall())
        finally:
            conn.close()

    def scalar(self, sql: str, params=None, *, timezone: str | None = None):
        rows = self.query(sql, params, timezone=timezone)
        return rows[0][0] if rows else None

    def address(self, table: str | None = None) -> str:
        """The store address sessionctl would take: this database's URL with ?table=."""
        url = urlsplit(self.url)
        query = dict(parse_qsl(url.query))
        if table:
            query["table"] = table
        return url._replace(query=urlencode(query)).geturl()

    def node_options(self) -> dict:
        """mysql2's connection options: host and port (what express-mysql-session's own pool
        takes), or socketPath (then tests/node/express_mysql_session.js hands the store a pool)."""
        args = connect_args(self.url)
        options = {"user": args["user"], "password": args["password"], "database": self.name}
        if "unix_socket" in args:
            return {**options, "socketPath": args["unix_socket"]}
        return {**options, "host": args["host"], "port": args["port"]}

    def tables(self) -> list[str]:
        rows = self.query(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() "
            "ORDER BY TABLE_NAME"
        )
        return [r[0] for r in rows]

    def columns(self, table: str) -> dict[str, tuple[str, bool]]:
        """{column: (COLUMN_TYPE as the server writes it, NOT NULL)} in column order."""
        rows = self.query(
            "SELECT COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE FROM information_schema.COLUMNS "
            "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION",
            (table,),
        )
        return {name: (typ, nullable == "NO") for name, typ, nullable in rows}

    def indexes(self, table: str) -> dict[str, tuple[tuple[str, ...], bool]]:
        """{index name: (its columns in order, unique)}; the primary key is "PRIMARY"."""
        rows = self.query(
            "SELECT INDEX_NAME, COLUMN_NAME, NON_UNIQUE FROM information_schema.STATISTICS "
            "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s "
            "ORDER BY INDEX_NAME, SEQ_IN_INDEX",
            (table,),
        )
        out: dict[str, tuple[tuple[str, ...], bool]] = {}
        for name, column, non_unique in rows:
            columns = out.get(name, ((), not non_unique))[0]
            out[name] = ((*columns, column), not non_unique)
        return out

    def table_options(self, table: str) -> dict[str, str]:
        """{"engine", "row_format", "collation"} of a table."""
        row = self.query(
            "SELECT ENGINE, ROW_FORMAT, TABLE_COLLATION FROM information_schema.TABLES "
            "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s",
            (table,),
        )[0]
        return dict(zip(("engine", "row_format", "collation"), row))

    def show_create(self, table: str) -> str:
        return self.query(f"SHOW CREATE TABLE {quote(table)}")[0][1]

    def count(self, table: str, where_sql: str = "TRUE", params=None) -> int:
        return self.scalar(f"SELECT COUNT(*) FROM {quote(table)} WHERE {where_sql}", params)


def create_database(url: str) -> MySqlDatabase:
    name = f"sessionctl_test_{secrets.token_hex(6)}"
    conn = _pymysql().connect(**connect_args(url))
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE {quote(name)} CHARACTER SET utf8mb4")
    finally:
        conn.close()
    return MySqlDatabase(name=name, url=with_database(url, name), server_url=url)


def drop_database(db: MySqlDatabase) -> None:
    conn = _pymysql().connect(**connect_args(db.server_url))
    try:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {quote(db.name)}")
    finally:
        conn.close()


# ---- the fixtures (conftest.py imports these) ----


@pytest.fixture(scope="session")
def mysql_server() -> str:
    return check_server()


@pytest.fixture
def mysql_db(mysql_server):
    db = create_database(mysql_server)
    try:
        yield db
    finally:
        drop_database(db)


# ---- the frameworks ----

# Django (tests/frameworks_django.py, with its MySQL backend)


def django_mysql_store(db: MySqlDatabase, sessions: Sessions = ()) -> Written:
    """django_session made by Django's own migrations on MySQL, sessions written by Django's
    SessionStore (see django_pg_store in tests/pg.py for the session specs).

    Django's MySQL backend makes expire_date a datetime(6) and session_data a longtext; with
    USE_TZ=True it writes expire_date as naive UTC, whatever the server's time_zone.
    """
    for name in ("django", "pymysql"):
        _need_module(name)
    specs = _specs(sessions)
    answer = _python_framework("frameworks_django.py", db, {"action": "write", "sessions": specs})
    return Written.of(answer["keys"], specs)


# Flask-Session (SQLAlchemy backend, tests/frameworks_flask.py, SQLAlchemy over PyMySQL)


def flask_session_mysql_store(db: MySqlDatabase, sessions: Sessions = ()) -> Written:
    """Flask-Session's "sessions" table and rows on MySQL, written by real requests.

    Written.ids are the cookie ids; Written.extra["store_ids"] the table's session_id values
    ("session:" + id). expiry is a naive UTC datetime (no fractional seconds on MySQL).
    """
    for name in ("flask_session", "flask_sqlalchemy", "pymysql"):
        _need_module(name)
    specs = _specs(sessions)
    answer = _python_framework("frameworks_flask.py", db, {"action": "write", "sessions": specs})
    return Written.of(answer["sids"], specs, store_ids=answer["store_ids"])


# express-mysql-session (npm)


def _node(script: str, request: dict) -> dict:
    modules = ensure_node_modules()
    env = {**os.environ, "NODE_PATH": str(modules)}
    return run_json([shutil.which("node"), NODE_DIR / script], request, env=env)


def express_mysql_session_store(
    db: MySqlDatabase, sessions: Sessions = (), *, table: str = "sessions"
) -> Written:
    """express-mysql-session's table (its own schema.sql) and sessions written by its Store.set.

    Each session: seconds until its cookie expires (negative: already expired; the store writes
    it as given), or {"expires_in": s, "data": {...}, "sid": optional}. expires is unix seconds
    (int unsigned), data the session as JSON text; the table has no index on expires. See
    tests/node/express_mysql_session.js.
    """
    specs = _specs(sessions)
    request = {"mysql": db.node_options(), "action": "write", "sessions": specs, "table": table}
    return Written.of(_node("express_mysql_session.js", request)["sids"], specs)


def express_mysql_session_prune(db: MySqlDatabase, *, table: str = "sessions") -> dict:
    """express-mysql-session's own clearExpiredSessions(): {"before", "after", "removed"}."""
    request = {"mysql": db.node_options(), "action": "prune", "table": table}
    return _node("express_mysql_session.js", request)


def express_mysql_session_load(
    db: MySqlDatabase, sids: list[str], *, table: str = "sessions"
) -> dict:
    """{sid: session or None} through the store's get() (None when missing or expired)."""
    request = {"mysql": db.node_options(), "action": "load", "sids": sids, "table": table}
    return _node("express_mysql_session.js", request)["loaded"]


# Rails (activerecord-session_store) and Spring Session JDBC: their DDL, their rows.

#: What `bin/rails generate active_record:session_migration` + `db:migrate` sends to MySQL with
#: the mysql2 adapter (Rails 7.1+: bigint AUTO_INCREMENT id, string = varchar(255), timestamps
#: datetime(6) NOT NULL; InnoDB is the server's default engine, Rails names none).
#: Source: rails/activerecord-session_store lib/generators/active_record/templates/migration.rb:
#:   create_table :sessions do |t|
#:     t.string :session_id, :null => false
#:     t.text :data
#:     t.timestamps
#:   end
#:   add_index :sessions, :session_id, :unique => true
#:   add_index :sessions, :updated_at
RAILS_MYSQL_DDL = """
CREATE TABLE `{table}` (`id` bigint NOT NULL AUTO_INCREMENT PRIMARY KEY,
  `session_id` varchar(255) NOT NULL, `data` text, `created_at` datetime(6) NOT NULL,
  `updated_at` datetime(6) NOT NULL);
CREATE UNIQUE INDEX `index_{table}_on_session_id` ON `{table}` (`session_id`);
CREATE INDEX `index_{table}_on_updated_at` ON `{table}` (`updated_at`);
"""


def rails_mysql_table(
    db: MySqlDatabase, sessions: Sessions = (), *, table: str = "sessions"
) -> Written:
    """activerecord-session_store's table on MySQL, with rows as Rails writes them (see
    rails_pg_table in tests/pg.py): no expiry column, each session is seconds since it was last
    updated (or {"updated_ago", "created_ago", "data"}); session_id "2::" + sha256(public id);
    data Base64(Marshal(hash)); times naive UTC in datetime(6). Written.ids are the private ids,
    extra["public_ids"] the cookie values.
    """
    db.script(RAILS_MYSQL_DDL.format(table=table))
    now = utcnow_naive()
    private, public = [], []
    conn = db.connect()
    try:
        with conn.cursor() as cur:
            for n, item in enumerate(sessions or (), start=1):
                spec = {"updated_ago": item} if isinstance(item, int | float) else dict(item)
                updated = now - timedelta(seconds=spec["updated_ago"])
                created = now - timedelta(seconds=spec.get("created_ago", spec["updated_ago"]))
                public_id = secrets.token_hex(16)
                private_id = "2::" + hashlib.sha256(public_id.encode()).hexdigest()
                data = {"session_id": public_id, **(spec.get("data") or {"user_id": n})}
                cur.execute(
                    f"INSERT INTO {quote(table)} (session_id, data, created_at, updated_at) "
                    "VALUES (%s, %s, %s, %s)",
                    (
                        private_id,
                        base64.encodebytes(ruby_marshal(data)).decode(),
                        created,
                        updated,
                    ),
                )
                private.append(private_id)
                public.append(public_id)
    finally:
        conn.close()
    return Written(ids=private, extra={"public_ids": public})


#: Spring Session JDBC's own MySQL schema, verbatim (ENGINE=InnoDB ROW_FORMAT=DYNAMIC, a UNIQUE
#: index on SESSION_ID, the attributes as BLOB). Source: spring-projects/spring-session
#: spring-session-jdbc/src/main/resources/org/springframework/session/jdbc/schema-mysql.sql
#: (main, 206fb60). {table} is Spring's table-name setting, SPRING_SESSION by default; MySQL
#: keeps the names' case (on Linux, table names are case-sensitive).
SPRING_MYSQL_DDL = """
CREATE TABLE {table} (
	PRIMARY_ID CHAR(36) NOT NULL,
	SESSION_ID CHAR(36) NOT NULL,
	CREATION_TIME BIGINT NOT NULL,
	LAST_ACCESS_TIME BIGINT NOT NULL,
	MAX_INACTIVE_INTERVAL INT NOT NULL,
	EXPIRY_TIME BIGINT NOT NULL,
	PRINCIPAL_NAME VARCHAR(100),
	CONSTRAINT {table}_PK PRIMARY KEY (PRIMARY_ID)
) ENGINE=InnoDB ROW_FORMAT=DYNAMIC;

CREATE UNIQUE INDEX {table}_IX1 ON {table} (SESSION_ID);
CREATE INDEX {table}_IX2 ON {table} (EXPIRY_TIME);
CREATE INDEX {table}_IX3 ON {table} (PRINCIPAL_NAME);

CREATE TABLE {table}_ATTRIBUTES (
	SESSION_PRIMARY_ID CHAR(36) NOT NULL,
	ATTRIBUTE_NAME VARCHAR(200) NOT NULL,
	ATTRIBUTE_BYTES BLOB NOT NULL,
	CONSTRAINT {table}_ATTRIBUTES_PK PRIMARY KEY (SESSION_PRIMARY_ID, ATTRIBUTE_NAME),
	CONSTRAINT {table}_ATTRIBUTES_FK FOREIGN KEY (SESSION_PRIMARY_ID) REFERENCES {table}(PRIMARY_ID) ON DELETE CASCADE
) ENGINE=InnoDB ROW_FORMAT=DYNAMIC;
"""


def spring_mysql_tables(
    db: MySqlDatabase, sessions: Sessions = (), *, table: str = "SPRING_SESSION"
) -> Written:
    """Spring Session JDBC's two tables on MySQL, with rows as JdbcIndexedSessionRepository
    writes them (see spring_pg_tables in tests/pg.py for the session specs). Times are epoch
    milliseconds. Written.ids are the SESSION_IDs, extra["primary_ids"] the PRIMARY_IDs.
    """
    db.script(SPRING_MYSQL_DDL.format(table=table))
    now_ms = int(time.time() * 1000)
    specs = _specs(sessions)
    session_ids, primary_ids = [], []
    conn = db.connect()
    try:
        with conn.cursor() as cur:
            for n, spec in enumerate(specs, start=1):
                max_inactive = int(spec.get("max_inactive", 1800))
                expiry = now_ms + spec["expires_in"] * 1000
                last_access = expiry - max_inactive * 1000
                primary_id, session_id = str(uuid.uuid4()), str(uuid.uuid4())
                principal = spec.get("principal", f"user{n}")
                cur.execute(
                    f"INSERT INTO {table} (PRIMARY_ID, SESSION_ID, CREATION_TIME, "
                    "LAST_ACCESS_TIME, MAX_INACTIVE_INTERVAL, EXPIRY_TIME, PRINCIPAL_NAME) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    (
                        primary_id,
                        session_id,
                        last_access - 60_000,
                        last_access,
                        max_inactive,
                        expiry,
                        principal,
                    ),
                )
                attributes = spec.get("attributes")
                if attributes is None:
                    attributes = {"greeting": f"hello {principal}"}
                for name, value in attributes.items():
                    payload = java_serialized_string(value) if isinstance(value, str) else value
                    cur.execute(
                        f"INSERT INTO {table}_ATTRIBUTES (SESSION_PRIMARY_ID, ATTRIBUTE_NAME, "
                        "ATTRIBUTE_BYTES) VALUES (%s, %s, %s)",
                        (primary_id, name, payload),
                    )
                session_ids.append(session_id)
                primary_ids.append(primary_id)
    finally:
        conn.close()
    return Written.of(session_ids, specs, primary_ids=primary_ids)


# ---- an application at work, for the deadlock tests ----


class BusyApplication:
    """An application touching its sessions in a tight loop while something else (a cleanup)
    runs: `threads` connections, each owning a share of `keys` and touching a random one of its
    share at a time, in a transaction of its own, as a request handler saves its session.

    `touch(cursor, key, marker)` runs the framework's own save statements, writing `marker` (a
    string unique to this write; or it returns the marker it wrote instead) where
    `read(db)` -> {key: marker} finds it again. A deadlock
    (1213) or lock wait timeout (1205) is rolled back and counted, not retried: that is what
    reaches the application. Any other error stops the run and is raised by stop().

    Use as a context manager (or start()/stop()). Afterwards: `writes` (committed), `errors`
    ({1213: n, 1205: n}), `committed` ({key: last marker committed}), `slowest` (seconds, the
    longest commit: how long the application waited on someone's locks), and `lost(db)`: the
    keys still in the table whose last committed write is not there.
    """

    def __init__(
        self,
        db: MySqlDatabase,
        keys: list,
        touch,
        read,
        *,
        threads: int = 2,
        lock_wait_timeout: int = 5,
    ):
        if not keys:
            raise ValueError("BusyApplication needs sessions to touch")
        self.db, self.touch, self.read = db, touch, read
        self.shares = [keys[i::threads] for i in range(threads) if keys[i::threads]]
        self.lock_wait_timeout = lock_wait_timeout
        self.writes = 0
        self.errors: dict[int, int] = {}
        self.committed: dict = {}
        self.slowest = 0.0
        self._failure: BaseException | None = None
        self._stop = None
        self._threads: list = []

    def _run(self, number: int, share: list) -> None:
        import random

        pymysql = _pymysql()
        conn = self.db.connect(autocommit=False)
        try:
            with conn.cursor() as cur:
                cur.execute(f"SET SESSION innodb_lock_wait_timeout = {self.lock_wait_timeout}")
            n = 0
            while not self._stop.is_set():
                key = random.choice(share)
                n += 1
                marker = f"t{number}-{n}"
                started = time.monotonic()
                try:
                    with conn.cursor() as cur:
                        marker = self.touch(cur, key, marker) or marker
                    conn.commit()
                except pymysql.err.MySQLError as exc:
                    code = exc.args[0] if exc.args else None
                    if code not in (1205, 1213):
                        raise
                    conn.rollback()
                    self.errors[code] = self.errors.get(code, 0) + 1
                    continue
                self.slowest = max(self.slowest, time.monotonic() - started)
                self.committed[key] = marker  # keys are not shared: no other thread races this
                self.writes += 1
        except BaseException as exc:  # reported by stop()
            self._failure = exc
        finally:
            conn.close()

    def start(self) -> BusyApplication:
        import threading

        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(n, share), daemon=True)
            for n, share in enumerate(self.shares)
        ]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> BusyApplication:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        if self._failure is not None:
            raise AssertionError(f"the busy application failed: {self._failure!r}")
        return self

    def wait_for_writes(self, n: int, timeout: float = 20) -> BusyApplication:
        """Until at least n more writes are committed (a loaded machine is slow)."""
        target, deadline = self.writes + n, time.monotonic() + timeout
        while self.writes < target and self._failure is None:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"the busy application made {self.writes} writes in {timeout} s"
                )
            time.sleep(0.01)
        return self

    def __enter__(self) -> BusyApplication:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def lost(self, db: MySqlDatabase | None = None) -> list:
        found = self.read(db or self.db)
        return [k for k, m in self.committed.items() if k in found and found[k] != m]


def spring_busy_application(
    db: MySqlDatabase, primary_ids: list[str], *, table: str = "SPRING_SESSION", **kwargs
) -> BusyApplication:
    """Spring Session JDBC saving sessions on every request (JdbcIndexedSessionRepository's
    UPDATE_SESSION_QUERY, then UPDATE_SESSION_ATTRIBUTE_QUERY for the changed attribute, one
    transaction): LAST_ACCESS_TIME now, EXPIRY_TIME now + MAX_INACTIVE_INTERVAL, the "greeting"
    attribute (spring_mysql_tables writes one per session) set to the marker. This is the
    update that deadlocks with Spring's own every-minute DELETE ... WHERE EXPIRY_TIME < ?."""

    def touch(cur, primary_id: str, marker: str) -> None:
        now_ms = int(time.time() * 1000)
        cur.execute(
            f"UPDATE {table} SET SESSION_ID = SESSION_ID, LAST_ACCESS_TIME = %s, "
            "MAX_INACTIVE_INTERVAL = MAX_INACTIVE_INTERVAL, "
            "EXPIRY_TIME = %s + MAX_INACTIVE_INTERVAL * 1000, PRINCIPAL_NAME = PRINCIPAL_NAME "
            "WHERE PRIMARY_ID = %s",
            (now_ms, now_ms, primary_id),
        )
        cur.execute(
            f"UPDATE {table}_ATTRIBUTES SET ATTRIBUTE_BYTES = %s "
            "WHERE SESSION_PRIMARY_ID = %s AND ATTRIBUTE_NAME = 'greeting'",
            (java_serialized_string(marker), primary_id),
        )

    def read(db: MySqlDatabase) -> dict:
        rows = db.query(
            f"SELECT SESSION_PRIMARY_ID, ATTRIBUTE_BYTES FROM {table}_ATTRIBUTES "
            "WHERE ATTRIBUTE_NAME = 'greeting'"
        )
        return {key: bytes(value)[7:].decode() for key, value in rows}

    return BusyApplication(db, primary_ids, touch, read, **kwargs)


def django_busy_application(
    db: MySqlDatabase, keys: list[str], *, table: str = "django_session", **kwargs
) -> BusyApplication:
    """Django saving sessions on every request: SessionStore.save() of an existing session is
    one UPDATE ... SET session_data, expire_date WHERE session_key. The session_data is left as
    it is (it is signed); what each write leaves is its new expire_date, now + 1 hour in naive
    UTC to the microsecond, as Django writes it."""

    def touch(cur, key: str, marker: str) -> str:
        when = (utcnow_naive() + timedelta(hours=1)).isoformat(sep=" ", timespec="microseconds")
        cur.execute(
            f"UPDATE {quote(table)} SET session_data = session_data, expire_date = %s "
            "WHERE session_key = %s",
            (when, key),
        )
        return when

    def read(db: MySqlDatabase) -> dict:
        rows = db.query(f"SELECT session_key, expire_date FROM {quote(table)}")
        return {key: value.isoformat(sep=" ", timespec="microseconds") for key, value in rows}

    return BusyApplication(db, keys, touch, read, **kwargs)


# ---- large stores, for the bench ----


def django_mysql_bulk(
    db: MySqlDatabase, n: int, *, expired_percent: int = 50, chunk: int = 100_000
) -> dict:
    """A django_session of n rows, fast: Django's migrations make the table and Django writes one
    session; its session_data (signed without the key: it loads under any key) is copied into n
    rows by INSERT ... SELECT from MariaDB's sequence engine (seq_1_to_N), chunk rows a
    statement. Keys are "bulk" + 28 digits (32 characters, as Django's). expired_percent of the
    rows (those whose number mod 100 falls below it, spread through the key order) expired
    1 s to 1 day ago, the others expire 1 s to 1 day from now, in naive UTC.
    Answers {"rows": n, "expired": count, "template": the key Django wrote (removed)}.
    Needs MariaDB (the sequence engine); MySQL has none.
    """
    template = django_mysql_store(db, [3600]).ids[0]
    data = db.scalar("SELECT session_data FROM django_session WHERE session_key = %s", (template,))
    db.execute("DELETE FROM django_session WHERE session_key = %s", (template,))
    for start in range(1, n + 1, chunk):
        stop = min(n, start + chunk - 1)
        db.execute(
            "INSERT INTO django_session (session_key, session_data, expire_date) "
            "SELECT CONCAT('bulk', LPAD(seq, 28, '0')), %s, "
            "UTC_TIMESTAMP(6) + INTERVAL IF(seq %% 100 < %s, -1, 1) * CAST(1 + seq %% 86400 AS SIGNED) "
            "SECOND "
            f"FROM seq_{start}_to_{stop}",
            (data, expired_percent),
        )
    expired = db.count("django_session", "expire_date < UTC_TIMESTAMP(6)")
    return {"rows": n, "expired": expired, "template": template}
