"""Security (issue 7): symlinks in folder stores, private files and folders, hostile ids, paths and
store names in hooks, and secrets that never leave redacted unless asked.

(tests/test_cleanup.py already checks one symlink to a file and one to a folder with --all, and
the modes of one run's audit log and archive; these go further. The crontab side of hostile
names is tested with `schedule`, in tests/test_schedule.py.)
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import sys
import textwrap
from pathlib import Path

import pytest

from helpers import one_line_error, storegen
from reliability import archived_entries, folder_sessions
from sessionctl.stores.jsondir import TRASH_PREFIX

# --- folder stores: symlinks and other non-regular files ----------------------------------------


def _expired_raptor(session_id: str) -> dict:
    return {
        "session_id": session_id,
        "cdp_url": "ws://127.0.0.1:9222/x",
        "browser_type": "chromium",
        "created_at": "2020-01-01T00:00:00Z",
        "last_accessed": "2020-01-01T00:00:00Z",
    }


@pytest.fixture
def hostile_folder(tmp_path):
    """A folder store full of things that are not session files, next to real ones."""
    folder = storegen.write_jsondir(tmp_path / "sessions", storegen.generate("raptor", 12, seed=4))
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim.json"
    victim.write_text(json.dumps(_expired_raptor("victim")))
    (outside / "inner.json").write_text(json.dumps(_expired_raptor("inner")))
    sibling = next(p for p in sorted(folder.iterdir()) if p.suffix == ".json")
    links = {
        "to-file.json": victim,
        "to-folder.json": outside,
        "to-sibling.json": sibling,
        "dangling.json": tmp_path / "nowhere.json",
        "loop.json": folder / "loop.json",
        # What a killed cleanup leaves, but a link: recovery must not follow or move it.
        f"{TRASH_PREFIX}planted.json": victim,
    }
    for name, target in links.items():
        (folder / name).symlink_to(target)
    os.mkfifo(folder / "fifo.json")  # reading it would block forever
    (folder / "subfolder.json").mkdir()
    (folder / "subfolder.json" / "nested.json").write_text(json.dumps(_expired_raptor("n")))
    return folder, outside, links


def _outside_state(outside: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(outside.iterdir())}


@pytest.mark.parametrize(
    "args", [["--all", "--yes"], ["--expired", "--invalid"], ["--max-count", "0", "--yes"]]
)
def test_folder_cleanup_touches_only_regular_files(cli, hostile_folder, args):
    folder, outside, links = hostile_folder
    before_outside = _outside_state(outside)
    regular = set(folder_sessions(folder))
    result = json.loads(cli("cleanup", "-s", folder, *args, "-f", "json").stdout)
    for name, target in links.items():
        assert (folder / name).is_symlink(), f"{name} was removed or replaced"
        assert os.readlink(folder / name) == str(target)
    assert _outside_state(outside) == before_outside, "a symlink's target was changed"
    assert stat.S_ISFIFO((folder / "fifo.json").lstat().st_mode)
    assert (folder / "subfolder.json" / "nested.json").exists()
    removed = {str(s["key"]) for s in result["sessions"]}
    assert removed <= regular, "only regular files are sessions"
    assert all(not (folder / name).exists() for name in removed)
    if args[0] == "--all":
        assert set(folder_sessions(folder)) == set()


def test_folder_reads_never_follow_symlinks(cli, hostile_folder):
    folder, _, links = hostile_folder
    views = json.loads(cli("list", "-s", folder, "-f", "json").stdout)
    assert {"victim", "inner", "n"}.isdisjoint({v["id"] for v in views})
    for name in links:
        result = cli("inspect", name, "-s", folder, code=1)
        assert "no session" in one_line_error(result)
    described = json.loads(cli("stats", "-s", folder, "-f", "json").stdout)
    assert described["total"] == len(views)


def test_a_session_file_swapped_for_a_symlink_meanwhile_is_left(cli, tmp_path):
    """Between selection and removal the file becomes a symlink (a hook does it here): the
    link is not removed, and what it points at is not touched."""
    folder = storegen.write_jsondir(tmp_path / "s", storegen.generate("raptor", 10, seed=2))
    victim = tmp_path / "victim.json"
    victim.write_text(json.dumps(_expired_raptor("victim")))
    swap = tmp_path / "swap.py"
    swap.write_text(
        textwrap.dedent(f"""\
        import os, sys, json
        session = json.load(sys.stdin)
        path = os.path.join({str(folder)!r}, session["key"])
        os.unlink(path)
        os.symlink({str(victim)!r}, path)
        """)
    )
    before = victim.read_bytes()
    result = json.loads(
        cli(
            "cleanup", "-s", folder, "--expired", "--hook", f"{sys.executable} {swap}", "-f", "json"
        ).stdout
    )
    assert result["selected"] > 0
    assert result["deleted"] == 0 and result["changed"] == result["selected"]
    assert victim.read_bytes() == before
    links = [p for p in folder.iterdir() if p.is_symlink()]
    assert len(links) == result["selected"]


def test_recovery_puts_back_only_what_a_killed_run_moved_aside(cli, tmp_path, state_dir):
    """Leftovers of a killed folder cleanup: a moved-aside file goes back (unless the
    application wrote a newer one meanwhile); a planted link is neither followed nor moved."""
    generated = storegen.generate("raptor", 10, seed=9)
    folder = storegen.write_jsondir(tmp_path / "s", generated)
    active = generated.ids["active"]
    aside, newer = f"{active[0]}.json", f"{active[1]}.json"
    original = (folder / aside).read_bytes()
    os.rename(folder / aside, folder / f"{TRASH_PREFIX}{aside}")
    os.rename(folder / newer, folder / f"{TRASH_PREFIX}{newer}")
    (folder / newer).write_text(json.dumps({**_expired_raptor(active[1]), "note": "newer"}))
    victim = tmp_path / "victim.json"
    victim.write_text("{}")
    (folder / f"{TRASH_PREFIX}planted.json").symlink_to(victim)
    assert active[0] not in {
        v["id"] for v in json.loads(cli("list", "-s", folder, "-f", "json").stdout)
    }
    cli("cleanup", "-s", folder, "--invalid")
    assert (folder / aside).read_bytes() == original
    assert json.loads((folder / newer).read_bytes())["note"] == "newer"
    assert not (folder / f"{TRASH_PREFIX}{aside}").exists()
    assert not (folder / f"{TRASH_PREFIX}{newer}").exists()
    assert (folder / f"{TRASH_PREFIX}planted.json").is_symlink()
    assert victim.read_text() == "{}"


def test_a_json_store_reached_through_a_symlink_is_rewritten_where_it_lives(cli, tmp_path):
    """The application reads the file the link points at: that one is cleaned (its `.bak`
    beside it), and the link stays a link."""
    real_folder = tmp_path / "data"
    real_folder.mkdir()
    generated = storegen.generate("bash-sessions", 20, seed=3)
    real = storegen.write_json(real_folder / "sessions.json", generated, shape="wrapped")
    original = real.read_bytes()
    link = tmp_path / "sessions.json"
    link.symlink_to(real)
    cli("cleanup", "-s", link, "--expired")
    assert link.is_symlink() and os.readlink(link) == str(real)
    left = {s["session_id"] for s in json.loads(real.read_bytes())["sessions"]}
    assert left == set(generated.ids["active"]) | set(generated.ids["invalid"])
    assert (real_folder / "sessions.json.bak").read_bytes() == original
    assert not (tmp_path / "sessions.json.bak").exists()


# --- private files and folders --------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077])
def test_archives_backups_audit_log_and_locks_are_private(cli, tmp_path, state_dir, umask):
    generated = storegen.generate("bash-sessions", 20, seed=1)
    store = storegen.write_json(tmp_path / "sessions.json", generated, shape="wrapped")
    store.chmod(0o640)
    backup = store.with_name("sessions.json.bak")
    backup.write_text("old")
    backup.chmod(0o644)  # a backup someone left readable
    old = os.umask(umask)
    try:
        result = json.loads(cli("cleanup", "-s", store, "--expired", "-f", "json").stdout)
        explicit = tmp_path / "new" / "nested" / "archive.ndjson.gz"
        cli("restore", result["archive"], "-s", store)
        cli("cleanup", "-s", store, "--expired", "--archive", explicit)
    finally:
        os.umask(old)
    mode = lambda path: stat.S_IMODE(os.stat(path).st_mode)  # noqa: E731
    assert mode(store) == 0o640, "the store keeps its own mode"
    files = [backup, state_dir / "audit.log", result["archive"], explicit]
    files += list((state_dir / "locks").iterdir())
    for path in files:
        assert mode(path) == 0o600, path
    folders = [state_dir, state_dir / "archives", Path(result["archive"]).parent]
    folders += [state_dir / "locks", explicit.parent, explicit.parent.parent]
    for path in folders:
        assert mode(path) == 0o700, path


def test_archive_into_a_shared_folder_leaves_the_folder_alone(cli, tmp_path):
    """`--archive /tmp/x.ndjson.gz` as root must not make /tmp private: the file is, not the
    folder it was asked to go in."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    store = storegen.write_json(tmp_path / "s.json", storegen.generate("bash-sessions", 20))
    target = shared / "sessions.ndjson.gz"
    cli("cleanup", "-s", store, "--expired", "--archive", target)
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_loose_state_folder_is_tightened(cli, tmp_path, state_dir):
    state_dir.mkdir(mode=0o755)
    state_dir.chmod(0o755)
    (state_dir / "audit.log").write_text("")
    (state_dir / "audit.log").chmod(0o644)
    store = storegen.write_json(tmp_path / "s.json", storegen.generate("bash-sessions", 20))
    cli("cleanup", "-s", store, "--expired")
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
    # An existing log keeps the mode it has (it is not ours to chmod behind the owner's back),
    # but nobody else can reach it through the folder any more.
    assert (state_dir / "audit.log").read_text().count("\n") == 1


