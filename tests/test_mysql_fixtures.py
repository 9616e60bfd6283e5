"""The real-MySQL/MariaDB fixtures themselves (tests/mysql.py): each framework makes the table it
makes in production, writes the sessions asked for, and its own cleanup removes exactly the
expired ones. These need no sessionctl MySQL store; the store's tests build on them."""

import json
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, urlsplit

import pymysql
import pytest

from helpers import ROOT
from mysql import (
    connect_args,
    create_database,
    django_busy_application,
    django_clearsessions,
    django_load,
    django_mysql_bulk,
    django_mysql_store,
    drop_database,
    express_mysql_session_load,
    express_mysql_session_prune,
    express_mysql_session_store,
    flask_session_cleanup,
    flask_session_load,
    flask_session_mysql_store,
    java_serialized_string,
    rails_mysql_table,
    spring_busy_application,
    spring_mysql_tables,
    where,
)


def utc_now_naive() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def test_each_test_has_a_database_of_its_own(mysql_db):
    assert mysql_db.name.startswith("sessionctl_test_")
    assert mysql_db.scalar("SELECT DATABASE()") == mysql_db.name
    assert mysql_db.tables() == []
    address = urlsplit(mysql_db.address(table="django_session"))
    assert (address.scheme, address.path) == ("mysql", f"/{mysql_db.name}")
    assert dict(parse_qsl(address.query))["table"] == "django_session"
    assert where(mysql_db.url).endswith(f"/{mysql_db.name}")


def test_the_database_is_dropped_afterwards(mysql_server):
    db = create_database(mysql_server)
    db.execute("CREATE TABLE t (id int PRIMARY KEY)")
    assert db.tables() == ["t"]
    drop_database(db)
    conn = pymysql.connect(**connect_args(mysql_server))
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW DATABASES LIKE %s", (db.name,))
            assert cur.fetchall() == ()
    finally:
        conn.close()


def test_django_makes_its_table_and_clearsessions_removes_exactly_the_expired(mysql_db):
    written = django_mysql_store(
        mysql_db,
        sessions=[
            3600,
            86400,
            {"expires_in": 600, "data": {"cart": [1, 2]}, "set_expiry": False},
            -1,
            -3600,
            {"expires_in": -86400 * 30, "set_expiry": False},
        ],
    )
    assert len(written.ids) == len(set(written.ids)) == 6
    assert len(written.active) == 3 and len(written.expired) == 3

    assert mysql_db.columns("django_session") == {
        "session_key": ("varchar(40)", True),
        "session_data": ("longtext", True),
        "expire_date": ("datetime(6)", True),
    }
    indexes = mysql_db.indexes("django_session")
    assert indexes.pop("PRIMARY") == (("session_key",), True)
    assert list(indexes.values()) == [(("expire_date",), False)], indexes
    assert mysql_db.table_options("django_session")["engine"] == "InnoDB"
    assert mysql_db.count("django_session") == 6
    # expire_date is naive UTC: compared with UTC_TIMESTAMP(6), never NOW().
    expired_in_db = {
        r[0]
        for r in mysql_db.query(
            "SELECT session_key FROM django_session WHERE expire_date < UTC_TIMESTAMP(6)"
        )
    }
    assert expired_in_db == set(written.expired)

    loaded = django_load(mysql_db, written.ids)
    assert all(loaded[k] for k in written.active), loaded
    assert loaded[written.active[2]]["cart"] == [1, 2]
    assert all(loaded[k] == {} for k in written.expired), loaded

    result = django_clearsessions(mysql_db)
    assert result["removed"] == 3
    assert sorted(result["survivors"]) == sorted(written.active)
    assert result["not_loading"] == []
    assert django_clearsessions(mysql_db)["removed"] == 0


def test_django_writes_utc_into_a_datetime_that_no_session_time_zone_moves(mysql_db):
    """A DATETIME column reads the same in every session time_zone; NOW() does not. A reader
    comparing Django's expire_date with NOW() in a +05:00 session takes sessions with up to five
    hours left for expired."""
    written = django_mysql_store(mysql_db, sessions=[3600, 4 * 3600, 6 * 3600, -60])
    in_utc = dict(mysql_db.query("SELECT session_key, expire_date FROM django_session"))
    in_plus5 = dict(
        mysql_db.query("SELECT session_key, expire_date FROM django_session", timezone="+05:00")
    )
    assert in_utc == in_plus5
    assert abs(in_utc[written.ids[0]] - (utc_now_naive() + timedelta(hours=1))) < timedelta(
        minutes=1
    )
    now_in_plus5 = {
        r[0]
        for r in mysql_db.query(
            "SELECT session_key FROM django_session WHERE expire_date < NOW(6)", timezone="+05:00"
        )
    }
    assert now_in_plus5 == set(written.ids[:2] + written.ids[3:])
    utc_in_plus5 = {
        r[0]
        for r in mysql_db.query(
            "SELECT session_key FROM django_session WHERE expire_date < UTC_TIMESTAMP(6)",
            timezone="+05:00",
        )
    }
    assert utc_in_plus5 == set(written.expired)


