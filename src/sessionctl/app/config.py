"""The TOML configuration: where it is looked up, named stores, and effective settings.

Precedence, lowest first: built-in defaults, `[defaults]`, the store's preset, `[stores.NAME]`,
environment variables, command-line options. Every effective setting remembers its source so
that `config show` can say where it came from.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..domain.errors import usage_error
from ..domain.mapping import ROLES
from ..domain.timeparse import UTC, parse_duration, parse_size

APP_NAME = "sessionctl"
ENV_CONFIG = "SESSIONCTL_CONFIG"
ENV_STORE = "SESSIONCTL_STORE"
ENV_STATE_DIR = "SESSIONCTL_STATE_DIR"

#: Store settings, their built-in defaults, and how to read them from TOML.
STORE_SETTINGS: dict[str, tuple[Any, str]] = {
    "address": (None, "text"),
    "preset": (None, "text"),
    "timezone": ("UTC", "timezone"),
    "max_age": (None, "duration"),
    "idle_timeout": (None, "duration"),
    "idle_from": ("accessed", "text"),
    "skew": (300.0, "duration"),
    "expiry_horizon": (3650 * 86400.0, "duration"),
    "max_per_group": (None, "count"),
    "on_delete": (None, "command"),
    "hook_timeout": (30.0, "duration"),
    "batch_size": (None, "batch"),
    "max_lock": (None, "duration"),
    "pause": (0.0, "duration"),
    "busy_timeout": (5.0, "duration"),
    "password_env": (None, "text"),
    "password_file": (None, "path"),
    "lock_timeout": (2.0, "duration"),
    "statement_timeout": (60.0, "duration"),
    "php_ini": (None, "path"),
    "check_open": (False, "bool"),
    "create_lock_table": (False, "bool"),
    "archive": (True, "bool"),
    "archive_dir": (None, "path"),
    "lock": ("state", "lock"),
    "fields": ({}, "table"),
    "payload": (None, "list"),
    "rules": ({}, "table"),
}
GLOBAL_SETTINGS: dict[str, tuple[Any, str]] = {
    "store": (None, "text"),
    "state_dir": (None, "path"),
}


def user_config_file() -> Path:
    import platformdirs

    return platformdirs.user_config_path(APP_NAME) / "config.toml"


def site_config_file() -> Path:
    import platformdirs

    return platformdirs.site_config_path(APP_NAME) / "config.toml"


def config_candidates(explicit: str | None) -> list[tuple[Path, str]]:
    """Where a config file is looked for, first match wins, with how each was chosen."""
    if explicit:
        return [(Path(explicit).expanduser(), "--config")]
    if os.environ.get(ENV_CONFIG):
        return [(Path(os.environ[ENV_CONFIG]).expanduser(), f"${ENV_CONFIG}")]
    return [(user_config_file(), "user config"), (site_config_file(), "site config")]


@dataclass
class Config:
    path: Path | None
    chosen_by: str | None
    data: dict = field(default_factory=dict)

    @property
    def defaults(self) -> dict:
        return self.data.get("defaults", {})

    @property
    def stores(self) -> dict[str, dict]:
        return self.data.get("stores", {})

    def source(self, section: str) -> str:
        return f"{self.path} [{section}]"


def load_config(explicit: str | None = None) -> Config:
    for path, chosen_by in config_candidates(explicit):
        try:
            exists = path.is_file()
        except OSError as exc:
            if chosen_by in ("user config", "site config"):
                continue  # a folder we may not look into cannot hold our config
            raise usage_error(f"cannot read config file {path}: {exc.strerror}") from None
        if exists:
            return Config(path=path.absolute(), chosen_by=chosen_by, data=_read_toml(path))
        if path.is_dir():
            raise usage_error(
                f"config file {path} is a folder", "give the path of the TOML file in it"
            )
        if chosen_by in ("--config", f"${ENV_CONFIG}"):
            raise usage_error(
                f"config file {path} does not exist", "create one with: sessionctl config init"
            )
    return Config(path=None, chosen_by=None)


def _read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise usage_error(f"config file {path} is not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise usage_error(f"cannot read config file {path}: {exc}") from None
    _check_keys(path, data)
    return data


def _check_keys(path: Path, data: dict) -> None:
    top_unknown = set(data) - {"defaults", "stores", *GLOBAL_SETTINGS}
    if top_unknown:
        raise usage_error(f"config file {path}: unknown key(s) {', '.join(sorted(top_unknown))}")
    for key, (_default, kind) in GLOBAL_SETTINGS.items():
        if key in data:  # `store = 5` exited 70
            convert(key, data[key], kind, where=str(path))
    sections = [("defaults", data.get("defaults", {}))]
    stores = data.get("stores", {})
    if not isinstance(stores, dict):
        raise usage_error(f"config file {path}: [stores] must be a table of named stores")
    sections += [(f"stores.{name}", table) for name, table in stores.items()]
    for section, table in sections:
        if not isinstance(table, dict):
            raise usage_error(f"config file {path}: [{section}] must be a table")
        # `store` and `state_dir` are not per store: they live at the top of the file only.
        unknown = set(table) - set(STORE_SETTINGS)
        if unknown:
            raise usage_error(
                f"config file {path}: unknown key(s) in [{section}]: {', '.join(sorted(unknown))}"
            )
        for key, value in table.items():
            kind = (STORE_SETTINGS.get(key) or GLOBAL_SETTINGS[key])[1]
            convert(key, value, kind, where=f"{path} [{section}]")
        fields = table.get("fields", {})
        bad_roles = set(fields) - set(ROLES) - {"payload"}
        if bad_roles:
            raise usage_error(
                f"config file {path}: [{section}.fields]: unknown role(s) "
                f"{', '.join(sorted(bad_roles))}",
                f"roles are: {', '.join(ROLES)}, payload",
            )
        for role, path_value in fields.items():
            if not isinstance(path_value, str):
                raise usage_error(
                    f"config file {path}: [{section}.fields]: {role} = {path_value!r} "
                    "is not a field name",
                    'write it as a string, e.g. payload = "data,token"'
                    if role == "payload"
                    else f'write it as a string, e.g. {role} = "{role}_at"',
                )


def convert(key: str, value: Any, kind: str, where: str) -> Any:
    """A raw TOML or environment value as the setting's type; usage error with `where`."""
    label = f"{where}: {key}"
    try:
        if value is None:
            return None
        if kind == "duration":
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if number and value != 0 and where != "default":
                # TOML `idle_timeout = 5` would silently be 5 seconds: say the unit.
                raise usage_error(
                    f"{label}: {value!r} has no unit",
                    f'write it as a string with one, e.g. "{value}s", "{value}m", '
                    f'"{value}h" or "{value}d"',
                )
            return parse_duration(value, label)
        if kind == "batch":  # a count of at least 1, or "all"
            if isinstance(value, str) and value.strip().lower() == "all":
                return "all"
            if isinstance(value, bool) or int(str(value)) < 0:
                raise ValueError
            return int(str(value))
        if kind == "count":
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                number = int(str(value))
                if number < 0:
                    raise ValueError
                return number
            return value
        if kind == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind == "timezone":
            return get_timezone(str(value))
        if kind == "command":
            if isinstance(value, list) and all(isinstance(part, str) for part in value) and value:
                return list(value)
            if isinstance(value, str) and value.strip():
                import shlex

                return shlex.split(value)
            raise ValueError
        if kind == "path":
            if not isinstance(value, str) or not value.strip():
                raise ValueError  # `state_dir = ""` was the current folder, `= 5` a folder "5"
            return Path(value).expanduser()
        if kind == "table":
            if not isinstance(value, dict):
                raise ValueError
            return value
        if kind == "list":
            if isinstance(value, str):
                return [part.strip() for part in value.split(",") if part.strip()]
            if isinstance(value, list) and all(isinstance(part, str) for part in value):
                return list(value)
            raise ValueError
        if kind == "lock":
            if value in ("state", "store"):
                return value
            raise ValueError
        if kind == "size":
            return parse_size(value, label)
        if not isinstance(value, str):
            raise ValueError
        return value
    except ValueError:
        raise usage_error(f"{label}: invalid value {value!r}") from None


