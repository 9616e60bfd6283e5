"""Every way a store can be unusable ends in one line on stderr and a documented exit code."""

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from helpers import one_line_error, storegen
from sessionctl.domain.errors import ExitCode

STORE, BUSY, USAGE = int(ExitCode.STORE), int(ExitCode.BUSY), int(ExitCode.USAGE)


@pytest.mark.parametrize(
    "command", [["list"], ["stats"], ["validate"], ["inspect", "x"], ["cleanup", "--expired"]]
)
def test_missing_store(cli, tmp_path, command):
    line = one_line_error(cli(*command, "--store", tmp_path / "nope.json", code=STORE))
    assert "does not exist" in line


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("broken.json", b'[{"session_id": "a"', "is not valid JSON"),
        ("empty.json", b"", "is empty"),
        ("latin1.json", b'[{"id": "caf\xe9"}]', "is not UTF-8"),
        ("scalar.json", b'"just a string"', "unrecognised JSON shape"),
        ("flat.json", b'{"session_id": "a", "created_at": 1}', "unrecognised JSON shape"),
        ("garbage.db", b"this is not a database at all" * 10, "is not a SQLite database"),
        ("zero.db", b"", "is empty (0 bytes)"),
        ("mystery.bin", b"\x00\x01\x02binary", "cannot tell what kind of store"),
    ],
)
def test_corrupt_or_unrecognised_stores(cli, tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    line = one_line_error(cli("list", "-s", path, code=STORE))
    assert message in line
    assert path.read_bytes() == content  # nothing was changed


def test_sqlite_with_corrupt_pages(cli, tmp_path):
    db = storegen.write_sqlite(
        tmp_path / "app.db", storegen.generate("django", 200), journal="delete"
    )
    data = bytearray(db.read_bytes())
    data[200:4000] = os.urandom(3800)  # keep the header, ruin the schema page
    db.write_bytes(bytes(data))
    line = one_line_error(cli("stats", "-s", db, code=STORE))
    assert "app.db" in line


def test_sqlite_without_a_session_table(cli, tmp_path):
    db = tmp_path / "other.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE invoices (number INTEGER, total REAL)")
    conn.close()
    line = one_line_error(cli("list", "-s", db, code=STORE))
    assert "no table" in line and "invoices" in line and "?table=" in line
    line = one_line_error(cli("list", "-s", f"sqlite:{db}?table=missing", code=STORE))
    assert "no table 'missing'" in line


def test_sqlite_with_two_session_tables_asks_which(cli, tmp_path):
    db = tmp_path / "two.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE web_sessions (session_id TEXT, expires INTEGER)")
    conn.execute("CREATE TABLE api_sessions (session_id TEXT, expires INTEGER)")
    conn.close()
    line = one_line_error(cli("list", "-s", db, code=USAGE))
    assert "api_sessions" in line and "web_sessions" in line
    cli("list", "-s", f"{db}?table=web_sessions")


def test_locked_sqlite_database_is_busy(cli, tmp_path):
    db = storegen.write_sqlite(
        tmp_path / "app.db", storegen.generate("django", 50), journal="delete"
    )
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        line = one_line_error(cli("list", "-s", db, "--busy-timeout", "0.2s", code=BUSY))
        assert "locked by another process" in line
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_reads_do_not_block_the_application_in_wal_mode(cli, tmp_path):
    db = storegen.write_sqlite(tmp_path / "app.db", storegen.generate("django", 50), journal="wal")
    writer = sqlite3.connect(db, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("DELETE FROM django_session")
    try:
        views = json.loads(cli("list", "-s", db, "-f", "json").stdout)
        assert len(views) == 50  # the application's uncommitted delete is invisible
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_unsupported_scheme_is_a_usage_error(cli):
    line = one_line_error(cli("list", "-s", "mongodb://db/app", code=USAGE))
    assert "not supported yet" in line


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--max-age", "soon"], "--max-age: not a duration"),
        (["--now", "tomorrow"], "--now"),
        (["--tz", "Mars/Olympus"], "unknown time zone"),
        (["--preset", "wordpress"], "unknown preset"),
        (["--field", "colour=red"], "unknown field role"),
        (["--field", "nonsense"], "expected ROLE=PATH"),
    ],
)
def test_bad_options_are_one_line_usage_errors(cli, tmp_path, args, fragment):
    path = storegen.write_json(tmp_path / "s.json", storegen.generate("bash-sessions", 5))
    line = one_line_error(cli("list", "-s", path, *args, code=USAGE))
    assert fragment in line


