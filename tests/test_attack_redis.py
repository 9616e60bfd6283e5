"""Hostile input against the Redis store (issue 13): edited archives, hostile keys, races.

Each test works under its own key prefix (`redis_space`); nothing here flushes the server.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import os
import shutil
import socket
import struct
import time
from pathlib import Path

import pytest

from helpers import one_line_error
from redisfix import PRINCIPAL_INDEX
from test_redis import own_server


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _archive(path: Path, entries: list[dict]) -> Path:
    header = {
        "sessionctl_archive": 1,
        "store": "edited",
        "address": "edited",
        "kind": "redis",
        "table": None,
        "id_field": "sid",
        "created": "2026-01-01T00:00:00Z",
    }
    with gzip.open(path, "wt") as handle:
        for item in [header, *entries]:
            handle.write(json.dumps(item) + "\n")
    return path


def _session(key: str, **record) -> dict:
    return {"key": key, "id": key.rpartition(":")[2], "reasons": [], "record": record}


def test_restore_of_an_edited_archive_never_writes_outside_the_prefix(cli, redis_space, tmp_path):
    """Keys, lock keys and index sets named outside the store's prefix are refused, one line
    each; nothing lands there."""
    victim = redis_space.prefix + "victim:"
    outside = "sess:" + redis_space.prefix.replace(":", "-")  # no prefix: cleaned up below
    value = _b64(b'{"cookie":{}}')
    entries = [
        _session(victim + "sess:out", sid="out", value_b64=value, ttl_expires=None),
        _session(outside, sid="np", value_b64=value, ttl_expires=None),
        _session(redis_space.prefix + "cache:home", sid="c", value_b64=value, ttl_expires=None),
        {"key": ["lock"], "record": {"orphan": "lock", "lock": victim + "l", "value_b64": value}},
        {
            "key": ["index"],
            "record": {"orphan": "index member", "index": victim + "s", "member_b64": value},
        },
        _session(redis_space.prefix + "sess:fine", sid="fine", value_b64=value, ttl_expires=None),
    ]
    archive = _archive(tmp_path / "edited.ndjson.gz", entries)
    address = redis_space.address() + "&preset=connect-redis"
    try:
        result = cli("restore", archive, "--store", address, code=1)
        assert result.stderr.count("not restored") == 5
        assert redis_space.keys() == ["sess:fine"]
        with redis_space.client() as r:
            assert r.exists(outside) == 0
    finally:
        with redis_space.client() as r:
            r.unlink(outside)


@pytest.mark.parametrize(
    "record, why",
    [
        ({"value_b64": "!!!not base64", "ttl_expires": None}, "not base64"),
        ({"value_b64": _b64(b"{}"), "ttl_expires": 1e30}, "100 years"),
        ({"value_b64": _b64(b"{}"), "ttl_expires": float("inf")}, "100 years"),
        ({"value_b64": _b64(b"{}"), "ttl_expires": "soon"}, "not a number"),
        ({"value_b64": None, "ttl_expires": None}, "not base64"),
    ],
)
def test_restore_of_a_hand_edited_value_or_ttl_is_one_refusal_not_exit_70(
    cli, redis_space, tmp_path, record, why
):
    """Bad base64 or an infinite TTL was exit 70; a TTL past PEXPIRE's range failed the whole
    batch (exit 3) after writing the entries before it."""
    fine = _session(
        redis_space.prefix + "sess:fine", sid="f", value_b64=_b64(b"{}"), ttl_expires=None
    )
    entries = [fine, _session(redis_space.prefix + "sess:bad", sid="b", **record)]
    archive = _archive(tmp_path / "edited.ndjson.gz", entries)
    address = redis_space.address() + "&preset=connect-redis"
    result = cli("restore", archive, "--store", address, code=1)
    assert why in one_line_error(result)
    assert redis_space.keys() == ["sess:fine"]


def test_restore_of_edited_spring_hashes_and_orphans_is_refused_not_a_crash(
    cli, redis_space, tmp_path
):
    ns = redis_space.prefix + "spring:session:"
    index = ns + "index:org.springframework.session.FindByIndexNameSessionRepository."
    index += "PRINCIPAL_NAME_INDEX_NAME:ann"
    entries = [
        _session(ns + "sessions:abcdef012345", id="x", hash_b64={"!!": "x"}, ttl_expires=None),
        _session(ns + "sessions:abcdef012346", id="y", hash_b64=["a"], ttl_expires=None),
        {"key": ["index"], "record": {"orphan": "index member", "index": index}},
        {"key": ["index"], "record": {"orphan": "what", "index": index}},
        _session(
            ns + "sessions:abcdef012347",
            id="z",
            hash_b64={_b64(b"creationTime"): _b64(b"1")},
            ttl_expires=time.time() + 600,
        ),
    ]
    archive = _archive(tmp_path / "edited.ndjson.gz", entries)
    result = cli("restore", archive, "--store", redis_space.address("spring:session:"), code=1)
    assert result.stderr.count("not restored") == 4 and "Traceback" not in result.stderr
    assert redis_space.keys() == ["spring:session:sessions:abcdef012347"]
    assert 590 <= redis_space.ttl("spring:session:sessions:abcdef012347") <= 600


def test_a_value_removed_by_invalid_comes_back_from_its_archive(cli, redis_space):
    """`cleanup --invalid` archived the bytes of a value that is not JSON (raw_b64), and
    restore refused them: the session was gone for good."""
    raw = b"bin\xff\xfe{not json"
    with redis_space.client() as r:
        r.set(redis_space.prefix.encode() + b"sess:broken\xff", raw)
        r.set(redis_space.prefix + "sess:good", b'{"cookie":{}}')
    address = redis_space.address() + "&preset=connect-redis"
    done = json.loads(
        cli("cleanup", "--store", address, "--invalid", "--yes", "--format", "json").stdout
    )
    assert done["deleted"] == 1
    cli("restore", done["archive"], "--store", address)
    with redis_space.client() as r:
        assert r.get(redis_space.prefix.encode() + b"sess:broken\xff") == raw


def _java_long(value: int) -> bytes:
    return b"\xac\xed\x00\x05sr\x00\x0ejava.lang.Long" + b"x" * 30 + struct.pack(">q", value)


def _java_int(value: int) -> bytes:
    return b"\xac\xed\x00\x05sr\x00\x11java.lang.Integer" + b"y" * 20 + struct.pack(">i", value)


def _java_bytes(raw: bytes) -> bytes:
    return b"\xac\xed\x00\x05t" + struct.pack(">H", len(raw)) + raw


def test_a_spring_index_member_that_is_not_utf8_names_its_own_key(cli, redis_space):
    """A member read with U+FFFD for its bad bytes named a key that is never there: the member
    of a live session went as dead with --orphans. A principal that is not UTF-8 shows."""
    ns = redis_space.prefix + "spring:session:"
    now = int(time.time() * 1000)
    index = f"{ns}index:{PRINCIPAL_INDEX}:".encode() + b"ann\xff"
    with redis_space.client() as r:
        for sid in (b"abc\xffdef0123", b"abcdef012345"):
            key = ns.encode() + b"sessions:" + sid
            r.hset(
                key,
                mapping={
                    "creationTime": _java_long(now),
                    "lastAccessedTime": _java_long(now),
                    "maxInactiveInterval": _java_int(1800),
                    f"sessionAttr:{PRINCIPAL_INDEX}": _java_bytes(b"ann\xff"),
                },
            )
            r.expire(key, 2000)
            r.sadd(index, _java_bytes(sid))
        r.sadd(index, _java_bytes(b"gone\xff0123456"))
    address = redis_space.address("spring:session:") + "&preset=spring-redis"
    listed = json.loads(cli("list", "--store", address, "--format", "json").stdout)
    assert len(listed) == 1
    cli("list", "--store", address)
    plan = json.loads(
        cli(
            "cleanup", "--store", address, "--orphans", "--dry-run", "--yes", "--format", "json"
        ).stdout
    )
    assert plan["selected"] == 1
    cli("cleanup", "--store", address, "--orphans", "--yes")
    with redis_space.client() as r:
        assert r.smembers(index) == {_java_bytes(b"abc\xffdef0123"), _java_bytes(b"abcdef012345")}


def test_a_lock_of_a_live_request_on_this_host_stays_however_long_it_runs(
    cli, redis_space, monkeypatch, tmp_path
):
    """A `_LOCK` key idle longer than STALE_LOCK_S went with --orphans even when its PHP
    process, on this host, was running. A pid now run by another program (reused) goes by idle
    time, as another host's lock does."""
    import subprocess

    from sessionctl.stores import redis as redis_store

    monkeypatch.setattr(redis_store, "STALE_LOCK_S", 0)
    fake_php = tmp_path / "php-fpm8.2"  # /proc/PID/comm names the program: php-fpm8.2
    shutil.copy(shutil.which("sleep"), fake_php)
    php = subprocess.Popen([str(fake_php), "60"])
    base = redis_space.prefix + "PHPREDIS_SESSION:"
    here = socket.gethostname()
    try:
        with redis_space.client() as r:
            for sid, holder in (
                ("live1", f"{here}|{php.pid}"),
                ("reused1", f"{here}|{os.getpid()}"),  # this python: not PHP
                ("other1", f"elsewhere.example|{php.pid}"),
            ):
                r.set(base + sid, b"x|", ex=600)
                r.set(base + sid + "_LOCK", holder)
        time.sleep(1.1)  # idle 1 s > STALE_LOCK_S
        address = redis_space.address() + "&preset=phpredis"
        done = json.loads(
            cli("cleanup", "--store", address, "--orphans", "--yes", "--format", "json").stdout
        )
        assert done["deleted"] == 2
        assert redis_space.keys("*_LOCK") == ["PHPREDIS_SESSION:live1_LOCK"]
    finally:
        php.kill()
        php.wait()


