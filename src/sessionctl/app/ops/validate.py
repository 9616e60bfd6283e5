"""`validate`: every invalid session with all its reasons, and the counts."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from ..context import StoreContext
from .scan import judged, session_view


@dataclass
class ValidationSummary:
    store: str
    total: int = 0
    invalid: int = 0
    by_reason: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict:
        return {
            "store": self.store,
            "total": self.total,
            "valid": self.total - self.invalid,
            "invalid": self.invalid,
            "by_reason": dict(sorted(self.by_reason.items())),
        }


def validate(ctx: StoreContext, summary: ValidationSummary) -> Iterator[dict]:
    """Yields invalid sessions as they are found and fills `summary` as it goes."""
    for session, verdict in judged(ctx):
        summary.total += 1
        if verdict.is_invalid:
            summary.invalid += 1
            summary.by_reason.update({r.code for r in verdict.invalid})
            yield session_view(ctx, session, verdict)
