"""Hostile tests of the MySQL/MariaDB store: odd names, odd addresses and option files, odd
values, secrets. Each test fails without the fix it names. Real server (tests/mysql.py): a
database of each test's own.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest  # noqa: F401


def _django(db, name: str = "django_session", expired: int = 2, active: int = 2) -> None:
    q = "`" + name.replace("`", "``") + "`"
    db.execute(
        f"CREATE TABLE {q} (session_key varchar(40) PRIMARY KEY, session_data longtext NOT NULL,"
        " expire_date datetime(6) NOT NULL)"
    )
    for i in range(expired):
        db.execute(f"INSERT INTO {q} VALUES ('old{i}', 'x', UTC_TIMESTAMP(6) - INTERVAL 1 HOUR)")
    for i in range(active):
        db.execute(f"INSERT INTO {q} VALUES ('new{i}', 'x', UTC_TIMESTAMP(6) + INTERVAL 1 HOUR)")


def _keys(db, name: str = "django_session") -> list[str]:
    q = "`" + name.replace("`", "``") + "`"
    return sorted(k for (k,) in db.query(f"SELECT session_key FROM {q}"))


def test_a_percent_in_the_table_name_does_not_break_the_real_run(cli, mysql_db, state_dir):
    """Was: a table named sess%s passed the dry run, then the real cleanup failed with PyMySQL's
    'not enough arguments for format string' (its % formatting took the name's %s)."""
    _django(mysql_db, "sess%s")
    address = mysql_db.address("sess%s")
    dry = cli("cleanup", "--store", address, "--expired", "--dry-run", "--format", "json")
    assert json.loads(dry.stdout)["selected"] == 2
    real = cli("cleanup", "--store", address, "--expired", "--yes", "--format", "json")
    assert json.loads(real.stdout)["deleted"] == 2, real.stderr
    assert _keys(mysql_db, "sess%s") == ["new0", "new1"]
    archive = next(state_dir.rglob("*.ndjson.gz"))
    cli("restore", archive)
    assert _keys(mysql_db, "sess%s") == ["new0", "new1", "old0", "old1"]


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("password = Canary-pw-7f3e\nuser = root\n", "line 1 comes before any section header"),
        ("[client]\nuser = root\nuser = x\npassword = Canary-pw-7f3e\n", "'user' is given twice"),
        ("[client]\npassword = Canary-pw-7f3e\n[client]\nuser = root\n", "[client] is given twice"),
        ("[client]\npassword = Canary-pw-7f3e\nport = Canary-pw-7f3e\n", "port in [client]"),
        ("[client]\npassword = Canary-pw-7f3e\nport\n", "port in [client]"),
        (b"\xff\xfe[client]\npassword = Canary-pw-7f3e\n", "not UTF-8"),
        (None, "no such file"),
    ],
)
def test_a_broken_option_file_is_one_line_without_its_text(cli, mysql_db, tmp_path, text, said):
    """Was: exit 70 for each, and a file without a section header printed its first line:
    'internal error: MissingSectionHeaderError: ... line: 1 'password = <the password>'';
    a named option file that does not exist was silently ignored (another user connected)."""
    _django(mysql_db)
    path = tmp_path / "client.cnf"
    if isinstance(text, bytes):
        path.write_bytes(text)
    elif text is not None:
        path.write_text(text)
    address = f"{mysql_db.address('django_session')}&option_file={path}"
    for command in (("stats",), ("cleanup", "--expired", "--dry-run")):
        result = cli(*command, "--store", address, code=3)
        output = result.stdout + result.stderr
        assert "Canary-pw-7f3e" not in output
        line = [x for x in result.stderr.splitlines() if x.strip()]
        assert len(line) == 1 and said in line[0] and str(path) in line[0], output
    assert len(_keys(mysql_db)) == 4


