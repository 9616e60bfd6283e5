"""Which field of a record plays which role, and how records become Sessions.

A mapping names, for each role (id, created, accessed, expires, group), a path into the record:
a column or key name, with dots reaching into nested objects and into JSON held in a text
column (`sess.cookie.expires`). `$key` stands for the store's own key (an object key, a file
name). Mappings come from presets, from detection over a sample of records or a table's
columns, from the config file and from `--field ROLE=PATH`, in rising order of precedence.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import tzinfo

from . import model
from .errors import usage_error
from .model import Reason, Record, Session
from .timeparse import UTC, TimestampError, parse_timestamp

ROLES = ("id", "created", "accessed", "expires", "group")
TIME_ROLES = ("created", "accessed", "expires")
KEY_PATH = "$key"

_MISSING = object()


def norm_name(name: str) -> str:
    """`createdAt`, `created_at` and `CREATED_AT` all match `createdat`."""
    return name.replace("_", "").replace("-", "").lower()


# Names that commonly play each role, best first. Compared after `_norm`.
CANDIDATES: dict[str, tuple[str, ...]] = {
    "id": ("session_id", "sessionId", "session_key", "sid", "id", "chatId", "session"),
    "created": (
        "created_at",
        "createdAt",
        "CREATION_TIME",
        "created",
        "create_time",
        "created_on",
        "started_at",
        "start_time",
    ),
    "accessed": (
        "last_accessed",
        "lastAccessed",
        "last_access",
        "LAST_ACCESS_TIME",
        "last_used",
        "lastUsed",
        "last_update_time",
        "updated_at",
        "updatedAt",
        "last_activity",
        "last_seen",
        "accessed_at",
    ),
    "expires": (
        "expires",
        "expire",
        "expired",
        "expire_date",
        "expires_at",
        "expiry",
        "EXPIRY_TIME",
        "expiration",
        "expire_at",
        "valid_until",
    ),
    "group": (
        "userId",
        "user_id",
        "workspaceSlug",
        "workspace_name",
        "workspace",
        "PRINCIPAL_NAME",
        "username",
        "user",
        "owner",
        "tenant",
        "account_id",
    ),
}
_NORMALISED_CANDIDATES = {
    role: tuple(norm_name(c) for c in names) for role, names in CANDIDATES.items()
}

# Fields that hold the session payload. They are shown redacted unless --show-secrets.
PAYLOAD_NAMES = frozenset(
    norm_name(n)
    for n in ("session_data", "sess", "data", "state", "payload", "attributes", "events", "value")
)
SECRET_PATTERN = re.compile(
    r"token|secret|passw|cookie|auth|credential|api_?key|private|jwt|bearer|csrf|xsrf", re.I
)


#: A payload of "*": every field of the record is payload but the store's own ($mtime, ...): a
#: PHP session's variables are all the application's, none known to be safe to show.
ALL_FIELDS = "*"


def is_secret_name(name: str) -> bool:
    return norm_name(name) in PAYLOAD_NAMES or bool(SECRET_PATTERN.search(name))


def is_secret_path(path: str, payload: Iterable[str] = ()) -> bool:
    """Whether a value at `path` is shown redacted: it lies in a payload field, or any part of
    the path looks secret (`sess.user`, `auth.id`, `api_token`). Messages never quote it."""
    parts = split_path(path)
    tops = {p.split(".")[0] for p in payload}
    if ALL_FIELDS in tops and not str(parts[0]).startswith("$"):
        return True
    return parts[0] in tops or any(is_secret_name(part) for part in parts)


@dataclass(frozen=True)
class Mapping:
    """Role -> path, payload paths, and where each choice came from (for --explain)."""

    fields: dict[str, str | None]
    payload: tuple[str, ...] = ()
    origin: dict[str, str] = field(default_factory=dict)
    preset: str | None = None

    def path(self, role: str) -> str | None:
        return self.fields.get(role)

    def with_overrides(self, overrides: dict[str, str | None], origin: str) -> Mapping:
        for role in overrides:
            if role not in ROLES and role != "payload":
                raise usage_error(
                    f"unknown field role {role!r}", f"roles are: {', '.join(ROLES)}, payload"
                )
        fields = dict(self.fields)
        origins = dict(self.origin)
        payload = self.payload
        for role, path in overrides.items():
            if role == "payload":
                payload = tuple(p.strip() for p in str(path).split(",") if p.strip())
                origins["payload"] = origin
                continue
            fields[role] = path or None
            origins[role] = origin
        return replace(self, fields=fields, payload=payload, origin=origins)

    def explain(self) -> list[dict]:
        rows = [
            {"role": role, "path": self.fields.get(role), "from": self.origin.get(role, "-")}
            for role in ROLES
        ]
        rows.append(
            {
                "role": "payload",
                "path": ",".join(self.payload) or None,
                "from": self.origin.get("payload", "-"),
            }
        )
        return rows

    def columns_used(self) -> set[str]:
        """Top-level keys/columns any role reads (the first segment of each path)."""
        used = {split_path(p)[0] for p in self.fields.values() if p and p != KEY_PATH}
        return used


def split_path(path: str) -> tuple[str, ...]:
    return tuple(path.split("."))


def resolve(data: dict, path: tuple[str, ...], key: object = None, cache: dict | None = None):
    """Follow `path` into `data`; JSON text met on the way is decoded. `_MISSING` if absent."""
    if path == (KEY_PATH,):
        return key
    value: object = data
    for depth, segment in enumerate(path):
        if isinstance(value, (str, bytes)) and depth > 0:
            value = _decode_json_text(value, path[:depth], cache)
        if isinstance(value, dict):
            value = value.get(segment, _MISSING)
        elif isinstance(value, list) and segment.isdigit() and int(segment) < len(value):
            value = value[int(segment)]
        else:
            return _MISSING
        if value is _MISSING:
            return _MISSING
    return value


def _decode_json_text(value: str | bytes, prefix: tuple[str, ...], cache: dict | None):
    if cache is not None and prefix in cache:
        return cache[prefix]
    try:
        decoded = json.loads(value)
    except (ValueError, RecursionError):
        decoded = _MISSING
    if cache is not None:
        cache[prefix] = decoded
    return decoded


def lookup(data: dict, path: str, key: object = None) -> object:
    """Public form of `resolve` for one path: returns None when the path is absent."""
    value = resolve(data, split_path(path), key)
    return None if value is _MISSING else value


def is_missing(value: object) -> bool:
    return value is _MISSING


class Mapper:
    """A Mapping compiled for speed: turns Records into Sessions."""

    def __init__(self, mapping: Mapping, tz: tzinfo = UTC):
        self.mapping = mapping
        self.tz = tz
        self._paths = {
            role: split_path(path) for role, path in mapping.fields.items() if path is not None
        }
        # Per role: the one plain field it reads (None when the path is dotted or the key),
        # its path, and whether it is a time: decided once, not per record.
        self._plan = [
            (
                role,
                path[0] if len(path) == 1 and path[0] != KEY_PATH else None,
                path,
                role in _TIME_ROLE_SET,
            )
            for role, path in self._paths.items()
        ]

    def id_of(self, record: Record) -> str | None:
        """Just the session id, as `session()` would read it (for hot paths that need no more)."""
        path = self._paths.get("id")
        if path is None:
            return None
        if record.data is None:
            return str(record.key) if path == (KEY_PATH,) else None
        if len(path) == 1 and path[0] != KEY_PATH:
            value = record.data.get(path[0], _MISSING)
        else:
            value = resolve(record.data, path, record.key)
        if value is _MISSING or value is None or isinstance(value, (dict, list)):
            return None
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)

    def session(self, record: Record) -> Session:
        session = Session(id=None, key=record.key, record=record)
        data = record.data
        if data is None:
            session.problems.append(
                Reason(model.CORRUPT, record.error or "record cannot be decoded")
            )
            if self._paths.get("id") == (KEY_PATH,):
                session.id = str(record.key)
            return session
        cache: dict = {}
        tz = self.tz
        for role, field_name, path, is_time in self._plan:
            if field_name is not None:
                value = data.get(field_name)  # the common case: a plain field or column
            else:
                value = resolve(data, path, record.key, cache)
            if value is _MISSING and is_time and cache:
                # A time inside text that should hold JSON (`sess.cookie.expires`) and does
                # not (cut short, say): unreadable, so invalid; never "no expiry", active.
                broken = next(
                    (p for p in cache if cache[p] is _MISSING and path[: len(p)] == p), None
                )
                if broken is not None:
                    field = ".".join(broken)
                    session.problems.append(
                        Reason(
                            model.BAD_TIMESTAMP,
                            f"{role}: field {field} does not hold JSON text",
                            self.mapping.fields[role],
                        )
                    )
                continue
            if value is None or value is _MISSING:
                continue
            if is_time:
                kind = type(value)
                # Plain epoch seconds, the commonest stored form, without a function call.
                if (kind is float or kind is int) and 0 <= value < _FAST_EPOCH_LIMIT:
                    setattr(session, role, float(value))
                    continue
                try:
                    setattr(session, role, parse_timestamp(value, tz))
                except TimestampError as exc:
                    path = self.mapping.fields[role]
                    # The message quotes the value: not when the field is one redacted on show.
                    secret = is_secret_path(path, self.mapping.payload)
                    text = f"{role}: unreadable" if secret else f"{role}: {exc}"
                    session.problems.append(Reason(model.BAD_TIMESTAMP, text, path))
            elif role == "id":
                if isinstance(value, (dict, list)):
                    session.problems.append(
                        Reason(model.WRONG_TYPE, "id is not a scalar", self.mapping.fields["id"])
                    )
                elif isinstance(value, bytes):
                    session.id = value.decode("utf-8", "replace")
                else:
                    session.id = value if type(value) is str else str(value)
            elif not isinstance(value, (dict, list)):  # group
                session.group = value if type(value) is str else str(value)
        return session


_TIME_ROLE_SET = frozenset(TIME_ROLES)
#: Below this, a number is epoch seconds for `parse_timestamp` too (its milliseconds threshold).
_FAST_EPOCH_LIMIT = 1e11


# --- presets ---------------------------------------------------------------------------------

#: The shapes a store's records come in (a Store's `shape`).
TABLE = "table"
DOCUMENT = "document"


@dataclass(frozen=True)
class Preset:
    name: str
    title: str
    #: The shapes of store it describes: "document" (records with the fields they carry, in a
    #: JSON file, a folder, keys in Redis) or "table" (rows of fixed columns, in any database).
    shapes: tuple[str, ...]
    fields: dict[str, str | None]
    #: Lowercased keys or columns that identify the shape in detection.
    signature: frozenset[str]
    table: str | None = None
    payload: tuple[str, ...] = ()
    #: Expiry policy and rules operators of that application run with.
    policy: dict = field(default_factory=dict)
    rules: dict = field(default_factory=dict)
    notes: str = ""


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            name="provisioner",
            title="seed 000: chat workspace provisioner sessions.json",
            shapes=(DOCUMENT,),
            fields={
                "id": "sessionId",
                "created": "createdAt",
                "accessed": None,
                "expires": None,
                "group": "userId",
            },
            signature=frozenset({"userid", "workspaceslug", "createdat"}),
            rules={"required": ["userId", "workspaceSlug", "created"]},
            notes="records keyed by session id or carrying sessionId; tear down with --hook",
        ),
        Preset(
            name="raptor",
            title="seed 001: browser automation, one JSON file per session",
            shapes=(DOCUMENT,),
            fields={
                "id": "session_id",
                "created": "created_at",
                "accessed": "last_accessed",
                "expires": None,
                "group": "browser_type",
            },
            signature=frozenset({"session_id", "cdp_url", "last_accessed"}),
            policy={"idle_timeout": "7d"},
            rules={
                "required": ["id", "cdp_url", "accessed"],
                "allowed": {"browser_type": ["chromium", "firefox", "webkit"]},
                "types": {"cdp_url": "string"},
            },
        ),
        Preset(
            name="bash-sessions",
            title="seed 003: bash sessions service, sessions per workspace",
            shapes=(DOCUMENT, TABLE),
            fields={
                "id": "session_id",
                "created": "created_at",
                "accessed": "last_used",
                "expires": None,
                "group": "workspace_name",
            },
            signature=frozenset({"session_id", "workspace_name", "last_used"}),
            policy={"idle_timeout": "1h"},
        ),
        Preset(
            name="copilot",
            title="seed 004: interview co-pilot, sessions.json or SQLite",
            shapes=(DOCUMENT, TABLE),
            fields={
                "id": "id",
                "created": "created_at",
                "accessed": "last_update_time",
                "expires": None,
                "group": "user_id",
            },
            signature=frozenset({"id", "app_name", "user_id", "last_update_time"}),
            table="sessions",
            payload=("state", "events"),
            policy={"idle_timeout": "168h"},
        ),
        Preset(
            name="django",
            title="Django django_session (database backend)",
            shapes=(TABLE,),
            fields={
                "id": "session_key",
                "created": None,
                "accessed": None,
                "expires": "expire_date",
                "group": None,
            },
            signature=frozenset({"session_key", "session_data", "expire_date"}),
            table="django_session",
            payload=("session_data",),
        ),
        Preset(
            name="rails",
            title="Rails activerecord-session_store sessions",
            shapes=(TABLE,),
            fields={
                "id": "session_id",
                "created": "created_at",
                "accessed": "updated_at",
                "expires": None,
                "group": None,
            },
            signature=frozenset({"session_id", "data", "created_at", "updated_at"}),
            table="sessions",
            payload=("data",),
            # What `rake db:sessions:trim` removes by default (SESSION_DAYS_TRIM_THRESHOLD).
            policy={"idle_timeout": "30d"},
        ),
        Preset(
            name="express",
            title="express-session connect-sqlite3 sessions (expired in epoch ms)",
            shapes=(TABLE,),
            fields={
                "id": "sid",
                "created": None,
                "accessed": None,
                "expires": "expired",
                "group": None,
            },
            signature=frozenset({"sid", "expired", "sess"}),
            table="sessions",
            payload=("sess",),
        ),
        Preset(
            name="connect-pg-simple",
            title='express-session connect-pg-simple "session" (expire: naive, server TimeZone)',
            shapes=(TABLE,),
            fields={
                "id": "sid",
                "created": None,
                "accessed": None,
                "expires": "expire",
                "group": None,
            },
            signature=frozenset({"sid", "sess", "expire"}),
            table="session",
            payload=("sess",),
        ),
        Preset(
            name="express-mysql-session",
            title="express-session express-mysql-session sessions (expires in unix seconds)",
            shapes=(TABLE,),
            fields={
                "id": "session_id",
                "created": None,
                "accessed": None,
                "expires": "expires",
                "group": None,
            },
            signature=frozenset({"session_id", "expires", "data"}),
            table="sessions",
            payload=("data",),
            notes="its own schema has no index on expires: its cleanup scans the whole table",
        ),
        Preset(
            name="php",
            title="PHP session files (session.save_handler = files): sess_<id>, by file time",
            shapes=(DOCUMENT,),
            fields={
                "id": "$key",
                "created": None,
                "accessed": "$mtime",
                "expires": None,
                "group": None,
            },
            signature=frozenset({"$mtime", "$ctime"}),
            payload=(ALL_FIELDS,),
            notes="idle timeout: session.gc_maxlifetime (--php-ini); "
            "judge by ctime as sessionclean does with --field accessed='$ctime'; "
            "a user id in $_SESSION as the group: --field group=user_id",
        ),
        Preset(
            name="flask",
            title="Flask-Session SQLAlchemy sessions",
            shapes=(TABLE,),
            fields={
                "id": "session_id",
                "created": None,
                "accessed": None,
                "expires": "expiry",
                "group": None,
            },
            signature=frozenset({"id", "session_id", "data", "expiry"}),
            table="sessions",
            payload=("data",),
        ),
        Preset(
            name="spring",
            title="Spring Session JDBC SPRING_SESSION (times in epoch ms)",
            shapes=(TABLE,),
            fields={
                "id": "SESSION_ID",
                "created": "CREATION_TIME",
                "accessed": "LAST_ACCESS_TIME",
                "expires": "EXPIRY_TIME",
                "group": "PRINCIPAL_NAME",
            },
            signature=frozenset({"session_id", "creation_time", "last_access_time", "expiry_time"}),
            table="SPRING_SESSION",
            notes="SPRING_SESSION_ATTRIBUTES rows go with their session (ON DELETE CASCADE)",
        ),
        # Redis keys (stores/redis.py): each record carries its key's type, ttl (seconds, None
        # when it has none), ttl_expires (when Redis will drop it), memory and idle seconds;
        # value_b64 / hash_b64 keep the value for the archive (redacted, never decoded).
        Preset(
            name="connect-redis",
            title="connect-redis (express-session) keys sess:<sid> in Redis, JSON",
            shapes=(DOCUMENT,),
            fields={
                "id": "sid",
                "created": None,
                "accessed": None,
                "expires": "sess.cookie.expires",
                "group": None,
            },
            signature=frozenset({"sid", "sess", "value_b64", "ttl"}),
            payload=("sess", "value_b64"),
        ),
        Preset(
            name="django-cache",
            title="Django cache / cached_db sessions in Redis (pickle: opaque, never unpickled)",
            shapes=(DOCUMENT,),
            fields={
                "id": "session_key",
                "created": None,
                "accessed": None,
                "expires": "ttl_expires",
                "group": None,
            },
            signature=frozenset({"session_key", "value_b64", "ttl"}),
            payload=("value_b64",),
        ),
        Preset(
            name="spring-redis",
            title="Spring Session RedisIndexedSessionRepository hashes (times in epoch ms)",
            shapes=(DOCUMENT,),
            fields={
                "id": "id",
                "created": "creationTime",
                "accessed": "lastAccessedTime",
                "expires": "expiresAt",
                "group": "principal",
            },
            signature=frozenset(
                {"creationtime", "lastaccessedtime", "maxinactiveinterval", "hash_b64"}
            ),
            payload=("attributes", "hash_b64"),
            notes="principal from the principal index sets; --orphans takes their dead members",
        ),
        Preset(
            name="rails-redis",
            title="Rails redis-session-store / redis-rack sessions (Marshal: opaque)",
            shapes=(DOCUMENT,),
            fields={
                "id": "session_id",
                "created": None,
                "accessed": None,
                "expires": "ttl_expires",
                "group": None,
            },
            signature=frozenset({"session_id", "value_b64", "ttl"}),
            payload=("value_b64",),
        ),
        Preset(
            name="flask-redis",
            title="Flask-Session redis sessions session:<sid> (msgpack: opaque without msgpack)",
            shapes=(DOCUMENT,),
            fields={
                "id": "sid",
                "created": None,
                "accessed": None,
                "expires": "ttl_expires",
                "group": None,
            },
            signature=frozenset({"sid", "value_b64", "ttl"}),
            payload=("data", "value_b64"),
        ),
        Preset(
            name="phpredis",
            title="PHP phpredis sessions PHPREDIS_SESSION:<sid> (and their _LOCK keys)",
            shapes=(DOCUMENT,),
            fields={
                "id": "sid",
                "created": None,
                "accessed": None,
                "expires": "ttl_expires",
                "group": None,
            },
            signature=frozenset({"sid", "value_b64", "ttl"}),
            payload=("value_b64",),
            notes="--orphans takes _LOCK keys of crashed requests",
        ),
    )
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise usage_error(
            f"unknown preset {name!r}", f"choose one of: {', '.join(PRESETS)}"
        ) from None


def preset_mapping(preset: Preset, how: str, columns: Iterable[str] | None = None) -> Mapping:
    """The preset's roles; with a table's `columns`, each named as the table spells it (SQL
    compares names without case: PostgreSQL folds SPRING_SESSION's columns to lowercase)."""
    origin = {role: how for role in ROLES}
    if preset.payload:
        origin["payload"] = how
    spelled = {}
    if columns is not None:
        for column in columns:
            spelled.setdefault(column.lower(), []).append(column)

    def as_spelled(path: str | None) -> str | None:
        if path is None or not spelled:
            return path
        top, dot, rest = path.partition(".")
        same = spelled.get(top.lower(), [])
        if top in same or len(same) != 1:
            return path
        return same[0] + dot + rest

    fields = {role: as_spelled(preset.fields.get(role)) for role in ROLES}
    payload = tuple(as_spelled(p) or p for p in preset.payload)
    return Mapping(fields=fields, payload=payload, origin=origin, preset=preset.name)


def absent_fields(preset: Preset, keys: Iterable[str], shape: str) -> list[str]:
    """The preset's id and time fields that the keys (or columns) lack.

    A record keyed by the store (an object key, a file name) has its id there. Columns are
    compared as SQL compares them, without case; record keys exactly.
    """
    keys = set(keys)
    lowered = {k.lower() for k in keys} if shape == TABLE else None
    absent = []
    for role in ("id", *TIME_ROLES):
        path = preset.fields.get(role)
        if path is None:
            continue
        top = split_path(path)[0]
        if top in keys or (lowered is not None and top.lower() in lowered):
            continue
        if role == "id" and KEY_PATH in keys:
            continue
        absent.append(path)
    return absent


def detect_preset(keys: Iterable[str], shape: str, table: str | None = None) -> Preset | None:
    """The preset whose signature the keys (or columns) carry; the most specific wins.

    `shape` is TABLE (keys are a table's columns, `table` its name) or DOCUMENT (keys are the
    fields records carry): one preset serves the same table in SQLite, PostgreSQL or MySQL.

    A preset whose id or time fields are absent does not match, whatever else the records
    share with it: its mapping would read nothing, and judge idleness from the wrong time.
    """
    keys = list(keys)
    lowered = {k.lower() for k in keys}
    best: Preset | None = None
    for preset in PRESETS.values():
        if shape not in preset.shapes or not preset.signature <= lowered:
            continue
        if absent_fields(preset, keys, shape):
            continue
        better = best is None or len(preset.signature) > len(best.signature)
        same_size_table_match = (
            best is not None
            and len(preset.signature) == len(best.signature)
            and table is not None
            and (preset.table or "").lower() == table.lower()
        )
        if better or same_size_table_match:
            best = preset
    return best


def detect_mapping(keys: Iterable[str], sample: Iterable[dict] = ()) -> Mapping:
    """Roles from common field names among `keys`; `sample` records help find nested fields."""
    by_norm: dict[str, str] = {}
    for key in keys:
        by_norm.setdefault(norm_name(key), key)
    fields: dict[str, str | None] = {}
    origin: dict[str, str] = {}
    for role in ROLES:
        fields[role] = None
        for candidate in _NORMALISED_CANDIDATES[role]:
            if candidate in by_norm:
                fields[role] = by_norm[candidate]
                origin[role] = "detected by name"
                break
    payload = tuple(key for norm, key in by_norm.items() if norm in PAYLOAD_NAMES)
    if payload:
        origin["payload"] = "detected by name"
    if fields["expires"] is None:
        # express-session and friends keep the cookie's expiry inside the JSON payload.
        for record in sample:
            for column in payload:
                nested = lookup(record, f"{column}.cookie.expires")
                if nested is not None:
                    fields["expires"] = f"{column}.cookie.expires"
                    origin["expires"] = "detected inside the payload"
                    break
            if fields["expires"] is not None:
                break
    # Two roles on one field happens with names like `session`; keep the first role only.
    return Mapping(fields=fields, payload=payload, origin=origin)


def fill_by_name(mapping: Mapping, detected: Mapping) -> Mapping:
    """A preset's mapping with the roles it leaves empty taken from name detection (a field
    another role already reads is not taken twice)."""
    fields = dict(mapping.fields)
    origin = dict(mapping.origin)
    used = {path for path in fields.values() if path}
    for role in ROLES:
        path = detected.fields.get(role)
        if fields.get(role) is None and path is not None and path not in used:
            fields[role] = path
            origin[role] = f"detected by name (preset {mapping.preset} has none)"
            used.add(path)
        elif fields.get(role) is None:
            origin[role] = f"none (preset {mapping.preset} has none, no field is named like it)"
    return replace(mapping, fields=fields, origin=origin)


def parse_field_overrides(items: Iterable[str]) -> dict[str, str | None]:
    """`--field ROLE=PATH` options; an empty PATH unsets the role."""
    overrides: dict[str, str | None] = {}
    for item in items:
        role, sep, path = item.partition("=")
        role = role.strip()
        if not sep or not role:
            raise usage_error(
                f"--field {item!r}: expected ROLE=PATH", "e.g. --field expires=expiry"
            )
        overrides[role] = path.strip() or None
    return overrides
