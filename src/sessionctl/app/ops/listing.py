"""`list`: sessions filtered by status, age, idleness and field values; sorted and limited."""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass, field

from ...domain.errors import usage_error
from ...domain.mapping import ROLES, lookup
from ...domain.model import Session, Verdict
from ..context import StoreContext
from .scan import age_of, idle_of, judged, session_view

SORT_KEYS = ("id", "created", "accessed", "expires", "group", "age", "idle", "size", "status")


@dataclass
class ListQuery:
    expired: bool = False
    active: bool = False
    invalid: bool = False
    older_than: float | None = None
    idle_for: float | None = None
    where: list[tuple[str, str]] = field(default_factory=list)
    sort: str | None = None
    reverse: bool = False
    limit: int | None = None
    fields: list[str] = field(default_factory=list)
    show_secrets: bool = False


def parse_where(items: list[str]) -> list[tuple[str, str]]:
    pairs = []
    for item in items:
        path, sep, value = item.partition("=")
        if not sep or not path.strip():
            raise usage_error(f"--where {item!r}: expected FIELD=VALUE", "e.g. --where group=acme")
        pairs.append((path.strip(), value))
    return pairs


def _matches(query: ListQuery, session: Session, verdict: Verdict, now: float) -> bool:
    wanted = [
        flag
        for flag, on in (
            (verdict.is_expired, query.expired),
            (verdict.status == "active", query.active),
            (verdict.is_invalid, query.invalid),
        )
        if on
    ]
    if wanted and not any(wanted):
        return False
    if query.older_than is not None:
        age = age_of(session, now)
        if age is None or age <= query.older_than:
            return False
    if query.idle_for is not None:
        idle = idle_of(session, now)
        if idle is None or idle <= query.idle_for:
            return False
    for path, value in query.where:
        if path in ROLES:
            actual = getattr(session, path) if path in ("id", "group") else None
            if path not in ("id", "group"):
                raise usage_error(f"--where {path}=...: compare times with --older-than/--idle-for")
        else:
            data = session.record.data
            actual = lookup(data, path, session.key) if data is not None else None
        if actual is None or str(actual) != value:
            return False
    return True


def _sort_value(name: str, session: Session, verdict: Verdict, now: float):
    value = {
        "id": lambda: session.id,
        "created": lambda: session.created,
        "accessed": lambda: session.accessed,
        "expires": lambda: session.expires,
        "group": lambda: session.group,
        "age": lambda: age_of(session, now),
        "idle": lambda: idle_of(session, now),
        "size": lambda: session.size,
        "status": lambda: verdict.status,
    }[name]()
    # Sessions without the value go last, whatever the direction.
    return (value is None, value if value is not None else 0)


def list_sessions(ctx: StoreContext, query: ListQuery) -> Iterator[dict]:
    """Session views in store order, or sorted; streams unless sorting needs the whole set."""
    if query.sort is not None and query.sort not in SORT_KEYS:
        raise usage_error(
            f"--sort {query.sort!r}: unknown", f"sort by one of: {', '.join(SORT_KEYS)}"
        )
    now = ctx.now
    matching = (
        (session, verdict)
        for session, verdict in judged(ctx)
        if _matches(query, session, verdict, now)
    )
    if query.sort is None:
        for count, (session, verdict) in enumerate(matching):
            if query.limit is not None and count >= query.limit:
                return
            yield session_view(ctx, session, verdict, query.fields, query.show_secrets)
        return

    def keyed():
        # The counter breaks ties so sessions themselves are never compared.
        for order, (session, verdict) in enumerate(matching):
            value = _sort_value(query.sort, session, verdict, now)
            if query.reverse:
                value = (value[0], _Reversed(value[1]))
            yield (
                value,
                order,
                session_view(ctx, session, verdict, query.fields, query.show_secrets),
            )

    if query.limit is not None:
        chosen = heapq.nsmallest(query.limit, keyed())  # bounded memory for "top N"
    else:
        chosen = sorted(keyed())
    for _, _, view in chosen:
        yield view


class _Reversed:
    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __lt__(self, other: _Reversed) -> bool:
        return other.value < self.value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Reversed) and other.value == self.value
