"""Options and settings are checked before anything happens, and mean what they say.

Caps that remove every session need the confirmation `--all` needs; values that cannot work are
usage errors (exit 2, one line) before any wait, lock or removal; an empty store is a no-op;
a hook is judged by its exit status.
"""

import json
import sqlite3
import time
from pathlib import Path

import pytest

from helpers import one_line_error, store_files_snapshot
from sessionctl.cli import cleanup as cleanup_cli
from stores import build


@pytest.fixture
def store(tmp_path):
    """A JSON store of 30 bash sessions, all active (nothing expired or invalid)."""
    return build(tmp_path, "bash", "bash-sessions", "json-wrapped", [], n=30)


@pytest.fixture
def cron_d(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cron.d"
    folder.mkdir()
    monkeypatch.setenv("SESSIONCTL_CRON_D", str(folder))
    return folder


def audit_entries(state_dir: Path) -> list[dict]:
    path = state_dir / "audit.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def count(cli, path) -> int:
    return len(json.loads(cli("list", "-s", path, "-f", "json").stdout))


def write_json(path: Path, records: list[dict]) -> Path:
    path.write_text(json.dumps({"sessions": records}))
    return path


def expiring_records(now: float) -> list[dict]:
    """One expired session and two active ones, with an expiry field the tool detects."""
    return [
        {"session_id": "gone", "created_at": now - 7200, "expires_at": now - 3600},
        {"session_id": "kept1", "created_at": now - 60, "expires_at": now + 3600},
        {"session_id": "kept2", "created_at": now - 60, "expires_at": now + 7200},
    ]


# --- caps that select every session (as --all does) ----------------------------------------------


@pytest.mark.parametrize("cap", [["--max-count", "0"], ["--max-size", "0"], ["--max-size", "0K"]])
def test_a_zero_cap_without_a_terminal_needs_yes(cli, store, state_dir, cap):
    before = store_files_snapshot(store.path)
    result = cli("cleanup", "-s", store.path, *cap, code=2)
    line = one_line_error(result)
    assert "refusing to remove all sessions" in line and "--yes" in line
    assert store_files_snapshot(store.path) == before
    assert audit_entries(state_dir) == []  # refused before anything happened


@pytest.mark.parametrize("cap", [["--max-count", "0"], ["--max-size", "0"]])
def test_a_zero_cap_with_yes_removes_every_session(cli, store, cap):
    result = json.loads(cli("cleanup", "-s", store.path, *cap, "--yes", "-f", "json").stdout)
    assert result["deleted"] == store.total
    assert count(cli, store.path) == 0


def test_a_zero_cap_dry_run_needs_no_yes(cli, store):
    before = store_files_snapshot(store.path)
    result = json.loads(
        cli("cleanup", "-s", store.path, "--max-count", "0", "-n", "-f", "json").stdout
    )
    assert result["selected"] == store.total and result["deleted"] == 0
    assert store_files_snapshot(store.path) == before


def test_a_cap_that_happens_to_select_every_session_needs_yes(cli, store, state_dir):
    """No session fits in 10 bytes: the cap selects all of them, decided from what it selects."""
    before = store_files_snapshot(store.path)
    result = cli("cleanup", "-s", store.path, "--max-size", "10", code=2)
    line = result.stderr.strip().splitlines()[-1]
    assert f"refusing to remove all {store.total} sessions" in line and "--yes" in line
    assert "Traceback" not in result.stderr
    assert store_files_snapshot(store.path) == before
    (entry,) = audit_entries(state_dir)
    assert entry["deleted"] == 0 and entry["outcome"] != "ok"
    cli("cleanup", "-s", store.path, "--max-size", "10", "--yes")
    assert count(cli, store.path) == 0


def test_a_cap_that_selects_every_session_asks_on_a_terminal(cli, store, monkeypatch):
    monkeypatch.setattr(cleanup_cli, "stdin_is_terminal", lambda: True)
    before = store_files_snapshot(store.path)
    for cap in (["--max-count", "0"], ["--max-size", "10"]):
        declined = cli("cleanup", "-s", store.path, *cap, input="n\n", code=1)
        assert f"Remove ALL {store.total} sessions" in declined.stderr
        assert "nothing was removed" in declined.stderr
        assert store_files_snapshot(store.path) == before
    cli("cleanup", "-s", store.path, "--max-size", "10", input="y\n")
    assert count(cli, store.path) == 0


def test_a_cap_that_keeps_some_sessions_needs_no_confirmation(cli, store):
    result = json.loads(cli("cleanup", "-s", store.path, "--max-count", "20", "-f", "json").stdout)
    assert result["deleted"] == store.total - 20


@pytest.mark.parametrize("cap", [["--max-count", "0"], ["--max-size", "0MB"]])
def test_a_scheduled_zero_cap_needs_yes(cli, store, cron_d, cap):
    words = ["cleanup", "-s", store.path, *cap]
    result = cli("schedule", "install", "w", "--every", "1h", "--system", "--", *words, code=2)
    line = one_line_error(result)
    assert cap[0] in line and "--yes" in line
    assert list(cron_d.iterdir()) == []
    cli("schedule", "install", "w", "--every", "1h", "--system", "--", *words, "--yes")
    assert (cron_d / "sessionctl-w").exists()


# --- values that cannot work: refused before anything happens ------------------------------------

HUGE = "99999999999999999999999d"


@pytest.mark.parametrize(
    "option, value",
    [
        ("--hook", "'x"),
        ("--hook", ""),
        ("--hook", "   "),
        ("--pause", HUGE),
        ("--pause", "9" * 400),  # a float of infinity
        ("--jitter", HUGE),
        ("--hook-timeout", HUGE),
        ("--idle-timeout", HUGE),
        ("--busy-timeout", HUGE),
    ],
)
def test_bad_option_values_are_usage_errors_before_anything_happens(
    cli, tmp_path, state_dir, now, option, value
):
    path = write_json(tmp_path / "s.json", expiring_records(now))
    before = store_files_snapshot(path)
    result = cli("cleanup", "--expired", "-s", path, option, value, code=2)
    assert option in one_line_error(result)
    assert store_files_snapshot(path) == before
    assert audit_entries(state_dir) == []  # not even a run recorded as "ok"


@pytest.mark.parametrize(
    "args",
    [
        ["cleanup", "--max-size", "9" * 400],
        ["cleanup", "--expired", "--max-size", "9" * 400 + "MB"],
        ["stats", "--alert-size", "9" * 400],
    ],
)
def test_a_size_too_large_for_a_number_is_a_usage_error(cli, tmp_path, now, args):
    path = write_json(tmp_path / "s.json", expiring_records(now))
    before = store_files_snapshot(path)
    result = cli(args[0], "-s", path, *args[1:], code=2)
    assert "too large" in one_line_error(result)
    assert store_files_snapshot(path) == before


def test_a_long_but_bounded_duration_is_accepted(cli, tmp_path, now):
    path = write_json(tmp_path / "s.json", expiring_records(now))
    result = json.loads(
        cli("cleanup", "--expired", "-s", path, "--hook-timeout", "36500d", "-f", "json").stdout
    )
    assert result["deleted"] == 1


def test_a_huge_duration_in_the_config_is_a_usage_error(cli, tmp_path, now):
    path = write_json(tmp_path / "s.json", expiring_records(now))
    config = tmp_path / "c.toml"
    config.write_text(f'[defaults]\npause = "{HUGE}"\n')
    before = store_files_snapshot(path)
    result = cli("--config", config, "cleanup", "--expired", "-s", path, code=2)
    assert "pause" in one_line_error(result)
    assert store_files_snapshot(path) == before


@pytest.mark.parametrize("hook", ["'x", "", "a 'b"])
def test_a_scheduled_hook_that_cannot_be_split_is_refused(cli, store, cron_d, hook):
    words = ["cleanup", "--expired", "-s", store.path, "--hook", hook]
    result = cli("schedule", "install", "w", "--every", "1h", "--system", "--", *words, code=2)
    assert "--hook" in one_line_error(result)
    assert list(cron_d.iterdir()) == []


# --- an empty store ------------------------------------------------------------------------------


def _empty_sqlite(path: Path) -> Path:
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE sessions (session_id TEXT PRIMARY KEY, data TEXT, created_at TEXT)"
        )
    return path


