"""Restore into any store kind (safe file names, mapping by role, refusals, file owners) and
what reaches a terminal or a spreadsheet (control characters, formula cells, narrow tables)."""

import json
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from helpers import one_line_error, storegen
from sessionctl.app.audit import ArchiveWriter, read_archive

HOUR = 3600.0


def bash_record(session_id, now: float, idle: bool = True, **extra) -> dict:
    used = now - 5 * HOUR if idle else now - 60
    record = {
        "session_id": session_id,
        "workspace_name": "w",
        "created_at": used - 60,
        "last_used": used,
    }
    record.update(extra)
    return record


def write_archive(path: Path, entries: list[dict], **header) -> Path:
    writer = ArchiveWriter(path, {"store": "test", "address": "json:/nowhere", **header})
    writer.write(entries)
    writer.close()
    return path


def cleanup_archive(cli, store, *options) -> str:
    result = cli("cleanup", "-s", store, *options, "-f", "json")
    return json.loads(result.stdout)["archive"]


def refusal_lines(result) -> list[str]:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert all(line.startswith("sessionctl: not restored: ") for line in lines), lines
    return lines


# --- restore into a folder: names that stay inside it ----------------------------------------


def test_restore_never_writes_outside_the_folder(cli, tmp_path, now):
    """Ids that are paths (`../outside/escaped`, an absolute one) were written to those paths."""
    outside = tmp_path / "outside"
    outside.mkdir()
    absolute = tmp_path / "abs" / "escaped"
    absolute.parent.mkdir()
    ids = ["../outside/escaped", str(absolute), "fine"]
    source = tmp_path / "s.json"
    source.write_text(json.dumps([bash_record(sid, now) for sid in ids]))
    archive = cleanup_archive(cli, source, "--preset", "bash-sessions", "--expired")
    folder = tmp_path / "folder"
    folder.mkdir()

    def files() -> list[str]:  # outside sessionctl's own state folder
        return sorted(str(p) for p in tmp_path.rglob("*") if "state" not in p.parts)

    before = files()

    result = cli("restore", archive, "-s", f"jsondir:{folder}", "--field", "id=session_id",
                 "-f", "json", code=1)  # fmt: skip
    out = json.loads(result.stdout)
    assert (out["restored"], out["refused"]) == (1, 2)
    lines = refusal_lines(result)
    assert len(lines) == 2
    assert "'../outside/escaped'" in lines[0] and "path separator" in lines[0]
    assert "absolute path" in lines[1]
    assert sorted(p.name for p in folder.iterdir()) == ["fine.json"]
    assert not (outside / "escaped.json").exists()
    assert not Path(f"{absolute}.json").exists()
    assert files() == sorted([*before, str(folder / "fine.json")])


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("", "empty"),
        (".", "dot"),
        ("..", "dot"),
        ("../../etc/passwd", "path separator"),
        ("a/b", "path separator"),
        ("a\\b", "path separator"),
        ("nul\x00byte", "NUL"),
        ("/etc/cron.d/evil", "absolute path"),
        ("x" * 250, "too long"),
        ("lone \ud800 surrogate", "Unicode"),
    ],
)
@pytest.mark.parametrize("by", ["id", "key"])
def test_a_name_that_is_no_safe_file_name_is_refused_in_one_line(cli, tmp_path, now, name, why, by):
    folder = tmp_path / "sessions"
    folder.mkdir()
    (folder / "keep.json").write_text(json.dumps(bash_record("keep", now, idle=False)))
    if by == "id":  # an archive of another kind of store: files are named by session id
        entry = {"key": 0, "id": name, "reasons": [], "record": bash_record(name, now)}
        header = {"kind": "json"}
    else:  # an archive of a folder: files get their archived names back
        entry = {"key": name, "id": "x", "reasons": [], "record": bash_record("x", now)}
        header = {"kind": "jsondir"}
    archive = write_archive(tmp_path / "a.ndjson.gz", [entry], **header)
    result = cli("restore", archive, "-s", f"jsondir:{folder}", code=1)
    line = one_line_error(result)
    assert line.startswith("sessionctl: not restored: entry 1 ") and why in line, line
    assert sorted(p.name for p in folder.iterdir()) == ["keep.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.ndjson.gz", "sessions", "state"]


