"""`restore ARCHIVE`: put archived sessions back, skipping ids that exist again.

Each entry is first mapped onto the target store by role (its id where that store keeps ids:
an object key, a file name, an id column or field) and checked against what the store can
hold. An entry the store cannot hold is refused with one sentence saying why, and the rest
go in: a refused entry is never half written, and never written anywhere but the store.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from ...domain.timeparse import to_iso
from ..audit import ArchiveContents, append_audit, run_identity
from ..context import StoreContext
from ..locking import store_lock

CHUNK = 1000


@dataclass
class RestoreResult:
    archive: str
    store: str
    entries: int
    restored: int = 0
    skipped: int = 0
    refused: int = 0
    #: One per refused entry: its number in the archive (1 = the first after the header),
    #: its id and key there, and why the store cannot hold it.
    refusals: list[dict] = field(default_factory=list)
    truncated: bool = False
    duration_s: float = 0.0

    def as_dict(self) -> dict:
        return {
            "archive": self.archive,
            "store": self.store,
            "entries": self.entries,
            "restored": self.restored,
            "skipped": self.skipped,
            "refused": self.refused,
            "refusals": self.refusals,
            "truncated": self.truncated,
            "duration_s": round(self.duration_s, 3),
        }


def restore(ctx: StoreContext, path: Path, contents: ArchiveContents) -> RestoreResult:
    started = time.monotonic()
    entries = contents.entries
    result = RestoreResult(
        archive=str(path), store=ctx.label, entries=len(entries), truncated=contents.truncated
    )
    id_path = ctx.mapping.path("id")
    source_kind = contents.header.get("kind")
    # Never interleave with a cleanup of the same store.
    with store_lock(ctx):
        for start in range(0, len(entries), CHUNK):
            accepted = []
            for number, entry in enumerate(entries[start : start + CHUNK], start + 1):
                why = admit(ctx, entry, id_path, source_kind)
                if why is None:
                    accepted.append((number, entry))
                    continue
                result.refused += 1
                result.refusals.append(
                    {
                        "entry": number,
                        "id": entry.get("id") if isinstance(entry, dict) else None,
                        "key": entry.get("key") if isinstance(entry, dict) else None,
                        "reason": why,
                    }
                )
            if not accepted:
                continue
            outcome = ctx.store.insert([entry for _, entry in accepted], id_path)
            result.restored += outcome[0]
            result.skipped += outcome[1]
            # A store may name entries the database refused as they went in: (entry, why).
            numbers = {id(entry): number for number, entry in accepted}
            for entry, why in outcome[2] if len(outcome) > 2 else ():
                result.refused += 1
                result.refusals.append(
                    {
                        "entry": numbers.get(id(entry)),
                        "id": entry.get("id"),
                        "key": entry.get("key"),
                        "reason": why,
                    }
                )
    result.duration_s = time.monotonic() - started
    append_audit(
        ctx.state_dir,
        {
            "time": to_iso(time.time()),
            "command": "restore",
            **run_identity(),
            "store": ctx.label,
            "store_id": ctx.identity,
            **{k: v for k, v in result.as_dict().items() if k != "refusals"},
        },
    )
    return result


def admit(ctx: StoreContext, entry, id_path: str | None, source_kind: str | None) -> str | None:
    """None if the store can take `entry` (mapped onto its shape in place), else why not."""
    if not isinstance(entry, dict):
        return "it is not an archive entry (an object)"
    return ctx.store.prepare_restore(entry, id_path, source_kind)
