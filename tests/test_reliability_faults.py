"""Faults of the machine (issue 7): a disk that fills up while the JSON store or an archive is
written, a read-only store, permission denied, a missing or uncreatable state folder.

Each ends in one clear line and a documented exit code, with the store exactly as it was (or,
when some batches were already removed, every removed session safely in the archive).

The disk filling up is simulated in-process at the system-call layer: the file object of a
chosen file (found through /proc/self/fd) fails with ENOSPC after a budget of bytes, or its
fsync does. Read-only and permission-denied cases are real: they run as user `nobody`.
"""

from __future__ import annotations

import errno
import io
import json
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from helpers import one_line_error, storegen
from reliability import (
    SESSIONCTL,
    archived_entries,
    as_nobody,
    one_line,
    public_tmpdir,
    subprocess_env,
)
from sessionctl.domain.errors import ExitCode

STORE, FAILED = int(ExitCode.STORE), int(ExitCode.FAILED)
NOBODY_UID = 65534


class _FullFile(io.RawIOBase):
    """A file that takes `budget` more bytes, then fails as a full disk does."""

    def __init__(self, real, budget: list[int]):
        self.real = real
        self.budget = budget

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        data = bytes(data)
        if len(data) > self.budget[0]:
            taken = self.budget[0]
            if taken:
                self.real.write(data[:taken])
            self.budget[0] = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.budget[0] -= len(data)
        return self.real.write(data)

    def flush(self) -> None:
        self.real.flush()

    def fileno(self) -> int:
        return self.real.fileno()

    def close(self) -> None:
        if not self.closed:
            try:
                super().close()
            finally:
                self.real.close()


def _name_of(fd: int) -> str:
    return os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))


def fill_disk(monkeypatch, matches, budget: int = 0, at: str = "write") -> list[str]:
    """Make writes (or fsyncs) to files whose name `matches` fail with ENOSPC.

    Returns the names of the files that met the full disk.
    """
    met: list[str] = []
    remaining = [budget]
    real_fdopen, real_fsync = os.fdopen, os.fsync

    def fdopen(fd, mode="r", *args, **kwargs):
        handle = real_fdopen(fd, mode, *args, **kwargs)
        if at == "write" and "w" in mode and matches(_name_of(fd)):
            met.append(_name_of(fd))
            return _FullFile(handle, remaining)
        return handle

    def fsync(fd):
        if at == "fsync" and matches(_name_of(fd)):
            met.append(_name_of(fd))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fdopen", fdopen)
    monkeypatch.setattr(os, "fsync", fsync)
    return met


def _folder_snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _json_store(tmp_path: Path):
    folder = tmp_path / "app"
    folder.mkdir()
    generated = storegen.generate("bash-sessions", 40, seed=2)
    path = storegen.write_json(folder / "sessions.json", generated, shape="wrapped")
    return path, generated


@pytest.mark.parametrize(
    "target,at",
    [
        ("store", "write"),  # the new sessions.json, half written
        ("store", "fsync"),  # delayed allocation: the space runs out at fsync
        ("backup", "write"),  # sessions.json.bak, written first
    ],
)
def test_disk_full_while_the_json_store_is_written(cli, tmp_path, monkeypatch, target, at):
    path, generated = _json_store(tmp_path)
    before = _folder_snapshot(path.parent)

    def matches(name: str) -> bool:
        if not name.startswith(".sessions.json."):
            return False
        return (".bak." in name) == (target == "backup")

    met = fill_disk(monkeypatch, matches, budget=100, at=at)
    result = cli("cleanup", "-s", path, "--expired", code=STORE)
    line = one_line_error(result)
    assert met, "the full disk was never met: this test proved nothing"
    assert "no space left on device" in line and "sessions.json" in line
    after = _folder_snapshot(path.parent)
    assert after[path.name] == before[path.name], "the store changed"
    assert set(after) <= set(before) | {"sessions.json.bak"}, "a temp file was left behind"
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.undo()
    # Space again: the same cleanup now works, and finds everything where it was.
    done = json.loads(cli("cleanup", "-s", path, "--expired", "-f", "json").stdout)
    assert done["deleted"] == len(generated.ids["expired"])


