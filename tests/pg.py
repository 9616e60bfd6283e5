"""Real PostgreSQL session stores, written by the real frameworks, for the tests.

The server: $SESSIONCTL_TEST_PG (a postgresql:// URL with rights to create databases), by
default postgresql://postgres@127.0.0.1:5432/postgres. When it cannot be reached (or psycopg,
Django, Node or the npm packages are missing), a test that needs it is skipped with a one-line
reason, and fails with that line under CI (the CI variable set: .ci/run starts the server).

Fixtures (registered in conftest.py):
- `pg_server`: the server's URL, checked once per test session.
- `pg_db`: a `PgDatabase` of the test's own, `sessionctl_test_<random>`, dropped afterwards.
- `node_modules`: the npm packages of tests/node/package-lock.json, installed once into
  .cache/node/ (kept across runs, reinstalled when the lock file changes).

Stores, each made by the framework itself, with times relative to now. `sessions` is a list of
numbers (seconds until the session expires: negative for one already expired) or of dicts
{"expires_in": seconds, "data": {...}} with per-framework extras:
- `django_pg_store(db, sessions)`: Django's own migrations make django_session, Django's
  SessionStore writes the sessions. `django_clearsessions(db)` runs Django's clearsessions and
  says how many it removed and whether every survivor still loads; `django_load(db, keys)`.
- `connect_pg_simple_store(db, sessions, timezone=None)`: connect-pg-simple (npm) creates its
  table from its own table.sql and writes through express-session's Store API.
  `connect_pg_simple_prune(db)` runs its own pruneSessions; `connect_pg_simple_load(db, sids)`.
- `flask_session_pg_store(db, sessions)`: Flask-Session's SQLAlchemy backend, through real
  requests. `flask_session_cleanup(db)` runs its `flask session_cleanup`;
  `flask_session_load(db, sids)` (which deletes an expired session, as Flask-Session does).
- `rails_pg_table(db, sessions)` and `spring_pg_tables(db, sessions)`: the frameworks' own DDL
  (Ruby and Java are not installed here), rows written as those frameworks write them.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import struct
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
NODE_DIR = TESTS / "node"
NODE_CACHE = ROOT / ".cache" / "node"
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"

Sessions = list  # of int | dict


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def unavailable(reason: str):
    """Skip the test with a one-line reason; under CI, fail it with that line."""
    reason = " ".join(reason.split())
    if in_ci():
        pytest.fail(f"{reason} (CI is set, so this fails instead of skipping)", pytrace=False)
    pytest.skip(reason)


def server_dsn() -> str:
    return os.environ.get("SESSIONCTL_TEST_PG") or DEFAULT_DSN


def where(dsn: str) -> str:
    """host:port/db of a URL, never its password."""
    url = urlsplit(dsn)
    return f"{url.hostname or 'localhost'}:{url.port or 5432}{url.path or '/'}"


def with_database(dsn: str, name: str) -> str:
    return urlsplit(dsn)._replace(path="/" + name).geturl()


def _psycopg():
    try:
        import psycopg
    except ImportError:
        unavailable("psycopg is not installed: pip install -e '.[test]' (make venv)")
    return psycopg


def check_server(dsn: str | None = None) -> str:
    """The server's URL once it answers; skip (fail under CI) when it does not."""
    dsn = dsn or server_dsn()
    psycopg = _psycopg()
    try:
        with psycopg.connect(dsn, connect_timeout=5, autocommit=True) as conn:
            conn.execute("SELECT 1")
        return dsn
    except psycopg.Error as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    # Outside the except block: the report is the one line, not a chain of exceptions.
    unavailable(
        f"no PostgreSQL test server at {where(dsn)} ({first}); start it (.ci/run does) "
        "or point SESSIONCTL_TEST_PG at one"
    )


