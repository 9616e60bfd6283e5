"""The man page, the shell completions and the help texts: generated from the code, complete,
consistent, and working in the real shells."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ROOT
from sessionctl import __version__
from sessionctl.domain.errors import ExitCode

sys.path.insert(0, str(ROOT / "tools"))
import gendocs  # noqa: E402

BIN = Path(sys.executable).parent
MAN = ROOT / gendocs.MAN_FILE


def tree():
    """(path, command, ctx) for every group and command, the root first."""
    return list(gendocs.walk())


def need(program: str, required_in_ci: bool = False) -> str:
    path = shutil.which(program)
    if path is None:
        if required_in_ci and os.environ.get("CI"):
            pytest.fail(f"{program} is not installed (.ci/run installs it)")
        pytest.skip(f"{program} is not installed")
    return path


def man_section(text: str, name: str) -> str:
    match = re.search(rf'^\.SH "?{name}"?\n(.*?)(?=^\.SH |\Z)', text, re.M | re.S)
    assert match, f"no {name} section"
    return match.group(1)


def roff(text: str) -> str:
    """How a word is spelled in the man page source."""
    return text.replace("-", "\\-")


# --- generated files match the code ---------------------------------------------------------


@pytest.mark.parametrize("shell", sorted(gendocs.COMPLETION_FILES))
def test_committed_completion_script_matches_the_code(shell):
    committed = (ROOT / gendocs.COMPLETION_FILES[shell]).read_text()
    assert committed == gendocs.completion_script(shell), (
        f"{gendocs.COMPLETION_FILES[shell]} is out of date: run `make completions` and commit it"
    )


def test_committed_man_page_matches_the_code():
    assert MAN.read_text() == gendocs.man_page(), (
        "man/sessionctl.1 is out of date: run `make man` and commit it"
    )


def test_gendocs_check_reports_drift(tmp_path, monkeypatch):
    monkeypatch.setattr(gendocs, "ROOT", tmp_path)
    assert gendocs.main(["man", "--check"]) == 1  # nothing written yet: drift
    assert gendocs.main(["man"]) == 0
    assert (tmp_path / gendocs.MAN_FILE).read_text() == MAN.read_text()
    assert gendocs.main(["man", "--check"]) == 0
    (tmp_path / gendocs.MAN_FILE).write_text(MAN.read_text().replace("cleanup", "clean"))
    assert gendocs.main(["man", "--check"]) == 1


# --- the man page ------------------------------------------------------------------------------


def test_man_page_renders_without_warnings():
    groff = need("groff", required_in_ci=True)
    for device in ("utf8", "ascii"):
        done = subprocess.run(
            [groff, "-ww", "-man", f"-T{device}", str(MAN)], capture_output=True, text=True
        )
        assert done.returncode == 0 and done.stderr == "", done.stderr
    text = re.sub(".\b", "", done.stdout)  # no overstrike
    for heading in ("NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "EXIT STATUS", "FILES"):
        assert re.search(rf"^{heading}$", text, re.M), heading
    assert f"sessionctl {__version__}" in text


def test_man_page_has_the_sections_operators_look_for():
    text = MAN.read_text()
    assert re.search(r"^\.TH SESSIONCTL 1 ", text, re.M)
    headings = re.findall(r'^\.SH "?([A-Z ]+?)"?$', text, re.M)
    assert headings == [
        "NAME",
        "SYNOPSIS",
        "DESCRIPTION",
        "OPTIONS",
        "COMMANDS",
        "EXIT STATUS",
        "ENVIRONMENT",
        "FILES",
        "EXAMPLES",
        "SEE ALSO",
    ]
    assert man_section(text, "NAME").startswith("sessionctl \\- ")


def test_man_page_documents_every_command_and_option():
    text = MAN.read_text().replace("\\%", "").replace("\\:", "")
    commands = man_section(text, "COMMANDS")
    synopsis = man_section(text, "SYNOPSIS")
    options = man_section(text, "OPTIONS")
    for path, command, ctx in tree()[1:]:
        assert re.search(rf'^\.SS "{" ".join(path)}[ "]', commands, re.M), path
        if not gendocs.is_group(command):
            assert f".B {' '.join(path)}\n" in synopsis, path
        heading = commands.index(f'.SS "{" ".join(path)}')
        section = commands[heading:].split("\n.SS ", 1)[0]
        params = gendocs.visible_params(command, ctx)
        shared = set(gendocs.store_option_names())
        takes_store = shared <= {p.name for p in params}
        for param in params:
            if param.param_type_name == "argument":
                assert f"\\fI{roff(param.metavar)}" in section, (path, param.name)
                continue
            where = options if takes_store and param.name in shared else section
            for name in param.opts + param.secondary_opts:
                assert f"\\fB{roff(name)}\\fR" in where, (path, name)
            prose = " ".join(param.help.split()).split("Example: ")[0].strip()
            spelled = gendocs.esc(prose).replace("\\%", "").replace("\\:", "")
            assert spelled in where.replace("\n", " "), (path, param.name)


def test_man_page_documents_every_exit_code():
    section = man_section(MAN.read_text(), "EXIT STATUS")
    codes = [int(c) for c in re.findall(r"^\\fB(\d+)\\fR$", section, re.M)]
    assert codes == [int(c) for c in ExitCode]
    readme = (ROOT / "README.md").read_text()
    for code in ExitCode:
        assert re.search(rf"^\| {int(code)} \|", readme, re.M), f"README lacks exit code {code}"


def test_man_page_documents_every_environment_variable():
    section = man_section(MAN.read_text(), "ENVIRONMENT")
    documented = set(re.findall(r"^\\fB([A-Z_]+)\\fR$", section.replace("\\%", ""), re.M))
    used = set()
    for path in (ROOT / "src").rglob("*.py"):
        used.update(re.findall(r"\b(SESSIONCTL_[A-Z][A-Z_]*)\b", path.read_text()))
    assert used, "the scan finds nothing: the test would be empty"
    assert used - documented == set()
    assert {"NO_COLOR", "SESSIONCTL_CONFIG", "SESSIONCTL_STATE_DIR"} <= documented


def test_man_page_files_and_examples_name_the_real_places():
    text = MAN.read_text().replace("\\%", "").replace("\\:", "").replace("\\-", "-")
    files = man_section(text, "FILES")
    for place in (
        "~/.config/sessionctl/config.toml",
        "/etc/xdg/sessionctl/config.toml",
        "$SESSIONCTL_CONFIG",
        "--config",
        "~/.local/state/sessionctl/",
        "$SESSIONCTL_STATE_DIR",
        "STATE/audit.log",
        "STATE/archives/STORE/",
        ".ndjson.gz",
        "STATE/locks/",
    ):
        assert place in files, place
    examples = man_section(text, "EXAMPLES")
    assert re.search(r"^\*/15 \* \* \* \* /\S+/sessionctl cleanup ", examples, re.M)  # crontab
    assert "sessionctl schedule install " in examples
    assert "--all --yes" in examples and "--format json" in examples  # CI teardown


def test_man_page_files_match_the_code(tmp_path, monkeypatch):
    """The default locations the man page names are the ones the code uses."""
    from sessionctl.app import audit, config, locking

    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    for name in ("XDG_CONFIG_HOME", "XDG_CONFIG_DIRS", "XDG_STATE_HOME", "SESSIONCTL_STATE_DIR"):
        monkeypatch.delenv(name, raising=False)
    assert config.user_config_file() == home / ".config/sessionctl/config.toml"
    assert config.site_config_file() == Path("/etc/xdg/sessionctl/config.toml")
    state, _ = config.state_dir(config.Config(path=None, chosen_by=None))
    assert state == home / ".local/state/sessionctl"
    assert audit.audit_path(state) == state / "audit.log"
    assert locking.lock_path(state, "x").parent == state / "locks"
    archive = audit.default_archive_path(state / "archives", "web")
    assert archive.parent == state / "archives" / "web" and archive.name.endswith(".ndjson.gz")


# --- help texts and option conventions ----------------------------------------------------------


def test_every_command_and_option_has_help_with_an_example():
    missing = []
    for path, command, ctx in tree():
        if "Example" not in (command.help or ""):
            missing.append(" ".join(path))
        for param in gendocs.visible_params(command, ctx):
            if "Example" not in (getattr(param, "help", None) or ""):
                missing.append(f"{' '.join(path)} {param.opts[0]}")
    assert missing == []


def test_dash_h_works_like_dash_dash_help_everywhere(cli):
    paths = [path[1:] for path, _, _ in tree()]
    assert len(paths) > 10
    for path in paths:
        short = cli(*path, "-h").stdout
        assert short.startswith(f"Usage: {' '.join(('sessionctl', *path))} "), path
        assert short == cli(*path, "--help").stdout, path


def test_the_same_option_means_the_same_thing_in_every_command():
    """One spelling, one meaning: a short flag always stands for the same long option, an
    option always has the same short flag, takes a value or not, and reads the same env var."""
    by_short: dict[str, set] = {}
    by_long: dict[str, set] = {}
    for _path, command, ctx in tree():
        for param in gendocs.visible_params(command, ctx):
            if param.param_type_name != "option":
                continue
            names = param.opts + param.secondary_opts
            longs = tuple(sorted(n for n in names if n.startswith("--")))
            shorts = tuple(sorted(n for n in names if not n.startswith("--")))
            for short in shorts:
                by_short.setdefault(short, set()).add(longs)
            flag = bool(getattr(param, "is_flag", False))
            envvar = param.envvar if param.envvar != "SESSIONCTL_STORE" else None
            for long in longs:
                by_long.setdefault(long, set()).add((shorts, flag, envvar, param.metavar))
    assert {s: v for s, v in by_short.items() if len(v) > 1} == {}
    assert {n: v for n, v in by_long.items() if len(v) > 1} == {}
    assert by_short["-n"] == {("--dry-run",)}
    assert by_short["-f"] == {("--format",)}


# --- completions in the real shells -------------------------------------------------------------


def write_config(path: Path, *names: str) -> Path:
    path.write_text(
        "".join(f'[stores.{n}]\naddress = "json:/srv/{n}/sessions.json"\n\n' for n in names)
    )
    return path


def completion_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SESSIONCTL_", "COMP_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # the console script of this venv
    env.update(extra)
    return env


def bash_complete(script: Path, line: str, env: dict, cwd: Path) -> list[str]:
    """What Tab offers at the end of `line` in bash, with `script` loaded."""
    words = line.split(" ")
    program = f"""
