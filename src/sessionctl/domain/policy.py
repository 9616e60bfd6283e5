"""Which sessions are expired or invalid, and why. Pure functions: no I/O, no clock.

Expired: the expiry field is in the past, or now - last activity > idle timeout, or
now - created > max age. Invalid: a rule failed. A session carries every reason that applies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from . import model
from .errors import usage_error
from .mapping import ROLES, Mapping, is_missing, is_secret_path, resolve, split_path
from .model import Reason, Session, Verdict
from .timeparse import format_duration, to_iso

TYPE_CHECKS = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
}

DEFAULT_SKEW = 300.0
#: Expiry dates further ahead than this are not believable (a bug or a unit mix-up).
DEFAULT_EXPIRY_HORIZON = 3650 * 86400.0
#: Times before this (2000-01-01T00:00:00Z) are not believable either: `20261231` read as epoch
#: seconds is 1970, milliseconds read as seconds... The SQLite judge leaves them to Python.
PLAUSIBLE_SINCE = 946684800.0
#: What idleness is measured from (`idle_from`): the last access (the default; a store with no
#: last-access field cannot be judged idle), or the creation, when the operator says so.
IDLE_FROM_ACCESSED = "accessed"
IDLE_FROM_CREATED = "created"
IDLE_FROM_CHOICES = (IDLE_FROM_ACCESSED, IDLE_FROM_CREATED)


@dataclass(frozen=True)
class Rules:
    required: tuple[str, ...] = ("id",)
    allowed: dict[str, frozenset] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_config(cls, raw: dict | None, base: Rules | None = None) -> Rules:
        """Rules from a TOML table; keys not given keep the values of `base`."""
        base = base or cls()
        if not raw:
            return base
        unknown = set(raw) - {"required", "allowed", "types"}
        if unknown:
            raise usage_error(f"unknown rule(s): {', '.join(sorted(unknown))}")
        required = raw.get("required", base.required)
        if not isinstance(required, (list, tuple)) or not all(
            isinstance(path, str) and path for path in required
        ):
            raise usage_error("rules.required: expected a list of field names")
        required = tuple(required)
        for table in ("allowed", "types"):
            if not isinstance(raw.get(table) or {}, dict):
                raise usage_error(f"rules.{table}: expected a table of fields")
        allowed = dict(base.allowed)
        for path, values in (raw.get("allowed") or {}).items():
            if not isinstance(values, list):
                raise usage_error(f"rules.allowed.{path}: expected a list of values")
            allowed[path] = frozenset(_hashable(v) for v in values)
        types = dict(base.types)
        for path, type_name in (raw.get("types") or {}).items():
            if not isinstance(type_name, str) or type_name not in TYPE_CHECKS:
                raise usage_error(
                    f"rules.types.{path}: unknown type {type_name!r}",
                    f"use one of: {', '.join(TYPE_CHECKS)}",
                )
            types[path] = type_name
        return cls(required=required, allowed=allowed, types=types)


def _hashable(value):
    return value if not isinstance(value, (list, dict)) else repr(value)


@dataclass(frozen=True)
class Policy:
    max_age: float | None = None
    idle_timeout: float | None = None
    skew: float = DEFAULT_SKEW
    expiry_horizon: float = DEFAULT_EXPIRY_HORIZON
    rules: Rules = field(default_factory=Rules)
    idle_from: str = IDLE_FROM_ACCESSED

    def describes_expiry(self, mapping: Mapping) -> bool:
        """Whether this policy and mapping can tell an expired session at all."""
        return bool(
            mapping.path("expires")
            or (self.idle_timeout and (mapping.path("accessed") or mapping.path("created")))
            or (self.max_age and mapping.path("created"))
        )


class Judge:
    """A Policy compiled against a Mapping: gives each Session its Verdict."""

    def __init__(self, policy: Policy, mapping: Mapping):
        self.policy = policy
        self.mapping = mapping
        # Every session needs an id, required or not (see `verdict`).
        self._required_roles = [r for r in policy.rules.required if r in ROLES and r != "id"]
        self._required_paths = [(p, split_path(p)) for p in policy.rules.required if p not in ROLES]
        self._allowed = [(p, split_path(p), v) for p, v in policy.rules.allowed.items()]
        self._types = [(p, split_path(p), TYPE_CHECKS[t], t) for p, t in policy.rules.types.items()]

    def verdict(self, session: Session, now: float) -> Verdict:
        verdict = Verdict(invalid=list(session.problems))
        if session.record.data is not None:
            if session.id is None and not self._unreadable_id(session):
                path = self.mapping.path("id")
                verdict.invalid.append(
                    Reason(
                        model.MISSING_ID,
                        f"no session id (field {path})" if path else "no field is mapped to id",
                        path,
                    )
                )
            self._check_rules(session, verdict)
        self._check_times(session, now, verdict)
        return verdict

    def _unreadable_id(self, session: Session) -> bool:
        path = self.mapping.path("id")
        return path is not None and any(r.field == path for r in session.problems)

    def _check_rules(self, session: Session, verdict: Verdict) -> None:
        data = session.record.data
        unreadable = {r.field for r in session.problems} if session.problems else ()
        for role in self._required_roles:
            path = self.mapping.path(role)
            if getattr(session, role) is None and (path is None or path not in unreadable):
                where = path or f"(no field mapped to {role})"
                verdict.invalid.append(
                    Reason(model.MISSING_FIELD, f"missing required {role} field {where}", path)
                )
        for path, parts in self._required_paths:
            value = resolve(data, parts, session.key)
            if is_missing(value) or value is None or value == "":
                verdict.invalid.append(
                    Reason(model.MISSING_FIELD, f"missing required field {path}", path)
                )
        for path, parts, allowed in self._allowed:
            value = resolve(data, parts, session.key)
            if is_missing(value) or value is None:
                continue
            if _hashable(value) not in allowed:
                if is_secret_path(path, self.mapping.payload):
                    # Never quote a payload or secret field, nor the values it may hold.
                    message = f"{path} (redacted) is not one of the {len(allowed)} allowed values"
                else:
                    shown = ", ".join(sorted(map(str, allowed)))
                    message = f"{path}={_short(value)} is not one of: {shown}"
                verdict.invalid.append(Reason(model.NOT_ALLOWED, message, path))
        for path, parts, check, type_name in self._types:
            value = resolve(data, parts, session.key)
            if is_missing(value) or value is None:
                continue
            if not check(value):
                verdict.invalid.append(
                    Reason(
                        model.WRONG_TYPE,
                        f"{path} should be {type_name}, is {_json_type(value)}",
                        path,
                    )
                )

    def _check_times(self, session: Session, now: float, verdict: Verdict) -> None:
        policy = self.policy
        fields = self.mapping.fields
        ahead = now + policy.skew
        invalid = verdict.invalid
        # A time before 2000 is invalid, and is not used to judge expiry: such a session is
        # not known to be expired (nor an unreadable last access replaced by the creation).
        created = self._plausible(session.created, "created", invalid)
        accessed = self._plausible(session.accessed, "accessed", invalid)
        expires = self._plausible(session.expires, "expires", invalid)
        if created is not None and created > ahead:
            invalid.append(
                Reason(
                    model.FUTURE_TIMESTAMP,
                    lambda: f"created in the future ({to_iso(created)})",
                    fields.get("created"),
                )
            )
        if accessed is not None and accessed > ahead:
            invalid.append(
                Reason(
                    model.FUTURE_TIMESTAMP,
                    lambda: f"last accessed in the future ({to_iso(accessed)})",
                    fields.get("accessed"),
                )
            )
        if expires is not None and expires > now + policy.expiry_horizon:
            invalid.append(
                Reason(
                    model.FUTURE_TIMESTAMP,
                    lambda: f"expires implausibly far ahead ({to_iso(expires)})",
                    fields.get("expires"),
                )
            )
        if created is not None and accessed is not None and accessed < created - policy.skew:
            invalid.append(
                Reason(
                    model.INCONSISTENT,
                    "last accessed before it was created",
                    fields.get("accessed"),
                )
            )

        if expires is not None and expires <= now:
            verdict.expired.append(
                Reason(
                    model.EXPIRED,
                    lambda: f"expired {format_duration(now - expires)} ago",
                    fields.get("expires"),
                )
            )
        idle_timeout = policy.idle_timeout
        if idle_timeout is not None:
            if policy.idle_from == IDLE_FROM_CREATED:
                last_active, idle_field = created, fields.get("created")
            elif accessed is not None or self._access_unknown(session):
                last_active, idle_field = accessed, fields.get("accessed")
            else:  # never accessed: idle since it was created
                last_active, idle_field = created, fields.get("created")
            if last_active is not None:
                idle = now - last_active
                if idle > idle_timeout:
                    verdict.expired.append(
                        Reason(
                            model.IDLE,
                            lambda: (
                                f"idle for {format_duration(idle)} "
                                f"(timeout {format_duration(idle_timeout)})"
                            ),
                            idle_field,
                        )
                    )
        max_age = policy.max_age
        if max_age is not None and created is not None:
            age = now - created
            if age > max_age:
                verdict.expired.append(
                    Reason(
                        model.MAX_AGE,
                        lambda: f"{format_duration(age)} old (max age {format_duration(max_age)})",
                        fields.get("created"),
                    )
                )

    def _plausible(self, moment: float | None, role: str, invalid: list) -> float | None:
        """`moment`, or None (with an invalid reason) when it lies before 2000."""
        if moment is None or moment >= PLAUSIBLE_SINCE:
            return moment
        invalid.append(
            Reason(
                model.IMPLAUSIBLE_TIMESTAMP,
                lambda: (
                    f"{role} {to_iso(moment)} is before 2000: not a session's time "
                    "(a unit mix-up, or a date read as a number?)"
                ),
                self.mapping.fields.get(role),
            )
        )
        return None

    def _access_unknown(self, session: Session) -> bool:
        """Whether the session has a last access that could not be read or believed (then
        its creation does not stand in for it)."""
        if session.accessed is not None:
            return True
        path = self.mapping.fields.get("accessed")
        return path is not None and any(r.field == path for r in session.problems)


def _json_type(value) -> str:
    for name, check in TYPE_CHECKS.items():
        if check(value):
            return name
    return "null" if value is None else type(value).__name__


def _short(value, limit: int = 30) -> str:
    text = repr(value) if not isinstance(value, str) else value
    if isinstance(value, float) and not math.isfinite(value):
        text = str(value)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
