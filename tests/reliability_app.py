"""A stand-in for the application that owns a session store, run as its own process by the
concurrency tests: it creates, touches and updates sessions as fast as it can, the way such
applications write, and logs every write it made (after it was made) as one JSON line.

    python reliability_app.py KIND STORE LOG SECONDS SEED

KIND json:    read the whole file, change it, write a temp file and rename it over (no locks).
KIND jsondir: one file per session, each write to a temp file renamed over the session file.
KIND sqlite:  short transactions of its own, with a busy timeout.

Every write also sets the session's last access (or expiry) to now, so any session the
application wrote to is active: a cleanup must never remove it, nor undo the write.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


#: Share of writes that create a session; of the others, the share that touch any session at all
#: (an expired or invalid one comes back to life), the rest work on the application's own.
CREATE = 0.2
ANY = 0.35


def pick(rng: random.Random, mine: list[str], op: float) -> str | None:
    """The session a write goes to: None for "any session of the store"."""
    if op < ANY or not mine:
        return None
    return rng.choice(mine)


class Log:
    def __init__(self, handle):
        self.handle = handle

    def write(self, session_id: str, values: dict) -> None:
        self.handle.write(json.dumps({"id": session_id, "set": values}) + "\n")


def json_app(store: Path, log: Log, deadline: float, rng: random.Random) -> int:
    writes = 0
    temp = store.with_name(f".app-{os.getpid()}.tmp")
    mine: list[str] = []
    while time.monotonic() < deadline:
        document = json.loads(store.read_bytes())
        sessions = document["sessions"]
        now = time.time()
        op = rng.random()
        wanted = pick(rng, mine, op)
        found = [s for s in sessions if wanted is None or s["session_id"] == wanted]
        if op < CREATE or not found:
            session_id = f"app-{os.getpid()}-{writes}"
            values = {"workspace_name": "app", "created_at": now, "last_used": now, "hits": 0}
            sessions.append({"session_id": session_id, **values})
            mine.append(session_id)
        else:
            session = rng.choice(found)
            session_id = session["session_id"]
            values = {"last_used": now}
            if op > 0.6:
                values["hits"] = writes
            session.update(values)
        temp.write_text(json.dumps(document, indent=2) + "\n")
        os.replace(temp, store)
        log.write(session_id, values)
        writes += 1
    return writes


RAPTOR_BROWSERS = ("chromium", "firefox", "webkit")


def jsondir_app(store: Path, log: Log, deadline: float, rng: random.Random) -> int:
    writes = 0
    mine: list[str] = []
    while time.monotonic() < deadline:
        now = time.time()
        op = rng.random()
        wanted = pick(rng, mine, op)
        if op < CREATE:
            mine.append(f"app-{os.getpid()}-{writes}")
            session_id = f"app-{os.getpid()}-{writes}"
            record = {
                "session_id": session_id,
                "cdp_url": f"ws://127.0.0.1:9222/devtools/browser/{writes}",
                "browser_type": "chromium",
                "created_at": iso(now),
                "last_accessed": iso(now),
            }
            values = dict(record)
        else:
            names = [n for n in os.listdir(store) if n.endswith(".json") and n[0] != "."]
            if wanted is not None:
                names = [f"{wanted}.json"]
            if not names:
                continue
            name = rng.choice(names)
            try:
                record = json.loads((store / name).read_bytes())
            except (FileNotFoundError, ValueError):
                continue  # removed meanwhile, or one of the corrupt files
            # Only sessions a touch makes valid: the others stay invalid, and may go.
            if not (
                isinstance(record, dict)
                and record.get("cdp_url")
                and record.get("browser_type") in RAPTOR_BROWSERS
                and record.get("session_id") == name[:-5]
            ):
                continue
            session_id = record["session_id"]
            values = {"last_accessed": iso(now)}
            if op > 0.6:
                values["hits"] = writes
            record.update(values)
        temp = store / f".{session_id}.app.tmp"
        temp.write_text(json.dumps(record, indent=2))
        os.replace(temp, store / f"{session_id}.json")
        log.write(session_id, values)
        writes += 1
    return writes


def sqlite_app(store: Path, log: Log, deadline: float, rng: random.Random) -> int:
    conn = sqlite3.connect(store, timeout=10, isolation_level=None)
    keys = [key for (key,) in conn.execute("SELECT session_key FROM django_session")]
    writes = 0
    mine: list[str] = []
    while time.monotonic() < deadline:
        expiry = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S.%f")
        op = rng.random()
        wanted = pick(rng, mine, op)
        conn.execute("BEGIN IMMEDIATE")
        if op < CREATE:
            session_id = f"app-{os.getpid()}-{writes}"
            values = {"session_data": f"new-{writes}", "expire_date": expiry}
            conn.execute(
                "INSERT INTO django_session (session_key, session_data, expire_date) "
                "VALUES (?, ?, ?)",
                (session_id, values["session_data"], expiry),
            )
            keys.append(session_id)
            mine.append(session_id)
        else:
            session_id = wanted if wanted is not None else rng.choice(keys)
            values = {"expire_date": expiry}
            if op > 0.6:
                values["session_data"] = f"update-{writes}"
            assignments = ", ".join(f"{name} = ?" for name in values)
            changed = conn.execute(
                f"UPDATE django_session SET {assignments} WHERE session_key = ?",
                (*values.values(), session_id),
            ).rowcount
            if not changed:
                conn.execute("ROLLBACK")
                continue  # cleaned up before we came back to it
        conn.execute("COMMIT")
        log.write(session_id, values)
        writes += 1
    conn.close()
    return writes


APPS = {"json": json_app, "jsondir": jsondir_app, "sqlite": sqlite_app}


def main(argv: list[str]) -> int:
    kind, store, log_path, seconds, seed = argv
    deadline = time.monotonic() + float(seconds)
    with open(log_path, "a", buffering=1) as handle:
        writes = APPS[kind](Path(store), Log(handle), deadline, random.Random(int(seed)))
    print(writes)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
