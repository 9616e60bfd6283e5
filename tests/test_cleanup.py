import gzip
import json
import os
import sqlite3
import stat
import textwrap
from pathlib import Path

import pytest

from helpers import one_line_error, store_files_snapshot, storegen
from sessionctl.app.config import Config
from sessionctl.app.context import StoreRequest, open_context
from sessionctl.app.locking import StoreLock
from stores import CASES, build, session_name

MODES = {
    "expired": (["--expired"], lambda ids: set(ids["expired"])),
    "invalid": (["--invalid"], lambda ids: set(ids["invalid"])),
    "all": (
        ["--all", "--yes"],
        lambda ids: set(ids["active"]) | set(ids["expired"]) | set(ids["invalid"]),
    ),
}


def remaining(cli, store) -> set[str]:
    views = json.loads(cli("list", *store.args, "-f", "json").stdout)
    return {session_name(v) for v in views}


def archive_records(path) -> list[dict]:
    with gzip.open(path, "rt") as handle:
        lines = [json.loads(line) for line in handle]
    assert lines[0]["sessionctl_archive"] == 1
    return lines[1:]


@pytest.fixture(params=CASES, ids=[case[0] for case in CASES])
def store(request, tmp_path):
    return build(tmp_path, *request.param)


@pytest.mark.parametrize("mode", list(MODES))
def test_cleanup_removes_exactly_what_it_should(cli, store, mode):
    args, doomed = MODES[mode]
    expected_gone = doomed(store.ids)
    if mode == "expired":
        # An invalid session may be expired as well; those go with --expired too.
        listed = json.loads(cli("list", *store.args, "--expired", "-f", "json").stdout)
        expected_gone = {session_name(v) for v in listed}
        assert set(store.ids["expired"]) <= expected_gone
    before = remaining(cli, store)
    result = json.loads(cli("cleanup", *store.args, *args, "-f", "json").stdout)
    assert result["selected"] == len(expected_gone)
    assert result["deleted"] == len(expected_gone)
    assert result["failed"] == 0 and result["errors"] == []
    assert result["total"] == store.total
    assert remaining(cli, store) == before - expected_gone
    archived = archive_records(result["archive"])
    names = {e["id"] or str(e["key"]).removesuffix(".json") for e in archived}
    assert names == expected_gone
    assert sum(result["by_reason"].values()) >= result["selected"]


def test_dry_run_changes_nothing(cli, store, state_dir):
    before = store_files_snapshot(store.path)
    result = json.loads(
        cli("cleanup", *store.args, "--expired", "--invalid", "--dry-run", "-f", "json").stdout
    )
    assert result["dry_run"] is True
    assert result["selected"] >= len(store.ids["invalid"]) + len(store.ids["expired"]) - 1
    assert result["deleted"] == 0 and result["archive"] is None
    assert {s["id"] or str(s["key"]).removesuffix(".json") for s in result["sessions"]} >= set(
        store.ids["invalid"]
    )
    assert store_files_snapshot(store.path) == before
    assert not (state_dir / "archives").exists()


def test_dry_run_table_says_what_and_why(cli, tmp_path):
    store = build(tmp_path, "bash", "bash-sessions", "json-wrapped", [], n=20)
    out = cli("cleanup", *store.args, "--expired", "-n").stdout
    assert "dry run: nothing changed" in out
    assert "Would remove" in out
    assert store.ids["expired"][0] in out and "idle" in out


@pytest.mark.parametrize("kind", ["json-array", "sqlite"])
def test_max_per_group_keeps_the_newest(cli, tmp_path, now, kind):
    generated = storegen.generate("bash-sessions", 0)
    for i in range(12):
        record = {
            "session_id": f"s{i:02d}",
            "workspace_name": "big" if i < 8 else "small",
            "created_at": now - 1000 + i,
            "last_used": now - 100 + i,
        }
        generated.add("active", record["session_id"], record)
    path = (
        storegen.write_sqlite(tmp_path / "b.db", generated)
        if kind == "sqlite"
        else storegen.write_json(tmp_path / "b.json", generated)
    )
    result = json.loads(cli("cleanup", "-s", path, "--max-per-group", "3", "-f", "json").stdout)
    assert result["by_reason"] == {"group_cap": 6}  # 8 - 3 in "big", 4 - 3 in "small"
    views = json.loads(cli("list", "-s", path, "-f", "json").stdout)
    assert sorted(v["id"] for v in views) == ["s05", "s06", "s07", "s09", "s10", "s11"]


