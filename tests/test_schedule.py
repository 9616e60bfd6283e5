"""`schedule`: cron entries that run a cleanup, checked against the real `crontab` program and
cron.d files in tmp_path, and run exactly as cron runs them (`env -i /bin/sh -c`, elsewhere)."""

import fcntl
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import one_line_error
from sessionctl.app import schedule
from sessionctl.app.config import Config
from sessionctl.app.context import StoreRequest, open_context
from sessionctl.app.locking import StoreLock
from sessionctl.domain.timeparse import to_iso
from stores import build, session_name

SCRIPT = str(Path(sys.executable).absolute().parent / "sessionctl")
#: For entries the tests run themselves: a cron daemon on the test host never starts them.
RARE = "0 4 29 2 *"
#: A store folder name with everything a shell or cron could trip on.
HOSTILE = 'we ird\'; $(touch pwned) `touch pwned2` 100% \\%x #y "q"'

FOREIGN = (
    "# m h  dom mon dow   command\n"
    'MAILTO="ops@example.com"\n'
    "SHELL=/bin/sh\n"
    "*/5  *  *  *  *   /usr/bin/true  >/dev/null 2>&1\n"
    "@reboot /usr/bin/true\n"
    "# a comment about the next job\n"
    '0 3 * * 1-5 echo "100%" | logger -t x # trailing\n'
    "#0 4 * * * a disabled thing\n"
    "\n"
    "15 2 * * * echo 'a\\%b'   \n"
)


# --- what cron does with a line ------------------------------------------------------------------


def command_field(line: str, system: bool = False) -> str:
    """The command cron takes from a line: after five times (or one @special) and the user."""
    fields = 1 if line.startswith("@") else 5
    if system:
        fields += 1
    return line.split(None, fields)[fields]


def cron_unescape(command: str) -> str:
    """Vixie/Debian cron's do_command: `\\%` is `%`, the first bare `%` ends the command."""
    out: list[str] = []
    escaped = False
    for char in command:
        if escaped:
            escaped = False
            if char == "%":
                out[-1] = "%"
                continue
        elif char == "\\":
            escaped = True
        elif char == "%":
            break
        out.append(char)
    return "".join(out)


def run_as_cron(line: str, cwd: Path, system: bool = False) -> subprocess.CompletedProcess:
    """The line's command run as cron runs it: empty environment, /bin/sh, another folder."""
    command = cron_unescape(command_field(line, system))
    return subprocess.run(
        ["env", "-i", "/bin/sh", "-c", command],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def entry_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "# sessionctl:" in line]


def expired_left(cli, path) -> set[str]:
    views = json.loads(cli("list", "--store", path, "--expired", "-f", "json").stdout)
    return {session_name(view) for view in views}


def all_left(cli, path) -> set[str]:
    views = json.loads(cli("list", "--store", path, "-f", "json").stdout)
    return {session_name(view) for view in views}


def audit_runs(state_dir: Path, name: str) -> list[dict]:
    path = state_dir / "audit.log"
    lines = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return [entry for entry in lines if entry.get("schedule") == name]


def nothing_executed(*folders: Path) -> None:
    for folder in folders:
        found = [p for p in folder.rglob("pwned*")]
        assert found == [], found


# --- the real crontab --------------------------------------------------------------------------


class Crontab:
    def __init__(self, program: str):
        self.program = program

    def read(self) -> str | None:
        process = subprocess.run([self.program, "-l"], capture_output=True, text=True)
        if process.returncode == 0:
            return process.stdout
        assert "no crontab for" in process.stderr, process.stderr
        return None

    def write(self, text: str | None) -> None:
        if text is None:
            subprocess.run([self.program, "-r"], capture_output=True)
        else:
            subprocess.run([self.program, "-"], input=text, text=True, check=True)


@pytest.fixture
def crontab():
    """The invoking user's crontab, saved before the test and put back exactly after it.

    Other test runs on this host may edit the same crontab: a lock file serialises them.
    """
    program = shutil.which("crontab")
    if program is None:
        message = "the crontab program is missing (Debian package cron; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with open(f"/tmp/sessionctl-tests-crontab-{os.getuid()}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        tab = Crontab(program)
        saved = tab.read()
        try:
            yield tab
        finally:
            tab.write(saved)
            assert tab.read() == saved


