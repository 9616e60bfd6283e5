"""`sessionctl validate`."""

import json
import sys

import typer

from .. import render
from ..domain.errors import ExitCode
from .common import (
    QuietOpt,
    RowFormat,
    RowFormatOpt,
    StoreArgs,
    open_store_context,
    say,
    store_command,
)

COLUMNS = [
    render.Column("id", "ID", lambda r: r["id"]),
    render.Column("key", "KEY", lambda r: r["key"]),
    render.Column(
        "reasons",
        "REASONS",
        lambda r: "; ".join(x["message"] for x in r["reasons"]),
        csv_cell=lambda r: ";".join(x["code"] for x in r["reasons"]),
        shorten=False,
    ),
]


def validate_command(
    output: RowFormatOpt = RowFormat.table,
    quiet: QuietOpt = False,
    store: StoreArgs = None,
) -> None:
    """Check every session against the store's rules; list each invalid one with all its reasons.

    Exits 1 when any session is invalid, so a CI step can fail on it.
    Example: sessionctl validate --store ./sessions --preset raptor
    """
    from ..app.ops.validate import ValidationSummary, validate

    with open_store_context(store) as ctx:
        summary = ValidationSummary(store=ctx.label)
        found = validate(ctx, summary)
        if quiet:
            for _ in found:
                pass
        elif output is RowFormat.json:
            sys.stdout.write('{"invalid": ')
            render.emit_rows(found, "json", COLUMNS)
            sys.stdout.write(f', "summary": {json.dumps(summary.as_dict())}}}\n')
        else:
            render.emit_rows(found, output.value, COLUMNS)
    if not quiet:
        say(f"{summary.invalid} of {summary.total} sessions invalid" + _by_reason(summary))
    if summary.invalid:
        raise typer.Exit(int(ExitCode.FINDINGS))


def _by_reason(summary) -> str:
    if not summary.by_reason:
        return ""
    return (
        " ("
        + ", ".join(f"{code} {count}" for code, count in sorted(summary.by_reason.items()))
        + ")"
    )


command = store_command(validate_command)
