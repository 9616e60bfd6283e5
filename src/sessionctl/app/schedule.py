"""Cron entries that run a cleanup, so that nothing runs as a daemon.

Entries live in one of two places:

- the invoking user's crontab, read with `crontab -l` and written with `crontab -`;
- with `--system`, one file per entry in /etc/cron.d (`$SESSIONCTL_CRON_D` points elsewhere,
  for tests), system format with a user column, named `sessionctl-NAME` (Debian's cron ignores
  file names with dots), replaced atomically (temp file and rename).

Every entry is one line that ends with the marker comment `# sessionctl:NAME`. python-crontab
renders that line (the `%` escaping, the `# ` of a disabled entry, the user column), parses it
back, validates `--cron` expressions, and computes next runs with croniter. It does not rewrite
whole tabs here: its round trip changes lines that are not ours (it unquotes variables, moves
trailing comments to their own line, reorders environment lines). So a tab is edited line by
line, and every line that is not ours is kept byte for byte.

What makes a line work under cron, where hand-written lines fail:

- the absolute path of the `sessionctl` that installed it (a venv's console script runs without
  activating the venv), the config file pinned with `--config`, the state folder pinned with
  `SESSIONCTL_STATE_DIR=`, store and archive paths made absolute: nothing depends on PATH, HOME
  or the current folder;
- every word is quoted for /bin/sh, `%` is written `\\%` (cron turns a bare `%` into a line
  break), a `\\` is never followed by `%` and blank space is never followed by `#` inside a
  quoted word (neither survives cron or python-crontab), a line break is refused;
- the command stays under the 999 bytes cron keeps (MAX_COMMAND in Vixie cron and its Debian
  and cronie descendants; the rest of a longer line is dropped without a word);
- `cleanup --quiet`: a successful run prints nothing, so cron has nothing to mail; output goes
  to `STATE/schedule/NAME.log`, or with `--mail` to cron's MAILTO; a run that overlaps the
  previous one finds the store's cleanup lock held and exits 4 without a word;
- `SESSIONCTL_SCHEDULE=NAME` lands in the cleanup's audit entry: `schedule list` shows the last
  run of each entry from the audit log.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import pwd
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Collection, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from ..domain.errors import ExitCode, SessionctlError, usage_error
from ..domain.timeparse import parse_duration, to_iso
from ..fsutil import atomic_write, ensure_private_dir, os_error_text
from ..stores import parse_address

# python-crontab logs lines it cannot parse; without a handler they would reach stderr.
logging.getLogger("crontab").addHandler(logging.NullHandler())

ENV_CRON_D = "SESSIONCTL_CRON_D"
ENV_SCHEDULE = "SESSIONCTL_SCHEDULE"
ENV_STATE_DIR = "SESSIONCTL_STATE_DIR"
DEFAULT_CRON_D = "/etc/cron.d"
CRON_D_PREFIX = "sessionctl-"
MARKER = "sessionctl:"
#: run-parts names (what Debian's cron accepts in /etc/cron.d), starting with a letter or digit.
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}"
NAME_RE = re.compile(NAME_PATTERN)
MARKER_RE = re.compile(re.escape(MARKER) + f"({NAME_PATTERN})")
#: Cron keeps this many bytes of a command (MAX_COMMAND - 1) and silently drops the rest.
MAX_COMMAND_BYTES = 999
#: The console script looked for next to the running interpreter.
SCRIPT_NAME = "sessionctl"
SPECIALS = ("@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually")
CRON_HINT = (
    "five fields: minute hour day-of-month month day-of-week, e.g. '*/15 * * * *' or "
    "'30 2 * * 1-5', or one of @hourly @daily @weekly @monthly"
)
EVERY_HINT = (
    "use minutes that divide an hour (1m 2m 5m 10m 15m 20m 30m), hours that divide a day "
    "(1h 2h 3h 4h 6h 8h 12h), 1d or 1w; or give --cron"
)


# --- names, expressions, words ----------------------------------------------------------------


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise usage_error(
            f"bad schedule name {name!r}",
            "use up to 64 letters, digits, '-' and '_', starting with a letter or digit "
            "(cron ignores /etc/cron.d files with other names)",
        )
    return name


def check_text(text: str, what: str) -> str:
    """Refuse what cannot be in a crontab line: a line break (or another control character)."""
    if "\n" in text or "\r" in text:
        raise usage_error(f"{what}: {text!r} holds a line break, which cannot be in a crontab line")
    bad = re.search(r"[\x00-\x08\x0b-\x1f\x7f]", text)
    if bad:
        raise usage_error(
            f"{what}: {text!r} holds the control character {bad.group()!r}, "
            "which does not belong in a crontab line"
        )
    return text


def every_to_cron(text: str) -> str:
    """`--every 15m|1h|1d`: the cron expression that runs that often, evenly."""
    seconds = parse_duration(text, "--every")
    if seconds < 60 or seconds % 60:
        raise usage_error(f"--every: cron cannot run something every {text}", EVERY_HINT)
    minutes = int(seconds // 60)
    if minutes < 60 and 60 % minutes == 0:
        return "* * * * *" if minutes == 1 else f"*/{minutes} * * * *"
    hours, rest = divmod(minutes, 60)
    if not rest and hours < 24 and 24 % hours == 0:
        return "0 * * * *" if hours == 1 else f"0 */{hours} * * *"
    if minutes == 24 * 60:
        return "0 0 * * *"
    if minutes == 7 * 24 * 60:
        return "0 0 * * 0"
    raise usage_error(f"--every: cron cannot run something every {text} evenly", EVERY_HINT)


def check_cron(expression: str) -> str:
    """A `--cron` expression, whitespace normalised; one clear usage error when it is bad."""
    from crontab import CronSlices

    check_text(expression, "--cron")
    text = " ".join(expression.split())
    shown = f"--cron {text!r}"
    if text.startswith("@"):
        if text.lower() not in SPECIALS:
            raise usage_error(f"{shown}: not a periodic schedule", CRON_HINT)
        text = text.lower()
    elif len(text.split()) != 5:
        raise usage_error(f"{shown}: {len(text.split())} fields, cron wants 5", CRON_HINT)
    try:
        CronSlices(text)
    except (ValueError, KeyError) as exc:
        detail = str(exc.args[0] if exc.args else exc).replace("'", "")
        raise usage_error(f"{shown} is not a cron expression: {detail}", CRON_HINT) from None
    if next_run(text) is None:
        raise usage_error(f"{shown}: never runs (no such date)", CRON_HINT)
    return text


def next_run(schedule: str, after: float | None = None) -> float | None:
    """The next time cron starts an entry (cron reads times in the local zone), epoch seconds."""
    from crontab import CronTab

    job = CronTab(tab="").new(command="true")
    try:
        job.setall(schedule)
        start = datetime.fromtimestamp(after) if after is not None else datetime.now()
        return job.schedule(date_from=start).get_next().timestamp()
    except (ValueError, KeyError):  # croniter's "no such date" is a ValueError
        return None


_SAFE_WORD = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")


def quote(word: str) -> str:
    """`word` for /bin/sh inside a crontab line: the shell sees exactly `word`.

    Single quotes, as shlex.quote, and two more cuts (`''`, an empty quoted string, which the
    shell drops): between a `\\` and a `%` (cron cannot keep a backslash before `%`), and
    between blank space and `#` (python-crontab would read the rest of the line as a comment).
    """
    check_text(word, "a word of the cron command")
    if _SAFE_WORD.fullmatch(word):
        return word
    parts = ["'"]
    previous = ""
    for char in word:
        if char == "'":
            parts.append("'\"'\"'")
        else:
            if (char == "%" and previous == "\\") or (char == "#" and previous.isspace()):
                parts.append("''")
            parts.append(char)
        previous = char
    parts.append("'")
    return "".join(parts)


# --- pinning what a cleanup refers to ----------------------------------------------------------

_STORE_OPTIONS = ("--store", "-s")
_PATH_OPTIONS = ("--archive", "--php-ini")
_COMMAND_OPTIONS = ("--hook",)


def pin_address(text: str, store_names: Collection[str]) -> str:
    """A store address that means the same from any folder, with no secret: the store kind's
    own pinned form (a path made absolute; a connection string without its password).

    A path whose kind cannot be told (nothing there yet) is pinned as its absolute path."""
    if text in store_names:
        return text
    try:
        return parse_address(text).pinned
    except SessionctlError as exc:
        if exc.code != ExitCode.STORE:
            raise
        return str(Path(text.strip()).expanduser().absolute())


def pin_command(text: str) -> str:
    """A hook command whose program is an absolute path (cron's PATH is /usr/bin:/bin)."""
    try:
        words = shlex.split(text)
    except ValueError:
        return text  # the cleanup's own check reports it
    if not words:
        return text
    program = words[0]
    if "/" in program:
        pinned = str(Path(program).expanduser().absolute())
    else:
        pinned = shutil.which(program) or program
    return shlex.join([pinned, *words[1:]])


def pin_cleanup_args(args: list[str], store_names: Collection[str]) -> list[str]:
    """The cleanup's options with store, archive and hook paths made absolute."""

    def pinned(option: str, value: str) -> str:
        if option in _STORE_OPTIONS:
            return pin_address(value, store_names)
        if option in _PATH_OPTIONS:
            return str(Path(value).expanduser().absolute())
        return pin_command(value)

    options = (*_STORE_OPTIONS, *_PATH_OPTIONS, *_COMMAND_OPTIONS)
    out: list[str] = []
    index = 0
    while index < len(args):
        word = args[index]
        if word == "--":
            out.extend(args[index:])
            break
        if word in options and index + 1 < len(args):
            out += [word, pinned(word, args[index + 1])]
            index += 2
            continue
        option, equals, value = word.partition("=")
        if equals and option.startswith("--") and option in options:
            out.append(f"{option}={pinned(option, value)}")
        elif word.startswith("-s") and not word.startswith("--") and len(word) > 2:
            out.append("-s" + pinned("-s", word[2:]))
        else:
            out.append(word)
        index += 1
    return out


def secret_left_out(text: str, store_names: Collection[str]) -> bool:
    """Whether the address carries a password its pinned form leaves out (cron's runs will
    need it from password_env, password_file or the driver's own files)."""
    if text in store_names:
        return False
    try:
        return parse_address(text).secret is not None
    except SessionctlError:
        return False


def address_is_pinned(address: str, store_names: Collection[str]) -> bool:
    return address in store_names or pin_address(address, store_names) == address.strip()


# --- the line ---------------------------------------------------------------------------------


def sessionctl_command() -> list[str]:
    """The absolute command of this sessionctl: its console script, else `python -P -m`."""
    python = Path(sys.executable).absolute()  # not resolved: a venv's python is a symlink
    script = python.parent / SCRIPT_NAME
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    # -P: never import from the current folder (cron starts in $HOME).
    return [str(python), "-P", "-m", "sessionctl"]


def log_file(state_dir: Path, name: str) -> Path:
    return state_dir / "schedule" / f"{name}.log"


def build_command(
    name: str,
    executable: list[str],
    state_dir: Path,
    config: Path | None,
    cleanup_args: list[str],
    log: Path | None,
) -> str:
    """The shell command of an entry (before cron's `%` escaping)."""
    words = [f"{ENV_SCHEDULE}={check_name(name)}", f"{ENV_STATE_DIR}={quote(str(state_dir))}"]
    words += [quote(word) for word in executable]
    if config is not None:
        words += ["--config", quote(str(config))]
    words += ["cleanup", *(quote(word) for word in cleanup_args)]
    if log is not None:
        words += [">>" + quote(str(log)), "2>&1"]
    return " ".join(words)


def render_line(
    schedule: str, command: str, name: str, user: str | None = None, enabled: bool = True
) -> str:
    """One crontab line (system format when `user` is given), checked by python-crontab.

    The times are always five fields (python-crontab's own renderer writes `@hourly` for
    `0 * * * *`, and it cannot read back a `@special` line whose command holds a `#`).
    """
    from crontab import CronSlices

    times = CronSlices(schedule).clean_render()
    column = f"{user} " if user else ""
    escaped = command.replace("%", "\\%")  # cron makes a bare % a line break
    line = f"{times} {column}{escaped} # {MARKER}{name}"
    size = len(cron_command_field(line, system=user is not None).encode("utf-8", "surrogateescape"))
    if size > MAX_COMMAND_BYTES:
        raise usage_error(
            f"the cron command would be {size} bytes; cron keeps {MAX_COMMAND_BYTES} and "
            "drops the rest",
            "use a store name from the config file, or shorter paths",
        )
    item = _item(line, system=user is not None)
    read_back = (item.is_valid(), item.command, item.comment, item.user if user else None)
    if read_back != (True, command, MARKER + name, user):
        raise SessionctlError(
            f"the crontab line for {name} does not read back as written: {line!r}",
            ExitCode.INTERNAL,
        )
    return line if enabled else "# " + line


def cron_command_field(line: str, system: bool) -> str:
    """What cron takes as the command of a line: after the times (and the user column)."""
    text = line.lstrip()
    if text.startswith("#"):
        text = text.lstrip("#").lstrip()
    fields = 1 if text.startswith("@") else 5
    parts = text.split(None, fields + (1 if system else 0))
    return parts[-1] if len(parts) > fields + (1 if system else 0) else ""


# --- entries ----------------------------------------------------------------------------------


@dataclass
class Entry:
    """One installed entry, as `schedule list` shows it."""

    name: str
    schedule: str
    enabled: bool
    #: The cleanup it runs, e.g. `cleanup --quiet --expired --store web`.
    command: str
    #: "crontab" (the invoking user's) or the /etc/cron.d file.
    where: str
    system: bool
    user: str | None
    line: str
    state_dir: str | None = None
    config: str | None = None
    #: Where its output goes; None: to cron's MAILTO.
    log: str | None = None
    next_run: str | None = None
    last_run: str | None = None
    last_outcome: str | None = None
    last_exit_code: int | None = None
    last_deleted: int | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def _item(line: str, system: bool):
    """python-crontab's reading of one line, in a tab of the right format."""
    from crontab import CronItem, CronTab

    tab = CronTab(user=False, tab="") if system else CronTab(tab="")
    return CronItem.from_line(line, cron=tab)


def parse_line(line: str, system: bool, where: str) -> Entry | None:
    """Our entry on this line, or None (a line that is not ours)."""
    if MARKER not in line:
        return None
    item = _item(line, system)
    match = MARKER_RE.fullmatch((item.comment or "").strip())
    if not item.is_valid() or not match:
        return None
    entry = Entry(
        name=match.group(1),
        schedule=item.slices.clean_render(),
        enabled=item.is_enabled(),
        command=item.command,
        where=where,
        system=system,
        user=item.user if system else None,
        line=line,
    )
    _read_command(entry, item.command)
    return entry


def _read_command(entry: Entry, command: str) -> None:
    """Fill state folder, config, log and the cleanup's words from a command we built."""
    try:
        words = shlex.split(command)
    except ValueError:
        return
    index = 0
    while index < len(words) and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[index]):
        key, _, value = words[index].partition("=")
        if key == ENV_STATE_DIR:
            entry.state_dir = value
        index += 1
    while index < len(words) and words[index] not in ("--config", "cleanup"):
        index += 1
    if index + 1 < len(words) and words[index] == "--config":
        entry.config = words[index + 1]
        index += 2
    if index >= len(words) or words[index] != "cleanup":
        return
    rest = words[index:]
    if len(rest) >= 2 and rest[-1] == "2>&1" and rest[-2].startswith(">>"):
        entry.log = rest[-2][2:]
        rest = rest[:-2]
    entry.command = shlex.join(rest)