@pytest.mark.parametrize("kind", ["jsondir", "json-wrapped", "sqlite"])
def test_max_count_and_max_size_remove_the_oldest(cli, tmp_path, kind):
    generated = storegen.generate("bash-sessions", 30, mix=(1.0, 0.0, 0.0))
    if kind == "jsondir":
        path = storegen.write_jsondir(tmp_path / "d", generated)
    elif kind == "sqlite":
        path = storegen.write_sqlite(tmp_path / "d.db", generated)
    else:
        path = storegen.write_json(tmp_path / "d.json", generated, shape="wrapped")
    order = sorted(generated.records, key=lambda r: r["last_used"])
    result = json.loads(cli("cleanup", "-s", path, "--max-count", "20", "-f", "json").stdout)
    assert result["deleted"] == 10 and result["by_reason"] == {"count_cap": 10}
    left = {v["id"] for v in json.loads(cli("list", "-s", path, "-f", "json").stdout)}
    assert left == {r["session_id"] for r in order[10:]}
    sizes = json.loads(cli("list", "-s", path, "--fields", "id,size", "-f", "json").stdout)
    total = sum(v["fields"]["size"] for v in sizes)
    limit = total // 2
    cli("cleanup", "-s", path, "--max-size", str(limit))
    after = json.loads(cli("list", "-s", path, "--fields", "id,size", "-f", "json").stdout)
    assert 0 < sum(v["fields"]["size"] for v in after) <= limit
    kept = {v["id"] for v in after}
    assert kept == {r["session_id"] for r in order[-len(kept) :]}  # the newest stay


def test_nothing_selected_without_a_mode(cli, tmp_path):
    store = build(tmp_path, "bash", "bash-sessions", "json-wrapped", [])
    line = one_line_error(cli("cleanup", *store.args, code=2))
    assert "say what to remove" in line


def test_expired_needs_a_way_to_tell(cli, tmp_path, now):
    path = tmp_path / "plain.json"
    path.write_text(json.dumps([{"id": "a", "owner": "x"}]))
    line = one_line_error(cli("cleanup", "-s", path, "--expired", code=2))
    assert "cannot tell which sessions" in line and "--idle-timeout" in line


def test_all_refuses_without_a_terminal_or_yes(cli, tmp_path):
    store = build(tmp_path, "django", "django", "sqlite", [])
    before = store_files_snapshot(store.path)
    line = one_line_error(cli("cleanup", *store.args, "--all", code=2))
    assert "--yes" in line
    assert store_files_snapshot(store.path) == before


def test_all_on_a_terminal_asks_with_store_and_count(cli, tmp_path, monkeypatch):
    from sessionctl.cli import cleanup as cleanup_cli

    monkeypatch.setattr(cleanup_cli, "stdin_is_terminal", lambda: True)
    store = build(tmp_path, "django", "django", "sqlite", [], n=30)
    declined = cli("cleanup", *store.args, "--all", input="n\n", code=1)
    assert f"Remove ALL 30 sessions from {store.path}" in declined.stderr.replace("sqlite:", "")
    assert "aborted" in declined.stderr
    assert len(remaining(cli, store)) == 30
    cli("cleanup", *store.args, "--all", input="y\n")
    assert remaining(cli, store) == set()