@pytest.mark.parametrize(
    "address",
    [
        "mysql://app:123/Canary7f3e@127.0.0.1:3306/db?table=django_session",
        "mysql://app:Canary7f3e/x@127.0.0.1:3306/db?table=django_session",
        "mysql://app:Cn@r:Canary7f3e/%?#pw@127.0.0.1/db?table=django_session",
        "mysql://app:Canary7f3e?x@127.0.0.1:3306/db",
        "mysql://app:Canary7f3e#x@127.0.0.1:3306/db",
    ],
)
def test_an_unencoded_password_is_refused_without_echoing_any_of_it(cli, address):
    """Was: a password holding / ? or # split the address early, and what followed its first
    part was taken for the host, port or database and printed: `mysql://app:123/Canary...@h/db`
    was 'cannot connect to MySQL at app:123/Canary...@h/db' (and that was the store's display)."""
    result = cli("stats", "--store", address, code=2)
    output = result.stdout + result.stderr
    assert "Canary7f3e" not in output and "123/" not in output, output
    assert "percent-encode" in output


def test_two_routes_and_two_users_meet_one_get_lock(mysql_db):
    """Was: GET_LOCK's name came from the address's host spelling, so a run through
    `localhost` (or a socket, or another Galera node's lease) and one through 127.0.0.1 took
    two locks and went at once on one table."""
    from urllib.parse import urlsplit

    from sessionctl.domain.errors import SessionctlError
    from sessionctl.stores import open_store, parse_address

    _django(mysql_db)
    user = f"a{mysql_db.name[-12:]}"
    for host in ("%", "localhost"):
        mysql_db.execute(f"CREATE USER '{user}'@'{host}'")
        mysql_db.execute(f"GRANT ALL ON `{mysql_db.name}`.* TO '{user}'@'{host}'")
    try:
        url = urlsplit(mysql_db.address("django_session"))
        first = open_store(
            parse_address(url._replace(netloc=f"root@127.0.0.1:{url.port or 3306}").geturl())
        )
        second = open_store(
            parse_address(
                url._replace(netloc=f"{user}@localhost:{url.port or 3306}")
                .geturl()
                .replace("table=django_session", "table=DJANGO_SESSION")
            )
        )
        try:
            assert first.address.identity != second.address.identity  # two routes
            with (
                first.cross_host_lock(first.address.identity),
                pytest.raises(SessionctlError) as caught,
                second.cross_host_lock(second.address.identity),
            ):
                pass
            assert caught.value.code == 4
            with second.cross_host_lock(second.address.identity):  # released: free again
                pass
        finally:
            first.close()
            second.close()
    finally:
        for host in ("%", "localhost"):
            mysql_db.execute(f"DROP USER '{user}'@'{host}'")


def _engine_table(db, engine: str) -> None:
    db.execute(
        "CREATE TABLE django_session (session_key varchar(40) PRIMARY KEY,"
        " session_data longtext NOT NULL, expire_date datetime(6) NOT NULL)"
        f" ENGINE={engine}"
    )
    db.execute(
        "INSERT INTO django_session VALUES ('old0', 'x', UTC_TIMESTAMP(6) - INTERVAL 1 HOUR),"
        " ('old1', 'x', UTC_TIMESTAMP(6) - INTERVAL 1 HOUR),"
        " ('new0', 'x', UTC_TIMESTAMP(6) + INTERVAL 1 HOUR)"
    )


@pytest.mark.parametrize("pushdown", ["1", "0"])
@pytest.mark.parametrize("engine", ["Aria", "MyISAM"])
def test_a_table_without_transactions_is_cleaned_and_restored(
    cli, mysql_db, state_dir, monkeypatch, engine, pushdown
):
    """Was (Aria): every batch failed on 'The storage engine for the table doesn't support
    SAVEPOINT' after its rows were archived: nothing could be removed, nor restored."""
    monkeypatch.setenv("SESSIONCTL_PUSHDOWN", pushdown)
    _engine_table(mysql_db, engine)
    address = mysql_db.address("django_session")
    result = cli("cleanup", "--store", address, "--expired", "--yes", "--format", "json")
    assert json.loads(result.stdout)["deleted"] == 2, result.stderr
    assert _keys(mysql_db) == ["new0"]
    cli("restore", next(state_dir.rglob("*.ndjson.gz")))
    assert _keys(mysql_db) == ["new0", "old0", "old1"]


