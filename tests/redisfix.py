"""Real Redis session stores, written by the real frameworks, for the tests.

The server: $SESSIONCTL_TEST_REDIS (a redis:// URL), by default redis://127.0.0.1:6379/0. When
it cannot be reached (or redis-py, Node, PHP or a framework is missing), a test that needs it is
skipped with a one-line reason, and fails with that line under CI (the CI variable set: .ci/run
starts the server and installs php-cli and php-redis).

Fixtures (registered in conftest.py):
- `redis_server`: the server's URL, checked once per test session.
- `redis_space`: a `RedisSpace` of the test's own: a key prefix `sctest:<random hex>:` in the
  server's database. Several test processes share the database, so nothing here ever runs
  FLUSHDB: afterwards every key under the prefix is removed with SCAN MATCH + UNLINK.

Stores, each written by the framework itself under the test's prefix, with times relative to
now. `sessions` is a list of numbers (seconds until the session expires) or of dicts
{"expires_in": seconds, "data": {...}} with per-framework extras. Redis removes a key whose TTL
ran out, so a session with a TTL and a non-positive expires_in cannot exist: the writers refuse
it, except where the framework writes keys with no TTL (connect-redis disableTTL, Spring's
principal index).
- `connect_redis_store(space, sessions, prefix="sess:")`: connect-redis (npm) Store.set; keys
  `<space>sess:<sid>`, JSON strings, `SET EX` the cookie's remaining seconds; "disable_ttl"
  sessions have no TTL (and may be expired by their cookie); "browser_session" ones get the
  store's default 86400 s. `connect_redis_load(space, sids)`.
- `flask_session_redis_store(space, sessions)`: Flask-Session's redis backend through real
  requests; keys `<space>session:<sid>`, msgpack strings, `SET EX` the lifetime.
- `django_cache_store(space, sessions)`: Django's cache SessionStore on Django's RedisCache;
  keys `<space>:1:django.contrib.sessions.cache<key>` (KEY_PREFIX is the space), pickle
  strings, `SET EX` the session age. Written only: nothing here or in sessionctl unpickles them.
- `spring_redis_store(space, sessions)`: RedisIndexedSessionRepository's layout, written here
  following spring-session-data-redis exactly (Java is not installed): the session hash, its
  `sessions:expires:` key, the `expirations:<minute>` sets and the principal index sets, with
  dead members for the sessions that are gone.
- `phpredis_store(space, sessions)`: php-cli with Debian's php-redis, session.save_handler=redis;
  keys `<space>PHPREDIS_SESSION:<sid>`, PHP session serialization, `SETEX gc_maxlifetime`.
  `phpredis_crashed_lock(space, sid)` leaves the `_LOCK` key a killed request leaves.
- `put_unrelated_keys(space)`: keys of every type beside them that no cleanup may remove.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import struct
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest

from pg import TESTS, Written, _node, _specs, java_serialized_string, run_json, unavailable

DEFAULT_URL = "redis://127.0.0.1:6379/0"
PHP_DIR = TESTS / "php"


def server_url() -> str:
    return os.environ.get("SESSIONCTL_TEST_REDIS") or DEFAULT_URL


def where(url: str) -> str:
    """host:port/db of a URL, never its password."""
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 6379}{parts.path or '/0'}"


def _redis():
    try:
        import redis
    except ImportError:
        unavailable("redis-py is not installed: pip install -e '.[test]' (make venv)")
    return redis


def check_server(url: str | None = None) -> str:
    """The server's URL once it answers PING; skip (fail under CI) when it does not."""
    url = url or server_url()
    redis = _redis()
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=10)
        try:
            client.ping()
        finally:
            client.close()
        return url
    except redis.RedisError as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    # Outside the except block: the report is the one line, not a chain of exceptions.
    unavailable(
        f"no Redis test server at {where(url)} ({first}); start it (.ci/run does) "
        "or point SESSIONCTL_TEST_REDIS at one"
    )


