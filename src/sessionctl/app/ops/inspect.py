"""`inspect ID`: one session in full: its record, computed times, verdict and mapping."""

from __future__ import annotations

from ...domain.errors import ExitCode, SessionctlError
from ...domain.timeparse import format_duration
from ..context import StoreContext
from .scan import judged, record_view, session_view


def inspect_session(ctx: StoreContext, session_id: str, show_secrets: bool = False) -> dict:
    record = ctx.store.find(session_id, ctx.mapping.path("id"))
    if record is None:
        raise SessionctlError(
            f"no session {session_id!r} in {ctx.label}",
            ExitCode.FINDINGS,
            "list ids with: sessionctl list --store " + ctx.label,
        )
    session = ctx.mapper.session(record)
    verdict = ctx.judge.verdict(session, ctx.now)
    # Duplicates are a property of the whole store; ask the scan only when ids are not unique.
    if session.id is not None and ctx.mapping.path("id") not in ctx.store.unique_fields():
        count = sum(1 for other, _ in judged(ctx) if other.id == session.id)
        if count > 1:
            from ...domain.model import DUPLICATE_ID, Reason

            verdict.invalid.append(
                Reason(DUPLICATE_ID, f"{count} records share this id", ctx.mapping.path("id"))
            )
    view = session_view(ctx, session, verdict, (), show_secrets)
    view["size_bytes"] = session.size
    view["age"] = format_duration(view["age_s"])
    view["idle"] = format_duration(view["idle_s"])
    view["expires_in"] = format_duration(view["expires_in_s"])
    view["record"] = record_view(ctx, session, show_secrets)
    view["mapping"] = ctx.mapping.explain()
    view["store"] = ctx.label
    return view
