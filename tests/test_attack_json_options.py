"""Attacks on the JSON stores, the lock beside a store and the option checks, as a hostile
operator, a compromised application or a buggy one would make them. Each test failed before
the fix it names."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from helpers import one_line_error
from reliability import SESSIONCTL, as_nobody, public_tmpdir, subprocess_env

PAST = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3 * 86400))
SOON = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3 * 86400))


def _store(tmp_path: Path) -> Path:
    path = tmp_path / "sessions.json"
    path.write_text(
        f'[{{"session_id":"old","expires_at":"{PAST}"}},'
        f'{{"session_id":"new","expires_at":"{SOON}"}}]'
    )
    return path


# --- the lock beside the store ------------------------------------------------------------


@pytest.mark.parametrize("link", ["symlink", "hardlink", "fifo"])
def test_a_lock_file_beside_the_store_that_is_a_link_is_refused_and_its_target_kept(
    cli, tmp_path, link
):
    """Whoever can write in the store's folder (the application's user) put a link where the
    lock goes: the cleanup (often root) truncated and overwrote the file it points at."""
    path = _store(tmp_path)
    before = path.read_bytes()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious, not a lock\n")
    lock = tmp_path / "sessions.json.sessionctl.lock"
    if link == "symlink":
        lock.symlink_to(victim)
    elif link == "hardlink":
        os.link(victim, lock)
    else:
        os.mkfifo(lock)
    result = cli("cleanup", "-s", f"json:{path}", "--expired", "--lock", "store", code=3)
    assert "not a regular file" in one_line_error(result)
    assert victim.read_text() == "precious, not a lock\n"
    assert path.read_bytes() == before
    lock.unlink()
    cli("cleanup", "-s", f"json:{path}", "--expired", "--lock", "store")
    assert b'"old"' not in path.read_bytes()
    assert not lock.is_symlink() and lock.is_file()


def test_a_lock_file_inside_a_folder_store_that_is_a_symlink_is_refused(cli, tmp_path):
    folder = tmp_path / "sessions"
    folder.mkdir()
    (folder / "old.json").write_text(f'{{"session_id":"old","expires_at":"{PAST}"}}')
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (folder / ".sessionctl.lock").symlink_to(victim)
    cli("cleanup", "-s", f"jsondir:{folder}", "--expired", "--lock", "store", code=3)
    assert victim.read_text() == "precious\n"
    assert (folder / "old.json").exists()


def test_a_lock_holder_that_wrote_no_object_is_described_not_a_crash(cli, tmp_path):
    """The holder's note is only read for the busy message: a number there exited 70."""
    import fcntl

    path = _store(tmp_path)
    lock = tmp_path / "sessions.json.sessionctl.lock"
    lock.write_text("[1, 2]")
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = cli("cleanup", "-s", f"json:{path}", "--expired", "--lock", "store", code=4)
        assert "holder unknown" in one_line_error(result)
    finally:
        os.close(fd)


# --- config values of the wrong type -------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("fields = { id = 5 }", "is not a field name"),
        ('fields = { payload = ["data"] }', "is not a field name"),
        ("rules = { required = 5 }", "rules.required"),
        ('rules = { required = "id" }', "rules.required"),
        ("rules = { allowed = 5 }", "rules.allowed"),
        ("rules = { types = 5 }", "rules.types"),
        ('rules = { types = { a = ["string"] } }', "rules.types.a"),
    ],
)
def test_config_fields_and_rules_of_the_wrong_type_are_usage_errors(cli, tmp_path, line, says):
    """Each exited 70 (an AttributeError or TypeError) in every command, schedule install too."""
    path = _store(tmp_path)
    config = tmp_path / "config.toml"
    config.write_text(f'store = "app"\n[defaults]\n{line}\n[stores.app]\naddress = "json:{path}"\n')
    for command in (["list"], ["cleanup", "--expired", "--yes"]):
        result = cli("--config", config, *command, code=2)
        assert says in one_line_error(result)
    assert b'"old"' in path.read_bytes()


# --- options a later run would refuse -------------------------------------------------------