@pytest.mark.parametrize("pushdown", ["1", "0"])
def test_on_myisam_a_session_renewed_during_the_batch_is_not_removed(
    cli, mysql_db, monkeypatch, pushdown
):
    """Was: MyISAM has no row locks (FOR UPDATE locks nothing), so an application renewing a
    session between the batch's compare and its DELETE had its write succeed, then the row
    removed. Now the batch holds the table (LOCK TABLES ... WRITE): the renewal lands before
    the batch reads the row (it stays) or after it is gone (the UPDATE matches nothing)."""
    import threading

    from sessionctl.stores.sql.mysql import MysqlStore

    monkeypatch.setenv("SESSIONCTL_PUSHDOWN", pushdown)
    _engine_table(mysql_db, "MyISAM")
    touched: list[int] = []
    threads: list[threading.Thread] = []
    attach = MysqlStore._attach_children

    def renew() -> None:
        touched.append(
            mysql_db.execute(
                "UPDATE django_session SET expire_date = UTC_TIMESTAMP(6) + INTERVAL 1 DAY"
                " WHERE session_key = 'old0'"
            )
        )

    def between(self, conn, rows):  # after the compare, before the DELETE
        if not threads:
            threads.append(threading.Thread(target=renew))
            threads[0].start()
            threads[0].join(timeout=1.0)
        return attach(self, conn, rows)

    monkeypatch.setattr(MysqlStore, "_attach_children", between)
    cli("cleanup", "--store", mysql_db.address("django_session"), "--expired", "--yes")
    threads[0].join(timeout=10)
    assert touched, "the application's write never finished"
    # The application's UPDATE said it renewed the session: then the session is there.
    assert touched[0] == 0 or "old0" in _keys(mysql_db), touched


def test_a_read_only_server_is_named_read_only_before_anything_is_done(cli, mysql_db, state_dir):
    """Was: 'cannot check MySQL at ...: The MariaDB server is running with the --read-only
    option so it cannot execute this statement' (the server's words, no hint)."""
    _django(mysql_db)
    user = f"w{mysql_db.name[-12:]}"
    for host in ("%", "localhost"):
        mysql_db.execute(f"CREATE USER '{user}'@'{host}'")
        mysql_db.execute(f"GRANT ALL ON `{mysql_db.name}`.* TO '{user}'@'{host}'")
    address = mysql_db.address("django_session").replace("root@", f"{user}@")
    mysql_db.execute("SET GLOBAL read_only = ON")
    try:
        result = cli("cleanup", "--store", address, "--expired", "--yes", code=3)
    finally:
        mysql_db.execute("SET GLOBAL read_only = OFF")
        for host in ("%", "localhost"):
            mysql_db.execute(f"DROP USER '{user}'@'{host}'")
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "is read-only" in lines[0] and "nothing was changed" in lines[0]
    assert len(_keys(mysql_db)) == 4 and not list(state_dir.rglob("*.ndjson.gz"))


@pytest.mark.parametrize("table", ["x'y", "a:b", "q'%s\\"])
def test_quotes_colons_and_backslashes_in_a_table_name_pass_the_sql_judge(
    cli, mysql_db, state_dir, table
):
    """Was: a table named x'y failed every SQL-judged command ('You have an error in your SQL
    syntax'): the judge's `:name` parameters were found by splitting the SQL on `'`, which took
    the name's quote for a literal's."""
    _django(mysql_db, table)
    address = mysql_db.address(table)
    dry = cli("cleanup", "--store", address, "--expired", "--dry-run", "--format", "json")
    assert json.loads(dry.stdout)["selected"] == 2
    real = cli("cleanup", "--store", address, "--expired", "--yes", "--format", "json")
    assert json.loads(real.stdout)["deleted"] == 2
    assert _keys(mysql_db, table) == ["new0", "new1"]


