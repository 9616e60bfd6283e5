"""The store layer: one registry of kinds, each parsing its own addresses into an Address
(display without secrets, identity, the form cron pins), and capabilities declared on the Store
so that nothing outside stores/ asks which kind it has. A kind defined in a test module plugs
in with no edit elsewhere."""

import ast
import gzip
import importlib
import json
import os
import sqlite3
import time
from pathlib import Path

import pytest

import fakestore
from helpers import ROOT, one_line_error
from sessionctl import stores
from sessionctl.domain.errors import ExitCode, SessionctlError
from sessionctl.domain.mapping import DOCUMENT, TABLE, detect_preset
from sessionctl.domain.timeparse import to_iso
from sessionctl.stores import base
from stores import build

SRC = ROOT / "src" / "sessionctl"
CANARY = "Pw-c4n4ry-9f1e"


# --- the registry ----------------------------------------------------------------------------


def test_every_registered_kind_parses_its_own_scheme(tmp_path):
    for kind, schemes, module, attribute, files in stores.KNOWN_KINDS:
        cls = stores.store_class(kind)
        assert cls.__module__ == module and cls.__name__ == attribute
        # The registry's schemes are the class's own (the tuple keeps lookups import-free).
        assert cls.kind == kind and cls.schemes == schemes
        for scheme in schemes:
            if files:
                address = stores.parse_address(f"{scheme}:{tmp_path / 'x'}")
                assert address.display == f"{kind}:{tmp_path / 'x'}"
            else:
                address = stores.parse_address(f"{scheme}://someone@127.0.0.1:5999/0")
                assert address.path is None
            assert address.kind == kind


@pytest.mark.parametrize(
    "text", ["memcached://cache:11211/0", "nosuch://host/x", "cassandra://h:9042/ks"]
)
def test_an_address_no_kind_handles_is_one_line_naming_the_kinds(cli, text):
    line = one_line_error(cli("list", "--store", text, code=ExitCode.USAGE))
    assert text.split("://")[0] + "://" in line
    assert f"(store kinds: {', '.join(sorted(stores.kinds()))})" in line
    assert {"json", "jsondir", "sqlite"} <= set(stores.kinds())


def test_bare_paths_are_recognised_by_the_kinds(tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "a.json").write_text("[]")
    (tmp_path / "noext").write_text('{"x": {}}')
    with sqlite3.connect(tmp_path / "headered") as conn:
        conn.execute("CREATE TABLE t (x)")
    (tmp_path / "php").mkdir()
    (tmp_path / "php" / "sess_abc").write_bytes(b"")
    (tmp_path / "php2" / "a" / "b").mkdir(parents=True)
    (tmp_path / "php2" / "a" / "b" / "sess_abc").write_bytes(b"")
    expected = {
        "php": "php",  # a folder of sess_* files
        "php2": "php",  # and one with save_path levels ("2;DIR")
        "folder": "jsondir",
        "a.json": "json",
        "later.json": "json",  # a suffix is enough: the file may come later
        "noext": "json",
        "headered": "sqlite",
        "later.sqlite3": "sqlite",
    }
    for name, kind in expected.items():
        address = stores.parse_address(str(tmp_path / name))
        assert address.kind == kind, name
    (tmp_path / "mystery").write_bytes(b"\x00\x01")
    with pytest.raises(SessionctlError) as caught:
        stores.parse_address(str(tmp_path / "mystery"))
    assert caught.value.code == ExitCode.STORE
    assert "json:, jsondir:, php: or sqlite:" in caught.value.one_line()
    assert stores.parse_address(str(tmp_path / "php2")).display == f"php:2;{tmp_path / 'php2'}"


def test_a_registered_kind_is_not_imported_until_used(monkeypatch):
    monkeypatch.setattr(stores, "KNOWN_KINDS", (*stores.KNOWN_KINDS, fakestore.ENTRY))
    importlib.sys.modules.pop("fakestore_lazy", None)
    lazy = ("lazy", ("lazy",), "fakestore_lazy", "Nothing", False)
    monkeypatch.setattr(stores, "KNOWN_KINDS", (*stores.KNOWN_KINDS, lazy))
    # Parsing a json: address or a bare path never touches a kind that takes neither.
    stores.parse_address("json:/tmp/x.json")
    stores.parse_address("/tmp/x.json")
    assert "fakestore_lazy" not in importlib.sys.modules
    with pytest.raises(ModuleNotFoundError):
        stores.parse_address("lazy://h/x")


# --- addresses -------------------------------------------------------------------------------


