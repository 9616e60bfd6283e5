"""MySQL/MariaDB stores against the real server, written by the real frameworks (tests/mysql.py).

Each test has a database of its own. After sessionctl's cleanup the frameworks' own cleanups
find nothing left to do and every survivor still loads; what goes is archived (Spring's
attribute rows with their session) and comes back with `restore`; a busy application saving
its sessions meanwhile loses no write and sees no deadlock; bad input is one line with exit 3
naming host:port/db and never a password; one run per store across processes (GET_LOCK).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mysql import (
    django_busy_application,
    django_clearsessions,
    django_load,
    django_mysql_store,
    express_mysql_session_load,
    express_mysql_session_prune,
    express_mysql_session_store,
    flask_session_cleanup,
    flask_session_mysql_store,
    rails_mysql_table,
    spring_busy_application,
    spring_mysql_tables,
)

SESSIONCTL = str(Path(sys.executable).parent / "sessionctl")


def archived(state_dir: Path) -> list[dict]:
    entries = []
    for path in sorted(state_dir.rglob("*.ndjson.gz")):
        lines = gzip.decompress(path.read_bytes()).decode().splitlines()
        entries.extend(json.loads(line) for line in lines[1:])
    return entries


def checksums(db, *tables: str) -> tuple:
    """CHECKSUM TABLE and an md5 over every row in key order: the table, byte for byte."""
    out = []
    for table in tables:
        out.append(db.query(f"CHECKSUM TABLE `{table}`")[0][1])
        columns = [c for c in db.columns(table)]
        row = ", ".join(f"HEX(`{c}`)" for c in columns)
        out.append(
            db.scalar(
                f"SELECT MD5(GROUP_CONCAT(CONCAT_WS('|', {row}) ORDER BY 1 SEPARATOR '#'))"
                f" FROM `{table}`"
            )
        )
    return tuple(out)


def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


# --- the frameworks ------------------------------------------------------------------------------


def test_django_clearsessions_finds_nothing_after_cleanup_and_survivors_load(
    cli, mysql_db, state_dir
):
    written = django_mysql_store(mysql_db, [-86400, -60, -5, 600, 3600, 86400])
    result = cli("cleanup", "--store", mysql_db.address(), "--expired", "--yes", "--format", "json")
    report = json.loads(result.stdout)
    assert report["deleted"] == len(written.expired) == 3, report
    assert django_clearsessions(mysql_db)["removed"] == 0
    loaded = django_load(mysql_db, written.active)
    assert all(loaded[key] for key in written.active), loaded
    assert sorted(e["id"] for e in archived(state_dir)) == sorted(written.expired)


def test_django_explain_says_how_each_time_column_is_read(cli, mysql_db):
    django_mysql_store(mysql_db, [3600])
    result = cli("stats", "--store", mysql_db.address(), "--explain")
    assert "preset: django" in result.stderr, result.stderr
    assert "expire_date datetime(6): no zone, read as written" in result.stderr
    assert "+00:00 (pinned)" in result.stderr


def test_a_timestamp_column_reads_in_utc_whatever_the_servers_time_zone(cli, mysql_db):
    """TIMESTAMP is stored in UTC and shown in the session's time_zone: the tool pins UTC."""
    mysql_db.execute(
        "CREATE TABLE app_sessions (sid VARCHAR(64) PRIMARY KEY, expires_at TIMESTAMP NULL)"
    )
    conn = mysql_db.connect(timezone="+09:00")  # the application writes from Tokyo
    try:
        with conn.cursor() as cur:
            cur.execute(
                "INSERT INTO app_sessions VALUES ('gone', NOW() - INTERVAL 30 MINUTE),"
                " ('here', NOW() + INTERVAL 30 MINUTE)"
            )
    finally:
        conn.close()
    address = mysql_db.address("app_sessions")
    result = cli("list", "--store", address, "--format", "json", "--explain")
    status = {row["id"]: row["status"] for row in json.loads(result.stdout)}
    assert status == {"gone": "expired", "here": "active"}, status
    assert "expires_at timestamp: read in the tool's session time_zone, pinned to UTC" in (
        result.stderr
    )


