"""Attacks on the SQLite store, restore and what the terminal and CSV show, as a hostile
operator or a buggy application would make them: each test is a problem found that way."""

import gzip
import json
import os
import sqlite3
import time

import pytest

from helpers import storegen

PUSHDOWN = pytest.mark.parametrize("pushdown", ["1", "0"], ids=["sql", "python"])


def past(days: float = 3) -> str:
    return storegen.sql_time(time.time() - days * 86400)


def future(days: float = 3) -> str:
    return storegen.sql_time(time.time() + days * 86400)


def make_db(path, script: str, rows: dict[str, list[tuple]] | None = None):
    conn = sqlite3.connect(path)
    conn.executescript(script)
    for table, values in (rows or {}).items():
        for row in values:
            conn.execute(f"INSERT INTO {table} VALUES ({','.join('?' * len(row))})", row)
    conn.commit()
    conn.close()
    return path


def dump(path, table: str) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return sorted(conn.execute(f"SELECT * FROM {table}").fetchall(), key=repr)
    finally:
        conn.close()


def archive_entries(path) -> list[dict]:
    with gzip.open(path, "rt") as handle:
        return [json.loads(line) for line in handle][1:]


# --- cascades the archive must follow exactly as SQLite does ---------------------------------

CASCADE_SCHEMAS = {
    # REFERENCES spells the parent column in another case than the table does.
    "parent column in another case": (
        "CREATE TABLE django_session(session_key TEXT PRIMARY KEY, session_data TEXT, "
        "expire_date TEXT); CREATE TABLE items(id INTEGER PRIMARY KEY, "
        "sk TEXT REFERENCES django_session(SESSION_KEY) ON DELETE CASCADE);",
        ["k0", "k0", "k1"],
    ),
    # The parent key compares without case: a child holding K0 belongs to k0.
    "NOCASE parent key": (
        "CREATE TABLE django_session(session_key TEXT PRIMARY KEY COLLATE NOCASE, "
        "session_data TEXT, expire_date TEXT); CREATE TABLE items(id INTEGER PRIMARY KEY, "
        "sk TEXT REFERENCES django_session(session_key) ON DELETE CASCADE);",
        ["K0", "k0", "k1"],
    ),
    # The same through a UNIQUE key that is not the primary key, with trailing blanks.
    "RTRIM unique parent key": (
        "CREATE TABLE django_session(n INTEGER PRIMARY KEY, session_key TEXT UNIQUE COLLATE "
        "RTRIM, session_data TEXT, expire_date TEXT); CREATE TABLE items(id INTEGER PRIMARY "
        "KEY, sk TEXT REFERENCES django_session(session_key) ON DELETE CASCADE);",
        ["k0  ", "k0", "k1"],
    ),
}


@PUSHDOWN
@pytest.mark.parametrize("schema", list(CASCADE_SCHEMAS))
def test_every_cascaded_row_is_archived_and_restored(cli, tmp_path, monkeypatch, schema, pushdown):
    monkeypatch.setenv("SESSIONCTL_PUSHDOWN", pushdown)
    script, child_keys = CASCADE_SCHEMAS[schema]
    db = tmp_path / "c.db"
    make_db(db, script)
    conn = sqlite3.connect(db)
    width = len(conn.execute("PRAGMA table_info(django_session)").fetchall())
    for key, when in (("k0", past()), ("k1", future())):
        values = ([None] if width == 4 else []) + [key, "d", when]
        conn.execute(f"INSERT INTO django_session VALUES ({','.join('?' * width)})", values)
    conn.executemany("INSERT INTO items(sk) VALUES (?)", [(k,) for k in child_keys])
    conn.commit()
    conn.close()
    before = dump(db, "items")
    archive = tmp_path / "a.ndjson.gz"
    cli("cleanup", "--expired", "--store", db, "--archive", archive, "-q", code=None)
    gone = sorted(set(before) - set(dump(db, "items")), key=repr)
    archived = [
        tuple(row.values()) for e in archive_entries(archive) for row in e["children"]["items"]
    ]
    assert sorted(archived, key=repr) == gone and len(gone) == 2
    cli("restore", archive, "--store", db, "-q")
    assert dump(db, "items") == before


