"""Store addresses and the store kinds behind them. Drivers are imported only when used."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qs

from ..domain.errors import store_error, usage_error
from .base import Store, StoreSpec

KINDS = ("json", "jsondir", "sqlite")
SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3", ".db3")
_EXPLICIT = re.compile(r"^(json|jsondir|sqlite):(?!//)(.+)$", re.S)


def parse_address(text: str, name: str | None = None) -> StoreSpec:
    """`json:PATH`, `jsondir:PATH`, `sqlite:PATH?table=NAME`, or a bare path (kind detected)."""
    text = text.strip()
    if not text:
        raise usage_error("empty store address")
    if re.match(r"^(postgres(ql)?|redis|mysql)://", text):
        raise usage_error(
            f"store {text.split('://')[0]}:// is not supported yet",
            "supported: JSON files, folders of JSON files, SQLite",
        )
    match = _EXPLICIT.match(text)
    kind = match.group(1) if match else None
    rest = match.group(2) if match else text
    table = None
    if "?" in rest and (kind in (None, "sqlite")):
        base, _, query = rest.rpartition("?")
        # A file whose name holds the `?` is taken as it is; otherwise what follows is parameters.
        literal = Path(rest).expanduser().exists()
        if not literal and (kind == "sqlite" or Path(base).expanduser().exists()):
            rest, table = base, _table_parameter(query, text)
            kind = kind or "sqlite"
    path = Path(rest).expanduser().absolute()
    if kind is None:
        kind = _detect_kind(path)
    return StoreSpec(kind=kind, path=path, table=table, name=name)


#: The parameters a `sqlite:PATH?...` address takes.
SQLITE_PARAMETERS = ("table",)


def _table_parameter(query: str, address: str) -> str | None:
    """The table named by the `?table=NAME` of an address; usage error for anything else."""
    params = parse_qs(query, keep_blank_values=True)
    unknown = sorted(set(params) - set(SQLITE_PARAMETERS))
    if unknown or (query and not params):
        named = ", ".join(repr(name) for name in unknown) or repr(query)
        raise usage_error(
            f"store {address}: unknown parameter {named}",
            f"a SQLite address takes only {', '.join(p + '=NAME' for p in SQLITE_PARAMETERS)}",
        )
    tables = params.get("table")
    if tables is None:
        return None
    if len(tables) > 1:
        raise usage_error(f"store {address}: table= given {len(tables)} times")
    if not tables[0].strip():
        raise usage_error(f"store {address}: empty table name", "give ?table=NAME")
    return tables[0]


def _detect_kind(path: Path) -> str:
    if path.is_dir():
        return "jsondir"
    suffix = path.suffix.lower()
    if suffix == ".json":
        return "json"
    if suffix in SQLITE_SUFFIXES:
        return "sqlite"
    if not path.exists():
        raise store_error(f"store {path} does not exist", "check the path or the --store name")
    try:
        with open(path, "rb") as handle:
            head = handle.read(64)
    except OSError as exc:
        raise store_error(f"cannot read {path}: {exc.strerror}") from None
    if head.startswith(b"SQLite format 3\x00"):
        return "sqlite"
    if head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] in (b"[", b"{"):
        return "json"
    raise store_error(
        f"cannot tell what kind of store {path} is",
        "prefix it with json:, jsondir: or sqlite:",
    )


def open_store(spec: StoreSpec, busy_timeout: float = 5.0) -> Store:
    if spec.kind == "json":
        from .jsonfile import JsonFileStore

        return JsonFileStore(spec)
    if spec.kind == "jsondir":
        from .jsondir import JsonDirStore

        return JsonDirStore(spec)
    if spec.kind == "sqlite":
        from .sqlite import SqliteStore

        return SqliteStore(spec, busy_timeout=busy_timeout)
    raise usage_error(f"unknown store kind {spec.kind!r}", f"use one of: {', '.join(KINDS)}")


__all__ = ["KINDS", "Store", "StoreSpec", "open_store", "parse_address"]
