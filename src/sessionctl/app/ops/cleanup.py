"""`cleanup`: remove exactly what should go, archive it first, and account for every session.

Selection is streaming where it can be: with --expired / --invalid / --all and a store that
deletes in batches, sessions are removed batch by batch while the scan goes on, so memory stays
flat however big the store. Caps (--max-per-group, --max-count, --max-size) need the whole
store in view, and a JSON file is rewritten whole; those select first and remove after.

Each batch: (hook for each session, with the session as it is now) -> store.remove, which keeps
only records still exactly as selected, hands them to the archive (written and fsync'ed) and
only then deletes them.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ...domain import model
from ...domain.archive_format import archive_entry
from ...domain.errors import ExitCode, SessionctlError, nested_too_deeply, usage_error
from ...domain.model import Record, Session, Verdict
from ...domain.redact import json_safe
from ...domain.timeparse import to_iso
from ...stores.base import Candidate
from ..audit import (
    AUDIT_ID_LIMIT,
    ArchiveWriter,
    append_audit,
    default_archive_path,
    run_identity,
)
from ..context import StoreContext
from ..hooks import check_hook, run_hook
from .scan import judge_left_over, judged

#: Rows per delete transaction, chosen with bench/batch_size.py (100k Django sessions, an
#: application writing meanwhile): from 200 to 2000 rows the run gets about twice as fast while
#: the application's worst wait stays near a tenth of a second; past 5000 that wait jumps
#: (0.6 s at 10000). 2000 keeps a margin below that knee. Figures in bench/RESULTS.md.
DEFAULT_BATCH_SIZE = 2000
#: `--batch-size all`: every selected session in one transaction (a maintenance window).
ALL_ROWS = 2**62
#: How long one delete transaction may keep the application out, where the store sizes its
#: batches by time (SQLite): bench/batch_size.py, figures in bench/RESULTS.md.
DEFAULT_MAX_LOCK = 0.2


def batching(batch_size, max_lock: float | None) -> tuple[int, float | None]:
    """(batch_size, max_lock) for CleanupOptions from the settings: a count or "all" forces
    that many rows a transaction; without one, batches are sized by max_lock (default 200ms)
    where the store can, and are DEFAULT_BATCH_SIZE rows elsewhere."""
    if batch_size == "all":
        return ALL_ROWS, None
    if batch_size:
        return int(batch_size), None
    return DEFAULT_BATCH_SIZE, DEFAULT_MAX_LOCK if max_lock is None else max_lock


#: The result lists at most this many selected sessions; counts are always complete.
RESULT_SESSION_LIMIT = 10_000

ProgressFn = Callable[[int, int], None]  # (sessions examined, sessions removed)


@dataclass
class CleanupOptions:
    expired: bool = False
    invalid: bool = False
    #: Sessions without the TTL their framework always sets (stores with TTLs).
    no_ttl: bool = False
    #: Entries whose session is gone (index members, lock keys), as the store finds them.
    orphans: bool = False
    everything: bool = False
    max_per_group: int | None = None
    max_count: int | None = None
    max_size: int | None = None
    dry_run: bool = False
    batch_size: int = DEFAULT_BATCH_SIZE
    #: Seconds one delete transaction should hold the store's write lock; a store that sizes
    #: batches by time then takes batch_size as a ceiling only. None: batch_size rows a batch.
    max_lock: float | None = None
    pause: float = 0.0
    hook: list[str] | None = None
    hook_timeout: float = 30.0
    archive: bool = True
    archive_path: Path | None = None
    #: Remove from tables with DELETE triggers, whose own removals cannot be archived.
    allow_triggers: bool = False

    @property
    def has_caps(self) -> bool:
        return any(v is not None for v in (self.max_per_group, self.max_count, self.max_size))

    def for_audit(self) -> dict:
        return {
            "expired": self.expired,
            "invalid": self.invalid,
            "no_ttl": self.no_ttl,
            "orphans": self.orphans,
            "all": self.everything,
            "max_per_group": self.max_per_group,
            "max_count": self.max_count,
            "max_size": self.max_size,
            "batch_size": "all" if self.batch_size >= ALL_ROWS else self.batch_size,
            "max_lock": self.max_lock,
            "pause": self.pause,
            "hook": self.hook,
            "archive": self.archive,
            "allow_triggers": self.allow_triggers,
        }


@dataclass
class CleanupResult:
    store: str
    dry_run: bool
    total: int = 0
    selected: int = 0
    deleted: int = 0
    failed: int = 0
    #: Selected, but changed or gone by the time of removal (the application touched them).
    changed: int = 0
    errors: list[dict] = field(default_factory=list)
    by_reason: Counter = field(default_factory=Counter)
    duration_s: float = 0.0
    archive: str | None = None
    sessions: list[dict] = field(default_factory=list)
    sessions_omitted: int = 0
    removed_ids: list[str] = field(default_factory=list)
    aborted: bool = False
    error: str | None = None
    error_code: ExitCode | None = None
    #: The run's own bookkeeping failed (the audit log): worth a line, changes no outcome.
    warning: str | None = None
    #: For the operator: a missing index on the expiry column, the dead space left behind.
    notes: list[str] = field(default_factory=list)

    @property
    def outcome(self) -> str:
        if self.error_code == ExitCode.BUSY:
            return "busy"
        if self.error_code == ExitCode.INTERRUPTED:
            return "interrupted"
        if self.error:
            return "error"
        if self.aborted:
            return "aborted"
        if self.dry_run:
            return "dry-run"
        if self.failed and not self.deleted:
            return "failed"
        if self.failed:
            return "partial"
        return "ok"

    @property
    def exit_code(self) -> ExitCode:
        if self.error_code is not None:
            return self.error_code
        return {
            "aborted": ExitCode.FINDINGS,
            "failed": ExitCode.FAILED,
            "partial": ExitCode.FINDINGS,
        }.get(self.outcome, ExitCode.OK)

    def as_dict(self) -> dict:
        return {
            "store": self.store,
            "dry_run": self.dry_run,
            "total": self.total,
            "selected": self.selected,
            "deleted": self.deleted,
            "failed": self.failed,
            "changed": self.changed,
            "errors": self.errors,
            "by_reason": dict(sorted(self.by_reason.items())),
            "duration_s": round(self.duration_s, 3),
            "archive": self.archive,
            "outcome": self.outcome,
            "sessions": self.sessions,
            "sessions_omitted": self.sessions_omitted,
            "error": self.error,
        }


class _Selection:
    """Which reasons, if any, put a session on the list."""

    def __init__(self, options: CleanupOptions, ahead: float | None = None, lacks_ttl=None):
        self.options = options
        #: The store's judgement of a record without its expected TTL (`--no-ttl`).
        self.lacks_ttl = lacks_ttl if options.no_ttl else None
        #: Later than this, a time is not believed (the session is invalid, future_timestamp).
        self.ahead = ahead
        # (recency, order, candidate, group, size) of sessions not selected, for the caps.
        self.kept: list[tuple] = []

    def reasons(self, verdict: Verdict, record: Record | None = None) -> list[str]:
        options = self.options
        codes = []
        if options.everything:
            codes.append(model.ALL)
        if options.expired:
            codes.extend(r.code for r in verdict.expired)
        if options.invalid:
            codes.extend(r.code for r in verdict.invalid)
        if self.lacks_ttl is not None and record is not None and self.lacks_ttl(record):
            codes.append(model.NO_TTL)
        return list(dict.fromkeys(codes))

    def keep(self, session: Session, candidate: Candidate) -> None:
        recency = session.last_active
        if recency is not None and self.ahead is not None and recency > self.ahead:
            # A last use in the future is not believed: ranked as unknown, not as the newest
            # (it would keep a bogus session and push out the user's real, newest one).
            recency = None
        size = session.size if self.options.max_size is not None else 0
        self.kept.append(
            (
                recency if recency is not None else float("-inf"),
                len(self.kept),
                candidate,
                session.group,
                size,
            )
        )

    def over_caps(self) -> list[tuple[Candidate, str]]:
        options = self.options
        chosen: list[tuple[Candidate, str]] = []
        remaining = self.kept
        if options.max_per_group is not None:
            by_group: dict[str, list[tuple]] = {}
            for item in remaining:
                if item[3] is not None:
                    by_group.setdefault(item[3], []).append(item)
            dropped = set()
            for items in by_group.values():
                items.sort(key=lambda item: (item[0], item[1]), reverse=True)
                for item in items[options.max_per_group :]:
                    chosen.append((item[2], model.GROUP_CAP))
                    dropped.add(item[1])
            remaining = [item for item in remaining if item[1] not in dropped]
        remaining.sort(key=lambda item: (item[0], item[1]))  # oldest first
        if options.max_count is not None and len(remaining) > options.max_count:
            excess = len(remaining) - options.max_count
            chosen.extend((item[2], model.COUNT_CAP) for item in remaining[:excess])
            remaining = remaining[excess:]
        if options.max_size is not None:
            total = sum(item[4] for item in remaining)
            position = 0
            while total > options.max_size and position < len(remaining):
                total -= remaining[position][4]
                chosen.append((remaining[position][2], model.SIZE_CAP))
                position += 1
        return chosen


class _Remover:
    """Removes selected sessions batch by batch and keeps the books."""

    def __init__(self, ctx: StoreContext, options: CleanupOptions, result: CleanupResult, progress):
        self.ctx = ctx
        self.options = options
        self.result = result
        self.progress = progress
        natural = ctx.store.natural_batch
        self.batch_size = options.batch_size if natural is not None else None
        self.pending: list[Candidate] = []
        self.reasons: dict = {}
        self.archive: ArchiveWriter | None = None
        if options.archive:
            path = options.archive_path or default_archive_path(
                ctx.settings.get("archive_dir") or ctx.state_dir / "archives", ctx.label
            )
            if path.is_dir():
                path = default_archive_path(path, ctx.label)
            self.archive = ArchiveWriter(
                path,
                {
                    "store": ctx.label,
                    "address": ctx.address.display,
                    "kind": ctx.address.kind,
                    "table": ctx.table,
                    "id_field": ctx.mapping.path("id"),
                    "created": to_iso(ctx.now),
                },
            )

    def add(self, candidate: Candidate, reasons: list[str]) -> None:
        self.pending.append(candidate)
        self.reasons[candidate.key] = reasons
        if self.batch_size is not None and len(self.pending) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        batch, self.pending = self.pending, []
        result = self.result
        if self.options.hook:
            batch = self._run_hooks(batch)
        ids = {c.key: c.id for c in batch}
        if batch:
            outcome = self.ctx.store.remove(batch, self._archive_records)
            result.deleted += len(outcome.removed)
            result.changed += len(outcome.changed)
            for key, error in outcome.failed.items():
                result.failed += 1
                result.errors.append({"sessionId": ids.get(key) or str(key), "error": error})
            for record in outcome.removed:
                if len(result.removed_ids) < AUDIT_ID_LIMIT:
                    result.removed_ids.append(ids.get(record.key) or str(record.key))
        for key in [c.key for c in batch]:
            self.reasons.pop(key, None)
        if self.progress:
            self.progress(result.total, result.deleted)
        if self.options.pause:
            time.sleep(self.options.pause)

    def _archive_records(self, records: list[Record], reasons: dict | None = None) -> None:
        if self.archive is None:
            return
        reasons = self.reasons if reasons is None else reasons
        id_of = self.ctx.mapper.id_of
        entries = [archive_entry(r, id_of(r), reasons.get(r.key, [])) for r in records]
        self.archive.write(entries)
        self.result.archive = str(self.archive.path)

    def delete_in_store(self, plan, options: CleanupOptions) -> None:
        """The store chooses, archives and deletes what it can judge itself, batch by batch."""
        result = self.result
        codes = plan.reason_codes(expired=options.expired, invalid=options.invalid)
        archive = self._archive_records if self.archive is not None else None
        for removed, failed in plan.delete_decided(
            codes, options.everything, options.batch_size, archive, max_lock=options.max_lock
        ):
            for key, session_id, reasons in removed:
                _note_selected(result, session_id, key, reasons)
                result.deleted += 1
                if len(result.removed_ids) < AUDIT_ID_LIMIT:
                    result.removed_ids.append(session_id or str(key))
            for key, error in failed.items():
                _note_selected(result, None, key, [])
                result.failed += 1
                result.errors.append({"sessionId": str(key), "error": error})
            if self.progress:
                self.progress(result.deleted, result.deleted)
            if options.pause:
                time.sleep(options.pause)

    def _run_hooks(self, batch: list[Candidate]) -> list[Candidate]:
        ctx, result, options = self.ctx, self.result, self.options
        current = ctx.store.current(batch)
        passed = []
        for candidate in batch:
            record = current.get(candidate.key)
            if record is None:
                result.changed += 1
                continue
            session = ctx.mapper.session(record)
            error = run_hook(
                options.hook,
                _hook_payload(ctx, session, self.reasons.get(candidate.key, [])),
                session.id,
                ctx.label,
                options.hook_timeout,
                payload_fields=ctx.mapping.payload,
            )
            if error is None:
                passed.append(candidate)
            else:
                # Seed 000: a failed teardown keeps the record, to be tried again next run.
                result.failed += 1
                result.errors.append(
                    {"sessionId": session.id or str(candidate.key), "error": error}
                )
        return passed

    def close(self) -> None:
        if self.archive is not None:
            self.archive.close()


def _hook_payload(ctx: StoreContext, session: Session, reasons: list[str]) -> dict:
    return {
        "id": session.id,
        "key": json_safe(session.key),
        "store": ctx.label,
        "group": session.group,
        "created": to_iso(session.created),
        "accessed": to_iso(session.accessed),
        "expires": to_iso(session.expires),
        "reasons": reasons,
        "record": json_safe(session.record.data),
    }


def check_options(ctx: StoreContext, options: CleanupOptions) -> None:
    if not (
        options.expired
        or options.invalid
        or options.everything
        or options.has_caps
        or options.no_ttl
        or options.orphans
    ):
        raise usage_error(
            "say what to remove",
            "use --expired, --invalid, --all, or a cap such as --max-per-group",
        )
    if options.no_ttl and not ctx.store.has_ttl:
        raise usage_error(f"--no-ttl: {ctx.label} keeps no TTLs", "it applies to Redis stores")
    if options.orphans and not ctx.store.has_orphans:
        raise usage_error(
            f"--orphans: {ctx.label} keeps nothing beside its sessions that could outlive them",
            "it applies to Redis stores (Spring's index sets, phpredis lock keys)",
        )
    if (
        options.expired
        and not ctx.policy.describes_expiry(ctx.mapping)
        and has_readable_record(ctx)
    ):
        # A store with nothing readable in it (emptied by the last run, say, or holding only
        # corrupt records, which are invalid, never expired) has nothing to map: nothing to do.
        raise usage_error(
            f"cannot tell which sessions of {ctx.label} are expired: no expiry field is mapped "
            "and no idle timeout or max age is set",
            "give --idle-timeout or --max-age, or map one with --field expires=FIELD",
        )
    if options.batch_size < 1:
        raise usage_error("--batch-size must be at least 1")
    triggers = ctx.store.delete_triggers()
    if triggers and not options.dry_run and not options.allow_triggers:
        raise usage_error(
            f"refusing to remove from {ctx.label}: {_triggers_text(triggers)}",
            "add --allow-triggers to remove anyway",
        )
    if options.hook:
        check_hook(options.hook)
        if options.hook_timeout <= 0:
            # Every hook would time out at once: every session kept, every run a failure.
            raise usage_error(
                "--hook-timeout 0: no hook can finish in no time", "give e.g. --hook-timeout 30s"
            )


def _triggers_text(triggers: list[tuple[str, str]]) -> str:
    named = ", ".join(f"{name} on {table}" for table, name in triggers)
    return f"DELETE trigger(s) {named} may change rows that no archive keeps"


def has_readable_record(ctx: StoreContext) -> bool:
    """True when the store holds a record that could be decoded (read until the first one)."""
    records = iter(ctx.store.iter_records())
    try:
        return any(record.data is not None for record in records)
    finally:
        close = getattr(records, "close", None)
        if close is not None:
            close()


def count_sessions(ctx: StoreContext) -> int:
    return ctx.store.count()


def cleanup(
    ctx: StoreContext,
    options: CleanupOptions,
    progress: ProgressFn | None = None,
    confirm: Callable[[int], bool] | None = None,
) -> CleanupResult:
    """Run one cleanup; the result says what happened even when it stopped part way."""
    check_options(ctx, options)
    started = time.monotonic()
    result = CleanupResult(store=ctx.label, dry_run=options.dry_run)
    if options.dry_run and (triggers := ctx.store.delete_triggers()):
        result.warning = f"{_triggers_text(triggers)}; a real run needs --allow-triggers"
    lock = None
    remover = None
    try:
        if not options.dry_run:
            from ..locking import store_lock

            lock = store_lock(ctx).acquire()
            ctx.store.recover()
        if options.everything and confirm is not None and not confirm(count_sessions(ctx)):
            result.aborted = True
            return result
        remover = None if options.dry_run else _Remover(ctx, options, result, progress)
        streaming = remover is not None and remover.batch_size is not None and not options.has_caps
        selection = _Selection(
            options, ahead=ctx.now + ctx.policy.skew, lacks_ttl=ctx.store.lacks_expected_ttl
        )
        collected: list[tuple[Candidate, list[str]]] = []
        fingerprint = ctx.store.fingerprint
        plan = None if options.has_caps or options.no_ttl else ctx.pushdown()
        rows_before = plan.total() if plan else 0
        if plan is not None and streaming and not options.hook:
            # Fast path: the store chooses and deletes in SQL; Python judges only the rows
            # SQL cannot read exactly.
            remover.delete_in_store(plan, options)
            examined = _undecidable_choices(ctx, plan, selection)
        elif plan is not None:
            examined = _pushed_choices(ctx, plan, selection)
        else:
            examined = _judged_choices(ctx, selection)
        has_caps = options.has_caps
        for record, session_id, codes, session in examined:
            result.total += 1
            if codes or has_caps:
                candidate = Candidate(record.key, fingerprint(record), session_id)
            if codes:
                _note_selected(result, session_id, record.key, codes)
                if streaming:
                    remover.add(candidate, codes)
                else:
                    collected.append((candidate, codes))
            elif has_caps:
                selection.keep(session, candidate)
            if progress and result.total % 5000 == 0:
                progress(result.total, result.deleted)
        if plan is not None:
            # The store only handed over what it selected (and rows it could not judge).
            result.total = max(result.total, rows_before)
        if options.orphans:
            # Not sessions (not counted in total): entries the store keeps beside them.
            for candidate in ctx.store.orphans():
                _note_selected(result, candidate.id, candidate.key, [model.ORPHAN])
                collected.append((candidate, [model.ORPHAN]))
        capped = 0
        for candidate, code in selection.over_caps():
            _note_selected(result, candidate.id, candidate.key, [code])
            collected.append((candidate, [code]))
            capped += 1
        if (
            remover is not None
            and capped
            and not options.everything
            and len(collected) == result.total
            and confirm is not None
            and not confirm(len(collected))
        ):
            # Caps that select every session remove as much as --all: the same confirmation.
            result.aborted = True
            return result
        if options.expired:
            from .stats import index_warnings

            result.notes += [f"warning: {w}" for w in index_warnings(ctx, result.total)]
        if remover is not None:
            for candidate, codes in collected:
                remover.add(candidate, codes)
            remover.flush()
            if result.deleted:
                result.notes += filter(None, [ctx.store.space_note(result.deleted)])
    except (SessionctlError, RecursionError) as exc:
        if lock is None and not options.dry_run:
            raise  # the lock was refused, or never taken: nothing happened worth recording
        if isinstance(exc, RecursionError):  # a session nested too deeply to archive
            exc = nested_too_deeply()
        result.error, result.error_code = exc.one_line(), exc.code
        if result.deleted:
            result.error += f" (stopped after removing {result.deleted} sessions, all archived)"
    except KeyboardInterrupt:
        # A batch is one transaction (or one atomic rewrite): stopping here loses nothing.
        result.error, result.error_code = "interrupted", ExitCode.INTERRUPTED
        if result.deleted:
            result.error += f" after removing {result.deleted} sessions, all archived"
    finally:
        if remover is not None:
            remover.close()
        result.duration_s = time.monotonic() - started
        try:
            _audit(ctx, options, result)
        except SessionctlError as exc:
            # What was removed is removed (and archived): report it rather than the log.
            result.warning = exc.one_line()
        finally:
            if lock is not None:
                lock.release()
    return result


def _judged_choices(ctx: StoreContext, selection: _Selection):
    """(record, id, reason codes, session) for every session, judged in Python."""
    for session, verdict in judged(ctx):
        yield session.record, session.id, selection.reasons(verdict, session.record), session


def _pushed_choices(ctx: StoreContext, plan, selection: _Selection):
    """The same, from the store's own selection: only selected rows and rows it left to us."""
    options = selection.options
    codes = plan.reason_codes(expired=options.expired, invalid=options.invalid)
    for record, flags in plan.select(codes, options.everything):
        if flags is not None:  # decided by the store: only the id is needed
            yield record, ctx.mapper.id_of(record), flags, None
        else:
            yield _judged_here(ctx, plan, record, selection)