# --- DELETE triggers written to hide from a pattern ------------------------------------------

HIDDEN_TRIGGERS = [
    "CREATE TRIGGER t AFTER DELETE/**/ON django_session BEGIN DELETE FROM log; END;",
    "CREATE TRIGGER t AFTER DELETE -- a comment\nON django_session BEGIN DELETE FROM log; END;",
    'CREATE TRIGGER "BEGIN" AFTER DELETE ON django_session BEGIN DELETE FROM log; END;',
    'CREATE TRIGGER "x INSERT --" AFTER DELETE ON django_session BEGIN DELETE FROM log; END;',
]


@PUSHDOWN
@pytest.mark.parametrize("trigger", HIDDEN_TRIGGERS, ids=["block", "line", "begin", "insert"])
def test_a_delete_trigger_is_found_however_it_is_spelled(
    cli, tmp_path, monkeypatch, trigger, pushdown
):
    monkeypatch.setenv("SESSIONCTL_PUSHDOWN", pushdown)
    db = make_db(
        tmp_path / "t.db",
        "CREATE TABLE django_session(session_key TEXT PRIMARY KEY, session_data TEXT, "
        f"expire_date TEXT); CREATE TABLE log(x); {trigger}",
        {
            "log": [(1,), (2,)],
            "django_session": [("k0", "d", past()), ("k1", "d", future())],
        },
    )
    dry = cli("cleanup", "--expired", "--store", db, "-n")
    assert "DELETE trigger" in dry.stderr
    cli("cleanup", "--expired", "--store", db, code=2)
    assert dump(db, "log") == [(1,), (2,)]
    assert len(dump(db, "django_session")) == 2


# --- what the terminal and CSV show ----------------------------------------------------------


def hostile_db(tmp_path):
    return make_db(
        tmp_path / "h.db",
        "CREATE TABLE sessions(session_id TEXT PRIMARY KEY, user_id TEXT, expires_at TEXT, "
        '"no\x85te" TEXT);',
        {
            "sessions": [
                ("s\x1b[31m1", "u\x9b2J", future(), 'x\u2028  "status": "active"'),
                ("s2", "=HYPERLINK(\x1b]0;T\x07)", future(), "\u202egnp.exe"),
            ]
        },
    )


def test_inspect_breaks_a_record_only_at_its_own_lines(cli, tmp_path):
    out = cli("inspect", "s\x1b[31m1", "--store", hostile_db(tmp_path)).stdout
    record = out[out.index("Record\n") :].split("\n")[1:-1]
    assert len(record) == 6, record  # { four fields }
    assert '"no\\x85te": "x\\u2028  \\"status\\": \\"active\\""' in out
    assert not any(ch in out for ch in "\x1b\x85\x9b\u2028\u202e")


def test_csv_escapes_control_characters_unless_raw(cli, tmp_path):
    db = hostile_db(tmp_path)
    out = cli("list", "-f", "csv", "--fields", "id,user_id", "--store", db).stdout
    assert not any(ch in out for ch in "\x1b\x07\x9b"), out
    assert "s\\x1b[31m1,u\\x9b2J" in out
    assert "'=HYPERLINK(\\x1b]0;T\\x07)" in out
    raw = cli("list", "-f", "csv-raw", "--fields", "id,user_id", "--store", db).stdout
    assert "s\x1b[31m1,u\x9b2J" in raw and "=HYPERLINK(\x1b]0;T\x07)" in raw


# --- archives edited by hand -----------------------------------------------------------------


def write_archive(path, entries: list, **header):
    head = {"sessionctl_archive": 1, "kind": "sqlite", "table": "sessions", **header}
    with gzip.open(path, "wt") as handle:
        for item in [head, *entries]:
            handle.write(json.dumps(item) + "\n")
    return path


