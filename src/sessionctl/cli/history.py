"""`sessionctl history`."""

from typing import Annotated, Optional

import typer

from .. import render
from .common import RowFormat, RowFormatOpt, complete_store, current_state, handle_errors, say

COLUMNS = [
    render.Column("time", "TIME", lambda r: r["time"]),
    render.Column("command", "COMMAND", lambda r: r["command"]),
    render.Column("store", "STORE", lambda r: r["store"]),
    render.Column("dry_run", "DRY RUN", lambda r: r["dry_run"]),
    render.Column("selected", "SELECTED", lambda r: r["selected"]),
    render.Column("deleted", "REMOVED", lambda r: r["deleted"]),
    render.Column("failed", "FAILED", lambda r: r["failed"]),
    render.Column("outcome", "OUTCOME", lambda r: r["outcome"]),
    render.Column("user", "USER", lambda r: r["user"]),
]


@handle_errors
def history_command(
    store: Annotated[
        Optional[str],
        typer.Option(
            "--store",
            "-s",
            metavar="STORE",
            help="Only runs on this store (name or address). Example: --store web",
            autocompletion=complete_store,
        ),
    ] = None,
    limit: Annotated[
        int,
        typer.Option(
            "--limit", min=1, metavar="N", help="How many recent runs to show. Example: --limit 50"
        ),
    ] = 20,
    output: RowFormatOpt = RowFormat.table,
) -> None:
    """Past cleanups and restores from the audit log, with totals: sessions cleaned overall,
    the last run and how it ended.

    Example: sessionctl history --store web --limit 10
    """
    from ..app.config import state_dir
    from ..app.ops.history import history, history_address

    config = current_state().config()
    address = None
    if store is not None:
        # The store may be gone by now; its history is still worth seeing.
        address = history_address(store, config.stores)
    folder, _ = state_dir(config)
    report = history(folder, address, limit)
    if output is RowFormat.json:
        render.emit_object(report, "json", lambda obj, rich: "")
        return
    render.emit_rows(report["runs"], output.value, COLUMNS)
    if output is RowFormat.table:
        totals = report["totals"]
        last = report["last_run"]
        line = f"{totals['runs']} cleanup runs, {totals['cleaned']} sessions cleaned, {totals['failed']} failures"
        if last:
            line += f"; last run {last['time']}: {last['outcome']}"
        say(line)


command = history_command
