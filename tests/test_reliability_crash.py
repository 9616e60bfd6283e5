"""Cleanup killed with SIGKILL at random moments, on every store kind (issue 7, "Crashes").

Each run generates a store, starts `sessionctl cleanup --expired --invalid` as a real process and
kills it after a seeded random delay: either anywhere in the run, or just after its first archive
appeared (so kills land in the middle of deleting, which is short). Then, reading the store
directly and every archive in the state folder:

- the store opens and parses (and sessionctl itself can read it, before anything repairs it);
- every session that was not selected is still there, byte for byte / row for row;
- every session that is gone is in an archive, exactly as it was.

Finally the cleanup is run again to completion (which puts back files a folder cleanup had
moved aside): the store is then exactly the original minus the selected sessions.
"""

from __future__ import annotations

import base64
import json
import multiprocessing
import os
import random
import signal
import subprocess
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from helpers import storegen
from reliability import (
    SESSIONCTL,
    Stopwatch,
    archived_entries,
    folder_sessions,
    json_sessions,
    record_figures,
    sqlite_check,
    sqlite_rows,
    subprocess_env,
    trash_leftovers,
)
from sessionctl.app.audit import store_slug
from sessionctl.app.config import Config
from sessionctl.app.context import StoreRequest, open_context
from sessionctl.app.ops.cleanup import CleanupOptions, cleanup
from sessionctl.domain.redact import json_safe

RUNS_PER_KIND = int(os.environ.get("SESSIONCTL_CRASH_RUNS", "60"))
SESSIONS = 160
WORKERS = 8
SEED = 7_000


@dataclass
class CrashStore:
    """One generated store, what it held, and which of its sessions a cleanup selects."""

    kind: str
    path: Path
    address: str
    args: list[str]
    batch_size: int
    original: dict  # session name -> record / bytes / row
    selected: set
    table: str | None = None
    key: str | None = None
    columns: list[str] = field(default_factory=list)
    children: dict = field(default_factory=dict)  # SESSION_ID -> attribute rows (Spring)

    def request(self) -> StoreRequest:
        preset = self.args[self.args.index("--preset") + 1] if "--preset" in self.args else None
        return StoreRequest(store=self.address, preset=preset)

    def current(self) -> dict:
        if self.kind == "json":
            return json_sessions(self.path)
        if self.kind == "jsondir":
            return folder_sessions(self.path)
        return sqlite_rows(self.path, self.table, self.key)

    def same_record(self, name, entry: dict) -> bool:
        """Whether an archive entry holds exactly the original session `name`."""
        original = self.original[name]
        if self.kind == "json":
            return entry["record"] == original
        if self.kind == "jsondir":
            if entry.get("raw_b64") is not None:
                return base64.b64decode(entry["raw_b64"]) == original
            return entry["record"] == json.loads(original)
        if entry["record"] != json_safe(dict(zip(self.columns, original))):
            return False
        if self.table == "SPRING_SESSION":
            archived = entry.get("children", {}).get("SPRING_SESSION_ATTRIBUTES", [])
            return archived == [json_safe(row) for row in self.children[name]]
        return True

    def archive_name(self, entry: dict):
        if self.kind == "jsondir":
            return entry["key"]
        if self.kind == "sqlite":
            return entry["record"][self.key]
        return entry["id"]