@pytest.mark.parametrize("shape", ["wrapped", "array", "object", "folder", "sqlite"])
def test_cleanup_expired_of_an_empty_store_is_a_successful_no_op(cli, tmp_path, shape):
    if shape == "folder":
        path = tmp_path / "sessions"
        path.mkdir()
    elif shape == "sqlite":
        path = _empty_sqlite(tmp_path / "s.db")
    else:
        path = tmp_path / "s.json"
        path.write_text({"wrapped": '{"sessions": []}', "array": "[]", "object": "{}"}[shape])
    before = store_files_snapshot(path)
    result = json.loads(cli("cleanup", "--expired", "-s", path, "-f", "json").stdout)
    assert (result["total"], result["selected"], result["deleted"]) == (0, 0, 0)
    assert result["outcome"] == "ok"
    assert store_files_snapshot(path) == before
    # And again: what a cron job would do every hour.
    cli("cleanup", "--expired", "-s", path, "-q")


def test_a_store_emptied_by_a_cleanup_is_cleaned_again_without_error(cli, tmp_path, now):
    path = write_json(tmp_path / "s.json", expiring_records(now))
    cli("cleanup", "--all", "--yes", "-s", path, "--field", "expires=expires_at", "-q")
    assert json.loads(path.read_text()) == {"sessions": []}
    cli("cleanup", "--expired", "-s", path, "-q")