def test_archive_then_restore_gives_back_the_same_records(cli, store):
    if store.kind == "sqlite":
        conn = sqlite3.connect(store.path)
        table = conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
        ).fetchall()
        dump_before = {
            name: sorted(map(repr, conn.execute(f'SELECT * FROM "{name}"'))) for (name,) in table
        }
        conn.close()
    else:
        before = {
            session_name(v): v
            for v in json.loads(cli("list", *store.args, "-f", "json", "--show-secrets").stdout)
        }
        raw_before = _records(store)
    result = json.loads(cli("cleanup", *store.args, "--all", "--yes", "-f", "json").stdout)
    assert remaining(cli, store) == set()
    restored = json.loads(cli("restore", result["archive"], "-f", "json").stdout)
    assert restored["restored"] == store.total and restored["skipped"] == 0
    if store.kind == "sqlite":
        conn = sqlite3.connect(store.path)
        dump_after = {
            name: sorted(map(repr, conn.execute(f'SELECT * FROM "{name}"'))) for (name,) in table
        }
        conn.close()
        assert dump_after == dump_before  # children rows (Spring attributes) included
    else:
        after = {
            session_name(v): v
            for v in json.loads(cli("list", *store.args, "-f", "json", "--show-secrets").stdout)
        }
        assert after.keys() == before.keys()
        assert sorted(map(json.dumps, _records(store))) == sorted(map(json.dumps, raw_before))
    again = json.loads(cli("restore", result["archive"], "-f", "json").stdout)
    assert again["restored"] == 0 and again["skipped"] == store.total


def _records(store) -> list:
    if store.path.is_dir():
        return [p.read_text() for p in sorted(store.path.glob("*.json"))]
    document = json.loads(store.path.read_text())
    return document if isinstance(document, list) else document


def test_json_store_keeps_shape_style_and_backup(cli, tmp_path):
    store = build(tmp_path, "bash", "bash-sessions", "json-wrapped", [], n=20)
    original = store.path.read_bytes()
    cli("cleanup", *store.args, "--expired")
    text = store.path.read_text()
    document = json.loads(text)
    assert document["version"] == 1 and isinstance(document["sessions"], list)
    assert text.startswith('{\n  "version": 1,\n  "sessions": [\n    {\n      "session_id"')
    assert text.endswith("}\n")
    backup = store.path.with_name(store.path.name + ".bak")
    assert backup.read_bytes() == original
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600


def test_failing_hook_keeps_exactly_its_session(cli, tmp_path):
    store = build(tmp_path, "provisioner", "provisioner", "json-keyed", ["--max-age", "7d"], n=20)
    victim = store.ids["expired"][0]
    log = tmp_path / "hook.log"
    hook = tmp_path / "teardown.py"
    hook.write_text(
        textwrap.dedent(f"""\
        import json, os, sys
        session = json.load(sys.stdin)
        assert session["id"] == os.environ["SESSIONCTL_SESSION_ID"]
        with open({str(log)!r}, "a") as log:
            log.write(session["id"] + " " + session["record"]["workspaceSlug"] + "\\n")
        if session["id"] == {victim!r}:
            print("Workspace not found", file=sys.stderr)
            sys.exit(3)
        """)
    )
    result = json.loads(
        cli(
            "cleanup", *store.args, "--expired", "--hook", f"python3 {hook}", "-f", "json", code=1
        ).stdout
    )
    assert result["failed"] == 1
    assert result["errors"] == [
        {"sessionId": victim, "error": "hook exited with status 3: Workspace not found"}
    ]
    assert result["deleted"] == len(store.ids["expired"]) - 1
    assert remaining(cli, store) == set(store.ids["active"]) | set(store.ids["invalid"]) | {victim}
    assert len(log.read_text().splitlines()) == len(store.ids["expired"])


def test_hook_failing_for_all_exits_5(cli, tmp_path):
    store = build(tmp_path, "django", "django", "sqlite", [], n=10)
    result = cli("cleanup", *store.args, "--expired", "--hook", "false", code=5)
    assert "Errors" in result.stdout
    assert len(remaining(cli, store)) == 10


def test_hook_timeout_and_missing_hook(cli, tmp_path):
    store = build(tmp_path, "django", "django", "sqlite", [], n=4, seed=9)
    out = json.loads(
        cli(
            "cleanup",
            *store.args,
            "--expired",
            "--hook",
            "sleep 5",
            "--hook-timeout",
            "0.3s",
            "-f",
            "json",
            code=5,
        ).stdout
    )
    assert all("timed out" in e["error"] for e in out["errors"])
    line = one_line_error(
        cli("cleanup", *store.args, "--expired", "--hook", "/no/such/teardown", code=2)
    )
    assert "not an executable" in line