@pytest.fixture
def cron_d(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cron.d"
    folder.mkdir()
    monkeypatch.setenv("SESSIONCTL_CRON_D", str(folder))
    return folder


def test_schedule_install_refuses_a_lock_place_the_cleanup_refuses(cli, tmp_path, cron_d):
    """`-- cleanup --lock nfs` was installed; every cron run then exited 2."""
    path = _store(tmp_path)
    args = ["--expired", "-s", f"json:{path}", "--lock"]
    assert "--lock" in one_line_error(cli("cleanup", *args, "nfs", code=2))
    result = cli("schedule", "install", "x", "--system", "--every", "1h", "--", "cleanup", *args,
                 "nfs", code=2)  # fmt: skip
    assert "--lock" in one_line_error(result)
    assert not list(cron_d.iterdir())
    cli("schedule", "install", "x", "--system", "--every", "1h", "--", "cleanup", *args, "store")
    assert "--lock store" in (cron_d / "sessionctl-x").read_text()


def test_a_hook_timeout_of_zero_is_a_usage_error_before_anything(cli, tmp_path, cron_d):
    """Every hook 'timed out' at once (or not, by luck): sessions kept, exit 5, or removed."""
    path = _store(tmp_path)
    before = path.read_bytes()
    args = ["--expired", "-s", f"json:{path}", "--hook", "true", "--hook-timeout", "0s"]
    assert "--hook-timeout" in one_line_error(cli("cleanup", *args, code=2))
    assert path.read_bytes() == before
    result = cli("schedule", "install", "x", "--system", "--every", "1h", "--", "cleanup", *args,
                 code=2)  # fmt: skip
    assert "--hook-timeout" in one_line_error(result)
    assert not list(cron_d.iterdir())
    config = tmp_path / "config.toml"
    config.write_text(
        f'[stores.app]\naddress = "json:{path}"\non_delete = "true"\nhook_timeout = "0s"\n'
    )
    one_line_error(cli("--config", config, "cleanup", "-s", "app", "--expired", code=2))
    assert path.read_bytes() == before


# --- secrets --------------------------------------------------------------------------------

CANARY = "CANARYqq7"


def test_a_jwt_bearer_or_csrf_field_is_redacted_everywhere(cli, tmp_path):
    """`jwt`, `bearer` and `xsrf` did not look secret: inspect, list --fields and list -f json
    printed them."""
    path = tmp_path / "sessions.json"
    path.write_text(
        f'[{{"session_id":"s1","expires_at":"{SOON}","jwt":"{CANARY}1",'
        f'"bearer":"{CANARY}2","xsrf":"{CANARY}3","user":{{"id_jwt":"{CANARY}4"}}}}]'
    )
    store = f"json:{path}"
    for args in (
        ["inspect", "s1"],
        ["inspect", "s1", "-f", "json"],
        ["list", "-f", "json"],
        ["list", "--fields", "jwt,bearer,xsrf,user.id_jwt"],
        ["list", "-f", "json", "--fields", "jwt,bearer,xsrf,user"],
    ):
        result = cli(*args, "-s", store)
        assert CANARY not in result.stdout + result.stderr, args
    assert "s1" in cli("list", "-s", store).stdout


# --- idleness measured from creation ----------------------------------------------------------


def test_idle_from_created_on_a_store_without_a_creation_field_is_refused(cli, tmp_path):
    """It was accepted, and nothing was ever idle: a scheduled cleanup that silently never
    removes an idle session. Measured from the last access, the same store is refused."""
    path = tmp_path / "sessions.json"
    path.write_text(f'[{{"session_id":"a","expires_at":"{SOON}"}}]')
    args = ["cleanup", "-s", f"json:{path}", "--expired", "--idle-timeout", "7d", "-n"]
    assert "no last-access field" in one_line_error(cli(*args, code=2))
    assert "no creation field" in one_line_error(cli(*args, "--idle-from", "created", code=2))
    # With a creation field it works; an emptied store is still a no-op.
    old = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 30 * 86400))
    path.write_text(f'[{{"session_id":"a","created_at":"{old}"}}]')
    result = cli(*args, "--idle-from", "created", "-f", "json")
    assert json.loads(result.stdout)["selected"] == 1
    path.write_text('{"sessions": []}')
    cli(*args, "--idle-from", "created")


