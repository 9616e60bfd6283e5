"""Helpers of the reliability tests (issue 7): real subprocesses, store contents read directly
(never through sessionctl), archives, and the figures the README quotes.

Every reliability test writes what it measured (runs, cases, outcomes, time) as JSON into
$SESSIONCTL_RELIABILITY_FIGURES (a folder) when set, else into pytest's temporary folder.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sessionctl.app.audit import read_archive
from sessionctl.stores.jsondir import TRASH_PREFIX

SESSIONCTL = [sys.executable, "-m", "sessionctl"]
SETPRIV = "/usr/bin/setpriv"
NOBODY = ["--reuid=65534", "--regid=65534", "--clear-groups"]


def subprocess_env(state_dir: Path, **extra: str) -> dict:
    """The environment of a sessionctl subprocess: its own state folder, no user config."""
    base = state_dir.parent
    env = {
        **os.environ,
        "SESSIONCTL_STATE_DIR": str(state_dir),
        "XDG_CONFIG_HOME": str(base / "xdg-config"),
        "XDG_CONFIG_DIRS": str(base / "xdg-site"),
        "XDG_STATE_HOME": str(base / "xdg-state"),
        "PYTHONDONTWRITEBYTECODE": "1",
        "NO_COLOR": "1",
    }
    for name in ("SESSIONCTL_CONFIG", "SESSIONCTL_STORE", "SESSIONCTL_FORMAT", "SESSIONCTL_DEBUG"):
        env.pop(name, None)
    env.update(extra)
    return env


def run(args: list, env: dict, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*SESSIONCTL, *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


def as_nobody(argv: list) -> list:
    """`argv` run as user `nobody` (tests run as root, and root may read and write anything)."""
    if os.geteuid() != 0:
        return argv
    if not os.path.exists(SETPRIV):
        raise AssertionError("setpriv (util-linux) is needed to test as an unprivileged user")
    return [SETPRIV, *NOBODY, *argv]


def public_tmpdir(request, prefix: str) -> Path:
    """A folder `nobody` can traverse (pytest's own are private to root), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    request.addfinalizer(lambda: shutil.rmtree(path, ignore_errors=True))
    path.chmod(0o755)
    return path


def one_line(stderr: str) -> str:
    """The error contract for a subprocess: one line on stderr, no traceback."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("sessionctl: "), lines[0]
    assert "Traceback" not in stderr
    return lines[0]


# --- store contents, read directly -------------------------------------------------------------


def json_sessions(path: Path, id_field: str = "session_id") -> dict[str, dict]:
    """Session id -> record of a JSON file store (array, keyed or wrapped)."""
    document = json.loads(path.read_bytes())
    container = document
    if isinstance(document, dict) and isinstance(document.get("sessions"), list):
        container = document["sessions"]
    if isinstance(container, list):
        sessions = {}
        for record in container:
            sessions.setdefault(record[id_field], record)
        return sessions
    return dict(container)


def folder_sessions(path: Path) -> dict[str, bytes]:
    """File name -> bytes of the session files of a folder store (regular files only)."""
    found = {}
    for entry in os.scandir(path):
        if entry.name.startswith(".") or not entry.name.endswith(".json"):
            continue
        if entry.is_file(follow_symlinks=False):
            with open(entry.path, "rb") as handle:
                found[entry.name] = handle.read()
    return found


def trash_leftovers(path: Path) -> list[str]:
    return sorted(name for name in os.listdir(path) if name.startswith(TRASH_PREFIX))


def sqlite_rows(path: Path, table: str, key: str) -> dict:
    """Key -> full row of a SQLite table (a read-write connection, as the application has)."""
    conn = sqlite3.connect(path, timeout=10)
    try:
        cursor = conn.execute(f'SELECT * FROM "{table}"')
        names = [d[0] for d in cursor.description]
        index = names.index(key)
        return {row[index]: row for row in cursor}
    finally:
        conn.close()


def sqlite_check(path: Path) -> str:
    conn = sqlite3.connect(path, timeout=10)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


def archived_entries(folder: Path) -> list[dict]:
    """Every entry of every archive under `folder` (archives cut short by a kill included)."""
    entries = []
    if not folder.exists():
        return entries
    for archive in sorted(folder.rglob("*.ndjson.gz")):
        entries.extend(read_archive(archive).entries)
    return entries


# --- figures ---------------------------------------------------------------------------------


def figures_dir(tmp_path_factory) -> Path:
    wanted = os.environ.get("SESSIONCTL_RELIABILITY_FIGURES")
    folder = Path(wanted) if wanted else tmp_path_factory.getbasetemp() / "reliability-figures"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def record_figures(tmp_path_factory, name: str, figures: dict) -> None:
    path = figures_dir(tmp_path_factory) / f"{name}.json"
    path.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
    print(f"\nreliability figures {name}: {json.dumps(figures, sort_keys=True)}")


class Stopwatch:
    def __init__(self):
        self.started = time.monotonic()

    @property
    def seconds(self) -> float:
        return round(time.monotonic() - self.started, 1)