@pytest.fixture
def cron_d(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cron.d"
    folder.mkdir()
    monkeypatch.setenv("SESSIONCTL_CRON_D", str(folder))
    return folder


@pytest.fixture
def elsewhere(tmp_path) -> Path:
    """A folder cron runs the command from: not the one sessionctl was run in."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    return folder


@pytest.fixture
def web(tmp_path):
    """A store named `web` in a config file; returns (store, config path)."""
    store = build(tmp_path, "bash", "bash-sessions", "json-wrapped", [], n=30)
    config = tmp_path / "sessionctl.toml"
    config.write_text(f'[stores.web]\naddress = "json:{store.path}"\n')
    return store, config


# --- --every and --cron ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "every, expression",
    [
        ("1m", "* * * * *"),
        ("5m", "*/5 * * * *"),
        ("15m", "*/15 * * * *"),
        ("30m", "*/30 * * * *"),
        ("1h", "0 * * * *"),
        ("60m", "0 * * * *"),
        ("2h", "0 */2 * * *"),
        ("12h", "0 */12 * * *"),
        ("1d", "0 0 * * *"),
        ("24h", "0 0 * * *"),
        ("1w", "0 0 * * 0"),
    ],
)
def test_every_becomes_a_cron_expression(every, expression):
    assert schedule.every_to_cron(every) == expression


@pytest.mark.parametrize("every", ["45m", "90m", "7m", "5h", "1d12h", "2d", "30s", "0", "soon"])
def test_every_that_cron_cannot_keep_is_one_clear_error(cli, web, every):
    store, config = web
    result = cli(
        "--config", config, "schedule", "install", "w", "--every", every, "-n", "--",
        "cleanup", "--expired", "--store", "web", code=2,
    )  # fmt: skip
    assert "--every" in one_line_error(result)
    assert result.stdout == ""


@pytest.mark.parametrize(
    "expression",
    ["61 * * * *", "* * *", "* * * * * *", "*/0 * * * *", "foo", "@reboot", "@often",
     "0 0 31 2 *", "0 25 * * *", "* * * 13 *", "0 0 * * mon%"],
)  # fmt: skip
def test_bad_cron_expression_is_one_clear_error(cli, web, expression):
    store, config = web
    result = cli(
        "--config", config, "schedule", "install", "w", "--cron", expression, "-n", "--",
        "cleanup", "--expired", "--store", "web", code=2,
    )  # fmt: skip
    line = one_line_error(result)
    assert "--cron" in line and "five fields" in line
    assert result.stdout == ""


@pytest.mark.parametrize(
    "expression, shown",
    [
        ("*/15 * * * *", "*/15 * * * *"),
        ("30  2 * *  1-5", "30 2 * * 1-5"),
        ("@daily", "0 0 * * *"),
        ("@HOURLY", "0 * * * *"),
        ("0 0 * * 7", "0 0 * * 0"),
    ],
)
def test_good_cron_expressions_are_written_normalised(cli, crontab, web, expression, shown):
    store, config = web
    out = cli(
        "--config", config, "schedule", "install", "w", "--cron", expression, "-n", "--",
        "cleanup", "--expired", "--store", "web",
    ).stdout  # fmt: skip
    assert out.startswith(shown + " SESSIONCTL_SCHEDULE=w ")


def test_cron_or_every_exactly_one(cli, web):
    store, config = web
    base = ["--config", config, "schedule", "install", "w", "-n"]
    tail = ["--", "cleanup", "--expired", "--store", "web"]
    assert "--cron" in one_line_error(cli(*base, *tail, code=2))
    both = cli(*base, "--every", "1h", "--cron", "@daily", *tail, code=2)
    assert "one of them" in one_line_error(both)


@pytest.mark.parametrize(
    "name", ["web.expired", "web expired", "a/b", "_x", "", "x" * 65, "é", "a;b", "a\nb"]
)
def test_bad_names_are_refused(cli, web, name, cron_d):
    store, config = web
    result = cli(
        "--config", config, "schedule", "install", name, "--every", "1h", "--system", "--",
        "cleanup", "--expired", "--store", "web", code=2,
    )  # fmt: skip
    one_line_error(result)
    assert list(cron_d.iterdir()) == []


# --- the cleanup after -- ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "words, message",
    [
        ([], "after --"),
        (["list", "--store", "web"], "only a cleanup"),
        (["cleanup", "--bogus"], "No such option"),
        (["cleanup", "--expired", "--store", "web", "--max-count", "-1"], "--max-count"),
        (["cleanup", "--all", "--store", "web"], "--yes"),
        (["cleanup", "--store", "web"], "say what to remove"),
        (["cleanup", "--expired", "--store", "web", "--pause", "soon"], "--pause"),
        (["cleanup", "--expired", "--store", "web", "--help"], "--help"),
        (["cleanup", "--expired", "--store", "web", "--archive", "a", "--no-archive"], "contra"),
    ],
)
def test_a_cleanup_that_cannot_work_is_refused(cli, tmp_path, web, words, message, cron_d):
    store, config = web
    result = cli(
        "--config", config, "schedule", "install", "w", "--every", "1h", "--system", "--", *words,
        code=2,
    )  # fmt: skip
    assert message in one_line_error(result)
    assert list(cron_d.iterdir()) == []


def test_a_cleanup_without_a_store_is_refused(cli, cron_d):
    result = cli(
        "schedule", "install", "w", "--every", "1h", "--system", "--", "cleanup", "--expired",
        code=2,
    )  # fmt: skip
    assert "no store given" in one_line_error(result)
    assert list(cron_d.iterdir()) == []


def test_a_store_that_is_not_there_yet_is_a_warning(cli, tmp_path, cron_d):
    result = cli(
        "schedule", "install", "later", "--every", "1h", "--system", "--",
        "cleanup", "--expired", "--store", tmp_path / "later.json",
    )  # fmt: skip
    assert "warning" in result.stderr and "does not exist" in result.stderr
    assert (cron_d / "sessionctl-later").exists()


@pytest.mark.parametrize("where", ["store", "archive", "cron"])
def test_a_line_break_cannot_reach_a_crontab(cli, tmp_path, where, cron_d):
    odd = tmp_path / "two\nlines"
    odd.mkdir()
    store = build(odd, "s", "bash-sessions", "json-wrapped", [])
    words = ["cleanup", "--expired", "--store", store.path]
    cron = "0 * * * *"
    if where == "archive":
        words = ["cleanup", "--expired", "--store", tmp_path / "x.json", "--archive", odd / "a"]
    elif where == "cron":
        words[-1] = tmp_path / "x.json"
        cron = "0 *\n* * *"
    result = cli("schedule", "install", "w", "--cron", cron, "--system", "--", *words, code=2)
    assert "line break" in one_line_error(result)
    assert list(cron_d.iterdir()) == []


def test_a_command_cron_would_cut_short_is_refused(cli, tmp_path, cron_d):
    deep = tmp_path / ("d" * 250) / ("e" * 250) / ("f" * 250) / ("g" * 250)
    deep.mkdir(parents=True)
    store = build(deep, "s", "bash-sessions", "json-wrapped", [])
    result = cli(
        "schedule", "install", "long", "--every", "1h", "--system", "--",
        "cleanup", "--expired", "--store", store.path, code=2,
    )  # fmt: skip
    assert "999" in one_line_error(result)
    assert list(cron_d.iterdir()) == []


# --- the shape of the line ---------------------------------------------------------------------


def test_line_pins_everything_cron_does_not_have(
    cli, crontab, tmp_path, web, state_dir, monkeypatch
):
    store, config = web
    monkeypatch.chdir(tmp_path)
    (tmp_path / "arch").mkdir()
    result = cli(
        "--config", config.name, "schedule", "install", "web-expired", "--every", "15m",
        "--jitter", "30s", "--dry-run", "--",
        "cleanup", "--expired", "--store", store.path.name, "--archive", "arch",
    )  # fmt: skip
    line = result.stdout.rstrip("\n")
    assert "\n" not in line
    log = state_dir / "schedule" / "web-expired.log"
    assert line == (
        f"*/15 * * * * SESSIONCTL_SCHEDULE=web-expired SESSIONCTL_STATE_DIR={state_dir} "
        f"{SCRIPT} --config {config} cleanup --quiet --expired --store {store.path} "
        f"--archive {tmp_path / 'arch'} --jitter 30s >>{log} 2>&1 # sessionctl:web-expired"
    )
    assert "dry run" in result.stderr and "next run" in result.stderr
    assert not state_dir.exists()  # a dry run writes nothing at all


def test_store_from_the_environment_is_written_down(cli, tmp_path, cron_d, monkeypatch):
    store = build(tmp_path, "bash", "bash-sessions", "json-wrapped", [])
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SESSIONCTL_STORE", store.path.name)
    line = cli(
        "schedule", "install", "env", "--every", "1h", "-n", "--system", "--", "cleanup", "-n",
        "--expired",
    ).stdout  # fmt: skip
    assert f" --store {store.path} " in line
    assert " root " in line or f" {schedule.current_user()} " in line


def test_relative_hook_program_is_made_absolute(cli, tmp_path, cron_d, monkeypatch):
    store = build(tmp_path, "bash", "bash-sessions", "json-wrapped", [])
    hook = tmp_path / "bin" / "teardown"
    hook.parent.mkdir()
    hook.write_text("#!/bin/sh\ncat >/dev/null\n")
    hook.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    line = cli(
        "schedule", "install", "h", "--every", "1h", "-n", "--system", "--", "cleanup",
        "--expired", "--store", store.path, "--hook", "bin/teardown --force",
    ).stdout  # fmt: skip
    assert f"--hook '{hook} --force'" in line


def test_mail_leaves_the_output_to_cron(cli, crontab, web):
    store, config = web
    line = cli(
        "--config", config, "schedule", "install", "m", "--every", "1h", "--mail", "-n", "--",
        "cleanup", "--expired", "--store", "web",
    ).stdout  # fmt: skip
    assert ">>" not in line and "2>&1" not in line
    assert " cleanup --quiet --expired --store web # sessionctl:m" in line


def test_python_m_when_there_is_no_console_script(cli, web, elsewhere, monkeypatch, cron_d):
    store, config = web
    monkeypatch.setattr(schedule, "SCRIPT_NAME", "no-such-script")
    cli(
        "--config", config, "schedule", "install", "pym", "--every", "1h", "--system", "--",
        "cleanup", "--expired", "--store", "web",
    )  # fmt: skip
    line = entry_lines((cron_d / "sessionctl-pym").read_text())[0]
    python = str(Path(sys.executable).absolute())
    assert f" {python} -P -m sessionctl --config " in line
    assert expired_left(cli, store.path)
    ran = run_as_cron(line, elsewhere, system=True)
    assert (ran.returncode, ran.stdout, ran.stderr) == (0, "", "")
    assert expired_left(cli, store.path) == set()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.text(
        st.characters(blacklist_categories=("Cs", "Cc")) | st.sampled_from("\t\x85"),
        min_size=1,
        max_size=30,
    )
    | st.sampled_from(["\\%", "a #b", "a\t#b", "'", "%%", "\\", "$(x)", "`x`", "a\\\\%b", " # ",
                       "a\u2028#b", "a\u3000#b", "a\x85#b"])
)  # fmt: skip
def test_any_word_reaches_the_shell_intact_through_cron(word):
    """quote() + python-crontab's rendering + cron's `%` handling + /bin/sh == the word."""
    command = f"printf '[%s]' {schedule.quote(word)}"
    line = schedule.render_line("* * * * *", command, "t")
    assert "\n" not in line
    ran = subprocess.run(
        ["env", "-i", "/bin/sh", "-c", cron_unescape(command_field(line))],
        capture_output=True,
        timeout=10,
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.decode("utf-8", "surrogateescape") == f"[{word}]"
    parsed = schedule.parse_line(line, False, "crontab")
    assert parsed is not None and parsed.name == "t"


# --- the user's crontab, for real --------------------------------------------------------------


def test_install_into_the_crontab_and_run_it_as_cron_would(cli, crontab, web, state_dir, elsewhere):
    store, config = web
    crontab.write(None)
    before_expired = expired_left(cli, store.path)
    assert before_expired
    before = all_left(cli, store.path)
    result = cli(
        "--config", config, "schedule", "install", "web-expired", "--cron", RARE, "--",
        "cleanup", "--expired", "--store", "web",
    )  # fmt: skip
    assert "installed web-expired" in result.stderr
    lines = entry_lines(crontab.read())
    assert lines == [result.stdout.rstrip("\n")]
    assert lines[0].startswith(RARE + " SESSIONCTL_SCHEDULE=web-expired ")

    ran = run_as_cron(lines[0], elsewhere)
    assert (ran.returncode, ran.stdout, ran.stderr) == (0, "", "")  # nothing for cron to mail
    assert expired_left(cli, store.path) == set()
    assert all_left(cli, store.path) == before - before_expired
    log = state_dir / "schedule" / "web-expired.log"
    assert log.exists() and log.read_text() == ""  # a successful run says nothing
    runs = audit_runs(state_dir, "web-expired")
    assert len(runs) == 1 and runs[0]["outcome"] == "ok"
    assert runs[0]["deleted"] == len(before_expired)
    assert list(elsewhere.iterdir()) == []

    listed = json.loads(cli("schedule", "list", "-f", "json").stdout)
    (entry,) = [e for e in listed if e["name"] == "web-expired"]
    assert entry["where"] == "crontab" and entry["enabled"] is True
    assert entry["command"] == "cleanup --quiet --expired --store web"
    assert entry["schedule"] == RARE
    assert entry["next_run"] == to_iso(schedule.next_run(RARE))
    assert entry["last_run"] == runs[0]["time"]
    assert (entry["last_outcome"], entry["last_exit_code"]) == ("ok", 0)
    assert entry["last_deleted"] == len(before_expired)
    assert entry["config"] == str(config) and entry["state_dir"] == str(state_dir)
    assert entry["log"] == str(log)


def test_foreign_lines_are_left_exactly_as_they_were(cli, crontab, web):
    store, config = web
    crontab.write(FOREIGN)
    assert crontab.read() == FOREIGN
    install = ["--config", config, "schedule", "install"]
    tail = ["--", "cleanup", "--expired", "--store", "web"]

    def foreign_part() -> str:
        return "".join(
            line for line in crontab.read().splitlines(keepends=True) if "# sessionctl:" not in line
        )

    cli(*install, "a", "--every", "1h", *tail)
    cli(*install, "b", "--cron", "*/10 * * * *", *tail)
    assert foreign_part() == FOREIGN
    assert entry_lines(crontab.read())[0].startswith("0 * * * * SESSIONCTL_SCHEDULE=a ")
    cli(*install, "a", "--cron", "7 3 * * *", *tail)  # replaces, never duplicates
    text = crontab.read()
    assert text.startswith(FOREIGN)
    assert [line.split(" SESSIONCTL_SCHEDULE=")[0] for line in entry_lines(text)] == [
        "7 3 * * *",
        "*/10 * * * *",
    ]
    cli("schedule", "disable", "a")
    assert entry_lines(crontab.read())[0].startswith("# 7 3 * * * ")
    assert foreign_part() == FOREIGN
    cli("schedule", "enable", "a")
    assert entry_lines(crontab.read())[0].startswith("7 3 * * * ")
    assert foreign_part() == FOREIGN
    cli("schedule", "remove", "a")
    cli("schedule", "remove", "b")
    assert crontab.read() == FOREIGN


def test_reinstall_replaces_and_removing_the_last_entry_leaves_no_crontab(cli, crontab, web):
    store, config = web
    crontab.write(None)
    said = []
    for every in ("1h", "15m", "15m"):
        said.append(cli(
            "--config", config, "schedule", "install", "one", "--every", every, "--",
            "cleanup", "--expired", "--store", "web",
        ).stderr.splitlines()[0])  # fmt: skip
    assert [s.split()[1] for s in said] == ["installed", "replaced", "one"]
    assert (
        said[2]
        == f"sessionctl: one in the crontab of {schedule.current_user()} is installed already"
    )
    lines = entry_lines(crontab.read())
    assert len(lines) == 1 and lines[0].startswith("*/15 * * * * ")
    result = cli("schedule", "remove", "one")
    assert result.stdout.rstrip("\n") == lines[0] and "removed one from" in result.stderr
    assert crontab.read() is None
    assert "no schedule named one" in one_line_error(cli("schedule", "remove", "one", code=1))


def test_hand_made_duplicates_are_folded_into_one(cli, crontab, web):
    store, config = web
    crontab.write(None)
    line = cli(
        "--config", config, "schedule", "install", "dup", "--every", "1h", "--",
        "cleanup", "--expired", "--store", "web",
    ).stdout  # fmt: skip
    crontab.write(FOREIGN + line + line)
    cli("schedule", "disable", "dup")
    text = crontab.read()
    assert text.startswith(FOREIGN) and len(entry_lines(text)) == 1
    assert entry_lines(text)[0].startswith("# ")


def test_disable_and_enable(cli, crontab, web, elsewhere):
    store, config = web
    crontab.write(None)
    cli(
        "--config", config, "schedule", "install", "t", "--cron", RARE, "--",
        "cleanup", "--expired", "--store", "web",
    )  # fmt: skip
    dry = cli("schedule", "disable", "t", "--dry-run")
    assert dry.stdout.startswith(f"# {RARE} ") and "dry run" in dry.stderr
    assert not entry_lines(crontab.read())[0].startswith("#")
    cli("schedule", "disable", "t")
    assert "already" in cli("schedule", "disable", "t").stderr
    (entry,) = json.loads(cli("schedule", "list", "-f", "json").stdout)
    assert entry["enabled"] is False and entry["next_run"] is None
    cli("schedule", "enable", "t")
    (entry,) = json.loads(cli("schedule", "list", "-f", "json").stdout)
    assert entry["enabled"] is True and entry["next_run"]
    ran = run_as_cron(entry_lines(crontab.read())[0], elsewhere)
    assert ran.returncode == 0 and expired_left(cli, store.path) == set()
    assert "no schedule named nope" in one_line_error(cli("schedule", "enable", "nope", code=1))


def test_hostile_paths_are_safe_in_a_crontab_line(cli, crontab, tmp_path, state_dir, monkeypatch):
    """Space, quotes, `;`, `$( )`, backticks, `%`, `\\%`, ` #` in a store path: the cleanup
    runs on that store under cron, and nothing in the path is executed."""
    crontab.write(None)
    folder = tmp_path / HOSTILE
    folder.mkdir()
    store = build(folder, "s'; $(touch pwned3) %", "bash-sessions", "json-wrapped", [])
    expired = expired_left(cli, store.path)
    assert expired
    monkeypatch.chdir(folder)  # a relative path: pinned to the absolute one
    result = cli(
        "schedule", "install", "hostile", "--cron", RARE, "--",
        "cleanup", "--expired", "--store", "json:" + store.path.name,
    )  # fmt: skip
    (line,) = entry_lines(crontab.read())
    assert line == result.stdout.rstrip("\n")
    assert "\\%" in line  # cron's `%` is escaped
    cwd = tmp_path / "cron-cwd"
    cwd.mkdir()
    ran = run_as_cron(line, cwd)
    assert (ran.returncode, ran.stdout, ran.stderr) == (0, "", "")
    assert expired_left(cli, store.path) == set()
    assert audit_runs(state_dir, "hostile")[0]["deleted"] == len(expired)
    assert list(cwd.iterdir()) == []
    nothing_executed(tmp_path)
    (entry,) = json.loads(cli("schedule", "list", "-f", "json").stdout)
    assert entry["command"].endswith(" --store " + __import__("shlex").quote(f"json:{store.path}"))


def test_an_overlapping_run_exits_quietly_with_its_own_code(
    cli, crontab, web, state_dir, elsewhere
):
    store, config = web
    crontab.write(None)
    cli(
        "--config", config, "schedule", "install", "busy", "--cron", RARE, "--",
        "cleanup", "--expired", "--store", "web",
    )  # fmt: skip
    (line,) = entry_lines(crontab.read())
    ctx = open_context(Config(path=None, chosen_by=None), StoreRequest(store=str(store.path)), 0)
    try:
        with StoreLock(state_dir, ctx.identity, ctx.label):
            ran = run_as_cron(line, elsewhere)
    finally:
        ctx.close()
    assert (ran.returncode, ran.stdout, ran.stderr) == (4, "", "")
    assert (state_dir / "schedule" / "busy.log").read_text() == ""
    assert expired_left(cli, store.path)  # nothing was changed
    ran = run_as_cron(line, elsewhere)  # the next run does the work
    assert ran.returncode == 0 and expired_left(cli, store.path) == set()


def test_a_failing_run_leaves_its_error_in_the_log_or_to_cron(
    cli, crontab, tmp_path, state_dir, elsewhere
):
    crontab.write(None)
    store = build(tmp_path, "gone", "bash-sessions", "json-wrapped", [])
    for name, extra in (("logged", []), ("mailed", ["--mail"])):
        cli(
            "schedule", "install", name, "--cron", RARE, *extra, "--",
            "cleanup", "--expired", "--store", store.path,
        )  # fmt: skip
    store.path.unlink()
    logged, mailed = entry_lines(crontab.read())
    ran = run_as_cron(logged, elsewhere)
    assert (ran.returncode, ran.stdout, ran.stderr) == (3, "", "")
    log = (state_dir / "schedule" / "logged.log").read_text()
    assert log.startswith("sessionctl: ") and "does not exist" in log and log.count("\n") == 1
    ran = run_as_cron(mailed, elsewhere)
    assert ran.returncode == 3 and ran.stdout == ""
    assert ran.stderr.startswith("sessionctl: ") and "does not exist" in ran.stderr
    assert not (state_dir / "schedule" / "mailed.log").exists()


def test_without_the_crontab_program(cli, web, cron_d, tmp_path, monkeypatch):
    store, config = web
    empty = tmp_path / "no-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    base = ["--config", config, "schedule", "install"]
    tail = ["--", "cleanup", "--expired", "--store", "web"]
    result = cli(*base, "u", "--every", "1h", *tail, code=2)
    assert "crontab program is not installed" in one_line_error(result)
    cli(*base, "s", "--every", "1h", "--system", *tail)
    listed = cli("schedule", "list", "-f", "json")
    assert [e["name"] for e in json.loads(listed.stdout)] == ["s"]
    assert "crontab program is not installed" in listed.stderr


# --- /etc/cron.d files (in tmp_path) -----------------------------------------------------------


def test_system_entry_is_a_cron_d_file_that_runs_as_cron_would(
    cli, tmp_path, cron_d, state_dir, elsewhere
):
    store = build(tmp_path, "django", "django", "sqlite", [])
    expired = expired_left(cli, store.path)
    assert expired
    result = cli(
        "schedule", "install", "django-expired", "--cron", "*/20 * * * *", "--system",
        "--jitter", "1s", "--", "cleanup", "--expired", "--store", store.path,
    )  # fmt: skip
    path = cron_d / "sessionctl-django-expired"
    assert [p.name for p in cron_d.iterdir()] == [path.name]  # no temp file left behind
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    text = path.read_text()
    assert text.endswith("\n")
    (line,) = entry_lines(text)
    assert line == result.stdout.rstrip("\n")
    user = schedule.current_user()
    assert line.startswith(f"*/20 * * * * {user} SESSIONCTL_SCHEDULE=django-expired ")
    assert f"installed django-expired in {path}" in result.stderr
    ran = run_as_cron(line, elsewhere, system=True)
    assert (ran.returncode, ran.stdout, ran.stderr) == (0, "", "")
    assert expired_left(cli, store.path) == set()
    (run,) = audit_runs(state_dir, "django-expired")
    assert run["deleted"] == len(expired)
    (entry,) = json.loads(cli("schedule", "list", "-f", "json").stdout)
    assert (entry["where"], entry["user"], entry["system"]) == (str(path), user, True)
    assert entry["last_outcome"] == "ok"


def test_system_entries_replace_enable_disable_remove(cli, web, cron_d):
    store, config = web
    base = ["--config", config, "schedule", "install", "w", "--system"]
    tail = ["--", "cleanup", "--expired", "--store", "web"]
    first = cli(*base, "--every", "1h", *tail)
    assert "installed w" in first.stderr
    second = cli(*base, "--every", "30m", *tail)
    assert "replaced w" in second.stderr
    assert "installed already" in cli(*base, "--every", "30m", *tail).stderr
    path = cron_d / "sessionctl-w"
    (line,) = entry_lines(path.read_text())
    assert line.startswith("*/30 * * * * ")
    assert "no schedule named w" in one_line_error(cli("schedule", "disable", "w", code=1))
    cli("schedule", "disable", "w", "--system")
    assert entry_lines(path.read_text())[0] == "# " + line
    cli("schedule", "enable", "w", "--system")
    assert entry_lines(path.read_text())[0] == line
    assert [p.name for p in cron_d.iterdir()] == ["sessionctl-w"]
    cli("schedule", "remove", "w", "--system", "-n")
    assert path.exists()
    cli("schedule", "remove", "w", "--system")
    assert list(cron_d.iterdir()) == []


def test_a_cron_d_file_we_did_not_write_is_left_alone(cli, web, cron_d):
    store, config = web
    path = cron_d / "sessionctl-w"
    path.write_text("0 * * * * root /usr/local/bin/something\n")
    result = cli(
        "--config", config, "schedule", "install", "w", "--every", "1h", "--system", "--",
        "cleanup", "--expired", "--store", "web", code=2,
    )  # fmt: skip
    assert "not written by sessionctl" in one_line_error(result)
    assert path.read_text() == "0 * * * * root /usr/local/bin/something\n"
    cli("schedule", "remove", "w", "--system", code=1)
    assert path.exists()


def test_system_user_column(cli, web, cron_d):
    store, config = web
    base = ["--config", config, "schedule", "install", "w", "--every", "1h", "-n"]
    tail = ["--", "cleanup", "--expired", "--store", "web"]
    result = cli(*base, "--system", "--user", "daemon", *tail)
    assert result.stdout.startswith("0 * * * * daemon SESSIONCTL_SCHEDULE=w ")
    assert "note: daemon runs it" in result.stderr
    assert "--system" in one_line_error(cli(*base, "--user", "daemon", *tail, code=2))
    assert "no user named" in one_line_error(
        cli(*base, "--system", "--user", "nobody-such-user", *tail, code=2)
    )


def test_system_dry_run_writes_nothing(cli, web, cron_d):
    store, config = web
    result = cli(
        "--config", config, "schedule", "install", "w", "--every", "1h", "--system", "-n", "--",
        "cleanup", "--expired", "--store", "web",
    )  # fmt: skip
    assert "# sessionctl:w" in result.stdout and "dry run" in result.stderr
    assert list(cron_d.iterdir()) == []


def test_hostile_paths_are_safe_in_a_cron_d_line(cli, tmp_path, cron_d, state_dir, elsewhere):
    folder = tmp_path / HOSTILE
    folder.mkdir()
    store = build(folder, "raptor `touch pwned4`", "raptor", "jsondir", [])
    expired = expired_left(cli, store.path)
    (folder / "a%b").mkdir()
    cli(
        "schedule", "install", "h", "--every", "1h", "--system", "--",
        "cleanup", "--expired", "--store", f"jsondir:{store.path}", "--archive", folder / "a%b",
    )  # fmt: skip
    (line,) = entry_lines((cron_d / "sessionctl-h").read_text())
    ran = run_as_cron(line, elsewhere, system=True)
    assert (ran.returncode, ran.stdout, ran.stderr) == (0, "", "")
    assert expired and expired_left(cli, store.path) == set()
    # The archive went exactly where it was asked to: a file of its own in that folder.
    assert len(list((folder / "a%b").rglob("*.ndjson.gz"))) == 1
    assert list(elsewhere.iterdir()) == []
    nothing_executed(tmp_path)


# --- list ---------------------------------------------------------------------------------------


def test_list_formats(cli, web, cron_d):
    store, config = web
    for name in ("b", "a"):
        cli(
            "--config", config, "schedule", "install", name, "--every", "1h", "--system", "--",
            "cleanup", "--expired", "--store", "web",
        )  # fmt: skip
    env = {"PATH": str(cron_d)}  # no crontab program: only the cron.d entries
    rows = json.loads(cli("schedule", "list", "-f", "json", env=env).stdout)
    assert [row["name"] for row in rows] == ["a", "b"]
    ndjson = cli("schedule", "list", "-f", "ndjson", env=env).stdout.splitlines()
    assert [json.loads(line)["name"] for line in ndjson] == ["a", "b"]
    csv_lines = cli("schedule", "list", "-f", "csv", env=env).stdout.splitlines()
    assert csv_lines[0] == "name,schedule,enabled,next_run,last_run,last_outcome,command,where"
    assert csv_lines[1].startswith("a,")
    table = cli("schedule", "list", env=env).stdout.splitlines()
    assert table[0].split()[:4] == ["NAME", "SCHEDULE", "ENABLED", "NEXT"]
    assert table[1].startswith("a ") and "cleanup --quiet --expired --store web" in table[1]


# --- help ---------------------------------------------------------------------------------------


def test_every_schedule_command_and_option_has_help_with_an_example(cli):
    import typer.main

    from sessionctl.cli.app import app

    group = typer.main.get_command(app).commands["schedule"]
    assert "Example:" in cli("schedule", "-h").stdout
    assert set(group.commands) == {"install", "list", "remove", "enable", "disable"}
    for name, command in group.commands.items():
        short = cli("schedule", name, "-h").stdout
        assert short == cli("schedule", name, "--help").stdout
        assert "Example:" in (command.help or ""), name
        for param in command.params:
            if param.name == "help":
                continue
            assert "Example:" in (getattr(param, "help", None) or ""), (name, param.name)


def test_a_missing_cron_d_folder_is_one_clear_error(cli, web, tmp_path, monkeypatch):
    store, config = web
    monkeypatch.setenv("SESSIONCTL_CRON_D", str(tmp_path / "no-cron.d"))
    result = cli(
        "--config", config, "schedule", "install", "w", "--every", "1h", "--system", "--",
        "cleanup", "--expired", "--store", "web", code=2,
    )  # fmt: skip
    assert "is cron installed?" in one_line_error(result)
    assert not (tmp_path / "no-cron.d").exists()