def test_django_dry_run_leaves_the_table_byte_identical(cli, mysql_db):
    django_mysql_store(mysql_db, [-3600, -60, 3600])
    before = checksums(mysql_db, "django_session")
    result = cli("cleanup", "--store", mysql_db.address(), "--expired", "--dry-run")
    assert "Would remove" in result.stdout
    assert checksums(mysql_db, "django_session") == before


def test_express_mysql_session_prune_removes_nothing_after_cleanup(
    cli, mysql_db, node_modules, state_dir
):
    written = express_mysql_session_store(mysql_db, [-7200, -30, 900, 7200])
    result = cli("cleanup", "--store", mysql_db.address(), "--expired", "--yes", "--explain")
    assert "preset: express-mysql-session" in result.stderr, result.stderr
    assert express_mysql_session_prune(mysql_db)["removed"] == 0
    loaded = express_mysql_session_load(mysql_db, written.active)
    assert all(loaded[sid] for sid in written.active), loaded
    assert sorted(e["id"] for e in archived(state_dir)) == sorted(written.expired)


def test_express_mysql_sessions_missing_index_is_named_with_its_create_index(
    cli, mysql_db, node_modules
):
    express_mysql_session_store(mysql_db, [-60, 3600])
    # Enough rows for the warning to matter (a copy of the one the store wrote, 12,000 times).
    mysql_db.execute(
        "INSERT INTO sessions (session_id, expires, data) SELECT CONCAT('bulk', seq),"
        " UNIX_TIMESTAMP() + 3600, (SELECT data FROM sessions LIMIT 1) FROM seq_1_to_12000"
    )
    result = cli("stats", "--store", mysql_db.address())
    text = result.stdout + result.stderr
    assert "expires" in text and "no index" in text, text
    assert "CREATE INDEX `sessions_expires_idx` ON `sessions` (`expires`)" in text, text
    statement = text[text.index("CREATE INDEX") :].split(")")[0] + ")"
    mysql_db.execute(statement)  # the statement given works as it is
    result = cli("stats", "--store", mysql_db.address())
    assert "no index" not in result.stdout + result.stderr


def test_flask_session_cleanup_finds_nothing_after_ours(cli, mysql_db, state_dir):
    written = flask_session_mysql_store(mysql_db, [-3600, -10, 3600])
    cli("cleanup", "--store", mysql_db.address(), "--expired", "--yes")
    assert flask_session_cleanup(mysql_db)["removed"] == 0
    ids = sorted(e["id"] for e in archived(state_dir))
    expected = sorted(
        store_id
        for sid, store_id in zip(written.ids, written.extra["store_ids"])
        if sid in written.expired
    )
    assert ids == expected


def test_rails_marshal_payload_is_opaque_and_old_sessions_go(cli, mysql_db, state_dir):
    written = rails_mysql_table(mysql_db, [40 * 86400, 3600])
    old, recent = written.ids
    shown = cli("inspect", "--store", mysql_db.address(), old).stdout
    assert "BAh7" not in shown  # Base64(Marshal) is never shown, let alone decoded
    cli("cleanup", "--store", mysql_db.address(), "--expired", "--yes")
    assert [r[0] for r in mysql_db.query("SELECT session_id FROM sessions")] == [recent]