def get_timezone(name: str):
    if name.upper() in ("UTC", "Z"):
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise usage_error(
            f"unknown time zone {name!r}", "use an IANA name like Europe/Paris"
        ) from None


@dataclass(frozen=True)
class Setting:
    value: Any
    source: str


class Settings:
    """Effective settings for one store: values with their sources."""

    def __init__(self, values: dict[str, Setting]):
        self._values = values

    def __getitem__(self, key: str) -> Any:
        return self._values[key].value

    def get(self, key: str, default: Any = None) -> Any:
        setting = self._values.get(key)
        return default if setting is None or setting.value is None else setting.value

    def source(self, key: str) -> str:
        return self._values[key].source

    def items(self):
        return self._values.items()


def store_settings(
    config: Config,
    store_name: str | None,
    preset_policy: dict | None,
    preset_name: str | None,
    overrides: dict[str, Any],
    store_defaults: dict[str, tuple[Any, str]] | None = None,
) -> Settings:
    """Layer defaults, [defaults], preset, the store's own defaults (`setting_defaults`),
    [stores.NAME], env and command line."""
    values: dict[str, Setting] = {
        key: Setting(convert(key, default, kind, "default"), "default")
        for key, (default, kind) in STORE_SETTINGS.items()
    }

    def apply(table: dict, source: str) -> None:
        for key, raw in table.items():
            if key not in STORE_SETTINGS:
                continue
            kind = STORE_SETTINGS[key][1]
            values[key] = Setting(convert(key, raw, kind, source), source)

    apply(config.defaults, config.source("defaults") if config.path else "default")
    if preset_policy:
        apply(preset_policy, f"preset {preset_name}")
    for key, (value, source) in (store_defaults or {}).items():
        if key in STORE_SETTINGS and (key not in config.defaults or not config.path):
            values[key] = Setting(value, source)
    if store_name is not None:
        apply(config.stores.get(store_name, {}), config.source(f"stores.{store_name}"))
    for key, value in overrides.items():
        if value is not None:
            values[key] = Setting(value, "command line")
    return Settings(values)


