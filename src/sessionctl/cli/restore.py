"""`sessionctl restore ARCHIVE`."""

from pathlib import Path
from typing import Annotated

import typer

from .. import render
from ..domain.errors import ExitCode
from .common import (
    ObjectFormat,
    ObjectFormatOpt,
    QuietOpt,
    StoreArgs,
    open_store_context,
    say,
    store_command,
)

#: Refusals said one line each up to this many; the JSON result lists them all.
REFUSALS_SHOWN = 100


def restore_text(result: dict, rich: bool) -> str:
    pairs = [
        ("Archive", render.esc(result["archive"], rich)),
        ("Store", render.esc(result["store"], rich)),
        ("Entries", str(result["entries"])),
        ("Restored", render.markup(str(result["restored"]), "green", rich)),
        ("Skipped", f"{result['skipped']}  (their ids exist again)" if result["skipped"] else "0"),
    ]
    if result["refused"]:
        pairs.append(
            (
                "Refused",
                render.markup(
                    f"{result['refused']}  (the store cannot hold them; see the lines above)",
                    "red",
                    rich,
                ),
            )
        )
    if result["truncated"]:
        pairs.append(
            (
                "Note",
                render.markup(
                    "archive ends early (a run was cut short); all readable entries were used",
                    "yellow",
                    rich,
                ),
            )
        )
    return render.key_values(pairs, rich)


def restore_command(
    archive: Annotated[
        Path,
        typer.Argument(
            metavar="ARCHIVE",
            help="An archive written by cleanup. Example: restore ~/.local/state/sessionctl/archives/web/20261123T101500Z-4242.ndjson.gz",
        ),
    ],
    output: ObjectFormatOpt = ObjectFormat.table,
    quiet: QuietOpt = False,
    store: StoreArgs = None,
) -> None:
    """Put archived sessions back into their store (or --store), skipping ids that exist again.

    An entry the store cannot hold (an id that is no safe file name, a value a SQLite column
    cannot take, a record that did not parse, for a JSON file) is refused with one line on
    stderr, the others go in, and the exit status is 1.
    Example: sessionctl restore ./archive.ndjson.gz --store web
    """
    from ..app.audit import read_archive
    from ..app.ops.restore import restore

    contents = read_archive(archive)
    if store.store is None:
        store.store = contents.header.get("address")
        if store.preset is None and contents.header.get("id_field"):
            store.fields = [f"id={contents.header['id_field']}", *store.fields]
    with open_store_context(store) as ctx:
        result = restore(ctx, archive, contents)
    for refusal in result.refusals[:REFUSALS_SHOWN]:
        say(refusal_line(refusal))
    if result.refused > REFUSALS_SHOWN:
        say(f"... and {result.refused - REFUSALS_SHOWN} more refused (-f json lists them all)")
    if not quiet:
        render.emit_object(result.as_dict(), output.value, restore_text)
    if result.refused:
        raise typer.Exit(int(ExitCode.FINDINGS))


def refusal_line(refusal: dict) -> str:
    named = refusal["id"] if refusal["id"] is not None else refusal["key"]
    text = repr(named) if isinstance(named, str) else str(named)
    if len(text) > 80:
        text = text[:79] + "…"
    return f"not restored: entry {refusal['entry']} ({text}): {refusal['reason']}"


command = store_command(restore_command)