BAD_CHILDREN = {
    "sqlite_master": {"sqlite_master": [{"type": "table"}]},
    "a table no cascade reaches": {"users": [{"id": 9, "name": "mallory"}]},
    "the store's own table": {"sessions": [{"id": "planted", "data": "x"}]},
    "not an object": [1, 2],
    "not a list": {"items": "row"},
    "a row that is no object": {"items": [[1, 2]]},
    "an unknown column": {"items": [{"sid": "s", "nope": 1}]},
    "a nested value": {"items": [{"sid": "s", "note": {"a": 1}}]},
    "a huge integer": {"items": [{"sid": "s", "n": 2**70}]},
}


@pytest.mark.parametrize("children", list(BAD_CHILDREN))
def test_cascade_rows_of_a_hand_edited_archive_go_only_where_cascades_reach(
    cli, tmp_path, children
):
    db = make_db(
        tmp_path / "r.db",
        "CREATE TABLE sessions(id TEXT PRIMARY KEY, data TEXT, expires_at TEXT);"
        "CREATE TABLE items(n INTEGER PRIMARY KEY, sid TEXT REFERENCES sessions(id) "
        "ON DELETE CASCADE, note TEXT); CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT);",
    )
    archive = write_archive(
        tmp_path / "a.ndjson.gz",
        [
            {
                "key": 1,
                "id": "s",
                "record": {"id": "s", "data": "x"},
                "children": BAD_CHILDREN[children],
            },
            {
                "key": 2,
                "id": "t",
                "record": {"id": "t", "data": "y"},
                "children": {"items": [{"sid": "t"}]},
            },
        ],
        id_field="id",
    )
    result = cli("restore", archive, "--store", db, code=1)
    refusals = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(refusals) == 1 and "entry 1 ('s')" in refusals[0], result.stderr
    assert dump(db, "sessions") == [("t", "y", None)]
    assert dump(db, "items") == [(1, "t", None)]
    assert dump(db, "users") == []


def test_nan_is_refused_rather_than_restored_as_null(cli, tmp_path):
    db = make_db(tmp_path / "n.db", "CREATE TABLE sessions(id TEXT PRIMARY KEY, expires_at REAL);")
    archive = write_archive(
        tmp_path / "a.ndjson.gz",
        [{"key": 1, "id": "s", "record": {"id": "s", "expires_at": {"$float": "NaN"}}}],
        kind="json",
        id_field="id",
    )
    result = cli("restore", archive, "--store", db, code=1)
    assert "NaN" in result.stderr
    assert dump(db, "sessions") == []


# --- cascades that come back to the session table, and cycles between child tables -----------

SELF_AND_CYCLES = (
    "CREATE TABLE sessions(id TEXT PRIMARY KEY, expires_at INTEGER, "
    "parent TEXT REFERENCES sessions(id) ON DELETE CASCADE);"
    "CREATE TABLE a(x INTEGER PRIMARY KEY, sid TEXT REFERENCES sessions(id) ON DELETE CASCADE, "
    "bx INTEGER REFERENCES b(x) ON DELETE CASCADE);"
    "CREATE TABLE b(x INTEGER PRIMARY KEY, ax INTEGER REFERENCES a(x) ON DELETE CASCADE, "
    "sid TEXT REFERENCES sessions(id) ON DELETE CASCADE);"
)


def cyclic_db(path, child_expired: bool):
    now = int(time.time())
    gone, kept = now - 86400, now + 86400
    child = gone if child_expired else kept
    db = make_db(
        path,
        SELF_AND_CYCLES,
        {
            "sessions": [("s0", gone, None), ("s1", child, "s0"), ("s2", kept, None)],
            "a": [(1, "s0", None), (2, "s2", None)],
        },
    )
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA foreign_keys = ON")
    conn.executemany("INSERT INTO sessions VALUES (?,?,?)", [("s3", child, "s1")])
    conn.executemany("INSERT INTO b VALUES (?,?,?)", [(10, 1, "s2"), (11, 2, "s0")])
    conn.execute("UPDATE a SET bx = 10 WHERE x = 2")
    conn.commit()
    conn.close()
    return db