def test_an_allowed_value_with_a_backslash_is_judged_in_sql_as_in_python(
    cli, mysql_db, tmp_path, monkeypatch
):
    """Was: rules.allowed = ["a\\\\"] made the SQL judge write 'a\\' (MySQL reads the
    backslash as an escape): a syntax error, exit 3, on every command; a crafted value could
    change the query's meaning."""
    _django(mysql_db, expired=0, active=0)
    mysql_db.execute("ALTER TABLE django_session ADD COLUMN kind varchar(40)")
    for key, kind in [("s1", "a\\"), ("s2", "a"), ("s3", "b"), ("s4", "a\\\\"), ("s5", "') OR ('")]:
        mysql_db.execute(
            "INSERT INTO django_session VALUES (%s, 'x', UTC_TIMESTAMP() + INTERVAL 1 DAY, %s)",
            (key, kind),
        )
    config = tmp_path / "config.toml"
    config.write_text(
        f'[stores.web]\naddress = "{mysql_db.address("django_session")}"\npreset = "django"\n'
        '[stores.web.rules]\nallowed = { kind = ["a\\\\", "b"] }\n'
    )
    monkeypatch.setenv("SESSIONCTL_CONFIG", str(config))
    chosen = []
    for pushdown in ("1", "0"):
        monkeypatch.setenv("SESSIONCTL_PUSHDOWN", pushdown)
        result = cli("cleanup", "--store", "web", "--invalid", "--dry-run", "--format", "json")
        chosen.append(sorted(s["id"] for s in json.loads(result.stdout)["sessions"]))
    assert chosen[0] == chosen[1] == ["s2", "s4", "s5"], chosen


def test_restore_brings_back_odd_column_types_exactly(cli, mysql_db, state_dir):
    """Was: a table with a generated column could not be restored at all ('The value specified
    for generated column ... has been ignored', exit 3), and a TIME value came back wrong
    (-12:00:00 archived as -43200.0 seconds, which MySQL reads as -4:32:00)."""
    mysql_db.execute(
        "CREATE TABLE django_session (session_key varbinary(40) PRIMARY KEY,"
        " session_data blob NOT NULL, expire_date datetime(6) NOT NULL,"
        " note varchar(20) CHARACTER SET latin1, n3 varchar(20) CHARACTER SET utf8mb3,"
        " st SET('a','b','c'), en ENUM('x','y'),"
        " gen varchar(90) AS (CONCAT(HEX(session_key), '-', note)) VIRTUAL,"
        " sgen int AS (LENGTH(session_data)) STORED, js JSON, fl FLOAT, dc DECIMAL(10,3),"
        " bt BIT(3), yr YEAR, tm TIME(3))"
    )
    mysql_db.execute(
        "INSERT INTO django_session (session_key, session_data, expire_date, note, n3, st, en,"
        " js, fl, dc, bt, yr, tm) VALUES"
        " (X'FF00', X'DEADBEEF', UTC_TIMESTAMP() - INTERVAL 1 DAY, 'café', 'naïve', 'a,c', 'y',"
        "  '{\"a\": 1}', 1.1, 2.5, b'101', 2024, '-12:00:00.250'),"
        " ('old', 'x', UTC_TIMESTAMP() - INTERVAL 1 DAY, NULL, NULL, '', NULL, NULL, NULL, NULL,"
        "  NULL, NULL, '838:59:59'),"
        " ('new', 'x', UTC_TIMESTAMP() + INTERVAL 1 DAY, 'é', 'é', 'b', 'x', '[1]', 0.5, 1,"
        "  b'1', 1999, '00:00:01')"
    )
    before = mysql_db.query("CHECKSUM TABLE django_session")[0][1]
    address = mysql_db.address("django_session")
    real = cli("cleanup", "--store", address, "--expired", "--yes", "--format", "json")
    assert json.loads(real.stdout)["deleted"] == 2
    cli("restore", next(state_dir.rglob("*.ndjson.gz")))
    assert mysql_db.query("CHECKSUM TABLE django_session")[0][1] == before
    assert mysql_db.scalar("SELECT tm FROM django_session WHERE session_key = X'FF00'") == (
        -dt.timedelta(hours=12, milliseconds=250)
    )