def test_a_folder_archive_restores_its_own_file_names_and_unreadable_files(cli, tmp_path):
    store = storegen.write_jsondir(
        tmp_path / "sessions", storegen.generate("raptor", 12, seed=2), garbage=2
    )
    names = sorted(p.name for p in store.iterdir())
    contents = {p.name: p.read_bytes() for p in store.iterdir()}
    archive = cleanup_archive(cli, store, "--all", "--yes")
    assert not list(store.iterdir())
    out = json.loads(cli("restore", archive, "-f", "json").stdout)
    assert (out["restored"], out["refused"]) == (14, 0)
    assert {p.name: p.read_bytes() for p in store.iterdir()} == contents
    assert sorted(p.name for p in store.iterdir()) == names


# --- restore into a store of another kind: mapped by role, or refused -------------------------


def test_json_into_sqlite_refuses_what_a_column_cannot_hold(cli, tmp_path, now):
    """2**70 exited 70, a nested value was reported as "database is corrupt"."""
    records = [
        bash_record("big", now, big=2**70),
        bash_record("nested", now, extra={"a": [1, 2]}),
        bash_record("plain", now),
        bash_record("list", now, tags=["x"]),
    ]
    source = tmp_path / "s.json"
    source.write_text(json.dumps(records))
    archive = cleanup_archive(cli, source, "--preset", "bash-sessions", "--expired")
    db = tmp_path / "t.db"
    conn = sqlite3.connect(db)
    conn.execute(
        "CREATE TABLE bash_sessions (session_id TEXT PRIMARY KEY, workspace_name TEXT, "
        "created_at REAL, last_used REAL, big INTEGER, extra TEXT, tags TEXT)"
    )
    conn.commit()
    conn.close()
    result = cli("restore", archive, "-s", db, "-f", "json", code=1)
    out = json.loads(result.stdout)
    assert (out["restored"], out["refused"], out["skipped"]) == (1, 3, 0)
    lines = refusal_lines(result)
    assert len(lines) == 3
    assert "'big'" in lines[0] and "64-bit" in lines[0]
    assert "'nested'" in lines[1] and "'extra' holds an object" in lines[1]
    assert "'tags' holds a list" in lines[2]
    assert "corrupt" not in result.stderr
    assert [r["id"] for r in out["refusals"]] == ["big", "nested", "list"]
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT session_id FROM bash_sessions").fetchall() == [("plain",)]
    conn.close()


def test_sqlite_refuses_fields_it_has_no_column_for_and_missing_required_values(cli, tmp_path, now):
    records = [
        bash_record("nocolumn", now, browser="firefox"),
        bash_record("noworkspace", now),
        bash_record("good", now),
    ]
    del records[1]["workspace_name"]
    source = tmp_path / "s.json"
    source.write_text(json.dumps(records))
    archive = cleanup_archive(cli, source, "--preset", "bash-sessions", "--expired")
    db = tmp_path / "t.db"
    conn = sqlite3.connect(db)
    conn.execute(
        "CREATE TABLE bash_sessions (session_id TEXT PRIMARY KEY, workspace_name TEXT NOT NULL, "
        "created_at REAL, last_used REAL)"
    )
    conn.commit()
    conn.close()
    result = cli("restore", archive, "-s", db, code=1)
    lines = refusal_lines(result)
    assert len(lines) == 2
    assert "no column for its field 'browser'" in lines[0]
    assert "workspace_name" in lines[1] and "must have a value" in lines[1]
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT session_id FROM bash_sessions").fetchall() == [("good",)]
    conn.close()


def test_keyed_json_into_sqlite_puts_the_id_in_the_id_column(cli, tmp_path, now):
    source = tmp_path / "keyed.json"
    document = {sid: bash_record(sid, now) for sid in ("k1", "k2")}
    for record in document.values():
        del record["session_id"]  # the id is the object key only
    source.write_text(json.dumps(document))
    archive = cleanup_archive(cli, source, "--preset", "bash-sessions", "--expired")
    db = storegen.write_sqlite(tmp_path / "t.db", storegen.generate("bash-sessions", 0))
    out = json.loads(cli("restore", archive, "-s", db, "-f", "json").stdout)
    conn = sqlite3.connect(db)
    rows = conn.execute("SELECT session_id, workspace_name FROM bash_sessions ORDER BY 1")
    assert rows.fetchall() == [("k1", "w"), ("k2", "w")]
    conn.close()
    assert (out["restored"], out["refused"]) == (2, 0)