@dataclass
class RedisSpace:
    """A key prefix of one test's own on the test server's database."""

    url: str  # redis://host:port/db
    prefix: str  # "sctest:<hex>:": every key the test makes starts with it

    @property
    def db(self) -> int:
        return int((urlsplit(self.url).path or "/0").lstrip("/") or 0)

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or 6379

    def client(self, decode: bool = False):
        return _redis().Redis.from_url(self.url, decode_responses=decode, socket_timeout=30)

    def address(self, prefix: str = "") -> str:
        """The store address sessionctl takes: the URL with ?prefix=<space><prefix>."""
        return f"{self.url}?prefix={self.prefix}{prefix}"

    def keys(self, pattern: str = "*") -> list[str]:
        """Keys under the space (SCAN MATCH, deduplicated), sorted, without the space prefix."""
        with self.client() as r:
            found = {k.decode() for k in r.scan_iter(match=self.prefix + pattern, count=1000)}
        return sorted(k[len(self.prefix) :] for k in found)

    def ttl(self, key: str) -> int:
        """TTL in seconds of a key under the space: -1 none, -2 missing."""
        with self.client() as r:
            return r.ttl(self.prefix + key)

    def type(self, key: str) -> str:
        with self.client() as r:
            return r.type(self.prefix + key).decode()

    def get(self, key: str) -> bytes | None:
        with self.client() as r:
            return r.get(self.prefix + key)

    def clear(self) -> int:
        """UNLINK every key under the prefix (SCAN MATCH, batches); how many went."""
        removed = 0
        with self.client() as r:
            batch: list[bytes] = []
            for key in r.scan_iter(match=self.prefix + "*", count=1000):
                batch.append(key)
                if len(batch) >= 500:
                    removed += r.unlink(*batch)
                    batch = []
            if batch:
                removed += r.unlink(*batch)
        return removed


# ---- the fixtures (conftest.py imports these) ----


@pytest.fixture(scope="session")
def redis_server() -> str:
    return check_server()


@pytest.fixture
def redis_space(redis_server):
    space = RedisSpace(url=redis_server, prefix=f"sctest:{secrets.token_hex(6)}:")
    try:
        yield space
    finally:
        space.clear()


def put_unrelated_keys(space: RedisSpace) -> list[str]:
    """Keys beside the sessions that no preset may touch (for `cleanup --all` and `--orphans`):
    one of each type, names close to the presets' patterns. Returns them, without the space."""
    keys = {
        "sessions_count": ("string", "42"),  # "sess" without the colon
        "sess": ("string", "not a session"),
        "session": ("hash", {"a": "1"}),
        "cache:views:home": ("string", "<html>"),
        "spring:session:other": ("list", ["x"]),
        ":2:django.contrib.sessions.cache_other_version": ("string", "v2"),
        "PHPREDIS_SESSION": ("set", ["m"]),
        "queue:jobs": ("zset", {"job": 1.0}),
    }
    with space.client() as r:
        pipe = r.pipeline(transaction=False)
        for name, (kind, value) in keys.items():
            key = space.prefix + name
            if kind == "string":
                pipe.set(key, value)
            elif kind == "hash":
                pipe.hset(key, mapping=value)
            elif kind == "list":
                pipe.rpush(key, *value)
            elif kind == "set":
                pipe.sadd(key, *value)
            else:
                pipe.zadd(key, value)
        pipe.execute()
    return sorted(keys)


# ---- the frameworks ----


def _ttl_specs(sessions, what: str) -> list[dict]:
    specs = _specs(sessions)
    for spec in specs:
        if spec["expires_in"] <= 0 and not spec.get("disable_ttl"):
            raise ValueError(
                f"{what} writes every session with a TTL: one with expires_in "
                f"{spec['expires_in']} would be gone from Redis (Redis expires keys itself)"
            )
    return specs


# connect-redis (npm)


def connect_redis_store(space: RedisSpace, sessions=(), *, prefix: str = "sess:") -> Written:
    """connect-redis's keys `<space><prefix><sid>`, written by its Store.set (tests/node/connect_redis.js).

    Each session: seconds until its cookie expires (the key's TTL, rounded up), or
    {"expires_in": s, "data": {...}, "sid": optional, "disable_ttl": bool, "browser_session":
    bool}. disable_ttl: no TTL at all, also for a cookie already expired (expires_in <= 0);
    browser_session: a cookie without expires, so the store's default ttl of 86400 s.
    """
    specs = _ttl_specs(sessions, "connect-redis without disableTTL")
    request = {
        "url": space.url,
        "prefix": space.prefix + prefix,
        "action": "write",
        "sessions": specs,
    }
    return Written.of(_node("connect_redis.js", request)["sids"], specs, prefix=prefix)


def connect_redis_load(space: RedisSpace, sids: list[str], *, prefix: str = "sess:") -> dict:
    """{sid: session or None} through connect-redis's get()."""
    request = {"url": space.url, "prefix": space.prefix + prefix, "action": "load", "sids": sids}
    return _node("connect_redis.js", request)["loaded"]


# Flask-Session (redis backend) and Django (cache sessions on RedisCache)


