"""`history`: past cleanup runs from the audit log, and the totals seed 002 reports."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from pathlib import Path

from ...stores import Address
from ...stores import history_address as _address
from ..audit import read_audit


def history_address(store: str, configured: Mapping[str, dict]) -> Address:
    """The address `history --store` means: a configured name, or an address or path, which
    may be gone by now."""
    if store in configured:
        return _address(str(configured[store].get("address", "")), store)
    return _address(store)


def matches_store(entry: dict, address: Address | None) -> bool:
    """An audit entry is about a store if it carries its name or its identity (for a file
    store named without parameters, its real path: runs logged before identities were
    addresses' own match too)."""
    if address is None:
        return True
    if entry.get("store") == address.label:
        return True
    store_id = entry.get("store_id")
    return isinstance(store_id, str) and address.matches(store_id)


def history(state_dir: Path, address: Address | None = None, limit: int = 20) -> dict:
    runs: deque = deque(maxlen=limit)
    totals = {"runs": 0, "dry_runs": 0, "cleaned": 0, "failed": 0, "restored": 0}
    last_run = last_success = None
    for entry in read_audit(state_dir):
        if not matches_store(entry, address):
            continue
        command = entry.get("command")
        if command == "restore":
            totals["restored"] += _count(entry.get("restored"))
        elif command != "cleanup":
            continue
        elif entry.get("dry_run"):
            totals["dry_runs"] += 1
        else:
            totals["runs"] += 1
            totals["cleaned"] += _count(entry.get("deleted"))
            totals["failed"] += _count(entry.get("failed"))
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


def _count(value) -> int:
    """A count from the audit log, 0 when the line says something else (a log edited by hand,
    or cut and spliced by a full disk, must not make `history` exit 70)."""
    return value if type(value) is int and value >= 0 else 0


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