def test_django_migrates_an_empty_store(mysql_db):
    assert django_mysql_store(mysql_db).ids == []
    assert "django_session" in mysql_db.tables()
    assert mysql_db.count("django_session") == 0


def test_express_mysql_session_makes_its_table_writes_and_prunes(mysql_db, node_modules):
    before = int(time.time())
    written = express_mysql_session_store(
        mysql_db, sessions=[3600, 60, {"expires_in": -60, "data": {"n": "é"}}, -86400]
    )
    assert len(set(written.ids)) == 4 and all(len(i) == 32 for i in written.ids)
    assert mysql_db.columns("sessions") == {
        "session_id": ("varchar(128)", True),
        "expires": ("int(11) unsigned", True),
        "data": ("mediumtext", False),
    }
    collations = dict(
        mysql_db.query(
            "SELECT COLUMN_NAME, COLLATION_NAME FROM information_schema.COLUMNS "
            "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'sessions' AND COLLATION_NAME IS NOT NULL"
        )
    )
    assert collations == {"session_id": "utf8mb4_bin", "data": "utf8mb4_bin"}
    # Its own schema has no index on expires: only the primary key.
    assert mysql_db.indexes("sessions") == {"PRIMARY": (("session_id",), True)}
    # Its clearExpiredSessions statement can only scan the whole table.
    (row,) = mysql_db.query_dicts(
        "EXPLAIN DELETE FROM sessions WHERE expires < %s", (int(time.time()),)
    )
    assert row["possible_keys"] is None and row["type"] == "ALL", row

    expires, data = mysql_db.query(
        "SELECT expires, data FROM sessions WHERE session_id = %s", (written.active[0],)
    )[0]
    assert before + 3600 - 1 <= expires <= int(time.time()) + 3600 + 1  # unix seconds, rounded
    sess = json.loads(data)
    assert sess["user"] == "user1" and 3599 * 1000 < sess["cookie"]["originalMaxAge"] <= 3600 * 1000
    expired_in_db = {
        r[0]
        for r in mysql_db.query(
            "SELECT session_id FROM sessions WHERE expires < UNIX_TIMESTAMP()",
        )
    }
    assert expired_in_db == set(written.expired)
    assert (
        json.loads(
            mysql_db.scalar("SELECT data FROM sessions WHERE session_id = %s", (written.ids[2],))
        )["n"]
        == "é"
    )

    loaded = express_mysql_session_load(mysql_db, written.ids)
    assert [sid for sid, s in loaded.items() if s] == written.active

    assert express_mysql_session_prune(mysql_db) == {"before": 4, "after": 2, "removed": 2}
    left = {r[0] for r in mysql_db.query("SELECT session_id FROM sessions")}
    assert left == set(written.active)
    assert express_mysql_session_prune(mysql_db)["removed"] == 0


def test_flask_session_writes_through_real_requests_and_cleans_up(mysql_db):
    written = flask_session_mysql_store(
        mysql_db, sessions=[3600, {"expires_in": 60, "data": {"a": 1}}, -60]
    )
    assert mysql_db.columns("sessions") == {
        "id": ("int(11)", True),
        "session_id": ("varchar(255)", False),
        "data": ("blob", False),
        "expiry": ("datetime", False),
    }
    assert mysql_db.indexes("sessions") == {
        "PRIMARY": (("id",), True),
        "session_id": (("session_id",), True),
    }
    assert set(written.extra["store_ids"]) == {
        r[0] for r in mysql_db.query("SELECT session_id FROM sessions")
    }
    assert all(s == "session:" + sid for s, sid in zip(written.extra["store_ids"], written.ids))
    # expiry is naive UTC, whole seconds (a plain DATETIME drops the microseconds).
    expiry = mysql_db.scalar(
        "SELECT expiry FROM sessions WHERE session_id = %s", (written.extra["store_ids"][0],)
    )
    assert expiry.microsecond == 0
    assert abs(expiry - (utc_now_naive() + timedelta(hours=1))) < timedelta(minutes=1)
    data = mysql_db.scalar(
        "SELECT data FROM sessions WHERE session_id = %s", (written.extra["store_ids"][1],)
    )
    assert data.startswith(b"\x82") and b"_permanent" in data  # msgpack map, not JSON
    expired_in_db = {
        r[0]
        for r in mysql_db.query("SELECT session_id FROM sessions WHERE expiry <= UTC_TIMESTAMP()")
    }
    assert expired_in_db == {"session:" + sid for sid in written.expired}

    assert flask_session_cleanup(mysql_db) == {"before": 3, "after": 2, "removed": 1}
    loaded = flask_session_load(mysql_db, written.active)
    assert loaded[written.active[1]]["a"] == 1


