"""The package as users get it: build the sdist and the wheel from it, install the wheel into a
fresh venv (dependencies from the package registry), and use what it installed: the command,
its man page and its shell completions, from the places man and the shells look."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ROOT
from sessionctl import __version__

pytestmark = pytest.mark.slow

#: Where the wheel puts the man page and the completions, under the install prefix.
INSTALLED = {
    "man/sessionctl.1": "share/man/man1/sessionctl.1",
    "completions/bash/sessionctl": "share/bash-completion/completions/sessionctl",
    "completions/zsh/_sessionctl": "share/zsh/site-functions/_sessionctl",
    "completions/fish/sessionctl.fish": "share/fish/vendor_completions.d/sessionctl.fish",
}


def run(*argv, env=None, cwd=None, timeout=300) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout
    )
    assert done.returncode == 0, f"{argv} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv with the wheel built from this checkout installed: its prefix."""
    base = tmp_path_factory.mktemp("packaging")
    dist = base / "dist"
    # sdist first, then the wheel from the sdist: the sdist must carry the man page and scripts.
    run(sys.executable, "-m", "build", "--outdir", dist, ROOT, cwd=base)
    wheels = list(dist.glob("sessionctl-*.whl"))
    assert len(wheels) == 1, list(dist.iterdir())
    venv = base / "venv"
    run(sys.executable, "-m", "venv", venv)
    run(
        venv / "bin" / "python",
        "-m",
        "pip",
        "install",
        "-q",
        "--disable-pip-version-check",
        wheels[0],
    )
    return venv


def user_env(venv: Path, home: Path, **extra) -> dict:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("SESSIONCTL_", "COMP_", "XDG_"))
    }
    env.update(HOME=str(home), PATH=f"{venv / 'bin'}{os.pathsep}/usr/bin:/bin", NO_COLOR="1")
    env.update(extra)
    return env


def test_installed_command_runs(installed, tmp_path):
    env = user_env(installed, tmp_path)
    help_text = run(installed / "bin" / "sessionctl", "--help", env=env, cwd=tmp_path).stdout
    assert help_text.startswith("Usage: sessionctl [OPTIONS] COMMAND [ARGS]...")
    for command in ("list", "stats", "cleanup", "restore", "schedule"):
        assert f"\n  {command} " in help_text, command
    assert run("sessionctl", "-h", env=env, cwd=tmp_path).stdout == help_text  # found on PATH
    version = run(installed / "bin" / "sessionctl", "--version", env=env, cwd=tmp_path).stdout
    assert version == f"sessionctl {__version__}\n"
    presets = run("sessionctl", "presets", "--format", "csv", env=env, cwd=tmp_path).stdout
    assert "django" in presets
    # The copy in the venv, not the checkout's, is what ran.
    where = run(installed / "bin" / "python", "-c", "import sessionctl; print(sessionctl.__file__)")
    assert where.stdout.startswith(str(installed)), where.stdout


def test_wheel_installs_man_page_and_completions_where_they_are_looked_for(installed):
    for source, target in INSTALLED.items():
        path = installed / target
        assert path.is_file(), target
        assert path.read_text() == (ROOT / source).read_text(), target


def test_installed_man_page_is_found_and_reads(installed, tmp_path):
    page = installed / "share/man/man1/sessionctl.1"
    if shutil.which("man"):
        env = user_env(installed, tmp_path, MANPATH=str(installed / "share/man"))
        found = run("man", "-w", "sessionctl", env=env).stdout.strip()
        assert Path(found).resolve() == page.resolve()
        text = run("man", "-P", "cat", "sessionctl", env={**env, "MANWIDTH": "80"}).stdout
    elif shutil.which("groff"):
        text = run("groff", "-man", "-Tutf8", page).stdout
    else:
        if os.environ.get("CI"):
            pytest.fail("neither man nor groff is installed (.ci/run installs groff)")
        pytest.skip("neither man nor groff is installed")
    plain = "".join(c for i, c in enumerate(text) if c != "\b" and text[i + 1 : i + 2] != "\b")
    assert "sessionctl - look after application session stores" in plain
    for heading in ("SYNOPSIS", "EXIT STATUS", "ENVIRONMENT", "FILES", "EXAMPLES"):
        assert f"\n{heading}\n" in plain, heading


def test_installed_bash_completion_loads_and_completes(installed, tmp_path):
    script = installed / "share/bash-completion/completions/sessionctl"
    config = tmp_path / "sessionctl.toml"
    config.write_text('[stores.web]\naddress = "/srv/web.db"\n\n[stores.workers]\naddress = "/w"\n')
    env = user_env(installed, tmp_path, SESSIONCTL_CONFIG=str(config))
    loaded = run("bash", "--norc", "--noprofile", "-c", f"source {script}; complete -p sessionctl")
    assert loaded.stdout.strip() == "complete -o default -F _sessionctl_completion sessionctl"
    program = f"""
source {script}
COMP_WORDS=(sessionctl cleanup --store w); COMP_CWORD=3
_sessionctl_completion sessionctl
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    done = run("bash", "--norc", "--noprofile", "-c", program, env=env, cwd=tmp_path)
    assert done.stdout.split() == ["web", "workers"]