@pytest.mark.parametrize(
    "tail",
    [
        "127.0.0.1/db?table=t&connect_timeout=abc",
        "127.0.0.1/db?table=t&connect_timeout=-1",
        "127.0.0.1/db?table=t&connect_timeout=0",
        "127.0.0.1/db?table=t&connect_timeout=99999999999999999999",
        "[::1/db?table=t",
        "127.0.0.1:99999999999/db?table=t",
    ],
)
def test_a_bad_timeout_port_or_ipv6_host_is_a_usage_error(cli, tail):
    """Was: exit 70 (ValueError: invalid literal for int(), connect_timeout should be >0 and
    <=31536000, Invalid IPv6 URL); a port past 65535 reached the driver."""
    result = cli("stats", "--store", f"mysql://app@{tail}", code=2)
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "internal error" not in lines[0], result.stderr


def test_a_password_beyond_ascii_logs_in_and_a_wrong_one_is_not_quoted(
    cli, mysql_db, tmp_path, monkeypatch
):
    """Was: PyMySQL encodes a str password as latin-1: 'pé' (set through a UTF-8 client, as the
    mysql client and every framework do) was refused, and 'p€' was exit 70 quoting the password's
    character ("'latin-1' codec can't encode character '\\u20ac' in position 1")."""
    _django(mysql_db)
    user, password = f"u{mysql_db.name[-12:]}", "pé€-Canary"
    for host in ("%", "localhost"):
        spelled = host.replace("%", "%%")  # a query with parameters is %-formatted
        mysql_db.execute(f"CREATE USER '{user}'@'{spelled}' IDENTIFIED BY %s", (password,))
        mysql_db.execute(f"GRANT ALL ON `{mysql_db.name}`.* TO '{user}'@'{host}'")
    try:
        address = mysql_db.address("django_session").replace("root@", f"{user}@")
        config = tmp_path / "config.toml"
        config.write_text(f'[stores.web]\naddress = "{address}"\npassword_env = "APP_PW"\n')
        monkeypatch.setenv("SESSIONCTL_CONFIG", str(config))
        monkeypatch.setenv("APP_PW", password)
        cli("stats", "--store", "web")
        option_file = tmp_path / "client.cnf"
        option_file.write_text(f"[client]\nuser = {user}\npassword = {password}\n")
        bare = mysql_db.address("django_session").replace("root@", "")
        cli("stats", "--store", f"{bare}&option_file={option_file}")
        monkeypatch.setenv("APP_PW", "wrong€😀Canary")
        result = cli("stats", "--store", "web", code=3)
        output = result.stdout + result.stderr
        assert "€" not in output and "Canary" not in output and "\\u20ac" not in output, output
        assert "access denied" in output
    finally:
        for host in ("%", "localhost"):
            mysql_db.execute(f"DROP USER '{user}'@'{host}'")


@pytest.mark.parametrize("pushdown", ["1", "0"])
def test_a_delete_trigger_refusing_one_row_fails_that_row_only(
    cli, mysql_db, monkeypatch, pushdown
):
    """Was: a BEFORE DELETE trigger's SIGNAL for one session stopped the whole run (exit 3,
    'cannot write ...: keep old1'), nothing removed; a foreign key's refusal already failed
    only its row."""
    monkeypatch.setenv("SESSIONCTL_PUSHDOWN", pushdown)
    _django(mysql_db, expired=3, active=1)
    mysql_db.execute(
        "CREATE TRIGGER keep_one BEFORE DELETE ON django_session FOR EACH ROW BEGIN"
        " IF OLD.session_key = 'old1' THEN SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'keep old1';"
        " END IF; END"
    )
    address = mysql_db.address("django_session")
    result = cli(
        "cleanup", "--store", address, "--expired", "--yes", "--allow-triggers",
        "--format", "json", code=1,
    )  # fmt: skip
    report = json.loads(result.stdout)
    assert report["deleted"] == 2 and report["failed"] == 1, report
    assert [e["sessionId"] for e in report["errors"]] == ["old1"]
    assert _keys(mysql_db) == ["new0", "old1"]


