"""`sessionctl --help`, `--version` and every `-h` start fast: they load no store driver, no application
operation, no Rich, no SQLite, no gzip. (bench/startup.py measures the time.)"""

import json
import os
import subprocess
import sys

import pytest

#: Nothing a help or version screen needs. A prefix matches the module and its submodules.
HEAVY = (
    "sqlite3",
    "_sqlite3",
    "gzip",
    "rich",
    "sessionctl.stores",
    "sessionctl.app.ops",
    "sessionctl.app.context",
    "sessionctl.app.audit",
    "sessionctl.app.locking",
    "sessionctl.app.config",
    "sessionctl.domain.mapping",
    "sessionctl.app.schedule",
    "platformdirs",
    "tomli_w",
    "crontab",
    "croniter",
)
#: --help and --version do not even process a parameter, so Typer never builds its Pydantic
#: adapters (a command's own -h does: Typer 0.29 coerces the group's options through Pydantic).
HEAVY_TOP = (*HEAVY, "pydantic")


def heavy(modules, prefixes=HEAVY) -> list[str]:
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in prefixes))


def clean_env() -> dict:
    env = dict(os.environ)
    for name in (
        "SESSIONCTL_CONFIG",
        "SESSIONCTL_STORE",
        "SESSIONCTL_FORMAT",
        "PYTHONPROFILEIMPORTTIME",
    ):
        env.pop(name, None)
    return env


def imported_by(*args: str) -> list[str]:
    """Modules a real `sessionctl ARGS` process imports (python -X importtime -m sessionctl)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "sessionctl", *args],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    modules = [
        line.split("|")[-1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    ]
    assert "typer" in modules, done.stderr[-2000:]  # the probe itself works
    return modules


@pytest.mark.parametrize("args", [["--help"], ["-h"], ["--version"], ["-V"]])
def test_help_and_version_import_nothing_heavy(args):
    modules = imported_by(*args)
    assert heavy(modules, HEAVY_TOP) == []


def test_the_probe_sees_heavy_imports():
    """The check above can fail: a command that does work imports what it needs."""
    modules = imported_by("presets", "-f", "json")
    assert "sessionctl.domain.mapping" in heavy(modules)


def test_every_command_help_imports_nothing_heavy():
    """`-h` on every group and command, in one process: none loads a store or an operation."""
    script = """
import json, sys
import typer.main
from sessionctl.cli.app import app, main
root = typer.main.get_command(app)
paths = []
def walk(command, path):
    paths.append(path)
    for name, sub in getattr(command, "commands", {}).items():
        walk(sub, path + [name])
walk(root, [])
for path in paths:
    sys.argv = ["sessionctl", *path, "-h"]
    try:
        main()
    except SystemExit as exc:
        assert exc.code in (0, None), (path, exc.code)
sys.stdout = sys.__stdout__
print(json.dumps({"paths": paths, "modules": sorted(sys.modules)}))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=clean_env(), timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(result["paths"]) > 10, result["paths"]
    assert heavy(result["modules"]) == []
