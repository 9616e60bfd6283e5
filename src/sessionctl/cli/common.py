"""What every command shares: the store options, error handling, output helpers.

Commands stay thin: they declare their own options, take a `StoreArgs` for the shared store
options (added to their signature by `@store_command`), call one application operation and hand the
result to a renderer. Errors become one line on stderr and a documented exit code.
"""

import contextlib
import functools
import inspect
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Any, NoReturn, Optional

import typer

from ..domain.errors import ExitCode, SessionctlError, nested_too_deeply

PROG = "sessionctl"


@dataclass
class AppState:
    """Set by the top-level callback on every invocation (CliRunner runs many in one process)."""

    config_path: Optional[str] = None
    _config: Any = None

    def config(self):
        if self._config is None:
            from ..app.config import load_config

            self._config = load_config(self.config_path)
        return self._config


STATE = AppState()


def reset_state(config_path: Optional[str]) -> None:
    global STATE
    STATE = AppState(config_path=config_path)


def current_state() -> AppState:
    return STATE


# --- messages and errors ---------------------------------------------------------------------


#: Control characters in quoted ids and paths, shown escaped: a diagnostic stays one line, and
#: a session id cannot move the operator's cursor or recolour the terminal.
_CONTROL = {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))} | {
    ord("\n"): "\\n",
    ord("\r"): "\\r",
    ord("\t"): "\\t",
}


def say(message: str) -> None:
    """A diagnostic for the operator: stderr, never stdout, one line whatever it quotes."""
    typer.echo(f"{PROG}: {message.translate(_CONTROL)}", err=True)


def fail(message: str, code: int = ExitCode.USAGE) -> NoReturn:
    say(" ".join(message.split()))
    raise typer.Exit(int(code))