@PUSHDOWN
def test_a_cascade_never_removes_sessions_the_dry_run_did_not_name(
    cli, tmp_path, monkeypatch, pushdown
):
    monkeypatch.setenv("SESSIONCTL_PUSHDOWN", pushdown)
    db = cyclic_db(tmp_path / "s.db", child_expired=False)
    store = f"sqlite:{db}?table=sessions"
    dry = json.loads(cli("cleanup", "--expired", "--store", store, "-n", "-f", "json").stdout)
    assert dry["selected"] == 1
    before = {t: dump(db, t) for t in ("sessions", "a", "b")}
    result = cli("cleanup", "--expired", "--store", store, "-f", "json", code=5)
    assert "other session(s) of sessions" in result.stdout
    assert {t: dump(db, t) for t in ("sessions", "a", "b")} == before


def test_cascade_rows_of_tables_referring_to_each_other_come_back(cli, tmp_path):
    db = cyclic_db(tmp_path / "s.db", child_expired=True)
    store = f"sqlite:{db}?table=sessions"
    before = {t: dump(db, t) for t in ("sessions", "a", "b")}
    archive = tmp_path / "a.ndjson.gz"
    cli("cleanup", "--expired", "--store", store, "--archive", archive, "-q")
    assert dump(db, "sessions") == [("s2", before["sessions"][2][1], None)]
    cli("restore", archive, "--store", store, "-q")
    assert {t: dump(db, t) for t in ("sessions", "a", "b")} == before


# --- a table's archive into a JSON store -----------------------------------------------------


@pytest.mark.parametrize("kind", ["json", "jsondir"])
def test_blobs_and_infinities_of_a_table_are_refused_by_json_stores(cli, tmp_path, kind):
    db = make_db(
        tmp_path / "x.db",
        "CREATE TABLE sessions(id TEXT PRIMARY KEY, expires_at TEXT, data);",
        {
            "sessions": [
                ("blob", past(), b"\xff\x00"),
                ("inf", past(), float("inf")),
                ("plain", past(), "x"),
            ]
        },
    )
    archive = tmp_path / "a.ndjson.gz"
    cli("cleanup", "--expired", "--store", db, "--archive", archive, "-q")
    if kind == "json":
        target = tmp_path / "s.json"
        target.write_text('{"sessions": []}')
    else:
        target = tmp_path / "dir"
        target.mkdir()
    result = cli("restore", archive, "--store", f"{kind}:{target}", code=1)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 2 and "'blob'" in lines[0] and "'inf'" in lines[1], result.stderr
    text = (
        target.read_text()
        if kind == "json"
        else "".join(p.read_text() for p in sorted(target.iterdir()))
    )
    assert "$b64" not in text and "$float" not in text and '"plain"' in text


# --- a read-only folder ----------------------------------------------------------------------


@PUSHDOWN
@pytest.mark.parametrize("journal", ["delete", "wal"])
def test_a_database_in_a_read_only_folder_is_left_alone_even_by_root(
    cli, tmp_path, monkeypatch, pushdown, journal
):
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("this test needs root, and CI runs the suite as root")
        pytest.skip("needs root (whom os.access lets write anywhere)")
    monkeypatch.setenv("SESSIONCTL_PUSHDOWN", pushdown)
    folder = tmp_path / "ro"
    folder.mkdir()
    db = make_db(
        folder / "s.db",
        f"PRAGMA journal_mode = {journal}; CREATE TABLE django_session(session_key TEXT "
        "PRIMARY KEY, session_data TEXT, expire_date TEXT);",
        {"django_session": [(f"k{i}", "d", past()) for i in range(3)]},
    )
    before = dump(db, "django_session")
    os.chmod(folder, 0o555)
    try:
        result = cli("cleanup", "--expired", "-s", db, "-f", "json", code=3)
        assert "read-only" in result.stderr
        assert dump(db, "django_session") == before
    finally:
        os.chmod(folder, 0o755)


