"""The registry of store kinds: each kind parses its own addresses and is imported only when
its store is used (a driver is imported only then: `--help` and the other kinds never load it).

A new kind is one module with one Store subclass, and one line in KNOWN_KINDS.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import replace
from pathlib import Path

from ..domain.errors import ExitCode, SessionctlError, store_error, usage_error
from .base import Address, Store, StoreSettings

#: (kind, schemes, module, class, takes bare paths). The schemes are written here too, so that
#: telling a scheme's kind imports nothing; kinds taking bare paths are asked, in this order,
#: whether they `claim` one (the others are not imported for it).
KNOWN_KINDS: tuple[tuple[str, tuple[str, ...], str, str, bool], ...] = (
    # Before jsondir: a folder of sess_* files is PHP's, any other folder one of JSON files.
    ("php", ("php",), "sessionctl.stores.files.php", "PhpStore", True),
    ("jsondir", ("jsondir",), "sessionctl.stores.jsondir", "JsonDirStore", True),
    ("sqlite", ("sqlite",), "sessionctl.stores.sql.sqlite", "SqliteStore", True),
    ("json", ("json",), "sessionctl.stores.jsonfile", "JsonFileStore", True),
    ("redis", ("redis", "rediss", "unix"), "sessionctl.stores.redis", "RedisStore", False),
    (
        "postgresql",
        ("postgresql", "postgres"),
        "sessionctl.stores.sql.postgres",
        "PostgresStore",
        False,
    ),
    ("mysql", ("mysql", "mariadb"), "sessionctl.stores.sql.mysql", "MysqlStore", False),
)
#: Schemes with a kind that is not written yet.
_PLANNED: tuple[str, ...] = ()
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")


def kinds() -> tuple[str, ...]:
    return tuple(kind for kind, *_ in KNOWN_KINDS)


def store_class(kind: str) -> type[Store]:
    for name, _, module, attribute, _ in KNOWN_KINDS:
        if name == kind:
            return getattr(importlib.import_module(module), attribute)
    raise usage_error(f"unknown store kind {kind!r}", f"use one of: {', '.join(kinds())}")


def _kind_of_scheme(scheme: str) -> str | None:
    for kind, schemes, *_ in KNOWN_KINDS:
        if scheme.lower() in schemes:
            return kind
    return None


def parse_address(text: str, name: str | None = None) -> Address:
    """`json:PATH`, `jsondir:PATH`, `sqlite:PATH?table=NAME`, a scheme any registered kind
    parses (`postgresql://...`), or a bare path whose kind the kinds recognise."""
    text = text.strip()
    if not text:
        raise usage_error("empty store address")
    match = _SCHEME.match(text)
    if match and len(match.group(1)) > 1:  # `C:` is a drive, not a scheme
        scheme = match.group(1)
        kind = _kind_of_scheme(scheme)
        if kind is not None:
            return replace(store_class(kind).parse_address(text), name=name)
        if text[match.end() :].startswith("//") or scheme.lower() in _PLANNED:
            shown = scheme + (":" + "//" if text[match.end() :].startswith("//") else ":")
            raise usage_error(
                f"store {shown} is not supported yet (store kinds: {', '.join(sorted(kinds()))})"
            )
    return replace(store_class(detect_kind(text)).parse_address(text), name=name)


def detect_kind(text: str) -> str:
    """The kind of store at a bare path, as the kinds recognise it (suffix, header, content)."""
    path = Path(text).expanduser()
    if "?" in text and not path.exists():
        base = Path(text.rpartition("?")[0]).expanduser()
        if base.exists():
            path = base
    path = path.absolute()
    for kind, _, _, _, files in KNOWN_KINDS:
        if files and store_class(kind).claims(path):
            return kind
    if not path.exists():
        raise store_error(f"store {path} does not exist", "check the path or the --store name")
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise store_error(f"cannot read {path}: {exc.strerror}") from None
    prefixes = sorted(f"{kind}:" for kind, _, _, _, files in KNOWN_KINDS if files)
    named = ", ".join(prefixes[:-1]) + " or " + prefixes[-1] if len(prefixes) > 1 else prefixes[0]
    raise store_error(f"cannot tell what kind of store {path} is", f"prefix it with {named}")


def history_address(text: str, name: str | None = None) -> Address:
    """`parse_address`, except that a bare path nothing can be told about any more (the store
    is gone) still gives an address, naming only its path: its history is worth seeing. A
    configured name without an address is known by its name alone."""
    if not text.strip() and name:
        return Address(kind="", display=name, identity=name, pinned=name, name=name)
    try:
        return parse_address(text, name)
    except SessionctlError as exc:
        if exc.code != ExitCode.STORE:
            raise
    path = Path(text.strip()).expanduser().absolute()
    shown = str(path)
    return Address(kind="", display=shown, identity=shown, pinned=shown, path=path, name=name)


def open_store(address: Address, settings: StoreSettings | None = None) -> Store:
    return store_class(address.kind)(address, settings or StoreSettings())


__all__ = [
    "KNOWN_KINDS",
    "Address",
    "Store",
    "StoreSettings",
    "detect_kind",
    "history_address",
    "kinds",
    "open_store",
    "parse_address",
    "store_class",
]