def test_hook_from_config_on_delete(cli, tmp_path):
    store = build(tmp_path, "bash", "bash-sessions", "json-wrapped", [], n=10)
    marker = tmp_path / "seen"
    config = tmp_path / "c.toml"
    config.write_text(
        f'[stores.b]\naddress = "{store.path}"\non_delete = ["sh", "-c", "echo \\"$SESSIONCTL_SESSION_ID\\" >> {marker}"]\n'
    )
    cli("--config", config, "cleanup", "-s", "b", "--expired")
    assert sorted(marker.read_text().split()) == sorted(store.ids["expired"])


def test_concurrent_change_to_a_json_file_is_not_overwritten(cli, tmp_path, now):
    """The application rewrites sessions.json while cleanup runs: its writes survive."""
    store = build(tmp_path, "bash", "bash-sessions", "json-wrapped", [], n=20)
    touched = store.ids["expired"][1]
    app = tmp_path / "app.py"
    app.write_text(
        textwrap.dedent(f"""\
        import json, os, sys, time
        path = {str(store.path)!r}
        marker = path + ".done"
        if os.path.exists(marker):
            sys.exit(0)
        open(marker, "w").close()
        document = json.load(open(path))
        for session in document["sessions"]:
            if session["session_id"] == {touched!r}:
                session["last_used"] = time.time()  # the user came back
        document["sessions"].append({{"session_id": "brand-new", "workspace_name": "w",
                                      "created_at": time.time(), "last_used": time.time()}})
        temp = path + ".tmp"
        json.dump(document, open(temp, "w"), indent=2)
        os.replace(temp, path)
        """)
    )
    result = json.loads(
        cli("cleanup", *store.args, "--expired", "--hook", f"python3 {app}", "-f", "json").stdout
    )
    left = remaining(cli, store)
    assert "brand-new" in left
    assert touched in left
    assert result["changed"] == 1
    assert result["deleted"] == len(store.ids["expired"]) - 1
    assert left == (set(store.ids["active"]) | set(store.ids["invalid"]) | {"brand-new", touched})


def test_sqlite_rows_touched_after_selection_are_kept(cli, tmp_path, now):
    store = build(tmp_path, "django", "django", "sqlite", [], n=40)
    keep = store.ids["expired"][-1]
    script = tmp_path / "touch.py"
    script.write_text(
        textwrap.dedent(f"""\
        import sqlite3, time
        conn = sqlite3.connect({str(store.path)!r}, timeout=5)
        conn.execute("UPDATE django_session SET expire_date = datetime('now', '+1 day') WHERE session_key = ?", ({keep!r},))
        conn.commit()
        """)
    )
    result = json.loads(
        cli(
            "cleanup",
            *store.args,
            "--expired",
            "--batch-size",
            "3",
            "--hook",
            f"python3 {script}",
            "-f",
            "json",
        ).stdout
    )
    assert keep in remaining(cli, store)
    assert result["changed"] == 1
    assert result["deleted"] == len(store.ids["expired"]) - 1


def test_small_batches_and_pause(cli, tmp_path):
    store = build(tmp_path, "spring", "spring", "sqlite", [], n=40)
    result = json.loads(
        cli(
            "cleanup",
            *store.args,
            "--expired",
            "--batch-size",
            "2",
            "--pause",
            "0.01s",
            "-f",
            "json",
        ).stdout
    )
    assert result["deleted"] == len(store.ids["expired"])
    conn = sqlite3.connect(store.path)
    orphans = conn.execute(
        "SELECT COUNT(*) FROM SPRING_SESSION_ATTRIBUTES WHERE SESSION_PRIMARY_ID NOT IN (SELECT PRIMARY_ID FROM SPRING_SESSION)"
    ).fetchone()[0]
    conn.close()
    assert orphans == 0  # ON DELETE CASCADE was honoured
    archived = archive_records(result["archive"])
    assert all(e["children"]["SPRING_SESSION_ATTRIBUTES"] for e in archived)


