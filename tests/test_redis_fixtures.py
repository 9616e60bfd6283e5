"""The Redis test fixtures themselves: a space of each test's own, and stores written by the real
frameworks (tests/redisfix.py), checked against what those frameworks write."""

import base64
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from pg import ROOT, java_serialized_string
from redisfix import (
    PRINCIPAL_INDEX,
    RedisSpace,
    connect_redis_load,
    connect_redis_store,
    django_cache_load,
    django_cache_store,
    flask_session_redis_load,
    flask_session_redis_store,
    java_serialized_integer,
    java_serialized_long,
    phpredis_crashed_lock,
    phpredis_load,
    phpredis_store,
    put_unrelated_keys,
    round_up_to_next_minute,
    spring_redis_store,
)


def test_a_space_is_empty_its_own_and_cleared_without_touching_other_keys(redis_space):
    assert redis_space.prefix.startswith("sctest:") and redis_space.keys() == []
    other = RedisSpace(url=redis_space.url, prefix=redis_space.prefix.rstrip(":") + "x:")
    with redis_space.client() as r:
        for n in range(1200):  # more than one SCAN page and one UNLINK batch
            r.set(f"{redis_space.prefix}k{n}", "v")
        r.set(f"{other.prefix}keep", "v")
    try:
        assert len(redis_space.keys()) == 1200
        assert redis_space.clear() == 1200
        assert redis_space.keys() == []
        assert other.keys() == ["keep"]
    finally:
        other.clear()


def test_unrelated_keys_are_of_every_type(redis_space):
    names = put_unrelated_keys(redis_space)
    assert redis_space.keys() == names
    assert {redis_space.type(k) for k in names} == {"string", "hash", "list", "set", "zset"}


def test_connect_redis_writes_json_with_the_cookies_ttl_or_none(redis_space, node_modules):
    written = connect_redis_store(
        redis_space,
        [
            3600,
            {"expires_in": 60, "data": {"user": "ann", "n": 1}},
            {"expires_in": 600, "disable_ttl": True},
            {"expires_in": -3600, "disable_ttl": True},
            {"expires_in": 1, "browser_session": True},
        ],
    )
    keys = ["sess:" + sid for sid in written.ids]
    assert redis_space.keys() == sorted(keys)
    assert all(redis_space.type(k) == "string" for k in keys)
    ttls = [redis_space.ttl(k) for k in keys]
    assert 3590 <= ttls[0] <= 3600 and 50 <= ttls[1] <= 60, ttls
    assert ttls[2] == ttls[3] == -1  # disableTTL: the keys never expire
    assert 86390 <= ttls[4] <= 86400  # no cookie expiry: the store's default ttl
    value = json.loads(redis_space.get(keys[1]))
    assert value["user"] == "ann" and value["cookie"]["originalMaxAge"] == 60000
    expired = json.loads(redis_space.get(keys[3]))
    assert expired["cookie"]["expires"] < time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    assert written.expired == [written.ids[3]]
    assert json.loads(redis_space.get(keys[4]))["cookie"]["expires"] is None
    loaded = connect_redis_load(redis_space, written.ids + ["missing"])
    assert loaded["missing"] is None and loaded[written.ids[1]]["n"] == 1
    with pytest.raises(ValueError, match="TTL"):
        connect_redis_store(redis_space, [-60])


def test_flask_session_redis_writes_msgpack_with_its_lifetime(redis_space):
    written = flask_session_redis_store(redis_space, [3600, {"expires_in": 120, "data": {"a": 1}}])
    assert written.extra["store_ids"] == [redis_space.prefix + "session:" + s for s in written.ids]
    assert redis_space.keys() == sorted("session:" + s for s in written.ids)
    assert 3590 <= redis_space.ttl("session:" + written.ids[0]) <= 3600
    assert 110 <= redis_space.ttl("session:" + written.ids[1]) <= 120
    data = redis_space.get("session:" + written.ids[1])
    assert data.startswith(b"\x82") and b"_permanent" in data  # msgpack map, not JSON
    assert flask_session_redis_load(redis_space, written.ids)[written.ids[1]]["a"] == 1