def _need_module(name: str) -> None:
    import importlib.util

    if importlib.util.find_spec(name) is None:
        unavailable(f"{name} is not installed: pip install -e '.[test]' (make venv)")


def flask_session_redis_store(space: RedisSpace, sessions=()) -> Written:
    """Flask-Session's redis backend through real requests (tests/frameworks_flask.py).

    Keys `<space>session:<sid>` (SESSION_KEY_PREFIX is the space + "session:"), msgpack values,
    `SET EX` PERMANENT_SESSION_LIFETIME. Written.ids are the cookie ids.
    """
    _need_module("flask_session")
    specs = _ttl_specs(sessions, "Flask-Session")
    answer = run_json(
        [sys.executable, TESTS / "frameworks_flask.py"],
        {
            "backend": "redis",
            "redis_url": space.url,
            "key_prefix": space.prefix + "session:",
            "action": "write",
            "sessions": specs,
        },
    )
    return Written.of(answer["sids"], specs, store_ids=answer["store_ids"])


def flask_session_redis_load(space: RedisSpace, sids: list[str]) -> dict:
    """{sid: data or None} read by requests carrying the cookie."""
    _need_module("flask_session")
    request = {
        "backend": "redis",
        "redis_url": space.url,
        "key_prefix": space.prefix + "session:",
        "action": "load",
        "sids": sids,
    }
    return run_json([sys.executable, TESTS / "frameworks_flask.py"], request)["loaded"]


def django_cache_store(space: RedisSpace, sessions=()) -> Written:
    """Django's cache sessions (SESSION_ENGINE ...backends.cache) on Django's RedisCache.

    KEY_PREFIX is the space, so keys are `<space>:1:django.contrib.sessions.cache<key>` (what an
    empty KEY_PREFIX makes: `:1:django.contrib.sessions.cache<key>`). Values are pickle: the
    test writes them only. TTL: the session's age (set_expiry(expires_in)).
    Written.ids are the session keys; Written.extra["keys"] the Redis keys without the space.
    """
    _need_module("django")
    specs = _ttl_specs(sessions, "Django's cache backend")
    answer = run_json(
        [sys.executable, TESTS / "frameworks_django.py"],
        {
            "backend": "redis_cache",
            "redis_url": space.url,
            "key_prefix": space.prefix,
            "action": "write",
            "sessions": specs,
        },
    )
    keys = [":1:django.contrib.sessions.cache" + k for k in answer["keys"]]
    return Written.of(answer["keys"], specs, keys=keys)


def django_cache_load(space: RedisSpace, keys: list[str]) -> dict:
    """{session key: SessionStore(session_key=k).load()} in Django ({} when missing)."""
    _need_module("django")
    request = {
        "backend": "redis_cache",
        "redis_url": space.url,
        "key_prefix": space.prefix,
        "action": "load",
        "keys": keys,
    }
    return run_json([sys.executable, TESTS / "frameworks_django.py"], request)["loaded"]


# Spring Session (RedisIndexedSessionRepository), written as it writes.
#
# Source: spring-projects/spring-session,
# spring-session-data-redis/src/main/java/org/springframework/session/data/redis/
#   RedisIndexedSessionRepository.java: namespace "spring:session:" (setRedisKeyNamespace adds
#     the ":"); getSessionKey = ns + "sessions:" + id; getExpiredKey = ns + "sessions:expires:"
#     + id; getExpirationsKey = ns + "expirations:" + ms; getPrincipalKey = ns + "index:" +
#     FindByIndexNameSessionRepository.PRINCIPAL_NAME_INDEX_NAME + ":" + name; saveDelta() HMSETs
#     the delta (creationTime, maxInactiveInterval, lastAccessedTime, "sessionAttr:" + name) and
#     SADDs the id to the principal set (never given a TTL).
#   RedisSessionExpirationPolicy.java onExpirationUpdated(): SADD expirations:<roundUpToNextMinute
#     (lastAccessed + maxInactive)> "expires:" + id, EXPIRE it maxInactive + 300; APPEND "" to the
#     expires key and EXPIRE it maxInactive; EXPIRE the hash maxInactive + 300. A negative
#     maxInactiveInterval PERSISTs the hash and the expires key (no expirations entry).
# RedisHttpSessionConfiguration's RedisTemplate: String keys and hash keys, values through the
# default JdkSerializationRedisSerializer (Java serialization: Long, Integer, String), set
# members too; APPEND goes through the string serializer (the expires key is "").