def test_second_cleanup_is_refused_while_one_runs(cli, tmp_path, state_dir):
    store = build(tmp_path, "django", "django", "sqlite", [])
    ctx = open_context(Config(path=None, chosen_by=None), StoreRequest(store=str(store.path)), 0)
    lock = StoreLock(state_dir, ctx.identity, ctx.label).acquire()
    ctx.close()
    try:
        line = one_line_error(cli("cleanup", *store.args, "--expired", code=4))
        assert f"pid {os.getpid()}" in line and "another cleanup" in line
        quiet = cli("cleanup", *store.args, "--expired", "--quiet", code=4)
        assert quiet.stdout == "" and quiet.stderr == ""  # cron: overlap is not news
        cli("cleanup", *store.args, "--expired", "--dry-run")  # a dry run needs no lock
    finally:
        lock.release()
    cli("cleanup", *store.args, "--expired")


def test_same_store_by_name_and_by_path_shares_the_lock(cli, tmp_path, state_dir):
    store = build(tmp_path, "bash", "bash-sessions", "json-wrapped", [])
    config = tmp_path / "c.toml"
    config.write_text(f'[stores.web]\naddress = "json:{store.path}"\n')
    ctx = open_context(Config(path=None, chosen_by=None), StoreRequest(store=str(store.path)), 0)
    with StoreLock(state_dir, ctx.identity, ctx.label):
        cli("--config", config, "cleanup", "-s", "web", "--expired", code=4)
    ctx.close()


def test_quiet_prints_nothing_on_success(cli, tmp_path):
    store = build(tmp_path, "django", "django", "sqlite", [])
    result = cli("cleanup", *store.args, "--expired", "-q")
    assert result.stdout == "" and result.stderr == ""


def test_audit_log_history_and_last_cleaned(cli, tmp_path, state_dir):
    store = build(tmp_path, "raptor", "raptor", "jsondir", [])
    token = store.generated.records[0]["auth_token"]
    cli("cleanup", *store.args, "--expired", "--dry-run")
    result = json.loads(cli("cleanup", *store.args, "--expired", "--invalid", "-f", "json").stdout)
    audit = state_dir / "audit.log"
    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [entry["dry_run"] for entry in lines] == [True, False]
    entry = lines[1]
    for key in (
        "time",
        "user",
        "host",
        "store",
        "options",
        "total",
        "selected",
        "deleted",
        "ids",
        "outcome",
    ):
        assert key in entry
    assert entry["deleted"] == result["deleted"]
    assert len(entry["ids"]) == result["deleted"]
    assert token not in audit.read_text()
    assert stat.S_IMODE(audit.stat().st_mode) == 0o600
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
    archive = result["archive"]
    assert stat.S_IMODE(os.stat(archive).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(archive)).st_mode) == 0o700
    history = json.loads(cli("history", "-f", "json").stdout)
    assert history["totals"]["runs"] == 1 and history["totals"]["dry_runs"] == 1
    assert history["totals"]["cleaned"] == result["deleted"]
    assert history["last_run"]["outcome"] == "ok"
    filtered = json.loads(cli("history", "-s", store.path, "-f", "json").stdout)
    assert filtered["totals"]["cleaned"] == result["deleted"]
    assert json.loads(cli("history", "-s", tmp_path / "other", "-f", "json").stdout)["runs"] == []
    stats = json.loads(cli("stats", *store.args, "-f", "json").stdout)
    assert stats["last_cleanup"]["deleted"] == result["deleted"]
    assert stats["total_cleaned"] == result["deleted"]
    table = cli("history")
    assert "1 cleanup runs" in table.stderr


def test_folder_store_never_follows_or_removes_symlinks(cli, tmp_path, now):
    folder = tmp_path / "sessions"
    storegen.write_jsondir(folder, storegen.generate("raptor", 6, seed=4))
    outside = tmp_path / "outside.json"
    expired = {
        "session_id": "outside",
        "cdp_url": "ws://x",
        "browser_type": "chromium",
        "last_accessed": storegen.iso(now - 90 * 86400),
    }
    outside.write_text(json.dumps(expired))
    other_folder = tmp_path / "elsewhere"
    other_folder.mkdir()
    (other_folder / "keep.json").write_text(json.dumps(expired))
    (folder / "link.json").symlink_to(outside)
    (folder / "dirlink.json").symlink_to(other_folder)
    listed = {v["id"] for v in json.loads(cli("list", "-s", folder, "-f", "json").stdout)}
    assert "outside" not in listed
    cli("cleanup", "-s", folder, "--all", "--yes")
    assert (folder / "link.json").is_symlink() and (folder / "dirlink.json").is_symlink()
    assert json.loads(outside.read_text()) == expired
    assert (other_folder / "keep.json").exists()
    assert sorted(p.name for p in folder.iterdir()) == ["dirlink.json", "link.json"]