def test_spring_attributes_go_with_their_session_and_come_back(cli, mysql_db, state_dir):
    written = spring_mysql_tables(mysql_db, [-600, 600])
    expired_primary = written.extra["primary_ids"][0]
    before = checksums(mysql_db, "SPRING_SESSION", "SPRING_SESSION_ATTRIBUTES")
    cli("cleanup", "--store", mysql_db.address(), "--expired", "--yes")
    assert mysql_db.count("SPRING_SESSION") == 1
    attributes = "SPRING_SESSION_ATTRIBUTES"
    assert mysql_db.count(attributes, "SESSION_PRIMARY_ID = %s", (expired_primary,)) == 0
    (entry,) = archived(state_dir)
    assert entry["id"] == written.expired[0]
    children = entry["children"][attributes]
    assert children and children[0]["ATTRIBUTE_NAME"] == "greeting"
    (archive,) = state_dir.rglob("*.ndjson.gz")
    cli("restore", archive)
    assert mysql_db.count("SPRING_SESSION") == 2
    row = mysql_db.query(
        f"SELECT ATTRIBUTE_BYTES FROM {attributes} WHERE SESSION_PRIMARY_ID = %s",
        (expired_primary,),
    )
    assert bytes(row[0][0]).startswith(b"\xac\xed\x00\x05")  # the Java serialization, as it was
    assert checksums(mysql_db, "SPRING_SESSION", "SPRING_SESSION_ATTRIBUTES") == before


def test_a_row_whose_text_is_not_utf8_is_one_invalid_session(mysql_db):
    """MariaDB turns invalid UTF-8 into '?' on the way in; older servers and tables converted
    in place can still hold it. Text is read as its stored bytes (CAST AS BINARY) and decoded
    by the tool: such a row is one invalid session, kept exactly, not a failed read."""
    from sessionctl.stores import open_store, parse_address

    mysql_db.execute(
        "CREATE TABLE sessions (session_id VARCHAR(64) PRIMARY KEY,"
        " data TEXT CHARACTER SET utf8mb4, expires INT UNSIGNED) CHARACTER SET utf8mb4"
    )
    mysql_db.execute("INSERT INTO sessions VALUES ('good', '{}', UNIX_TIMESTAMP() + 600)")
    store = open_store(parse_address(mysql_db.address()))
    try:
        assert 'CAST("data" AS BINARY)' in store._select()
        (good,) = store.iter_records()
        assert good.data["data"] == "{}" and good.error is None
        bad = store._record(("bad", b"bad", b"\xffA", 1_900_000_000))
        assert bad.data is None and "not valid UTF-8" in bad.error
        assert store.row_from_raw(bad.raw)["data"] == b"\xffA"
    finally:
        store.close()


def test_a_unix_socket_address_and_its_percent_encoded_host(cli, mysql_db):
    django_mysql_store(mysql_db, [-60, 3600])
    sock = mysql_db.scalar("SELECT @@socket")
    for address in (
        f"mysql://root@localhost/{mysql_db.name}?unix_socket={sock}",
        f"mariadb://root@{sock.replace('/', '%2F')}/{mysql_db.name}",
    ):
        result = cli("stats", "--store", address, "--format", "json")
        figures = json.loads(result.stdout)
        assert (figures["total"], figures["expired"]) == (2, 1), address


def test_caps_and_hooks_on_spring_sessions_per_principal(cli, mysql_db, state_dir, tmp_path):
    """--max-per-group counts a user's sessions by PRINCIPAL_NAME and keeps the newest; the hook
    sees each session before it goes, and a failing hook keeps its session."""
    specs = [{"expires_in": 600 + n * 60, "principal": "alice"} for n in range(4)]
    specs += [{"expires_in": 900, "principal": "bob"}]
    written = spring_mysql_tables(mysql_db, specs)
    seen = tmp_path / "seen"
    hook = f'sh -c \'cat >> {seen}; echo >> {seen}; test "$SESSIONCTL_SESSION_ID" != "{written.ids[1]}"\''
    result = cli(
        "cleanup", "--store", mysql_db.address(), "--max-per-group", "1", "--yes",
        "--hook", hook, "--format", "json", code=None,
    )  # fmt: skip
    report = json.loads(result.stdout)
    assert report["deleted"] == 2, report  # alice's two oldest but the one the hook refused
    left = {r[0] for r in mysql_db.query("SELECT SESSION_ID FROM SPRING_SESSION")}
    assert left == {written.ids[1], written.ids[3], written.ids[4]}, left
    assert seen.read_text().count("SESSION_ID") == 3
    assert {e["id"] for e in archived(state_dir)} == {written.ids[0], written.ids[2]}


