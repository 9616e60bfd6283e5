"""`stats`: the figures operators of seeds 002, 003 and 004 watch.

One streaming pass through the Python judge, or, where the store can judge in its own query
language (SQLite), aggregates computed there plus the Python judge for the rows it cannot
decide exactly. Both give the same figures; the tests hold them to it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ...domain.model import ACTIVE, AGE_BUCKETS, Session, Verdict
from ...domain.timeparse import format_duration, to_iso
from ..audit import read_audit
from ..context import StoreContext
from .scan import judge_left_over, judged


@dataclass
class Extreme:
    """The session holding a minimum or maximum, kept without keeping the session."""

    value: float | None = None
    session_id: str | None = None

    def offer(self, value: float | None, session_id: str | None, smaller: bool) -> None:
        if value is None:
            return
        if self.value is None or (value < self.value if smaller else value > self.value):
            self.value, self.session_id = value, session_id


@dataclass
class StoreStats:
    store: str
    kind: str
    now: float
    total: int = 0
    active: int = 0
    expired: int = 0
    invalid: int = 0
    by_reason: Counter = field(default_factory=Counter)
    size_bytes: int = 0
    oldest: Extreme = field(default_factory=Extreme)
    newest: Extreme = field(default_factory=Extreme)
    least_recent: Extreme = field(default_factory=Extreme)
    group_field: str | None = None
    group_count: int = 0
    top_groups: list[tuple[str, int]] = field(default_factory=list)
    groups_over_cap: int | None = None
    max_per_group: int | None = None
    histogram: list[int] = field(default_factory=lambda: [0] * len(AGE_BUCKETS))
    undated: int = 0
    last_cleanup: dict | None = None
    cleanup_runs: int = 0
    total_cleaned: int = 0
    top: int = 10
    warnings: list[str] = field(default_factory=list)
    #: Figures only this kind of store has (Redis: TTLs, memory by prefix, index sets, locks).
    store_figures: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        def extreme(item: Extreme, what: str) -> dict | None:
            if item.value is None:
                return None
            return {
                "id": item.session_id,
                what: to_iso(item.value),
                f"{what}_age_s": round(self.now - item.value, 1),
            }

        return {
            "store": self.store,
            "kind": self.kind,
            "now": to_iso(self.now),
            "total": self.total,
            "active": self.active,
            "expired": self.expired,
            "invalid": self.invalid,
            "by_reason": dict(sorted(self.by_reason.items())),
            "size_bytes": self.size_bytes,
            "oldest": extreme(self.oldest, "created"),
            "newest": extreme(self.newest, "created"),
            "least_recently_used": extreme(self.least_recent, "accessed"),
            "group_field": self.group_field,
            "groups": self.group_count,
            "top_groups": [{"group": g, "count": c} for g, c in self.top_groups],
            "max_per_group": self.max_per_group,
            "groups_over_cap": self.groups_over_cap,
            "age_histogram": [
                {"bucket": label, "count": count}
                for (label, _), count in zip(AGE_BUCKETS, self.histogram)
            ]
            + [{"bucket": "undated", "count": self.undated}],
            "last_cleanup": self.last_cleanup,
            "cleanup_runs": self.cleanup_runs,
            "total_cleaned": self.total_cleaned,
            "warnings": list(self.warnings),
            "store_figures": self.store_figures,
        }


def _bucket(age: float) -> int:
    for index, (_, bound) in enumerate(AGE_BUCKETS):
        if age < bound:
            return index
    return len(AGE_BUCKETS) - 1


def compute_stats(ctx: StoreContext, top: int = 10) -> StoreStats:
    stats = StoreStats(
        store=ctx.label,
        kind=ctx.address.kind,
        now=ctx.now,
        top=top,
        group_field=ctx.mapping.path("group"),
        max_per_group=ctx.settings.get("max_per_group"),
    )
    plan = ctx.pushdown()
    if plan is None:
        groups: Counter = Counter()
        for session, verdict in judged(ctx):
            _count(stats, session, verdict)
            if session.group is not None:
                groups[session.group] += 1
        _set_groups(stats, groups)
    else:
        _count_pushed(ctx, stats, plan)
    stats.size_bytes = ctx.store.size_bytes()
    stats.store_figures = ctx.store.extra_stats()
    add_cleanup_history(ctx, stats)
    stats.warnings.extend(index_warnings(ctx, stats.total))
    return stats


def _count(stats: StoreStats, session: Session, verdict: Verdict) -> None:
    stats.total += 1
    if verdict.status == ACTIVE:
        stats.active += 1
    if verdict.is_expired:
        stats.expired += 1
    if verdict.is_invalid:
        stats.invalid += 1
    for reason in verdict.reasons:
        stats.by_reason[reason.code] += 1
    stats.oldest.offer(session.created, session.id, smaller=True)
    stats.newest.offer(session.created, session.id, smaller=False)
    stats.least_recent.offer(session.accessed, session.id, smaller=True)
    born = session.created if session.created is not None else session.last_active
    if born is None:
        stats.undated += 1
    else:
        stats.histogram[_bucket(max(0.0, stats.now - born))] += 1


def _set_groups(stats: StoreStats, groups: Counter) -> None:
    stats.group_count = len(groups)
    stats.top_groups = groups.most_common(stats.top)
    if stats.max_per_group:
        stats.groups_over_cap = sum(1 for n in groups.values() if n > stats.max_per_group)


def _count_pushed(ctx: StoreContext, stats: StoreStats, plan) -> None:
    """Aggregates from the store for the rows it decides, the Python judge for the rest."""
    part = plan.aggregate(stats.top, stats.max_per_group)
    stats.total = part["decided"]
    stats.active, stats.expired, stats.invalid = part["active"], part["expired"], part["invalid"]
    stats.by_reason.update(part["by_reason"])
    stats.undated = part["undated"]
    stats.histogram = list(part["histogram"])
    for name, smaller in (("oldest", True), ("newest", False), ("least_recent", True)):
        if part[name] is not None:
            getattr(stats, name).offer(part[name][0], part[name][1], smaller)
    stats.group_count = part["group_count"]
    stats.top_groups = part["top_groups"]
    stats.groups_over_cap = part["groups_over_cap"]
    for record in plan.undecidable():
        session, verdict = judge_left_over(ctx, plan, record)
        _count(stats, session, verdict)


def add_cleanup_history(ctx: StoreContext, stats: StoreStats) -> None:
    for entry in read_audit(ctx.state_dir):
        if entry.get("command") != "cleanup" or entry.get("store_id") != ctx.identity:
            continue
        if entry.get("dry_run"):
            continue
        stats.cleanup_runs += 1
        stats.total_cleaned += int(entry.get("deleted") or 0)
        stats.last_cleanup = {
            "time": entry.get("time"),
            "outcome": entry.get("outcome"),
            "deleted": entry.get("deleted"),
        }


def index_warnings(ctx: StoreContext, rows: int) -> list[str]:
    """Peers' operators ask for this: a cleanup on an unindexed expiry column scans it all."""
    indexed = ctx.store.indexed_columns()
    if indexed is None or rows < 10_000:
        return []
    expires = ctx.mapping.path("expires")
    if not expires or "." in expires:
        return []
    if expires.lower() not in indexed:
        return [
            f"column {expires} of {ctx.table} has no index: the application's own expiry "
            f"queries read the whole table ({ctx.store.index_statement(expires)} makes them "
            "cheap)"
        ]
    return []


def check_thresholds(stats: StoreStats, limits: dict[str, float | None]) -> list[str]:
    """Alerts for crossed thresholds (seed 002): each one a line for stderr."""
    alerts = []
    figures = stats.as_dict()
    for name in ("active", "expired", "invalid", "total"):
        limit = limits.get(name)
        if limit is not None and figures[name] > limit:
            alerts.append(f"{name} sessions: {figures[name]} > {int(limit)}")
    oldest_limit = limits.get("oldest")
    if oldest_limit is not None and stats.oldest.value is not None:
        age = stats.now - stats.oldest.value
        if age > oldest_limit:
            alerts.append(
                f"oldest session is {format_duration(age)} old > {format_duration(oldest_limit)}"
            )
    size_limit = limits.get("size")
    if size_limit is not None and stats.size_bytes > size_limit:
        alerts.append(f"store size {stats.size_bytes} bytes > {int(size_limit)}")
    return alerts