def test_rails_table_from_its_migration(mysql_db):
    written = rails_mysql_table(
        mysql_db, sessions=[60, 86400 * 40, {"updated_ago": 10, "created_ago": 86400 * 31}]
    )
    assert mysql_db.columns("sessions") == {
        "id": ("bigint(20)", True),
        "session_id": ("varchar(255)", True),
        "data": ("text", False),
        "created_at": ("datetime(6)", True),
        "updated_at": ("datetime(6)", True),
    }
    assert mysql_db.indexes("sessions") == {
        "PRIMARY": (("id",), True),
        "index_sessions_on_session_id": (("session_id",), True),
        "index_sessions_on_updated_at": (("updated_at",), False),
    }
    assert all(i.startswith("2::") and len(i) == 67 for i in written.ids)
    # The rake task's trim: updated_at older than 30 days, in naive UTC.
    stale = mysql_db.query(
        "SELECT session_id FROM sessions WHERE updated_at < UTC_TIMESTAMP(6) - INTERVAL 30 DAY"
    )
    assert stale == [(written.ids[1],)]


def test_spring_tables_from_its_schema(mysql_db):
    written = spring_mysql_tables(
        mysql_db,
        sessions=[1800, -1, {"expires_in": -3600, "attributes": {"a": "x", "b": b"\x00\x01"}}],
    )
    assert mysql_db.tables() == ["SPRING_SESSION", "SPRING_SESSION_ATTRIBUTES"]
    assert mysql_db.columns("SPRING_SESSION") == {
        "PRIMARY_ID": ("char(36)", True),
        "SESSION_ID": ("char(36)", True),
        "CREATION_TIME": ("bigint(20)", True),
        "LAST_ACCESS_TIME": ("bigint(20)", True),
        "MAX_INACTIVE_INTERVAL": ("int(11)", True),
        "EXPIRY_TIME": ("bigint(20)", True),
        "PRINCIPAL_NAME": ("varchar(100)", False),
    }
    assert mysql_db.indexes("SPRING_SESSION") == {
        "PRIMARY": (("PRIMARY_ID",), True),
        "SPRING_SESSION_IX1": (("SESSION_ID",), True),
        "SPRING_SESSION_IX2": (("EXPIRY_TIME",), False),
        "SPRING_SESSION_IX3": (("PRINCIPAL_NAME",), False),
    }
    for table in ("SPRING_SESSION", "SPRING_SESSION_ATTRIBUTES"):
        options = mysql_db.table_options(table)
        assert (options["engine"], options["row_format"]) == ("InnoDB", "Dynamic")
    assert mysql_db.columns("SPRING_SESSION_ATTRIBUTES")["ATTRIBUTE_BYTES"] == ("blob", True)
    rule = mysql_db.scalar(
        "SELECT DELETE_RULE FROM information_schema.REFERENTIAL_CONSTRAINTS "
        "WHERE CONSTRAINT_SCHEMA = DATABASE() AND CONSTRAINT_NAME = 'SPRING_SESSION_ATTRIBUTES_FK'"
    )
    assert rule == "CASCADE"
    now_ms = int(time.time() * 1000)
    expired = {
        r[0]
        for r in mysql_db.query(
            "SELECT SESSION_ID FROM SPRING_SESSION WHERE EXPIRY_TIME < %s", (now_ms,)
        )
    }
    assert expired == set(written.expired)
    assert mysql_db.count("SPRING_SESSION_ATTRIBUTES") == 4
    assert (
        mysql_db.scalar(
            "SELECT ATTRIBUTE_BYTES FROM SPRING_SESSION_ATTRIBUTES WHERE ATTRIBUTE_NAME = 'a'"
        )
        == java_serialized_string("x")
        == b"\xac\xed\x00\x05t\x00\x01x"
    )
    # Spring's own cleanup statement (JdbcIndexedSessionRepository); the attributes go with
    # their sessions.
    assert mysql_db.execute("DELETE FROM SPRING_SESSION WHERE EXPIRY_TIME < %s", (now_ms,)) == 2
    assert mysql_db.count("SPRING_SESSION_ATTRIBUTES") == 1