def handle_errors(function: Callable) -> Callable:
    """Turn every failure into one line on stderr and its exit code; never a traceback."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except SessionctlError as exc:
            fail(exc.one_line(), exc.code)
        except KeyboardInterrupt:
            fail("interrupted", ExitCode.INTERRUPTED)
        except BrokenPipeError:
            # The reader went away (`| head`): stop quietly, as other Unix tools do.
            with contextlib.suppress(OSError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(0) from None
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except RecursionError:
            exc = nested_too_deeply()
            fail(exc.one_line(), exc.code)
        except Exception as exc:  # a bug: say so in one line, traceback on request
            if os.environ.get("SESSIONCTL_DEBUG"):
                traceback.print_exc()
            fail(
                f"internal error: {type(exc).__name__}: {exc} "
                "(set SESSIONCTL_DEBUG=1 for a traceback and please report it)",
                ExitCode.INTERNAL,
            )

    return wrapper


# --- output options --------------------------------------------------------------------------


class RowFormat(StrEnum):
    table = "table"
    json = "json"
    ndjson = "ndjson"
    csv = "csv"
    csv_raw = "csv-raw"


class ObjectFormat(StrEnum):
    table = "table"
    json = "json"
    ndjson = "ndjson"


class IdleFrom(StrEnum):
    accessed = "accessed"
    created = "created"


class StatsFormat(StrEnum):
    table = "table"
    json = "json"
    ndjson = "ndjson"
    prometheus = "prometheus"


#: The one --format option of commands that print rows, and of those that print one result.
RowFormatOpt = Annotated[
    RowFormat,
    typer.Option(
        "--format",
        "-f",
        help="table, json, ndjson, csv, or csv-raw (csv prefixes a ' to text cells a "
        "spreadsheet would run as a formula, such as =HYPERLINK(...), and escapes control "
        "characters, as \\x1b; csv-raw writes them as they are). Example: -f json",
        envvar="SESSIONCTL_FORMAT",
        case_sensitive=False,
    ),
]
ObjectFormatOpt = Annotated[
    ObjectFormat,
    typer.Option(
        "--format",
        "-f",
        help="table, json or ndjson. Example: -f json",
        envvar="SESSIONCTL_FORMAT",
        case_sensitive=False,
    ),
]

QuietOpt = Annotated[
    bool,
    typer.Option(
        "--quiet", "-q", help="Print nothing but errors (for cron). Example: cleanup --expired -q"
    ),
]
ShowSecretsOpt = Annotated[
    bool,
    typer.Option(
        "--show-secrets",
        help="Show payload and secret-looking fields instead of <redacted: N bytes>. "
        "Example: inspect abc123 --show-secrets",
    ),
]


# --- store options ---------------------------------------------------------------------------


def complete_store(ctx: typer.Context, incomplete: str) -> list[str]:
    """Store names from the config file (--config, $SESSIONCTL_CONFIG, ...), for shell completion."""
    try:
        from ..app.config import load_config

        explicit = ctx.find_root().params.get("config_file") or os.environ.get("SESSIONCTL_CONFIG")
        names = list(load_config(explicit).stores)
    except (SessionctlError, OSError):
        return []
    return [name for name in names if name.startswith(incomplete)]


def complete_preset(incomplete: str) -> list[str]:
    from ..domain.mapping import PRESETS

    return [name for name in PRESETS if name.startswith(incomplete)]


@dataclass
class StoreArgs:
    """The store options as given on the command line (None: not given)."""

    store: Optional[str] = None
    preset: Optional[str] = None
    fields: list[str] = field(default_factory=list)
    max_age: Optional[str] = None
    idle_timeout: Optional[str] = None
    idle_from: Optional[str] = None
    skew: Optional[str] = None
    timezone: Optional[str] = None
    busy_timeout: Optional[str] = None
    php_ini: Optional[str] = None
    now: Optional[str] = None
    explain: bool = False


_STORE_PARAMETERS = [
    inspect.Parameter(
        "store",
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[
            Optional[str],
            typer.Option(
                "--store",
                "-s",
                metavar="STORE",
                help="The store: a name from the config file, or json:PATH, jsondir:PATH, "
                "sqlite:PATH?table=NAME, or a plain path (kind detected). "
                "Example: --store web, --store ./sessions.json",
                envvar="SESSIONCTL_STORE",
                autocompletion=complete_store,
                show_envvar=True,
            ),
        ],
    ),
    inspect.Parameter(
        "preset",
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[
            Optional[str],
            typer.Option(
                metavar="PRESET",
                help="Field mapping, rules and expiry defaults of a known application "
                "(see `sessionctl presets`); detected when not given. Example: --preset django",
                autocompletion=complete_preset,
            ),
        ],
    ),
    inspect.Parameter(
        "field",
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[
            Optional[list[str]],
            typer.Option(
                "--field",
                metavar="ROLE=PATH",
                help="Map a role (id, created, accessed, expires, group, payload) to a field; "
                "dots reach into nested and JSON-text fields; repeatable. "
                "Example: --field expires=sess.cookie.expires",
            ),
        ],
    ),
    inspect.Parameter(
        "max_age",
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[
            Optional[str],
            typer.Option(
                "--max-age",
                metavar="DURATION",
                help="Sessions created longer ago than this are expired. Example: --max-age 7d",
            ),
        ],
    ),
    inspect.Parameter(
        "idle_timeout",
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[
            Optional[str],
            typer.Option(
                "--idle-timeout",
                metavar="DURATION",
                help="Sessions unused for longer than this are expired. Example: --idle-timeout 30m",
            ),
        ],
    ),
    inspect.Parameter(
        "idle_from",
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[
            Optional[IdleFrom],
            typer.Option(
                "--idle-from",
                help="What idleness is measured from: the last access (default), or the "
                "creation, for a store that keeps no last-access time (without it, an idle "
                "timeout on such a store is refused). Example: --idle-from created",
                case_sensitive=False,
            ),
        ],
    ),
    inspect.Parameter(
        "skew",
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[
            Optional[str],
            typer.Option(
                metavar="DURATION",
                help="Clock skew allowed before a timestamp counts as in the future "
                "(default 5m). Example: --skew 1m",
            ),
        ],
    ),
    inspect.Parameter(
        "timezone",
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[
            Optional[str],
            typer.Option(
                "--timezone",
                "--tz",
                metavar="ZONE",
                help="Zone of timestamps stored without an offset (default UTC). "
                "Example: --tz Europe/Berlin",
            ),
        ],
    ),
    inspect.Parameter(
        "busy_timeout",
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[
            Optional[str],
            typer.Option(
                "--busy-timeout",
                metavar="DURATION",
                help="How long to wait for a SQLite database another process has locked "
                "(default 5s). Example: --busy-timeout 30s",
            ),
        ],
    ),
    inspect.Parameter(
        "php_ini",
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[
            Optional[str],
            typer.Option(
                "--php-ini",
                metavar="FILE",
                help="PHP session files: the php.ini (and its conf.d) to read "
                "session.save_path, gc_maxlifetime and serialize_handler from; read, never run. "
                "Example: --store php: --php-ini /etc/php/8.2/fpm/php.ini",
            ),
        ],
    ),
    inspect.Parameter(
        "now",
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[
            Optional[str],
            typer.Option(
                metavar="TIME",
                help="Judge sessions as if it were TIME (what will have expired by then?). "
                "Example: --now 2026-12-24T00:00:00Z",
            ),
        ],
    ),
    inspect.Parameter(
        "explain",
        inspect.Parameter.KEYWORD_ONLY,
        default=False,
        annotation=Annotated[
            bool,
            typer.Option(
                help="Say on stderr which store, table, preset and fields were chosen and why. "
                "Example: list --explain",
            ),
        ],
    ),
]
_STORE_NAMES = [p.name for p in _STORE_PARAMETERS]


def store_command(function: Callable) -> Callable:
    """Add the shared store options to a command; it receives them as `store: StoreArgs`."""
    signature = inspect.signature(function)
    own = [p for name, p in signature.parameters.items() if name != "store"]

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        given = {name: kwargs.pop(name, None) for name in _STORE_NAMES}
        store = StoreArgs(
            store=given["store"],
            preset=given["preset"],
            fields=list(given["field"] or []),
            max_age=given["max_age"],
            idle_timeout=given["idle_timeout"],
            idle_from=given["idle_from"],
            skew=given["skew"],
            timezone=given["timezone"],
            busy_timeout=given["busy_timeout"],
            php_ini=given["php_ini"],
            now=given["now"],
            explain=bool(given["explain"]),
        )
        return function(*args, store=store, **kwargs)

    wrapper.__signature__ = signature.replace(parameters=own + _STORE_PARAMETERS)
    return handle_errors(wrapper)


def store_overrides(args: StoreArgs) -> dict[str, Any]:
    from ..app.config import get_timezone
    from ..domain.timeparse import parse_duration

    overrides: dict[str, Any] = {}
    for name in ("max_age", "idle_timeout", "skew", "busy_timeout"):
        value = getattr(args, name)
        if value is not None:
            overrides[name] = parse_duration(value, "--" + name.replace("_", "-"))
    if args.timezone is not None:
        overrides["timezone"] = get_timezone(args.timezone)
    if args.idle_from is not None:
        overrides["idle_from"] = str(getattr(args.idle_from, "value", args.idle_from))
    if args.php_ini is not None:
        overrides["php_ini"] = args.php_ini
    return overrides


@contextlib.contextmanager
def open_store_context(args: StoreArgs, extra: Optional[dict] = None) -> Iterator:
    """The resolved store for a command; closed when the command is done."""
    from ..app.context import StoreRequest, open_context
    from ..domain.mapping import parse_field_overrides
    from ..domain.timeparse import parse_now

    request = StoreRequest(
        store=args.store,
        preset=args.preset,
        fields=parse_field_overrides(args.fields),
        overrides={**store_overrides(args), **(extra or {})},
    )
    now = parse_now(args.now)
    ctx = open_context(current_state().config(), request, now)
    try:
        if args.explain:
            explain(ctx)
        yield ctx
    finally:
        ctx.close()


def explain(ctx) -> None:
    say(
        f"store {ctx.address.display} ({ctx.address.kind})"
        + (f", table {ctx.table}" if ctx.table else "")
    )
    if ctx.address.name:
        say(f"  chosen by name {ctx.address.name!r} from {ctx.config.path}")
    details = {k: v for k, v in ctx.store.describe().items() if k not in ("kind", "path", "table")}
    shown = {k: ", ".join(map(str, v)) if isinstance(v, list) else v for k, v in details.items()}
    say("  " + "; ".join(f"{key}: {value or '-'}" for key, value in shown.items()))
    say(f"  preset: {ctx.preset.name if ctx.preset else 'none (fields detected by name)'}")
    for row in ctx.mapping.explain():
        say(f"  {row['role']:<9} <- {row['path'] or '(none)'}   [{row['from']}]")
    policy = ctx.policy
    from ..domain.timeparse import format_duration

    ctx.pushdown()
    say(f"  judging: {ctx.pushdown_note}")
    say(
        f"  expiry: max_age={format_duration(policy.max_age) or '-'} "
        f"idle_timeout={format_duration(policy.idle_timeout) or '-'} "
        f"(from {policy.idle_from}) skew={format_duration(policy.skew)}"
    )
