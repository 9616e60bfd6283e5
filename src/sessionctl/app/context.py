"""Everything a command needs about one store, resolved once: where it is, how to read it
(mapping), how to judge it (policy), the effective settings, the state folder and `now`."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..domain.errors import usage_error
from ..domain.mapping import (
    KEY_PATH,
    ROLES,
    TABLE,
    Mapper,
    Mapping,
    Preset,
    detect_mapping,
    detect_preset,
    fill_by_name,
    get_preset,
    preset_mapping,
)
from ..domain.policy import IDLE_FROM_CHOICES, IDLE_FROM_CREATED, Judge, Policy, Rules
from ..domain.timeparse import format_duration
from ..stores import Address, Store, StoreSettings, open_store, parse_address
from .config import ENV_STORE, Config, Settings, state_dir, store_settings


@dataclass
class StoreRequest:
    """What the command line asked for; None means "not given"."""

    store: str | None = None
    preset: str | None = None
    fields: dict[str, str | None] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class StoreContext:
    config: Config
    address: Address
    store: Store
    settings: Settings
    mapping: Mapping
    policy: Policy
    judge: Judge
    mapper: Mapper
    now: float
    state_dir: Path
    preset: Preset | None
    pushdown_note: str = ""
    _plan: object = None

    @property
    def label(self) -> str:
        return self.address.label

    @property
    def identity(self) -> str:
        """What names this store for locks and the audit log, however it was addressed (the
        store's own address: a table store's names the table it opened)."""
        return self.store.address.identity

    @property
    def table(self) -> str | None:
        return self.store.table

    def pushdown(self):
        """The store's own query plan for judging, when it can judge exactly; else None.

        SESSIONCTL_PUSHDOWN=0 turns it off (the tests compare both paths; so can you).
        """
        if self._plan is not None or self.pushdown_note:
            return self._plan
        if os.environ.get("SESSIONCTL_PUSHDOWN") == "0":
            self.pushdown_note = "in Python (SESSIONCTL_PUSHDOWN=0)"
            return None
        self._plan = self.store.pushdown(
            self.mapping, self.policy, self.settings["timezone"], self.now
        )
        self.pushdown_note = (
            f"in Python ({self.store.no_pushdown_reason})"
            if self._plan is None
            else "judged in SQL (rows SQL cannot read exactly go to the Python judge)"
        )
        return self._plan

    def close(self) -> None:
        self.store.close()


def choose_store(config: Config, given: str | None) -> tuple[str | None, str]:
    """(config name or None, address) for `--store` / $SESSIONCTL_STORE / the config default."""
    candidate = given or os.environ.get(ENV_STORE) or config.data.get("store")
    if candidate is None and len(config.stores) == 1:
        candidate = next(iter(config.stores))
    if candidate is None:
        hint = "use --store PATH or --store NAME"
        if config.stores:
            hint += f" (configured: {', '.join(config.stores)})"
        raise usage_error("no store given", hint)
    if candidate in config.stores:
        address = config.stores[candidate].get("address")
        if not address:
            raise usage_error(f"store {candidate!r} in {config.path} has no address")
        return candidate, str(address)
    return None, candidate


def open_context(config: Config, request: StoreRequest, now: float) -> StoreContext:
    name, address = choose_store(config, request.store)
    spec = parse_address(address, name)
    table_config = config.stores.get(name, {}) if name else {}
    preset_name = request.preset or table_config.get("preset") or config.defaults.get("preset")
    preset = get_preset(preset_name) if preset_name else None

    # What the store needs to open (busy timeout, ...) comes first; the rest once the preset
    # is known.
    early = store_settings(
        config, name, preset.policy if preset else None, preset_name, request.overrides
    )
    store = open_store(spec, StoreSettings.from_settings(early))
    try:
        keys, sample = store.sample()
        if preset is None:
            hint = store.preset_hint()
            preset = get_preset(hint) if hint else detect_preset(keys, store.shape, store.table)
            how = "preset {} (detected from {})"
            mapping = (
                preset_mapping(preset, how.format(preset.name, _shape_word(store)), store.columns)
                if preset
                else detect_mapping(keys, sample)
            )
        else:
            mapping = preset_mapping(preset, f"preset {preset.name}", store.columns)
        if preset is not None:
            mapping = fill_by_name(mapping, detect_mapping(keys, sample))
        mapping = _fall_back_to_keys(mapping, keys, sample)
        config_fields = {**config.defaults.get("fields", {}), **table_config.get("fields", {})}
        if config_fields:
            mapping = mapping.with_overrides(config_fields, f"config {config.path}")
        if request.fields:
            mapping = mapping.with_overrides(request.fields, "--field")
        settings = store_settings(
            config,
            name,
            preset.policy if preset else None,
            preset.name if preset else None,
            request.overrides,
            store.setting_defaults(),
        )
        if settings.get("payload") is not None:
            mapping = mapping.with_overrides({"payload": ",".join(settings["payload"])}, "config")
        base_rules = Rules.from_config(preset.rules) if preset else Rules()
        rules = Rules.from_config(settings["rules"], base_rules)
        policy = Policy(
            max_age=settings["max_age"],
            idle_timeout=settings["idle_timeout"],
            skew=settings["skew"],
            expiry_horizon=settings["expiry_horizon"],
            rules=rules,
            idle_from=_idle_from(settings),
        )
        _check_columns(store, mapping, rules)
        _check_sampled_fields(store, mapping, rules, keys, len(sample), spec.label)
        if any(key != KEY_PATH for key in keys):  # an empty store has nothing to judge
            _check_idle(spec, settings, mapping, policy)
        state, _ = state_dir(config)
        return StoreContext(
            config=config,
            address=store.address,
            store=store,
            settings=settings,
            mapping=mapping,
            policy=policy,
            judge=Judge(policy, mapping),
            mapper=Mapper(mapping, settings["timezone"]),
            now=now,
            state_dir=state,
            preset=preset,
        )
    except BaseException:
        store.close()
        raise


def _check_columns(store: Store, mapping: Mapping, rules: Rules) -> None:
    """A table's columns are known for sure: a role or rule naming a column it lacks would mark
    every row invalid (and `cleanup --invalid` would empty the table). Refuse instead."""
    columns = store.columns
    if columns is None:
        return
    named = [(role, mapping.path(role)) for role in ROLES if mapping.path(role)]
    # Rules name fields, or roles (checked above through their field).
    named += [(f"rule on {path}", path) for path in rules.required if path not in ROLES]
    for what, path in named:
        column = path.split(".")[0]
        if column != KEY_PATH and column not in columns:
            raise usage_error(
                f"{what} field {path!r} is not a column of {store.table} "
                f"(columns: {', '.join(columns)})",
                "is this the right preset? map fields with --field ROLE=COLUMN",
            )


def _check_sampled_fields(
    store: Store, mapping: Mapping, rules: Rules, keys: list[str], sampled: int, label: str
) -> None:
    """Records have no columns, but the sessions sampled show their fields: an id (or a field a
    rule requires) that none of them has marks every session invalid, and `cleanup --invalid`
    emptied the store (a wrong --preset, a typo in --field id=). Refuse, as for a table."""
    if store.columns is not None or not sampled:
        return
    named = [("id", mapping.path("id"))] if mapping.path("id") else []
    named += [(f"rule on {path}", path) for path in rules.required if path not in ROLES]
    for what, path in named:
        field = path.split(".")[0]
        if field != KEY_PATH and field not in keys:
            raise usage_error(
                f"{what} field {path!r} is in none of the {sampled} sessions read from {label} "
                f"(their fields: {', '.join(k for k in keys if k != KEY_PATH)[:200]})",
                "is this the right preset? map fields with --field ROLE=FIELD",
            )


def _idle_from(settings: Settings) -> str:
    value = settings.get("idle_from") or IDLE_FROM_CHOICES[0]
    if value not in IDLE_FROM_CHOICES:
        raise usage_error(
            f"idle_from = {value!r} ({settings.source('idle_from')}): "
            f"expected one of {', '.join(IDLE_FROM_CHOICES)}"
        )
    return value


def _check_idle(spec: Address, settings: Settings, mapping: Mapping, policy: Policy) -> None:
    """Idleness is measured from the last access. A store that keeps none would have it
    measured from creation, and sessions in use every day would be removed: refuse, unless the
    operator asks for exactly that."""
    if policy.idle_timeout is None:
        return
    if policy.idle_from == IDLE_FROM_CREATED:
        if mapping.path("created") is not None:
            return
        # Measured from a creation no record has, nothing would ever be idle, silently.
        raise usage_error(
            f"idle timeout {format_duration(policy.idle_timeout)} measured from creation "
            f"({settings.source('idle_from')}), but the sessions of {spec.label} have no "
            "creation field",
            "map one with --field created=FIELD",
        )
    if mapping.path("accessed") is not None:
        return
    raise usage_error(
        f"idle timeout {format_duration(policy.idle_timeout)} "
        f"({settings.source('idle_timeout')}), but the sessions of {spec.label} have no "
        "last-access field to measure idleness from",
        "map one with --field accessed=FIELD, or measure from creation with --idle-from created",
    )


def _shape_word(store: Store) -> str:
    return "table columns" if store.shape == TABLE else "record fields"


def _fall_back_to_keys(mapping: Mapping, keys: list[str], sample: list[dict]) -> Mapping:
    """Records without an id field of their own are known by their object key or file name."""
    id_path = mapping.path("id")
    if id_path == KEY_PATH or KEY_PATH not in keys:
        return mapping
    top = id_path.split(".")[0] if id_path else None
    if top is None or (sample and not any(top in record for record in sample)):
        reason = "object keys" if top is None else f"object keys (records have no {id_path})"
        return mapping.with_overrides({"id": KEY_PATH}, reason)
    return mapping