def test_array_archive_into_an_object_keyed_by_id_uses_the_ids(cli, tmp_path, now):
    """The array positions became the keys "0" and "2"."""
    source = tmp_path / "array.json"
    ids = ["alpha", "keep", "gamma"]
    source.write_text(json.dumps([bash_record(s, now, idle=s != "keep") for s in ids]))
    archive = cleanup_archive(cli, source, "--preset", "bash-sessions", "--expired")
    target = tmp_path / "keyed.json"
    target.write_text(json.dumps({"other": bash_record("other", now, idle=False)}))
    cli("restore", archive, "-s", target, "--field", "id=session_id")
    document = json.loads(target.read_text())
    assert sorted(document) == ["alpha", "gamma", "other"]
    assert document["alpha"]["session_id"] == "alpha"


def test_keyed_archive_into_an_array_carries_the_id_into_the_record(cli, tmp_path, now):
    source = tmp_path / "keyed.json"
    document = {sid: bash_record(sid, now) for sid in ("k1", "k2")}
    for record in document.values():
        del record["session_id"]
    source.write_text(json.dumps(document))
    archive = cleanup_archive(cli, source, "--preset", "bash-sessions", "--expired")
    target = tmp_path / "array.json"
    target.write_text(json.dumps([bash_record("other", now, idle=False)]))
    cli("restore", archive, "-s", target, "--preset", "bash-sessions")
    listed = json.loads(cli("list", "-s", target, "--preset", "bash-sessions", "-f", "json").stdout)
    assert sorted(view["id"] for view in listed) == ["k1", "k2", "other"]


def test_corrupt_folder_entries_are_refused_by_a_json_file_and_repeats_add_nothing(
    cli, tmp_path, now
):
    """A folder archive's unreadable files appended `null` to a JSON array, more every time."""
    folder = tmp_path / "sessions"
    folder.mkdir()
    (folder / "a.json").write_text(json.dumps(bash_record("a", now)))
    (folder / "broken.json").write_text('{"session_id": "broken", ')
    archive = cleanup_archive(cli, folder, "--preset", "bash-sessions", "--expired", "--invalid")
    assert len(read_archive(Path(archive)).entries) == 2
    target = tmp_path / "array.json"
    target.write_text(json.dumps([bash_record("other", now, idle=False)]))
    first = cli("restore", archive, "-s", target, "-f", "json", code=1)
    assert "broken.json" in one_line_error(first)
    assert "holds objects only" in one_line_error(first)
    after_first = target.read_bytes()
    assert [r["session_id"] for r in json.loads(after_first)] == ["other", "a"]
    second = cli("restore", archive, "-s", target, "-f", "json", code=1)
    assert json.loads(second.stdout)["skipped"] == 1
    assert target.read_bytes() == after_first


def test_sessions_without_an_id_are_restored_once(cli, tmp_path, now):
    source = tmp_path / "s.json"
    nameless = bash_record("x", now)
    del nameless["session_id"]
    source.write_text(json.dumps([nameless, bash_record("b", now)]))
    archive = cleanup_archive(cli, source, "--preset", "bash-sessions", "--invalid", "--expired")
    assert len(read_archive(Path(archive)).entries) == 2
    cli("restore", archive)
    once = source.read_bytes()
    assert len(json.loads(once)) == 2
    again = json.loads(cli("restore", archive, "-f", "json").stdout)
    assert (again["restored"], again["skipped"]) == (0, 2)
    assert source.read_bytes() == once


# --- restored files get the folder's owner and mode -------------------------------------------


def need_root() -> None:
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("this test needs root, and CI runs the suite as root")
        pytest.skip("needs root (chown to another user)")


