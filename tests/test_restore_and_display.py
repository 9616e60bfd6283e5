"""Restore into any store kind (safe file names, mapping by role, refusals, file owners) and
what reaches a terminal or a spreadsheet (control characters, formula cells, narrow tables)."""

import json
import os
import sqlite3
import stat
from pathlib import Path

import pytest
from helpers import one_line_error, storegen

from sessionctl.core.audit import ArchiveWriter, read_archive

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


def test_sqlite_refuses_fields_it_has_no_column_for_and_missing_required_values(
    cli, tmp_path, now
):
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

