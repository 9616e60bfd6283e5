"""Shared fixtures: every test gets its own state and config folders, and a CLI runner."""

import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mysql import mysql_db, mysql_server  # noqa: F401  (fixtures: real MySQL/MariaDB stores)
from pg import node_modules, pg_db, pg_server  # noqa: F401  (fixtures: real PostgreSQL stores)
from phpfix import php_cli  # noqa: F401  (fixture: php-cli, for real PHP session files)
from redisfix import redis_server, redis_space  # noqa: F401  (fixtures: real Redis stores)
from sessionctl.cli.app import app


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No test sees the user's config, state or store settings."""
    monkeypatch.setenv("SESSIONCTL_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_CONFIG_DIRS", str(tmp_path / "xdg-site"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))
    for name in ("SESSIONCTL_CONFIG", "SESSIONCTL_STORE", "SESSIONCTL_FORMAT", "SESSIONCTL_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    yield


@pytest.fixture
def now() -> float:
    return time.time()


@pytest.fixture
def state_dir(tmp_path) -> Path:
    return tmp_path / "state"


class Cli:
    """Runs sessionctl in-process through Typer's CliRunner and checks the exit code."""

    def __init__(self):
        self.runner = CliRunner()

    def __call__(
        self, *args, code: int | None = 0, input: str | None = None, env: dict | None = None
    ):
        """Run; `code=None` accepts any exit status (the caller compares them)."""
        result = self.runner.invoke(
            app, [str(a) for a in args], input=input, env=env, catch_exceptions=False
        )
        assert code is None or result.exit_code == code, (
            f"exit {result.exit_code} != {code}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
        return result


@pytest.fixture
def cli() -> Cli:
    return Cli()