@pytest.mark.parametrize("engine", ["InnoDB", "MyISAM"])
def test_a_table_locked_by_the_application_is_busy_not_a_hang(mysql_db, tmp_path, engine):
    """Was: an application holding LOCK TABLES ... READ (or an ALTER waiting on a metadata
    lock) made the cleanup wait for lock_wait_timeout, a day by default; with that lowered, the
    lock wait timeout outside a batch was exit 70. Now: lock_timeout bounds it, exit 4."""
    import os
    import subprocess
    import sys
    import threading
    from pathlib import Path

    _engine_table(mysql_db, engine)
    holder = mysql_db.connect()
    started = threading.Event()

    def hold() -> None:
        with holder.cursor() as cur:
            cur.execute("LOCK TABLES django_session READ")
            started.set()
            try:
                cur.execute("SELECT SLEEP(20)")
            except Exception:  # noqa: BLE001  (ended by KILL QUERY)
                pass

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert started.wait(10)
    try:
        run = subprocess.run(
            [str(Path(sys.executable).parent / "sessionctl"), "cleanup", "--store",
             mysql_db.address("django_session"), "--expired", "--yes"],
            env={**os.environ, "SESSIONCTL_STATE_DIR": str(tmp_path / "state")},
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        mysql_db.execute(f"KILL QUERY {holder.thread_id()}")
        thread.join(10)
        holder.close()
    assert run.returncode == 4, run.stderr
    assert "internal error" not in run.stderr and len(run.stderr.strip().splitlines()) == 1
    assert _keys(mysql_db) == ["new0", "old0", "old1"]


def test_a_server_with_no_backslash_escapes_judges_as_python_does(
    cli, mysql_db, tmp_path, monkeypatch
):
    """Was: with NO_BACKSLASH_ESCAPES in the server's sql_mode (stood in for by each
    connection's init_command), the judge's doubled backslash meant two backslashes: a session
    whose value is the allowed 'a\\' was chosen as not_allowed by the SQL judge only."""
    import pymysql

    real = pymysql.connect

    def connect(*args, **kwargs):
        kwargs["init_command"] = (
            "SET SESSION sql_mode = CONCAT(@@sql_mode, ',NO_BACKSLASH_ESCAPES')"
        )
        return real(*args, **kwargs)

    _django(mysql_db, expired=0, active=0)
    mysql_db.execute("ALTER TABLE django_session ADD COLUMN kind varchar(40)")
    for key, kind in [("s1", "a\\"), ("s2", "a"), ("s3", "b"), ("s'4", "a\\\\")]:
        mysql_db.execute(
            "INSERT INTO django_session VALUES (%s, 'x', UTC_TIMESTAMP() - INTERVAL 1 DAY, %s)",
            (key, kind),
        )
    config = tmp_path / "config.toml"
    config.write_text(
        f'[stores.web]\naddress = "{mysql_db.address("django_session")}"\npreset = "django"\n'
        '[stores.web.rules]\nallowed = { kind = ["a\\\\", "b"] }\n'
    )
    monkeypatch.setenv("SESSIONCTL_CONFIG", str(config))
    monkeypatch.setattr(pymysql, "connect", connect)
    chosen = []
    for pushdown in ("1", "0"):
        monkeypatch.setenv("SESSIONCTL_PUSHDOWN", pushdown)
        result = cli("cleanup", "--store", "web", "--invalid", "--dry-run", "--format", "json")
        chosen.append(sorted(s["id"] for s in json.loads(result.stdout)["sessions"]))
    assert chosen[0] == chosen[1] == ["s'4", "s2"], chosen
    result = cli("cleanup", "--store", "web", "--expired", "--yes", "--format", "json")
    assert json.loads(result.stdout)["deleted"] == 4
    assert _keys(mysql_db) == []


@pytest.mark.parametrize(
    "mode", ["EMPTY_STRING_IS_NULL", "PAD_CHAR_TO_FULL_LENGTH", "ORACLE", "NO_BACKSLASH_ESCAPES"]
)
def test_a_server_sql_mode_does_not_change_what_is_chosen(
    cli, mysql_db, tmp_path, monkeypatch, mode
):
    """Was: EMPTY_STRING_IS_NULL made the tool's own SET sql_mode fail (every command exit 3,
    'error in your SQL syntax'); PAD_CHAR_TO_FULL_LENGTH read CHAR values padded, so every
    allowed value was not_allowed. The server's sql_mode is stood in for by init_command."""
    import pymysql

    real = pymysql.connect

    def connect(*args, **kwargs):
        kwargs["init_command"] = f"SET SESSION sql_mode = CONCAT(@@sql_mode, ',{mode}')"
        return real(*args, **kwargs)

    mysql_db.execute(
        "CREATE TABLE django_session (session_key varchar(40) PRIMARY KEY, session_data longtext"
        " NOT NULL, expire_date datetime(6) NOT NULL, kind char(10))"
    )
    mysql_db.execute(
        "INSERT INTO django_session VALUES ('s1', '', UTC_TIMESTAMP() + INTERVAL 1 HOUR, 'a'),"
        " ('s2', 'x', UTC_TIMESTAMP() + INTERVAL 1 HOUR, ''),"
        " ('s3', 'y', UTC_TIMESTAMP() - INTERVAL 1 HOUR, 'b'),"
        " ('s4', 'z', UTC_TIMESTAMP() + INTERVAL 1 HOUR, 'c'),"
        " ('s5', 'z', UTC_TIMESTAMP() + INTERVAL 1 HOUR, 'a')"
    )
    config = tmp_path / "config.toml"
    config.write_text(
        f'[stores.web]\naddress = "{mysql_db.address("django_session")}"\npreset = "django"\n'
        '[stores.web.rules]\nrequired = ["session_data", "kind"]\n'
        'allowed = { kind = ["a", "b", ""] }\n'
    )
    monkeypatch.setenv("SESSIONCTL_CONFIG", str(config))
    monkeypatch.setattr(pymysql, "connect", connect)
    expected = [("s1", ["missing_field"]), ("s2", ["missing_field"]), ("s3", ["expired"]),
                ("s4", ["not_allowed"])]  # fmt: skip
    for pushdown in ("1", "0"):
        monkeypatch.setenv("SESSIONCTL_PUSHDOWN", pushdown)
        result = cli(
            "cleanup", "--store", "web", "--invalid", "--expired", "--dry-run", "--format", "json"
        )
        chosen = sorted((s["id"], s["reasons"]) for s in json.loads(result.stdout)["sessions"])
        assert chosen == expected, (pushdown, chosen)


def test_a_short_server_wait_timeout_does_not_cut_a_run_whose_hooks_take_time(
    cli, mysql_db, monkeypatch
):
    """Was: the tool's connections sat idle while hooks ran; a server whose wait_timeout is
    short (stood in for by init_command) cut them, and the run ended 'cannot read ...: the
    server closed the connection' (exit 3) after the hooks had run, with nothing removed."""
    import pymysql

    real = pymysql.connect

    def connect(*args, **kwargs):
        kwargs["init_command"] = "SET SESSION wait_timeout = 1"
        return real(*args, **kwargs)

    _django(mysql_db, expired=2, active=1)
    monkeypatch.setattr(pymysql, "connect", connect)
    result = cli(
        "cleanup", "--store", mysql_db.address("django_session"), "--expired", "--yes",
        "--hook", "sleep 1.5", "--format", "json",
    )  # fmt: skip
    assert json.loads(result.stdout)["deleted"] == 2
    assert _keys(mysql_db) == ["new0"]


def test_explain_names_foreign_keys_that_set_null_on_delete(cli, mysql_db):
    """Was: a foreign key ON DELETE SET NULL to the session table was not named anywhere: the
    delete clears those rows' links, which no archive keeps and restore cannot put back."""
    _django(mysql_db)
    mysql_db.execute(
        "CREATE TABLE orders (id int PRIMARY KEY, sk varchar(40), FOREIGN KEY (sk)"
        " REFERENCES django_session (session_key) ON DELETE SET NULL)"
    )
    result = cli(
        "cleanup", "--store", mysql_db.address("django_session"), "--expired", "--dry-run",
        "--explain",
    )  # fmt: skip
    assert "set_null_on_delete: orders.orders_ibfk_1 (SET NULL, not archived)" in result.stderr