@dataclass
class PgDatabase:
    """A database of one test's own on the test server."""

    name: str
    url: str  # postgresql://... of this database
    server_url: str  # the maintenance database it was created from

    def connect(self, **kwargs):
        return _psycopg().connect(self.url, autocommit=True, **kwargs)

    def execute(self, sql: str, params=None) -> None:
        with self.connect() as conn:
            conn.execute(sql, params)

    def query(self, sql: str, params=None) -> list[tuple]:
        with self.connect() as conn:
            return conn.execute(sql, params).fetchall()

    def scalar(self, sql: str, params=None):
        rows = self.query(sql, params)
        return rows[0][0] if rows else None

    def address(self, table: str | None = None, schema: str | None = None) -> str:
        """The store address sessionctl takes: this database's URL with ?table=&schema=."""
        url = urlsplit(self.url)
        query = dict(parse_qsl(url.query))
        if table:
            query["table"] = table
        if schema:
            query["schema"] = schema
        return url._replace(query=urlencode(query)).geturl()

    def tables(self, schema: str = "public") -> list[str]:
        rows = self.query(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY tablename", (schema,)
        )
        return [r[0] for r in rows]

    def columns(self, table: str, schema: str = "public") -> dict[str, tuple[str, bool]]:
        """{column: (type as format_type writes it, NOT NULL)} in column order."""
        rows = self.query(
            """SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull
               FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
               JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped
               ORDER BY a.attnum""",
            (schema, table),
        )
        return {name: (typ, notnull) for name, typ, notnull in rows}

    def indexes(self, table: str, schema: str = "public") -> dict[str, str]:
        """{index name: its CREATE INDEX statement}."""
        rows = self.query(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s AND tablename = %s",
            (schema, table),
        )
        return dict(rows)

    def count(self, table: str, where_sql: str = "TRUE") -> int:
        return self.scalar(f"SELECT count(*) FROM {table} WHERE {where_sql}")