# --- an application at work ----------------------------------------------------------------------


def test_cleanup_while_spring_saves_its_sessions_loses_no_write(cli, mysql_db, state_dir):
    """Spring's every-request UPDATE on random sessions while the cleanup runs: no deadlock or
    lock wait timeout reaches the application, and no committed write is lost."""
    sessions = [-600] * 300 + [600] * 100
    written = spring_mysql_tables(mysql_db, sessions)
    primary = written.extra["primary_ids"]
    app = spring_busy_application(mysql_db, primary, threads=2)
    with app:
        app.wait_for_writes(50)
        result = cli(
            "cleanup", "--store", mysql_db.address(), "--expired", "--yes",
            "--batch-size", "25", "--format", "json", code=None,
        )  # fmt: skip
        app.wait_for_writes(50)
    report = json.loads(result.stdout)
    print(f"\nspring: {app.writes} writes, errors {app.errors}, slowest {app.slowest:.3f}s,"
          f" report {report.get('deleted')} deleted")  # fmt: skip
    assert result.exit_code in (0, 1), result.stderr
    assert app.errors == {}, app.errors
    assert app.lost() == []
    # What went was expired as read; a session the application touched meanwhile stayed.
    left = {r[0] for r in mysql_db.query("SELECT PRIMARY_ID FROM SPRING_SESSION")}
    gone = set(primary) - left
    assert gone and {e["record"]["PRIMARY_ID"] for e in archived(state_dir)} >= gone
    assert set(primary[300:]) <= left


def test_cleanup_while_django_saves_its_sessions_loses_no_write(cli, mysql_db, state_dir):
    written = django_mysql_store(mysql_db, [-600] * 60 + [600] * 20)
    app = django_busy_application(mysql_db, written.ids, threads=2)
    with app:
        app.wait_for_writes(30)
        result = cli(
            "cleanup", "--store", mysql_db.address(), "--expired", "--yes", "--batch-size", "10",
            code=None,
        )  # fmt: skip
        app.wait_for_writes(30)
    print(f"\ndjango: {app.writes} writes, errors {app.errors}, slowest {app.slowest:.3f}s")
    assert result.exit_code in (0, 1), result.stderr
    assert app.errors == {}, app.errors
    assert app.lost() == []
    assert django_clearsessions(mysql_db)["removed"] >= 0
    left = {r[0] for r in mysql_db.query("SELECT session_key FROM django_session")}
    assert set(written.active) <= left


def test_a_batch_meeting_held_locks_is_retried_then_the_run_stops_with_nothing_half_removed(
    cli, mysql_db, state_dir
):
    """The application holds one expired session locked for the whole run: its batch is
    retried with backoff, then the run stops (exit 4) with the batches before it removed and
    archived, and nothing of that one; the next run finishes the job."""
    written = django_mysql_store(mysql_db, [-600] * 6)
    keys = sorted(written.ids)
    blocker = mysql_db.connect(autocommit=False)
    for pushdown in ("1", "0"):  # the SQL judge's batches, and the Python judge's
        try:
            with blocker.cursor() as cur:
                cur.execute(
                    "SELECT 1 FROM django_session WHERE session_key = %s FOR UPDATE", (keys[3],)
                )
            started = time.monotonic()
            result = cli(
                "cleanup", "--store", mysql_db.address(), "--expired", "--yes",
                "--batch-size", "1", env={"SESSIONCTL_PUSHDOWN": pushdown}, code=4,
            )  # fmt: skip
            took = time.monotonic() - started
        finally:
            blocker.rollback()
        assert "Traceback" not in result.stderr, result.stderr
        assert "met rows the application held locked 5 times" in result.stderr, result.stderr
        left = sorted(r[0] for r in mysql_db.query("SELECT session_key FROM django_session"))
        assert left == keys[3:], pushdown
        assert sorted(e["id"] for e in archived(state_dir)) == keys[:3]
        assert took > 5  # five tries, each waiting innodb_lock_wait_timeout, pauses between
        mysql_db.execute("DELETE FROM django_session")  # again, for the other judge
        for path in state_dir.rglob("*.ndjson.gz"):
            path.unlink()
        django_mysql_store(mysql_db, [-600] * 6)
        keys = sorted(r[0] for r in mysql_db.query("SELECT session_key FROM django_session"))
    blocker.close()
    cli("cleanup", "--store", mysql_db.address(), "--expired", "--yes")
    assert mysql_db.count("django_session") == 0