def state_dir(config: Config) -> tuple[Path, str]:
    if os.environ.get(ENV_STATE_DIR):
        return Path(os.environ[ENV_STATE_DIR]).expanduser(), f"${ENV_STATE_DIR}"
    configured = config.data.get("state_dir")
    if configured:
        return Path(str(configured)).expanduser(), config.source("top level")
    import platformdirs

    return platformdirs.user_state_path(APP_NAME), "default"


STARTER_TEMPLATE = """\
# sessionctl configuration ({path})
#
# Looked up from --config, $SESSIONCTL_CONFIG, the user config folder, then the site config
# folder. Durations: 90s, 30m, 12h, 7d, 2w, 1d12h. Run `sessionctl config show` to see the
# effective settings and where each one comes from.
#
# Keys of [defaults] apply to every store; [stores.NAME] tables override them for one store,
# chosen with `--store NAME`.
#
#   address        json:PATH | jsondir:PATH | sqlite:PATH?table=NAME | a bare path
#   preset         one of `sessionctl presets` (field mapping, rules and expiry defaults)
#   timezone       zone of timestamps written without an offset (default UTC)
#   max_age        expire sessions created longer ago than this
#   idle_timeout   expire sessions not used for longer than this
#   idle_from      what idleness is measured from: accessed (default) or created
#   skew           clock skew allowed before a timestamp counts as "in the future" (5m)
#   max_per_group  cleanup keeps at most this many newest sessions per user/workspace
#   on_delete      command run once per removed session, the session as JSON on stdin
#   hook_timeout   how long on_delete may run (30s)
#   batch_size     sessions per delete transaction, or "all" (one transaction); SQLite
#                  otherwise sizes them by max_lock; pause: sleep between batches
#   max_lock       SQLite: how long one delete transaction may keep the application out (200ms)
#   busy_timeout   how long to wait for a locked SQLite database (5s)
#   password_env   PostgreSQL: the environment variable holding the password
#   password_file  PostgreSQL: a file (mode 0600) holding the password
#   lock_timeout   PostgreSQL: how long a delete waits for a row the application holds (2s)
#   statement_timeout  PostgreSQL: the longest any statement of the tool may run (60s)
#   archive        keep removed sessions in a gzip'd NDJSON archive (true)
#   archive_dir    where archives go (default: the state folder)
#   lock           "state" (one cleanup at a time on this host) or "store" (also a lock file
#                  beside the store, for a store several hosts share, e.g. on NFS)
#
#   [stores.NAME.fields]  id / created / accessed / expires / group = "column.or.json.path"
#   [stores.NAME.rules]   required = [...], allowed = {{ f = [...] }}, types = {{ f = "string" }}
#
# Example:
#
# [stores.web]
# address = "sqlite:/srv/app/db.sqlite3?table=django_session"
# preset = "django"
#
# [stores.workers]
# address = "jsondir:/var/lib/raptor/sessions"
# preset = "raptor"
# idle_timeout = "3d"
# on_delete = ["/usr/local/bin/close-browser", "--quiet"]

"""


def starter_config(path: Path, values: dict) -> str:
    import tomli_w

    return STARTER_TEMPLATE.format(path=path) + tomli_w.dumps(values)