source {script}
COMP_WORDS=({" ".join(f"'{w}'" for w in words)})
COMP_CWORD={len(words) - 1}
COMP_LINE='{line}'
COMP_POINT={len(line)}
_sessionctl_completion sessionctl
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    done = subprocess.run(
        [need("bash"), "--norc", "--noprofile", "-c", program],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return [w for w in done.stdout.splitlines() if w]


def test_bash_completion_completes_commands_options_and_choices(tmp_path):
    script = ROOT / gendocs.COMPLETION_FILES["bash"]
    env = completion_env()
    assert bash_complete(script, "sessionctl cle", env, tmp_path) == ["cleanup"]
    assert "--dry-run" in bash_complete(script, "sessionctl cleanup --d", env, tmp_path)
    assert bash_complete(script, "sessionctl stats --format p", env, tmp_path) == ["prometheus"]
    assert "django" in bash_complete(script, "sessionctl list --preset ", env, tmp_path)
    assert bash_complete(script, "sessionctl config s", env, tmp_path) == ["show"]


def test_bash_completion_offers_store_names_from_the_config_as_it_is_now(tmp_path):
    script = ROOT / gendocs.COMPLETION_FILES["bash"]
    config = write_config(tmp_path / "sessionctl.toml", "web", "workers", "browsers")
    env = completion_env(SESSIONCTL_CONFIG=str(config))
    assert bash_complete(script, "sessionctl list --store w", env, tmp_path) == ["web", "workers"]
    assert bash_complete(script, "sessionctl cleanup -s ", env, tmp_path) == [
        "web",
        "workers",
        "browsers",
    ]
    assert bash_complete(script, "sessionctl history --store b", env, tmp_path) == ["browsers"]
    assert bash_complete(script, "sessionctl config show --store we", env, tmp_path) == ["web"]
    # Dynamic: a store added to the config completes at once, nothing to regenerate.
    write_config(config, "web", "workers", "browsers", "wiki")
    assert bash_complete(script, "sessionctl stats --store wi", env, tmp_path) == ["wiki"]
    # --config on the command line wins over $SESSIONCTL_CONFIG.
    other = write_config(tmp_path / "other.toml", "warehouse")
    line = f"sessionctl --config {other} list --store w"
    assert bash_complete(script, line, env, tmp_path) == ["warehouse"]
    # No config at all: nothing to offer, and no error either.
    bare = completion_env(XDG_CONFIG_HOME=str(tmp_path / "none"), XDG_CONFIG_DIRS=str(tmp_path))
    assert bash_complete(script, "sessionctl list --store ", bare, tmp_path) == []


def test_zsh_completion_works_autoloaded_and_sourced(tmp_path):
    zsh = need("zsh", required_in_ci=True)
    config = write_config(tmp_path / "sessionctl.toml", "web", "workers")
    folder = (ROOT / gendocs.COMPLETION_FILES["zsh"]).parent
    program = f"""
fpath=({folder} $fpath)
compdef() {{ print -r -- "compdef $*" }}
_arguments() {{ print -r -- "_arguments $*" }}
autoload -Uz _sessionctl
words=(sessionctl list --store w); CURRENT=4
_sessionctl
source {folder}/_sessionctl
"""
    done = subprocess.run(
        [zsh, "-f", "-c", program],
        capture_output=True,
        text=True,
        env=completion_env(SESSIONCTL_CONFIG=str(config)),
        cwd=tmp_path,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    # Autoloaded from $fpath, the first Tab completes; sourced, the function is registered.
    assert done.stdout.splitlines() == [
        """_arguments *: :(("web" "workers"))""",
        "compdef _sessionctl_completion sessionctl",
    ]


def test_fish_completion_offers_store_names(tmp_path):
    fish = need("fish", required_in_ci=True)
    config = write_config(tmp_path / "sessionctl.toml", "web", "workers", "browsers")
    script = ROOT / gendocs.COMPLETION_FILES["fish"]
    done = subprocess.run(
        [fish, "--no-config", "-c", f"source {script}; complete -C 'sessionctl list --store w'"],
        capture_output=True,
        text=True,
        env=completion_env(SESSIONCTL_CONFIG=str(config), HOME=str(tmp_path)),
        cwd=tmp_path,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert [line.split("\t")[0] for line in done.stdout.splitlines()] == ["web", "workers"]


# --- the README ---------------------------------------------------------------------------------


def readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"README has no section {title!r}"
    return match.group(1)


def table_rows(section: str) -> list[list[str]]:
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    return [[cell.strip().strip("`") for cell in row.strip("|").split("|")] for row in rows]


def test_readme_presets_table_matches_sessionctl_presets():
    from sessionctl.cli.presets import preset_rows

    rows = table_rows(readme_section("Presets"))
    assert rows[0][:9] == [
        "preset",
        "shapes",
        "table",
        "id",
        "created",
        "last used",
        "expires",
        "group",
        "defaults",
    ]
    expected = []
    for preset in preset_rows():
        fields = preset["fields"]
        policy = " ".join(f"{k}={v}" for k, v in preset["policy"].items())
        expected.append(
            [preset["name"], ", ".join(preset["shapes"]), preset["table"] or "-"]
            + [fields[role] or "-" for role in ("id", "created", "accessed", "expires", "group")]
            + [policy or "-", preset["title"]]
        )
    assert rows[1:] == expected


def test_readme_configuration_reference_names_every_setting():
    from sessionctl.app.config import GLOBAL_SETTINGS, STORE_SETTINGS

    keys = {row[0] for row in table_rows(readme_section("Configuration"))}
    assert set(STORE_SETTINGS) | set(GLOBAL_SETTINGS) <= keys


def test_readme_fills_every_section_of_this_work():
    for title in ("Install", "A five-minute tour", "Presets", "Configuration", "Recipes", "Safety"):
        section = readme_section(title)
        assert "<!--" not in section and len(section) > 500, title
    assert "pipx install ." in readme_section("Install")
    assert "_SESSIONCTL_COMPLETE=source_bash sessionctl" in readme_section("Install")