# --- restore puts back what a cleanup of a JSON file removed ------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        '[1, null, "x", {"session_id":"b","expires_at":"SOON"}, [], 1e400]',
        '{"sessions":[ 1 , "y", {"session_id":"b","expires_at":"SOON"} ], "v": 2}',
        '{"a": 1, "b": {"session_id":"b","expires_at":"SOON"}, "c": {"session_id":"c"}, '
        '"e": {"session_id":"e"}, "d": "str"}',
    ],
)
def test_values_that_are_not_objects_removed_as_invalid_are_restored_as_they_were(
    cli, tmp_path, text
):
    """`cleanup --invalid` removed them (archived), and restore into the same file refused
    every one ("a JSON file store holds objects only"): the round trip lost them."""
    path = tmp_path / "sessions.json"
    path.write_text(text.replace("SOON", SOON))
    removed = json.loads(cli("cleanup", "-s", f"json:{path}", "--invalid", "-f", "json").stdout)
    assert removed["deleted"] >= 2
    result = cli("restore", removed["archive"], "-s", f"json:{path}", "-f", "json")
    assert json.loads(result.stdout)["restored"] == removed["deleted"]
    back = json.loads(path.read_text())
    original = json.loads(text.replace("SOON", SOON))
    if isinstance(original, dict) and "sessions" in original:
        back, original = back["sessions"], original["sessions"]
    if isinstance(original, list):
        assert sorted(map(json.dumps, back)) == sorted(map(json.dumps, original))
    else:
        assert back == original
    # A second restore adds nothing.
    again = json.loads(
        cli("restore", removed["archive"], "-s", f"json:{path}", "-f", "json").stdout
    )
    assert again["restored"] == 0


# --- caps rank sessions by times they can believe -----------------------------------------------


def _used(sid: str, days: float) -> str:
    moment = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - days * 86400))
    return f'{{"session_id":"{sid}","created_at":"{moment}","last_accessed":"{moment}","user_id":"u1"}}'


@pytest.mark.parametrize("cap", [["--max-per-group", "1"], ["--max-count", "1", "--yes"]])
def test_a_last_use_in_the_future_does_not_make_a_session_the_newest_for_a_cap(cli, tmp_path, cap):
    """A session whose last use lies 30 days ahead (invalid: future_timestamp) was kept as the
    user's newest, and the session they used yesterday was removed instead."""
    path = tmp_path / "sessions.json"
    path.write_text(f"[{_used('old', 5)},{_used('new', 1)},{_used('bogus', -30)}]")
    cli("cleanup", "-s", f"json:{path}", *cap)
    left = [session["session_id"] for session in json.loads(path.read_text())]
    assert left == ["new"]


def test_schedule_install_refuses_max_per_group_zero_without_yes(cli, tmp_path, cron_d):
    """`--max-per-group 0` was installed; each run then found every session selected and
    refused (exit 2) without --yes, as `--max-count 0` is refused at install."""
    path = tmp_path / "sessions.json"
    path.write_text(f"[{_used('a', 1)},{_used('b', 2)}]")
    install = ["schedule", "install", "x", "--system", "--every", "1h", "--", "cleanup"]
    args = ["-s", f"json:{path}", "--max-per-group", "0"]
    assert "refusing" in one_line_error(cli("cleanup", *args, code=2))
    assert "--max-per-group 0" in one_line_error(cli(*install, *args, code=2))
    assert not list(cron_d.iterdir())
    cli(*install, *args, "--yes")
    assert "--max-per-group 0 --yes" in (cron_d / "sessionctl-x").read_text()