# --- bad input -----------------------------------------------------------------------------------


def test_server_down_is_one_line_naming_host_and_database(cli):
    result = cli("stats", "--store", "mysql://root@127.0.0.1:1/appdb", code=3)
    line = one_line(result.stderr)
    assert "127.0.0.1:1/appdb" in line and "not answering" in line, line


def test_unknown_database_is_one_line(cli, mysql_db):
    address = mysql_db.address().replace(mysql_db.name, mysql_db.name + "_missing")
    line = one_line(cli("stats", "--store", address, code=3).stderr)
    assert f"{mysql_db.name}_missing" in line and "does not exist" in line, line


def test_unknown_table_lists_the_session_like_tables(cli, mysql_db):
    django_mysql_store(mysql_db, [3600])
    line = one_line(cli("stats", "--store", mysql_db.address(table="nope"), code=3).stderr)
    assert "nope" in line and "django_session" in line and "3306" in line, line


def test_a_table_of_another_shape_is_one_line(cli, mysql_db):
    mysql_db.execute("CREATE TABLE t (a INT, b INT)")
    line = one_line(cli("stats", "--store", mysql_db.address(table="t"), code=3).stderr)
    assert "primary key" in line, line


@pytest.fixture
def mysql_user(mysql_db):
    """A user of this database with SELECT only, and its password."""
    name, password = f"r{mysql_db.name[-10:]}", "Canary-pw-4b1d"
    mysql_db.execute(f"CREATE USER '{name}'@'%' IDENTIFIED BY '{password}'")
    mysql_db.execute(f"CREATE USER '{name}'@'localhost' IDENTIFIED BY '{password}'")
    try:
        yield name, password
    finally:
        mysql_db.execute(f"DROP USER '{name}'@'%'")
        mysql_db.execute(f"DROP USER '{name}'@'localhost'")


def test_no_delete_privilege_is_found_before_anything_is_removed(
    cli, mysql_db, mysql_user, state_dir, monkeypatch
):
    django_mysql_store(mysql_db, [-3600, 3600])
    user, password = mysql_user
    mysql_db.execute(f"GRANT SELECT ON `{mysql_db.name}`.* TO '{user}'@'%'")
    mysql_db.execute(f"GRANT SELECT ON `{mysql_db.name}`.* TO '{user}'@'localhost'")
    monkeypatch.setenv("APP_DB_PASSWORD", password)
    address = mysql_db.address().replace("root@", f"{user}@")
    config = state_dir.parent / "config.toml"
    config.write_text(f'[stores.web]\naddress = "{address}"\npassword_env = "APP_DB_PASSWORD"\n')
    cli("--config", config, "stats", "--store", "web")  # reading is allowed
    result = cli("--config", config, "cleanup", "--store", "web", "--expired", "--yes", code=3)
    line = one_line(result.stderr)
    assert "DELETE" in line and "127.0.0.1:3306" in line and password not in line, line
    assert mysql_db.count("django_session") == 2
    assert archived(state_dir) == []


def test_wrong_password_is_one_line_without_the_password(cli, mysql_db, mysql_user, monkeypatch):
    user, password = mysql_user
    monkeypatch.setenv("APP_DB_PASSWORD", password + "x")
    address = mysql_db.address().replace("root@", f"{user}@")
    config = mysql_db_config = Path(os.environ.get("TMPDIR", "/tmp")) / f"{mysql_db.name}.toml"
    mysql_db_config.write_text(
        f'[stores.web]\naddress = "{address}"\npassword_env = "APP_DB_PASSWORD"\n'
    )
    try:
        line = one_line(cli("--config", config, "stats", "--store", "web", code=3).stderr)
    finally:
        mysql_db_config.unlink()
    assert "access denied" in line and "127.0.0.1:3306" in line and mysql_db.name in line, line
    assert password not in line


