"""SQLite cleanup batches: sized by time (--max-lock, the default), forced by a count
(--batch-size N), or one transaction for the whole cleanup (--batch-size all)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from datetime import UTC, datetime

import pytest

from sessionctl.domain.mapping import Mapping
from sessionctl.domain.policy import Policy
from sessionctl.domain.timeparse import UTC as TZ_UTC
from sessionctl.stores import open_store, parse_address
from sessionctl.stores.sql import judge


def make_django(path, n: int) -> tuple[set, set]:
    """n Django sessions with random-looking keys, every other one expired an hour ago."""
    now = time.time()
    expired, active = set(), set()
    rows = []
    for i in range(n):
        key = hashlib.sha256(str(i).encode()).hexdigest()[:32]
        moment = now - 3600 if i % 2 == 0 else now + 3600
        (expired if i % 2 == 0 else active).add(key)
        text = datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
        rows.append((key, "payload", text))
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE django_session (session_key varchar(40) NOT NULL PRIMARY KEY,"
        " session_data text NOT NULL, expire_date datetime NOT NULL)"
    )
    conn.execute("CREATE INDEX django_session_expire_date ON django_session (expire_date)")
    conn.executemany("INSERT INTO django_session VALUES (?, ?, ?)", rows)
    conn.commit()
    conn.close()
    return expired, active


def left(path) -> set:
    conn = sqlite3.connect(path)
    try:
        return {k for (k,) in conn.execute("SELECT session_key FROM django_session")}
    finally:
        conn.close()


def batches(path, batch: int, max_lock: float | None, timed: bool = True) -> list[int]:
    """Rows removed by each transaction of a cleanup of the expired sessions."""
    store = open_store(parse_address(f"sqlite:{path}"))
    try:
        if not timed:
            store.timed_batches = False  # as a PostgreSQL or MySQL store
        mapping = Mapping(fields={"id": "session_key", "expires": "expire_date"})
        plan = store.pushdown(mapping, Policy(), TZ_UTC, time.time())
        assert plan is not None, store.no_pushdown_reason
        return [
            len(removed)
            for removed, _ in plan.delete_decided(["expired"], False, batch, max_lock=max_lock)
        ]
    finally:
        store.close()


def test_batches_shrink_to_a_small_time_budget(tmp_path):
    db = tmp_path / "s.db"
    expired, active = make_django(db, 12_000)
    sizes = batches(db, 10**9, max_lock=1e-9)
    # The first batch takes its fixed start; each one after halves at most, down to a floor.
    assert sizes[0] == judge.FIRST_TIMED_BATCH
    assert sizes[1:5] == [1000, 500, 250, 125]
    assert set(sizes[5:-1]) == {judge.MIN_TIMED_BATCH}
    assert sum(sizes) == len(expired)
    assert left(db) == active


def test_batches_grow_under_a_large_time_budget(tmp_path):
    db = tmp_path / "s.db"
    expired, active = make_django(db, 30_000)
    sizes = batches(db, 10, max_lock=3600.0)
    # The count given is not used: 2000, then at most 4x more each time.
    assert sizes == [2000, 8000, 5000]
    assert left(db) == active


def test_a_count_is_kept_without_a_budget_and_by_stores_that_do_not_time(tmp_path):
    db = tmp_path / "s.db"
    expired, active = make_django(db, 3_000)
    assert batches(db, 400, max_lock=None)[:3] == [400, 400, 400]
    db2 = tmp_path / "s2.db"
    make_django(db2, 3_000)
    assert batches(db2, 400, max_lock=3600.0, timed=False)[:3] == [400, 400, 400]
    assert left(db2) == active


def test_batch_size_all_is_one_transaction(tmp_path, cli):
    db = tmp_path / "s.db"
    expired, active = make_django(db, 5_000)
    from sessionctl.app.ops.cleanup import ALL_ROWS

    assert batches(db, ALL_ROWS, max_lock=None) == [len(expired)]
    db2 = tmp_path / "s2.db"
    make_django(db2, 5_000)
    result = cli("cleanup", "--store", db2, "--expired", "--batch-size", "all", "--format", "json")
    assert json.loads(result.stdout)["deleted"] == len(expired)
    assert left(db2) == active


@pytest.mark.parametrize("value", ["0", "-3", "x", "1.5", ""])
def test_batch_size_must_be_a_count_or_all(tmp_path, cli, value):
    db = tmp_path / "s.db"
    make_django(db, 10)
    result = cli("cleanup", "--store", db, "--expired", "--batch-size", value, code=2)
    assert "--batch-size" in result.stderr
    assert len(left(db)) == 10


def test_max_lock_option_and_settings(tmp_path, cli):
    db = tmp_path / "s.db"
    expired, active = make_django(db, 3_000)
    cli("cleanup", "--store", db, "--expired", "--max-lock", "5ms", "--no-archive", "-q")
    assert left(db) == active
    result = cli("cleanup", "--store", db, "--expired", "--max-lock", "soon", code=2)
    assert "--max-lock" in result.stderr
    config = tmp_path / "c.toml"
    config.write_text(
        f'[stores.s]\naddress = "sqlite:{tmp_path / "t.db"}"\nbatch_size = "all"\n'
        'max_lock = "50ms"\n'
    )
    make_django(tmp_path / "t.db", 1_000)
    cli("--config", config, "cleanup", "--store", "s", "--expired", "--no-archive", "-q")
    assert len(left(tmp_path / "t.db")) == 500
    config.write_text(f'[stores.s]\naddress = "sqlite:{tmp_path / "t.db"}"\nbatch_size = "some"\n')
    result = cli("--config", config, "cleanup", "--store", "s", "--expired", code=2)
    assert "batch_size" in result.stderr