@PUSHDOWN
def test_cascaded_rows_the_parent_keys_affinity_matches_are_archived(
    cli, tmp_path, monkeypatch, pushdown
):
    """SQLite applies an INTEGER parent key's affinity to the child's value: '5', ' 5' and
    '5.0' in a column without a type all belong to session 5 and go with it."""
    monkeypatch.setenv("SESSIONCTL_PUSHDOWN", pushdown)
    now = int(time.time())
    db = make_db(
        tmp_path / "f.db",
        "CREATE TABLE sessions(id INTEGER PRIMARY KEY, session_id TEXT, expires_at INTEGER);"
        "CREATE TABLE items(x INTEGER PRIMARY KEY, sid REFERENCES sessions(id) ON DELETE CASCADE);",
        {
            "sessions": [(5, "s5", now - 86400), (6, "s6", now + 86400)],
            "items": [(1, "5"), (2, 5), (3, "6"), (4, " 5"), (5, "5.0"), (6, "5x")],
        },
    )
    before = dump(db, "items")
    archive = tmp_path / "a.ndjson.gz"
    cli("cleanup", "--expired", "--store", db, "--archive", archive, "-q")
    gone = sorted(set(before) - set(dump(db, "items")))
    archived = sorted(
        tuple(r.values()) for e in archive_entries(archive) for r in e["children"]["items"]
    )
    assert gone == archived == [(1, "5"), (2, 5), (4, " 5"), (5, "5.0")]
    cli("restore", archive, "--store", db, "-q")
    assert dump(db, "items") == before


@PUSHDOWN
def test_a_session_key_that_is_not_utf8_takes_its_cascade_rows_along(
    cli, tmp_path, monkeypatch, pushdown
):
    monkeypatch.setenv("SESSIONCTL_PUSHDOWN", pushdown)
    db = make_db(
        tmp_path / "u.db",
        "CREATE TABLE django_session(session_key TEXT PRIMARY KEY, session_data TEXT, "
        "expire_date TEXT); CREATE TABLE items(id INTEGER PRIMARY KEY, sk TEXT REFERENCES "
        "django_session(session_key) ON DELETE CASCADE, note TEXT);"
        f"INSERT INTO django_session VALUES (CAST(x'ff6b30' AS TEXT), 'd', '{future()}'),"
        f"('k1', 'd', '{future()}');"
        "INSERT INTO items(sk, note) VALUES (CAST(x'ff6b30' AS TEXT), CAST(x'fe' AS TEXT)),"
        "('k1', 'n');",
    )
    hexed = "SELECT id, hex(sk), hex(note) FROM items ORDER BY id"
    conn = sqlite3.connect(db)
    before = conn.execute(hexed).fetchall()
    archive = tmp_path / "a.ndjson.gz"
    cli("cleanup", "--invalid", "--store", db, "--archive", archive, "-q")
    assert conn.execute(hexed).fetchall() == [(2, "6B31", "6E")]
    (entry,) = archive_entries(archive)
    assert entry["children"]["items"] == [
        {"id": 1, "sk": {"$text_b64": "/2sw"}, "note": {"$text_b64": "/g=="}}
    ]
    cli("restore", archive, "--store", db, "-q")
    assert conn.execute(hexed).fetchall() == before
    conn.close()


# --- restoring after the application wrote ---------------------------------------------------