def test_restored_files_get_the_owner_and_mode_of_the_folders_session_files(cli, tmp_path, now):
    """Restored as root they were root:root, unreadable to the application (nobody, 0640)."""
    need_root()
    uid, gid = 65534, 65534
    folder = tmp_path / "sessions"
    folder.mkdir()
    for sid, idle in (("old1", True), ("old2", True), ("live", False)):
        path = folder / f"{sid}.json"
        path.write_text(json.dumps(bash_record(sid, now, idle=idle)))
        os.chown(path, uid, gid)
        path.chmod(0o640)
    archive = cleanup_archive(cli, folder, "--preset", "bash-sessions", "--expired")
    assert sorted(p.name for p in folder.iterdir()) == ["live.json"]
    old = os.umask(0o077)
    try:
        cli("restore", archive)
    finally:
        os.umask(old)
    for name in ("old1.json", "old2.json"):
        info = (folder / name).stat()
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (uid, gid, 0o640), name


def test_files_restored_into_an_empty_folder_belong_to_its_owner(cli, tmp_path, now):
    need_root()
    folder = tmp_path / "sessions"
    folder.mkdir()
    (folder / "s.json").write_text(json.dumps(bash_record("s", now)))
    archive = cleanup_archive(cli, folder, "--preset", "bash-sessions", "--expired")
    os.chown(folder, 65534, 65534)
    cli("restore", archive)
    info = (folder / "s.json").stat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (65534, 65534, 0o600)


# --- what reaches a terminal: control characters escaped -------------------------------------

EVIL_ID = "evil\x1b]0;PWNED\x07\x1b[31m\x9b2J\x7f"
EVIL_GROUP = "team\x1b[5m\x85\x90"


def raw_controls(text: str) -> list[str]:
    """Control characters other than the newlines that end lines."""
    return [c for c in text if (ord(c) < 0x20 and c != "\n") or 0x7F <= ord(c) <= 0x9F]


@pytest.fixture
def evil_store(tmp_path, now) -> Path:
    path = tmp_path / "evil.json"
    records = [
        bash_record(EVIL_ID, now, idle=False, workspace_name=EVIL_GROUP),
        # Used in the future: invalid, so `validate` lists it too.
        bash_record(EVIL_ID + "-future", now, idle=False, last_used=now + 30 * 86400),
    ]
    path.write_text(json.dumps(records))
    return path


@pytest.mark.parametrize("terminal", [True, False], ids=["terminal", "piped"])
@pytest.mark.parametrize(
    "command",
    [
        ["list"],
        ["list", "--fields", "id,key,group,workspace_name"],
        ["inspect", EVIL_ID],
        ["validate"],
        ["stats"],
        ["inspect", EVIL_ID + "\x9b-missing"],  # an error line quoting the id
    ],
    ids=["list", "list-fields", "inspect", "validate", "stats", "error-line"],
)
def test_control_characters_never_reach_the_terminal(
    cli, evil_store, monkeypatch, command, terminal
):
    """An id with `\\x1b]0;PWNED\\x07\\x1b[31m` retitled and recoloured the terminal."""
    from sessionctl import render

    monkeypatch.setattr(render, "stdout_is_terminal", lambda: terminal)
    monkeypatch.setenv("COLUMNS", "200")
    result = cli(*command, "-s", evil_store, "--preset", "bash-sessions", code=None)
    assert result.exit_code in (0, 1), result.stderr
    assert raw_controls(result.stdout) == []
    assert raw_controls(result.stderr) == []
    shown = result.stdout + result.stderr
    assert "evil\\x1b]0;PWNED\\x07\\x1b[31m\\x9b2J\\x7f" in shown


def test_json_output_keeps_the_id_exactly(cli, evil_store):
    listed = json.loads(
        cli("list", "-s", evil_store, "--preset", "bash-sessions", "-f", "json").stdout
    )
    assert EVIL_ID in {view["id"] for view in listed}


# --- CSV cells a spreadsheet would run as formulas ---------------------------------------------