# --- hostile ids, paths and store names in hooks -------------------------------------------------

CANARY = "PWNED"
HOSTILE = [
    "plain",
    "with space",
    "it's",
    'say "hi"',
    "a;touch PWNED-semicolon",
    "$(touch PWNED-subshell)",
    "`touch PWNED-backtick`",
    "line\nbreak; touch PWNED-newline",
    "-rf --no-preserve-root",
    "${IFS}touch${IFS}PWNED-ifs",
    "|touch PWNED-pipe",
    "&& touch PWNED-and",
    "> PWNED-redirect",
    "ünïcødé ✓",
]
HOOK = textwrap.dedent("""\
    import json, os, sys
    payload = json.load(sys.stdin)
    with open(os.environ["HOOK_LOG"], "a") as log:
        log.write(json.dumps({
            "env": os.environ["SESSIONCTL_SESSION_ID"],
            "stdin": payload["id"],
            "store": os.environ["SESSIONCTL_STORE"],
            "argv": sys.argv[1:],
        }) + "\\n")
    """)


def _hook(tmp_path: Path) -> Path:
    folder = tmp_path / "hook dir; $(touch PWNED-hookpath) 'q'"
    folder.mkdir()
    script = folder / "teardown `x`.py"
    script.write_text(HOOK)
    return script


