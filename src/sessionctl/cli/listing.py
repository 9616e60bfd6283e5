"""`sessionctl list`."""

from typing import Annotated, Optional

import typer

from .. import render
from ..domain.timeparse import format_duration
from .common import (
    RowFormat,
    RowFormatOpt,
    ShowSecretsOpt,
    StoreArgs,
    open_store_context,
    store_command,
)

#: Columns `list` knows by name; anything else given to --fields is a path into the record.
STANDARD_COLUMNS: dict[str, render.Column] = {
    column.key: column
    for column in (
        render.Column("id", "ID", lambda r: r["id"]),
        render.Column("key", "KEY", lambda r: r["key"]),
        render.Column("status", "STATUS", lambda r: r["status"], shorten=False),
        render.Column("group", "GROUP", lambda r: r["group"]),
        render.Column("created", "CREATED", lambda r: r["created"]),
        render.Column("accessed", "LAST USED", lambda r: r["accessed"]),
        render.Column("expires", "EXPIRES", lambda r: r["expires"]),
        render.Column(
            "age",
            "AGE",
            lambda r: format_duration(r["age_s"]),
            csv_cell=lambda r: r["age_s"],
            shorten=False,
        ),
        render.Column(
            "idle",
            "IDLE",
            lambda r: format_duration(r["idle_s"]),
            csv_cell=lambda r: r["idle_s"],
            shorten=False,
        ),
        render.Column(
            "expires_in",
            "EXPIRES IN",
            lambda r: format_duration(r["expires_in_s"]),
            csv_cell=lambda r: r["expires_in_s"],
            shorten=False,
        ),
        render.Column(
            "reasons",
            "REASONS",
            lambda r: ", ".join(x["code"] for x in r["reasons"]) or None,
            csv_cell=lambda r: ";".join(x["code"] for x in r["reasons"]),
            shorten=False,
        ),
    )
}
DEFAULT_COLUMNS = [
    "id",
    "status",
    "group",
    "created",
    "accessed",
    "expires",
    "age",
    "idle",
    "reasons",
]


def field_column(path: str) -> render.Column:
    return render.Column(path, path.upper(), lambda r, p=path: r.get("fields", {}).get(p))


def columns_for(chosen: Optional[str]) -> tuple[list[render.Column], list[str]]:
    """Table/CSV columns for --fields, and the record paths the views must carry."""
    names = [n.strip() for n in (chosen or "").split(",") if n.strip()] or DEFAULT_COLUMNS
    columns, paths = [], []
    for name in names:
        if name in STANDARD_COLUMNS:
            columns.append(STANDARD_COLUMNS[name])
        else:
            columns.append(field_column(name))
            paths.append(name)
    return columns, paths


def list_command(
    expired: Annotated[
        bool, typer.Option("--expired", help="Only expired sessions. Example: list --expired")
    ] = False,
    active: Annotated[
        bool, typer.Option("--active", help="Only active sessions. Example: list --active")
    ] = False,
    invalid: Annotated[
        bool, typer.Option("--invalid", help="Only invalid sessions. Example: list --invalid")
    ] = False,
    older_than: Annotated[
        Optional[str],
        typer.Option(
            "--older-than",
            metavar="DURATION",
            help="Only sessions created longer ago. Example: --older-than 7d",
        ),
    ] = None,
    idle_for: Annotated[
        Optional[str],
        typer.Option(
            "--idle-for",
            metavar="DURATION",
            help="Only sessions unused for longer. Example: --idle-for 2h",
        ),
    ] = None,
    where: Annotated[
        Optional[list[str]],
        typer.Option(
            "--where",
            metavar="FIELD=VALUE",
            help="Only sessions whose field (or id / group) equals VALUE; repeatable, all must match. "
            "Example: --where workspace_name=acme",
        ),
    ] = None,
    sort: Annotated[
        Optional[str],
        typer.Option(
            metavar="KEY",
            help="Sort by id, created, accessed, expires, group, age, idle, size or status "
            "(store order when not given). Example: --sort idle",
        ),
    ] = None,
    reverse: Annotated[
        bool, typer.Option("--reverse", "-r", help="Reverse the sort. Example: --sort age -r")
    ] = False,
    limit: Annotated[
        Optional[int],
        typer.Option(
            "--limit", min=0, metavar="N", help="Show at most N sessions. Example: --limit 20"
        ),
    ] = None,
    fields: Annotated[
        Optional[str],
        typer.Option(
            "--fields",
            metavar="A,B,...",
            help="Columns to show: id, key, status, group, created, accessed, expires, age, idle, "
            "expires_in, reasons, or any record field path. Example: --fields id,age,cdp_url",
        ),
    ] = None,
    output: RowFormatOpt = RowFormat.table,
    show_secrets: ShowSecretsOpt = False,
    store: StoreArgs = None,
) -> None:
    """List sessions with their status, times and reasons.

    Example: sessionctl list --store web --expired --sort age --limit 20
    """
    from ..app.ops.listing import ListQuery, list_sessions, parse_where
    from ..domain.timeparse import parse_duration

    columns, paths = columns_for(fields)
    query = ListQuery(
        expired=expired,
        active=active,
        invalid=invalid,
        older_than=parse_duration(older_than, "--older-than") if older_than else None,
        idle_for=parse_duration(idle_for, "--idle-for") if idle_for else None,
        where=parse_where(where or []),
        sort=sort,
        reverse=reverse,
        limit=limit,
        fields=paths,
        show_secrets=show_secrets,
    )
    with open_store_context(store) as ctx:
        render.emit_rows(list_sessions(ctx, query), output.value, columns)


command = store_command(list_command)
