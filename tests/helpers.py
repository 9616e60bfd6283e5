"""Helpers shared by the tests (imported, unlike fixtures)."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "tools") not in sys.path:
    sys.path.insert(0, str(ROOT / "tools"))

import storegen  # noqa: E402

__all__ = ["ROOT", "one_line_error", "store_files_snapshot", "storegen"]


def one_line_error(result) -> str:
    """The error contract: exactly one line on stderr, starting with the program name."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("sessionctl: "), lines[0]
    assert "Traceback" not in result.stderr
    return lines[0]


def store_files_snapshot(path: Path) -> dict:
    """Every byte of a store (file, folder, or SQLite with its journal files)."""
    if path.is_dir():
        return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.is_file()}
    snapshot = {path.name: path.read_bytes()}
    for suffix in ("-wal", "-journal"):
        extra = path.with_name(path.name + suffix)
        if extra.exists() and extra.stat().st_size:
            snapshot[extra.name] = extra.read_bytes()
    return snapshot