def test_no_archive_and_explicit_archive(cli, tmp_path, state_dir):
    store = build(tmp_path, "django", "django", "sqlite", [])
    result = json.loads(
        cli("cleanup", *store.args, "--expired", "--no-archive", "-f", "json").stdout
    )
    assert result["archive"] is None and result["deleted"]
    store2 = build(tmp_path, "bash", "bash-sessions", "json-wrapped", [])
    target = tmp_path / "keep" / "bash.ndjson.gz"
    result = json.loads(
        cli("cleanup", *store2.args, "--expired", "--archive", target, "-f", "json").stdout
    )
    assert result["archive"] == str(target) and len(archive_records(target)) == result["deleted"]
    line = one_line_error(
        cli("cleanup", *store2.args, "--expired", "--archive", target, "--no-archive", code=2)
    )
    assert "contradict" in line


def test_restore_reads_a_truncated_archive(cli, tmp_path):
    store = build(tmp_path, "bash", "bash-sessions", "json-wrapped", [], n=40)
    result = json.loads(cli("cleanup", *store.args, "--all", "--yes", "-f", "json").stdout)
    data = Path(result["archive"]).read_bytes()
    cut = tmp_path / "cut.ndjson.gz"
    cut.write_bytes(data[: len(data) - 30])  # lose the gzip trailer and the last block's end
    out = json.loads(cli("restore", cut, "-f", "json").stdout)
    assert out["truncated"] is True
    assert 0 < out["restored"] <= store.total


def test_interrupt_stops_between_batches_and_reports(tmp_path, state_dir):
    """Ctrl-C in the middle of a run: exit 130, what was removed is reported and archived."""
    import subprocess
    import sys

    store = build(tmp_path, "django", "django", "sqlite", [], n=40)
    counter = tmp_path / "count"
    hook = tmp_path / "hook.sh"
    hook.write_text(
        f"n=$(cat {counter} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {counter}\n"
        f'[ "$n" = 5 ] && kill -INT $PPID && sleep 1\nexit 0\n'
    )
    env = {**os.environ, "SESSIONCTL_STATE_DIR": str(state_dir)}
    # Python leaves SIGINT ignored when it starts ignored (as in a background job, which is how
    # some CI runners start the suite): restore the usual handler, as in a terminal.
    terminal_like = (
        "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "sys.argv[0] = 'sessionctl'; runpy.run_module('sessionctl', run_name='__main__')"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            terminal_like,
            "cleanup",
            *store.args,
            "--expired",
            "--batch-size",
            "2",
            "--hook",
            f"sh {hook}",
            "-f",
            "json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 130, done.stderr
    result = json.loads(done.stdout)
    assert result["outcome"] == "interrupted"
    assert 0 < result["deleted"] < len(store.ids["expired"])
    assert "interrupted after removing" in done.stderr and "Traceback" not in done.stderr
    conn = sqlite3.connect(store.path)
    left = {row[0] for row in conn.execute("SELECT session_key FROM django_session")}
    conn.close()
    gone = set(store.ids["active"]) | set(store.ids["expired"]) | set(store.ids["invalid"])
    gone -= left
    assert len(gone) == result["deleted"]
    assert {e["id"] for e in archive_records(result["archive"])} >= gone


def test_a_killed_rewrite_leaves_no_temp_file_behind_for_long(cli, tmp_path):
    """A run killed mid-rewrite leaves its temp file; the next run removes it (only ours)."""
    store = build(tmp_path, "bash", "bash-sessions", "json-wrapped", [], n=10)
    ours = tmp_path / f".{store.path.name}.sessionctl-k1ll3d.tmp"
    theirs = tmp_path / f".{store.path.name}.app-writing.tmp"
    ours.write_text("half a docu")
    theirs.write_text("the application's own temp file")
    cli("cleanup", *store.args, "--expired")
    assert not ours.exists()
    assert theirs.read_text() == "the application's own temp file"
