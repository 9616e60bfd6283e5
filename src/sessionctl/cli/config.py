"""`sessionctl config init | show | path`."""

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from .. import render
from ..domain.errors import usage_error
from .common import (
    RowFormat,
    RowFormatOpt,
    complete_preset,
    complete_store,
    current_state,
    handle_errors,
    say,
)

app = typer.Typer(
    help="Create and inspect the configuration file.\n\nExample: sessionctl config init --store web --address ./db.sqlite3",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

COLUMNS = [
    render.Column("scope", "SCOPE", lambda r: r["scope"]),
    render.Column("key", "KEY", lambda r: r["key"]),
    render.Column("value", "VALUE", lambda r: r["value"]),
    render.Column("source", "SOURCE", lambda r: r["source"]),
]


def _target_path() -> tuple[Path, str]:
    from ..app.config import config_candidates

    explicit = current_state().config_path
    return config_candidates(explicit)[0]


@app.command("init")
@handle_errors
def init_command(
    force: Annotated[
        bool,
        typer.Option("--force", help="Overwrite an existing file. Example: config init --force"),
    ] = False,
    store: Annotated[
        Optional[str],
        typer.Option(
            "--store",
            "-s",
            metavar="STORE",
            help="Also define a store with this name. Example: --store web",
        ),
    ] = None,
    address: Annotated[
        Optional[str],
        typer.Option(
            "--address",
            metavar="ADDRESS",
            help="The store's address (with --store). Example: --address sqlite:/srv/app/db.sqlite3",
        ),
    ] = None,
    preset: Annotated[
        Optional[str],
        typer.Option(
            "--preset",
            metavar="PRESET",
            help="The store's preset (with --store). Example: --preset django",
            autocompletion=complete_preset,
        ),
    ] = None,
) -> None:
    """Write a commented starter config file (never overwrites one without --force).

    Written to --config, $SESSIONCTL_CONFIG, or the user config folder.
    Example: sessionctl config init --store web --address ./db.sqlite3 --preset django
    """
    from ..app.config import starter_config
    from ..domain.mapping import get_preset
    from ..fsutil import atomic_write

    path, _ = _target_path()
    if path.exists() and not force:
        raise usage_error(f"{path} already exists", "add --force to overwrite it")
    if (address or preset) and not store:
        raise usage_error("--address and --preset describe a store: name it with --store")
    values: dict[str, Any] = {}
    if store:
        if not address:
            raise usage_error("--store needs --address")
        table: dict[str, Any] = {"address": address}
        if preset:
            get_preset(preset)
            table["preset"] = preset
        values = {"store": store, "stores": {store: table}}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, starter_config(path, values).encode(), mode=0o644)
    typer.echo(str(path))
    say(f"wrote {path}")


@app.command("show")
@handle_errors
def show_command(
    store: Annotated[
        Optional[str],
        typer.Option(
            "--store",
            "-s",
            metavar="STORE",
            help="Only this configured store. Example: --store web",
            autocompletion=complete_store,
        ),
    ] = None,
    output: RowFormatOpt = RowFormat.table,
) -> None:
    """Print the effective settings and where each one comes from.

    Example: sessionctl config show --store web
    """
    from ..app.config import state_dir, store_settings
    from ..domain.mapping import get_preset

    config = current_state().config()
    rows = [
        {
            "scope": "global",
            "key": "config_file",
            "value": str(config.path) if config.path else None,
            "source": config.chosen_by or "none found",
        },
    ]
    folder, source = state_dir(config)
    rows.append({"scope": "global", "key": "state_dir", "value": str(folder), "source": source})
    rows.append(
        {
            "scope": "global",
            "key": "default_store",
            "value": config.data.get("store"),
            "source": config.source("top level") if config.data.get("store") else "default",
        }
    )
    names = list(config.stores)
    if store is not None:
        if store not in config.stores:
            raise usage_error(
                f"no store named {store!r} in the config",
                f"configured: {', '.join(names) or 'none'}",
            )
        names = [store]
    scopes: list[tuple[str, Optional[str]]] = [("defaults", None)] + [
        (f"stores.{n}", n) for n in names
    ]
    for scope, name in scopes:
        table = config.stores.get(name, {}) if name else {}
        preset_name = table.get("preset") or config.defaults.get("preset")
        preset = get_preset(preset_name) if preset_name else None
        settings = store_settings(config, name, preset.policy if preset else None, preset_name, {})
        for key, setting in settings.items():
            rows.append(
                {
                    "scope": scope,
                    "key": key,
                    "value": _shown(setting.value),
                    "source": setting.source,
                }
            )
    render.emit_rows(rows, output.value, COLUMNS)


def _shown(value: Any) -> Any:
    from ..domain.timeparse import format_duration

    if isinstance(value, float):
        return format_duration(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (dict, list, str, int, bool)) or value is None:
        return value or (None if value in ({}, []) else value)
    return str(value)


@app.command("path")
@handle_errors
def path_command() -> None:
    """Print the config file in use (or where `config init` would write one).

    Example: sessionctl config path
    """
    config = current_state().config()
    if config.path is not None:
        typer.echo(str(config.path))
        return
    path, _ = _target_path()
    typer.echo(str(path))
    say(f"{path} does not exist yet (create it with: sessionctl config init)")