def _undecidable_choices(ctx: StoreContext, plan, selection: _Selection):
    """The rows the store left to Python, judged here."""
    for record in plan.records(plan.left_to_python):
        yield _judged_here(ctx, plan, record, selection)


def _judged_here(ctx: StoreContext, plan, record: Record, selection: _Selection):
    session, verdict = judge_left_over(ctx, plan, record)
    return record, session.id, selection.reasons(verdict, record), session


def _note_selected(result: CleanupResult, session_id, key, codes: list[str]) -> None:
    result.selected += 1
    result.by_reason.update(codes)
    if len(result.sessions) < RESULT_SESSION_LIMIT:
        result.sessions.append({"id": session_id, "key": json_safe(key), "reasons": codes})
    else:
        result.sessions_omitted += 1


def _audit(ctx: StoreContext, options: CleanupOptions, result: CleanupResult) -> None:
    entry = {
        "time": to_iso(time.time()),
        "command": "cleanup",
        **run_identity(),
        "store": ctx.label,
        "store_id": ctx.identity,
        "options": options.for_audit(),
        "dry_run": options.dry_run,
        "total": result.total,
        "selected": result.selected,
        "deleted": result.deleted,
        "failed": result.failed,
        "changed": result.changed,
        "by_reason": dict(result.by_reason),
        "ids": result.removed_ids,
        "ids_omitted": max(0, result.deleted - len(result.removed_ids)),
        "errors": result.errors[:100],
        "archive": result.archive,
        "outcome": result.outcome,
        "exit_code": int(result.exit_code),
        "duration_s": round(result.duration_s, 3),
        "error": result.error,
        # Set in the lines `schedule install` writes, so `schedule list` finds its runs.
        "schedule": os.environ.get("SESSIONCTL_SCHEDULE") or None,
    }
    append_audit(ctx.state_dir, entry)
