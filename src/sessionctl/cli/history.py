"""`sessionctl history`."""

import os
from typing import Annotated, Optional

import typer

from .. import render
from .common import RowFormat, complete_store, current_state, handle_errors, say

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
            help="Only runs on this store (name or address). Example: --store web",
            autocompletion=complete_store,
        ),
    ] = None,
    limit: Annotated[
        int,
        typer.Option("--limit", "-n", min=1, help="How many recent runs to show. Example: -n 50"),
    ] = 20,
    output: Annotated[
        RowFormat,
        typer.Option(
            "--format",
            "-f",
            help="table, json, ndjson or csv. Example: -f json",
            envvar="SESSIONCTL_FORMAT",
        ),
    ] = RowFormat.table,
) -> None:
    """Past cleanups and restores from the audit log, with totals: sessions cleaned overall,
    the last run and how it ended.

    Example: sessionctl history --store web -n 10
    """
    from ..core.config import state_dir
    from ..core.ops.history import history
    from ..stores import parse_address

    config = current_state().config()
    label = prefix = None
    if store is not None:
        if store in config.stores:
            label, address = store, config.stores[store].get("address", "")
        else:
            label, address = store, store
        spec = parse_address(str(address))
        label = spec.name or label
        prefix = f"{spec.kind}:{os.path.realpath(spec.path)}"
        if spec.table:
            prefix += f"?table={spec.table}"
    folder, _ = state_dir(config)
    report = history(folder, label, prefix, limit)
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