def test_restore_into_a_server_at_maxmemory_counts_what_went_in_and_refuses_the_rest(
    cli, tmp_path, state_dir
):
    """An OOM reply failed the whole restore (exit 3) after writing part of it, with no count
    and no audit entry; now each entry not written is named and the rest are counted."""
    import redis as redis_py

    with own_server(tmp_path, "--maxmemory", "3mb", "--maxmemory-policy", "noeviction") as (
        port,
        _proc,
        client,
    ):
        pipe = client.pipeline(transaction=False)
        for n in range(2000):
            pipe.set(f"sess:s{n:05d}", json.dumps({"cookie": {}, "pad": "x" * 400}))
        pipe.execute()
        address = f"redis://127.0.0.1:{port}/0?prefix=sess:"
        done = json.loads(
            cli("cleanup", "--store", address, "--all", "--yes", "--format", "json").stdout
        )
        assert done["deleted"] == 2000
        filled = 0
        with pytest.raises(redis_py.OutOfMemoryError):
            while True:
                client.set(f"fill:{filled}", "y" * 1000)
                filled += 1
        client.delete(*[f"fill:{n}" for n in range(200)])
        result = cli("restore", done["archive"], "--store", address, "--format", "json", code=1)
        report = json.loads(result.stdout)
        went_in = len(list(client.scan_iter(match="sess:*")))
        assert 0 < went_in < 2000
        assert report["restored"] == went_in and report["refused"] == 2000 - went_in
        assert {r["reason"] for r in report["refusals"]} == {
            "Redis is at its maxmemory: not written"
        }


