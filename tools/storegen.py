"""Generate session stores of every preset, relative to "now", so tests and demos never rot.

Each generated session is active, expired or invalid by construction, and the generator
returns which ids are which, so tests can check verdicts exactly.

    python tools/storegen.py demo DIR           # the `make demo` stores
    python tools/storegen.py PRESET PATH N      # one store of N sessions (half expired)
"""

from __future__ import annotations

import base64
import json
import random
import sqlite3
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

UTC = UTC
HOUR = 3600.0
DAY = 86400.0
KINDS = ("active", "expired", "invalid")


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def sql_time(epoch: float) -> str:
    """What Django and SQLite write: naive UTC with microseconds."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


@dataclass
class Generated:
    preset: str
    records: list[dict]
    ids: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in KINDS})

    def add(self, kind: str, session_id: str, record: dict) -> None:
        self.ids[kind].append(session_id)
        self.records.append(record)


def plan(n: int, mix: tuple[float, float, float], rng: random.Random) -> list[str]:
    """Kinds for n sessions in the given proportions, shuffled."""
    counts = [int(n * share) for share in mix]
    counts[0] += n - sum(counts)
    kinds = [kind for kind, count in zip(KINDS, counts) for _ in range(count)]
    rng.shuffle(kinds)
    return kinds


# --- per-preset session shapes ---------------------------------------------------------------
# Each returns (session id, record) for session number i of the given kind.


def provisioner(i, kind, now, rng):
    sid = f"session-{i:06d}"
    created = (
        now - rng.uniform(60, 6 * DAY) if kind == "active" else now - rng.uniform(8 * DAY, 60 * DAY)
    )
    record = {
        "sessionId": sid,
        "userId": f"user-{i % 37}",
        "workspaceSlug": f"ws-{i % 11}",
        "createdAt": iso(created),
    }
    if kind == "invalid":
        record["createdAt"] = "yesterday-ish" if i % 2 else iso(now - DAY)
        if not i % 2:
            del record["workspaceSlug"]
    return sid, record


def raptor(i, kind, now, rng):
    sid = f"browser-{i:06d}"
    accessed = (
        now - rng.uniform(60, 6 * DAY)
        if kind != "expired"
        else now - rng.uniform(8 * DAY, 40 * DAY)
    )
    record = {
        "session_id": sid,
        "cdp_url": f"ws://127.0.0.1:{9222 + i % 100}/devtools/browser/{i:08x}",
        "browser_type": rng.choice(["chromium", "firefox", "webkit"]),
        "created_at": iso(accessed - rng.uniform(0, DAY)),
        "last_accessed": iso(accessed),
        "auth_token": f"tok-{rng.getrandbits(64):016x}",
    }
    if kind == "invalid":
        choice = i % 3
        if choice == 0:
            record["browser_type"] = "netscape"
        elif choice == 1:
            del record["cdp_url"]
        else:
            record["last_accessed"] = "not a time"
    return sid, record


def bash_sessions(i, kind, now, rng):
    sid = f"bash_ws{i % 7}_{i:06x}"
    used = (
        now - rng.uniform(10, 50 * 60)
        if kind != "expired"
        else now - rng.uniform(2 * HOUR, 3 * DAY)
    )
    record = {
        "session_id": sid,
        "workspace_name": f"workspace{i % 7}",
        "created_at": used - rng.uniform(0, HOUR),
        "last_used": used,
    }
    if kind == "invalid":
        record["last_used"] = now + 30 * DAY  # in the future
    return sid, record


def copilot(i, kind, now, rng):
    sid = f"{rng.getrandbits(128):032x}"
    updated = (
        now - rng.uniform(60, 6 * DAY)
        if kind != "expired"
        else now - rng.uniform(8 * DAY, 30 * DAY)
    )
    record = {
        "id": sid,
        "app_name": "interview-copilot",
        "user_id": f"candidate-{i % 23}",
        "state": json.dumps({"stage": "coding", "api_token": f"sk-{i:08d}"}),
        "created_at": updated - rng.uniform(0, DAY),
        "last_update_time": updated,
    }
    if kind == "invalid":
        record["last_update_time"] = "NaN"
    return sid, record


def django(i, kind, now, rng):
    key = f"{rng.getrandbits(160):040x}"[:32]
    expire = (
        now + rng.uniform(HOUR, 14 * DAY) if kind != "expired" else now - rng.uniform(60, 30 * DAY)
    )
    data = base64.b64encode(json.dumps({"_auth_user_id": str(i)}).encode()).decode()
    record = {
        "session_key": key,
        "session_data": f"{data}:signature",
        "expire_date": sql_time(expire),
    }
    if kind == "invalid":
        record["expire_date"] = "0000-00-00 00:00:00"
    return key, record


def rails(i, kind, now, rng):
    sid = f"2::{rng.getrandbits(128):032x}"
    updated = (
        now - rng.uniform(60, 20 * DAY)
        if kind != "expired"
        else now - rng.uniform(31 * DAY, 90 * DAY)
    )
    record = {
        "session_id": sid,
        "data": base64.b64encode(b'\x04\bI"\x0csecret\x06:\x06ET').decode(),
        "created_at": sql_time(updated - DAY),
        "updated_at": sql_time(updated),
    }
    if kind == "invalid":
        record["updated_at"] = "garbage"
    return sid, record


def express(i, kind, now, rng):
    sid = f"{rng.getrandbits(96):024x}"
    expires = (
        now + rng.uniform(HOUR, 7 * DAY) if kind != "expired" else now - rng.uniform(60, 7 * DAY)
    )
    sess = {
        "cookie": {
            "originalMaxAge": 86400000,
            "expires": iso(expires),
            "httpOnly": True,
            "path": "/",
        },
        "passport": {"user": f"u{i % 13}"},
    }
    record = {"sid": sid, "expired": int(expires * 1000), "sess": json.dumps(sess)}
    if kind == "invalid":
        record["expired"] = "soon"
    return sid, record


def flask(i, kind, now, rng):
    sid = f"session:{rng.getrandbits(128):032x}"
    expiry = (
        now + rng.uniform(HOUR, 31 * DAY) if kind != "expired" else now - rng.uniform(60, 31 * DAY)
    )
    record = {
        "id": i + 1,
        "session_id": sid,
        "data": b"\x80\x04\x95secret-pickle",
        "expiry": sql_time(expiry),
    }
    if kind == "invalid":
        record["expiry"] = sql_time(now + 50 * 365 * DAY)  # implausibly far ahead
    return sid, record


def spring(i, kind, now, rng):
    primary = f"{rng.getrandbits(128):032x}"
    sid = f"{rng.getrandbits(128):032x}"
    accessed = (
        now - rng.uniform(10, 20 * 60)
        if kind != "expired"
        else now - rng.uniform(2 * HOUR, 3 * DAY)
    )
    interval = 1800
    record = {
        "PRIMARY_ID": primary,
        "SESSION_ID": sid,
        "CREATION_TIME": int((accessed - HOUR) * 1000),
        "LAST_ACCESS_TIME": int(accessed * 1000),
        "MAX_INACTIVE_INTERVAL": interval,
        "EXPIRY_TIME": int((accessed + interval) * 1000),
        "PRINCIPAL_NAME": f"user{i % 9}",
    }
    if kind == "expired":
        record["EXPIRY_TIME"] = int((now - 60) * 1000)
    if kind == "invalid":
        record["CREATION_TIME"] = int((now + 40 * DAY) * 1000)
    return sid, record


SHAPES = {
    "provisioner": provisioner,
    "raptor": raptor,
    "bash-sessions": bash_sessions,
    "copilot": copilot,
    "django": django,
    "rails": rails,
    "express": express,
    "flask": flask,
    "spring": spring,
}

SCHEMAS = {
    "copilot": "CREATE TABLE sessions (id TEXT PRIMARY KEY, app_name TEXT, user_id TEXT, state TEXT, created_at REAL, last_update_time REAL)",
    "django": "CREATE TABLE django_session (session_key varchar(40) NOT NULL PRIMARY KEY, session_data text NOT NULL, expire_date datetime NOT NULL);"
    "CREATE INDEX django_session_expire_date_a5c62663 ON django_session (expire_date)",
    "rails": "CREATE TABLE sessions (id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, session_id varchar NOT NULL, data text, created_at datetime NOT NULL, updated_at datetime NOT NULL);"
    "CREATE UNIQUE INDEX index_sessions_on_session_id ON sessions (session_id);"
    "CREATE INDEX index_sessions_on_updated_at ON sessions (updated_at)",
    "express": "CREATE TABLE sessions (sid PRIMARY KEY, expired, sess)",
    "flask": "CREATE TABLE sessions (id INTEGER PRIMARY KEY, session_id VARCHAR(255) UNIQUE, data BLOB, expiry DATETIME)",
    "spring": "CREATE TABLE SPRING_SESSION (PRIMARY_ID CHAR(36) NOT NULL, SESSION_ID CHAR(36) NOT NULL, CREATION_TIME BIGINT NOT NULL, "
    "LAST_ACCESS_TIME BIGINT NOT NULL, MAX_INACTIVE_INTERVAL INT NOT NULL, EXPIRY_TIME BIGINT NOT NULL, PRINCIPAL_NAME VARCHAR(100), "
    "CONSTRAINT SPRING_SESSION_PK PRIMARY KEY (PRIMARY_ID));"
    "CREATE UNIQUE INDEX SPRING_SESSION_IX1 ON SPRING_SESSION (SESSION_ID);"
    "CREATE INDEX SPRING_SESSION_IX2 ON SPRING_SESSION (EXPIRY_TIME);"
    "CREATE TABLE SPRING_SESSION_ATTRIBUTES (SESSION_PRIMARY_ID CHAR(36) NOT NULL, ATTRIBUTE_NAME VARCHAR(200) NOT NULL, ATTRIBUTE_BYTES BLOB NOT NULL, "
    "CONSTRAINT SPRING_SESSION_ATTRIBUTES_PK PRIMARY KEY (SESSION_PRIMARY_ID, ATTRIBUTE_NAME), "
    "CONSTRAINT SPRING_SESSION_ATTRIBUTES_FK FOREIGN KEY (SESSION_PRIMARY_ID) REFERENCES SPRING_SESSION(PRIMARY_ID) ON DELETE CASCADE)",
    "bash-sessions": "CREATE TABLE bash_sessions (session_id TEXT PRIMARY KEY, workspace_name TEXT, created_at REAL, last_used REAL)",
}
TABLES = {
    "copilot": "sessions",
    "django": "django_session",
    "rails": "sessions",
    "express": "sessions",
    "flask": "sessions",
    "spring": "SPRING_SESSION",
    "bash-sessions": "bash_sessions",
}


def generate(
    preset: str, n: int, now: float | None = None, mix=(0.5, 0.4, 0.1), seed: int = 7
) -> Generated:
    now = time.time() if now is None else now
    rng = random.Random(seed)
    shape = SHAPES[preset]
    result = Generated(preset=preset, records=[])
    for i, kind in enumerate(plan(n, mix, rng)):
        sid, record = shape(i, kind, now, rng)
        result.add(kind, sid, record)
    return result


# --- writers ---------------------------------------------------------------------------------


def write_json(
    path: Path, generated: Generated, shape: str = "array", indent: int | None = 2
) -> Path:
    records = generated.records
    if shape == "array":
        document = records
    elif shape == "keyed":
        id_field = _id_field(generated.preset)
        document = {r[id_field]: {k: v for k, v in r.items() if k != id_field} for r in records}
    elif shape == "wrapped":
        document = {"version": 1, "sessions": records}
    else:
        raise ValueError(shape)
    path.write_text(json.dumps(document, indent=indent, default=_json_default) + "\n")
    return path


def _json_default(value):
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    raise TypeError(value)


def _id_field(preset: str) -> str:
    return {"provisioner": "sessionId", "raptor": "session_id", "bash-sessions": "session_id"}.get(
        preset, "id"
    )


def write_jsondir(folder: Path, generated: Generated, garbage: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    id_field = _id_field(generated.preset)
    for record in generated.records:
        name = str(record.get(id_field, "unnamed"))
        (folder / f"{name}.json").write_text(json.dumps(record, indent=2, default=_json_default))
    for index in range(garbage):
        sid = f"corrupt-{index}"
        (folder / f"{sid}.json").write_text('{"session_id": "' + sid + '", "cdp_url": ')
        generated.ids["invalid"].append(sid)
    return folder


def write_sqlite(
    path: Path, generated: Generated, journal: str = "wal", with_index: bool = True
) -> Path:
    preset = generated.preset
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA journal_mode={journal}")
    schema = SCHEMAS[preset]
    if not with_index:
        schema = ";".join(s for s in schema.split(";") if "CREATE INDEX" not in s)
    conn.executescript(schema)
    table = TABLES[preset]
    if generated.records:
        columns = list(generated.records[0])
        marks = ",".join("?" * len(columns))
        names = ",".join(f'"{c}"' for c in columns)
        conn.executemany(
            f'INSERT INTO "{table}" ({names}) VALUES ({marks})',
            ([r.get(c) for c in columns] for r in generated.records),
        )
        if preset == "spring":
            conn.executemany(
                "INSERT INTO SPRING_SESSION_ATTRIBUTES VALUES (?, ?, ?)",
                (
                    (r["PRIMARY_ID"], "SPRING_SECURITY_CONTEXT", b"\xac\xed\x00\x05secret")
                    for r in generated.records
                ),
            )
    conn.commit()
    conn.close()
    return path


def make_demo(folder: Path) -> None:
    """The `make demo` stores: one of each kind, expired, active and invalid relative to now."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in ("app.db", "app.db-wal", "app.db-shm", "sessions.json", "sessions.json.bak"):
        (folder / stale).unlink(missing_ok=True)
    write_sqlite(folder / "app.db", generate("django", 500, seed=1))
    write_json(folder / "sessions.json", generate("bash-sessions", 60, seed=2), shape="wrapped")
    browsers = folder / "browser-sessions"
    if browsers.exists():
        for old in browsers.iterdir():
            old.unlink()
    write_jsondir(browsers, generate("raptor", 40, seed=3), garbage=2)
    config = folder / "sessionctl.toml"
    state = folder / "state"
    config.write_text(
        f"""# demo configuration written by `make demo`
state_dir = "{state}"
store = "web"

[stores.web]
address = "sqlite:{folder / "app.db"}?table=django_session"
preset = "django"

[stores.bash]
address = "json:{folder / "sessions.json"}"
preset = "bash-sessions"

[stores.browsers]
address = "jsondir:{browsers}"
preset = "raptor"
"""
    )
    print(
        f"demo stores in {folder}: app.db (django), sessions.json (bash-sessions), browser-sessions/ (raptor)"
    )


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "demo":
        make_demo(Path(argv[1]).absolute())
        return 0
    if len(argv) == 3 and argv[0] in SHAPES:
        preset, target, count = argv[0], Path(argv[1]), int(argv[2])
        generated = generate(preset, count, mix=(0.5, 0.5, 0.0))
        if target.suffix == ".json":
            write_json(target, generated)
        elif preset in TABLES and target.suffix in (".db", ".sqlite", ".sqlite3"):
            write_sqlite(target, generated)
        else:
            write_jsondir(target, generated)
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