def test_a_lock_beside_the_store_created_by_root_does_not_keep_the_application_user_out(
    cli, request
):
    """A cleanup run by hand as root left `sessions.json.sessionctl.lock` 0600 root's: every
    later run as the store's owner (the cron entry of `schedule --user`) exited 3, "cannot
    create lock file: permission denied", for good."""
    import subprocess

    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("acting as user nobody needs root (setpriv)")
        pytest.skip("acting as user nobody needs root (setpriv)")
    folder = public_tmpdir(request, "sessionctl-attack-")
    os.chown(folder, 65534, 65534)
    path = _store(folder)
    os.chown(path, 65534, 65534)
    cli("cleanup", "-s", f"json:{path}", "--expired", "--lock", "store")  # as root
    lock = folder / "sessions.json.sessionctl.lock"
    assert lock.stat().st_uid == 65534
    path.write_text(f'[{{"session_id":"later","expires_at":"{PAST}"}}]')
    state = folder / "state"
    state.mkdir(mode=0o700)
    os.chown(state, 65534, 65534)
    result = subprocess.run(
        as_nobody([*SESSIONCTL, "cleanup", "-s", f"json:{path}", "--expired", "--lock", "store"]),
        env=subprocess_env(state),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(path.read_text()) == []


@pytest.mark.parametrize(
    ("top", "table", "says"),
    [
        ("store = 5", "", "store: invalid value 5"),
        ('store = "app"\nstate_dir = ""', "", "state_dir: invalid value ''"),
        ('store = "app"\nstate_dir = 5', "", "state_dir: invalid value 5"),
        ('store = "app"', 'archive_dir = ""', "archive_dir: invalid value ''"),
        ('store = "app"', "payload = [5]", "payload: invalid value [5]"),
    ],
)
def test_config_paths_and_names_of_the_wrong_type_are_usage_errors(
    cli, tmp_path, monkeypatch, top, table, says
):
    """`store = 5` exited 70; `state_dir = ""` and `archive_dir = ""` wrote the audit log and
    archives into whatever folder the command ran in (cron's: the home folder), `= 5` into a
    folder named "5" there; `payload = [5]` redacted a field named "5"."""
    monkeypatch.chdir(tmp_path)
    path = _store(tmp_path)
    config = tmp_path / "config.toml"
    config.write_text(f'{top}\n[stores.app]\naddress = "json:{path}"\n{table}\n')
    for command in (["list"], ["cleanup", "--expired"]):
        result = cli("--config", config, *command, code=2)
        assert says in one_line_error(result)
    assert b'"old"' in path.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml", "sessions.json"]


# --- deep records: the dry run and the real run agree ----------------------------------------


@pytest.mark.parametrize("depth", [500, 900])
def test_a_record_nested_hundreds_deep_is_removed_as_the_dry_run_says(cli, tmp_path, depth):
    """It parsed, the dry run named it, and the real run stopped with exit 3 ("nested too
    deeply to be archived"): the archive's marker check recursed two frames per level."""
    path = tmp_path / "sessions.json"
    deep = "[" * depth + "]" * depth
    path.write_text(
        f'[{{"session_id":"deep","expires_at":"{PAST}","d":{deep}}},'
        f'{{"session_id":"new","expires_at":"{SOON}"}}]'
    )
    original = path.read_bytes()
    store = f"json:{path}"
    dry = json.loads(cli("cleanup", "-s", store, "--expired", "-n", "-f", "json").stdout)
    real = json.loads(cli("cleanup", "-s", store, "--expired", "-f", "json").stdout)
    assert dry["selected"] == real["deleted"] == 1
    cli("restore", real["archive"], "-s", store)
    by_id = lambda sessions: sorted(sessions, key=lambda session: session["session_id"])  # noqa: E731
    assert by_id(json.loads(path.read_text())) == by_id(json.loads(original))


# --- an audit log that is not what sessionctl wrote -----------------------------------------


def test_history_reads_past_audit_lines_of_the_wrong_shape(cli, tmp_path, state_dir):
    """`"deleted": "x"`, `1e400` or a line nested thousands deep (a log edited by hand, or
    spliced by a full disk) made every `history` exit 70."""
    path = _store(tmp_path)
    cli("cleanup", "-s", f"json:{path}", "--expired")
    log = state_dir / "audit.log"
    with open(log, "a") as handle:
        handle.write('{"command":"cleanup","store":"json:/x","deleted":"x","failed":-3}\n')
        handle.write('{"command":"cleanup","store":7,"store_id":5,"deleted":1e400}\n')
        handle.write('{"command":"restore","restored":"many","time":"\\u001b[31m"}\n')
        handle.write("[" * 5000 + "]" * 5000 + "\n")
    for fmt in ("table", "json", "csv"):
        result = cli("history", "-f", fmt)
        assert "\x1b" not in result.stdout + result.stderr
    totals = json.loads(cli("history", "-f", "json").stdout)["totals"]
    assert (totals["cleaned"], totals["failed"], totals["restored"]) == (1, 0, 0)
    cli("history", "-s", "json:/x")
    cli("history", "-s", f"json:{path}")


# --- a wrong preset or a typo does not make every record invalid -------------------------------


@pytest.mark.parametrize(
    "mapping", [["--preset", "django"], ["--field", "id=sessionid"], ["--preset", "express"]]
)
def test_an_id_field_no_record_has_is_refused_not_every_session_invalid(cli, tmp_path, mapping):
    """Every session was invalid (missing_id) and `cleanup --invalid` emptied the file: a table
    is refused for a column it lacks, a JSON store was not."""
    path = _store(tmp_path)
    before = path.read_bytes()
    for command in (["cleanup", "--invalid"], ["validate"], ["list"]):
        result = cli(*command, "-s", f"json:{path}", *mapping, code=2)
        assert "is in none of the 2 sessions" in one_line_error(result)
    assert path.read_bytes() == before
    # The fields the records do have still work, and an empty store is still a no-op.
    cli("cleanup", "--invalid", "-s", f"json:{path}", "--field", "id=session_id")
    path.write_text("[]")
    cli("cleanup", "--invalid", "-s", f"json:{path}", *mapping)


# --- a time inside JSON text that is not JSON ---------------------------------------------------


def test_a_time_inside_text_that_is_not_json_makes_the_session_invalid_not_active(cli, tmp_path):
    """`--field expires=sess.cookie.expires` with `sess` cut short (or not JSON at all): the
    session was active, never expiring, and `validate` did not name it."""
    sessions = [
        {"sid": "cut", "sess": '{"cookie":{"expires":"' + PAST},
        {"sid": "plain", "sess": "hello"},
        {"sid": "old", "sess": json.dumps({"cookie": {"expires": PAST}})},
        {"sid": "new", "sess": json.dumps({"cookie": {"expires": SOON}})},
        {"sid": "none", "sess": json.dumps({"cookie": {}})},
    ]
    path = tmp_path / "sessions.json"
    path.write_text(json.dumps(sessions))
    mapping = ["--field", "id=sid", "--field", "expires=sess.cookie.expires"]
    rows = json.loads(cli("list", "-s", f"json:{path}", *mapping, "-f", "json").stdout)
    status = {row["id"]: row["status"] for row in rows}
    assert status == {
        "cut": "invalid",
        "plain": "invalid",
        "old": "expired",
        "new": "active",
        "none": "active",
    }
    result = cli("cleanup", "-s", f"json:{path}", *mapping, "--expired", "-f", "json")
    assert [s["id"] for s in json.loads(result.stdout)["sessions"]] == ["old"]


def test_a_json_file_in_a_folder_made_read_only_is_left_alone_even_by_root(cli, tmp_path):
    # Root may write anywhere; a folder made read-only (chmod a-w) still says "leave it".
    folder = tmp_path / "ro"
    folder.mkdir()
    store = folder / "sessions.json"
    store.write_text(json.dumps([{"session_id": "a", "expires_at": 1e9}]))
    before = store.read_bytes()
    folder.chmod(0o555)
    try:
        result = cli("cleanup", "--expired", "-s", store, code=3)
        assert "nothing was changed" in result.stderr
        assert store.read_bytes() == before
    finally:
        folder.chmod(0o755)