SPRING_NAMESPACE = "spring:session:"
PRINCIPAL_INDEX = (
    "org.springframework.session.FindByIndexNameSessionRepository.PRINCIPAL_NAME_INDEX_NAME"
)
_JAVA_NUMBER = b"xr\x00\x10java.lang.Number\x86\xac\x95\x1d\x0b\x94\xe0\x8b\x02\x00\x00xp"


def java_serialized_long(value: int) -> bytes:
    """ObjectOutputStream.writeObject(Long.valueOf(value))."""
    return (
        b"\xac\xed\x00\x05sr\x00\x0ejava.lang.Long;\x8b\xe4\x90\xcc\x8f#\xdf\x02\x00\x01J\x00\x05value"
        + _JAVA_NUMBER
        + struct.pack(">q", value)
    )


def java_serialized_integer(value: int) -> bytes:
    """ObjectOutputStream.writeObject(Integer.valueOf(value))."""
    return (
        b"\xac\xed\x00\x05sr\x00\x11java.lang.Integer\x12\xe2\xa0\xa4\xf7\x81\x878\x02\x00\x01I\x00\x05value"
        + _JAVA_NUMBER
        + struct.pack(">i", value)
    )


def round_up_to_next_minute(ms: int) -> int:
    """RedisSessionExpirationPolicy.roundUpToNextMinute: add a minute, clear seconds and ms."""
    return (ms + 60_000) // 60_000 * 60_000


def spring_redis_store(
    space: RedisSpace,
    sessions=(),
    *,
    namespace: str = SPRING_NAMESPACE,
    events_missed: bool = True,
) -> Written:
    """Spring Session's indexed layout as Redis holds it now, for sessions last used a while ago.

    Each session: seconds until it expires (lastAccessedTime + maxInactiveInterval - now), or
    {"expires_in": s, "max_inactive": s (1800; negative: never expires), "principal": name or
    None (default "user<n>"), "attributes": {name: str or bytes}, "created_ago": s}. What is
    left of a session is what Redis keeps at this moment after Spring's save at lastAccessedTime:
    - active: the hash (TTL expires_in + 300), the expires key (TTL expires_in), its member in
      its expirations set (TTL expires_in + 300), its id in the principal set (no TTL);
    - expired less than 5 minutes ago: the hash and the expirations entry, no expires key;
    - expired longer ago: nothing but its id in the principal set: a dead member.
    Spring takes an id out of its principal set when it hears the expires key's "expired"
    keyspace event. events_missed (the default) is the leak of spring-session #1118/#2230/#3287:
    no node heard it (notify-keyspace-events off, as on managed Redis where CONFIG is refused,
    or every node down at that moment), so the ids of expired sessions stay in their sets. With
    events_missed=False the sets name only sessions whose expires key is still there.
    A session with a negative max_inactive never expires: everything persists, no TTL.
    Written.ids are the session ids (.expired, .active as Spring judges them); extra: "dead"
    (ids a principal set names whose hash is gone), "principals" {id: name}, "namespace".
    """
    specs = _specs(sessions)
    ns = space.prefix + namespace
    now_ms = int(time.time() * 1000)
    ids, active, expired, dead, principals = [], [], [], [], {}
    with space.client() as r:
        pipe = r.pipeline(transaction=False)
        for n, spec in enumerate(specs, start=1):
            sid = str(uuid.uuid4())
            max_inactive = int(spec.get("max_inactive", 1800))
            left = spec["expires_in"]
            forever = max_inactive < 0
            last_ms = now_ms - (max_inactive - left) * 1000 if not forever else now_ms - 60_000
            created_ms = min(last_ms, now_ms - int(spec.get("created_ago", 0)) * 1000)
            principal = spec.get("principal", f"user{n}")
            attributes = spec.get("attributes") or {"greeting": f"hello {principal or 'guest'}"}
            if principal is not None:
                attributes = {PRINCIPAL_INDEX: principal, **attributes}
                if forever or left > 0 or events_missed:
                    index = f"{ns}index:{PRINCIPAL_INDEX}:{principal}"
                    pipe.sadd(index, java_serialized_string(sid))
                    principals[sid] = principal
            ids.append(sid)
            (active if forever or left > 0 else expired).append(sid)
            hash_ttl = left + 300
            if not forever and hash_ttl <= 0:
                if sid in principals:
                    dead.append(sid)  # Redis expired the hash and the expires key; the set kept it
                continue
            fields = {
                "creationTime": java_serialized_long(created_ms),
                "maxInactiveInterval": java_serialized_integer(max_inactive),
                "lastAccessedTime": java_serialized_long(last_ms),
            }
            for name, value in attributes.items():
                fields["sessionAttr:" + name] = (
                    java_serialized_string(value) if isinstance(value, str) else bytes(value)
                )
            key = f"{ns}sessions:{sid}"
            pipe.hset(key, mapping=fields)
            if forever:
                pipe.append(f"{ns}sessions:expires:{sid}", b"")
                continue
            pipe.expire(key, hash_ttl)
            expirations = (
                f"{ns}expirations:{round_up_to_next_minute(last_ms + max_inactive * 1000)}"
            )
            pipe.sadd(expirations, java_serialized_string("expires:" + sid))
            pipe.expire(expirations, hash_ttl)
            if left > 0:
                pipe.append(f"{ns}sessions:expires:{sid}", b"")
                pipe.expire(f"{ns}sessions:expires:{sid}", left)
        pipe.execute()
    return Written(
        ids=ids,
        expired=expired,
        active=active,
        extra={"dead": dead, "principals": principals, "namespace": namespace},
    )