def test_csv_neutralises_formula_cells_unless_csv_raw(cli, tmp_path, now):
    cells = ['=HYPERLINK("http://evil.example","x")', "+1+1", "-2+3", "@SUM(A1)", "\tx", "\rx"]
    records = [
        bash_record(f"s{i}", now, idle=False, note=cell, count=-5, plain="a=b")
        for i, cell in enumerate(cells)
    ]
    records.append(bash_record("=cmd|' /C calc'!A0", now, idle=False, note="ok", count=3))
    path = tmp_path / "s.json"
    path.write_text(json.dumps(records))
    args = ["list", "-s", path, "--preset", "bash-sessions", "--fields", "id,note,count,plain"]

    import csv
    import io

    safe = list(csv.DictReader(io.StringIO(cli(*args, "-f", "csv").stdout)))
    assert [row["note"] for row in safe[:-1]] == ["'" + cell for cell in cells]
    assert safe[-1]["id"] == "'=cmd|' /C calc'!A0" and safe[-1]["note"] == "ok"
    assert {row["count"] for row in safe} == {"-5", "3"}  # numbers are no formulas
    assert {row["plain"] for row in safe[:-1]} == {"a=b"}
    raw = list(csv.DictReader(io.StringIO(cli(*args, "-f", "csv-raw").stdout)))
    assert [row["note"] for row in raw[:-1]] == cells
    assert raw[-1]["id"] == "=cmd|' /C calc'!A0"
    env = {"SESSIONCTL_FORMAT": "csv-raw"}
    assert cli(*args, env=env).stdout == cli(*args, "-f", "csv-raw").stdout


# --- narrow terminals: ids shortened, no column lost --------------------------------------------


def long_id_store(tmp_path: Path, now: float) -> tuple[Path, dict[str, str]]:
    import hashlib

    statuses = {}
    records = []
    for i in range(6):
        sid = f"sess-{hashlib.sha256(str(i).encode()).hexdigest()}"[:45]
        idle = i % 2 == 1
        statuses[sid] = "expired" if idle else "active"
        records.append(bash_record(sid, now, idle=idle, workspace_name=f"workspace{i}"))
    path = tmp_path / "long.json"
    path.write_text(json.dumps(records))
    return path, statuses


@pytest.mark.parametrize("width", [80, 100, 120])
def test_a_narrow_terminal_shortens_ids_and_keeps_every_column(
    cli, tmp_path, now, monkeypatch, width
):
    """At 80 columns with 45-character ids, STATUS, AGE, IDLE and REASONS vanished."""
    from rich.cells import cell_len

    from sessionctl import render

    monkeypatch.setattr(render, "stdout_is_terminal", lambda: True)
    monkeypatch.setenv("COLUMNS", str(width))
    path, statuses = long_id_store(tmp_path, now)
    out = cli("list", "-s", path, "--preset", "bash-sessions").stdout
    lines = [line for line in out.splitlines() if line.strip()]
    assert all(cell_len(line.rstrip()) <= width for line in lines), out
    header = lines[0]
    for title in ("ID", "STATUS", "GROUP", "CREATED", "LAST USED", "AGE", "IDLE", "REASONS"):
        assert title in header, (title, out)
    rows = lines[2:]
    assert len(rows) == 6
    for sid, status in statuses.items():
        shown = [row for row in rows if row.startswith(sid[:6]) and sid[-3:] + " " in row]
        assert len(shown) == 1, (sid, out)
        words = shown[0].split()
        assert "…" in words[0]  # the id, shortened in the middle
        assert words[1] == status  # the verdict, whole
        assert words[-1] == ("idle" if status == "expired" else "-")


def test_a_wide_terminal_and_a_pipe_show_whole_ids(cli, tmp_path, now, monkeypatch):
    from sessionctl import render

    path, statuses = long_id_store(tmp_path, now)
    monkeypatch.setenv("COLUMNS", "80")
    piped = cli("list", "-s", path, "--preset", "bash-sessions").stdout
    assert all(sid in piped for sid in statuses) and "…" not in piped
    monkeypatch.setattr(render, "stdout_is_terminal", lambda: True)
    monkeypatch.setenv("COLUMNS", "250")
    wide = cli("list", "-s", path, "--preset", "bash-sessions").stdout
    assert all(sid in wide for sid in statuses) and "…" not in wide


def test_error_lines_escape_c1_controls_too(cli, tmp_path):
    missing = tmp_path / "gone\x9b2J\x1b[31m\x85.json"
    line = one_line_error(cli("list", "-s", f"json:{missing}", code=3))
    assert raw_controls(line) == []
    assert "gone\\x9b2J\\x1b[31m" in line