def test_a_store_holding_only_corrupt_sessions_is_no_expired_cleanup_error(cli, tmp_path):
    # A lone surrogate makes the only session unreadable: invalid, never expired, so an
    # --expired run has nothing to do; --invalid still removes it.
    path = tmp_path / "s.json"
    path.write_bytes(b'[{"session_id": "s0", "expires_at": 1, "\\ud800k": 1E5}]')
    before = path.read_bytes()
    result = json.loads(cli("cleanup", "--expired", "-s", path, "-f", "json").stdout)
    assert (result["total"], result["deleted"], result["outcome"]) == (1, 0, "ok")
    assert path.read_bytes() == before
    result = json.loads(cli("cleanup", "--invalid", "-s", path, "-f", "json").stdout)
    assert result["deleted"] == 1


def test_a_store_with_sessions_and_no_way_to_tell_expiry_is_still_refused(cli, tmp_path):
    path = write_json(tmp_path / "s.json", [{"session_id": "a", "data": "x"}])
    result = cli("cleanup", "--expired", "-s", path, code=2)
    assert "cannot tell which sessions" in one_line_error(result)


# --- usage errors instead of silent surprises ----------------------------------------------------


def test_a_bare_number_duration_in_the_config_is_refused(cli, tmp_path, store):
    config = tmp_path / "c.toml"
    config.write_text(f'[stores.web]\naddress = "json:{store.path}"\nidle_timeout = 5\n')
    result = cli("--config", config, "list", "-s", "web", code=2)
    line = one_line_error(result)
    assert "idle_timeout" in line and '"5s"' in line and '"5m"' in line
    config.write_text(f'[stores.web]\naddress = "json:{store.path}"\nidle_timeout = "5m"\n')
    cli("--config", config, "list", "-s", "web")
    config.write_text(f'[stores.web]\naddress = "json:{store.path}"\npause = 0\n')
    cli("--config", config, "list", "-s", "web")  # zero needs no unit


def test_a_config_path_that_is_a_folder_says_so(cli, tmp_path, monkeypatch, store):
    folder = tmp_path / "conf"
    folder.mkdir()
    line = one_line_error(cli("--config", folder, "list", "-s", store.path, code=2))
    assert "is a folder" in line and "does not exist" not in line
    monkeypatch.setenv("SESSIONCTL_CONFIG", str(folder))
    assert "is a folder" in one_line_error(cli("list", "-s", store.path, code=2))


@pytest.mark.parametrize(
    "suffix, named",
    [("?tabel=sessions", "tabel"), ("?table=sessions&mode=ro", "mode"), ("?table=", "empty")],
)
@pytest.mark.parametrize("prefix", ["sqlite:", ""])
def test_unknown_parameters_of_a_sqlite_address_are_refused(cli, tmp_path, prefix, suffix, named):
    path = _empty_sqlite(tmp_path / "s.db")
    result = cli("list", "-s", f"{prefix}{path}{suffix}", code=2)
    assert named in one_line_error(result)


