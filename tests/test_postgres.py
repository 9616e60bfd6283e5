"""PostgreSQL stores against the real server, written by the real frameworks (tests/pg.py).

Each test has a database of its own. After sessionctl's cleanup the frameworks' own cleanups
find nothing left to do and every survivor still loads; what goes is archived (Spring's
attribute rows with their session) and comes back with `restore`; bad input is one line with
exit 3 that names host:port and database and never a password; one run per store across
processes (pg_try_advisory_lock); a connection killed mid-cleanup loses nothing.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pg import (
    connect_pg_simple_load,
    connect_pg_simple_prune,
    connect_pg_simple_store,
    django_clearsessions,
    django_load,
    django_pg_store,
    flask_session_cleanup,
    flask_session_pg_store,
    rails_pg_table,
    spring_pg_tables,
)

SESSIONCTL = str(Path(sys.executable).parent / "sessionctl")


def archived(state_dir: Path) -> list[dict]:
    entries = []
    for path in sorted(state_dir.rglob("*.ndjson.gz")):
        lines = gzip.decompress(path.read_bytes()).decode().splitlines()
        entries.extend(json.loads(line) for line in lines[1:])
    return entries


def checksum(db, table: str, key: str) -> str:
    return db.scalar(f"SELECT md5(string_agg(t::text, '|' ORDER BY t.\"{key}\")) FROM {table} t")


def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


# --- the frameworks ------------------------------------------------------------------------------


def test_django_clearsessions_finds_nothing_after_cleanup_and_survivors_load(cli, pg_db, state_dir):
    written = django_pg_store(pg_db, [-86400, -60, -5, 600, 3600, 86400])
    result = cli("cleanup", "--store", pg_db.address(), "--expired", "--yes", "--format", "json")
    report = json.loads(result.stdout)
    assert report["deleted"] == len(written.expired) == 3, report
    assert django_clearsessions(pg_db)["removed"] == 0
    loaded = django_load(pg_db, written.active)
    assert all(loaded[key] for key in written.active), loaded
    assert sorted(e["id"] for e in archived(state_dir)) == sorted(written.expired)


def test_django_dry_run_leaves_the_table_byte_identical(cli, pg_db):
    django_pg_store(pg_db, [-3600, -60, 3600])
    before = checksum(pg_db, "django_session", "session_key")
    result = cli("cleanup", "--store", pg_db.address(), "--expired", "--dry-run")
    assert "Would remove" in result.stdout
    assert checksum(pg_db, "django_session", "session_key") == before


def test_connect_pg_simple_prune_removes_nothing_after_cleanup(cli, pg_db, node_modules, state_dir):
    written = connect_pg_simple_store(pg_db, [-7200, -30, 900, 7200])
    result = cli("cleanup", "--store", pg_db.address(), "--expired", "--yes", "--explain")
    assert "TimeZone" in result.stderr, result.stderr  # --explain says how expire is read
    assert "preset: connect-pg-simple" in result.stderr
    assert connect_pg_simple_prune(pg_db)["removed"] == 0
    loaded = connect_pg_simple_load(pg_db, written.active)
    assert all(loaded[sid] for sid in written.active), loaded
    assert sorted(e["id"] for e in archived(state_dir)) == sorted(written.expired)


def test_connect_pg_simple_naive_expire_is_read_in_the_servers_timezone(cli, pg_db, node_modules):
    """A database whose TimeZone is not UTC: the app writes `expire` in it, and so it is read."""
    pg_db.execute(f"ALTER DATABASE \"{pg_db.name}\" SET TimeZone = 'America/New_York'")
    written = connect_pg_simple_store(pg_db, [-1800, 1800], timezone="America/New_York")
    result = cli("list", "--store", pg_db.address(), "--format", "json")
    status = {row["id"]: row["status"] for row in json.loads(result.stdout)}
    assert status == {written.expired[0]: "expired", written.active[0]: "active"}, status


def test_flask_session_cleanup_finds_nothing_after_ours(cli, pg_db, state_dir):
    written = flask_session_pg_store(pg_db, [-3600, -10, 3600])
    # msgpack (or pickle) bytes: shown as redacted bytes, never decoded.
    shown = cli("inspect", "--store", pg_db.address(), written.extra["store_ids"][-1]).stdout
    assert '"data": "<redacted: ' in shown, shown
    cli("cleanup", "--store", pg_db.address(), "--expired", "--yes")
    assert flask_session_cleanup(pg_db)["removed"] == 0
    ids = sorted(e["id"] for e in archived(state_dir))
    # Flask-Session's ids carry its "session:" prefix in the table.
    expected = sorted(
        store_id
        for sid, store_id in zip(written.ids, written.extra["store_ids"])
        if sid in written.expired
    )
    assert ids == expected


def test_rails_marshal_payload_is_opaque_and_old_sessions_go(cli, pg_db, state_dir):
    written = rails_pg_table(pg_db, [40 * 86400, 3600])
    old, recent = written.ids
    shown = cli("inspect", "--store", pg_db.address(), old).stdout
    assert "BAh7" not in shown  # Base64(Marshal) is never shown, let alone decoded
    cli("cleanup", "--store", pg_db.address(), "--expired", "--yes")
    assert [r[0] for r in pg_db.query("SELECT session_id FROM sessions")] == [recent]


def test_spring_attributes_go_with_their_session_and_come_back(cli, pg_db, state_dir):
    written = spring_pg_tables(pg_db, [-600, 600])
    expired_primary = written.extra["primary_ids"][0]
    cli("cleanup", "--store", pg_db.address(), "--expired", "--yes")
    assert pg_db.count("spring_session") == 1
    attributes = "spring_session_attributes"
    assert pg_db.count(attributes, f"session_primary_id = '{expired_primary}'") == 0
    (entry,) = archived(state_dir)
    assert entry["id"] == written.expired[0]
    children = entry["children"][attributes]
    assert children and children[0]["attribute_name"] == "greeting"
    (archive,) = state_dir.rglob("*.ndjson.gz")
    cli("restore", archive)
    assert pg_db.count("spring_session") == 2
    row = pg_db.query(
        f"SELECT attribute_bytes FROM {attributes} WHERE session_primary_id = %s",
        (expired_primary,),
    )
    assert bytes(row[0][0]).startswith(b"\xac\xed\x00\x05")  # the Java serialization, as it was


# --- bad input -----------------------------------------------------------------------------------


def test_server_down_is_one_line_naming_host_and_database(cli):
    result = cli("stats", "--store", "postgresql://postgres@127.0.0.1:1/appdb", code=3)
    line = one_line(result.stderr)
    assert "127.0.0.1:1" in line and "appdb" in line and "not answering" in line, line


def test_unknown_database_is_one_line(cli, pg_db):
    address = pg_db.address().replace(pg_db.name, pg_db.name + "_missing")
    line = one_line(cli("stats", "--store", address, code=3).stderr)
    assert f"{pg_db.name}_missing" in line and "does not exist" in line, line


def test_unknown_table_lists_the_session_like_tables(cli, pg_db):
    django_pg_store(pg_db, [3600])
    line = one_line(cli("stats", "--store", pg_db.address(table="nope"), code=3).stderr)
    assert "nope" in line and "django_session" in line, line


def test_no_delete_privilege_is_found_before_anything_is_removed(cli, pg_db, state_dir):
    django_pg_store(pg_db, [-3600, 3600])
    role = f"reader_{pg_db.name[-6:]}"
    pg_db.execute(f"DROP ROLE IF EXISTS {role}")
    pg_db.execute(f"CREATE ROLE {role} LOGIN")
    try:
        pg_db.execute(f"GRANT SELECT ON django_session TO {role}")
        address = pg_db.address().replace("postgres@", f"{role}@")
        line = one_line(cli("cleanup", "--store", address, "--expired", "--yes", code=3).stderr)
        assert "DELETE" in line and "127.0.0.1:5432" in line, line
        assert pg_db.count("django_session") == 2
        assert archived(state_dir) == []
    finally:
        pg_db.execute(f"REVOKE ALL ON django_session FROM {role}")
        pg_db.execute(f"DROP ROLE {role}")


def test_missing_driver_is_one_line_with_the_install_commands(cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)
    line = one_line(cli("stats", "--store", "postgresql://u@db.example:5432/app", code=3).stderr)
    assert "pip install 'sessionctl[postgres]'" in line and "pipx" in line, line


def test_password_file_must_be_private(cli, tmp_path, pg_db):
    django_pg_store(pg_db, [3600])
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    secret.chmod(0o644)
    config = tmp_path / "config.toml"
    config.write_text(f'[stores.web]\naddress = "{pg_db.address()}"\npassword_file = "{secret}"\n')
    line = one_line(cli("--config", config, "stats", "--store", "web", code=2).stderr)
    assert "chmod 600" in line and "s3cret" not in line
    secret.chmod(0o600)
    cli("--config", config, "stats", "--store", "web")


CANARY = "Canary-pw-7f3a9"


def test_a_password_in_the_address_never_appears_anywhere(cli, pg_db, tmp_path, state_dir):
    """Trust authentication takes any password: the canary reaches the server and must reach
    nothing else: output, errors, --explain, the audit log, history, archives, crontab lines."""
    django_pg_store(pg_db, [-3600, 3600])
    address = pg_db.address().replace("postgres@", f"postgres:{CANARY}@")
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
    bad = address.replace(pg_db.name, "missing_db")
    result = cli("stats", "--store", bad, code=3)
    seen += [result.stdout, result.stderr]
    cron_d = tmp_path / "cron.d"
    cron_d.mkdir()
    result = cli(
        "schedule", "install", "pgweb", "--every", "1h", "--system", "--",
        "cleanup", "--expired", "--store", address,
        env={"SESSIONCTL_CRON_D": str(cron_d)},
    )  # fmt: skip
    seen += [result.stdout, result.stderr]
    files = [p for p in [*state_dir.rglob("*"), *cron_d.rglob("*")] if p.is_file()]
    assert any(p.suffix == ".gz" for p in files) and any(cron_d.iterdir())
    for path in files:
        data = path.read_bytes()
        if path.suffix == ".gz":
            data = gzip.decompress(data)
        assert CANARY.encode() not in data, path
    for text in seen:
        assert CANARY not in text, text


# --- one run at a time, and a connection killed mid-cleanup --------------------------------------


def test_a_second_run_on_any_host_exits_4(pg_db, tmp_path):
    django_pg_store(pg_db, [-3600] * 3 + [3600])
    env = {**os.environ, "NO_COLOR": "1"}
    slow = subprocess.Popen(
        [SESSIONCTL, "cleanup", "--store", pg_db.address(), "--expired", "--yes",
         "--batch-size", "1", "--hook", "sleep 1"],
        env={**env, "SESSIONCTL_STATE_DIR": str(tmp_path / "host-a")},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.time() + 20
        while time.time() < deadline:  # until the first run holds the advisory lock
            held = pg_db.scalar("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
            if held:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the first run never took the advisory lock")
        second = [SESSIONCTL, "cleanup", "--store", pg_db.address(), "--expired", "--yes"]
        env_b = {**env, "SESSIONCTL_STATE_DIR": str(tmp_path / "host-b")}
        loud = subprocess.run(second, env=env_b, capture_output=True, text=True)
        quiet = subprocess.run([*second, "-q"], env=env_b, capture_output=True, text=True)
    finally:
        out, err = slow.communicate(timeout=60)
    assert loud.returncode == 4, loud.stderr
    assert "another sessionctl run" in one_line(loud.stderr)
    assert quiet.returncode == 4 and quiet.stderr == "", quiet.stderr
    assert slow.returncode == 0, err
    assert pg_db.count("django_session") == 1


def test_connection_killed_mid_cleanup_loses_nothing(pg_db, tmp_path):
    written = django_pg_store(pg_db, [-3600] * 8 + [3600])
    env = {**os.environ, "NO_COLOR": "1", "SESSIONCTL_STATE_DIR": str(tmp_path / "state")}
    run = [SESSIONCTL, "cleanup", "--store", pg_db.address(), "--expired", "--yes"]
    first = subprocess.Popen(
        [*run, "--batch-size", "1", "--hook", "sleep 0.3"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.time() + 20
    while pg_db.count("django_session") > 7 and time.time() < deadline:
        time.sleep(0.05)
    pg_db.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE application_name = 'sessionctl' AND datname = %s",
        (pg_db.name,),
    )
    out, err = first.communicate(timeout=60)
    assert first.returncode != 0, out
    assert "Traceback" not in err and "internal error" not in err, err
    left = {r[0] for r in pg_db.query("SELECT session_key FROM django_session")}
    gone = set(written.ids) - left
    assert gone and gone <= {e["id"] for e in archived(tmp_path / "state")}
    assert len(left) > 1  # it stopped part-way
    second = subprocess.run(run, env=env, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr
    assert {r[0] for r in pg_db.query("SELECT session_key FROM django_session")} == set(
        written.active
    )
    assert {e["id"] for e in archived(tmp_path / "state")} == set(written.expired)


def test_missing_index_warning_and_dead_space_note(cli, pg_db):
    """12,000 rows, no index on expire_date: stats and cleanup print the CREATE INDEX
    CONCURRENTLY statement (never run), and a large cleanup says what dead space it left."""
    pg_db.execute(
        "CREATE TABLE django_session (session_key varchar(40) PRIMARY KEY,"
        " session_data text NOT NULL, expire_date timestamptz NOT NULL)"
    )
    pg_db.execute(
        "INSERT INTO django_session SELECT md5(g::text), 'e30:1:x',"
        " now() + ((g % 2) * 2 - 1) * interval '1 day' FROM generate_series(1, 12000) g"
    )
    statement = 'CREATE INDEX CONCURRENTLY ON "public"."django_session" ("expire_date")'
    assert statement in cli("stats", "--store", pg_db.address()).stdout
    result = cli("cleanup", "--store", pg_db.address(), "--expired", "--yes", "--no-archive")
    assert statement in result.stderr
    assert "6000 dead rows left in public.django_session" in result.stderr, result.stderr
    assert "VACUUM" in result.stderr
    assert list(pg_db.indexes("django_session")) == ["django_session_pkey"]  # never run
    assert pg_db.count("django_session") == 6000


# --- addresses and libpq's own sources -----------------------------------------------------------


@pytest.mark.parametrize(
    "spelling",
    [
        "postgres://postgres@127.0.0.1:5432/{db}",
        "postgresql://postgres@%2Fvar%2Frun%2Fpostgresql/{db}",
        "postgresql://postgres@/{db}?host=/var/run/postgresql",
    ],
    ids=["postgres-scheme", "socket-in-host", "socket-parameter"],
)
def test_other_spellings_reach_the_same_store(cli, pg_db, spelling):
    """postgres://, a Unix socket folder as host (percent-encoded, or ?host=): one store, so
    history finds the run made under the first spelling."""
    django_pg_store(pg_db, [-3600, 3600])
    cli("cleanup", "--store", pg_db.address(), "--expired", "--yes")
    address = spelling.format(db=pg_db.name)
    assert json.loads(cli("stats", "--store", address, "-f", "json").stdout)["total"] == 1
    if "127.0.0.1" in address:  # the same host and port, however the address is spelled
        runs = json.loads(cli("history", "--store", address, "-f", "json").stdout)["runs"]
        assert [run["command"] for run in runs] == ["cleanup"], runs


def test_libpq_environment_fills_what_the_address_leaves_out(cli, pg_db):
    django_pg_store(pg_db, [3600])
    env = {"PGHOST": "127.0.0.1", "PGPORT": "5432", "PGUSER": "postgres"}
    result = cli("stats", "--store", f"postgresql:///{pg_db.name}", "-f", "json", env=env)
    assert json.loads(result.stdout)["total"] == 1


def test_password_env_is_used_and_never_shown(cli, tmp_path, pg_db, state_dir):
    django_pg_store(pg_db, [-60, 3600])
    config = tmp_path / "config.toml"
    config.write_text(
        f'[stores.web]\naddress = "{pg_db.address()}"\npassword_env = "WEB_PG_PASSWORD"\n'
    )
    missing = cli(
        "--config", config, "stats", "--store", "web", code=2, env={"WEB_PG_PASSWORD": None}
    )
    assert "WEB_PG_PASSWORD" in one_line(missing.stderr)
    env = {"WEB_PG_PASSWORD": CANARY}
    result = cli("--config", config, "cleanup", "--store", "web", "--expired", "--yes", env=env)
    assert CANARY not in result.stdout + result.stderr
    assert "password written" not in result.stderr  # no warning: it came from the environment
    for path in state_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            data = gzip.decompress(data) if path.suffix == ".gz" else data
            assert CANARY.encode() not in data, path


# --- the application at work meanwhile ----------------------------------------------------------


def test_a_row_the_application_updates_after_selection_stays(cli, pg_db, state_dir):
    """The hook runs between selection and removal: it plays the application, extending every
    session. Compare-and-delete leaves them all."""
    written = django_pg_store(pg_db, [-3600, -60, 3600])
    update = (
        f"psql -q {pg_db.url} -c "
        "\"UPDATE django_session SET expire_date = now() + interval '1 day'\""
    )
    result = cli(
        "cleanup", "--store", pg_db.address(), "--expired", "--yes", "--hook", update,
        "-f", "json",
    )  # fmt: skip
    report = json.loads(result.stdout)
    assert report["selected"] == 2 and report["deleted"] == 0 and report["changed"] == 2, report
    assert pg_db.count("django_session") == len(written.ids)
    assert archived(state_dir) == []


def test_a_row_the_application_holds_locked_is_retried_then_reported(cli, pg_db, tmp_path):
    written = django_pg_store(pg_db, [-3600] * 4 + [3600])
    locked = sorted(written.expired)[2]
    config = tmp_path / "config.toml"
    config.write_text(f'[stores.web]\naddress = "{pg_db.address()}"\nlock_timeout = "1s"\n')
    with pg_db.connect() as app:
        app.execute("BEGIN")
        app.execute("SELECT 1 FROM django_session WHERE session_key = %s FOR UPDATE", (locked,))
        started = time.monotonic()
        result = cli(
            "--config", config, "cleanup", "--store", "web", "--expired", "--yes",
            "--batch-size", "1", code=4,
        )  # fmt: skip
        waited = time.monotonic() - started
        app.execute("ROLLBACK")
    assert "holds locked" in result.stderr and "5 times" in result.stderr, result.stderr
    assert waited >= 5  # five attempts of a second each, with backoff between them
    left = {r[0] for r in pg_db.query("SELECT session_key FROM django_session")}
    assert locked in left and len(left) == 3  # the two batches before it went
    cli("--config", config, "cleanup", "--store", "web", "--expired", "--yes")
    assert {r[0] for r in pg_db.query("SELECT session_key FROM django_session")} == set(
        written.active
    )


# --- passwords, against a server of the test's own that asks for one -----------------------------

PG_BIN = Path("/usr/lib/postgresql/15/bin")
RIGHT = "Right-pw-0c41"


@pytest.fixture(scope="module")
def password_server():
    """A PostgreSQL cluster of this module's own with scram-sha-256 authentication (the shared
    server trusts every local connection, so it cannot tell a wrong password)."""
    import shutil
    import socket

    from pg import unavailable

    if not (PG_BIN / "initdb").exists():
        unavailable(f"{PG_BIN}/initdb is missing (Debian package postgresql-15)")
    import tempfile

    # Not under pytest's own folder, which only root may enter.
    folder = Path(tempfile.mkdtemp(prefix="sessionctl-pgpw-"))
    pwfile = folder / "pwfile"
    pwfile.write_text(RIGHT + "\n")
    prefix = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        if not shutil.which("runuser"):
            unavailable("runuser is missing: cannot run initdb as postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
        shutil.chown(folder, "postgres")
        shutil.chown(pwfile, "postgres")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data = folder / "data"
    subprocess.run(
        [*prefix, PG_BIN / "initdb", "-D", data, "-U", "postgres", "--auth=scram-sha-256",
         f"--pwfile={pwfile}"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1"
    # The server keeps the output it is started with: a log file, never a pipe to wait on.
    subprocess.run(
        [*prefix, PG_BIN / "pg_ctl", "-D", data, "-o", options, "-l", folder / "log", "-w",
         "-t", "30", "start"],
        check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, timeout=60,
    )  # fmt: skip
    try:
        yield port
    finally:
        subprocess.run(
            [*prefix, PG_BIN / "pg_ctl", "-D", data, "-m", "immediate", "stop"],
            capture_output=True, timeout=60,
        )  # fmt: skip
        shutil.rmtree(folder, ignore_errors=True)


def test_wrong_or_missing_password_is_one_line(cli, password_server):
    port = password_server
    wrong = cli(
        "stats", "--store", f"postgresql://postgres:{CANARY}@127.0.0.1:{port}/postgres", code=3
    )
    line = wrong.stderr.splitlines()[-1]
    assert f"127.0.0.1:{port}" in line and "database postgres" in line, wrong.stderr
    assert "password authentication failed" in line and CANARY not in wrong.stderr
    missing = cli("stats", "--store", f"postgresql://postgres@127.0.0.1:{port}/postgres", code=3)
    assert "wants a password" in one_line(missing.stderr)


def test_password_from_file_pgpass_and_address_all_reach_the_server(cli, tmp_path, password_server):
    """The server answers (exit 3 for a database with no session table, not for the password)."""
    port = password_server
    address = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    secret = tmp_path / "pw"
    secret.write_text(RIGHT + "\n")
    secret.chmod(0o600)
    config = tmp_path / "config.toml"
    config.write_text(f'[stores.web]\naddress = "{address}"\npassword_file = "{secret}"\n')
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(f"127.0.0.1:{port}:*:postgres:{RIGHT}\n")
    pgpass.chmod(0o600)
    for args, env in (
        (["--config", config, "stats", "--store", "web"], None),
        (["stats", "--store", address], {"PGPASSFILE": str(pgpass)}),
        (["stats", "--store", address.replace("postgres@", f"postgres:{RIGHT}@")], None),
    ):
        result = cli(*args, code=3, env=env)
        line = result.stderr.splitlines()[-1]
        assert "no table" in line and "looks like a session table" in line, result.stderr
        assert RIGHT not in result.stderr