def create_database(server_url: str) -> PgDatabase:
    name = f"sessionctl_test_{secrets.token_hex(6)}"
    with _psycopg().connect(server_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return PgDatabase(name=name, url=with_database(server_url, name), server_url=server_url)


def drop_database(db: PgDatabase) -> None:
    with _psycopg().connect(db.server_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db.name}" WITH (FORCE)')


# ---- the fixtures (conftest.py imports these) ----


@pytest.fixture(scope="session")
def pg_server() -> str:
    return check_server()


@pytest.fixture
def pg_db(pg_server):
    db = create_database(pg_server)
    try:
        yield db
    finally:
        drop_database(db)


@pytest.fixture(scope="session")
def node_modules() -> Path:
    return ensure_node_modules()


# ---- running the frameworks ----


def _specs(sessions) -> list[dict]:
    out = []
    for item in sessions or ():
        spec = {"expires_in": item} if isinstance(item, int | float) else dict(item)
        spec["expires_in"] = int(spec["expires_in"])
        out.append(spec)
    return out


def run_json(argv: list, request: dict, env: dict | None = None, timeout: float = 120) -> dict:
    """Run a framework script: one JSON request on stdin, one JSON answer on stdout."""
    done = subprocess.run(
        [str(a) for a in argv],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=TESTS,
    )
    if done.returncode != 0:
        raise AssertionError(
            f"{Path(str(argv[1])).name} {request.get('action')} exited {done.returncode}:\n"
            f"{done.stderr[-4000:]}"
        )
    return json.loads(done.stdout)


def _need_module(name: str) -> None:
    import importlib.util

    if importlib.util.find_spec(name) is None:
        unavailable(f"{name} is not installed: pip install -e '.[test]' (make venv)")


def _python_framework(script: str, db: PgDatabase, request: dict) -> dict:
    return run_json([sys.executable, TESTS / script], {"dsn": db.url, **request})


@dataclass
class Written:
    """What a framework wrote: the ids, in the order asked, and which of them were expired."""

    ids: list[str]
    expired: list[str] = field(default_factory=list)
    active: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    @classmethod
    def of(cls, ids: list[str], specs: list[dict], **extra) -> Written:
        expired = [i for i, s in zip(ids, specs) if s["expires_in"] <= 0]
        active = [i for i, s in zip(ids, specs) if s["expires_in"] > 0]
        return cls(ids=list(ids), expired=expired, active=active, extra=extra)


# Django


def django_pg_store(db: PgDatabase, sessions: Sessions = ()) -> Written:
    """django_session made by Django's own migrations, sessions written by Django's SessionStore.

    Each session: seconds until expiry, or {"expires_in": s, "data": {...}, "set_expiry": bool}.
    With set_expiry (default) Django's set_expiry(s) decides expire_date (and puts
    "_session_expiry" into the payload); without, Django saves it with its default age and the
    ORM moves expire_date afterwards. Django writes expired sessions without complaint.
    Returns the session keys (Written.ids, .expired, .active). See tests/frameworks_django.py.
    """
    _need_module("django")
    specs = _specs(sessions)
    answer = _python_framework("frameworks_django.py", db, {"action": "write", "sessions": specs})
    return Written.of(answer["keys"], specs)


def django_clearsessions(db: PgDatabase) -> dict:
    """Django's own clearsessions: {"before", "after", "removed", "survivors", "not_loading"}."""
    _need_module("django")
    return _python_framework("frameworks_django.py", db, {"action": "clearsessions"})


def django_load(db: PgDatabase, keys: list[str]) -> dict:
    """{key: SessionStore(session_key=key).load()}: {} when missing, expired or tampered."""
    _need_module("django")
    return _python_framework("frameworks_django.py", db, {"action": "load", "keys": keys})["loaded"]


# Flask-Session (SQLAlchemy backend)


def flask_session_pg_store(db: PgDatabase, sessions: Sessions = ()) -> Written:
    """Flask-Session's "sessions" table and rows, written by real requests (tests/frameworks_flask.py).

    Written.ids are the cookie ids; Written.extra["store_ids"] the table's session_id values
    ("session:" + id). expiry is naive UTC (datetime.utcnow() + PERMANENT_SESSION_LIFETIME).
    """
    for name in ("flask_session", "flask_sqlalchemy"):
        _need_module(name)
    specs = _specs(sessions)
    answer = _python_framework("frameworks_flask.py", db, {"action": "write", "sessions": specs})
    return Written.of(answer["sids"], specs, store_ids=answer["store_ids"])


def flask_session_cleanup(db: PgDatabase) -> dict:
    """Flask-Session's own `flask session_cleanup`: {"before", "after", "removed"}."""
    _need_module("flask_session")
    return _python_framework("frameworks_flask.py", db, {"action": "cleanup"})


def flask_session_load(db: PgDatabase, sids: list[str]) -> dict:
    """{sid: data or None} read by requests; Flask-Session deletes an expired one it reads."""
    _need_module("flask_session")
    return _python_framework("frameworks_flask.py", db, {"action": "load", "sids": sids})["loaded"]


# connect-pg-simple (npm)

_node_ready: Path | None = None


def ensure_node_modules() -> Path:
    """npm install of tests/node/package-lock.json into .cache/node/, once per lock file.

    A file lock keeps two pytest processes in one tree from installing at once.
    """
    global _node_ready
    if _node_ready is not None:
        return _node_ready
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        unavailable("Node.js and npm are needed for the connect-pg-simple tests (not on PATH)")
    wanted = b"".join((NODE_DIR / n).read_bytes() for n in ("package.json", "package-lock.json"))
    stamp = hashlib.sha256(wanted).hexdigest()
    NODE_CACHE.mkdir(parents=True, exist_ok=True)
    modules = NODE_CACHE / "node_modules"
    with open(NODE_CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stamp_file = NODE_CACHE / ".installed"
        if not (stamp_file.exists() and stamp_file.read_text() == stamp and modules.is_dir()):
            for name in ("package.json", "package-lock.json"):
                shutil.copyfile(NODE_DIR / name, NODE_CACHE / name)
            done = subprocess.run(
                [npm, "install", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=NODE_CACHE,
                capture_output=True,
                text=True,
                timeout=600,
            )
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or ["?"])[-1]
                unavailable(f"npm install for the Node framework tests failed: {last}")
            stamp_file.write_text(stamp)
    _node_ready = modules
    return modules


def _node(script: str, request: dict) -> dict:
    modules = ensure_node_modules()
    env = {**os.environ, "NODE_PATH": str(modules)}
    return run_json([shutil.which("node"), NODE_DIR / script], request, env=env)


def connect_pg_simple_store(
    db: PgDatabase,
    sessions: Sessions = (),
    *,
    timezone: str | None = None,
    table: str = "session",
    schema: str | None = None,
) -> Written:
    """connect-pg-simple's table (its own table.sql) and sessions written by its Store.set.

    Each session: seconds until its cookie expires (negative: already expired; the store writes
    it as given), or {"expires_in": s, "data": {...}, "sid": optional}. `timezone` is the
    TimeZone of the writing connection: "expire" is a timestamp WITHOUT time zone, so a row
    written in America/New_York reads 5 hours early to a UTC reader. See
    tests/node/connect_pg_simple.js.
    """
    specs = _specs(sessions)
    request = {"conString": db.url, "action": "write", "sessions": specs, "table": table}
    if timezone:
        request["timezone"] = timezone
    if schema:
        request["schema"] = schema
    return Written.of(_node("connect_pg_simple.js", request)["sids"], specs)


def connect_pg_simple_prune(
    db: PgDatabase, *, timezone: str | None = None, table: str = "session"
) -> dict:
    """connect-pg-simple's own pruneSessions(): {"before", "after", "removed"}."""
    request = {"conString": db.url, "action": "prune", "table": table}
    if timezone:
        request["timezone"] = timezone
    return _node("connect_pg_simple.js", request)


def connect_pg_simple_load(
    db: PgDatabase, sids: list[str], *, timezone: str | None = None, table: str = "session"
) -> dict:
    """{sid: session or None} through the store's get() (None when missing or expired)."""
    request = {"conString": db.url, "action": "load", "sids": sids, "table": table}
    if timezone:
        request["timezone"] = timezone
    return _node("connect_pg_simple.js", request)["loaded"]


# Rails (activerecord-session_store) and Spring Session JDBC: their DDL, their rows.


def utcnow_naive() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


#: What `bin/rails generate active_record:session_migration` + `db:migrate` sends to PostgreSQL
#: (Rails 7.1+: bigserial id, timestamps precision 6 and NOT NULL, string = character varying).
#: Source: rails/activerecord-session_store lib/generators/active_record/templates/migration.rb:
#:   create_table :sessions do |t|
#:     t.string :session_id, :null => false
#:     t.text :data
#:     t.timestamps
#:   end
#:   add_index :sessions, :session_id, :unique => true
#:   add_index :sessions, :updated_at
RAILS_DDL = """
CREATE TABLE "{table}" ("id" bigserial primary key, "session_id" character varying NOT NULL,
  "data" text, "created_at" timestamp(6) NOT NULL, "updated_at" timestamp(6) NOT NULL);
CREATE UNIQUE INDEX "index_{table}_on_session_id" ON "{table}" ("session_id");
CREATE INDEX "index_{table}_on_updated_at" ON "{table}" ("updated_at");
"""


def ruby_marshal(value) -> bytes:
    """Ruby's Marshal.dump of a Hash of String keys to String/Integer/true/false/nil values
    (what a Rails session holds), so rows look like what Rails writes."""
    out = bytearray(b"\x04\x08")
    symbols: list[str] = []

    def long(n: int) -> bytes:
        if n == 0:
            return b"\x00"
        if 0 < n < 123:
            return bytes([n + 5])
        if -124 < n < 0:
            return struct.pack("b", n - 5)
        # Little-endian bytes up to the last that is not all sign; the count carries the sign.
        raw = n.to_bytes(8, "little", signed=True).rstrip(b"\x00" if n > 0 else b"\xff")
        return struct.pack("b", len(raw) if n > 0 else -len(raw)) + raw

    def dump(v) -> None:
        if v is None:
            out.extend(b"0")
        elif v is True:
            out.extend(b"T")
        elif v is False:
            out.extend(b"F")
        elif isinstance(v, int):
            out.extend(b"i" + long(v))
        elif isinstance(v, str):
            raw = v.encode()
            out.extend(b'I"' + long(len(raw)) + raw + b"\x06")  # one ivar: the encoding
            if "E" in symbols:
                out.extend(b";" + long(symbols.index("E")))
            else:
                symbols.append("E")
                out.extend(b":" + long(1) + b"E")
            out.extend(b"T")
        elif isinstance(v, dict):
            out.extend(b"{" + long(len(v)))
            for k, item in v.items():
                dump(k)
                dump(item)
        else:
            raise TypeError(f"ruby_marshal: {type(v).__name__}")

    dump(value)
    return bytes(out)


def rails_pg_table(db: PgDatabase, sessions: Sessions = (), *, table: str = "sessions") -> Written:
    """activerecord-session_store's table, with rows as Rails writes them.

    Rails has no expiry column: each session is seconds since it was last updated (a number,
    or {"updated_ago": s, "created_ago": s, "data": {...}}); created_at defaults to updated_at.
    session_id is Rack's private id "2::" + sha256(public id); data is Base64(Marshal(hash)),
    with newlines every 60 characters as Ruby's Base64.encode64 writes it; times are naive UTC
    (ActiveRecord's default_timezone :utc). Written.ids are the private ids, extra["public_ids"]
    the cookie values.
    """
    db.execute(RAILS_DDL.format(table=table))
    now = utcnow_naive()
    private, public = [], []
    with db.connect() as conn:
        for n, item in enumerate(sessions or (), start=1):
            spec = {"updated_ago": item} if isinstance(item, int | float) else dict(item)
            updated = now - timedelta(seconds=spec["updated_ago"])
            created = now - timedelta(seconds=spec.get("created_ago", spec["updated_ago"]))
            public_id = secrets.token_hex(16)
            private_id = "2::" + hashlib.sha256(public_id.encode()).hexdigest()
            data = {"session_id": public_id, **(spec.get("data") or {"user_id": n})}
            conn.execute(
                f'INSERT INTO "{table}" (session_id, data, created_at, updated_at) '
                "VALUES (%s, %s, %s, %s)",
                (private_id, base64.encodebytes(ruby_marshal(data)).decode(), created, updated),
            )
            private.append(private_id)
            public.append(public_id)
    return Written(ids=private, extra={"public_ids": public})


#: Spring Session JDBC's own schema, verbatim. Source: spring-projects/spring-session
#: spring-session-jdbc/src/main/resources/org/springframework/session/jdbc/schema-postgresql.sql
#: (PostgreSQL folds the unquoted names: the tables are spring_session and
#: spring_session_attributes). {table} is Spring's table-name setting, SPRING_SESSION by default.
SPRING_DDL = """
CREATE TABLE {table} (
	PRIMARY_ID CHAR(36) NOT NULL,
	SESSION_ID CHAR(36) NOT NULL,
	CREATION_TIME BIGINT NOT NULL,
	LAST_ACCESS_TIME BIGINT NOT NULL,
	MAX_INACTIVE_INTERVAL INT NOT NULL,
	EXPIRY_TIME BIGINT NOT NULL,
	PRINCIPAL_NAME VARCHAR(100),
	CONSTRAINT {table}_PK PRIMARY KEY (PRIMARY_ID)
);

CREATE UNIQUE INDEX {table}_IX1 ON {table} (SESSION_ID);
CREATE INDEX {table}_IX2 ON {table} (EXPIRY_TIME);
CREATE INDEX {table}_IX3 ON {table} (PRINCIPAL_NAME);

CREATE TABLE {table}_ATTRIBUTES (
	SESSION_PRIMARY_ID CHAR(36) NOT NULL,
	ATTRIBUTE_NAME VARCHAR(200) NOT NULL,
	ATTRIBUTE_BYTES BYTEA NOT NULL,
	CONSTRAINT {table}_ATTRIBUTES_PK PRIMARY KEY (SESSION_PRIMARY_ID, ATTRIBUTE_NAME),
	CONSTRAINT {table}_ATTRIBUTES_FK FOREIGN KEY (SESSION_PRIMARY_ID) REFERENCES {table}(PRIMARY_ID) ON DELETE CASCADE
);
"""


def java_serialized_string(value: str) -> bytes:
    """Java serialization of a String (ObjectOutputStream.writeObject): what Spring stores for
    a String attribute. Magic, version, TC_STRING, modified-UTF-8 length, bytes."""
    raw = value.encode()  # ASCII and BMP text without NUL: modified UTF-8 is plain UTF-8
    return b"\xac\xed\x00\x05\x74" + struct.pack(">H", len(raw)) + raw


def spring_pg_tables(
    db: PgDatabase, sessions: Sessions = (), *, table: str = "SPRING_SESSION"
) -> Written:
    """Spring Session JDBC's two tables, with rows as JdbcIndexedSessionRepository writes them.

    Each session: seconds until it expires, or {"expires_in": s, "max_inactive": s (1800),
    "principal": name or None, "attributes": {name: str or bytes}}. Times are epoch
    milliseconds; EXPIRY_TIME = LAST_ACCESS_TIME + MAX_INACTIVE_INTERVAL * 1000; ids are random
    UUIDs. String attributes are stored Java-serialized. Written.ids are the SESSION_IDs,
    extra["primary_ids"] the PRIMARY_IDs (the attributes' key).
    """
    db.execute(SPRING_DDL.format(table=table))
    now_ms = int(time.time() * 1000)
    specs = _specs(sessions)
    session_ids, primary_ids = [], []
    with db.connect() as conn:
        for n, spec in enumerate(specs, start=1):
            max_inactive = int(spec.get("max_inactive", 1800))
            expiry = now_ms + spec["expires_in"] * 1000
            last_access = expiry - max_inactive * 1000
            primary_id, session_id = str(uuid.uuid4()), str(uuid.uuid4())
            principal = spec.get("principal", f"user{n}")
            conn.execute(
                f"INSERT INTO {table} (PRIMARY_ID, SESSION_ID, CREATION_TIME, LAST_ACCESS_TIME, "
                "MAX_INACTIVE_INTERVAL, EXPIRY_TIME, PRINCIPAL_NAME) "
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
                conn.execute(
                    f"INSERT INTO {table}_ATTRIBUTES (SESSION_PRIMARY_ID, ATTRIBUTE_NAME, "
                    "ATTRIBUTE_BYTES) VALUES (%s, %s, %s)",
                    (primary_id, name, payload),
                )
            session_ids.append(session_id)
            primary_ids.append(primary_id)
    return Written.of(session_ids, specs, primary_ids=primary_ids)