def test_the_table_parameter_still_works(cli, tmp_path):
    path = _empty_sqlite(tmp_path / "s.db")
    for address in (f"sqlite:{path}?table=sessions", f"{path}?table=sessions"):
        assert json.loads(cli("list", "-s", address, "-f", "json").stdout) == []


def test_a_sqlite_file_with_a_question_mark_in_its_name_is_still_found(cli, tmp_path):
    path = _empty_sqlite(tmp_path / "odd?name.db")
    for address in (f"sqlite:{path}", f"sqlite:{path}?table=sessions"):
        assert json.loads(cli("list", "-s", address, "-f", "json").stdout) == []


@pytest.mark.parametrize("archive", ["file", "missing"])
def test_a_scheduled_cleanup_with_a_fixed_archive_file_is_refused(
    cli, store, tmp_path, cron_d, archive
):
    target = tmp_path / "archive.ndjson.gz"
    if archive == "file":
        target.write_bytes(b"")
    words = ["cleanup", "--expired", "-s", store.path, "--archive", target]
    result = cli("schedule", "install", "w", "--every", "1h", "--system", "--", *words, code=2)
    assert "folder" in one_line_error(result)
    assert list(cron_d.iterdir()) == []


def test_a_scheduled_cleanup_with_an_archive_folder_is_installed(cli, store, tmp_path, cron_d):
    folder = tmp_path / "archives"
    folder.mkdir()
    words = ["cleanup", "--expired", "-s", store.path, "--archive", folder]
    cli("schedule", "install", "w", "--every", "1h", "--system", "--", *words)
    assert str(folder) in (cron_d / "sessionctl-w").read_text()


# --- hooks are judged by their exit ----------------------------------------------------------------


def _hook(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "hook.sh"
    script.write_text("#!/bin/sh\ncat >/dev/null\n" + body)
    script.chmod(0o755)
    return script


def test_a_hook_that_leaves_a_background_child_is_judged_by_its_exit(cli, tmp_path, now):
    path = write_json(tmp_path / "s.json", expiring_records(now))
    # The child keeps the hook's stdout and stderr open well past the hook's timeout.
    hook = _hook(tmp_path, "sleep 6 &\necho started >&2\nexit 0\n")
    started = time.monotonic()
    result = json.loads(
        cli(
            "cleanup", "--expired", "-s", path, "--hook", hook, "--hook-timeout", "3s", "-f", "json"
        ).stdout
    )  # fmt: skip
    assert time.monotonic() - started < 2.5
    assert (result["deleted"], result["failed"], result["errors"]) == (1, 0, [])
    assert "gone" not in path.read_text()


def test_a_failing_hook_with_a_background_child_reports_its_status(cli, tmp_path, now):
    path = write_json(tmp_path / "s.json", expiring_records(now))
    hook = _hook(tmp_path, "sleep 6 &\necho 'teardown failed' >&2\nexit 3\n")
    started = time.monotonic()
    result = json.loads(
        cli(
            "cleanup", "--expired", "-s", path, "--hook", hook, "--hook-timeout", "3s",
            "-f", "json", code=5,
        ).stdout
    )  # fmt: skip
    assert time.monotonic() - started < 2.5
    assert result["errors"] == [
        {"sessionId": "gone", "error": "hook exited with status 3: teardown failed"}
    ]
    assert "gone" in path.read_text()


def test_a_hook_that_runs_too_long_still_times_out(cli, tmp_path, now):
    path = write_json(tmp_path / "s.json", expiring_records(now))
    hook = _hook(tmp_path, "sleep 5\n")
    started = time.monotonic()
    result = json.loads(
        cli(
            "cleanup", "--expired", "-s", path, "--hook", hook, "--hook-timeout", "1s",
            "-f", "json", code=5,
        ).stdout
    )  # fmt: skip
    assert time.monotonic() - started < 4
    assert result["errors"] == [{"sessionId": "gone", "error": "hook timed out after 1s"}]


def test_a_hook_that_does_not_read_a_large_session_still_succeeds(cli, tmp_path, now):
    records = expiring_records(now)
    records[0]["data"] = "x" * 300_000  # more than a pipe holds
    path = write_json(tmp_path / "s.json", records)
    script = tmp_path / "quick.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o755)
    result = json.loads(
        cli("cleanup", "--expired", "-s", path, "--hook", script, "-f", "json").stdout
    )
    assert (result["deleted"], result["failed"]) == (1, 0)