def test_a_refused_lone_surrogate_id_is_reported_in_json_too(cli, tmp_path, now):
    folder = tmp_path / "sessions"
    folder.mkdir()
    name = "a\ud800b"
    entry = {"key": 0, "id": name, "reasons": [], "record": bash_record(name, now)}
    archive = write_archive(tmp_path / "a.ndjson.gz", [entry], kind="json")
    result = cli("restore", archive, "-s", f"jsondir:{folder}", "-f", "json", code=1)
    out = json.loads(result.stdout)
    assert out["refusals"][0]["id"] == name and out["refused"] == 1
    assert not list(folder.iterdir())


def test_restore_never_replaces_a_file_the_application_wrote_meanwhile(
    cli, tmp_path, now, monkeypatch
):
    """Between the check that a session's file is absent and the write, the application may
    write it: its file stays, the archived one is skipped."""
    folder = tmp_path / "sessions"
    folder.mkdir()
    (folder / "s1.json").write_text(json.dumps(bash_record("s1", now)))
    archive = cleanup_archive(cli, folder, "--preset", "bash-sessions", "--expired")
    newer = json.dumps(bash_record("s1", now, idle=False))
    real_lexists = os.path.lexists

    def lexists_then_the_app_writes(path):
        found = real_lexists(path)
        if str(path).endswith("s1.json") and not found:
            Path(path).write_text(newer)  # right after the check, before the write
        return found

    # The folder store (stores/files/folder.py) checks with os.path.lexists.
    monkeypatch.setattr(os.path, "lexists", lexists_then_the_app_writes)
    out = json.loads(cli("restore", archive, "-f", "json").stdout)
    monkeypatch.undo()
    assert (out["restored"], out["skipped"]) == (0, 1)
    assert (folder / "s1.json").read_text() == newer
    assert [p.name for p in folder.iterdir()] == ["s1.json"]  # no temp file left


def test_a_session_whose_cascade_row_is_refused_is_not_left_half_restored(cli, tmp_path):
    """Its parent row went in, its attributes did not: it is refused, with why (it is not
    there again, as a skipped session would be)."""
    generated = storegen.generate("spring", 6, seed=4)
    db = storegen.write_sqlite(tmp_path / "spring.db", generated)
    archive = cleanup_archive(cli, db, "--all", "--yes")
    blocked = generated.records[0]["PRIMARY_ID"]
    conn = sqlite3.connect(db)  # foreign keys off: an orphan attribute row of that session
    conn.execute(
        "INSERT INTO SPRING_SESSION_ATTRIBUTES VALUES (?, 'SPRING_SECURITY_CONTEXT', x'00')",
        (blocked,),
    )
    conn.commit()
    conn.close()
    out = json.loads(cli("restore", archive, "-f", "json", code=1).stdout)
    assert (out["restored"], out["skipped"], out["refused"]) == (5, 0, 1)
    assert "UNIQUE constraint failed" in out["refusals"][0]["reason"]
    conn = sqlite3.connect(db)
    ids = {row[0] for row in conn.execute("SELECT PRIMARY_ID FROM SPRING_SESSION")}
    attributes = conn.execute("SELECT COUNT(*) FROM SPRING_SESSION_ATTRIBUTES").fetchone()[0]
    conn.close()
    assert blocked not in ids and len(ids) == 5
    assert attributes == 6  # five restored, and the orphan as it was


def test_validate_on_a_narrow_terminal_wraps_the_reasons_and_keeps_every_column(
    cli, tmp_path, now, monkeypatch
):
    from rich.cells import cell_len

    from sessionctl import render

    monkeypatch.setattr(render, "stdout_is_terminal", lambda: True)
    monkeypatch.setenv("COLUMNS", "80")
    path, statuses = long_id_store(tmp_path, now)
    records = json.loads(path.read_text())
    for record in records:
        record["created_at"] = "not a time at all"
        record["last_used"] = now + 40 * 86400
    path.write_text(json.dumps(records))
    out = cli("validate", "-s", path, "--preset", "bash-sessions", code=1).stdout
    lines = [line for line in out.splitlines() if line.strip()]
    assert all(cell_len(line.rstrip()) <= 80 for line in lines), out
    assert lines[0].split() == ["ID", "KEY", "REASONS"]
    assert sum(line.count("sess-") for line in lines) == len(statuses)
    assert "future" in out and "not a time at" in out