def test_the_lock_of_a_run_killed_on_this_host_is_taken_over_a_live_ones_is_not(cli, redis_space):
    """A SIGKILLed run left its cross-host lock for a minute and every run meanwhile exited 4
    saying a cleanup was running; a live run's lock (or another host's) still means exit 4."""
    import hashlib
    import subprocess
    import sys

    from sessionctl.stores import parse_address

    with redis_space.client() as r:
        r.set(redis_space.prefix + "sess:a", b'{"cookie":{}}')
    address = redis_space.address()
    identity = parse_address(address).identity
    lock_key = "sessionctl:lock:" + hashlib.sha1(identity.encode()).hexdigest()[:20]
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    here = socket.gethostname()
    try:
        with redis_space.client() as r:
            for holder in (f"{here}|{os.getpid()}|x", f"elsewhere|{dead.stdout.strip()}|x"):
                r.set(lock_key, holder, px=60_000)
                assert "another cleanup" in one_line_error(
                    cli("cleanup", "--store", address, "--no-ttl", "--yes", code=4)
                )
            r.set(lock_key, f"{here}|{dead.stdout.strip()}|x", px=60_000)
        cli("cleanup", "--store", address, "--no-ttl", "--yes")
        assert redis_space.keys() == []
        with redis_space.client() as r:
            assert r.exists(lock_key) == 0
    finally:
        with redis_space.client() as r:
            r.unlink(lock_key)


def test_a_server_that_never_answers_is_one_line_in_seconds_not_minutes(cli, redis_server):
    """A TLS address on a plain Redis port (the handshake gets no answer) or a listener that
    never speaks took 2 x statement_timeout (two minutes) before its line."""
    import socket as sockets
    import threading
    from urllib.parse import urlsplit

    listener = sockets.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted = []

    def accept() -> None:
        # Until the listener is closed at the end of the test (accept then raises).
        with contextlib.suppress(OSError):
            for _ in range(4):
                accepted.append(listener.accept())

    threading.Thread(target=accept, daemon=True).start()
    plain = urlsplit(redis_server)
    silent = f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
    tls = f"rediss://{plain.hostname}:{plain.port or 6379}/0"
    try:
        for address in (silent, tls):
            started = time.monotonic()
            line = one_line_error(cli("list", "--store", address, code=3))
            assert time.monotonic() - started < 20, line
            assert "cannot reach Redis" in line
    finally:
        listener.close()
        for conn, _ in accepted:
            conn.close()


@pytest.mark.parametrize(
    "address",
    [
        "redis://u:Ca?SECRETnary@127.0.0.1:6379/0",
        "redis://u:12345/SECRETnary@127.0.0.1:6379/0",
        "redis://u:123?prefix=SECRETnary@127.0.0.1:6379/0",
        "rediss://u:Ca#SECRETnary@127.0.0.1:6379/0",
    ],
)
def test_a_password_with_unencoded_separators_is_refused_without_echoing_it(cli, address):
    """`?` or `/` in a password ended the host part early and its tail was printed as an
    unknown parameter or a database that is not a number."""
    line = one_line_error(cli("list", "--store", address, code=2))
    assert "SECRET" not in line and "nary" not in line
    assert "percent-encode" in line


def test_a_prefix_with_an_encoded_at_sign_still_works(cli, redis_space):
    with redis_space.client() as r:
        r.set(redis_space.prefix + "a@b:sess:x", b'{"cookie":{}}')
    listed = json.loads(
        cli("list", "--store", redis_space.address("a%40b:"), "--format", "json").stdout
    )
    assert [s["key"] for s in listed] == [redis_space.prefix + "a@b:sess:x"]
