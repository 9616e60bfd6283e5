"""`sessionctl presets`."""

from .. import render
from .common import RowFormat, RowFormatOpt, handle_errors

COLUMNS = [
    render.Column("name", "NAME", lambda r: r["name"]),
    render.Column("shapes", "SHAPES", lambda r: ",".join(r["shapes"])),
    render.Column("table", "TABLE", lambda r: r["table"]),
    render.Column("id", "ID", lambda r: r["fields"]["id"]),
    render.Column("created", "CREATED", lambda r: r["fields"]["created"]),
    render.Column("accessed", "ACCESSED", lambda r: r["fields"]["accessed"]),
    render.Column("expires", "EXPIRES", lambda r: r["fields"]["expires"]),
    render.Column("group", "GROUP", lambda r: r["fields"]["group"]),
    render.Column(
        "policy", "DEFAULTS", lambda r: " ".join(f"{k}={v}" for k, v in r["policy"].items()) or None
    ),
    render.Column("title", "WHAT", lambda r: r["title"]),
]


def preset_rows() -> list[dict]:
    from ..domain.mapping import PRESETS

    return [
        {
            "name": preset.name,
            "title": preset.title,
            "shapes": list(preset.shapes),
            "table": preset.table,
            "fields": dict(preset.fields),
            "payload": list(preset.payload),
            "policy": dict(preset.policy),
            "rules": {
                k: (sorted(v) if isinstance(v, (set, frozenset)) else v)
                for k, v in preset.rules.items()
            },
            "detected_by": sorted(preset.signature),
        }
        for preset in PRESETS.values()
    ]


@handle_errors
def presets_command(
    output: RowFormatOpt = RowFormat.table,
) -> None:
    """The known applications' session shapes: which field plays which role, and defaults.

    Example: sessionctl presets -f json
    """
    render.emit_rows(preset_rows(), output.value, COLUMNS)


command = presets_command