def test_an_option_file_gives_the_user_and_password(cli, mysql_db, mysql_user, tmp_path):
    django_mysql_store(mysql_db, [3600])
    user, password = mysql_user
    mysql_db.execute(f"GRANT SELECT ON `{mysql_db.name}`.* TO '{user}'@'%'")
    mysql_db.execute(f"GRANT SELECT ON `{mysql_db.name}`.* TO '{user}'@'localhost'")
    option_file = tmp_path / "app.cnf"
    option_file.write_text(f"[client]\nuser = {user}\npassword = {password}\n")
    option_file.chmod(0o600)
    address = f"mysql://127.0.0.1:3306/{mysql_db.name}?option_file={option_file}"
    result = cli("stats", "--store", address, "--explain")
    assert password not in result.stdout + result.stderr
    assert "1" in result.stdout
    # ~/.my.cnf, when the address names no option file
    home = tmp_path / "home"
    home.mkdir()
    (home / ".my.cnf").write_text(f"[client]\nuser = {user}\npassword = {password}\n")
    result = cli(
        "stats", "--store", f"mariadb://127.0.0.1:3306/{mysql_db.name}",
        env={"HOME": str(home)},
    )  # fmt: skip
    assert password not in result.stdout + result.stderr


def test_missing_driver_is_one_line_with_the_install_commands(cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "pymysql", None)
    line = one_line(cli("stats", "--store", "mysql://u@db.example:3306/app", code=3).stderr)
    assert "pip install 'sessionctl[mysql]'" in line and "pipx" in line, line


CANARY = "Canary-pw-7f3a9"


def test_a_password_in_the_address_never_appears_anywhere(
    cli, mysql_db, mysql_user, tmp_path, state_dir
):
    """The canary is the user's real password: it reaches the server and must reach nothing
    else: output, errors, --explain, the audit log, history, archives, crontab lines."""
    user, password = mysql_user
    mysql_db.execute(f"GRANT ALL ON `{mysql_db.name}`.* TO '{user}'@'%'")
    mysql_db.execute(f"GRANT ALL ON `{mysql_db.name}`.* TO '{user}'@'localhost'")
    django_mysql_store(mysql_db, [-3600, 3600])
    address = mysql_db.address().replace("root@", f"{user}:{password}@")
    seen = []
    for args in (
        ["stats"],
        ["list"],
        ["cleanup", "--expired", "--dry-run", "--explain"],
        ["cleanup", "--expired", "--yes", "--explain"],
        ["history"],
    ):
        result = cli(*args, "--store", address)
        seen += [result.stdout, result.stderr]
    assert any("password written in the store address" in text for text in seen)
    for bad in (
        address.replace(mysql_db.name, "missing_db"),
        address.replace(password, password + "x"),
    ):
        result = cli("stats", "--store", bad, code=3)
        seen += [result.stdout, result.stderr]
    cron_d = tmp_path / "cron.d"
    cron_d.mkdir()
    result = cli(
        "schedule", "install", "myweb", "--every", "1h", "--system", "--",
        "cleanup", "--expired", "--store", address,
        env={"SESSIONCTL_CRON_D": str(cron_d)}, code=None,
    )  # fmt: skip
    seen += [result.stdout, result.stderr]
    files = [p for p in [*state_dir.rglob("*"), *cron_d.rglob("*")] if p.is_file()]
    assert any(p.suffix == ".gz" for p in files) and any(cron_d.iterdir())
    for path in files:
        data = path.read_bytes()
        if path.suffix == ".gz":
            data = gzip.decompress(data)
        assert password.encode() not in data, path
    for text in seen:
        assert password not in text, text


# --- one run at a time -----------------------------------------------------------------------------


