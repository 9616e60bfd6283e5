"""`sessionctl cleanup`."""

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import render
from ..domain.errors import ExitCode, SessionctlError, usage_error
from .common import (
    ObjectFormat,
    ObjectFormatOpt,
    QuietOpt,
    StoreArgs,
    open_store_context,
    say,
    store_command,
    store_overrides,
)
from .progress import Progress

#: A dry run lists at most this many sessions in the table; --format json lists them all.
TABLE_SESSION_LIMIT = 50


def stdin_is_terminal() -> bool:
    return sys.stdin.isatty()


def cleanup_text(result: dict, rich: bool) -> str:
    title = f"Cleanup of {result['store']}" + (
        " (dry run: nothing changed)" if result["dry_run"] else ""
    )
    reasons = ", ".join(f"{code} {count}" for code, count in result["by_reason"].items())
    pairs = [
        ("Examined", str(result["total"])),
        ("Selected", f"{result['selected']}" + (f"  ({reasons})" if reasons else "")),
    ]
    if not result["dry_run"]:
        pairs += [
            ("Deleted", render.markup(str(result["deleted"]), "green", rich)),
            (
                "Failed",
                render.markup(str(result["failed"]), "red" if result["failed"] else "", rich)
                if result["failed"]
                else "0",
            ),
            (
                "Changed",
                f"{result['changed']}  (touched by the application meanwhile: kept)"
                if result["changed"]
                else "0",
            ),
            ("Archive", render.esc(result["archive"] or "-", rich)),
        ]
    pairs.append(("Took", f"{result['duration_s']:.2f}s"))
    text = render.markup(title, "bold", rich) + "\n" + render.key_values(pairs, rich)
    if result["dry_run"] and result["sessions"]:
        text += "\n" + render.markup("Would remove", "bold", rich) + "\n"
        shown = result["sessions"][:TABLE_SESSION_LIMIT]
        width = max(len(render.text_of(s["id"] or s["key"])) for s in shown)
        for item in shown:
            name = render.text_of(item["id"] or item["key"])
            text += f"  {render.esc(name.ljust(width), rich)}  {', '.join(item['reasons'])}\n"
        more = result["selected"] - len(shown)
        if more > 0:
            text += f"  … and {more} more (--format json lists them all)\n"
    if result["errors"]:
        text += "\n" + render.markup("Errors", "bold red", rich) + "\n"
        for error in result["errors"]:
            text += (
                f"  {render.esc(error['sessionId'], rich)}: {render.esc(error['error'], rich)}\n"
            )
    return text