@pytest.mark.parametrize("ci, outcome", [("true", "1 error"), ("", "1 skipped")])
def test_a_missing_server_skips_with_one_line_or_fails_under_ci(tmp_path, ci, outcome):
    """Pointed at a port where nothing listens: skipped with a one-line reason, an error under CI."""
    for name in ("mysql.py", "pg.py"):
        shutil.copy(ROOT / "tests" / name, tmp_path / name)
    (tmp_path / "conftest.py").write_text(
        "from mysql import mysql_db, mysql_server  # noqa: F401\n"
    )
    (tmp_path / "test_needs_mysql.py").write_text("def test_needs_mysql(mysql_db):\n    pass\n")
    env = {**os.environ, "SESSIONCTL_TEST_MYSQL": "mysql://root@127.0.0.1:1/test", "CI": ci}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rsE", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    lines = done.stdout.splitlines()
    assert lines[-1].split(" in ")[0].strip("= ") == outcome, done.stdout
    assert done.returncode == (1 if ci else 0), done.stdout
    # Every line that names the server is the reason line (the test's report and, under CI, the
    # summary line): no traceback, no chained exception.
    said = [line for line in lines if "127.0.0.1" in line]
    assert said and all(
        "no MySQL/MariaDB test server at 127.0.0.1:1/test (" in line for line in said
    ), done.stdout
    assert len(said) == (2 if ci else 1), done.stdout
    assert "Traceback" not in done.stdout and "During handling" not in done.stdout


def test_a_busy_spring_application_keeps_every_write_while_springs_own_cleanup_runs(mysql_db):
    """The application of the deadlock tests: Spring's own save statements on random active
    sessions, three connections, while Spring's own DELETE runs beside it. Every write it
    committed is in the table afterwards; the expired sessions are gone."""
    specs = [1800 if n % 2 else -600 - n for n in range(200)]
    written = spring_mysql_tables(mysql_db, specs)
    active = [p for p, s in zip(written.extra["primary_ids"], specs) if s > 0]
    with spring_busy_application(mysql_db, active, threads=3) as app:
        app.wait_for_writes(20)
        removed = mysql_db.execute(
            "DELETE FROM SPRING_SESSION WHERE EXPIRY_TIME < %s", (int(time.time() * 1000),)
        )
        app.wait_for_writes(20)
    assert removed == 100
    assert app.writes >= 40 and len(app.committed) > 3, (app.writes, app.errors)
    assert set(app.committed) <= set(active)
    assert app.lost() == []
    assert mysql_db.count("SPRING_SESSION") == 100
    assert mysql_db.count("SPRING_SESSION_ATTRIBUTES") == 100
    # What it wrote is Spring's: the session moved forward and the attribute holds the marker.
    key, marker = next(iter(app.committed.items()))
    last_access, expiry = mysql_db.query(
        "SELECT LAST_ACCESS_TIME, EXPIRY_TIME FROM SPRING_SESSION WHERE PRIMARY_ID = %s", (key,)
    )[0]
    assert expiry == last_access + 1800 * 1000
    assert mysql_db.scalar(
        "SELECT ATTRIBUTE_BYTES FROM SPRING_SESSION_ATTRIBUTES WHERE SESSION_PRIMARY_ID = %s",
        (key,),
    ) == java_serialized_string(marker)


def test_a_busy_django_application_and_its_lost_writes(mysql_db):
    written = django_mysql_store(mysql_db, sessions=[3600] * 6)
    with django_busy_application(mysql_db, written.ids) as app:
        app.wait_for_writes(20)
    assert app.writes >= 20 and app.errors == {}
    assert app.lost() == []
    # A write behind the application's back (another process moving a session) is noticed.
    key = next(iter(app.committed))
    mysql_db.execute(
        "UPDATE django_session SET expire_date = expire_date + INTERVAL 1 SECOND "
        "WHERE session_key = %s",
        (key,),
    )
    assert app.lost() == [key]
    # Django still loads every session the application kept saving.
    assert all(django_load(mysql_db, written.ids).values())


def test_a_large_django_store_made_fast_loads_in_django(mysql_db):
    made = django_mysql_bulk(mysql_db, 2000, expired_percent=30)
    assert made == {"rows": 2000, "expired": 600, "template": made["template"]}
    assert mysql_db.count("django_session") == 2000
    keys = [r[0] for r in mysql_db.query("SELECT session_key FROM django_session LIMIT 3")]
    assert all(len(k) == 32 for k in keys)
    active = mysql_db.query(
        "SELECT session_key FROM django_session WHERE expire_date > UTC_TIMESTAMP(6) LIMIT 2"
    )
    assert all(
        v == {"user_id": 1, "_session_expiry": 3600}
        for v in django_load(mysql_db, [r[0] for r in active]).values()
    )
    result = django_clearsessions(mysql_db)
    assert (result["removed"], result["after"]) == (600, 1400)