def test_a_second_run_on_any_host_exits_4(mysql_db, tmp_path):
    from sessionctl.stores import open_store, parse_address
    from sessionctl.stores.sql.mysql import lock_name

    django_mysql_store(mysql_db, [-3600] * 3 + [3600])
    with open_store(parse_address(mysql_db.address())) as store:
        name = lock_name(store.lock_key)
    env = {**os.environ, "NO_COLOR": "1"}
    slow = subprocess.Popen(
        [SESSIONCTL, "cleanup", "--store", mysql_db.address(), "--expired", "--yes",
         "--batch-size", "1", "--hook", "sleep 1"],
        env={**env, "SESSIONCTL_STATE_DIR": str(tmp_path / "host-a")},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.time() + 20
        while time.time() < deadline:  # until the first run holds its GET_LOCK
            if mysql_db.scalar("SELECT IS_USED_LOCK(%s)", (name,)):
                break
            time.sleep(0.05)
        else:
            pytest.fail("the first run never took GET_LOCK")
        second = [SESSIONCTL, "cleanup", "--store", mysql_db.address(), "--expired", "--yes"]
        env_b = {**env, "SESSIONCTL_STATE_DIR": str(tmp_path / "host-b")}
        loud = subprocess.run(second, env=env_b, capture_output=True, text=True)
        quiet = subprocess.run([*second, "-q"], env=env_b, capture_output=True, text=True)
    finally:
        out, err = slow.communicate(timeout=60)
    assert loud.returncode == 4, loud.stderr
    assert "another sessionctl run" in one_line(loud.stderr)
    assert quiet.returncode == 4 and quiet.stderr == "", quiet.stderr
    assert slow.returncode == 0, err
    assert mysql_db.count("django_session") == 1


def test_the_lock_name_fits_get_lock_and_is_the_same_for_every_spelling(mysql_db):
    from sessionctl.stores import open_store, parse_address
    from sessionctl.stores.sql.mysql import lock_name

    django_mysql_store(mysql_db, [3600])
    one = open_store(parse_address(mysql_db.address()))
    two = open_store(
        parse_address(mysql_db.address("django_session").replace("mysql:", "mariadb:"))
    )
    try:
        assert one.address.identity == two.address.identity
        name = lock_name(one.lock_key)
        assert len(name) <= 64 and name == lock_name(two.lock_key)
    finally:
        one.close()
        two.close()


def test_where_get_lock_is_refused_a_lease_row_keeps_a_second_run_out(mysql_db, monkeypatch):
    """Galera refuses GET_LOCK (MDEV-30473): stood in for by a connection that answers NULL."""
    from sessionctl.domain.errors import SessionctlError
    from sessionctl.stores import StoreSettings, open_store, parse_address
    from sessionctl.stores.sql import mysql as module

    django_mysql_store(mysql_db, [3600])
    real = module._Conn.execute

    def galera(self, sql, params=None):
        if "GET_LOCK" in sql:
            sql = "SELECT NULL"
            params = None
        return real(self, sql, params)

    monkeypatch.setattr(module._Conn, "execute", galera)
    address = parse_address(mysql_db.address())
    plain = open_store(address)
    try:
        with plain.cross_host_lock(plain.address.identity):
            pass  # no lease table and none to be made: one warning line, the run goes on
        assert "sessionctl_lock" not in mysql_db.tables()
        leased = open_store(address, StoreSettings(create_lock_table=True))
        with leased.cross_host_lock(leased.address.identity):
            assert mysql_db.count("sessionctl_lock") == 1
            with (
                pytest.raises(SessionctlError) as busy,
                plain.cross_host_lock(plain.address.identity),
            ):
                pass
            assert busy.value.code == 4
        assert mysql_db.count("sessionctl_lock") == 0
        leased.close()
    finally:
        plain.close()


def test_connection_killed_mid_cleanup_loses_nothing(mysql_db, tmp_path):
    written = django_mysql_store(mysql_db, [-3600] * 8 + [3600])
    env = {**os.environ, "NO_COLOR": "1", "SESSIONCTL_STATE_DIR": str(tmp_path / "state")}
    env.pop("SESSIONCTL_PUSHDOWN", None)
    run = [SESSIONCTL, "cleanup", "--store", mysql_db.address(), "--expired", "--yes"]
    first = subprocess.Popen(
        [*run, "--batch-size", "1", "--hook", "sleep 0.3"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.time() + 20
    while mysql_db.count("django_session") > 7 and time.time() < deadline:
        time.sleep(0.05)
    for (thread,) in mysql_db.query(
        "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = %s AND ID <> CONNECTION_ID()",
        (mysql_db.name,),
    ):
        with contextlib.suppress(Exception):
            mysql_db.execute(f"KILL {int(thread)}")
    out, err = first.communicate(timeout=60)
    assert first.returncode != 0, out
    assert "Traceback" not in err and "internal error" not in err, err
    assert "closed the connection" in err or "lost" in err.lower(), err
    print(f"\nkilled run: exit {first.returncode}: {err.strip().splitlines()[-1]}")
    left = {r[0] for r in mysql_db.query("SELECT session_key FROM django_session")}
    gone = set(written.ids) - left
    assert gone and gone <= {e["id"] for e in archived(tmp_path / "state")}
    assert len(left) > 1  # it stopped part-way
    second = subprocess.run(run, env=env, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr
    assert {r[0] for r in mysql_db.query("SELECT session_key FROM django_session")} == set(
        written.active
    )


def test_a_run_whose_lock_connection_is_lost_stops_before_its_next_batch(mysql_db, tmp_path):
    """GET_LOCK goes with its connection: a run that lost it could be joined by a second run,
    so it stops (exit 4) before its next batch, what it removed archived."""
    from sessionctl.stores import open_store, parse_address
    from sessionctl.stores.sql.mysql import lock_name

    written = django_mysql_store(mysql_db, [-3600] * 8 + [3600])
    with open_store(parse_address(mysql_db.address())) as store:
        name = lock_name(store.lock_key)
    env = {**os.environ, "NO_COLOR": "1", "SESSIONCTL_STATE_DIR": str(tmp_path / "state")}
    run = [SESSIONCTL, "cleanup", "--store", mysql_db.address(), "--expired", "--yes"]
    first = subprocess.Popen(
        [*run, "--batch-size", "1", "--hook", "sleep 0.3"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.time() + 20
    while mysql_db.count("django_session") > 8 and time.time() < deadline:
        time.sleep(0.05)
    holder = mysql_db.scalar("SELECT IS_USED_LOCK(%s)", (name,))
    assert holder, "the run holds no GET_LOCK"
    mysql_db.execute(f"KILL {int(holder)}")
    out, err = first.communicate(timeout=60)
    assert first.returncode == 4, (out, err)
    assert "the connection holding this run's lock was lost" in err, err
    left = {r[0] for r in mysql_db.query("SELECT session_key FROM django_session")}
    gone = set(written.ids) - left
    assert gone and gone <= {e["id"] for e in archived(tmp_path / "state")}
    assert len(left) > 1


def test_create_lock_table_on_the_command_line_makes_the_lease_table(mysql_db, monkeypatch, cli):
    """`cleanup --create-lock-table` does what `create_lock_table = true` does, where GET_LOCK
    is refused (stood in for as above)."""
    from sessionctl.stores.sql import mysql as module

    django_mysql_store(mysql_db, [-3600, 3600])
    real = module._Conn.execute

    def galera(self, sql, params=None):
        if "GET_LOCK" in sql:
            sql, params = "SELECT NULL", None
        return real(self, sql, params)

    monkeypatch.setattr(module._Conn, "execute", galera)
    address = mysql_db.address()
    result = cli("cleanup", "--expired", "-s", address, "--no-archive")
    assert "--create-lock-table" in result.stderr
    assert "sessionctl_lock" not in mysql_db.tables()
    cli("cleanup", "--expired", "-s", address, "--no-archive", "--create-lock-table")
    assert "sessionctl_lock" in mysql_db.tables()