# phpredis (php-cli + Debian's php-redis)


def php_binary() -> str:
    php = shutil.which("php")
    if not php:
        unavailable("php (Debian php-cli) is not installed: apt-get install php-cli php-redis")
    return php


def _phpredis_argv(space: RedisSpace, prefix: str, locking: bool) -> list[str]:
    php = php_binary()
    done = subprocess.run([php, "-m"], capture_output=True, text=True, timeout=30)
    if "redis" not in done.stdout.split():
        unavailable("the PHP redis extension is missing: apt-get install php-redis")
    save_path = f"tcp://{space.host}:{space.port}?database={space.db}&prefix={space.prefix}{prefix}"
    return [
        php,
        "-d",
        "session.save_handler=redis",
        "-d",
        f'session.save_path="{save_path}"',
        "-d",
        "session.gc_probability=0",
        "-d",
        "session.use_cookies=0",
        "-d",
        f"redis.session.locking_enabled={int(locking)}",
        "-d",
        "redis.session.lock_expire=0",
        PHP_DIR / "phpredis.php",
    ]


def phpredis_store(
    space: RedisSpace, sessions=(), *, prefix: str = "PHPREDIS_SESSION:", locking: bool = False
) -> Written:
    """phpredis's session keys `<space><prefix><sid>`, written by session_write_close().

    Each session: seconds until it expires (session.gc_maxlifetime at write time, phpredis's
    SETEX), or {"expires_in": s, "data": {...}, "sid": optional}. The value is PHP's `php`
    serialize_handler format (`name|serialized;...`). See tests/php/phpredis.php.
    """
    specs = _ttl_specs(sessions, "phpredis")
    request = {
        "action": "write",
        "sessions": [
            {
                "sid": spec.get("sid"),
                "lifetime": spec["expires_in"],
                "data": spec.get("data") or {"user_id": n},
            }
            for n, spec in enumerate(specs, start=1)
        ],
    }
    answer = run_json(_phpredis_argv(space, prefix, locking), request)
    return Written.of(answer["sids"], specs, prefix=prefix)


def phpredis_load(space: RedisSpace, sids: list[str], *, prefix: str = "PHPREDIS_SESSION:") -> dict:
    """{sid: $_SESSION} as PHP reads it back ([] when missing)."""
    answer = run_json(_phpredis_argv(space, prefix, False), {"action": "read", "sids": sids})
    return answer["loaded"]


def phpredis_crashed_lock(space: RedisSpace, sid: str, *, prefix: str = "PHPREDIS_SESSION:") -> str:
    """A PHP request with phpredis locking that takes its session's lock and is then killed
    (SIGKILL, as a crashed or OOM-killed FPM worker): its `<key>_LOCK` key stays, without an
    expiry (lock_expire 0, max_execution_time 0 in the CLI). Returns the lock key's value,
    "<hostname>|<pid>"."""
    argv = _phpredis_argv(space, prefix, True)
    proc = subprocess.Popen(
        [str(a) for a in argv],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=TESTS,
    )
    try:
        proc.stdin.write(json.dumps({"action": "hold", "sid": sid}))
        proc.stdin.close()
        line = proc.stdout.readline()
        if line.strip() != "ready":
            raise AssertionError(
                f"phpredis hold did not start: {line!r} {proc.stderr.read()[-2000:]}"
            )
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
        proc.stderr.close()
    value = space.get(f"{prefix}{sid}_LOCK")
    if value is None:
        raise AssertionError("phpredis left no _LOCK key")
    return value.decode()