def test_django_cache_sessions_are_pickles_under_its_key_format(redis_space):
    written = django_cache_store(redis_space, [1209600, {"expires_in": 300, "data": {"cart": [1]}}])
    assert redis_space.keys() == sorted(written.extra["keys"])
    assert all(k.startswith(":1:django.contrib.sessions.cache") for k in written.extra["keys"])
    assert all(len(k) == 32 for k in written.ids)
    first, second = written.extra["keys"]
    assert 1209590 <= redis_space.ttl(first) <= 1209600 and 290 <= redis_space.ttl(second) <= 300
    # Pickle protocol 5 (PROTO 5, FRAME): opaque bytes, never to be unpickled outside Django.
    assert redis_space.get(second).startswith(b"\x80\x05\x95")
    loaded = django_cache_load(redis_space, written.ids)
    assert loaded[written.ids[1]]["cart"] == [1]


def test_java_serialization_of_long_and_integer():
    # What ObjectOutputStream writes for Long.valueOf(0L) and Integer.valueOf(1800) in a JVM.
    assert java_serialized_long(0) == base64.b64decode(
        "rO0ABXNyAA5qYXZhLmxhbmcuTG9uZzuL5JDMjyPfAgABSgAFdmFsdWV4cgAQamF2YS5sYW5nLk51bWJl"
        "coaslR0LlOCLAgAAeHAAAAAAAAAAAA=="
    )
    assert java_serialized_integer(1800) == base64.b64decode(
        "rO0ABXNyABFqYXZhLmxhbmcuSW50ZWdlchLioKT3gYc4AgABSQAFdmFsdWV4cgAQamF2YS5sYW5nLk51"
        "bWJlcoaslR0LlOCLAgAAeHAAAAcI"
    )
    assert round_up_to_next_minute(1_404_360_000_000) == 1_404_360_060_000
    assert round_up_to_next_minute(1_404_360_059_999) == 1_404_360_060_000


def test_spring_indexed_layout_with_dead_index_members(redis_space):
    written = spring_redis_store(
        redis_space,
        [
            1800,
            {"expires_in": 600, "principal": "ann"},
            {"expires_in": -60, "principal": "ann"},  # expired a minute ago: hash still there
            {"expires_in": -7200, "principal": "ann"},  # long gone: a dead member
            {"expires_in": 0, "max_inactive": -1, "principal": None},  # never expires
        ],
    )
    live, recent, recently_expired, gone, forever = written.ids
    ns = "spring:session:"
    index = f"{ns}index:{PRINCIPAL_INDEX}:ann"
    assert written.expired == [recently_expired, gone] and written.extra["dead"] == [gone]
    keys = set(redis_space.keys())
    assert {f"{ns}sessions:{i}" for i in (live, recent, recently_expired, forever)} <= keys
    assert f"{ns}sessions:{gone}" not in keys
    assert {f"{ns}sessions:expires:{i}" for i in (live, recent, forever)} == {
        k for k in keys if k.startswith(f"{ns}sessions:expires:")
    }
    assert redis_space.type(f"{ns}sessions:{live}") == "hash"
    assert 2090 <= redis_space.ttl(f"{ns}sessions:{live}") <= 2100
    assert 1790 <= redis_space.ttl(f"{ns}sessions:expires:{live}") <= 1800
    assert 230 <= redis_space.ttl(f"{ns}sessions:{recently_expired}") <= 240
    assert redis_space.ttl(f"{ns}sessions:{forever}") == -1
    assert redis_space.ttl(f"{ns}sessions:expires:{forever}") == -1
    assert redis_space.get(f"{ns}sessions:expires:{live}") == b""
    with redis_space.client() as r:
        fields = r.hgetall(redis_space.prefix + f"{ns}sessions:{recent}")
        members = r.smembers(redis_space.prefix + index)
        expirations = {
            k.decode()[len(redis_space.prefix) :]: r.smembers(k)
            for k in r.scan_iter(match=redis_space.prefix + ns + "expirations:*")
        }
    assert set(fields) == {
        b"creationTime",
        b"lastAccessedTime",
        b"maxInactiveInterval",
        b"sessionAttr:greeting",
        b"sessionAttr:" + PRINCIPAL_INDEX.encode(),
    }
    assert fields[b"maxInactiveInterval"] == java_serialized_integer(1800)
    last = int.from_bytes(fields[b"lastAccessedTime"][-8:], "big")
    assert abs(last + 1800_000 - 600_000 - time.time() * 1000) < 5000
    assert fields[b"sessionAttr:" + PRINCIPAL_INDEX.encode()] == java_serialized_string("ann")
    assert members == {java_serialized_string(i) for i in (recent, recently_expired, gone)}
    assert redis_space.ttl(index) == -1  # the principal sets never expire
    assert f"{ns}expirations:{round_up_to_next_minute(last + 1800_000)}" in expirations
    assert set().union(*expirations.values()) == {
        java_serialized_string("expires:" + i) for i in (live, recent, recently_expired)
    }


