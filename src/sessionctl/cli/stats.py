"""`sessionctl stats`."""

import sys
from typing import Annotated, Optional

import typer

from .. import render
from ..domain.errors import ExitCode
from .common import StatsFormat, StoreArgs, open_store_context, say, store_command


def stats_command(
    top: Annotated[
        int,
        typer.Option("--top", min=0, metavar="N", help="How many groups to list. Example: --top 5"),
    ] = 10,
    alert_active: Annotated[
        Optional[int],
        typer.Option(
            "--alert-active",
            metavar="N",
            help="Exit 1 if more than N sessions are active. Example: --alert-active 1000",
        ),
    ] = None,
    alert_expired: Annotated[
        Optional[int],
        typer.Option(
            "--alert-expired",
            metavar="N",
            help="Exit 1 if more than N are expired (cleanup not running?). Example: --alert-expired 0",
        ),
    ] = None,
    alert_invalid: Annotated[
        Optional[int],
        typer.Option(
            "--alert-invalid",
            metavar="N",
            help="Exit 1 if more than N are invalid. Example: --alert-invalid 0",
        ),
    ] = None,
    alert_total: Annotated[
        Optional[int],
        typer.Option(
            "--alert-total",
            metavar="N",
            help="Exit 1 if the store holds more than N sessions. Example: --alert-total 50000",
        ),
    ] = None,
    alert_oldest: Annotated[
        Optional[str],
        typer.Option(
            "--alert-oldest",
            metavar="DURATION",
            help="Exit 1 if the oldest session is older. Example: --alert-oldest 2h",
        ),
    ] = None,
    alert_size: Annotated[
        Optional[str],
        typer.Option(
            "--alert-size",
            metavar="SIZE",
            help="Exit 1 if the store is bigger. Example: --alert-size 10MB",
        ),
    ] = None,
    output: Annotated[
        StatsFormat,
        typer.Option(
            "--format",
            "-f",
            help="table, json, ndjson or prometheus (text exposition). Example: -f prometheus",
            envvar="SESSIONCTL_FORMAT",
        ),
    ] = StatsFormat.table,
    store: StoreArgs = None,
) -> None:
    """Counts (total, active, expired, invalid), oldest and newest, size, top groups, an age
    histogram and the last cleanup.

    With --alert-* thresholds it exits 1 when one is crossed (monitoring, seed 002).
    Example: sessionctl stats --store web --alert-expired 1000 -f prometheus
    """
    from ..app.ops.stats import check_thresholds, compute_stats
    from ..domain.timeparse import parse_duration, parse_size

    limits = {
        "active": alert_active,
        "expired": alert_expired,
        "invalid": alert_invalid,
        "total": alert_total,
        "oldest": parse_duration(alert_oldest, "--alert-oldest") if alert_oldest else None,
        "size": parse_size(alert_size, "--alert-size") if alert_size else None,
    }
    with open_store_context(store) as ctx:
        stats = compute_stats(ctx, top=top)
    figures = stats.as_dict()
    if output is StatsFormat.prometheus:
        sys.stdout.write(render.prometheus_text(figures))
    else:
        render.emit_object(figures, output.value, render.stats_text)
    if output is not StatsFormat.table:
        for warning in figures["warnings"]:
            say(f"warning: {warning}")
    alerts = check_thresholds(stats, limits)
    for alert in alerts:
        say(f"alert: {alert}")
    if alerts:
        raise typer.Exit(int(ExitCode.FINDINGS))


command = store_command(stats_command)
