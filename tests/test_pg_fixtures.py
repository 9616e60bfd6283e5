"""The real-PostgreSQL fixtures themselves (tests/pg.py): each framework makes the table it makes
in production, writes the sessions asked for, and its own cleanup removes exactly the expired
ones. These need no sessionctl PostgreSQL store; the store's tests build on them."""

import base64
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from helpers import ROOT
from pg import (
    connect_pg_simple_load,
    connect_pg_simple_prune,
    connect_pg_simple_store,
    django_clearsessions,
    django_load,
    django_pg_store,
    flask_session_cleanup,
    flask_session_load,
    flask_session_pg_store,
    java_serialized_string,
    rails_pg_table,
    ruby_marshal,
    spring_pg_tables,
    where,
)


def test_each_test_has_a_database_of_its_own(pg_db):
    assert pg_db.name.startswith("sessionctl_test_")
    assert pg_db.scalar("SELECT current_database()") == pg_db.name
    assert pg_db.tables() == []
    address = pg_db.address(table="django_session")
    assert address.endswith(f"/{pg_db.name}?table=django_session")
    assert where(pg_db.url).endswith(f"/{pg_db.name}")


def test_the_database_is_dropped_afterwards(pg_server, request):
    from pg import create_database, drop_database

    db = create_database(pg_server)
    drop_database(db)
    import psycopg

    with psycopg.connect(pg_server, autocommit=True) as conn:
        left = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db.name,)).fetchall()
    assert left == []