def parse_tab(text: str, system: bool, where: str) -> list[Entry]:
    return [e for line in text.split("\n") if (e := parse_line(line, system, where)) is not None]


@dataclass
class Change:
    """What install, remove, enable and disable did (or would do, in a dry run)."""

    action: str
    name: str
    where: str
    line: str
    dry_run: bool
    next_run: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


# --- the user's crontab ------------------------------------------------------------------------


def crontab_program() -> str:
    program = shutil.which("crontab")
    if program is None:
        raise usage_error(
            "the crontab program is not installed",
            "on Debian or Ubuntu: apt-get install cron; or use --system",
        )
    return program


def _crontab(args: list[str], data: bytes | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "LC_ALL": "C"}
    try:
        return subprocess.run(
            [crontab_program(), *args], input=data, capture_output=True, env=env, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SessionctlError(f"cannot run crontab: {exc}", ExitCode.STORE) from None


def _message(process: subprocess.CompletedProcess) -> str:
    text = process.stderr.decode("utf-8", "replace").strip()
    return " ".join(text.split()) or f"crontab exited with status {process.returncode}"


def read_user_crontab() -> str | None:
    """The invoking user's crontab as text, or None when there is none."""
    process = _crontab(["-l"])
    if process.returncode == 0:
        return process.stdout.decode("utf-8", "surrogateescape")
    if b"no crontab for" in process.stderr:
        return None
    raise SessionctlError(f"cannot read your crontab: {_message(process)}", ExitCode.STORE)


def write_user_crontab(text: str | None) -> None:
    """Install `text` as the user's crontab; None removes the crontab."""
    if text is None:
        process = _crontab(["-r"])
        if process.returncode != 0 and b"no crontab for" not in process.stderr:
            raise SessionctlError(
                f"cannot remove your crontab: {_message(process)}", ExitCode.STORE
            )
        return
    process = _crontab(["-"], text.encode("utf-8", "surrogateescape"))
    if process.returncode != 0:
        raise SessionctlError(
            f"crontab refused the new table: {_message(process)}",
            ExitCode.STORE,
            "your crontab is unchanged",
        )


@contextlib.contextmanager
def _crontab_lock(state_dir: Path, dry_run: bool = False) -> Iterator[None]:
    """One `schedule` edit of the crontab at a time (crontab -l then crontab - is not atomic)."""
    if dry_run:  # writes nothing, not even a lock file
        yield
        return
    folder = ensure_private_dir(state_dir / "locks")
    fd = os.open(folder / "crontab.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def current_user() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name


def _user_where() -> str:
    return f"the crontab of {current_user()}"


def _find(lines: list[str], name: str, system: bool) -> list[int]:
    found = []
    for index, line in enumerate(lines):
        entry = parse_line(line, system, "")
        if entry is not None and entry.name == name:
            found.append(index)
    return found


# --- /etc/cron.d --------------------------------------------------------------------------------


def cron_d_folder() -> Path:
    return Path(os.environ.get(ENV_CRON_D) or DEFAULT_CRON_D)


def cron_d_file(name: str) -> Path:
    return cron_d_folder() / f"{CRON_D_PREFIX}{check_name(name)}"


def cron_d_text(name: str, line: str) -> str:
    return (
        f"# Written by `sessionctl schedule install {name} --system`.\n"
        "# Change it with `sessionctl schedule enable|disable|remove`; "
        "a new install replaces it.\n"
        f"{line}\n"
    )


def _read_cron_d(path: Path) -> str | None:
    try:
        return path.read_bytes().decode("utf-8", "surrogateescape")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SessionctlError(f"cannot read {path}: {os_error_text(exc)}", ExitCode.STORE) from None


def _write_cron_d(path: Path, text: str) -> None:
    if not path.parent.is_dir():
        raise usage_error(
            f"{path.parent} does not exist",
            f"is cron installed? (${ENV_CRON_D} chooses another folder)",
        )
    # cron wants the file owned by root and writable by nobody else.
    try:
        atomic_write(path, text.encode("utf-8", "surrogateescape"), mode=0o644)
    except SessionctlError as exc:
        if os.geteuid() != 0 and not os.access(path.parent, os.W_OK):
            exc.hint = f"writing {path.parent} needs root: run it with sudo"
        raise


# --- operations ---------------------------------------------------------------------------------


@dataclass
class InstallRequest:
    name: str
    schedule: str
    #: The cleanup's options (without the word `cleanup`), already checked and pinned.
    cleanup_args: list[str]
    state_dir: Path
    config: Path | None
    mail: bool = False
    system: bool = False
    user: str | None = None
    dry_run: bool = False
    executable: list[str] | None = None


def build_line(request: InstallRequest) -> str:
    check_name(request.name)
    state_dir = request.state_dir.expanduser().absolute()
    log = None if request.mail else log_file(state_dir, request.name)
    command = build_command(
        request.name,
        request.executable or sessionctl_command(),
        state_dir,
        request.config.absolute() if request.config else None,
        request.cleanup_args,
        log,
    )
    user = None
    if request.system:
        user = request.user or current_user()
    return render_line(request.schedule, command, request.name, user=user)


def check_user(user: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]*\$?", user):
        raise usage_error(f"--user: bad user name {user!r}")
    try:
        pwd.getpwnam(user)
    except KeyError:
        raise usage_error(f"--user: no user named {user!r} on this host") from None
    return user


def install(request: InstallRequest) -> Change:
    line = build_line(request)
    upcoming = next_run(request.schedule)
    when = to_iso(upcoming) if upcoming is not None else None
    if not request.mail and not request.dry_run:
        # The shell opens the log before sessionctl runs: its folder must exist already.
        ensure_private_dir(log_file(request.state_dir.expanduser().absolute(), request.name).parent)
    if request.system:
        path = cron_d_file(request.name)
        existing = _read_cron_d(path)
        if existing is not None and not _find(existing.split("\n"), request.name, True):
            raise usage_error(
                f"{path} exists and was not written by sessionctl", "it is left as it is"
            )
        wanted = cron_d_text(request.name, line)
        action = "installed" if existing is None else "replaced"
        if existing == wanted:
            action = "unchanged"
        elif not request.dry_run:
            _write_cron_d(path, wanted)
        return Change(action, request.name, str(path), line, request.dry_run, when)
    with _crontab_lock(request.state_dir, request.dry_run):
        text = read_user_crontab()
        lines = (text or "").split("\n")
        found = _find(lines, request.name, False)
        if found:
            action = "unchanged" if len(found) == 1 and lines[found[0]] == line else "replaced"
            lines[found[0]] = line
            for index in reversed(found[1:]):  # duplicates left by hand edits
                del lines[index]
            new_text = "\n".join(lines)
        else:
            action = "installed"
            new_text = text or ""
            if new_text and not new_text.endswith("\n"):
                new_text += "\n"
            new_text += line + "\n"
        if not request.dry_run and action != "unchanged":
            write_user_crontab(new_text)
    return Change(action, request.name, _user_where(), line, request.dry_run, when)


def _not_found(name: str, system: bool) -> SessionctlError:
    if system:
        hint = None
        with contextlib.suppress(SessionctlError):
            text = read_user_crontab()
            if text and _find(text.split("\n"), name, False):
                hint = "it is in your crontab: leave out --system"
        return SessionctlError(f"no schedule named {name} in {cron_d_folder()}", 1, hint)
    hint = None
    if _find((_read_cron_d(cron_d_file(name)) or "").split("\n"), name, True):
        hint = f"it is in {cron_d_file(name)}: add --system"
    return SessionctlError(f"no schedule named {name} in {_user_where()}", 1, hint)


def change(name: str, action: str, state_dir: Path, system: bool, dry_run: bool) -> Change:
    """`remove`, `enable` or `disable` the entry NAME; the other lines stay as they were."""
    check_name(name)
    if system:
        path = cron_d_file(name)
        text = _read_cron_d(path)
        lines = (text or "").split("\n")
        found = _find(lines, name, True)
        if not found:
            raise _not_found(name, True)
        result = _apply(lines, found, name, action, True, str(path), dry_run)
        if not dry_run and result.action != "unchanged":
            if action == "remove":
                try:
                    path.unlink()
                except OSError as exc:
                    raise SessionctlError(
                        f"cannot remove {path}: {os_error_text(exc)}", ExitCode.STORE
                    ) from None
            else:
                _write_cron_d(path, "\n".join(lines))
        return result
    with _crontab_lock(state_dir, dry_run):
        text = read_user_crontab()
        lines = (text or "").split("\n")
        found = _find(lines, name, False)
        if not found:
            raise _not_found(name, False)
        result = _apply(lines, found, name, action, False, _user_where(), dry_run)
        if not dry_run and result.action != "unchanged":
            new_text = "\n".join(lines)
            # Removing the last line we added leaves no crontab, as before the first install.
            write_user_crontab(None if action == "remove" and not new_text.strip() else new_text)
    return result


def _apply(
    lines: list[str], found: list[int], name: str, action: str, system: bool, where: str, dry: bool
) -> Change:
    """Edit `lines` in place; the Change says what was done."""
    entry = parse_line(lines[found[0]], system, where)
    assert entry is not None
    if action == "remove":
        for index in reversed(found):
            del lines[index]
        return Change("removed", name, where, entry.line, dry)
    enable = action == "enable"
    if entry.enabled == enable and len(found) == 1:
        when = _next_iso(entry) if enable else None
        return Change("unchanged", name, where, entry.line, dry, when)
    # python-crontab's way: a disabled entry is its line commented out with "# ".
    line = entry.line
    if enable:
        line = re.sub(r"^\s*#\s*", "", line)
    elif not line.lstrip().startswith("#"):
        line = "# " + line
    lines[found[0]] = line
    for index in reversed(found[1:]):
        del lines[index]
    entry.enabled = enable
    when = _next_iso(entry) if enable else None
    return Change("enabled" if enable else "disabled", name, where, line, dry, when)


def _next_iso(entry: Entry) -> str | None:
    upcoming = next_run(entry.schedule)
    return to_iso(upcoming) if upcoming is not None else None


def list_entries(state_dir: Path) -> tuple[list[Entry], list[str]]:
    """Every entry of the user's crontab and of /etc/cron.d, with next and last runs.

    The second item lists what could not be read (a missing crontab program, say), for stderr.
    """
    from .audit import read_audit

    entries: list[Entry] = []
    notes: list[str] = []
    try:
        entries += parse_tab(read_user_crontab() or "", False, "crontab")
    except SessionctlError as exc:
        notes.append(f"your crontab: {exc.one_line()}")
    folder = cron_d_folder()
    try:
        paths = sorted(folder.glob(CRON_D_PREFIX + "*")) if folder.is_dir() else []
    except OSError as exc:
        notes.append(f"{folder}: {os_error_text(exc)}")
        paths = []
    for path in paths:
        if not NAME_RE.fullmatch(path.name[len(CRON_D_PREFIX) :]):
            continue  # not an entry file (an atomic write's temp file, say)
        try:
            entries += parse_tab(_read_cron_d(path) or "", True, str(path))
        except SessionctlError as exc:
            notes.append(exc.one_line())
    last: dict[str, dict[str, dict]] = {}
    for entry in entries:
        if entry.enabled:
            entry.next_run = _next_iso(entry)
        folder_name = entry.state_dir or str(state_dir)
        if folder_name not in last:
            runs: dict[str, dict] = {}
            try:
                for record in read_audit(Path(folder_name)):
                    if record.get("command") == "cleanup" and record.get("schedule"):
                        runs[str(record["schedule"])] = record
            except SessionctlError as exc:
                notes.append(exc.one_line())
            last[folder_name] = runs
        run = last[folder_name].get(entry.name)
        if run is not None:
            entry.last_run = run.get("time")
            entry.last_outcome = run.get("outcome")
            entry.last_exit_code = run.get("exit_code")
            entry.last_deleted = run.get("deleted")
    return entries, notes
