"""`history`: past cleanup runs from the audit log, and the totals seed 002 reports."""

from __future__ import annotations

from collections import deque
from pathlib import Path

from ..audit import read_audit


def matches_store(entry: dict, label: str | None, path: str | None) -> bool:
    """An audit entry is about a store if it carries its name or its real path."""
    if label is None and path is None:
        return True
    if label is not None and entry.get("store") == label:
        return True
    store_id = entry.get("store_id") or ""
    entry_path = store_id.partition(":")[2].partition("?")[0]
    return path is not None and entry_path == path


def history(
    state_dir: Path, label: str | None = None, path: str | None = None, limit: int = 20
) -> dict:
    runs: deque = deque(maxlen=limit)
    totals = {"runs": 0, "dry_runs": 0, "cleaned": 0, "failed": 0, "restored": 0}
    last_run = last_success = None
    for entry in read_audit(state_dir):
        if not matches_store(entry, label, path):
            continue
        command = entry.get("command")
        if command == "restore":
            totals["restored"] += int(entry.get("restored") or 0)
        elif command != "cleanup":
            continue
        elif entry.get("dry_run"):
            totals["dry_runs"] += 1
        else:
            totals["runs"] += 1
            totals["cleaned"] += int(entry.get("deleted") or 0)
            totals["failed"] += int(entry.get("failed") or 0)
            last_run = entry
            if entry.get("outcome") == "ok":
                last_success = entry
        runs.append(_summary(entry))
    return {
        "runs": list(runs),
        "totals": totals,
        "last_run": _summary(last_run) if last_run else None,
        "last_success": _summary(last_success) if last_success else None,
    }


def _summary(entry: dict) -> dict:
    return {
        "time": entry.get("time"),
        "command": entry.get("command"),
        "store": entry.get("store"),
        "user": entry.get("user"),
        "host": entry.get("host"),
        "dry_run": bool(entry.get("dry_run")),
        "selected": entry.get("selected"),
        "deleted": entry.get("deleted", entry.get("restored")),
        "failed": entry.get("failed"),
        "outcome": entry.get("outcome", "ok" if entry.get("command") == "restore" else None),
        "duration_s": entry.get("duration_s"),
        "archive": entry.get("archive"),
    }
