"""Redis stores against the real server, written by the real frameworks (tests/redisfix.py).

Each test has a key prefix of its own (`redis_space`); unrelated keys sit beside the sessions and
no cleanup may touch them. connect-redis sessions written with disableTTL go with --no-ttl and
connect-redis still loads the rest; Django's pickles are never unpickled and shown redacted;
Spring's dead principal-index members and phpredis's crashed `_LOCK` keys go with --orphans while
live ones stay; a key changed between selection and removal stays; a password never shows; two
runs at once: one exits 4; a dry run changes no key (DUMP before and after).
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import os
import pickle
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pg import unavailable
from redisfix import (
    PRINCIPAL_INDEX,
    connect_redis_load,
    connect_redis_store,
    django_cache_load,
    django_cache_store,
    flask_session_redis_load,
    flask_session_redis_store,
    phpredis_crashed_lock,
    phpredis_load,
    phpredis_store,
    put_unrelated_keys,
    spring_redis_store,
)
from sessionctl.domain.errors import ExitCode, SessionctlError
from sessionctl.stores import open_store, parse_address
from sessionctl.stores.base import Candidate

SESSIONCTL = str(Path(sys.executable).parent / "sessionctl")


def archived(state_dir: Path) -> list[dict]:
    entries = []
    for path in sorted(state_dir.rglob("*.ndjson.gz")):
        lines = gzip.decompress(path.read_bytes()).decode().splitlines()
        entries.extend(json.loads(line) for line in lines[1:])
    return entries


def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


def dump_all(space) -> dict:
    """Every key under the space: its DUMP and whether it has a TTL."""
    with space.client() as r:
        keys = sorted(set(r.scan_iter(match=space.prefix + "*", count=1000)))
        return {k: (r.dump(k), r.pttl(k) == -1) for k in keys}


def run_json(cli, *args, code=0) -> dict:
    return json.loads(cli(*args, "--format", "json", code=code).stdout)


# --- connect-redis ---------------------------------------------------------------------------


def test_connect_redis_no_ttl_sessions_go_with_no_ttl_and_the_rest_still_load(
    cli, redis_space, node_modules, state_dir
):
    written = connect_redis_store(
        redis_space,
        [
            3600,
            {"expires_in": 600, "disable_ttl": True},
            {"expires_in": -3600, "disable_ttl": True},
            {"expires_in": 1, "browser_session": True},
        ],
    )
    live, no_ttl_live, no_ttl_dead, browser = written.ids
    unrelated = put_unrelated_keys(redis_space)
    address = redis_space.address()

    plan = run_json(cli, "cleanup", "--store", address, "--expired", "--dry-run")
    assert [s["id"] for s in plan["sessions"]] == [no_ttl_dead]  # its cookie says expired
    plan = run_json(cli, "cleanup", "--store", address, "--no-ttl", "--dry-run")
    assert sorted(s["id"] for s in plan["sessions"]) == sorted([no_ttl_live, no_ttl_dead])

    done = run_json(cli, "cleanup", "--store", address, "--no-ttl", "--yes")
    assert done["deleted"] == 2 and done["by_reason"] == {"no_ttl": 2}
    keys = set(redis_space.keys())
    assert keys == {"sess:" + live, "sess:" + browser, *unrelated}
    loaded = connect_redis_load(redis_space, written.ids)
    assert loaded[live] is not None and loaded[browser] is not None
    assert loaded[no_ttl_live] is None and loaded[no_ttl_dead] is None
    entries = archived(state_dir)
    assert sorted(e["id"] for e in entries) == sorted([no_ttl_live, no_ttl_dead])
    assert all(e["reasons"] == ["no_ttl"] for e in entries)

    # Restore puts them back as they were archived (no TTL), never over a key that exists.
    archive = done["archive"]
    restored = run_json(cli, "restore", archive, "--store", address)
    assert restored["restored"] == 2, restored
    assert redis_space.ttl("sess:" + no_ttl_live) == -1
    assert connect_redis_load(redis_space, [no_ttl_live])[no_ttl_live] is not None
    again = run_json(cli, "restore", archive, "--store", address)
    assert again["restored"] == 0 and again["skipped"] == 2


def test_restore_gives_a_session_the_ttl_it_had_left(cli, redis_space, node_modules):
    written = connect_redis_store(redis_space, [600])
    done = run_json(cli, "cleanup", "--store", redis_space.address(), "--all", "--yes")
    assert done["deleted"] == 1 and redis_space.keys() == []
    time.sleep(1.1)
    run_json(cli, "restore", done["archive"], "--store", redis_space.address())
    ttl = redis_space.ttl("sess:" + written.ids[0])
    assert 590 <= ttl <= 599, ttl  # what it had left, not a fresh 600


def test_invalid_values_and_wrongtype_keys_are_invalid_sessions_not_crashes(
    cli, redis_space, node_modules
):
    written = connect_redis_store(redis_space, [3600])
    with redis_space.client() as r:
        r.set(redis_space.prefix + "sess:broken", b"{not json", ex=3600)
        r.hset(redis_space.prefix + "sess:ahash", mapping={"a": "1"})
    address = redis_space.address()
    listed = run_json(cli, "list", "--store", address)
    status = {s["key"].rpartition(":")[2]: s["status"] for s in listed}
    assert status == {written.ids[0]: "active", "broken": "invalid", "ahash": "invalid"}
    done = run_json(cli, "cleanup", "--store", address, "--invalid", "--yes", code=None)
    assert done["deleted"] == 1 and done["failed"] == 1  # a hash is not compared: left
    assert sorted(redis_space.keys()) == sorted(["sess:" + written.ids[0], "sess:ahash"])


# --- Django: pickle, never unpickled ---------------------------------------------------------


def test_django_pickles_are_never_unpickled_and_shown_redacted(
    cli, redis_space, state_dir, monkeypatch
):
    written = django_cache_store(
        redis_space, [1209600, {"expires_in": 300, "data": {"cart": ["secret-item-42"]}}]
    )
    unrelated = put_unrelated_keys(redis_space)
    values = [redis_space.get(k) for k in written.extra["keys"]]

    def refuse(*_args, **_kwargs):
        raise AssertionError("sessionctl unpickled a stored value")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    address = redis_space.address()
    outputs = []
    for args in (
        ["list"],
        ["list", "--fields", "id,value_b64,ttl"],
        ["stats"],
        ["inspect", written.ids[1]],
        ["validate"],
    ):
        result = cli(*args, "--store", address, code=None)
        assert result.exit_code == 0, result.stderr
        outputs += [result.stdout, result.stderr]
    shown = "\n".join(outputs)
    assert "secret-item-42" not in shown
    for value in values:
        assert base64.b64encode(value).decode() not in shown
    assert "redacted" in shown
    listed = run_json(cli, "list", "--store", address)
    assert sorted(s["id"] for s in listed) == sorted(written.ids)

    done = run_json(cli, "cleanup", "--store", address, "--all", "--yes")
    assert done["deleted"] == 2
    assert redis_space.keys() == unrelated  # --all: the preset's keys and nothing else
    monkeypatch.undo()
    run_json(cli, "restore", done["archive"], "--store", address)
    assert django_cache_load(redis_space, written.ids)[written.ids[1]]["cart"] == ["secret-item-42"]


# --- Spring: principal index ------------------------------------------------------------------


def _members(space, principal: str) -> set[str]:
    from sessionctl.stores.redis import java_value

    key = f"{space.prefix}spring:session:index:{PRINCIPAL_INDEX}:{principal}"
    with space.client() as r:
        return {java_value(m) for m in r.smembers(key)}


def test_spring_dead_index_members_go_with_orphans_and_live_ones_stay(cli, redis_space):
    written = spring_redis_store(
        redis_space,
        [
            {"expires_in": 1800, "principal": "ann"},
            {"expires_in": -60, "principal": "ann"},  # expired a minute ago: hash still there
            {"expires_in": -7200, "principal": "ann"},  # long gone: a dead member
            {"expires_in": -9000, "principal": "bo"},  # a set holding only a dead member
        ],
    )
    live, recent, gone, gone_bo = written.ids
    unrelated = put_unrelated_keys(redis_space)
    address = redis_space.address()
    figures = run_json(cli, "stats", "--store", address)["store_figures"]
    assert figures["preset"] == "spring-redis"
    assert figures["index_sets"] == 2 and figures["dead_index_members"] == 2
    before = dump_all(redis_space)

    plan = run_json(cli, "cleanup", "--store", address, "--orphans", "--dry-run")
    assert sorted(s["id"] for s in plan["sessions"]) == sorted([gone, gone_bo])
    assert dump_all(redis_space) == before

    done = run_json(cli, "cleanup", "--store", address, "--orphans", "--yes")
    assert done["deleted"] == 2 and done["by_reason"] == {"orphan": 2}
    assert _members(redis_space, "ann") == {live, recent}
    assert _members(redis_space, "bo") == set()
    keys = set(redis_space.keys())
    assert {f"spring:session:sessions:{i}" for i in (live, recent)} <= keys
    assert set(unrelated) <= keys
    figures = run_json(cli, "stats", "--store", address)["store_figures"]
    assert figures["dead_index_members"] == 0


def test_spring_expired_session_goes_with_its_expires_key_and_index_member(cli, redis_space):
    written = spring_redis_store(
        redis_space,
        [{"expires_in": 1800, "principal": "ann"}, {"expires_in": -60, "principal": "ann"}],
    )
    live, recent = written.ids
    done = run_json(cli, "cleanup", "--store", redis_space.address(), "--expired", "--yes")
    assert [s["id"] for s in done["sessions"]] == [recent] and done["deleted"] == 1
    assert _members(redis_space, "ann") == {live}
    assert not [k for k in redis_space.keys("*") if recent in k]


def test_caps_per_user_through_springs_principal_index(cli, redis_space):
    written = spring_redis_store(
        redis_space,
        [
            {"expires_in": 600, "principal": "ann"},
            {"expires_in": 1200, "principal": "ann"},
            {"expires_in": 1800, "principal": "ann"},
            {"expires_in": 900, "principal": "bo"},
        ],
    )
    oldest, middle, newest, bo = written.ids
    address = redis_space.address()
    listed = {s["id"]: s["group"] for s in run_json(cli, "list", "--store", address)}
    assert listed == {oldest: "ann", middle: "ann", newest: "ann", bo: "bo"}
    done = run_json(cli, "cleanup", "--store", address, "--max-per-group", "1", "--yes")
    assert sorted(s["id"] for s in done["sessions"]) == sorted([oldest, middle])
    assert _members(redis_space, "ann") == {newest}
    assert _members(redis_space, "bo") == {bo}


# --- phpredis: lock keys --------------------------------------------------------------------


def test_phpredis_crashed_lock_keys_go_with_orphans_and_live_locks_stay(cli, redis_space):
    written = phpredis_store(redis_space, [1440, 1440, 1440])
    crashed, held, with_expiry = written.ids
    phpredis_crashed_lock(redis_space, crashed)
    with redis_space.client() as r:
        # A request running now, on this host (this very process), without expiry; and one
        # whose lock has an expiry (lock_expire set): both live.
        r.set(
            f"{redis_space.prefix}PHPREDIS_SESSION:{held}_LOCK",
            f"{socket.gethostname()}|{os.getpid()}",
        )
        r.set(f"{redis_space.prefix}PHPREDIS_SESSION:{with_expiry}_LOCK", "otherhost|1", ex=30)
    unrelated = put_unrelated_keys(redis_space)
    address = redis_space.address()
    figures = run_json(cli, "stats", "--store", address)["store_figures"]
    assert figures["lock_keys"] == 3 and figures["lock_keys_without_expiry"] == 2
    assert figures["stale_lock_keys"] == 1
    listed = run_json(cli, "list", "--store", address)
    assert sorted(s["id"] for s in listed) == sorted(written.ids)  # locks are not sessions

    done = run_json(cli, "cleanup", "--store", address, "--orphans", "--yes")
    assert done["deleted"] == 1 and done["sessions"][0]["id"] == crashed
    keys = set(redis_space.keys())
    assert f"PHPREDIS_SESSION:{crashed}_LOCK" not in keys
    assert {f"PHPREDIS_SESSION:{held}_LOCK", f"PHPREDIS_SESSION:{with_expiry}_LOCK"} <= keys
    assert {f"PHPREDIS_SESSION:{i}" for i in written.ids} | set(unrelated) <= keys
    assert phpredis_load(redis_space, [crashed])[crashed] == {"user_id": 1}


# --- compare-and-delete ------------------------------------------------------------------------


def test_a_key_changed_or_touched_after_selection_stays(redis_space, node_modules):
    written = connect_redis_store(
        redis_space,
        [
            {"expires_in": 600, "disable_ttl": True},
            {"expires_in": 600, "disable_ttl": True},
            {"expires_in": 600, "disable_ttl": True},
            3600,
            3600,
        ],
    )
    spring = spring_redis_store(redis_space, [{"expires_in": 900, "principal": "ann"}] * 2)
    store = open_store(parse_address(redis_space.address("sess:")))
    spring_store = open_store(parse_address(redis_space.address("spring:session:")))
    try:
        records = {r.data["sid"]: r for r in store.iter_records()}
        hashes = {r.data["id"]: r for r in spring_store.iter_records()}
        cands = [Candidate(r.key, store.fingerprint(r), i) for i, r in records.items()]
        hash_cands = [Candidate(r.key, r.version, i) for i, r in hashes.items()]
        same, rewritten, touched, ttl_kept, ttl_renewed = written.ids
        keep_hash, drop_hash = spring.ids
        with redis_space.client() as r:
            value = r.get(redis_space.prefix + "sess:" + rewritten)
            r.set(
                redis_space.prefix + "sess:" + rewritten, value.replace(b'"cookie"', b'"cookie" ')
            )
            r.expire(redis_space.prefix + "sess:" + touched, 86400)  # connect-redis's touch()
            r.expire(redis_space.prefix + "sess:" + ttl_renewed, 86400)
            r.hset(
                redis_space.prefix + f"spring:session:sessions:{keep_hash}",
                "lastAccessedTime",
                b"\x00changed",
            )
        archived_keys = []
        outcome = store.remove(cands, lambda recs: archived_keys.extend(x.key for x in recs))
        removed = sorted(r.data["sid"] for r in outcome.removed)
        assert removed == sorted([same, ttl_kept])
        assert sorted(k.rpartition(":")[2] for k in outcome.changed) == sorted(
            [rewritten, touched, ttl_renewed]
        )
        assert sorted(k.rpartition(":")[2] for k in archived_keys) == removed
        outcome = spring_store.remove(hash_cands, lambda recs: None)
        assert [r.data["id"] for r in outcome.removed] == [drop_hash]
        assert [k.rpartition(":")[2] for k in outcome.changed] == [keep_hash]
    finally:
        store.close()
        spring_store.close()
    keys = set(redis_space.keys())
    assert {"sess:" + i for i in (rewritten, touched, ttl_renewed)} <= keys
    assert not {"sess:" + i for i in (same, ttl_kept)} & keys
    assert f"spring:session:sessions:{keep_hash}" in keys


# --- dry run, locks, bad input -----------------------------------------------------------------


def test_a_dry_run_changes_no_key(cli, redis_space, node_modules):
    connect_redis_store(
        redis_space,
        [3600, {"expires_in": -60, "disable_ttl": True}, {"expires_in": 60, "disable_ttl": True}],
    )
    with redis_space.client() as r:
        r.set(redis_space.prefix + "sess:broken", b"{", ex=600)
    put_unrelated_keys(redis_space)
    before = dump_all(redis_space)
    for flags in (
        ["--expired", "--invalid", "--no-ttl"],
        ["--all"],
        ["--max-count", "3"],
        ["--orphans", "--expired"],
    ):
        plan = run_json(
            cli, "cleanup", "--store", redis_space.address(), *flags, "--dry-run", "--yes"
        )
        assert plan["dry_run"] and plan["selected"] >= 1 and plan["deleted"] == 0
    assert dump_all(redis_space) == before


def test_two_runs_at_once_one_exits_4(cli, redis_space, node_modules, tmp_path):
    connect_redis_store(redis_space, [{"expires_in": 60, "disable_ttl": True}])
    address = redis_space.address()
    other = open_store(parse_address(address))
    try:
        # Another host's run (its own state folder): it holds the lock every host sees.
        with other.cross_host_lock(parse_address(address).identity):
            env = {"SESSIONCTL_STATE_DIR": str(tmp_path / "elsewhere")}
            result = cli("cleanup", "--store", address, "--no-ttl", "--yes", env=env, code=4)
            assert "another cleanup" in one_line(result.stderr)
            same = other.cross_host_lock(parse_address(address).identity)
            with pytest.raises(SessionctlError) as second, same:
                pass
            assert second.value.code == ExitCode.BUSY
        assert len(redis_space.keys()) == 1
        run_json(cli, "cleanup", "--store", address, "--no-ttl", "--yes")
        assert redis_space.keys() == []
        import hashlib

        identity = parse_address(address).identity
        lock_key = "sessionctl:lock:" + hashlib.sha1(identity.encode()).hexdigest()[:20]
        with redis_space.client() as r:  # released: no lock key left behind
            assert r.exists(lock_key) == 0
    finally:
        other.close()


def test_server_down_is_one_line_exit_3(cli):
    line = one_line(cli("list", "--store", "redis://127.0.0.1:1/0", code=3).stderr)
    assert "127.0.0.1:1" in line and "Traceback" not in line


CANARY = "Canary-redis-pw-" + secrets.token_hex(4)


def test_a_password_never_appears_and_a_wrong_one_is_one_line(
    cli, redis_space, node_modules, tmp_path, state_dir, monkeypatch
):
    """An ACL user of the test's own (the server's default user is left alone)."""
    user = "sctest_" + secrets.token_hex(4)
    with redis_space.client() as r:
        r.execute_command("ACL", "SETUSER", user, "on", ">" + CANARY, "~*", "&*", "+@all")
    try:
        connect_redis_store(redis_space, [3600, {"expires_in": -60, "disable_ttl": True}])
        host = f"redis://{user}@127.0.0.1:{redis_space.port}/{redis_space.db}"
        address = f"{host}?prefix={redis_space.prefix}"
        config = tmp_path / "config.toml"
        config.write_text(f'[stores.web]\naddress = "{address}"\npassword_env = "SCTEST_PW"\n')
        seen = []
        monkeypatch.setenv("SCTEST_PW", CANARY)
        for args in (
            ["stats"],
            ["list"],
            ["cleanup", "--no-ttl", "--dry-run", "--explain"],
            ["cleanup", "--no-ttl", "--yes"],
            ["history"],
        ):
            result = cli("--config", config, *args, "--store", "web")
            seen += [result.stdout, result.stderr]
        assert len(redis_space.keys()) == 1
        monkeypatch.setenv("SCTEST_PW", "wrong-" + CANARY)
        result = cli("--config", config, "stats", "--store", "web", code=3)
        line = one_line(result.stderr)
        assert "refused the password" in line
        seen += [result.stdout, result.stderr]
        monkeypatch.delenv("SCTEST_PW")
        monkeypatch.setenv("REDISCLI_AUTH", CANARY)
        result = cli("stats", "--store", address)  # redis-cli's own variable
        seen += [result.stdout, result.stderr]
        inline = address.replace(f"{user}@", f"{user}:{CANARY}@")
        result = cli("list", "--store", inline)
        seen += [result.stdout, result.stderr]
        files = [p for p in state_dir.rglob("*") if p.is_file()]
        assert any(p.suffix == ".gz" for p in files)
        for path in files:
            data = path.read_bytes()
            if path.suffix == ".gz":
                data = gzip.decompress(data)
            seen.append(data.decode("utf-8", "replace"))
        assert not [text for text in seen if CANARY in text]
    finally:
        with redis_space.client() as r:
            r.execute_command("ACL", "DELUSER", user)


# --- servers of the test's own: a replica, a server that goes away -----------------------------


def _free_port() -> int:
    """A loopback port free now, with its cluster bus port (port + 10000) free too and below
    65536 (an ephemeral port from the system may have neither)."""
    import random

    for _ in range(200):
        port = random.randint(20000, 30000)
        try:
            with socket.socket() as one, socket.socket() as bus:
                one.bind(("127.0.0.1", port))
                bus.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port
    raise AssertionError("no free loopback port pair")


@contextlib.contextmanager
def own_server(tmp_path: Path, *extra: str):
    """A redis-server of the test's own on a loopback port (no persistence)."""
    binary = shutil.which("redis-server")
    if not binary:
        unavailable("redis-server is not installed: apt-get install redis-server")
    port = _free_port()
    folder = tmp_path / f"redis-{port}"
    folder.mkdir()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(
        [*argv, "--dir", str(folder), *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import redis

    client = redis.Redis(port=port, socket_connect_timeout=1, socket_timeout=10)
    try:
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.RedisError:
                if proc.poll() is not None:
                    raise AssertionError(f"redis-server {' '.join(extra)} exited") from None
                time.sleep(0.05)
        yield port, proc, client
    finally:
        client.close()
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def _sessions_without_ttl(client, n: int, prefix: str = "sess:") -> None:
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        value = {"cookie": {"originalMaxAge": None, "expires": None}, "n": i}
        pipe.set(f"{prefix}s{i:06d}", json.dumps(value))
    pipe.execute()


def test_a_read_only_replica_is_one_line_exit_3_and_nothing_changes(cli, tmp_path, state_dir):
    with own_server(tmp_path) as (primary, _, client):
        _sessions_without_ttl(client, 5)
        with own_server(tmp_path, "--replicaof", "127.0.0.1", str(primary)) as (port, _, rep):
            for _ in range(200):
                if rep.dbsize() == 5:
                    break
                time.sleep(0.05)
            assert rep.dbsize() == 5
            result = cli(
                "cleanup", "--store", f"redis://127.0.0.1:{port}/0", "--no-ttl", "--yes", code=3
            )
            line = one_line(result.stderr)
            assert "read-only replica" in line and f"127.0.0.1:{port}" in line
            assert client.dbsize() == 5 and not archived(state_dir)


def test_a_server_gone_mid_cleanup_stops_with_the_report_and_all_removed_is_archived(
    tmp_path, state_dir
):
    with own_server(tmp_path) as (port, proc, client):
        _sessions_without_ttl(client, 3000)
        argv = [
            SESSIONCTL, "cleanup", "--store", f"redis://127.0.0.1:{port}/0", "--no-ttl", "--yes",
            "--batch-size", "500", "--pause", "0.4s", "--format", "json",
        ]  # fmt: skip
        env = {**os.environ, "SESSIONCTL_STATE_DIR": str(state_dir)}
        run = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        for _ in range(200):
            if client.dbsize() < 3000:
                break
            time.sleep(0.02)
        time.sleep(0.2)
        proc.kill()
        out, err = run.communicate(timeout=60)
    assert run.returncode == 3, (out, err)
    report = json.loads(out)
    assert 0 < report["deleted"] < 3000
    assert "stopped after removing" in one_line(err) and "Traceback" not in err
    removed = {e["key"] for e in archived(state_dir)}
    assert len(removed) >= report["deleted"]


# --- addresses, other frameworks, a socket ---------------------------------------------------


def test_addresses_show_no_password_and_refuse_what_they_do_not_take():
    address = parse_address("redis://app:s3cret@Cache.example:6380/2?prefix=web:")
    assert address.kind == "redis" and address.secret == "s3cret"
    assert address.display == "redis://app@cache.example:6380/2?prefix=web:"
    assert address.identity == "redis://cache.example:6380/2?prefix=web:"
    assert "s3cret" not in repr(address) and "s3cret" not in address.pinned
    assert parse_address("rediss://cache:6379").display == "rediss://cache:6379/0"
    sock = parse_address("unix:///run/redis/redis.sock?db=3&prefix=sess:")
    assert sock.display == "unix:///run/redis/redis.sock?db=3&prefix=sess:"
    assert sock.param("path") == "/run/redis/redis.sock" and sock.param("db") == "3"
    for bad, words in (
        ("redis://cache/x", "not a number"),
        ("redis://cache/0?table=x", "unknown parameter 'table'"),
        ("redis://cache/0?preset=nosuch", "unknown Redis preset"),
        ("redis:///0", "give redis://HOST"),
    ):
        with pytest.raises(SessionctlError) as caught:
            parse_address(bad)
        assert caught.value.code == ExitCode.USAGE and words in caught.value.message


def test_no_ttl_and_orphans_are_refused_where_a_store_has_neither(cli, tmp_path):
    store = tmp_path / "s.json"
    store.write_text('[{"id": "a", "expires": "2000-01-01T00:00:00Z"}]')
    for flag in ("--no-ttl", "--orphans"):
        line = one_line(cli("cleanup", "--store", store, flag, "--dry-run", code=2).stderr)
        assert flag in line


def test_flask_session_values_are_opaque_redacted_and_come_back(cli, redis_space):
    written = flask_session_redis_store(
        redis_space, [3600, {"expires_in": 120, "data": {"token": "flask-secret-9"}}]
    )
    unrelated = put_unrelated_keys(redis_space)
    address = redis_space.address()
    listed = run_json(cli, "list", "--store", address)
    assert sorted(s["id"] for s in listed) == sorted(written.ids)
    assert all(s["status"] == "active" and s["expires_in_s"] > 0 for s in listed)
    shown = cli("inspect", written.ids[1], "--store", address).stdout
    assert "flask-secret-9" not in shown and "redacted" in shown
    done = run_json(cli, "cleanup", "--store", address, "--all", "--yes")
    assert done["deleted"] == 2 and redis_space.keys() == unrelated
    run_json(cli, "restore", done["archive"], "--store", address)
    loaded = flask_session_redis_load(redis_space, written.ids)
    assert loaded[written.ids[1]]["token"] == "flask-secret-9"


def test_a_unix_socket_address(cli, tmp_path, state_dir):
    sock = tmp_path / "redis.sock"
    with own_server(tmp_path, "--unixsocket", str(sock), "--unixsocketperm", "700") as (_, _, c):
        _sessions_without_ttl(c, 3)
        address = f"unix://{sock}?db=0"
        assert len(run_json(cli, "list", "--store", address)) == 3
        done = run_json(cli, "cleanup", "--store", address, "--no-ttl", "--yes")
        assert done["deleted"] == 3 and c.dbsize() == 0


# --- Redis Cluster ----------------------------------------------------------------------------


@contextlib.contextmanager
def own_cluster(tmp_path: Path):
    """Three primaries of the test's own on loopback ports, joined by redis-cli --cluster."""
    with contextlib.ExitStack() as stack:
        nodes = [
            stack.enter_context(
                own_server(
                    tmp_path,
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "5000",
                )  # fmt: skip
            )
            for _ in range(3)
        ]
        ports = [port for port, _, _ in nodes]
        done = subprocess.run(
            ["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in ports],
             "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        import redis

        for _ in range(200):
            states = [c.cluster("info").get("cluster_state") for _, _, c in nodes]
            if states == ["ok"] * 3:
                break
            time.sleep(0.05)
        client = redis.RedisCluster(host="127.0.0.1", port=ports[0], socket_timeout=10)
        try:
            yield ports, client, [c for _, _, c in nodes]
        finally:
            client.close()


def test_a_cluster_every_primarys_keys_are_seen_and_cleaned(cli, tmp_path, state_dir):
    with own_cluster(tmp_path) as (ports, client, nodes):
        now = time.time()
        ids = {"ttl": [], "no_ttl": [], "expired": []}
        for n in range(60):
            what = ("ttl", "no_ttl", "expired")[n % 3]
            expires = now + (-3600 if what == "expired" else 3600)
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(expires))
            value = json.dumps({"cookie": {"expires": stamp}, "n": n})
            sid = f"c{n:03d}"
            client.set(f"sess:{sid}", value, ex=3600 if what == "ttl" else None)
            ids[what].append(sid)
        client.set("cache:views:home", "<html>")
        counts = [c.dbsize() for c in nodes]
        assert all(counts), counts  # every primary holds some
        address = f"redis://127.0.0.1:{ports[1]}/0"
        stats = run_json(cli, "stats", "--store", address)
        assert stats["total"] == 60 and stats["expired"] == 20
        assert stats["store_figures"]["sessions_without_ttl"] == 40
        plan = run_json(cli, "cleanup", "--store", address, "--expired", "--dry-run")
        assert sorted(s["id"] for s in plan["sessions"]) == ids["expired"]
        done = run_json(cli, "cleanup", "--store", address, "--no-ttl", "--yes")
        assert done["deleted"] == 40
        left = sorted(k.decode() for k in client.scan_iter(match="*", count=1000))
        assert left == sorted(["cache:views:home", *[f"sess:{i}" for i in ids["ttl"]]])
        run_json(cli, "restore", done["archive"], "--store", address)
        assert client.ttl(f"sess:{ids['no_ttl'][0]}") == -1
        assert sum(c.dbsize() for c in nodes) == 61
        # One run across hosts: the lock key is on one node of the cluster.
        other = open_store(parse_address(address))
        try:
            with other.cross_host_lock(parse_address(address).identity):
                env = {"SESSIONCTL_STATE_DIR": str(tmp_path / "elsewhere")}
                cli("cleanup", "--store", address, "--no-ttl", "--yes", env=env, code=4)
        finally:
            other.close()
        assert sum(c.dbsize() for c in nodes) == 61


def test_a_cluster_spring_layout_orphans_and_removal_across_slots(cli, tmp_path):
    from sessionctl.stores.redis import _java_string

    with own_cluster(tmp_path) as (ports, client, _nodes):
        now_ms = int(time.time() * 1000)
        ns = "spring:session:"
        index = f"{ns}index:{PRINCIPAL_INDEX}:ann"
        from redisfix import java_serialized_integer, java_serialized_long

        for sid, last in (("0000live-0000", now_ms), ("0000old1-0000", now_ms - 3_600_000)):
            client.hset(
                f"{ns}sessions:{sid}",
                mapping={
                    "creationTime": java_serialized_long(last),
                    "lastAccessedTime": java_serialized_long(last),
                    "maxInactiveInterval": java_serialized_integer(1800),
                },
            )
            client.expire(f"{ns}sessions:{sid}", 2100)
            client.set(f"{ns}sessions:expires:{sid}", "", ex=1800)
            client.sadd(index, _java_string(sid))
        client.sadd(index, _java_string("0000gone-0000"))
        address = f"redis://127.0.0.1:{ports[0]}/0"
        done = run_json(cli, "cleanup", "--store", address, "--orphans", "--expired", "--yes")
        assert done["by_reason"] == {"orphan": 1, "expired": 1}, done
        assert {m for m in client.smembers(index)} == {_java_string("0000live-0000")}
        assert not client.exists(f"{ns}sessions:0000old1-0000")
        assert not client.exists(f"{ns}sessions:expires:0000old1-0000")
        assert client.exists(f"{ns}sessions:0000live-0000")


def test_missing_driver_is_one_line_with_the_install_commands(cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "redis", None)
    line = one_line(cli("stats", "--store", "redis://cache.example:6379/0", code=3).stderr)
    assert "pip install 'sessionctl[redis]'" in line and "pipx" in line, line


def test_help_and_other_kinds_never_import_redis_py():
    done = subprocess.run(
        [sys.executable, "-c",
         "import sys; from sessionctl.cli.app import app; "
         "from sessionctl.stores import parse_address; parse_address('redis://h:1/0'); "
         "print('redis' in sys.modules)"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.stdout.strip() == "False", done.stderr