def test_inspect_unknown_id(cli, tmp_path):
    path = storegen.write_json(tmp_path / "s.json", storegen.generate("bash-sessions", 5))
    line = one_line_error(cli("inspect", "no-such-id", "-s", path, code=1))
    assert "no session 'no-such-id'" in line


def test_bad_config_file(cli, tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text("[stores.web\naddress = 1")
    line = one_line_error(cli("--config", config, "list", "-s", "web", code=USAGE))
    assert "not valid TOML" in line
    config.write_text('[stores.web]\naddress = "x.json"\ncolour = "blue"\n')
    line = one_line_error(cli("--config", config, "list", "-s", "web", code=USAGE))
    assert "unknown key(s) in [stores.web]: colour" in line
    config.write_text('[stores.web]\naddress = "x.json"\nidle_timeout = "soon"\n')
    line = one_line_error(cli("--config", config, "list", "-s", "web", code=USAGE))
    assert "idle_timeout" in line
    line = one_line_error(
        cli("--config", tmp_path / "missing.toml", "list", "-s", "web", code=USAGE)
    )
    assert "does not exist" in line


def test_unreadable_store_as_an_unprivileged_user(tmp_path, request):
    """Permission denied, for real: root reads everything, so run as `nobody`."""
    if os.geteuid() != 0:
        path = tmp_path / "secret.json"
        path.write_text("[]")
        path.chmod(0)
        runner = [sys.executable, "-m", "sessionctl"]
    else:
        setpriv = "/usr/bin/setpriv"
        if not os.path.exists(setpriv):
            pytest.fail("setpriv (util-linux) is needed to test as an unprivileged user")
        # pytest's tmp folders are private to root: use one `nobody` can traverse.
        tmp_path = Path(tempfile.mkdtemp(prefix="sessionctl-perm-"))
        request.addfinalizer(lambda: shutil.rmtree(tmp_path, ignore_errors=True))
        tmp_path.chmod(0o755)
        path = tmp_path / "secret.json"
        path.write_text("[]")
        path.chmod(0o600)
        runner = [
            setpriv,
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            sys.executable,
            "-m",
            "sessionctl",
        ]
    env = {
        **os.environ,
        "SESSIONCTL_STATE_DIR": str(tmp_path / "state"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_CONFIG_DIRS": str(tmp_path / "site"),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    result = subprocess.run(
        [*runner, "list", "-s", str(path)], capture_output=True, text=True, env=env
    )
    assert result.returncode == STORE, result.stderr
    assert result.stderr.count("\n") == 1 and "permission denied" in result.stderr


def test_a_mapping_naming_missing_columns_is_refused(cli, tmp_path):
    """A wrong preset would make every row invalid, and cleanup --invalid would empty the table."""
    db = storegen.write_sqlite(tmp_path / "app.db", storegen.generate("django", 20))
    before = db.read_bytes()
    line = one_line_error(cli("cleanup", "-s", db, "--preset", "rails", "--invalid", code=USAGE))
    assert "'session_id' is not a column of django_session" in line and "preset" in line
    line = one_line_error(cli("list", "-s", db, "--field", "group=owner", code=USAGE))
    assert "'owner' is not a column" in line
    # A field named like a role is checked as a column too.
    line = one_line_error(cli("list", "-s", db, "--field", "id=id", code=USAGE))
    assert "'id' is not a column" in line
    assert db.read_bytes() == before


@pytest.mark.parametrize(
    "args,says",
    [
        (["list", "--bogus"], "No such option: --bogus (see 'sessionctl list -h')"),
        (["list", "--limit", "abc"], "Invalid value for '--limit'"),
        (["list", "--idle-from", "bogus"], "'--idle-from'"),
        (["schedule", "bogus"], "No such command 'bogus'"),
        (["bogus"], "No such command 'bogus'"),
    ],
)
def test_usage_errors_of_the_installed_command_are_one_line(tmp_path, args, says):
    store = tmp_path / "s.json"
    store.write_text("[]")
    done = subprocess.run(
        [sys.executable, "-m", "sessionctl", *args, "-s", str(store)][: len(args) + 3],
        capture_output=True,
        text=True,
        env={**os.environ, "SESSIONCTL_STATE_DIR": str(tmp_path / "state")},
    )
    assert done.returncode == USAGE, done.stderr
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("sessionctl: "), done.stderr
    assert says in lines[0]


def test_the_bare_command_still_shows_its_help():
    done = subprocess.run([sys.executable, "-m", "sessionctl"], capture_output=True, text=True)
    assert done.returncode == USAGE
    assert "Usage: sessionctl [OPTIONS] COMMAND" in done.stdout + done.stderr
    assert "cleanup" in done.stdout + done.stderr
