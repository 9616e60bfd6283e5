"""Hostile tests of the MySQL/MariaDB store: odd names, odd addresses and option files, odd
values, secrets. Each test fails without the fix it names. Real server (tests/mysql.py): a
database of each test's own.
"""

from __future__ import annotations

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