def test_spring_with_its_expiry_events_heard_keeps_no_dead_members(redis_space):
    written = spring_redis_store(
        redis_space, [{"expires_in": -7200, "principal": "bo"}], events_missed=False
    )
    assert written.extra["dead"] == [] and redis_space.keys() == []


def test_phpredis_writes_php_serialized_sessions_and_crashed_requests_leave_locks(redis_space):
    written = phpredis_store(
        redis_space, [1440, {"expires_in": 60, "data": {"user_id": 7, "name": "ann"}}]
    )
    keys = ["PHPREDIS_SESSION:" + sid for sid in written.ids]
    assert redis_space.keys() == sorted(keys)
    assert all(len(sid) == 26 for sid in written.ids)  # Debian's php.ini: sid_length 26
    assert 1430 <= redis_space.ttl(keys[0]) <= 1440 and 50 <= redis_space.ttl(keys[1]) <= 60
    assert redis_space.get(keys[1]) == b'user_id|i:7;name|s:3:"ann";'
    assert phpredis_load(redis_space, written.ids)[written.ids[1]] == {"user_id": 7, "name": "ann"}

    owner = phpredis_crashed_lock(redis_space, written.ids[0])
    host, pid = owner.rsplit("|", 1)
    assert host and pid.isdigit()
    assert redis_space.ttl(keys[0] + "_LOCK") == -1  # no expiry: it stays forever
    assert redis_space.keys() == sorted([*keys, keys[0] + "_LOCK"])


@pytest.mark.parametrize("ci, outcome", [("true", "1 error"), ("", "1 skipped")])
def test_a_missing_server_skips_with_one_line_or_fails_under_ci(tmp_path, ci, outcome):
    for name in ("pg.py", "redisfix.py"):
        shutil.copy(ROOT / "tests" / name, tmp_path / name)
    (tmp_path / "conftest.py").write_text(
        "from redisfix import redis_server, redis_space  # noqa: F401\n"
    )
    (tmp_path / "test_needs_redis.py").write_text("def test_needs(redis_space):\n    pass\n")
    env = {**os.environ, "SESSIONCTL_TEST_REDIS": "redis://127.0.0.1:1/0", "CI": ci}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rsE", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    lines = done.stdout.splitlines()
    assert lines[-1].split(" in ")[0].strip("= ") == outcome, done.stdout
    assert done.returncode == (1 if ci else 0), done.stdout
    said = [line for line in lines if "127.0.0.1" in line]
    assert said and all("no Redis test server at 127.0.0.1:1/0 (" in line for line in said)
    assert len(said) == (2 if ci else 1), done.stdout
    assert "Traceback" not in done.stdout and "During handling" not in done.stdout
