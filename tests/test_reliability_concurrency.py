"""Cleanup while the application writes, and two cleanups at once (issue 7, "Concurrent writers").

A second process plays the application (tests/reliability_app.py): it creates, touches and
updates sessions as fast as it can, the way applications write each store kind, and logs every
write it made. Cleanups run back to back meanwhile. Afterwards every write the application
logged is in the store (the latest value of each field of each session), no session that was
active is gone, and every session that is gone is in an archive.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from helpers import ROOT, storegen
from reliability import (
    SESSIONCTL,
    Stopwatch,
    archived_entries,
    folder_sessions,
    one_line,
    record_figures,
    sqlite_check,
    sqlite_rows,
    subprocess_env,
)

APP = ROOT / "tests" / "reliability_app.py"
APP_SECONDS = float(os.environ.get("SESSIONCTL_APP_SECONDS", "4"))
OK, FINDINGS, BUSY = 0, 1, 4

KINDS = {
    "json": ("bash-sessions", ["--preset", "bash-sessions"]),
    "jsondir": ("raptor", ["--preset", "raptor", "--batch-size", "5"]),
    "sqlite-wal": ("django", ["--batch-size", "3"]),
    "sqlite-delete": ("django", ["--batch-size", "3"]),
}


def _build(kind: str, folder: Path):
    preset, _ = KINDS[kind]
    generated = storegen.generate(preset, 200, seed=11)
    if kind == "json":
        path = storegen.write_json(folder / "sessions.json", generated, shape="wrapped")
        return path, f"json:{path}", generated
    if kind == "jsondir":
        path = storegen.write_jsondir(folder / "sessions", generated, garbage=3)
        return path, f"jsondir:{path}", generated
    journal = kind.split("-")[1]
    path = storegen.write_sqlite(folder / "app.db", generated, journal=journal)
    return path, f"sqlite:{path}?table=django_session", generated


def _contents(kind: str, path: Path) -> dict:
    """Session id -> record (as a dict) of the store, read directly."""
    if kind == "json":
        return {r["session_id"]: r for r in json.loads(path.read_bytes())["sessions"]}
    if kind == "jsondir":
        out = {}
        for name, raw in folder_sessions(path).items():
            try:
                out[name[:-5]] = json.loads(raw)
            except ValueError:
                out[name[:-5]] = raw
        return out
    assert sqlite_check(path) == "ok"
    rows = sqlite_rows(path, "django_session", "session_key")
    return {
        key: dict(zip(("session_key", "session_data", "expire_date"), row))
        for key, row in rows.items()
    }


def _archived_ids(kind: str, state_dir: Path) -> set:
    ids = set()
    for entry in archived_entries(state_dir / "archives"):
        if kind == "jsondir":
            ids.add(str(entry["key"])[:-5])
        else:
            ids.add(entry["id"])
    return ids


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(KINDS))
def test_application_writes_survive_concurrent_cleanups(
    kind, tmp_path, tmp_path_factory, state_dir
):
    clock = Stopwatch()
    path, address, generated = _build(kind, tmp_path)
    original = _contents(kind, path)
    active = set(generated.ids["active"])
    log = tmp_path / "app.log"
    env = subprocess_env(state_dir)
    app = subprocess.Popen(
        [sys.executable, str(APP), kind.split("-")[0], str(path), str(log), str(APP_SECONDS), "5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    codes: Counter = Counter()
    totals: Counter = Counter()
    _, options = KINDS[kind]
    run = 0
    while app.poll() is None:
        # Every other run holds each batch a little longer between selection and removal.
        hook = ["--hook", "true"] if run % 2 else []
        result = subprocess.run(
            [*SESSIONCTL, "cleanup", "-s", address, "--expired", "--invalid", "-f", "json"]
            + options
            + hook,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        codes[result.returncode] += 1
        assert result.returncode in (OK, BUSY), result.stderr
        if result.returncode == BUSY:
            # Only the JSON file store gives up (after retries) when it keeps changing.
            assert kind == "json", result.stderr
            assert "kept changing" in one_line(result.stderr)
        else:
            figures = json.loads(result.stdout)
            totals.update(deleted=figures["deleted"], changed=figures["changed"])
        run += 1
    out, err = app.communicate()
    assert app.returncode == 0, err
    app_writes = int(out)
    # With the application quiet, a last cleanup removes what is left to remove.
    last = subprocess.run(
        [*SESSIONCTL, "cleanup", "-s", address, "--expired", "--invalid", "-f", "json", *options],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert last.returncode == OK, last.stderr
    totals.update(deleted=json.loads(last.stdout)["deleted"])

    final = _contents(kind, path)
    latest: dict[str, dict] = {}
    for line in log.read_text().splitlines():
        write = json.loads(line)
        latest.setdefault(write["id"], {}).update(write["set"])
    assert len(latest) > 0 and app_writes == len(log.read_text().splitlines())
    lost = []
    for session_id, values in latest.items():
        record = final.get(session_id)
        if not isinstance(record, dict):
            lost.append((session_id, "session gone"))
            continue
        for name, value in values.items():
            if record.get(name) != value:
                lost.append((session_id, name, value, record.get(name)))
    assert lost == [], f"{len(lost)} application writes lost: {lost[:5]}"
    for session_id in active - set(latest):
        assert final.get(session_id) == original[session_id], f"active {session_id} changed"
    gone = (set(original) | set(latest)) - set(final)
    assert gone <= _archived_ids(kind, state_dir)
    assert gone, "the cleanups removed nothing: this test proved nothing"
    assert totals["deleted"] >= len(gone)
    record_figures(
        tmp_path_factory,
        f"concurrency-{kind}",
        {
            "kind": kind,
            "app_writes": app_writes,
            "sessions_written": len(latest),
            "cleanup_runs": run + 1,
            "exit_codes": {str(k): v for k, v in sorted(codes.items())},
            "removed": totals["deleted"],
            "kept_because_changed": totals["changed"],
            "writes_lost": 0,
            "seconds": clock.seconds,
        },
    )


@pytest.mark.parametrize("kind", ["json", "jsondir", "sqlite-wal"])
def test_two_cleanups_started_together(kind, tmp_path, state_dir):
    """One works, the other exits 4 ("busy") with one line, and changes nothing."""
    outcomes = Counter()
    for round_ in range(3):
        folder = tmp_path / f"round-{round_}"
        folder.mkdir()
        path, address, generated = _build(kind, folder)
        expected_gone = set(generated.ids["expired"]) | set(generated.ids["invalid"])
        env = subprocess_env(state_dir)
        argv = [
            *SESSIONCTL,
            "cleanup",
            "-s",
            address,
            "--expired",
            "--invalid",
            "--hook",
            "true",
            "-f",
            "json",
            *KINDS[kind][1],
        ]
        results = _together(argv, env)
        codes = sorted(r.returncode for r in results)
        assert codes == [OK, BUSY], [(r.returncode, r.stderr) for r in results]
        busy = next(r for r in results if r.returncode == BUSY)
        assert busy.stdout == ""
        assert "another cleanup of" in one_line(busy.stderr)
        worked = json.loads(next(r for r in results if r.returncode == OK).stdout)
        assert worked["deleted"] == len(expected_gone)
        final = _contents(kind, path)
        assert not (set(final) & expected_gone)
        assert set(final) == set(_contents_ids(generated)) - expected_gone
        outcomes.update(codes)
    assert outcomes == {OK: 3, BUSY: 3}


def _together(argv: list, env: dict) -> list[subprocess.CompletedProcess]:
    """Start two identical processes at the same instant; their results."""
    start = threading.Barrier(2)
    results: list = [None, None]

    def go(slot: int) -> None:
        start.wait()
        results[slot] = subprocess.run(argv, env=env, capture_output=True, text=True)

    threads = [threading.Thread(target=go, args=(slot,)) for slot in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def _contents_ids(generated) -> set:
    return {i for ids in generated.ids.values() for i in ids}


def test_json_rewrite_keeps_an_application_write_made_while_it_writes(cli, tmp_path, monkeypatch):
    """The application renames its version over the file while sessionctl is writing (and
    fsync'ing) its own: sessionctl must notice before its rename, not clobber the write."""
    generated = storegen.generate("bash-sessions", 30, seed=3)
    path = storegen.write_json(tmp_path / "sessions.json", generated, shape="wrapped")
    revived = generated.ids["expired"][0]
    real_fsync = os.fsync
    app_writes = []

    def fsync(fd):
        real_fsync(fd)
        target = os.readlink(f"/proc/self/fd/{fd}")
        name = os.path.basename(target)
        if name.startswith(".sessions.json.") and ".bak." not in name and not app_writes:
            # The user of an expired session comes back, right now.
            document = json.loads(path.read_bytes())
            for session in document["sessions"]:
                if session["session_id"] == revived:
                    session["last_used"] = time.time()
            app_temp = tmp_path / ".app.tmp"
            app_temp.write_text(json.dumps(document, indent=2) + "\n")
            os.replace(app_temp, path)
            app_writes.append(revived)

    monkeypatch.setattr(os, "fsync", fsync)
    result = json.loads(cli("cleanup", "-s", path, "--expired", "-f", "json").stdout)
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert app_writes == [revived]
    sessions = {s["session_id"]: s for s in json.loads(path.read_bytes())["sessions"]}
    assert revived in sessions, "the application's write was overwritten"
    assert sessions[revived]["last_used"] > time.time() - 60
    assert result["changed"] == 1
    assert result["deleted"] == len(generated.ids["expired"]) - 1


def _json_store_with_app_write(tmp_path):
    """A JSON store with one expired and one active session, read by a store object, and a
    function that plays one application write (read, change, temp file, rename over)."""
    from sessionctl.stores import open_store, parse_address

    path = tmp_path / "sessions.json"
    sessions = [
        {"session_id": "old", "expires_at": "2000-01-01T00:00:00Z"},
        {"session_id": "app", "expires_at": "2999-01-01T00:00:00Z", "hits": 0},
    ]
    path.write_text(json.dumps({"sessions": sessions}, indent=2) + "\n")
    store = open_store(parse_address(f"json:{path}"))
    store.load()
    writes = []

    def app_write():
        document = json.loads(path.read_bytes())
        for session in document["sessions"]:
            if session["session_id"] == "app":
                writes.append(len(writes) + 1)
                session["hits"] = writes[-1]
        temp = path.with_name(".app.tmp")
        temp.write_text(json.dumps(document, indent=2) + "\n")
        os.replace(temp, path)

    return path, store, app_write, writes


def _hits(path: Path) -> int:
    sessions = json.loads(path.read_bytes())["sessions"]
    assert [s["session_id"] for s in sessions] == ["app"]  # the expired one is gone
    return sessions[0]["hits"]


def test_an_application_rename_right_after_the_check_is_not_overwritten(tmp_path, monkeypatch):
    """The JSON file store checks the file is unchanged right before its rename; an
    application's rename landing between that check and the rename was overwritten (1 CI run in
    ~8 of the concurrency test lost a write). Now the new file is swapped in and what came out
    compared: the application's file is put back, and the cleanup tries again on top of it."""
    from sessionctl.stores import jsonfile
    from sessionctl.stores.base import Candidate

    path, store, app_write, writes = _json_store_with_app_write(tmp_path)
    real = jsonfile.atomic_write

    def atomic_write(target, data, *args, check=None, **kwargs):
        if check is not None and Path(target) == store.target and not writes:

            def late_check():
                passed = check()
                app_write()  # lands after the check said "unchanged"
                return passed

            return real(target, data, *args, check=late_check, **kwargs)
        return real(target, data, *args, check=check, **kwargs)

    monkeypatch.setattr(jsonfile, "atomic_write", atomic_write)
    outcome = store.remove([Candidate(key=0, fingerprint=0, id="old")], lambda records: None)
    assert [r.data["session_id"] for r in outcome.removed] == ["old"]
    assert writes == [1]
    assert _hits(path) == 1
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_an_application_writing_twice_during_the_swap_keeps_its_newest_file(tmp_path, monkeypatch):
    """The application renames once after the check, and again (having read the cleanup's
    file) while its first file is being put back: its newest file is the one left in place."""
    from sessionctl import fsutil
    from sessionctl.stores.base import Candidate

    path, store, app_write, writes = _json_store_with_app_write(tmp_path)
    real = fsutil._exchange
    calls = []

    def exchange(first, second):
        calls.append(1)
        if len(calls) <= 2:
            app_write()  # before the swap-in, then before the swap back
        return real(first, second)

    monkeypatch.setattr(fsutil, "_exchange", exchange)
    store.remove([Candidate(key=0, fingerprint=0, id="old")], lambda records: None)
    assert writes == [1, 2]
    assert _hits(path) == 2
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