def test_a_cascade_row_whose_place_was_taken_is_refused_with_why_not_called_present(cli, tmp_path):
    db = make_db(
        tmp_path / "k.db",
        "CREATE TABLE sessions(session_id TEXT PRIMARY KEY, expires_at TEXT);"
        "CREATE TABLE kids(id INTEGER PRIMARY KEY, sid TEXT REFERENCES sessions(session_id) "
        "ON DELETE CASCADE);",
        {"sessions": [("a", past()), ("b", past()), ("c", future())], "kids": [(1, "a"), (2, "b")]},
    )
    archive = tmp_path / "a.ndjson.gz"
    cli("cleanup", "--expired", "--store", db, "--archive", archive, "-q")
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO kids VALUES (2, 'c')")  # the application reuses the rowid
    conn.commit()
    conn.close()
    result = cli("restore", archive, "--store", db, "-f", "json", code=1)
    report = json.loads(result.stdout)
    assert (report["restored"], report["skipped"], report["refused"]) == (1, 0, 1)
    (refusal,) = report["refusals"]
    assert refusal["id"] == "b" and refusal["entry"] == 2
    assert "cascade rows" in refusal["reason"] and "kids.id" in refusal["reason"]
    assert [row[0] for row in dump(db, "sessions")] == ["a", "c"]
    assert dump(db, "kids") == [(1, "a"), (2, "c")]
    again = json.loads(cli("restore", archive, "--store", db, "-f", "json", code=1).stdout)
    assert (again["restored"], again["skipped"], again["refused"]) == (0, 1, 1)


# --- a collation only the application has -----------------------------------------------------


def test_a_collation_only_the_application_has_leaves_the_judging_to_python(cli, tmp_path):
    db = tmp_path / "c.db"
    conn = sqlite3.connect(db)
    conn.create_collation("appcoll", lambda a, b: (a.lower() > b.lower()) - (a.lower() < b.lower()))
    conn.execute(
        "CREATE TABLE sessions(session_id TEXT PRIMARY KEY COLLATE appcoll, expires_at TEXT)"
    )
    conn.executemany("INSERT INTO sessions VALUES (?, ?)", [("a", past()), ("b", future())])
    conn.commit()
    conn.close()
    stats = json.loads(cli("stats", "--store", db, "-f", "json").stdout)
    assert (stats["total"], stats["expired"]) == (2, 1)
    dry = json.loads(cli("cleanup", "--expired", "--store", db, "-n", "-f", "ndjson").stdout)
    assert [s["id"] for s in dry["sessions"]] == ["a"]
    result = cli("cleanup", "--expired", "--store", db, code=3)
    assert "appcoll" in result.stderr and "Traceback" not in result.stderr
    assert [row[0] for row in dump(db, "sessions")] == ["a", "b"]


@pytest.mark.parametrize("fmt", ["json", "ndjson"])
def test_json_output_escapes_c1_controls_and_keeps_the_value(cli, tmp_path, fmt):
    out = cli("list", "--store", hostile_db(tmp_path), "-f", fmt, "--fields", "id,user_id").stdout
    assert not any(ch in out for ch in "\x1b\x9b\u2028\u202e"), out
    assert "\\u009b" in out
    rows = json.loads(out) if fmt == "json" else [json.loads(line) for line in out.splitlines()]
    assert {row["fields"]["user_id"] for row in rows} == {"u\x9b2J", "=HYPERLINK(\x1b]0;T\x07)"}


# --- the last line of defence: rows a delete takes that no archive holds ---------------------


@PUSHDOWN
def test_a_cascade_the_search_misses_rolls_the_batch_back(cli, tmp_path, monkeypatch, pushdown):
    """Whatever way a cascade row escapes the search (a foreign key compared as no one
    foresaw), the delete counts what went and stops before committing rows nobody archived."""
    from sessionctl.stores.sql import sqlite as sqlite_store

    monkeypatch.setenv("SESSIONCTL_PUSHDOWN", pushdown)
    monkeypatch.setattr(
        sqlite_store.SqliteStore,
        "child_rows_sql",
        lambda self, parent, pc, child, cc, key: (f'SELECT * FROM "{child}" WHERE 0', []),
    )
    db = make_db(
        tmp_path / "m.db",
        "CREATE TABLE django_session(session_key TEXT PRIMARY KEY, session_data TEXT, "
        "expire_date TEXT); CREATE TABLE items(id INTEGER PRIMARY KEY, "
        "sk TEXT REFERENCES django_session(session_key) ON DELETE CASCADE);",
        {
            "django_session": [("k0", "d", past()), ("k1", "d", future())],
            "items": [(1, "k0"), (2, "k1")],
        },
    )
    result = cli("cleanup", "--expired", "--store", db, code=3)
    assert "rolled back" in result.stderr
    assert dump(db, "items") == [(1, "k0"), (2, "k1")]
    assert len(dump(db, "django_session")) == 2