def build(kind: str, folder: Path, index: int, now: float) -> CrashStore:
    folder.mkdir(parents=True)
    if kind == "json":
        shape = ("array", "keyed", "wrapped")[index % 3]
        generated = storegen.generate("bash-sessions", SESSIONS, now=now, seed=index)
        path = storegen.write_json(folder / "sessions.json", generated, shape=shape)
        selected = set(generated.ids["expired"]) | set(generated.ids["invalid"])
        # Hooks stretch the run between selection and the one rewrite of the file.
        args = ["--preset", "bash-sessions"] + (["--hook", "true"] if index % 2 else [])
        store = CrashStore(kind, path, f"json:{path}", args, 1000, {}, selected)
    elif kind == "jsondir":
        generated = storegen.generate("raptor", SESSIONS, now=now, seed=index)
        path = storegen.write_jsondir(folder / "sessions", generated, garbage=3)
        selected = {f"{i}.json" for i in generated.ids["expired"] + generated.ids["invalid"]}
        batch = (1, 7, 40)[index % 3]
        args = ["--batch-size", str(batch), "--pause", "0.002s"]
        store = CrashStore(kind, path, f"jsondir:{path}", args, batch, {}, selected)
    else:
        preset = ("django", "spring")[index % 2]
        journal = ("wal", "delete")[(index // 2) % 2]
        generated = storegen.generate(preset, SESSIONS, now=now, seed=index)
        path = storegen.write_sqlite(folder / "app.db", generated, journal=journal)
        selected = set(generated.ids["expired"]) | set(generated.ids["invalid"])
        table = storegen.TABLES[preset]
        key = "session_key" if preset == "django" else "SESSION_ID"
        batch = (1, 5, 25)[index % 3]
        args = ["--batch-size", str(batch), "--pause", "0.002s"]
        store = CrashStore(
            kind, path, f"sqlite:{path}?table={table}", args, batch, {}, selected, table, key
        )
        store.columns = list(generated.records[0])
        if preset == "spring":
            store.children = _spring_children(path)
    store.original = store.current()
    assert store.selected <= set(store.original), "the generator's ids name the sessions"
    return store


def _spring_children(path: Path) -> dict:
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(
            "SELECT s.SESSION_ID, a.* FROM SPRING_SESSION_ATTRIBUTES a "
            "JOIN SPRING_SESSION s ON s.PRIMARY_ID = a.SESSION_PRIMARY_ID"
        )
        names = [d[0] for d in rows.description][1:]
        children: dict = {}
        for row in rows:
            children.setdefault(row[0], []).append(dict(zip(names, row[1:])))
        return children
    finally:
        conn.close()


def _orphans(path: Path) -> int:
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            "SELECT COUNT(*) FROM SPRING_SESSION_ATTRIBUTES WHERE SESSION_PRIMARY_ID "
            "NOT IN (SELECT PRIMARY_ID FROM SPRING_SESSION)"
        ).fetchone()[0]
    finally:
        conn.close()


def _iso(epoch: float) -> str:
    return storegen.iso(epoch)


def _argv(store: CrashStore, now: float) -> list[str]:
    return [
        *SESSIONCTL,
        "cleanup",
        "--store",
        store.address,
        "--expired",
        "--invalid",
        "--now",
        _iso(now),
        "--quiet",
        *store.args,
    ]


def _archive_folder(state_dir: Path, store: CrashStore) -> Path:
    return state_dir / "archives" / store_slug(store.address)


def _start_and_kill(argv, env, watch: Path, mode: str, delay: float) -> tuple[bool, float, str]:
    """Run `argv`, SIGKILL it `delay` seconds after start (or after its first archive appeared).

    Returns (killed, seconds it ran, stderr).
    """
    started = time.monotonic()
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if mode == "archive":
        while process.poll() is None and not (watch.is_dir() and any(watch.iterdir())):
            time.sleep(0.0005)
    deadline = time.monotonic() + delay
    while process.poll() is None and time.monotonic() < deadline:
        time.sleep(min(0.001, max(0.0, deadline - time.monotonic())))
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    _, stderr = process.communicate(timeout=60)
    killed = process.returncode == -signal.SIGKILL
    if not killed:
        assert process.returncode == 0, stderr.decode()
    return killed, time.monotonic() - started, stderr.decode()


def _check_after_kill(store: CrashStore, state_dir: Path, now: float) -> str:
    """The three invariants; returns where the kill landed."""
    # The store opens for sessionctl itself, before anything (an application, the checks
    # below) has had a chance to repair it: a SQLite hot journal, a half-moved folder.
    ctx = open_context(Config(path=None, chosen_by=None), store.request(), now=now)
    try:
        readable = sum(1 for _ in ctx.store.iter_records())
    finally:
        ctx.close()
    if store.kind == "sqlite":
        assert sqlite_check(store.path) == "ok"
        if store.table == "SPRING_SESSION":
            assert _orphans(store.path) == 0
    current = store.current()  # parses: json.load, every file read, a full table scan
    assert readable == len(current)  # sessionctl sees every session the store holds
    kept = set(store.original) - store.selected
    for name in kept:
        assert name in current, f"{name} was not selected but is gone"
        assert current[name] == store.original[name], f"{name} was not selected but changed"
    gone = set(store.original) - set(current)
    assert gone <= store.selected
    for name in set(current) & store.selected:
        assert current[name] == store.original[name]
    archived = {}
    for entry in archived_entries(_archive_folder(state_dir, store)):
        archived[store.archive_name(entry)] = entry
    assert set(archived) <= store.selected, "only selected sessions are archived"
    for name in gone:
        assert name in archived, f"{name} is gone but not in any archive"
        assert store.same_record(name, archived[name]), f"{name} archived differently"
    if store.kind == "jsondir":
        # A file moved aside but not yet verified is not in the store, and is archived.
        for leftover in trash_leftovers(store.path):
            assert leftover.split(".", 2)[2] in archived
    if not archived:
        return "before archiving"
    if not gone:
        return "archived, nothing removed yet"
    if gone != store.selected:
        return "part removed"
    return "all removed, not finished"


def _finish(store: CrashStore, state_dir: Path, now: float) -> None:
    """A second cleanup completes the job; the store ends exactly as an unbroken run leaves it."""
    ctx = open_context(Config(path=None, chosen_by=None), store.request(), now=now)
    try:
        result = cleanup(
            ctx, CleanupOptions(expired=True, invalid=True, batch_size=store.batch_size)
        )
    finally:
        ctx.close()
    assert result.error is None and result.failed == 0, result.as_dict()
    current = store.current()
    expected = {k: v for k, v in store.original.items() if k not in store.selected}
    assert current == expected
    if store.kind == "jsondir":
        assert trash_leftovers(store.path) == []
    if store.kind == "sqlite" and store.table == "SPRING_SESSION":
        assert _orphans(store.path) == 0
    archived = {}
    for entry in archived_entries(_archive_folder(state_dir, store)):
        archived.setdefault(store.archive_name(entry), entry)
    assert set(archived) == store.selected
    for name in store.selected:
        assert store.same_record(name, archived[name])


def _calibrate(kind: str, base: Path, state_dir: Path, now: float) -> tuple[float, float]:
    """(seconds to the first archive, seconds of a whole run) of an uninterrupted cleanup."""
    store = build(kind, base / "calibration", 1, now)
    env = subprocess_env(state_dir)
    watch = _archive_folder(state_dir, store)
    started = time.monotonic()
    process = subprocess.Popen(_argv(store, now), env=env, stderr=subprocess.PIPE)
    archive_at = None
    while process.poll() is None:
        if archive_at is None and watch.is_dir() and any(watch.iterdir()):
            archive_at = time.monotonic() - started
        time.sleep(0.0005)
    total = time.monotonic() - started
    assert process.returncode == 0, process.stderr.read().decode()
    assert store.current() == {k: v for k, v in store.original.items() if k not in store.selected}
    return (archive_at or total * 0.8), total


def _one_run(job) -> tuple[str, bool, str]:
    """One run: build, start, kill, check, finish. In a worker process of its own."""
    kind, base, state_dir, now, (index, mode, delay) = job
    store = build(kind, base / f"run-{index:03d}", index, now)
    killed, _, stderr = _start_and_kill(
        _argv(store, now),
        subprocess_env(state_dir),
        _archive_folder(state_dir, store),
        mode,
        delay,
    )
    landed = _check_after_kill(store, state_dir, now) if killed else "finished before kill"
    leftovers = bool(store.kind == "jsondir" and trash_leftovers(store.path))
    _finish(store, state_dir, now)
    return landed, leftovers, stderr


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["json", "jsondir", "sqlite"])
def test_sigkill_at_random_moments_loses_nothing(kind, tmp_path, tmp_path_factory, state_dir):
    clock = Stopwatch()
    now = time.time()
    first_archive, whole = _calibrate(kind, tmp_path, state_dir, now)
    rng = random.Random(f"{SEED}-{kind}")
    plans = []
    for index in range(RUNS_PER_KIND):
        mode = "archive" if index % 2 else "anytime"
        # Within one calibrated run: the pool's runs may be slower than the calibration run
        # (load) or faster (a busier machine slowed the calibration); a kill past the end of
        # a run proves nothing, so the range is not stretched.
        span = (whole - first_archive) if mode == "archive" else whole
        plans.append((index, mode, rng.uniform(0.0, span)))
    with ProcessPoolExecutor(WORKERS, mp_context=multiprocessing.get_context("fork")) as pool:
        outcomes = list(
            pool.map(_one_run, [(kind, tmp_path, state_dir, now, plan) for plan in plans])
        )
    for _, _, stderr in outcomes:
        assert "Traceback" not in stderr
    landed = Counter(outcome for outcome, _, _ in outcomes)
    killed = sum(count for outcome, count in landed.items() if outcome != "finished before kill")
    # The runs must really have been cut in the middle, or this test proves nothing.
    assert killed >= RUNS_PER_KIND // 2, landed
    mid_delete = landed["archived, nothing removed yet"] + landed["part removed"]
    assert mid_delete + landed["all removed, not finished"] >= RUNS_PER_KIND // 10, landed
    if kind != "json":
        assert landed["part removed"] >= 1, landed
    record_figures(
        tmp_path_factory,
        f"crash-{kind}",
        {
            "kind": kind,
            "runs": RUNS_PER_KIND,
            "sessions_per_store": SESSIONS,
            "killed": killed,
            "landed": dict(landed),
            "moved_aside_and_put_back": sum(1 for _, left, _ in outcomes if left),
            "invariant_violations": 0,
            "calibration_run_s": round(whole, 3),
            "seconds": clock.seconds,
        },
    )
