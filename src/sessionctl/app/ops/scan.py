"""The one pass every read command makes: records -> Sessions -> Verdicts, streaming."""

from __future__ import annotations

from collections.abc import Iterator

from ...domain import model
from ...domain.mapping import KEY_PATH, lookup
from ...domain.model import Reason, Session, Verdict
from ...domain.redact import display_value, redact_record
from ...domain.timeparse import to_iso
from ..context import StoreContext


def judged(ctx: StoreContext) -> Iterator[tuple[Session, Verdict]]:
    id_path = ctx.mapping.path("id")
    # Ids the store keeps unique itself need no checking (and no memory spent on it).
    check_duplicates = id_path not in (None, KEY_PATH) and id_path not in ctx.store.unique_fields()
    seen: set[int] = set()
    mapper, judge, now = ctx.mapper, ctx.judge, ctx.now
    for record in ctx.store.iter_records():
        session = mapper.session(record)
        verdict = judge.verdict(session, now)
        if check_duplicates and session.id is not None:
            # Hashes rather than ids keep this set small for stores of millions.
            digest = hash(session.id)
            if digest in seen:
                verdict.invalid.append(duplicate_reason(ctx))
            else:
                seen.add(digest)
        yield session, verdict


def duplicate_reason(ctx: StoreContext) -> Reason:
    return Reason(model.DUPLICATE_ID, "an earlier record has the same id", ctx.mapping.path("id"))


def judge_left_over(ctx: StoreContext, plan, record) -> tuple[Session, Verdict]:
    """A row the store's own query could not judge exactly, judged in Python; duplicates as
    the store found them, since Python sees only these rows."""
    session = ctx.mapper.session(record)
    verdict = ctx.judge.verdict(session, ctx.now)
    if record.key in plan.duplicate_keys:
        verdict.invalid.append(duplicate_reason(ctx))
    return session, verdict


def age_of(session: Session, now: float) -> float | None:
    return None if session.created is None else now - session.created


def idle_of(session: Session, now: float) -> float | None:
    last = session.last_active
    return None if last is None else now - last


def session_view(
    ctx: StoreContext,
    session: Session,
    verdict: Verdict,
    extra_fields: list[str] = (),
    show_secrets: bool = False,
) -> dict:
    """A session as the JSON output documents it (see README, "Output keys")."""
    now = ctx.now
    view = {
        "id": session.id,
        "key": session.key if isinstance(session.key, (str, int)) else str(session.key),
        "status": verdict.status,
        "created": to_iso(session.created),
        "accessed": to_iso(session.accessed),
        "expires": to_iso(session.expires),
        "group": session.group,
        "age_s": _round(age_of(session, now)),
        "idle_s": _round(idle_of(session, now)),
        "expires_in_s": _round(None if session.expires is None else session.expires - now),
        "reasons": [r.as_dict() for r in verdict.reasons],
    }
    if extra_fields:
        fields = {}
        for path in extra_fields:
            if path == "size":
                fields[path] = session.size
                continue
            value = None
            if session.record.data is not None:
                value = lookup(session.record.data, path, session.key)
            fields[path] = display_value(value, path, ctx.mapping.payload, show_secrets)
        view["fields"] = fields
    return view


def record_view(ctx: StoreContext, session: Session, show_secrets: bool) -> object:
    return redact_record(session.record.data, ctx.mapping.payload, show_secrets)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
