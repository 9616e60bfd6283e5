"""`sessionctl schedule install | list | remove | enable | disable`: cleanups run by cron."""

import os
from typing import Annotated, Any, Optional

import typer

from .. import render
from ..domain.errors import ExitCode, SessionctlError, usage_error
from .common import (
    RowFormat,
    RowFormatOpt,
    StoreArgs,
    current_state,
    handle_errors,
    open_store_context,
    say,
)

app = typer.Typer(
    help="Cron entries that run a cleanup, so nothing runs as a daemon: in your crontab, or "
    "with --system in /etc/cron.d. Example: sessionctl schedule install web-expired --every 1h "
    "-- cleanup --expired --store web",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

COLUMNS = [
    render.Column("name", "NAME", lambda r: r["name"]),
    render.Column("schedule", "SCHEDULE", lambda r: r["schedule"]),
    render.Column("enabled", "ENABLED", lambda r: r["enabled"]),
    render.Column("next_run", "NEXT RUN", lambda r: r["next_run"]),
    render.Column("last_run", "LAST RUN", lambda r: r["last_run"]),
    render.Column("last_outcome", "OUTCOME", lambda r: r["last_outcome"]),
    render.Column("command", "COMMAND", lambda r: r["command"]),
    render.Column("where", "WHERE", lambda r: r["where"]),
]

NameArg = Annotated[
    str,
    typer.Argument(
        metavar="NAME",
        help="The entry's name: letters, digits, '-' and '_'. Example: web-expired",
    ),
]
SystemOpt = Annotated[
    bool,
    typer.Option(
        "--system",
        help="The entry in /etc/cron.d/sessionctl-NAME ($SESSIONCTL_CRON_D) instead of your "
        "crontab. Example: schedule remove web-expired --system",
    ),
]
DryRunOpt = Annotated[
    bool,
    typer.Option(
        "--dry-run",
        "-n",
        help="Print the crontab line and write nothing. Example: schedule disable web-expired -n",
    ),
]


def _cleanup_command():
    """The click command behind `sessionctl cleanup`, to check a scheduled cleanup's options."""
    import typer.main

    from . import cleanup

    single = typer.Typer()
    single.command("cleanup")(cleanup.command)
    return typer.main.get_command(single)


def _parse_cleanup(words: list[str]) -> dict[str, Any]:
    """The cleanup's parameters as the words give them (no environment variables)."""
    from typer.exceptions import TyperException

    if any(word in ("-h", "--help") for word in words):
        raise usage_error("--help cannot be scheduled", "see: sessionctl cleanup --help")
    command = _cleanup_command()
    try:
        context = command.make_context("cleanup", list(words))
    except TyperException as exc:
        raise usage_error(f"the cleanup after --: {exc.format_message()}") from None
    params = dict(context.params)
    for name in params:
        source = context.get_parameter_source(name)
        if source is not None and source.name == "ENVIRONMENT":
            # Cron's environment will not have it; what cron will have is decided below.
            params[name] = None
    return params


def _store_args(params: dict[str, Any]) -> StoreArgs:
    return StoreArgs(
        store=params["store"],
        preset=params["preset"],
        fields=list(params["field"] or []),
        max_age=params["max_age"],
        idle_timeout=params["idle_timeout"],
        idle_from=params["idle_from"],
        skew=params["skew"],
        timezone=params["timezone"],
        busy_timeout=params["busy_timeout"],
        php_ini=params.get("php_ini"),
        now=params["now"],
    )


def _check_now(params: dict[str, Any]) -> None:
    """Open the store and check the options as the cleanup will.

    Mistakes that will never fix themselves (no store given, nothing to remove, no way to tell
    what expired) are usage errors: nothing is installed. A store that cannot be used right now
    (it does not exist yet, say) is only a warning.
    """
    from ..app.hooks import parse_hook
    from ..app.ops.cleanup import (
        CleanupOptions,
        batching,
        check_options,
        has_readable_record,
    )
    from ..domain.timeparse import parse_duration, parse_size

    if params["archive"] is not None and params["no_archive"]:
        raise usage_error("the cleanup after --: --archive and --no-archive contradict each other")
    if params["archive"] is not None and not params["archive"].is_dir():
        # A run never overwrites an archive: a fixed file would refuse every run but the first.
        # In a folder, each run writes a file of its own.
        raise usage_error(
            f"a scheduled cleanup needs --archive to be a folder: {params['archive']} "
            + ("is a file" if params["archive"].exists() else "does not exist"),
            "each run writes a new archive file in it; create the folder first",
        )
    max_size = parse_size(params["max_size"], "--max-size") if params["max_size"] else None
    if not params["yes"] and not params["dry_run"]:
        if params["everything"]:
            raise usage_error(
                "a scheduled cleanup --all needs --yes", "cron has no terminal to confirm on"
            )
        for value, option in ((params["max_count"], "--max-count"), (max_size, "--max-size")):
            if value == 0:
                raise usage_error(
                    f"a scheduled cleanup {option} 0 removes every session and needs --yes",
                    "cron has no terminal to confirm on",
                )
    extra: dict[str, Any] = {}
    for key, option in (("pause", "--pause"), ("hook_timeout", "--hook-timeout")):
        if params[key] is not None:
            extra[key] = parse_duration(params[key], option)
    if params["jitter"] is not None:
        parse_duration(params["jitter"], "--jitter")
    if params.get("lock") is not None:
        if params["lock"] not in ("state", "store"):
            raise usage_error(
                f"--lock: invalid value {params['lock']!r}", "use --lock state or --lock store"
            )
        extra["lock"] = params["lock"]
    hook = parse_hook(params["hook"], "--hook") if params["hook"] is not None else None
    try:
        with open_store_context(_store_args(params), extra) as ctx:
            settings = ctx.settings
            hook = hook or settings.get("on_delete")
            options = CleanupOptions(
                expired=params["expired"],
                invalid=params["invalid"],
                everything=params["everything"],
                max_per_group=params["max_per_group"]
                if params["max_per_group"] is not None
                else settings.get("max_per_group"),
                max_count=params["max_count"],
                max_size=max_size,
                dry_run=True,
                batch_size=batching(params["batch_size"] or settings.get("batch_size"), None)[0],
                hook=hook,
                hook_timeout=settings["hook_timeout"],
            )
            check_options(ctx, options)
            if options.max_per_group == 0 and not params["yes"] and not params["dry_run"]:
                # Like --max-count 0: every session with a group goes, and each run that finds
                # every session selected refuses without --yes.
                raise usage_error(
                    "a scheduled cleanup with --max-per-group 0 (or max_per_group = 0) removes "
                    "every session that has a group and needs --yes",
                    "cron has no terminal to confirm on",
                )
            expiry_unknown = not ctx.policy.describes_expiry(ctx.mapping)
            if options.expired and expiry_unknown and not has_readable_record(ctx):
                # check_options lets a store with nothing readable through: a run is a no-op.
                say(
                    f"warning: {ctx.label} holds no readable session, so what its sessions will look like is "
                    "unknown; give --idle-timeout, --max-age or --field expires=FIELD if the "
                    "scheduled runs cannot tell which sessions are expired"
                )
    except SessionctlError as exc:
        if exc.code == ExitCode.USAGE:
            raise usage_error(f"the scheduled cleanup would fail: {exc.one_line()}") from None
        say(f"warning: the cleanup cannot run right now ({exc.one_line()}); installing it anyway")


def _prepare_cleanup(words: list[str], jitter: Optional[str]) -> list[str]:
    """The cleanup's options as cron will run them: checked, paths absolute, --quiet."""
    from ..app import schedule
    from ..app.config import ENV_STORE
    from ..domain.timeparse import parse_duration

    if not words:
        raise usage_error(
            "give the cleanup to run after --", "e.g. -- cleanup --expired --store web"
        )
    if words[0] != "cleanup":
        raise usage_error(
            f"only a cleanup can be scheduled, not {words[0]!r}",
            "e.g. -- cleanup --expired --store web",
        )
    args = words[1:]
    for word in args:
        schedule.check_text(word, "the cleanup after --")
    config = current_state().config()
    names = list(config.stores)
    params = _parse_cleanup(args)
    pinned = schedule.pin_cleanup_args(args, names)
    if params["store"] is not None and schedule.secret_left_out(params["store"], names):
        say(
            "warning: the password written in the store address is left out of the crontab "
            "line; give the scheduled runs the password through password_env or password_file"
        )
    if params["store"] is None and os.environ.get(ENV_STORE):
        # Cron's environment will not have it: write it down.
        pinned += ["--store", schedule.pin_address(os.environ[ENV_STORE], names)]
    if jitter is not None:
        if params["jitter"] is not None:
            raise usage_error("--jitter given twice", "give it before -- only")
        pinned += ["--jitter", jitter]
        parse_duration(jitter, "--jitter")
    if not params["quiet"]:
        pinned.insert(0, "--quiet")
    params = _parse_cleanup(pinned)
    if params["store"] is not None and not schedule.address_is_pinned(params["store"], names):
        raise usage_error(
            f"cannot tell where store {params['store']!r} is from another folder",
            "give its absolute path",
        )
    if params["archive"] is not None and not params["archive"].is_absolute():
        raise usage_error("give --archive as an absolute path")
    _check_now(params)
    return pinned


def _report(change, what: str) -> None:
    typer.echo(change.line)
    if change.dry_run:
        say(f"dry run: nothing written; the line above would be {what} in {change.where}")
    elif change.action == "unchanged":
        say(f"{change.name} in {change.where} is {what} already")
    else:
        preposition = "from" if change.action == "removed" else "in"
        say(f"{change.action} {change.name} {preposition} {change.where}")
    if change.next_run and change.action != "removed":
        say(f"next run: {change.next_run}")


@app.command("install")
@handle_errors
def install_command(
    name: NameArg,
    cleanup: Annotated[
        Optional[list[str]],
        typer.Argument(
            metavar="-- cleanup [OPTIONS]",
            help="The cleanup to run, after --; relative store and archive paths are made "
            "absolute and --quiet is added. Example: -- cleanup --expired --store web",
            show_default=False,
        ),
    ] = None,
    cron: Annotated[
        Optional[str],
        typer.Option(
            "--cron",
            metavar="EXPR",
            help="When to run, as a cron expression (five fields, or @hourly, @daily...). "
            "Example: --cron '*/15 * * * *'",
        ),
    ] = None,
    every: Annotated[
        Optional[str],
        typer.Option(
            "--every",
            metavar="DURATION",
            help="How often to run, turned into a cron expression: minutes that divide an hour, "
            "hours that divide a day, 1d (at midnight) or 1w. Example: --every 15m",
        ),
    ] = None,
    system: Annotated[
        bool,
        typer.Option(
            "--system",
            help="Write /etc/cron.d/sessionctl-NAME ($SESSIONCTL_CRON_D) with a user column, "
            "instead of your crontab. Example: --system --user www-data",
        ),
    ] = False,
    user: Annotated[
        Optional[str],
        typer.Option(
            "--user",
            "-u",
            metavar="USER",
            help="With --system: who runs the cleanup (default: you); that user must be able to "
            "read the config and the store and write the state folder. Example: --user www-data",
        ),
    ] = None,
    mail: Annotated[
        bool,
        typer.Option(
            "--mail",
            help="Leave the output of a failed run to cron, which mails it to MAILTO, instead of "
            "appending it to STATE/schedule/NAME.log. Example: --mail",
        ),
    ] = False,
    jitter: Annotated[
        Optional[str],
        typer.Option(
            "--jitter",
            metavar="DURATION",
            help="Wait a random time up to DURATION before each run, so a fleet of hosts sharing "
            "one store do not all start at once. Example: --jitter 5m",
        ),
    ] = None,
    dry_run: DryRunOpt = False,
) -> None:
    """Install (or replace) a cron entry that runs a cleanup.

    The line runs the absolute path of this sessionctl with the config file and the state
    folder pinned, so it works with cron's environment; a successful run prints nothing, a run
    that overlaps the previous one exits 4 without a word. Installing a NAME again replaces its
    entry; lines that are not sessionctl's are left as they were.
    Example: sessionctl schedule install web-expired --every 1h -- cleanup --expired --store web
    """
    from ..app import schedule
    from ..app.config import state_dir

    schedule.check_name(name)
    if (cron is None) == (every is None):
        raise usage_error("say when to run: give --cron EXPR or --every DURATION (one of them)")
    expression = schedule.check_cron(cron) if cron is not None else schedule.every_to_cron(every)
    if user is not None and not system:
        raise usage_error("--user goes with --system", "your crontab always runs as you")
    if user is not None:
        schedule.check_user(user)
    args = _prepare_cleanup(list(cleanup or []), jitter)
    config = current_state().config()
    folder, _ = state_dir(config)
    request = schedule.InstallRequest(
        name=name,
        schedule=expression,
        cleanup_args=args,
        state_dir=folder,
        config=config.path,
        mail=mail,
        system=system,
        user=user,
        dry_run=dry_run,
    )
    change = schedule.install(request)
    _report(change, "installed")
    if system and user is not None and user != schedule.current_user():
        needs = f"the store, {config.path} and " if config.path else "the store and "
        say(f"note: {user} runs it, and must be able to read {needs}write {folder}")


@app.command("list")
@handle_errors
def list_command(
    output: RowFormatOpt = RowFormat.table,
) -> None:
    """Entries in your crontab and in /etc/cron.d: name, schedule, command, enabled, next run,
    and the last run's time and outcome from the audit log.

    Example: sessionctl schedule list --format json
    """
    from ..app import schedule
    from ..app.config import state_dir

    folder, _ = state_dir(current_state().config())
    entries, notes = schedule.list_entries(folder)
    for note in notes:
        say(note)
    render.emit_rows([entry.as_dict() for entry in entries], output.value, COLUMNS)
    if output is RowFormat.table and not entries:
        say("no scheduled cleanups (add one with: sessionctl schedule install)")


def _change(name: str, action: str, what: str, system: bool, dry_run: bool) -> None:
    from ..app import schedule
    from ..app.config import state_dir

    folder, _ = state_dir(current_state().config())
    _report(schedule.change(name, action, folder, system, dry_run), what)


@app.command("remove")
@handle_errors
def remove_command(name: NameArg, system: SystemOpt = False, dry_run: DryRunOpt = False) -> None:
    """Remove an entry; prints the line it removed.

    Example: sessionctl schedule remove web-expired
    """
    _change(name, "remove", "removed", system, dry_run)


@app.command("enable")
@handle_errors
def enable_command(name: NameArg, system: SystemOpt = False, dry_run: DryRunOpt = False) -> None:
    """Start running a disabled entry again (seed 003's start).

    Example: sessionctl schedule enable web-expired
    """
    _change(name, "enable", "enabled", system, dry_run)


@app.command("disable")
@handle_errors
def disable_command(name: NameArg, system: SystemOpt = False, dry_run: DryRunOpt = False) -> None:
    """Stop running an entry without removing it: its line is commented out (seed 003's stop).

    Example: sessionctl schedule disable web-expired
    """
    _change(name, "disable", "disabled", system, dry_run)
