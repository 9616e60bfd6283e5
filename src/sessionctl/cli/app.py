"""The `sessionctl` command: the Typer app and its entry point."""

import os
import sys
from typing import Annotated, Optional

import typer

from .. import __version__
from . import (
    cleanup,
    config,
    history,
    inspect,
    listing,
    presets,
    restore,
    schedule,
    stats,
    validate,
)
from .common import reset_state

#: The environment variable of the shell-completion protocol (Typer: `source_<shell>`).
COMPLETE_VAR = "_SESSIONCTL_COMPLETE"

HELP = """Look after application session stores: see what is in them, find what is broken,
remove what has expired, from a shell, cron or CI.

Stores: a JSON file, a folder of JSON files, PHP session files, a table in SQLite,
PostgreSQL or MySQL/MariaDB, keys in Redis. Exit codes: 0 ok, 1 findings
(invalid sessions, a crossed threshold, some deletions failed), 2 usage, 3 store unusable,
4 busy, 5 nothing could be removed.

Example: sessionctl stats --store ./sessions.json
"""

app = typer.Typer(
    name="sessionctl",
    help=HELP,
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"sessionctl {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    config_file: Annotated[
        Optional[str],
        typer.Option(
            "--config",
            "-c",
            metavar="PATH",
            envvar="SESSIONCTL_CONFIG",
            show_envvar=True,
            help="Config file to use instead of the user or site one. "
            "Example: sessionctl --config /etc/sessionctl.toml stats",
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            "-V",
            is_eager=True,
            callback=_print_version,
            help="Print the version and exit. Example: sessionctl --version",
        ),
    ] = False,
) -> None:
    reset_state(config_file)


app.command("list")(listing.command)
app.command("inspect")(inspect.command)
app.command("validate")(validate.command)
app.command("stats")(stats.command)
app.command("cleanup")(cleanup.command)
app.command("restore")(restore.command)
app.command("history")(history.command)
app.command("presets")(presets.command)
app.add_typer(config.app, name="config")
app.add_typer(schedule.app, name="schedule")


def main() -> None:
    if COMPLETE_VAR in os.environ:
        # Shell completion (`_SESSIONCTL_COMPLETE=source_bash sessionctl`, and the scripts in
        # completions/): add_completion=False keeps --install-completion out of the options,
        # but also leaves Typer's bash/zsh/fish classes unregistered, so register them here.
        import typer.completion

        typer.completion.completion_init()
        app(prog_name="sessionctl")
        return
    sys.exit(run(sys.argv[1:]))


def run(args: list[str]) -> int:
    """Run one command line; a usage error (an unknown option, a value out of range) is one
    line on stderr like every other error, not Click's usage block."""
    # Typer vendors its own Click (since 0.26; pinned below 0.30 in pyproject.toml).
    from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError

    from .common import say

    command = typer.main.get_command(app)
    try:
        code = command.main(args, prog_name="sessionctl", standalone_mode=False)
    except NoArgsIsHelpError as exc:
        exc.show()  # `sessionctl` alone: the help, as before
        return exc.exit_code
    except UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else "sessionctl"
        say(f"{' '.join(exc.format_message().split())} (see '{where} -h')")
        return exc.exit_code
    except ClickException as exc:
        say(" ".join(exc.format_message().split()))
        return exc.exit_code
    except typer.Abort:
        say("aborted")
        return 1
    return code if isinstance(code, int) else 0