@pytest.mark.parametrize("version", [99, "1", True, None])
def test_an_archive_of_another_format_is_refused_in_one_line(cli, tmp_path, version):
    db = make_db(tmp_path / "v.db", "CREATE TABLE sessions(id TEXT PRIMARY KEY, expires_at TEXT);")
    archive = tmp_path / "a.ndjson.gz"
    with gzip.open(archive, "wt") as handle:
        handle.write(json.dumps({"sessionctl_archive": version, "kind": "sqlite"}) + "\n")
        handle.write(json.dumps({"key": 1, "id": "s", "record": {"id": "s"}}) + "\n")
    result = cli("restore", archive, "--store", db, code=2)
    assert "format" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert dump(db, "sessions") == []


def test_an_archive_name_that_is_not_utf8_is_audited_and_shown_escaped(cli, tmp_path):
    """A byte 0x9b in a file name reaches Python as \\udc9b: the audit log crashed on it
    (exit 70 after the sessions were removed), and stdout wrote it back raw, an 8-bit CSI."""
    db = make_db(
        tmp_path / "n.db",
        "CREATE TABLE sessions(session_id TEXT PRIMARY KEY, expires_at TEXT);",
        {"sessions": [("a", past()), ("b", future())]},
    )
    archive = str(tmp_path) + "/a\udc9b.ndjson.gz"
    result = cli("cleanup", "--expired", "--store", db, "--archive", archive)
    assert "\\udc9b" in result.stdout and "\ufffd" not in result.stdout
    runs = json.loads(cli("history", "-f", "json").stdout)["runs"]
    assert [run["archive"] for run in runs] == [archive]
    restored = cli("restore", archive, "--store", db)
    assert "\\udc9b" in restored.stdout and "\ufffd" not in restored.stdout
    assert [row[0] for row in dump(db, "sessions")] == ["a", "b"]


@PUSHDOWN
@pytest.mark.parametrize("action", ["SET NULL", "SET DEFAULT"])
def test_a_foreign_key_that_sets_null_needs_allow_triggers(
    cli, tmp_path, monkeypatch, pushdown, action
):
    """Removing a session rewrites the rows that referred to it, which no archive keeps and
    restore cannot link back: named like a DELETE trigger, and refused without the option."""
    monkeypatch.setenv("SESSIONCTL_PUSHDOWN", pushdown)
    db = make_db(
        tmp_path / "n.db",
        "CREATE TABLE django_session(session_key TEXT PRIMARY KEY, session_data TEXT, "
        "expire_date TEXT); CREATE TABLE carts(id INTEGER PRIMARY KEY, sk TEXT "
        f"REFERENCES django_session(session_key) ON DELETE {action});",
        {"django_session": [("k0", "d", past()), ("k1", "d", future())]},
    )
    conn = sqlite3.connect(db)
    conn.executemany("INSERT INTO carts VALUES (?, ?)", [(1, "k0"), (2, "k1")])
    conn.commit()
    conn.close()
    dry = cli("cleanup", "--expired", "--store", db, "-n")
    assert f"ON DELETE {action}" in dry.stderr
    cli("cleanup", "--expired", "--store", db, code=2)
    assert dump(db, "carts") == [(1, "k0"), (2, "k1")]
    cli("cleanup", "--expired", "--store", db, "--allow-triggers", "-q")
    assert len(dump(db, "django_session")) == 1


# --- generated columns -----------------------------------------------------------------------


