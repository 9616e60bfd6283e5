"""`restore ARCHIVE`: put archived sessions back, skipping ids that exist again."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from ..audit import ArchiveContents, append_audit, decode_column_values, run_identity
from ..context import StoreContext
from ..locking import StoreLock
from ..timeparse import to_iso

CHUNK = 1000


@dataclass
class RestoreResult:
    archive: str
    store: str
    entries: int
    restored: int = 0
    skipped: int = 0
    truncated: bool = False
    duration_s: float = 0.0

    def as_dict(self) -> dict:
        return {
            "archive": self.archive,
            "store": self.store,
            "entries": self.entries,
            "restored": self.restored,
            "skipped": self.skipped,
            "truncated": self.truncated,
            "duration_s": round(self.duration_s, 3),
        }


def restore(ctx: StoreContext, path: Path, contents: ArchiveContents) -> RestoreResult:
    started = time.monotonic()
    entries = contents.entries
    if ctx.spec.kind == "sqlite":
        for entry in entries:
            if isinstance(entry.get("record"), dict):
                entry["record"] = decode_column_values(entry["record"])
            for table, rows in (entry.get("children") or {}).items():
                entry["children"][table] = [decode_column_values(row) for row in rows]
    result = RestoreResult(
        archive=str(path), store=ctx.label, entries=len(entries), truncated=contents.truncated
    )
    id_path = ctx.mapping.path("id")
    # Never interleave with a cleanup of the same store.
    with StoreLock(ctx.state_dir, ctx.identity, ctx.label):
        for start in range(0, len(entries), CHUNK):
            restored, skipped = ctx.store.insert(entries[start : start + CHUNK], id_path)
            result.restored += restored
            result.skipped += skipped
    result.duration_s = time.monotonic() - started
    append_audit(
        ctx.state_dir,
        {
            "time": to_iso(time.time()),
            "command": "restore",
            **run_identity(),
            "store": ctx.label,
            "store_id": ctx.identity,
            **result.as_dict(),
        },
    )
    return result