def test_django_makes_its_table_and_clearsessions_removes_exactly_the_expired(pg_db):
    written = django_pg_store(
        pg_db,
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

    assert pg_db.columns("django_session") == {
        "session_key": ("character varying(40)", True),
        "session_data": ("text", True),
        "expire_date": ("timestamp with time zone", True),
    }
    indexes = pg_db.indexes("django_session")
    assert any("(expire_date)" in d for d in indexes.values()), indexes
    assert any("PRIMARY KEY" in d or "pkey" in n for n, d in indexes.items()), indexes
    assert pg_db.count("django_session") == 6
    expired_in_db = {
        r[0]
        for r in pg_db.query("SELECT session_key FROM django_session WHERE expire_date < now()")
    }
    assert expired_in_db == set(written.expired)

    loaded = django_load(pg_db, written.ids)
    assert all(loaded[k] for k in written.active), loaded
    assert loaded[written.active[2]]["cart"] == [1, 2]
    assert all(loaded[k] == {} for k in written.expired), loaded

    result = django_clearsessions(pg_db)
    assert result["removed"] == 3
    assert sorted(result["survivors"]) == sorted(written.active)
    assert result["not_loading"] == []
    assert django_clearsessions(pg_db)["removed"] == 0


def test_django_migrates_an_empty_store(pg_db):
    assert django_pg_store(pg_db).ids == []
    assert "django_session" in pg_db.tables()
    assert pg_db.count("django_session") == 0


def test_connect_pg_simple_makes_its_table_writes_and_prunes(pg_db, node_modules):
    written = connect_pg_simple_store(pg_db, sessions=[3600, 60, {"expires_in": -60}, -86400])
    assert len(set(written.ids)) == 4
    assert pg_db.columns("session") == {
        "sid": ("character varying", True),
        "sess": ("json", True),
        "expire": ("timestamp(6) without time zone", True),
    }
    assert set(pg_db.indexes("session")) == {"session_pkey", "IDX_session_expire"}
    sess = pg_db.scalar("SELECT sess FROM session WHERE sid = %s", (written.active[0],))
    # express-session's Cookie measures originalMaxAge back from expires: a millisecond may pass.
    assert 3599 * 1000 < sess["cookie"]["originalMaxAge"] <= 3600 * 1000 and sess["user"] == "user1"

    loaded = connect_pg_simple_load(pg_db, written.ids)
    assert [sid for sid, s in loaded.items() if s] == written.active

    result = connect_pg_simple_prune(pg_db)
    assert result == {"before": 4, "after": 2, "removed": 2}
    left = {r[0] for r in pg_db.query("SELECT sid FROM session")}
    assert left == set(written.active)


def test_connect_pg_simple_writes_local_time_in_the_connections_time_zone(pg_db, node_modules):
    """The naive "expire" column holds the writer's wall clock: the same instant written from a
    New York connection is 5 hours (4 in summer) earlier than from a UTC one."""
    utc = connect_pg_simple_store(pg_db, sessions=[3600], timezone="UTC")
    ny = connect_pg_simple_store(pg_db, sessions=[3600], timezone="America/New_York")
    rows = dict(pg_db.query("SELECT sid, expire FROM session"))
    gap = rows[utc.ids[0]] - rows[ny.ids[0]]
    assert timedelta(hours=3, minutes=59) < gap < timedelta(hours=5, minutes=1), gap
    # Read in New York, the New York row is active; its own prune keeps it.
    assert connect_pg_simple_prune(pg_db, timezone="America/New_York")["removed"] == 0
    assert connect_pg_simple_load(pg_db, ny.ids, timezone="America/New_York")[ny.ids[0]]
    # Read in UTC, the same row looks hours expired: a prune from a UTC connection removes a
    # session New York still uses. A tool must read "expire" in the application's zone.
    assert connect_pg_simple_prune(pg_db, timezone="UTC") == {"before": 2, "after": 1, "removed": 1}
    assert pg_db.scalar("SELECT sid FROM session") == utc.ids[0]


def test_flask_session_writes_through_real_requests_and_cleans_up(pg_db):
    written = flask_session_pg_store(
        pg_db, sessions=[3600, {"expires_in": 60, "data": {"a": 1}}, -60]
    )
    assert pg_db.columns("sessions") == {
        "id": ("integer", True),
        "session_id": ("character varying(255)", False),
        "data": ("bytea", False),
        "expiry": ("timestamp without time zone", False),
    }
    assert set(written.extra["store_ids"]) == {
        r[0] for r in pg_db.query("SELECT session_id FROM sessions")
    }
    assert all(s == "session:" + sid for s, sid in zip(written.extra["store_ids"], written.ids))
    # expiry is naive UTC: an hour from now in UTC, whatever the server's TimeZone.
    expiry = pg_db.scalar(
        "SELECT expiry FROM sessions WHERE session_id = %s", (written.extra["store_ids"][0],)
    )
    in_an_hour = datetime.now(UTC).replace(tzinfo=None) + timedelta(hours=1)
    assert abs(expiry - in_an_hour) < timedelta(minutes=1)
    data = bytes(
        pg_db.scalar(
            "SELECT data FROM sessions WHERE session_id = %s", (written.extra["store_ids"][1],)
        )
    )
    assert data.startswith(b"\x82") and b"_permanent" in data  # msgpack map, not JSON

    assert flask_session_cleanup(pg_db) == {"before": 3, "after": 2, "removed": 1}
    loaded = flask_session_load(pg_db, written.active)
    assert loaded[written.active[1]]["a"] == 1


def test_rails_table_from_its_migration(pg_db):
    written = rails_pg_table(
        pg_db, sessions=[60, 86400 * 40, {"updated_ago": 10, "created_ago": 86400 * 31}]
    )
    assert pg_db.columns("sessions") == {
        "id": ("bigint", True),
        "session_id": ("character varying", True),
        "data": ("text", False),
        "created_at": ("timestamp(6) without time zone", True),
        "updated_at": ("timestamp(6) without time zone", True),
    }
    assert set(pg_db.indexes("sessions")) == {
        "sessions_pkey",
        "index_sessions_on_session_id",
        "index_sessions_on_updated_at",
    }
    assert all(i.startswith("2::") and len(i) == 67 for i in written.ids)
    # The rake task's trim: updated_at older than 30 days.
    stale = pg_db.count("sessions", "updated_at < (now() AT TIME ZONE 'UTC') - interval '30 days'")
    assert stale == 1
    data = pg_db.scalar("SELECT data FROM sessions ORDER BY id LIMIT 1")
    raw = base64.b64decode(data)
    assert raw.startswith(b"\x04\x08{") and written.extra["public_ids"][0].encode() in raw


def test_ruby_marshal_matches_ruby():
    # Marshal.dump({"user_id" => 42, "n" => 300, "neg" => -2, "ok" => true, "x" => nil}) in Ruby
    expected = (
        b'\x04\x08{\x0aI"\x0cuser_id\x06:\x06ETi/'
        b'I"\x06n\x06;\x00Ti\x02\x2c\x01'
        b'I"\x08neg\x06;\x00Ti\xf9'
        b'I"\x07ok\x06;\x00TT'
        b'I"\x06x\x06;\x00T0'
    )
    assert ruby_marshal({"user_id": 42, "n": 300, "neg": -2, "ok": True, "x": None}) == expected


def test_spring_tables_from_its_schema(pg_db):
    written = spring_pg_tables(
        pg_db,
        sessions=[1800, -1, {"expires_in": -3600, "attributes": {"a": "x", "b": b"\x00\x01"}}],
    )
    assert pg_db.tables() == ["spring_session", "spring_session_attributes"]
    assert pg_db.columns("spring_session") == {
        "primary_id": ("character(36)", True),
        "session_id": ("character(36)", True),
        "creation_time": ("bigint", True),
        "last_access_time": ("bigint", True),
        "max_inactive_interval": ("integer", True),
        "expiry_time": ("bigint", True),
        "principal_name": ("character varying(100)", False),
    }
    assert set(pg_db.indexes("spring_session")) == {
        "spring_session_pk",
        "spring_session_ix1",
        "spring_session_ix2",
        "spring_session_ix3",
    }
    fk = pg_db.scalar(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'spring_session_attributes_fk'"
    )
    assert "REFERENCES spring_session(primary_id) ON DELETE CASCADE" in fk
    now_ms = pg_db.scalar("SELECT (extract(epoch FROM now()) * 1000)::bigint")
    expired = {
        r[0].strip()
        for r in pg_db.query(
            "SELECT session_id FROM spring_session WHERE expiry_time < %s", (now_ms,)
        )
    }
    assert expired == set(written.expired)
    assert pg_db.count("spring_session_attributes") == 4
    assert (
        bytes(
            pg_db.scalar(
                "SELECT attribute_bytes FROM spring_session_attributes WHERE attribute_name = 'a'"
            )
        )
        == java_serialized_string("x")
        == b"\xac\xed\x00\x05t\x00\x01x"
    )
    # Spring's own cleanup statement; the attributes go with their sessions.
    pg_db.execute("DELETE FROM spring_session WHERE expiry_time < %s", (now_ms,))
    assert pg_db.count("spring_session_attributes") == 1


@pytest.mark.parametrize("ci, outcome", [("true", "1 error"), ("", "1 skipped")])
def test_a_missing_server_skips_with_one_line_or_fails_under_ci(tmp_path, ci, outcome):
    """Pointed at a port where nothing listens: skipped with a one-line reason, an error under CI."""
    shutil.copy(ROOT / "tests" / "pg.py", tmp_path / "pg.py")
    (tmp_path / "conftest.py").write_text("from pg import pg_db, pg_server  # noqa: F401\n")
    (tmp_path / "test_needs_pg.py").write_text("def test_needs_pg(pg_db):\n    pass\n")
    env = {
        **os.environ,
        "SESSIONCTL_TEST_PG": "postgresql://postgres@127.0.0.1:1/postgres",
        "CI": ci,
    }
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
    # Every line that says anything about the server is the reason line (the test's report and,
    # under CI, the summary line): no traceback, no chained exception.
    said = [line for line in lines if "127.0.0.1" in line]
    assert said and all(
        "no PostgreSQL test server at 127.0.0.1:1/postgres (" in line for line in said
    ), done.stdout
    assert len(said) == (2 if ci else 1), done.stdout
    assert "Traceback" not in done.stdout and "During handling" not in done.stdout