@PUSHDOWN
def test_generated_columns_keep_every_value_under_its_own_name(
    cli, tmp_path, monkeypatch, pushdown
):
    """SELECT * returns generated columns, which PRAGMA table_info leaves out: the values after
    one were read under the wrong names, judged wrong, archived wrong and restored wrong."""
    monkeypatch.setenv("SESSIONCTL_PUSHDOWN", pushdown)
    now = int(time.time())
    db = make_db(
        tmp_path / "g.db",
        "CREATE TABLE sessions(session_id TEXT PRIMARY KEY, g TEXT AS (upper(session_id)), "
        "expires_at INTEGER, h INTEGER AS (expires_at + 1) STORED, data TEXT);"
        "CREATE TABLE kids(id INTEGER PRIMARY KEY, z AS (id * 2), "
        "sid TEXT REFERENCES sessions(session_id) ON DELETE CASCADE);"
        f"INSERT INTO sessions(session_id, expires_at, data) VALUES ('a', {now - 86400}, 'x'),"
        f"('b', {now + 86400}, 'y'); INSERT INTO kids(sid) VALUES ('a');",
    )
    listed = json.loads(cli("list", "--store", db, "-f", "json").stdout)
    assert [(s["id"], s["status"]) for s in listed] == [("a", "expired"), ("b", "active")]
    before = {t: dump(db, t) for t in ("sessions", "kids")}
    archive = tmp_path / "a.ndjson.gz"
    cli("cleanup", "--expired", "--store", db, "--archive", archive, "-q")
    (entry,) = archive_entries(archive)
    assert entry["record"] == {
        "session_id": "a",
        "g": "A",
        "expires_at": now - 86400,
        "h": now - 86399,
        "data": "x",
    }
    cli("restore", archive, "--store", db, "-q")
    assert {t: dump(db, t) for t in ("sessions", "kids")} == before


@pytest.mark.parametrize(
    "table",
    [
        "CREATE TABLE sessions(id TEXT PRIMARY KEY, expires_at INTEGER) STRICT;",
        "CREATE TABLE sessions(id TEXT PRIMARY KEY, expires_at CHECK (typeof(expires_at) = 'integer'));",
    ],
    ids=["strict", "check"],
)
def test_a_row_the_table_refuses_is_refused_with_why_not_called_present(cli, tmp_path, table):
    db = make_db(tmp_path / "s.db", table)
    archive = write_archive(
        tmp_path / "a.ndjson.gz",
        [
            {"key": "a", "id": "a", "record": {"id": "a", "expires_at": "soon"}},
            {"key": "b", "id": "b", "record": {"id": "b", "expires_at": 5}},
        ],
        kind="json",
        id_field="id",
    )
    report = json.loads(cli("restore", archive, "--store", db, "-f", "json", code=1).stdout)
    assert (report["restored"], report["skipped"], report["refused"]) == (1, 0, 1)
    assert (
        report["refusals"][0]["id"] == "a" and "refused its row" in report["refusals"][0]["reason"]
    )
    assert dump(db, "sessions") == [("b", 5)]


def test_a_cascade_row_shared_by_two_sessions_comes_back_with_both(cli, tmp_path):
    """A row linking two sessions removed together is archived with each; neither could go
    back first (its link needs the other), so neither was restored."""
    db = make_db(
        tmp_path / "l.db",
        "CREATE TABLE sessions(session_id TEXT PRIMARY KEY, expires_at TEXT);"
        "CREATE TABLE links(id INTEGER PRIMARY KEY, "
        "a TEXT REFERENCES sessions(session_id) ON DELETE CASCADE, "
        "b TEXT REFERENCES sessions(session_id) ON DELETE CASCADE);",
        {"sessions": [("A", past()), ("B", past()), ("C", future())]},
    )
    conn = sqlite3.connect(db)
    conn.executemany("INSERT INTO links VALUES (?, ?, ?)", [(1, "A", "B"), (2, "A", "C")])
    conn.commit()
    conn.close()
    before = {t: dump(db, t) for t in ("sessions", "links")}
    archive = tmp_path / "a.ndjson.gz"
    cli("cleanup", "--expired", "--store", db, "--archive", archive, "-q")
    assert dump(db, "links") == []
    report = json.loads(cli("restore", archive, "--store", db, "-f", "json").stdout)
    assert (report["restored"], report["refused"]) == (2, 0)
    assert {t: dump(db, t) for t in ("sessions", "links")} == before