def _calls(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def _no_canaries(*folders: Path) -> None:
    for folder in folders:
        found = [p for p in folder.rglob("*") if p.name.startswith(CANARY)]
        assert found == [], f"something ran: {found}"


@pytest.mark.parametrize("kind", ["json", "jsondir", "sqlite"])
def test_hostile_ids_reach_the_hook_exactly_and_run_nothing(cli, tmp_path, monkeypatch, kind):
    import shlex

    monkeypatch.chdir(tmp_path)
    home = tmp_path / "store dir $(touch PWNED-store) `x` ;'\"\nnl"
    home.mkdir()
    ids = HOSTILE
    records = [
        {"session_id": sid, "workspace_name": "w", "created_at": 1e9, "last_used": 1e9}
        for sid in ids
    ]
    if kind == "json":
        path = home / "sessions.json"
        path.write_text(json.dumps({"sessions": records}))
        address = f"json:{path}"
    elif kind == "jsondir":
        path = home / "sessions"
        path.mkdir()
        for index, record in enumerate(records):
            name = record["session_id"].replace("/", "_")
            (path / f"{name}.json").write_text(json.dumps(record))
            assert index >= 0
        address = f"jsondir:{path}"
    else:
        path = home / "app.db"
        conn = sqlite3.connect(path)
        conn.execute(
            "CREATE TABLE bash_sessions (session_id TEXT PRIMARY KEY, workspace_name TEXT, "
            "created_at REAL, last_used REAL)"
        )
        conn.executemany(
            "INSERT INTO bash_sessions VALUES (?, ?, ?, ?)", [tuple(r.values()) for r in records]
        )
        conn.commit()
        conn.close()
        address = f"sqlite:{path}?table=bash_sessions"
    script = _hook(tmp_path)
    log = tmp_path / "hook.log"
    hook = f"{shlex.quote(sys.executable)} {shlex.quote(str(script))} 'fixed; $(arg)'"
    result = cli(
        "cleanup",
        "-s",
        address,
        "--preset",
        "bash-sessions",
        "--expired",
        "--hook",
        hook,
        "-f",
        "json",
        env={"HOOK_LOG": str(log)},
    )
    figures = json.loads(result.stdout)
    calls = _calls(log)
    assert sorted(c["env"] for c in calls) == sorted(ids)
    assert all(c["env"] == c["stdin"] for c in calls)
    assert all(c["argv"] == ["fixed; $(arg)"] for c in calls), "ids never become arguments"
    assert {c["store"] for c in calls} == {address}
    assert figures["deleted"] == len(ids)
    _no_canaries(tmp_path)


def test_hostile_store_name_from_the_config_reaches_the_hook(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = storegen.write_json(tmp_path / "s.json", storegen.generate("bash-sessions", 10))
    name = "web; $(touch PWNED-name) `touch PWNED-tick` 'q'"
    script = _hook(tmp_path)
    log = tmp_path / "hook.log"
    config = tmp_path / "c.toml"
    config.write_text(
        f"[stores.{json.dumps(name)}]\naddress = {json.dumps(str(store))}\n"
        f"on_delete = {json.dumps([sys.executable, str(script)])}\n"
    )
    cli("--config", config, "cleanup", "-s", name, "--expired", env={"HOOK_LOG": str(log)})
    calls = _calls(log)
    assert calls and {c["store"] for c in calls} == {name}
    _no_canaries(tmp_path)


def test_a_nul_in_an_id_keeps_the_session_and_says_so_on_one_line(cli, tmp_path):
    path = tmp_path / "s.json"
    bad = "nul\u0000id\nsecond line"
    records = [{"session_id": bad, "workspace_name": "w", "created_at": 1e9, "last_used": 1e9}]
    path.write_text(json.dumps(records))
    result = cli(
        "cleanup",
        "-s",
        path,
        "--preset",
        "bash-sessions",
        "--expired",
        "--hook",
        "true",
        "-q",
        code=5,
    )
    line = one_line_error(result)
    assert "NUL" in line
    assert json.loads(path.read_text()) == records


# --- secrets stay redacted ---------------------------------------------------------------------------

TOKEN = "sk-CANARY-7f3a9c1e5b"


def _secret_sqlite(tmp_path: Path) -> Path:
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE sessions (session_id TEXT PRIMARY KEY, user_id TEXT, last_used REAL, "
        "expires REAL, auth_token TEXT, data BLOB, extra TEXT)"
    )
    rows = []
    for i in range(6):
        expires = 1e9 if i % 2 else 4_000_000_000.0
        rows.append(
            (
                f"s{i}",
                f"u{i}",
                1.0,
                expires,
                f"{TOKEN}-{i}",
                f"pickle {TOKEN}".encode(),
                json.dumps({"api_key": TOKEN, "theme": "dark"}),
            )
        )
    conn.executemany("INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    conn.commit()
    conn.close()
    return path


def _secret_json(tmp_path: Path) -> Path:
    path = tmp_path / "sessions.json"
    records = [
        {
            "session_id": f"s{i}",
            "user_id": f"u{i}",
            "last_used": 1e9 if i % 2 else 4_000_000_000,
            "password": TOKEN,
            "cookie": {"value": TOKEN, "httpOnly": True},
            "sess": json.dumps({"passport": {"token": TOKEN}}),
            "meta": {"nested": {"refresh_token": TOKEN}},
        }
        for i in range(6)
    ]
    path.write_text(json.dumps(records))
    return path


READS = [
    ["list"],
    ["list", "-f", "json"],
    ["list", "-f", "ndjson"],
    ["list", "-f", "csv"],
    ["list", "--fields", "id,auth_token,password,cookie,meta,sess,extra,data", "-f", "json"],
    ["list", "--fields", "id,auth_token,password,cookie,meta,sess,extra,data", "-f", "csv"],
    ["list", "--fields", "cookie.value,meta.nested,sess.passport", "-f", "json"],
    ["inspect", "s0"],
    ["inspect", "s1", "-f", "json"],
    ["validate"],
    ["validate", "-f", "json"],
    ["stats"],
    ["stats", "-f", "json"],
    ["stats", "-f", "prometheus"],
    ["cleanup", "--expired", "--dry-run"],
    ["cleanup", "--expired", "--dry-run", "-f", "json"],
    # A secret field mapped as a time by mistake: its value is not quoted in the reasons.
    ["validate", "-f", "json", "--field", "expires=auth_token", "--field", "accessed=password"],
    ["list", "--field", "created=auth_token", "--field", "created=password"],
]


@pytest.mark.parametrize("kind", ["json", "sqlite"])
def test_secrets_never_leave_redacted_unless_asked(cli, tmp_path, state_dir, kind):
    store = _secret_json(tmp_path) if kind == "json" else _secret_sqlite(tmp_path)
    base = ["-s", store, "--idle-timeout", "1h"] if kind == "json" else ["-s", store]
    seen = []
    for args in READS:
        if kind == "sqlite":  # the table has no `password` column (a mapping to it is refused)
            args = [a.replace("=password", "=data") for a in args]
        result = cli(*args, *base, code=None)
        assert result.exit_code in (0, 1), (args, result.stderr)
        seen.append((args, result.stdout + result.stderr))
    hook = tmp_path / "leaky.py"
    # A teardown that fails, and says so quoting the token it was given (as curl would an URL).
    hook.write_text(
        textwrap.dedent("""\
        import json, sys
        record = json.load(sys.stdin)["record"]
        token = record.get("auth_token") or record.get("password")
        sys.exit(f"revoke https://idp.example/revoke?token={token} failed: 503")
        """)
    )
    failing = cli(
        "cleanup", *base, "--expired", "--hook", f"{sys.executable} {hook}", "-f", "json", code=5
    )
    seen.append((["cleanup with a failing hook"], failing.stdout + failing.stderr))
    assert json.loads(failing.stdout)["errors"], "the hook failed, and the errors say so"
    quiet = cli("cleanup", *base, "--expired", "--hook", f"{sys.executable} {hook}", "-q", code=5)
    seen.append((["cleanup -q with a failing hook"], quiet.stderr))
    done = cli("cleanup", *base, "--expired", "-f", "json")
    seen.append((["cleanup"], done.stdout + done.stderr))
    for args in (["history"], ["history", "-f", "json"]):
        seen.append((args, cli(*args).stdout))
    seen.append((["audit.log"], (state_dir / "audit.log").read_text()))
    leaks = [args for args, text in seen if TOKEN in text]
    assert leaks == [], f"the token leaked in: {leaks}"
    # The archive has it all (it is private), and --show-secrets shows it: the test can fail.
    archive = json.loads(done.stdout)["archive"]
    assert TOKEN in json.dumps(archived_entries(Path(archive).parent))
    shown = cli("list", *base, "--fields", "id,auth_token,password", "--show-secrets", "-f", "json")
    assert TOKEN in shown.stdout


def test_an_undecodable_sqlite_value_is_not_quoted_in_the_error(cli, tmp_path):
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE sessions (session_id TEXT, expires REAL, auth_token TEXT)")
    conn.execute(
        "INSERT INTO sessions VALUES ('a', 1, CAST(? AS TEXT))",
        (b"\xff" + TOKEN.encode() + b" busy",),
    )
    conn.commit()
    conn.close()
    # The row is one invalid session (corrupt), named by its column, never quoted.
    result = cli("list", "-s", path, "-f", "json")
    assert TOKEN not in result.stdout + result.stderr
    [view] = json.loads(result.stdout)
    [reason] = view["reasons"]
    assert reason["code"] == "corrupt"
    assert "auth_token" in reason["message"] and "UTF-8" in reason["message"]
    result = cli("validate", "-s", path, code=1)
    assert TOKEN not in result.stdout + result.stderr
