"""Test stores of every preset and store kind, generated relative to now."""

from dataclasses import dataclass
from pathlib import Path

from helpers import storegen

#: (name, preset, store kind, extra options) — every preset on the store kinds it is used with.
CASES = [
    ("provisioner-keyed", "provisioner", "json-keyed", ["--max-age", "7d"]),
    ("provisioner-array", "provisioner", "json-array", ["--max-age", "7d"]),
    ("raptor-folder", "raptor", "jsondir", []),
    ("bash-wrapped", "bash-sessions", "json-wrapped", []),
    ("bash-sqlite", "bash-sessions", "sqlite", []),
    ("copilot-json", "copilot", "json-wrapped", []),
    ("copilot-sqlite", "copilot", "sqlite", []),
    ("django", "django", "sqlite", []),
    ("rails", "rails", "sqlite", []),
    ("express", "express", "sqlite", []),
    ("flask", "flask", "sqlite", []),
    ("spring", "spring", "sqlite", []),
]


@dataclass
class BuiltStore:
    name: str
    preset: str
    kind: str
    path: Path
    options: list[str]
    ids: dict[str, list[str]]
    generated: storegen.Generated

    @property
    def args(self) -> list[str]:
        return ["--store", str(self.path), *self.options]

    @property
    def total(self) -> int:
        return sum(len(v) for v in self.ids.values())


def build(
    tmp_path: Path,
    name: str,
    preset: str,
    kind: str,
    options: list[str],
    n: int = 40,
    seed: int = 5,
) -> BuiltStore:
    generated = storegen.generate(preset, n, seed=seed)
    if kind == "sqlite":
        path = storegen.write_sqlite(tmp_path / f"{name}.db", generated)
    elif kind == "jsondir":
        path = storegen.write_jsondir(tmp_path / name, generated, garbage=2)
    else:
        shape = kind.split("-")[1]
        path = storegen.write_json(tmp_path / f"{name}.json", generated, shape=shape)
    return BuiltStore(name, preset, kind, path, options, generated.ids, generated)


def session_name(view: dict) -> str:
    """How a view names its session: its id, or for an unreadable file, the file's stem."""
    if view["id"] is not None:
        return view["id"]
    return str(view["key"]).removesuffix(".json")