def cleanup_command(
    expired: Annotated[
        bool,
        typer.Option(
            "--expired",
            help="Remove expired sessions (expiry field, idle timeout, max age). Example: cleanup --expired",
        ),
    ] = False,
    invalid: Annotated[
        bool,
        typer.Option(
            "--invalid", help="Remove sessions that fail validation. Example: cleanup --invalid"
        ),
    ] = False,
    no_ttl: Annotated[
        bool,
        typer.Option(
            "--no-ttl",
            help="Remove sessions without the TTL their framework always sets (stores with "
            "TTLs: Redis). Example: cleanup --store redis://cache:6379/0 --no-ttl",
        ),
    ] = False,
    orphans: Annotated[
        bool,
        typer.Option(
            "--orphans",
            help="Remove entries whose session is gone: dead index members (Spring's principal "
            "index), _LOCK keys of crashed requests (phpredis). Example: cleanup --orphans",
        ),
    ] = False,
    everything: Annotated[
        bool,
        typer.Option(
            "--all",
            help="Remove every session; asks on a terminal, needs --yes otherwise. Example: cleanup --all --yes",
        ),
    ] = False,
    max_per_group: Annotated[
        Optional[int],
        typer.Option(
            "--max-per-group",
            min=0,
            metavar="N",
            help="Keep only the N most recently used sessions per group (user, workspace). Example: --max-per-group 5",
        ),
    ] = None,
    max_count: Annotated[
        Optional[int],
        typer.Option(
            "--max-count",
            min=0,
            metavar="N",
            help="Remove the oldest until at most N sessions remain. Example: --max-count 10000",
        ),
    ] = None,
    max_size: Annotated[
        Optional[str],
        typer.Option(
            "--max-size",
            metavar="SIZE",
            help="Remove the oldest until the sessions take at most SIZE. Example: --max-size 10MB",
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            "-n",
            help="Show what would be removed and why; change nothing. Example: cleanup --expired -n",
        ),
    ] = False,
    yes: Annotated[
        bool,
        typer.Option(
            "--yes",
            "-y",
            help="Do not ask before --all or a cap that removes every session (required "
            "without a terminal). Example: cleanup --all -y",
        ),
    ] = False,
    batch_size: Annotated[
        Optional[str],
        typer.Option(
            "--batch-size",
            metavar="N|all",
            help="Sessions per delete transaction, forcing a count; 'all': one transaction "
            "for the whole cleanup (a maintenance window: the application waits until it ends). "
            "Default: SQLite sizes batches by --max-lock, other stores take 2000. "
            "Example: --batch-size 500",
        ),
    ] = None,
    max_lock: Annotated[
        Optional[str],
        typer.Option(
            "--max-lock",
            metavar="DURATION",
            help="SQLite: how long one delete transaction may keep the application's writes "
            "waiting; batches grow or shrink to stay near it (default 200ms; --batch-size "
            "forces a count instead). Example: --max-lock 50ms",
        ),
    ] = None,
    pause: Annotated[
        Optional[str],
        typer.Option(
            "--pause",
            metavar="DURATION",
            help="Sleep between batches to let the application breathe. Example: --pause 0.2s",
        ),
    ] = None,
    hook: Annotated[
        Optional[str],
        typer.Option(
            "--hook",
            metavar="CMD",
            help="Run CMD once per session before removing it, the session as JSON on stdin and its id "
            "in $SESSIONCTL_SESSION_ID (split like a shell would, never run by one); a failure keeps "
            "the session. Example: --hook '/usr/local/bin/teardown --force'",
        ),
    ] = None,
    hook_timeout: Annotated[
        Optional[str],
        typer.Option(
            "--hook-timeout",
            metavar="DURATION",
            help="Longest a hook may run (default 30s). Example: --hook-timeout 2m",
        ),
    ] = None,
    archive: Annotated[
        Optional[Path],
        typer.Option(
            "--archive",
            metavar="PATH",
            help="Archive file (or folder) for removed sessions; default: the state folder. Example: --archive /backup/sessions.ndjson.gz",
        ),
    ] = None,
    no_archive: Annotated[
        bool,
        typer.Option(
            "--no-archive",
            help="Do not archive removed sessions (they cannot be restored). Example: --no-archive",
        ),
    ] = False,
    allow_triggers: Annotated[
        bool,
        typer.Option(
            "--allow-triggers",
            help="Remove even from tables with DELETE triggers or foreign keys ON DELETE SET "
            "NULL (SQLite), whose own changes no archive keeps; --explain and a dry run name "
            "them. Example: cleanup --expired --allow-triggers",
        ),
    ] = False,
    jitter: Annotated[
        Optional[str],
        typer.Option(
            "--jitter",
            metavar="DURATION",
            help="Wait a random time up to DURATION first, so a fleet of hosts sharing one store "
            "do not all start at once. Example: --jitter 5m",
        ),
    ] = None,
    lock: Annotated[
        Optional[str],
        typer.Option(
            "--lock",
            metavar="WHERE",
            help="Where the cleanup lock lives: state (this host's state folder, the default) or "
            "store (also a file beside the store, which every host sharing it sees, e.g. on NFS). "
            "Example: --lock store",
        ),
    ] = None,
    check_open: Annotated[
        bool,
        typer.Option(
            "--check-open",
            help="PHP session files: also leave alone files a php-fpm or apache2 process has "
            "open (read from /proc/PID/fd; as root, every process is seen). A file whose lock "
            "a request holds is always left alone. Example: cleanup --expired --check-open",
        ),
    ] = False,
    create_lock_table: Annotated[
        bool,
        typer.Option(
            "--create-lock-table",
            help="MySQL/MariaDB: where the server refuses GET_LOCK (a Galera cluster), create the "
            "small lease table sessionctl_lock so runs on other hosts are kept out. "
            "Example: cleanup --expired --create-lock-table",
        ),
    ] = False,
    output: ObjectFormatOpt = ObjectFormat.table,
    quiet: QuietOpt = False,
    store: StoreArgs = None,
) -> None:
    """Remove expired, invalid or all sessions, archiving each one first.

    Exit 0: all done; 1: some deletions failed; 5: none could be removed; 4: another cleanup
    holds the store.
    Example: sessionctl cleanup --store web --expired --dry-run
    """
    from ..app.hooks import parse_hook
    from ..app.ops.cleanup import CleanupOptions, batching, cleanup
    from ..domain.timeparse import parse_duration, parse_now, parse_size

    # Every value is checked before anything happens: no wait, no lock, no removal.
    if archive is not None and no_archive:
        raise usage_error("--archive and --no-archive contradict each other")
    size_cap = parse_size(max_size, "--max-size") if max_size is not None else None
    removes_all = everything or max_count == 0 or size_cap == 0
    if removes_all and not yes and not dry_run and not stdin_is_terminal():
        what = "--all" if everything else "--max-count 0" if max_count == 0 else "--max-size 0"
        raise usage_error(
            f"refusing to remove all sessions ({what}) without a terminal to confirm on",
            "add --yes",
        )
    wait = parse_duration(jitter, "--jitter") if jitter is not None else None
    extra = {}
    if pause is not None:
        extra["pause"] = parse_duration(pause, "--pause")
    if hook_timeout is not None:
        extra["hook_timeout"] = parse_duration(hook_timeout, "--hook-timeout")
    if batch_size is not None:
        if batch_size.strip().lower() == "all":
            extra["batch_size"] = "all"
        elif not batch_size.strip().isdigit() or int(batch_size) < 1:
            raise usage_error(
                f"--batch-size: {batch_size!r} is not a count of at least 1 nor 'all'",
                "e.g. --batch-size 500 or --batch-size all",
            )
        else:
            extra["batch_size"] = int(batch_size)
    if max_lock is not None:
        extra["max_lock"] = parse_duration(max_lock, "--max-lock")
    if hook is not None:
        extra["on_delete"] = parse_hook(hook, "--hook")
    if lock is not None:
        if lock not in ("state", "store"):
            raise usage_error(f"--lock: invalid value {lock!r}", "use --lock state or --lock store")
        extra["lock"] = lock
    if check_open:
        extra["check_open"] = True
    if create_lock_table:
        extra["create_lock_table"] = True
    store_overrides(store)
    parse_now(store.now)
    if wait:
        import random
        import time

        time.sleep(random.uniform(0, wait))
    with open_store_context(store, extra) as ctx:
        settings = ctx.settings
        rows_a_batch, lock_budget = batching(settings.get("batch_size"), settings.get("max_lock"))
        options = CleanupOptions(
            expired=expired,
            invalid=invalid,
            no_ttl=no_ttl,
            orphans=orphans,
            everything=everything,
            max_per_group=max_per_group
            if max_per_group is not None
            else settings.get("max_per_group"),
            max_count=max_count,
            max_size=size_cap,
            dry_run=dry_run,
            batch_size=rows_a_batch,
            max_lock=lock_budget,
            pause=settings.get("pause", 0.0),
            hook=settings.get("on_delete"),
            hook_timeout=settings["hook_timeout"],
            archive=bool(settings["archive"]) and not no_archive,
            archive_path=archive,
            allow_triggers=allow_triggers,
        )

        def confirm(count: int) -> bool:
            if yes:
                return True
            if not stdin_is_terminal():
                # --all was refused before; this is a cap that selected every session.
                raise usage_error(
                    f"refusing to remove all {count} sessions of {ctx.label} (the caps select "
                    "every one) without a terminal to confirm on",
                    "add --yes",
                )
            return typer.confirm(f"Remove ALL {count} sessions from {ctx.label}?", err=True)

        with Progress(enabled=not quiet, label=f"cleanup {ctx.label}") as progress:
            try:
                result = cleanup(ctx, options, progress=progress.update, confirm=confirm)
            except SessionctlError as exc:
                if quiet and exc.code == ExitCode.BUSY:
                    # Under cron, a run that overlaps the previous one is expected: exit 4, say nothing.
                    raise typer.Exit(int(exc.code)) from None
                raise
    figures = result.as_dict()
    if not quiet:
        render.emit_object(figures, output.value, cleanup_text)
    elif result.errors:
        for error in result.errors:
            say(f"{error['sessionId']}: {error['error']}")
    if result.aborted:
        say("aborted: nothing was removed")
    if result.error and not (quiet and result.error_code == ExitCode.BUSY):
        say(result.error)
    if result.warning:
        say(f"warning: {result.warning}")
    for note in [] if quiet else result.notes:
        say(note)
    if result.exit_code:
        raise typer.Exit(int(result.exit_code))


command = store_command(cleanup_command)
