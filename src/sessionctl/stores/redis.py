"""Sessions kept as keys in Redis: connect-redis, Django cache sessions, Spring Session, Rails,
Flask-Session, phpredis (key formats in shared/STORES.md).

`redis://[USER@]HOST:PORT/DB?prefix=P`, `rediss://` (TLS) or `unix:///path.sock?db=N&prefix=P`.
The password comes from the `password_env` / `password_file` settings or `REDISCLI_AUTH` (as
redis-cli takes it), never from output. redis-py is imported only when a Redis store is used.

Which framework wrote the keys is told from a sampling SCAN of the key names under the prefix
(or `?preset=NAME`). Keys are found with `SCAN MATCH ... COUNT n` (never KEYS), read in
pipelines (OBJECT IDLETIME, TYPE, PTTL and MEMORY USAGE come before GET, which would reset the
idle time), and removed by a compare-and-delete script (UNLINK) that leaves a key alone when its
value, fields or expiry changed since it was read. Values that could run code when decoded
(pickle, Marshal, Java serialization) are never decoded: they are opaque bytes, kept in the
record as base64 for the archive and shown redacted.

A Redis Cluster is told from the server and read through redis-py's RedisCluster (one SCAN cursor
per primary; plain commands routed by slot where a script would span slots).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
import secrets
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from ..domain.errors import SessionctlError, busy_error, store_error, usage_error
from ..domain.model import Record
from .base import (
    Address,
    ArchiveFn,
    Candidate,
    RemoveOutcome,
    Store,
    StoreSettings,
    configured_password,
)

#: Keys asked for per SCAN call, and per pipeline of reads or deletes.
SCAN_COUNT = 1000
PIPELINE = 500
#: Keys one script call reads or removes: Redis runs nothing else meanwhile, so this keeps each
#: call near a millisecond (bench/redis_bench.py measures Redis's latency during a cleanup).
SCRIPT_KEYS = 200
#: Keys a detection looks at.
DETECT_SAMPLE = 2000
#: The cross-host lock's life; it is renewed at a third of it while the run goes on.
LOCK_TTL_MS = 60_000
#: How far apart (ms) the expiry read at selection and the one at removal may lie: more, and
#: the application renewed the key (a touch), which then stays.
DEADLINE_SLACK_MS = 2000
#: A `_LOCK` key without expiry, idle longer than this, is left by a crashed request.
STALE_LOCK_S = 3600
#: The furthest expiry a restore writes (an edited archive's may overflow PEXPIRE).
MAX_RESTORE_TTL_S = 100 * 365 * 86400
#: The bounds (seconds) of the TTL distribution `stats` shows.
TTL_BUCKETS = (
    ("<1h", 3600),
    ("1h-1d", 86400),
    ("1d-7d", 7 * 86400),
    ("7d-30d", 30 * 86400),
    (">30d", float("inf")),
)

SPRING_PRINCIPAL_INDEX = (
    "org.springframework.session.FindByIndexNameSessionRepository.PRINCIPAL_NAME_INDEX_NAME"
)


@dataclass(frozen=True)
class Layout:
    """What one framework writes: its session keys (after the address's prefix), their type,
    the field that names the session id, and whether every session should carry a TTL."""

    name: str  # the preset of the same name (domain/mapping.py)
    markers: tuple[str, ...]  # what follows the base prefix in a session key
    id_pattern: str
    type: str  # "string" or "hash"
    id_field: str
    ttl_expected: bool
    #: What the address's prefix may already end with (the marker, or the namespace).
    tails: tuple[str, ...] = ()

    def base(self, prefix: str) -> str:
        for tail in sorted(self.tails or self.markers, key=len, reverse=True):
            if prefix.endswith(tail):
                return prefix[: -len(tail)]
        return prefix

    def key_regex(self, prefix: str) -> re.Pattern:
        base = self.base(prefix)
        markers = "|".join(re.escape(m) for m in self.markers)
        return re.compile(f"^{re.escape(base)}(?:{markers})(?P<id>{self.id_pattern})$", re.S)


LAYOUTS: tuple[Layout, ...] = (
    Layout("connect-redis", ("sess:",), r"[^:]+", "string", "sid", True),
    Layout(
        "django-cache",
        (":1:django.contrib.sessions.cache", ":1:django.contrib.sessions.cached_db"),
        r"[a-z0-9]{32}",
        "string",
        "session_key",
        True,
    ),
    Layout(
        "spring-redis",
        ("spring:session:sessions:",),
        r"[0-9A-Za-z][0-9A-Za-z-]{7,}",
        "hash",
        "id",
        True,
        tails=("spring:session:sessions:", "spring:session:"),
    ),
    # redis-session-store / redis-rack write no TTL unless expire_after is set.
    Layout("rails-redis", ("rack:session:", "_session_id:"), r".+", "string", "session_id", False),
    Layout("flask-redis", ("session:",), r"[^:]+", "string", "sid", True),
    Layout("phpredis", ("PHPREDIS_SESSION:",), r"[A-Za-z0-9,-]+", "string", "sid", True),
)
LAYOUT_NAMES = tuple(layout.name for layout in LAYOUTS)


def _layout(name: str) -> Layout:
    for layout in LAYOUTS:
        if layout.name == name:
            return layout
    raise usage_error(f"unknown Redis preset {name!r}", f"use one of: {', '.join(LAYOUT_NAMES)}")


def _redis():
    try:
        import redis
    except ImportError:
        raise store_error(
            "Redis stores need redis-py, which is not installed",
            "pip install 'sessionctl[redis]', or pipx inject sessionctl 'redis[hiredis]'",
        ) from None
    return redis


# --- addresses ---------------------------------------------------------------------------------


def parse_redis_address(text: str) -> Address:
    text = text.strip()
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    split_early = "#" in text or (
        scheme != "unix" and ("@" in parts.path or ("@" in parts.query and "@" not in parts.netloc))
    )
    if split_early:
        # A password with an unencoded / ? # ends the host part early: what then looks like a
        # port, database or parameter is part of the password. Nothing of it is echoed.
        raise usage_error(
            f"store {scheme}://...: a '#', or an '@' after the host (a password's own / ? # @"
            " not percent-encoded?)",
            "percent-encode them (/ is %2F, ? is %3F, # is %23, @ is %40, in a prefix too), or"
            " give the password by password_env, password_file or REDISCLI_AUTH",
        )
    query = parse_qs(parts.query, keep_blank_values=True)
    allowed = {"prefix", "preset"} | ({"db"} if scheme == "unix" else set())
    unknown = sorted(set(query) - allowed)
    if unknown:
        raise usage_error(
            f"store {scheme}://...: unknown parameter {unknown[0]!r}",
            f"a Redis address takes {', '.join(sorted(p + '=' for p in allowed))}",
        )
    for name, values in query.items():
        if len(values) > 1:
            raise usage_error(f"store {scheme}://...: {name}= given {len(values)} times")
    prefix = query.get("prefix", [""])[0]
    preset = query.get("preset", [""])[0] or None
    if preset is not None:
        _layout(preset)
    try:
        port = parts.port
    except ValueError:
        raise usage_error(f"store {scheme}://...: the port is not a number") from None
    user = unquote(parts.username) if parts.username else None
    secret = unquote(parts.password) if parts.password is not None else None
    params: list[tuple[str, str]] = [("scheme", scheme)]
    if scheme == "unix":
        path = unquote(parts.path)
        if not path:
            raise usage_error("store unix://: give unix:///path/to/redis.sock?db=N")
        db = query.get("db", ["0"])[0] or "0"
        where = f"unix://{path}"
        params += [("path", path)]
    else:
        if not parts.hostname:
            raise usage_error(f"store {scheme}://: give {scheme}://HOST[:PORT][/DB]")
        host = parts.hostname.lower()
        db = parts.path.strip("/") or "0"
        port = port or 6379
        shown_host = f"[{host}]" if ":" in host else host
        where = f"{scheme}://{shown_host}:{port}"
        params += [("host", host), ("port", str(port))]
    if not db.isdigit():
        raise usage_error(f"store {scheme}://...: the database {db!r} is not a number")
    params += [("db", str(int(db))), ("prefix", prefix)]
    if user:
        params.append(("user", user))
    if preset:
        params.append(("preset", preset))
    tail = f"/{int(db)}" if scheme != "unix" else ""
    query_text = f"?db={int(db)}" if scheme == "unix" else ""
    if prefix:
        query_text += ("&" if query_text else "?") + "prefix=" + quote(prefix, safe=":/@._-*")
    if preset:
        query_text += ("&" if query_text else "?") + "preset=" + preset
    identity = f"{where}{tail}{query_text}"
    if user and scheme != "unix":
        display = f"{scheme}://{quote(user, safe='')}@{where.split('://', 1)[1]}{tail}{query_text}"
    else:
        display = identity
    return Address(
        kind="redis",
        display=display,
        identity=identity,
        pinned=display,
        params=tuple(params),
        secret=secret,
    )


# --- values ------------------------------------------------------------------------------------

_JAVA_MAGIC = b"\xac\xed\x00\x05"
_JAVA_LONG = _JAVA_MAGIC + b"sr\x00\x0ejava.lang.Long"
_JAVA_INTEGER = _JAVA_MAGIC + b"sr\x00\x11java.lang.Integer"


def java_value(raw: bytes) -> Any:
    """A Java-serialized Long, Integer or String (what Spring writes for its own fields), read
    as data (nothing is instantiated); None for anything else."""
    if raw.startswith(_JAVA_LONG) and len(raw) >= len(_JAVA_LONG) + 8:
        return struct.unpack(">q", raw[-8:])[0]
    if raw.startswith(_JAVA_INTEGER) and len(raw) >= len(_JAVA_INTEGER) + 4:
        return struct.unpack(">i", raw[-4:])[0]
    if raw.startswith(_JAVA_MAGIC + b"t") and len(raw) >= 7:
        (length,) = struct.unpack(">H", raw[5:7])
        body = raw[7:]
        if len(body) == length:
            # Byte for byte (as key names are): a member naming a key that is not UTF-8 must
            # name that key, not one with U+FFFD in it, which is never there.
            return body.decode("utf-8", "surrogateescape")
    return None


def _msgpack():
    """msgpack, when it is installed (Flask-Session's format); never a requirement."""
    try:
        import msgpack
    except ImportError:
        return None
    return msgpack


def value_digest(kind: str, value: Any) -> str:
    """What the compare-and-delete script computes: sha1 of a string's bytes, or of a hash's
    fields sorted by name (each field and value prefixed with its length)."""
    if kind == "string":
        return hashlib.sha1(value).hexdigest()
    parts = []
    for name in sorted(value):
        item = value[name]
        parts.append(b"%d:%s%d:%s" % (len(name), name, len(item), item))
    return hashlib.sha1(b"".join(parts)).hexdigest()


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _key_text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _key_bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


# --- scripts -----------------------------------------------------------------------------------

#: KEYS[1] the session; KEYS[2..1+n] keys removed with it; then sets to take a member out of.
#: ARGV: type, digest, deadline ms (-1: none), n, members count, members..., hash fields...
COMPARE_AND_DELETE = """
local key = KEYS[1]
local t = redis.call('TYPE', key)['ok']
if t ~= ARGV[1] or (t ~= 'string' and t ~= 'hash') then return 0 end
local nm = tonumber(ARGV[5])
local d
if t == 'string' then
  d = redis.sha1hex(redis.call('GET', key))
else
  if redis.call('HLEN', key) ~= #ARGV - 5 - nm then return 0 end
  local parts = {}
  for i = 6 + nm, #ARGV do
    local v = redis.call('HGET', key, ARGV[i])
    if not v then return 0 end
    parts[#parts + 1] = #ARGV[i] .. ':' .. ARGV[i] .. #v .. ':' .. v
  end
  d = redis.sha1hex(table.concat(parts))
end
if d ~= ARGV[2] then return 0 end
local pttl = redis.call('PTTL', key)
if ARGV[3] == '-1' then
  if pttl ~= -1 then return 0 end
else
  if pttl < 0 then return 0 end
  local now = redis.call('TIME')
  local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  if math.abs(ms + pttl - tonumber(ARGV[3])) > SLACK then return 0 end
end
redis.call('UNLINK', key)
local extra = tonumber(ARGV[4])
for i = 2, 1 + extra do redis.call('UNLINK', KEYS[i]) end
for j = 1, nm do redis.call('SREM', KEYS[1 + extra + j], ARGV[5 + j]) end
return 1
""".replace("SLACK", str(DEADLINE_SLACK_MS))

#: Read a batch of keys in one call: the server's TIME, then per key its type, PTTL, MEMORY
#: USAGE, OBJECT IDLETIME (ARGV[1] "1"; before the value, which GET would make fresh) and the
#: value (GET or HGETALL when the type is ARGV[2]; nil otherwise).
READ_BATCH = """
local now = redis.call('TIME')
local out = {now[1], now[2]}
local idle = ARGV[1] == '1'
local n = 2
for _, k in ipairs(KEYS) do
  local t = redis.call('TYPE', k)['ok']
  local pttl = redis.call('PTTL', k)
  local mem = redis.pcall('MEMORY', 'USAGE', k, 'SAMPLES', '0')
  if type(mem) ~= 'number' then mem = false end
  local it = false
  if idle then
    it = redis.pcall('OBJECT', 'IDLETIME', k)
    if type(it) ~= 'number' then it = false end
  end
  local v = false
  if t == ARGV[2] then
    if t == 'string' then v = redis.call('GET', k) else v = redis.call('HGETALL', k) end
  end
  out[n + 1] = t
  out[n + 2] = pttl
  out[n + 3] = mem
  out[n + 4] = it
  out[n + 5] = v
  n = n + 5
end
return out
"""

#: MEMORY USAGE ... SAMPLES 0 of a batch of keys in one call (0 for a key gone meanwhile).
MEMORY_BATCH = """
local out = {}
for i, k in ipairs(KEYS) do
  local m = redis.pcall('MEMORY', 'USAGE', k, 'SAMPLES', '0')
  if type(m) ~= 'number' then m = 0 end
  out[i] = m
end
return out
"""

#: Compare-and-delete for a batch of string keys: ARGV digest and deadline (ms, -1: none) per
#: key; answers 1 (removed) or 0 (changed: left) per key.
DELETE_STRINGS = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local out = {}
for i, k in ipairs(KEYS) do
  local ok = 0
  if redis.call('TYPE', k)['ok'] == 'string'
      and redis.sha1hex(redis.call('GET', k)) == ARGV[2 * i - 1] then
    local pttl = redis.call('PTTL', k)
    local deadline = ARGV[2 * i]
    if deadline == '-1' then
      if pttl == -1 then ok = 1 end
    elseif pttl >= 0 and math.abs(ms + pttl - tonumber(deadline)) <= SLACK then
      ok = 1
    end
  end
  if ok == 1 then redis.call('UNLINK', k) end
  out[i] = ok
end
return out
""".replace("SLACK", str(DEADLINE_SLACK_MS))

#: An index member whose session is gone: KEYS set, session key; ARGV member.
DROP_MEMBER = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
return redis.call('SREM', KEYS[1], ARGV[1])
"""

#: A lock key, unchanged and still without expiry: KEYS lock; ARGV digest.
DROP_LOCK = """
local v = redis.call('GET', KEYS[1])
if not v or redis.sha1hex(v) ~= ARGV[1] or redis.call('PTTL', KEYS[1]) ~= -1 then return 0 end
redis.call('UNLINK', KEYS[1])
return 1
"""

#: Put a hash back only if the key is free: KEYS key; ARGV ttl ms (-1 none), field, value, ...
RESTORE_HASH = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
if tonumber(ARGV[1]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return 1
"""

LOCK_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
LOCK_TAKEOVER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) and 1 or 0
end
return 0
"""
LOCK_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


# --- the store ---------------------------------------------------------------------------------


class RedisStore(Store):
    kind = "redis"
    schemes = ("redis", "rediss", "unix")
    shape = "document"
    natural_batch = PIPELINE
    has_ttl = True
    has_orphans = True
    no_pushdown_reason = "Redis keys are judged one by one"

    @classmethod
    def parse_address(cls, text: str) -> Address:
        return parse_redis_address(text)

    def __init__(self, address: Address, settings: StoreSettings | None = None):
        super().__init__(address, settings)
        self.prefix = address.param("prefix", "") or ""
        self._password = self._find_password(address)
        self._client = None
        self._layout: Layout | None = None
        self._layout_known = False
        self._idle_allowed: bool | None = None
        self._memory_total: int | None = None
        self._principals: dict[str, str] | None = None
        self._ttl_figures: tuple[int, list[int]] | None = None
        self._cluster = False

    # connection and errors

    def _find_password(self, address: Address) -> str | None:
        password = configured_password(self.settings, address)
        return password if password is not None else os.environ.get("REDISCLI_AUTH") or None

    @property
    def where(self) -> str:
        return self.address.display

    def _scrub(self, text: str) -> str:
        if self._password:
            text = text.replace(self._password, "***")
        return " ".join(text.split())

    def _fault(self, exc: Exception, doing: str) -> SessionctlError:
        redis = _redis()
        message = self._scrub(str(exc)) or type(exc).__name__
        lowered = message.lower()
        if isinstance(exc, redis.AuthenticationError) or "wrongpass" in lowered:
            return store_error(
                f"Redis at {self.where} refused the password while {doing}",
                "check password_env, password_file or REDISCLI_AUTH",
            )
        if "noauth" in lowered or "authentication required" in lowered:
            return store_error(
                f"Redis at {self.where} wants a password",
                "set password_env, password_file or REDISCLI_AUTH",
            )
        if isinstance(exc, redis.ReadOnlyError) or lowered.startswith("readonly"):
            return store_error(
                f"Redis at {self.where} is a read-only replica; nothing was changed there",
                "point the address at the primary",
            )
        if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
            return store_error(f"cannot reach Redis at {self.where} while {doing}: {message}")
        return store_error(f"Redis at {self.where} failed while {doing}: {message}")

    @contextlib.contextmanager
    def _errors(self, doing: str):
        redis = _redis()
        try:
            yield
        except redis.RedisError as exc:
            error = self._fault(exc, doing)
        else:
            return
        raise error

    def _new_client(self):
        redis = _redis()
        address = self.address
        from redis.backoff import ExponentialBackoff
        from redis.retry import Retry

        common = {
            # One quick retry, not redis-py's default backoff of seconds: a server that is down
            # is one line at once.
            "retry": Retry(ExponentialBackoff(cap=0.2, base=0.05), 1),
            "db": int(address.param("db", "0")),
            "username": address.param("user"),
            "password": self._password,
            "socket_connect_timeout": 5,
            # Until the server has answered (TLS handshake, PING) the connect timeout: a server
            # that never answers (a TLS address on a plain port) is one line in seconds, not
            # after twice statement_timeout. `client` then gives commands their own.
            "socket_timeout": 5,
        }
        if address.param("scheme") == "unix":
            return redis.Redis(unix_socket_path=address.param("path"), **common)
        return redis.Redis(
            host=address.param("host"),
            port=int(address.param("port", "6379")),
            ssl=address.param("scheme") == "rediss",
            **common,
        )

    @property
    def client(self):
        if self._client is None:
            client = self._new_client()
            with self._errors("connecting"):
                client.ping()
                clustered = self.address.param("scheme") != "unix" and bool(
                    client.info("cluster").get("cluster_enabled")
                )
            if clustered:
                # One cursor per primary, commands routed by slot: redis-py's RedisCluster.
                client.close()
                client = self._cluster_client()
                with self._errors("connecting to the cluster"):
                    client.ping()
            else:
                # It answers: connections from now on wait as long as a command may run.
                pool = client.connection_pool
                pool.disconnect()
                pool.connection_kwargs["socket_timeout"] = self._command_timeout()
                pool.reset()  # the connections made so far keep their timeout: new ones
            self._cluster = clustered
            self._client = client
        return self._client

    def _command_timeout(self) -> float:
        return max(10.0, float(self.settings.statement_timeout))

    def _cluster_client(self):
        redis = _redis()
        address = self.address
        if int(address.param("db", "0")) != 0:
            raise usage_error(f"{self.where}: a Redis Cluster has database 0 only")
        return redis.RedisCluster(
            host=address.param("host"),
            port=int(address.param("port", "6379")),
            username=address.param("user"),
            password=self._password,
            ssl=address.param("scheme") == "rediss",
            socket_connect_timeout=5,
            socket_timeout=self._command_timeout(),
        )

    def _batch(self) -> _Batch:
        return _Batch(self.client.pipeline(transaction=False), self._cluster)

    def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None

    # keys

    def _scan(self, pattern: bytes) -> Iterator[bytes]:
        with self._errors("scanning keys"):
            yield from self.client.scan_iter(match=pattern, count=SCAN_COUNT)

    @staticmethod
    def _glob(text: str) -> bytes:
        return re.sub(rb"([*?\[\]\\])", rb"\\\1", _key_bytes(text))

    @property
    def layout(self) -> Layout | None:
        if not self._layout_known:
            self._layout = self._detect()
            self._layout_known = True
        return self._layout

    def _detect(self) -> Layout | None:
        chosen = self.address.param("preset")
        if chosen:
            return _layout(chosen)
        regexes = [(layout, layout.key_regex(self.prefix)) for layout in LAYOUTS]
        counts: Counter = Counter()
        for seen, raw in enumerate(self._scan(self._glob(self.prefix) + b"*"), start=1):
            key = _key_text(raw)
            for layout, regex in regexes:
                if regex.match(key):
                    counts[layout.name] += 1
                    break
            if seen >= DETECT_SAMPLE:
                break
        if not counts:
            return None
        best = max(counts.values())
        return next(layout for layout in LAYOUTS if counts[layout.name] == best)

    def preset_hint(self) -> str | None:
        layout = self.layout
        return layout.name if layout else None

    def _session_keys(self) -> Iterator[tuple[bytes, str]]:
        """(key, session id) of every session key, each once (SCAN may name a key twice).

        Keys met are remembered by their hash, not their bytes: half the memory at a million
        keys. Two keys of one hash (odds near 1e-8 at a million) would leave the second
        unjudged, never removed by mistake."""
        layout = self.layout
        if layout is None:
            return
        regex = layout.key_regex(self.prefix)
        base = layout.base(self.prefix)
        seen: set[int] = set()
        for marker in layout.markers:
            for raw in self._scan(self._glob(base + marker) + b"*"):
                digest = hash(raw)
                if digest in seen:
                    continue
                match = regex.match(_key_text(raw))
                if match:
                    seen.add(digest)
                    yield raw, match.group("id")

    def _spring_namespace(self) -> str:
        return _spring_base(self.prefix) + "spring:session:"

    # reading

    def _idle_ok(self) -> bool:
        """OBJECT IDLETIME answers only under an LRU (or no-eviction) policy, not under LFU."""
        if self._idle_allowed is None:
            try:
                policy = self.client.config_get("maxmemory-policy").get("maxmemory-policy", "")
                self._idle_allowed = "lfu" not in str(policy)
            except Exception:  # CONFIG refused (managed Redis): ask the key and see
                self._idle_allowed = True
        return self._idle_allowed

    def _read(self, batch: list[tuple[bytes, str]], with_principals: bool = True) -> list[Record]:
        """The batch's keys as records, read by one script call (type, TTL, memory, idle time
        before the value: GET would reset it); keys gone since the scan are left out."""
        layout = self.layout
        idle = self._idle_ok()
        if self.client is not None and self._cluster:
            return self._read_pipelined(batch, idle, with_principals)
        script = self._script(READ_BATCH)
        principals = self._principal_map() if layout.type == "hash" and with_principals else {}
        records = []
        for chunk in _chunks(batch, SCRIPT_KEYS):
            with self._errors("reading sessions"):
                replies = script(
                    keys=[key for key, _ in chunk], args=["1" if idle else "0", layout.type]
                )
            self._records_of(chunk, replies, principals, records)
        return records

    def _records_of(self, chunk, replies, principals, records) -> None:
        now_ms = int(replies[0]) * 1000 + int(replies[1]) // 1000
        for n, (key, session_id) in enumerate(chunk):
            kind, pttl, memory, idletime, value = replies[2 + 5 * n : 7 + 5 * n]
            if kind == b"none" or pttl == -2:
                continue  # gone since the scan (expired by Redis)
            if kind == b"hash" and isinstance(value, list):
                value = dict(zip(value[::2], value[1::2]))
            records.append(
                self._record(
                    key,
                    session_id,
                    kind.decode(),
                    pttl,
                    now_ms,
                    memory,
                    idletime,
                    value,
                    principals,
                )
            )

    def _read_pipelined(self, batch, idle: bool, with_principals: bool) -> list[Record]:
        """`_read` in a cluster, where a script may not take keys of several slots: plain
        commands in a pipeline that redis-py splits by node, in the same order."""
        layout = self.layout
        principals = self._principal_map() if layout.type == "hash" and with_principals else {}
        records: list[Record] = []
        with self._errors("reading sessions"):
            seconds, micros = self.client.time()
            pipe = self.client.pipeline(transaction=False)
            for key, _ in batch:
                pipe.object("idletime", key) if idle else pipe.exists(key)
                pipe.type(key)
                pipe.pttl(key)
                pipe.memory_usage(key, samples=0)
                pipe.hgetall(key) if layout.type == "hash" else pipe.get(key)
            replies = pipe.execute(raise_on_error=False)
        flat: list = [seconds, micros]
        for n in range(len(batch)):
            idletime, kind, pttl, memory, value = replies[5 * n : 5 * n + 5]
            kind = kind if isinstance(kind, bytes) else b"none"
            if isinstance(value, dict):
                value = [part for pair in value.items() for part in pair]
            flat += [
                kind,
                pttl if isinstance(pttl, int) else -2,
                memory if isinstance(memory, int) else None,
                idletime if idle and isinstance(idletime, int) else None,
                None if isinstance(value, Exception) or kind.decode() != layout.type else value,
            ]
        self._records_of(batch, flat, principals, records)
        return records

    def _script(self, text: str):
        scripts = self.__dict__.setdefault("_scripts", {})
        if text not in scripts:
            scripts[text] = self.client.register_script(text)
        return scripts[text]

    def _record(self, key, session_id, kind, pttl, now_ms, memory, idletime, value, principals):
        layout = self.layout
        deadline = now_ms + pttl if pttl >= 0 else -1
        data: dict[str, Any] = {
            layout.id_field: session_id,
            "type": kind,
            "ttl": round(pttl / 1000) if pttl >= 0 else None,
            "ttl_expires": deadline / 1000 if deadline >= 0 else None,
            "memory": memory,
            "idle": idletime,
        }
        text_key = _key_text(key)
        if isinstance(value, Exception) or kind != layout.type:
            # WRONGTYPE: a key of another type under the session pattern is an invalid session.
            return Record(
                key=text_key,
                data=None,
                size=memory,
                error=f"key holds a {kind}, where {layout.name} keeps a {layout.type}",
                version=(kind, None, deadline),
            )
        if kind == "hash":
            fields = value
            data["hash_b64"] = {_b64(name): _b64(item) for name, item in fields.items()}
            self._spring_fields(data, fields, principals.get(session_id))
            digest = value_digest("hash", fields)
            version = ("hash", digest, deadline, tuple(sorted(fields)))
            return Record(key=text_key, data=data, size=memory, version=version)
        raw = value
        data["value_b64"] = _b64(raw)
        version = ("string", value_digest("string", raw), deadline)
        error = None
        if layout.name == "connect-redis":
            import json

            try:
                decoded = json.loads(raw)
            except (ValueError, RecursionError) as exc:
                error = f"value is not JSON ({str(exc).split(':')[0]})"
            else:
                if isinstance(decoded, dict):
                    data["sess"] = decoded
                else:
                    error = "value is JSON but not an object"
        elif layout.name == "flask-redis" and not raw.startswith(b"\x80"):
            msgpack = _msgpack()  # data only; a pickle (Flask-Session's fallback) stays opaque
            if msgpack is not None:
                try:
                    decoded = msgpack.unpackb(raw, raw=False, strict_map_key=False)
                except Exception:
                    error = "value is not msgpack"
                else:
                    if isinstance(decoded, dict):
                        data["data"] = decoded
        if error is not None:
            return Record(
                key=text_key, data=None, size=memory, error=error, raw=raw, version=version
            )
        return Record(key=text_key, data=data, size=memory, version=version)

    def _spring_fields(self, data: dict, fields: dict, principal: str | None) -> None:
        created = java_value(fields.get(b"creationTime", b""))
        accessed = java_value(fields.get(b"lastAccessedTime", b""))
        inactive = java_value(fields.get(b"maxInactiveInterval", b""))
        for name, value, raw_name in (
            ("creationTime", created, b"creationTime"),
            ("lastAccessedTime", accessed, b"lastAccessedTime"),
            ("maxInactiveInterval", inactive, b"maxInactiveInterval"),
        ):
            if raw_name in fields:
                data[name] = value if isinstance(value, int) else "<not a Java number>"
        if isinstance(accessed, int) and isinstance(inactive, int):
            data["expiresAt"] = accessed + inactive * 1000 if inactive >= 0 else None
        attributes = {}
        for name, item in fields.items():
            if name.startswith(b"sessionAttr:"):
                attributes[_key_text(name[len(b"sessionAttr:") :])] = f"<{len(item)} bytes>"
        data["attributes"] = attributes
        if principal is None:
            raw = fields.get(b"sessionAttr:" + SPRING_PRINCIPAL_INDEX.encode())
            value = java_value(raw) if raw else None
            principal = value if isinstance(value, str) else None
        data["principal"] = principal

    def _principal_map(self) -> dict[str, str]:
        """Session id -> principal name, from Spring's principal index sets."""
        if self._principals is None:
            found: dict[str, str] = {}
            for _index_key, name, members in self._index_sets():
                for member in members:
                    value = java_value(member)
                    if isinstance(value, str):
                        found.setdefault(value, name)
            self._principals = found
        return self._principals

    def _index_sets(self) -> Iterator[tuple[bytes, str, set[bytes]]]:
        start = self._spring_namespace() + "index:" + SPRING_PRINCIPAL_INDEX + ":"
        for key in self._scan(self._glob(start) + b"*"):
            with self._errors("reading the principal index"):
                try:
                    members = self.client.smembers(key)
                except _redis().ResponseError:
                    continue  # not a set: not Spring's
            yield key, _key_text(key)[len(start) :], members

    def iter_records(self) -> Iterator[Record]:
        total = 0
        no_ttl = 0
        buckets = [0] * len(TTL_BUCKETS)
        for batch in _chunks(self._session_keys(), PIPELINE):
            now_ms = time.time() * 1000
            for record in self._read(batch):
                total += record.size or 0
                deadline = record.version[2]
                if deadline == -1:
                    no_ttl += 1
                else:
                    buckets[_ttl_bucket((deadline - now_ms) / 1000)] += 1
                yield record
        # A whole pass: what size_bytes and extra_stats need, without another one.
        self._memory_total = total
        self._ttl_figures = (no_ttl, buckets)

    def sample(self, limit: int = 50) -> tuple[list[str], list[dict]]:
        records = []
        batch = []
        for item in self._session_keys():
            batch.append(item)
            if len(batch) >= limit:
                break
        if batch:
            records = [r.data for r in self._read(batch, with_principals=False) if r.data]
        keys: dict[str, None] = {}
        for data in records:
            keys.update(dict.fromkeys(data))
        keys.setdefault("$key", None)
        return list(keys), records

    def find(self, session_id: str, id_path: str | None) -> Record | None:
        layout = self.layout
        if layout is not None:
            regex = layout.key_regex(self.prefix)
            base = layout.base(self.prefix)
            for candidate in [session_id] + [base + m + session_id for m in layout.markers]:
                match = regex.match(candidate)
                if match:
                    records = self._read([(_key_bytes(candidate), match.group("id"))])
                    if records:
                        return records[0]
        return super().find(session_id, id_path)

    def count(self) -> int:
        return sum(1 for _ in self._session_keys())

    def size_bytes(self) -> int:
        if self._memory_total is None:
            for _ in self.iter_records():
                pass
        return self._memory_total or 0

    def describe(self) -> dict:
        with self._errors("asking the server"):
            info = self.client.info("server")
        layout = self.layout
        return {
            "kind": self.kind,
            "address": self.address.display,
            "server": f"Redis {info.get('redis_version', '?')}",
            "db": int(self.address.param("db", "0")),
            "prefix": self.prefix,
            "preset": layout.name if layout else None,
            "sessions": self.count(),
        }

    # TTLs

    def lacks_expected_ttl(self, record: Record) -> bool:
        """A session without a TTL where its framework always sets one (Spring: unless its
        maxInactiveInterval is negative, meaning it never expires)."""
        layout = self.layout
        if layout is None or not layout.ttl_expected or record.version is None:
            return False
        if record.version[2] != -1:
            return False
        if layout.name == "spring-redis":
            inactive = (record.data or {}).get("maxInactiveInterval")
            return not (isinstance(inactive, int) and inactive < 0)
        return True

    # removal

    def fingerprint(self, record: Record) -> Any:
        return record.version

    def current(self, candidates: list[Candidate]) -> dict[Any, Record]:
        sessions = [c for c in candidates if isinstance(c.key, str)]
        found: dict[Any, Record] = {}
        layout = self.layout
        if layout is None:
            return found
        regex = layout.key_regex(self.prefix)
        batch = []
        for candidate in sessions:
            match = regex.match(candidate.key)
            if match:
                batch.append((_key_bytes(candidate.key), match.group("id")))
        wanted = {c.key: c.fingerprint for c in sessions}
        for chunk in _chunks(batch, PIPELINE):  # one script call blocks Redis this long
            for record in self._read(chunk):
                if _same(record.version, wanted.get(record.key)):
                    found[record.key] = record
        return found

    def remove(self, candidates: list[Candidate], archive: ArchiveFn) -> RemoveOutcome:
        outcome = RemoveOutcome()
        sessions = [c for c in candidates if isinstance(c.key, str)]
        orphans = [c for c in candidates if not isinstance(c.key, str)]
        for chunk in _chunks(sessions, PIPELINE):
            self._remove_sessions(chunk, archive, outcome)
        if orphans:
            self._remove_orphans(orphans, archive, outcome)
        return outcome

    def _remove_sessions(self, candidates, archive, outcome) -> None:
        current = self.current(candidates)
        outcome.changed.extend(c.key for c in candidates if c.key not in current)
        if not current:
            return
        records = list(current.values())
        archive(records)
        script = self._script(COMPARE_AND_DELETE)
        spring = self.layout is not None and self.layout.name == "spring-redis"
        namespace = self._spring_namespace() if spring else ""
        removable = [r for r in records if r.version[1] is not None]
        with self._errors("removing sessions"):
            strings = all(r.version[0] == "string" for r in removable)
            if removable and not spring and strings and not self._cluster:
                # A script call per SCRIPT_KEYS keys (they share no other key).
                answers: list = []
                for chunk in _chunks(removable, SCRIPT_KEYS):
                    args = [part for r in chunk for part in (r.version[1], str(r.version[2]))]
                    keys = [_key_bytes(r.key) for r in chunk]
                    answers += self._script(DELETE_STRINGS)(keys=keys, args=args)
                replies = iter(answers)
            else:
                batch = self._batch()
                for record in removable:
                    # In a cluster the script takes the session's own key only (one slot).
                    keys, args = self._delete_args(record, spring and not self._cluster, namespace)
                    batch.script(script, keys, args)
                answers = batch.execute() if removable else []
                if spring and self._cluster:
                    self._spring_leftovers(removable, answers, namespace)
                replies = iter(answers)
        replies = [next(replies) if r.version[1] is not None else _UNREMOVABLE for r in records]
        for record, reply in zip(records, replies):
            if reply is _UNREMOVABLE:
                outcome.failed[record.key] = (
                    f"a {record.version[0]} key where a session should be: left for a look"
                )
            elif isinstance(reply, Exception):
                error = self._fault(reply, "removing sessions")
                if "read-only" in error.message or "refused the password" in error.message:
                    raise error
                outcome.failed[record.key] = error.message
            elif reply == 1:
                outcome.removed.append(record)
            else:
                outcome.changed.append(record.key)

    def _spring_leftovers(self, records: list[Record], answers: list, namespace: str) -> None:
        """In a cluster: what goes with each removed Spring session (its expires key, its index
        and expirations members), after it, as Spring's own delete does."""
        pipe = self.client.pipeline(transaction=False)
        for record, answer in zip(records, answers):
            if answer != 1:
                continue
            keys, args = self._delete_args(record, True, namespace)
            extra = int(args[3])
            for key in keys[1 : 1 + extra]:
                pipe.unlink(key)
            for key, member in zip(keys[1 + extra :], args[5 : 5 + int(args[4])]):
                pipe.srem(key, member)
        pipe.execute(raise_on_error=False)

    def _delete_args(self, record: Record, spring: bool, namespace: str):
        kind, digest, deadline = record.version[:3]
        keys: list[bytes] = [_key_bytes(record.key)]
        extra: list[bytes] = []
        sets: list[tuple[bytes, bytes]] = []
        if spring and record.data is not None:
            session_id = record.data.get("id")
            extra.append(_key_bytes(f"{namespace}sessions:expires:{session_id}"))
            principal = record.data.get("principal")
            member = _java_string(str(session_id))
            if principal is not None:
                index = f"{namespace}index:{SPRING_PRINCIPAL_INDEX}:{principal}"
                sets.append((_key_bytes(index), member))
            accessed = record.data.get("lastAccessedTime")
            inactive = record.data.get("maxInactiveInterval")
            if isinstance(accessed, int) and isinstance(inactive, int) and inactive >= 0:
                minute = (accessed + inactive * 1000 + 60_000) // 60_000 * 60_000
                sets.append(
                    (
                        _key_bytes(f"{namespace}expirations:{minute}"),
                        _java_string(f"expires:{session_id}"),
                    )
                )
        keys += extra + [name for name, _ in sets]
        args: list[Any] = [kind, digest or "", str(deadline), len(extra), len(sets)]
        args += [member for _, member in sets]
        if kind == "hash":
            args += list(record.version[3])
        return keys, args

    # orphans

    def orphans(self) -> list[Candidate]:
        """Index members whose session is gone (Spring's principal sets) and `_LOCK` keys left
        by crashed requests (phpredis): what `cleanup --orphans` removes."""
        found: list[Candidate] = []
        layout = self.layout
        if layout is None:
            return found
        if layout.name == "spring-redis":
            namespace = self._spring_namespace()
            for index_key, _name, members in self._index_sets():
                dead = self._dead_members(namespace, members)
                for member, session_id in dead:
                    key = ("index", _key_text(index_key), session_id)
                    found.append(Candidate(key, member, session_id))
        if layout.name == "phpredis":
            for key, session_id, value, _idle in self._stale_locks():
                found.append(Candidate(("lock", _key_text(key), session_id), value, session_id))
        return found

    def _dead_members(self, namespace: str, members: set[bytes]) -> list[tuple[bytes, str]]:
        named = []
        for member in members:
            value = java_value(member)
            if isinstance(value, str):
                named.append((member, value))
        if not named:
            return []
        with self._errors("checking index members"):
            pipe = self.client.pipeline(transaction=False)
            for _, session_id in named:
                pipe.exists(_key_bytes(f"{namespace}sessions:{session_id}"))
            alive = pipe.execute()
        return [item for item, exists in zip(named, alive) if not exists]

    def _locks(self) -> Iterator[tuple[bytes, str, bytes | None, int, int | None]]:
        """(key, session id, value, pttl, idle seconds) of every phpredis `_LOCK` key."""
        layout = self.layout
        base = layout.base(self.prefix)
        regex = _lock_regex(layout, self.prefix)
        keys = []
        for raw in self._scan(self._glob(base + layout.markers[0]) + b"*_LOCK"):
            match = regex.match(_key_text(raw))
            if match and raw not in {k for k, _ in keys}:
                keys.append((raw, match.group("id")))
        for start in range(0, len(keys), PIPELINE):
            chunk = keys[start : start + PIPELINE]
            with self._errors("reading lock keys"):
                pipe = self.client.pipeline(transaction=False)
                for key, _ in chunk:
                    pipe.object("idletime", key)
                    pipe.pttl(key)
                    pipe.get(key)
                replies = pipe.execute(raise_on_error=False)
            for n, (key, session_id) in enumerate(chunk):
                idle, pttl, value = replies[3 * n : 3 * n + 3]
                if isinstance(value, Exception) or isinstance(pttl, Exception):
                    continue
                yield key, session_id, value, pttl, None if isinstance(idle, Exception) else idle

    def _stale_locks(self) -> Iterator[tuple[bytes, str, bytes, int | None]]:
        """Lock keys without expiry whose request is gone: its process, on this host, is not
        running; or the key has sat untouched longer than any request runs (STALE_LOCK_S)."""
        here = socket.gethostname()
        for key, session_id, value, pttl, idle in self._locks():
            if value is None or pttl != -1:
                continue
            host, _, pid = value.decode("utf-8", "replace").rpartition("|")
            if host == here and pid.isdigit():
                # This host's request: gone when its process is; while a PHP process runs under
                # that pid (a request may run for hours) its lock stays. A pid taken since by
                # another program goes by idle time, as another host's lock does.
                if not _pid_alive(int(pid)):
                    yield key, session_id, value, idle
                    continue
                if _pid_runs_php(int(pid)):
                    continue
            if idle is not None and idle > STALE_LOCK_S:
                yield key, session_id, value, idle

    def _remove_orphans(self, candidates, archive, outcome) -> None:
        records = []
        for candidate in candidates:
            what, name, _session_id = candidate.key
            if what == "index":
                data = {
                    "orphan": "index member",
                    "index": name,
                    "member_b64": _b64(candidate.fingerprint),
                }
            else:
                data = {"orphan": "lock", "lock": name, "value_b64": _b64(candidate.fingerprint)}
            records.append(Record(key=candidate.key, data=data, size=None))
        archive(records)
        member_script = self._script(DROP_MEMBER)
        lock_script = self._script(DROP_LOCK)
        namespace = self._spring_namespace()
        with self._errors("removing orphans"):
            alive: dict = {}
            if self._cluster:
                # The set and the session's key lie in different slots: ask, then take out.
                pipe = self.client.pipeline(transaction=False)
                members = [c for c in candidates if c.key[0] == "index"]
                for candidate in members:
                    pipe.exists(_key_bytes(f"{namespace}sessions:{candidate.key[2]}"))
                alive = dict(zip([c.key for c in members], pipe.execute()))
            batch = self._batch()
            for candidate in candidates:
                what, name, session_id = candidate.key
                if what == "index" and self._cluster:
                    if alive.get(candidate.key):
                        batch.command("exists", b"")  # answers 0: left alone
                    else:
                        batch.command("srem", _key_bytes(name), candidate.fingerprint)
                elif what == "index":
                    session_key = f"{namespace}sessions:{session_id}"
                    batch.script(
                        member_script,
                        [_key_bytes(name), _key_bytes(session_key)],
                        [candidate.fingerprint],
                    )
                else:
                    digest = hashlib.sha1(candidate.fingerprint).hexdigest()
                    batch.script(lock_script, [_key_bytes(name)], [digest])
            replies = batch.execute()
        for record, reply in zip(records, replies):
            if isinstance(reply, Exception):
                outcome.failed[record.key] = self._fault(reply, "removing orphans").message
            elif reply == 1:
                outcome.removed.append(record)
            else:
                outcome.changed.append(record.key)

    # stats

    def extra_stats(self) -> dict:
        """What only Redis has: sessions without a TTL, the TTL distribution, memory by prefix,
        index sets and their dead members, lock keys without expiry."""
        layout = self.layout
        out: dict[str, Any] = {"preset": layout.name if layout else None}
        if self._ttl_figures is None:
            for _ in self.iter_records():
                pass
        no_ttl, buckets = self._ttl_figures
        out["sessions_without_ttl"] = no_ttl
        out["ttl_histogram"] = [
            {"bucket": label, "count": count} for (label, _), count in zip(TTL_BUCKETS, buckets)
        ]
        out["memory_by_prefix"] = self._memory_by_prefix()
        if layout is not None and layout.name == "spring-redis":
            sets = members = dead = 0
            namespace = self._spring_namespace()
            for _key, _name, found in self._index_sets():
                sets += 1
                members += len(found)
                dead += len(self._dead_members(namespace, found))
            out["index_sets"] = sets
            out["index_members"] = members
            out["dead_index_members"] = dead
        if layout is not None and layout.name == "phpredis":
            locks = list(self._locks())
            out["lock_keys"] = len(locks)
            out["lock_keys_without_expiry"] = sum(1 for item in locks if item[3] == -1)
            out["stale_lock_keys"] = sum(1 for _ in self._stale_locks())
        return out

    def _memory_by_prefix(self) -> list[dict]:
        """Keys and bytes under the address's prefix, by the part of each name up to its last
        `:` (at most 20 groups, the largest; the rest as "other")."""
        sizes: Counter = Counter()
        counts: Counter = Counter()
        seen: set[int] = set()
        fresh = (k for k in self._scan(self._glob(self.prefix) + b"*") if hash(k) not in seen)
        for chunk in _chunks(fresh, SCRIPT_KEYS):
            seen.update(map(hash, chunk))
            with self._errors("measuring memory"):
                if self._cluster:
                    pipe = self.client.pipeline(transaction=False)
                    for key in chunk:
                        pipe.memory_usage(key, samples=0)
                    replies = pipe.execute(raise_on_error=False)
                else:
                    replies = self._script(MEMORY_BATCH)(keys=chunk)
            for key, size in zip(chunk, replies):
                text = _key_text(key)[len(self.prefix) :]
                group = self.prefix + (text.rpartition(":")[0] + ":" if ":" in text else "")
                counts[group] += 1
                sizes[group] += size if isinstance(size, int) else 0
        ranked = sorted(sizes, key=lambda g: (-sizes[g], g))
        out = [{"prefix": g, "keys": counts[g], "bytes": sizes[g]} for g in ranked[:20]]
        if len(ranked) > 20:
            rest = ranked[20:]
            out.append(
                {
                    "prefix": "other",
                    "keys": sum(counts[g] for g in rest),
                    "bytes": sum(sizes[g] for g in rest),
                }
            )
        return out

    # restore

    def prepare_restore(self, entry: dict, id_path: str | None, source_kind: str | None):
        """Refuse (with why) what `insert` could not write whole, or would write anywhere but
        one of this store's own keys: an archive may have been edited by hand."""
        record = entry.get("record")
        if source_kind != self.kind:
            return "a Redis store takes back only what a Redis store's cleanup archived"
        if record is None and isinstance(entry.get("raw_b64"), str):
            # A value that did not decode (`cleanup --invalid`): its bytes, put back as they were.
            record = entry["record"] = {"value_b64": entry["raw_b64"], "ttl_expires": None}
        if not isinstance(record, dict):
            return "a Redis store takes back only what a Redis store's cleanup archived"
        if not any(k in record for k in ("value_b64", "hash_b64", "orphan")):
            return "the archive keeps no Redis value for it"
        try:
            return self._restore_refusal(entry, record)
        except (ValueError, TypeError):
            return "its archived value is not base64"

    def _restore_refusal(self, entry: dict, record: dict) -> str | None:
        def b64(value) -> bytes:
            if not isinstance(value, str):
                raise TypeError(value)
            return base64.b64decode(value, validate=True)

        layouts = [self.layout] if self.layout is not None else list(LAYOUTS)
        orphan = record.get("orphan")
        if orphan is not None:
            if orphan == "lock":
                name, raw = record.get("lock"), record.get("value_b64")
                ok = [lay for lay in layouts if lay.name == "phpredis"]
                pattern = ok and _lock_regex(ok[0], self.prefix)
            elif orphan == "index member":
                name, raw = record.get("index"), record.get("member_b64")
                start = self._spring_namespace() + "index:" + SPRING_PRINCIPAL_INDEX + ":"
                ok = [lay for lay in layouts if lay.name == "spring-redis"]
                pattern = ok and re.compile(f"^{re.escape(start)}.+$", re.S)
            else:
                return f"unknown orphan kind {str(orphan)[:40]!r}"
            if not isinstance(name, str) or not pattern or not pattern.match(name):
                return "its key is not one of this store's lock or index keys"
            b64(raw)
            return None
        key = entry.get("key")
        kind = "hash" if "hash_b64" in record else "string"
        if not isinstance(key, str) or not any(
            lay.type == kind and lay.key_regex(self.prefix).match(key) for lay in layouts
        ):
            return f"its key is not a {kind} session key of this store (prefix {self.prefix!r})"
        expires = record.get("ttl_expires")
        if expires is not None:
            if isinstance(expires, bool) or not isinstance(expires, (int, float)):
                return "its ttl_expires is not a number"
            if not expires - time.time() < MAX_RESTORE_TTL_S:  # also NaN and infinity
                return "its ttl_expires lies more than 100 years ahead"
        if kind == "hash":
            fields = record["hash_b64"]
            if not isinstance(fields, dict) or not fields:
                return "its hash_b64 is not an object of fields"
            for name, value in fields.items():
                b64(name)
                b64(value)
        else:
            b64(record.get("value_b64"))
        return None

    def insert(self, entries: list[dict], id_path: str | None) -> tuple:
        restored = skipped = 0
        planned: list[dict] = []  # the entry of each command, in order
        refused: list[tuple[dict, str]] = []
        now = time.time()
        hash_script = self._script(RESTORE_HASH)
        with self._errors("restoring sessions"):
            pipe = self._batch()
            for entry in entries:
                record = entry.get("record") or {}
                key = entry.get("key")
                if record.get("orphan") == "index member":
                    member = base64.b64decode(record["member_b64"])
                    pipe.command("sadd", _key_bytes(record["index"]), member)
                    planned.append(entry)
                    continue
                if record.get("orphan") == "lock":
                    lock = _key_bytes(record["lock"])
                    pipe.command("set", lock, base64.b64decode(record["value_b64"]), nx=True)
                    planned.append(entry)
                    continue
                if not isinstance(key, str):
                    skipped += 1
                    continue
                expires = record.get("ttl_expires")
                ttl_ms = -1
                if isinstance(expires, (int, float)):
                    ttl_ms = int((expires - now) * 1000)
                    if ttl_ms <= 0:
                        skipped += 1  # its TTL ran out meanwhile: Redis would have removed it
                        continue
                if "hash_b64" in record:
                    args: list[Any] = [ttl_ms]
                    for name, value in record["hash_b64"].items():
                        args += [base64.b64decode(name), base64.b64decode(value)]
                    pipe.script(hash_script, [_key_bytes(key)], args)
                else:
                    value = base64.b64decode(record["value_b64"])
                    pipe.command(
                        "set", _key_bytes(key), value, nx=True, px=ttl_ms if ttl_ms > 0 else None
                    )
                planned.append(entry)
            replies = pipe.execute() if planned else []
        for entry, reply in zip(planned, replies):
            if isinstance(reply, _redis().OutOfMemoryError):
                # maxmemory reached: this one is not written, the rest are counted as they went.
                refused.append((entry, "Redis is at its maxmemory: not written"))
                continue
            if isinstance(reply, Exception):
                raise self._fault(reply, "restoring sessions")
            if reply in (1, True):
                restored += 1
            else:
                skipped += 1
        return restored, skipped, refused

    # the lock every host sees

    def cross_host_lock(self, identity: str):
        lock_key = "sessionctl:lock:" + hashlib.sha1(identity.encode()).hexdigest()[:20]
        store = self

        @contextlib.contextmanager
        def held():
            token = f"{socket.gethostname()}|{os.getpid()}|{secrets.token_hex(8)}"
            client = store.client
            with store._errors("taking the cleanup lock"):
                taken = client.set(lock_key, token, nx=True, px=LOCK_TTL_MS)
                if not taken:
                    # A run killed on this host leaves its lock for LOCK_TTL_MS: its process
                    # is gone, so the lock is taken over (only if it is still that run's).
                    holder = client.get(lock_key) or b""
                    host, _, rest = holder.decode("utf-8", "replace").partition("|")
                    pid = rest.partition("|")[0]
                    mine = host == socket.gethostname() and pid.isdigit()
                    if mine and not _pid_alive(int(pid)):
                        taken = client.register_script(LOCK_TAKEOVER)(
                            keys=[lock_key], args=[holder, token, LOCK_TTL_MS]
                        )
            if not taken:
                raise busy_error(
                    f"another cleanup of {store.address.display} is running (Redis lock "
                    f"{lock_key})",
                    "wait for it to finish",
                )
            stop = threading.Event()
            renew = client.register_script(LOCK_RENEW)

            def keep_alive():
                while not stop.wait(LOCK_TTL_MS / 3000):
                    with contextlib.suppress(Exception):
                        renew(keys=[lock_key], args=[token, LOCK_TTL_MS])

            thread = threading.Thread(target=keep_alive, name="sessionctl-redis-lock", daemon=True)
            thread.start()
            try:
                yield
            finally:
                stop.set()
                thread.join(timeout=5)
                with contextlib.suppress(Exception):
                    client.register_script(LOCK_RELEASE)(keys=[lock_key], args=[token])

        return held()


def _lock_regex(layout: Layout, prefix: str) -> re.Pattern:
    """A phpredis `_LOCK` key under the prefix; the group `id` is its session's id."""
    base = re.escape(layout.base(prefix)) + re.escape(layout.markers[0])
    return re.compile(f"^{base}(?P<id>{layout.id_pattern})_LOCK$", re.S)


def _ttl_bucket(seconds: float) -> int:
    for n, (_, bound) in enumerate(TTL_BUCKETS):
        if seconds < bound:
            return n
    return len(TTL_BUCKETS) - 1


def _chunks(items, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


class _Batch:
    """Commands and scripts in one round trip; in a cluster, where redis-py runs no script in
    a pipeline, the scripts go one by one after the pipeline. Replies in the order given, an
    error reply as its exception."""

    def __init__(self, pipe, cluster: bool):
        self.pipe = pipe
        self.cluster = cluster
        self.order: list = []

    def command(self, name: str, *args, **kwargs) -> None:
        getattr(self.pipe, name)(*args, **kwargs)
        self.order.append(None)

    def script(self, script, keys, args) -> None:
        if self.cluster:
            self.order.append(lambda: script(keys=keys, args=args))
        else:
            script(keys=keys, args=args, client=self.pipe)
            self.order.append(None)

    def execute(self) -> list:
        piped = iter(self.pipe.execute(raise_on_error=False) if None in self.order else [])
        out = []
        for item in self.order:
            if item is None:
                out.append(next(piped))
                continue
            try:
                out.append(item())
            except _redis().ResponseError as exc:
                out.append(exc)
        return out


#: The reply of a key no script was run for (not a string or hash: it cannot be compared).
_UNREMOVABLE = object()


def _spring_base(prefix: str) -> str:
    for tail in ("spring:session:sessions:", "spring:session:"):
        if prefix.endswith(tail):
            return prefix[: -len(tail)]
    return prefix


def _java_string(value: str) -> bytes:
    raw = value.encode()
    return _JAVA_MAGIC + b"t" + struct.pack(">H", len(raw)) + raw


def _same(version: Any, wanted: Any) -> bool:
    """Whether a record read now is the one selected: same type and digest, and the same
    expiry (within DEADLINE_SLACK_MS), or no expiry both times."""
    if version is None or wanted is None:
        return False
    if version[0] != wanted[0] or version[1] != wanted[1]:
        return False
    if (version[2] == -1) != (wanted[2] == -1):
        return False
    return version[2] == -1 or abs(version[2] - wanted[2]) <= DEADLINE_SLACK_MS


def _pid_runs_php(pid: int) -> bool:
    """Whether the process is PHP (php, php-fpm8.2, php-cgi...); True where /proc cannot say."""
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as handle:
            return "php" in handle.read().lower()
    except OSError:
        return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