@pytest.mark.parametrize("kind", ["json", "jsondir", "sqlite"])
@pytest.mark.parametrize("budget", [0, 700])
def test_disk_full_while_the_archive_is_written(
    cli, tmp_path, monkeypatch, state_dir, kind, budget
):
    """The archive cannot grow: the batch being archived stays, earlier batches are archived."""
    generated = storegen.generate("raptor" if kind == "jsondir" else "django", 60, seed=4)
    if kind == "json":
        generated = storegen.generate("bash-sessions", 60, seed=4)
        path = storegen.write_json(tmp_path / "sessions.json", generated)
    elif kind == "jsondir":
        path = storegen.write_jsondir(tmp_path / "sessions", generated)
    else:
        path = storegen.write_sqlite(tmp_path / "app.db", generated)
    original = _sessions(kind, path)
    expired = set(generated.ids["expired"])
    met = fill_disk(monkeypatch, lambda name: name.endswith(".ndjson.gz"), budget=budget)
    result = cli("cleanup", "-s", path, "--expired", "--batch-size", "4", code=STORE)
    line = one_line_error(result)
    assert met
    assert "cannot write archive" in line and "no space left on device" in line
    current = _sessions(kind, path)
    gone = set(original) - set(current)
    assert gone <= expired
    for key in set(original) - expired:
        assert current[key] == original[key]
    archived = {_entry_name(kind, e) for e in archived_entries(state_dir / "archives")}
    assert gone <= archived, "a session is gone without being archived"
    if budget == 0 or kind == "json":
        assert gone == set(), "nothing can be removed when nothing could be archived"
    else:
        assert gone and "stopped after removing" in line


def _sessions(kind: str, path: Path) -> dict:
    if kind == "json":
        return {r["session_id"]: r for r in json.loads(path.read_bytes())}
    if kind == "jsondir":
        return {p.stem: p.read_bytes() for p in path.iterdir() if p.suffix == ".json"}
    conn = sqlite3.connect(path)
    try:
        return {row[0]: row for row in conn.execute("SELECT * FROM django_session")}
    finally:
        conn.close()


def _entry_name(kind: str, entry: dict) -> str:
    if kind == "jsondir":
        return str(entry["key"]).removesuffix(".json")
    return entry["id"]


def test_audit_log_on_a_full_disk_after_a_cleanup(cli, tmp_path, monkeypatch, state_dir):
    """The sessions are gone and archived: say so, and warn that the log could not be written."""
    path, generated = _json_store(tmp_path)
    real_write = os.write

    def write(fd, data):
        if _name_of(fd) == "audit.log":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    result = cli("cleanup", "-s", path, "--expired", "-f", "json")
    monkeypatch.undo()
    line = one_line_error(result)
    assert "audit log" in line and "no space left on device" in line
    figures = json.loads(result.stdout)
    assert figures["deleted"] == len(generated.ids["expired"])
    archived = archived_entries(state_dir / "archives")
    assert {e["id"] for e in archived} == set(generated.ids["expired"])


# --- read-only stores and permission denied, for real ------------------------------------------


def _nobody_state(base: Path) -> Path:
    state = base / "state"
    state.mkdir(mode=0o700)
    os.chown(state, NOBODY_UID, NOBODY_UID)
    return state


def _as_nobody(base: Path, *args, state: Path | None = None):
    import subprocess

    state = state if state is not None else base / "state"
    return subprocess.run(
        as_nobody([*SESSIONCTL, *map(str, args)]),
        env=subprocess_env(state),
        capture_output=True,
        text=True,
        timeout=60,
    )


def _chown_tree(path: Path, uid: int) -> None:
    os.chown(path, uid, uid)
    if path.is_dir():
        for child in path.rglob("*"):
            os.chown(child, uid, uid)


@pytest.fixture
def public(request) -> Path:
    """A folder for tests that play `nobody` against files root owns: they need root."""
    if os.geteuid() != 0:
        message = "acting as user nobody needs root (setpriv)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return public_tmpdir(request, "sessionctl-faults-")


def test_json_store_in_a_folder_nobody_may_write(public):
    generated = storegen.generate("bash-sessions", 30, seed=6)
    folder = public / "app"
    folder.mkdir(mode=0o755)
    path = storegen.write_json(folder / "sessions.json", generated, shape="wrapped")
    path.chmod(0o644)
    _nobody_state(public)
    before = _folder_snapshot(folder)
    result = _as_nobody(public, "cleanup", "-s", path, "--expired")
    assert result.returncode == STORE, result.stderr
    line = one_line(result.stderr)
    assert "permission denied" in line or "read-only" in line
    assert _folder_snapshot(folder) == before


@pytest.mark.parametrize("who", ["nobody", "root"])
def test_read_only_json_file_is_left_alone(public, cli, who):
    """A store made read-only (chmod a-w) is not rewritten, even where the folder would allow
    it, and even by root, who may write anything."""
    generated = storegen.generate("bash-sessions", 30, seed=6)
    folder = public / "app"
    folder.mkdir(mode=0o755)
    path = storegen.write_json(folder / "sessions.json", generated, shape="wrapped")
    path.chmod(0o444)
    if who == "nobody":
        _chown_tree(folder, NOBODY_UID)
        _nobody_state(public)
    before = _folder_snapshot(folder)
    if who == "nobody":
        result = _as_nobody(public, "cleanup", "-s", path, "--expired")
        code, stderr = result.returncode, result.stderr
    else:
        result = cli("cleanup", "-s", path, "--expired", code=STORE)
        code, stderr = result.exit_code, result.stderr
    assert code == STORE, stderr
    line = one_line(stderr)
    assert "read-only" in line and "sessions.json" in line
    assert _folder_snapshot(folder) == before
    assert stat.S_IMODE(path.stat().st_mode) == 0o444


