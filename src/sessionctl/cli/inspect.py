"""`sessionctl inspect ID`."""

import json
from typing import Annotated

import typer

from .. import render
from ..domain.timeparse import format_size
from .common import (
    ObjectFormat,
    ObjectFormatOpt,
    ShowSecretsOpt,
    StoreArgs,
    open_store_context,
    store_command,
)


def inspect_text(view: dict, rich: bool) -> str:
    status = view["status"]
    pairs = [
        ("Session", render.esc(view["id"], rich)),
        ("Store", render.esc(view["store"], rich)),
        ("Key", render.esc(view["key"], rich)),
        ("Status", render.markup(status, render.STATUS_STYLE.get(status, "bold"), rich)),
        ("Group", render.esc(view["group"], rich)),
        ("Created", render.esc(f"{view['created'] or '-'}  ({view['age'] or '-'} ago)", rich)),
        ("Last used", render.esc(f"{view['accessed'] or '-'}  (idle {view['idle'] or '-'})", rich)),
        ("Expires", render.esc(_expires(view), rich)),
        ("Size", f"{format_size(view['size_bytes'])}"),
    ]
    text = render.key_values(pairs, rich)
    if view["reasons"]:
        text += "\n" + render.markup("Reasons", "bold", rich) + "\n"
        for reason in view["reasons"]:
            text += f"  {render.esc(reason['code'], rich)}: {render.esc(reason['message'], rich)}\n"
    text += "\n" + render.markup("Fields", "bold", rich) + "\n"
    for row in view["mapping"]:
        path, origin = render.esc(row["path"] or "-", rich), render.esc(row["from"], rich)
        text += f"  {row['role']:<9} {path}  ({origin})\n"
    text += "\n" + render.markup("Record", "bold", rich) + "\n"
    body = json.dumps(view["record"], indent=2, ensure_ascii=False, default=str)
    # Line by line: the layout stays, and what JSON leaves raw (DEL, C1 controls) is escaped.
    # Split at JSON's own newlines only: splitlines() also breaks at NEL (\x85) and U+2028
    # inside a value, which would print a line the record does not have instead of its escape.
    text += "\n".join(render.esc(line, rich) for line in body.split("\n")) + "\n"
    return text


def _expires(view: dict) -> str:
    if not view["expires"]:
        return "-"
    seconds = view["expires_in_s"]
    when = f"in {view['expires_in']}" if seconds >= 0 else f"{view['expires_in'].lstrip('-')} ago"
    return f"{view['expires']}  ({when})"


def inspect_command(
    session_id: Annotated[
        str,
        typer.Argument(
            metavar="ID",
            help="Session id (or the store's key: a file name, an object key). Example: inspect 7f3c",
        ),
    ],
    output: ObjectFormatOpt = ObjectFormat.table,
    show_secrets: ShowSecretsOpt = False,
    store: StoreArgs = None,
) -> None:
    """Show one session: its record (secrets redacted), age, idle time, expiry and verdict.

    Example: sessionctl inspect 7f3c9a --store web
    """
    from ..app.ops.inspect import inspect_session

    with open_store_context(store) as ctx:
        view = inspect_session(ctx, session_id, show_secrets)
    render.emit_object(view, output.value, inspect_text)


command = store_command(inspect_command)