def test_two_spellings_of_one_store_have_one_identity(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.json").write_text("[]")
    (tmp_path / "link.json").symlink_to(tmp_path / "s.json")
    (tmp_path / "dir").mkdir()
    spellings = {
        "json": ["s.json", "json:s.json", f"json:{tmp_path}/s.json", "./link.json", "~/../x"],
        "jsondir": ["dir", "dir/", "jsondir:dir", f"jsondir:{tmp_path}/./dir"],
    }
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    spellings["json"][-1] = "~/../s.json"
    for kind, texts in spellings.items():
        addresses = [stores.parse_address(text) for text in texts]
        assert {a.kind for a in addresses} == {kind}
        assert len({a.identity for a in addresses}) == 1, [a.identity for a in addresses]
        assert addresses[0].identity == f"{kind}:{os.path.realpath(tmp_path / texts[0])}"
        # The display is absolute; a bare path is pinned bare (cron detects its kind again).
        assert all(Path(a.display.partition(":")[2]).is_absolute() for a in addresses)
        assert addresses[0].pinned == str(tmp_path / texts[0]).rstrip("/")


def test_a_sqlite_store_is_named_by_the_table_it_opened(tmp_path):
    store = build(tmp_path, "dj", "django", "sqlite", [], n=4)
    given = stores.parse_address(f"sqlite:{store.path}?table=DJANGO_SESSION")
    bare = stores.parse_address(str(store.path))
    assert given.param("table") == "DJANGO_SESSION" and bare.param("table") is None
    assert given.pinned == f"sqlite:{store.path}?table=DJANGO_SESSION"
    opened = []
    for address in (given, bare):
        with stores.open_store(address, stores.StoreSettings(busy_timeout=1)) as opened_store:
            opened.append(opened_store.address.identity)
            assert opened_store.table == "django_session"
    assert opened == [f"sqlite:{os.path.realpath(store.path)}?table=django_session"] * 2


def test_a_password_in_an_address_is_kept_apart(monkeypatch):
    monkeypatch.setattr(stores, "KNOWN_KINDS", (*stores.KNOWN_KINDS, fakestore.ENTRY))
    address = stores.parse_address(f"memo://alice:{CANARY}@Cache.Example:7000/web", name="web")
    assert address.secret == CANARY
    for shown in (address.display, address.identity, address.pinned, address.label):
        assert CANARY not in shown
    assert CANARY not in repr(address) and CANARY not in str(address)
    same = stores.parse_address("memo://bob@cache.example/web")
    assert same.identity == address.identity and same.display != address.display
    assert address == stores.parse_address("memo://alice:other@Cache.Example:7000/web", "web")


def test_a_crontab_line_pins_the_address_without_its_password(cli, tmp_path, monkeypatch):
    monkeypatch.setattr(stores, "KNOWN_KINDS", (*stores.KNOWN_KINDS, fakestore.ENTRY))
    monkeypatch.setenv("SESSIONCTL_CRON_D", str(tmp_path))
    _seed("memo://h/cron")
    line = cli(
        "schedule", "install", "m", "--every", "1h", "--system", "--dry-run", "--",
        "cleanup", "--expired", "--store", f"memo://alice:{CANARY}@H/cron", "--field", "id=id",
        "--field", "expires=expires",
    ).stdout  # fmt: skip
    assert " --store memo://alice@h:7000/cron " in line
    assert CANARY not in line


def test_a_relative_file_store_is_pinned_absolute(tmp_path, monkeypatch):
    from sessionctl.app.schedule import pin_address

    monkeypatch.chdir(tmp_path)
    assert pin_address("sqlite:x.db?table=t", []) == f"sqlite:{tmp_path}/x.db?table=t"
    assert pin_address("x.json", []) == f"{tmp_path}/x.json"
    assert pin_address("nothing-here-yet", []) == f"{tmp_path}/nothing-here-yet"
    assert pin_address("web", ["web"]) == "web"


# --- a kind from outside plugs in ------------------------------------------------------------


def _seed(identity: str, now: float | None = None) -> dict:
    now = now or time.time()
    records = {
        f"k{i}": {
            "id": f"s{i}",
            "user": f"u{i % 2}",
            "expires": to_iso(now + (-3600 if i % 2 else 3600)),
        }
        for i in range(6)
    }
    fakestore.SPACES[f"memo://h:7000/{identity.rsplit('/', 1)[1]}"] = records
    return records


@pytest.fixture
def memo(monkeypatch):
    monkeypatch.setattr(stores, "KNOWN_KINDS", (*stores.KNOWN_KINDS, fakestore.ENTRY))
    fakestore.SPACES.clear()
    fakestore.HELD.clear()
    fakestore.TAKEN.clear()
    _seed("memo://h/web")
    return ["--store", f"memo://alice:{CANARY}@h/web", "--field", "id=id", "--field",
            "expires=expires", "--field", "group=user"]  # fmt: skip


def test_a_kind_from_a_test_module_works_through_list_stats_cleanup(cli, memo, state_dir):
    listed = json.loads(cli("list", *memo, "-f", "json").stdout)
    assert sorted(s["id"] for s in listed) == [f"s{i}" for i in range(6)]
    stats = json.loads(cli("stats", *memo, "-f", "json").stdout)
    assert (stats["total"], stats["expired"], stats["active"]) == (6, 3, 3)
    assert stats["kind"] == "memo"
    dry = json.loads(cli("cleanup", *memo, "--expired", "--dry-run", "-f", "json").stdout)
    assert dry["selected"] == 3 and len(fakestore.SPACES["memo://h:7000/web"]) == 6
    assert fakestore.TAKEN == []  # a dry run takes no lock
    done = json.loads(cli("cleanup", *memo, "--expired", "-f", "json").stdout)
    assert (done["deleted"], done["failed"]) == (3, 0)
    assert sorted(fakestore.SPACES["memo://h:7000/web"]) == ["k0", "k2", "k4"]
    # The store's own cross-host lock was taken, on the store's identity, and let go.
    assert fakestore.TAKEN == ["memo://h:7000/web"] and not fakestore.HELD
    assert fakestore.PASSWORDS_SEEN[-1] == CANARY  # the store itself gets the password

    # The audit log, the archive and history name the store, never its password.
    audit = (state_dir / "audit.log").read_text()
    entry = json.loads(audit.splitlines()[-1])
    assert entry["store_id"] == "memo://h:7000/web"
    assert entry["store"] == "memo://alice@h:7000/web"
    archive = Path(done["archive"]) if done.get("archive") else None
    archives = list((state_dir / "archives").rglob("*.ndjson.gz"))
    assert len(archives) == 1 and (archive is None or archive == archives[0])
    archived = gzip.decompress(archives[0].read_bytes()).decode()
    assert '"memo://alice@h:7000/web"' in archived
    history = cli("history", "--store", "memo://carol@H/web", "-f", "json").stdout
    assert json.loads(history)["totals"]["cleaned"] == 3
    explained = cli("list", *memo, "--explain")
    for text in (audit, archived, history, explained.stdout, explained.stderr):
        assert CANARY not in text
    assert "store memo://alice@h:7000/web (memo)" in explained.stderr


def test_a_fake_kinds_cross_host_lock_keeps_a_second_run_out(cli, memo):
    fakestore.HELD.add("memo://h:7000/web")
    result = cli("cleanup", *memo, "--expired", code=ExitCode.BUSY)
    assert "another cleanup" in one_line_error(result)
    assert CANARY not in result.stderr
    assert len(fakestore.SPACES["memo://h:7000/web"]) == 6


def test_history_of_runs_logged_before_addresses_still_matches(cli, tmp_path, state_dir):
    """Entries written before this change carry `store` (the label) and `store_id` (kind,
    real path, the table opened): they still match the store, however it is named now."""
    store = build(tmp_path, "dj", "django", "sqlite", [], n=4)
    real = os.path.realpath(store.path)
    state_dir.mkdir()
    old = {
        "time": "2026-01-01T00:00:00Z", "command": "cleanup", "dry_run": False, "deleted": 7,
        "failed": 0, "outcome": "ok", "store": f"sqlite:{store.path}",
        "store_id": f"sqlite:{real}?table=django_session",
    }  # fmt: skip
    (state_dir / "audit.log").write_text(json.dumps(old) + "\n")
    for spelled in (str(store.path), f"sqlite:{store.path}?table=django_session"):
        report = json.loads(cli("history", "--store", spelled, "-f", "json").stdout)
        assert report["totals"]["cleaned"] == 7, spelled
    stats = json.loads(cli("stats", "--store", store.path, "-f", "json").stdout)
    assert stats["total_cleaned"] == 7
    gone = tmp_path / "gone"  # a store that is no more still has its history
    old["store_id"] = f"jsondir:{os.path.realpath(gone)}"
    (state_dir / "audit.log").write_text(json.dumps(old) + "\n")
    report = json.loads(cli("history", "--store", gone, "-f", "json").stdout)
    assert report["totals"]["cleaned"] == 7
    config = tmp_path / "c.toml"
    config.write_text('[stores.web]\npreset = "django"\n')
    old["store"] = "web"
    (state_dir / "audit.log").write_text(json.dumps(old) + "\n")
    report = json.loads(cli("--config", config, "history", "--store", "web", "-f", "json").stdout)
    assert report["totals"]["cleaned"] == 7


# --- presets by shape ------------------------------------------------------------------------


def test_presets_are_matched_by_shape_not_kind():
    columns = ["session_key", "session_data", "expire_date"]
    assert detect_preset(columns, TABLE, "django_session").name == "django"
    assert detect_preset(columns, DOCUMENT) is None  # no document preset has that shape
    fields = ["session_id", "cdp_url", "created_at", "last_accessed", "browser_type"]
    assert detect_preset(fields, DOCUMENT).name == "raptor"


# --- nothing outside stores/ asks which kind it has --------------------------------------------


def _outside_stores():
    for path in sorted(SRC.rglob("*.py")):
        if "stores" not in path.relative_to(SRC).parts:
            yield path, ast.parse(path.read_text(), str(path))


def _probes(tree: ast.AST, where: str) -> list[str]:
    """getattr/hasattr on a store, a store's or address's `.kind` compared, a kind's name
    compared to something called kind, isinstance against a Store class."""
    kinds = set(stores.kinds())
    found = []
    for node in ast.walk(tree):
        text = ast.unparse(node) if isinstance(node, (ast.Call, ast.Compare)) else ""
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            first = ast.unparse(node.args[0]).lower() if node.args else ""
            if node.func.id in ("getattr", "hasattr") and "store" in first:
                found.append(f"{where}:{node.lineno}: {text}")
            if node.func.id == "isinstance" and "Store" in ast.unparse(node.args[-1]):
                found.append(f"{where}:{node.lineno}: {text}")
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            store_kind = any(
                isinstance(side, ast.Attribute)
                and side.attr == "kind"
                and any(word in ast.unparse(side.value).lower() for word in ("store", "address"))
                for side in sides
            )
            a_kind_name = any(
                isinstance(inner, ast.Constant) and inner.value in kinds
                for side in sides
                for inner in ast.walk(side)
            )
            if store_kind or (a_kind_name and "kind" in text):
                found.append(f"{where}:{node.lineno}: {text}")
    return found


def test_nothing_outside_stores_probes_a_store_or_compares_its_kind():
    found = []
    for path, tree in _outside_stores():
        found += _probes(tree, str(path.relative_to(SRC)))
    assert found == []


def test_the_probe_check_would_catch_a_probe():
    probes = [
        'x = getattr(ctx.store, "count", None)',
        "if hasattr(store, 'pushdown'): pass",
        'if ctx.address.kind == "sqlite": pass',
        'if store.kind != "json": pass',
        'if kind in ("sqlite",): pass',
        "if isinstance(ctx.store, SqliteStore): pass",
    ]
    for text in probes:
        assert _probes(ast.parse(text), "x"), text
    assert _probes(ast.parse('if kind == "duration": pass'), "x") == []


def test_the_base_store_declares_every_capability_with_a_default():
    for name in (
        "count", "fields", "indexed_columns", "pushdown", "cross_host_lock", "lock_beside",
        "recover", "prepare_restore", "delete_triggers", "unique_fields", "close",
    ):  # fmt: skip
        assert callable(getattr(base.Store, name)), name
    assert base.Store.shape == DOCUMENT and base.Store.table is None
    assert base.Store.columns is None and base.Store.natural_batch == 1
    assert base.StoreSettings().busy_timeout == 5.0


def test_store_settings_come_from_the_settings_of_their_names():
    settings = base.StoreSettings.from_settings({"busy_timeout": 0.25, "max_age": 60})
    assert settings == base.StoreSettings(busy_timeout=0.25)
    assert base.StoreSettings.from_settings({"busy_timeout": None}).busy_timeout == 5.0


def test_the_busy_timeout_setting_reaches_the_store(tmp_path):
    from sessionctl.app.config import Config
    from sessionctl.app.context import StoreRequest, open_context

    store = build(tmp_path, "dj", "django", "sqlite", [], n=4)
    request = StoreRequest(store=str(store.path), overrides={"busy_timeout": 0.25})
    ctx = open_context(Config(path=None, chosen_by=None), request, time.time())
    try:
        assert ctx.store.settings.busy_timeout == 0.25
    finally:
        ctx.close()