def test_folder_store_nobody_may_not_write(public):
    folder = storegen.write_jsondir(public / "sessions", storegen.generate("raptor", 20, seed=8))
    folder.chmod(0o755)
    _nobody_state(public)
    before = _folder_snapshot(folder)
    result = _as_nobody(public, "cleanup", "-s", folder, "--expired", "--invalid")
    assert result.returncode == STORE, result.stdout + result.stderr
    line = one_line(result.stderr)
    assert "read-only" in line or "permission denied" in line
    assert _folder_snapshot(folder) == before


@pytest.mark.parametrize("journal", ["wal", "delete"])
def test_sqlite_database_nobody_may_not_write(public, journal):
    folder = public / "db"
    folder.mkdir(mode=0o755)
    path = storegen.write_sqlite(folder / "app.db", storegen.generate("django", 30), journal)
    path.chmod(0o644)
    _nobody_state(public)
    before = path.read_bytes()
    result = _as_nobody(public, "cleanup", "-s", path, "--expired")
    assert result.returncode == STORE, result.stdout + result.stderr
    line = one_line(result.stderr)
    assert "app.db" in line and ("readonly" in line or "read-only" in line or "permission" in line)
    assert path.read_bytes() == before


def test_unreadable_store_cleanup_as_nobody(public):
    path = storegen.write_json(public / "s.json", storegen.generate("bash-sessions", 10))
    path.chmod(0o600)
    _nobody_state(public)
    before = path.read_bytes()
    result = _as_nobody(public, "cleanup", "-s", path, "--expired")
    assert result.returncode == STORE
    assert "permission denied" in one_line(result.stderr)
    assert path.read_bytes() == before


def test_archive_folder_nobody_may_not_write(public):
    folder = public / "app"
    folder.mkdir(mode=0o755)
    generated = storegen.generate("bash-sessions", 30, seed=6)
    path = storegen.write_json(folder / "sessions.json", generated, shape="wrapped")
    _chown_tree(folder, NOBODY_UID)
    locked = public / "backups"
    locked.mkdir(mode=0o755)  # root's
    _nobody_state(public)
    before = path.read_bytes()
    result = _as_nobody(
        public, "cleanup", "-s", path, "--expired", "--archive", locked / "x.ndjson.gz"
    )
    assert result.returncode == STORE, result.stderr
    line = one_line(result.stderr)
    assert "cannot create archive" in line and "permission denied" in line
    assert path.read_bytes() == before


# --- the state folder --------------------------------------------------------------------------


def test_missing_state_folder_is_created_private(cli, tmp_path, monkeypatch):
    state = tmp_path / "not" / "there" / "state"
    monkeypatch.setenv("SESSIONCTL_STATE_DIR", str(state))
    old = os.umask(0o022)
    try:
        path, generated = _json_store(tmp_path)
        result = json.loads(cli("cleanup", "-s", path, "--expired", "-f", "json").stdout)
    finally:
        os.umask(old)
    assert result["deleted"] == len(generated.ids["expired"])
    for folder in (state, state / "archives", state / "locks", Path(result["archive"]).parent):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    assert stat.S_IMODE((state / "audit.log").stat().st_mode) == 0o600


@pytest.mark.parametrize("dry_run", [False, True])
def test_state_folder_that_cannot_be_created(cli, tmp_path, monkeypatch, dry_run):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("SESSIONCTL_STATE_DIR", str(blocker / "state"))
    path, _ = _json_store(tmp_path)
    before = _folder_snapshot(path.parent)
    args = ["cleanup", "-s", path, "--expired"] + (["--dry-run"] if dry_run else [])
    if dry_run:
        # A dry run changes nothing and needs no lock: it still answers, and warns.
        result = cli(*args)
        assert "Would remove" in result.stdout
        assert "audit log" in one_line_error(result) or "cannot create" in result.stderr
    else:
        line = one_line_error(cli(*args, code=STORE))
        assert "cannot create folder" in line and "a-file" in line
    assert _folder_snapshot(path.parent) == before


def test_state_folder_nobody_may_not_create(public):
    path = storegen.write_json(public / "s.json", storegen.generate("bash-sessions", 20))
    _chown_tree(path, NOBODY_UID)
    before = path.read_bytes()
    result = _as_nobody(
        public, "cleanup", "-s", path, "--expired", state=public / "root-only" / "s"
    )
    assert result.returncode == STORE, result.stderr
    assert "cannot create folder" in one_line(result.stderr)
    assert path.read_bytes() == before
