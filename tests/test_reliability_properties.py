"""Bad input, generated (issue 7): stores and records no application should have written.

Hypothesis generates JSON files, folders of JSON files and SQLite databases full of wrong types,
huge, negative, NaN and far-future timestamps, deep nesting, non-UTF-8 bytes, a BOM, duplicate
ids, empty and truncated files, files that are not SQLite at all, tables without the mapped
columns, binary garbage; and runs one command on each (list, inspect, validate, stats, cleanup
with every mode). Every case must end in:

- an exit status from the documented set 0-5 (never 70, an internal error), no traceback, every
  line on stderr a `sessionctl: ` line, exactly one when the command failed;
- for a cleanup: every session that was not selected still there, unchanged (byte for byte in a
  folder or a table; as the same JSON value in a rewritten JSON file), every removed one
  selected and in the archive exactly; a store the cleanup refused is untouched to the byte.

Runs are derandomized (profile `sessionctl`): the same cases every time, in CI and locally.
SESSIONCTL_HYPOTHESIS=explore draws new random cases (5x as many) to look for more.
"""

from __future__ import annotations

import base64
import gzip
import json
import math
import os
import shutil
import sqlite3
import stat
import tempfile
from collections import Counter
from pathlib import Path

import pytest
import typer.testing
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from reliability import Stopwatch, record_figures
from sessionctl.app.audit import read_archive
from sessionctl.cli.app import app
from sessionctl.domain.mapping import PRESETS
from sessionctl.stores.base import canonical_bytes

settings.register_profile(
    "sessionctl",
    derandomize=True,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)
settings.register_profile(
    "sessionctl-explore", settings.get_profile("sessionctl"), derandomize=False
)
EXPLORE = os.environ.get("SESSIONCTL_HYPOTHESIS") == "explore"
PROFILE = settings.get_profile("sessionctl-explore" if EXPLORE else "sessionctl")
SCALE = float(os.environ.get("SESSIONCTL_HYPOTHESIS_SCALE", 5 if EXPLORE else 1))

#: Cases per test; their sum is what the README quotes (at least 10,000 run in CI).
CASES = {"json": 3000, "folder": 1300, "sqlite": 2300, "sqlite_files": 3400}
DOCUMENTED = {0, 1, 2, 3, 4, 5}
NOW = "2026-06-01T12:00:00Z"
NOW_EPOCH = 1780315200.0


def examples(name: str) -> settings:
    return settings(PROFILE, max_examples=max(1, int(CASES[name] * SCALE)))


# --- running the command line, fast --------------------------------------------------------------


@pytest.fixture(scope="module")
def invoke():
    """The CLI in-process, its Click command built once (Typer's runner builds it each time)."""
    command = typer.main.get_command(app)
    runner = typer.testing.CliRunner()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(typer.testing, "_get_command", lambda _app: command)

        def run(args: list):
            return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)

        yield run


def check_contract(result, args) -> None:
    """Documented exit status, no traceback, diagnostics as `sessionctl:` lines."""
    shown = f"args={args!r}\nexit={result.exit_code}\nstderr={result.stderr!r}"
    assert result.exit_code in DOCUMENTED, shown
    assert "Traceback" not in result.stderr + result.stdout, shown
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert all(line.startswith("sessionctl: ") for line in lines), shown
    if result.exit_code in (2, 3, 4):
        assert len(lines) == 1, shown


def parsed_output(result, args):
    wants_json = "-f" in args and args[args.index("-f") + 1] == "json"
    if wants_json and result.stdout.strip():  # a cleanup reports even when it stopped early
        return json.loads(result.stdout)
    return None


# --- values no application should write -----------------------------------------------------------

ID_FIELDS = ["session_id", "id", "sessionId", "sid", "session_key"]
TIME_FIELDS = ["created_at", "last_used", "expires", "expire_date", "createdAt", "last_accessed"]
OTHER_FIELDS = ["user_id", "workspace_name", "auth_token", "data", "browser_type", "cdp_url"]
FIELDS = ID_FIELDS + TIME_FIELDS + OTHER_FIELDS

odd_text = st.text(max_size=12) | st.sampled_from(
    ["", " ", "\x00", "null", "NaN", "'; DROP TABLE sessions; --", "$(touch x)", "é\u202e", "\n"]
)
timestamps = st.one_of(
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(
        [0, -1, 1e11, 1e14, 1e17, 253402300799, 253402300800, 2**63, -(2**63), NOW_EPOCH]
    ),
    st.datetimes().map(lambda d: d.isoformat()),
    st.sampled_from(
        [
            "0000-00-00 00:00:00",
            "9999-12-31T23:59:59Z",
            "2024-02-30T00:00:00",
            "2026-06-01T11:00:00Z",
            "1e400",
            "-1",
            "inf",
            "yesterday",
            "2026-13-01",
            "+275760-09-13T00:00:00Z",
        ]
    ),
    # Ambiguous dates: ISO 8601 basic (a date, not epoch seconds), 8 digits that are no date,
    # and numbers that land before 2000 as seconds, milliseconds or microseconds.
    st.sampled_from(
        ["20261231", "20261231T235959Z", "20261301", "19991231", "946684799", 20261231, 946684799]
    ),
    st.sampled_from([946684799999, 946684799999999, 10**400, -(10**400)]),
    st.dates().map(lambda d: f"{d.year:04d}{d.month:02d}{d.day:02d}"),
    odd_text,
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    odd_text,
)
nested = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(odd_text, inner, max_size=3),
    max_leaves=4,
)
ids = st.one_of(st.sampled_from(["a", "b", "dup", "dup", "1"]), odd_text, st.integers(), nested)


@st.composite
def records(draw) -> object:
    """A session record: mostly a dict with session-ish fields of any type, sometimes not one."""
    if draw(st.integers(0, 9)) == 0:
        return draw(scalars | st.lists(scalars, max_size=3))
    record = {}
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=5, unique=True)):
        if name in ID_FIELDS:
            record[name] = draw(ids)
        elif name in TIME_FIELDS:
            record[name] = draw(timestamps)
        else:
            record[name] = draw(nested)
    if draw(st.integers(0, 3)) == 0:
        record[draw(odd_text)] = draw(nested)
    return record


@st.composite
def json_documents(draw) -> object:
    items = draw(st.lists(records(), max_size=6))
    shape = draw(st.sampled_from(["array", "keyed", "wrapped", "wrapped-keyed", "scalar"]))
    if shape == "array":
        return items
    if shape == "keyed":
        return {draw(odd_text | st.sampled_from(["a", "b"])): item for item in items}
    if shape == "wrapped":
        return {"version": draw(scalars), "sessions": items}
    if shape == "wrapped-keyed":
        return {"sessions": {f"k{i}": item for i, item in enumerate(items)}}
    return draw(nested)


def _deep(depth: int, wrap: bool) -> bytes:
    inner = b"[" * depth + b"]" * depth
    if wrap:
        return b'[{"session_id": "deep", "last_used": 1, "data": ' + inner + b"}]"
    return inner


@st.composite
def json_bytes(draw) -> bytes:
    """A JSON store's bytes: a generated document, then perhaps damaged the ways files are."""
    document = draw(json_documents())
    indent = draw(st.sampled_from([None, 2, "\t"]))
    text = json.dumps(document, indent=indent, ensure_ascii=draw(st.booleans()))
    data = text.encode("utf-8")
    damage = draw(
        st.sampled_from(
            ["none"] * 6
            + ["bom", "truncate", "bad-byte", "empty", "garbage", "deep", "dup-keys", "digits"]
            + ["huge", "trailing"]
        )
    )
    if damage == "bom":
        data = b"\xef\xbb\xbf" + data
    elif damage == "truncate":
        data = data[: draw(st.integers(0, max(0, len(data) - 1)))]
    elif damage == "bad-byte":
        at = draw(st.integers(0, len(data)))
        data = (
            data[:at]
            + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00"]))
            + data[at:]
        )
    elif damage == "empty":
        data = draw(st.sampled_from([b"", b" \n", b"\xef\xbb\xbf"]))
    elif damage == "garbage":
        data = draw(st.binary(max_size=300))
    elif damage == "deep":
        data = _deep(
            draw(st.sampled_from([50, 500, 990, 1100, 5000, 100_000])), draw(st.booleans())
        )
    elif damage == "dup-keys":
        one, two = (json.dumps(draw(records())) for _ in range(2))
        data = draw(
            st.sampled_from(
                [
                    f'{{"x": {one}, "x": {two}}}',
                    f'[{{"session_id": "a", "session_id": "b", "last_used": {NOW_EPOCH}}}]',
                    f'{{"sessions": [{one}], "sessions": [{two}]}}',
                ]
            )
        ).encode()
    elif damage == "digits":
        digits = "9" * draw(st.sampled_from([20, 400, 4300, 5000]))
        data = f'[{{"session_id": "big", "last_used": {digits}, "n": -{digits}}}]'.encode()
    elif damage == "huge":
        size = draw(st.sampled_from([10_000, 200_000]))
        data = json.dumps(
            [{"session_id": "huge", "last_used": NOW_EPOCH, "data": "x" * size}] + [document]
        ).encode()
    elif damage == "trailing":
        data = data + draw(st.sampled_from([b"\x00", b" garbage", b"]", b"\n\n"]))
    return data


# --- commands ---------------------------------------------------------------------------------------

CLEANUPS = [
    ["--invalid"],
    ["--expired", "--idle-timeout", "1h"],
    ["--expired", "--max-age", "1d"],
    ["--expired"],
    ["--expired", "--invalid", "--idle-timeout", "30m"],
    ["--all", "--yes"],
    ["--max-count", "2"],
    ["--max-per-group", "1"],
    ["--max-size", "300"],
    ["--invalid", "--dry-run"],
]
READS = [
    ["list", "-f", "json"],
    ["list"],
    ["list", "-f", "csv", "--sort", "idle"],
    ["list", "--invalid", "-f", "ndjson", "--fields", "id,data,auth_token,size"],
    ["validate", "-f", "json"],
    ["validate"],
    ["stats", "-f", "json"],
    ["stats"],
    ["stats", "-f", "prometheus"],
    ["inspect"],
]


@st.composite
def commands(draw, id_pool: list) -> list:
    extra = []
    if draw(st.integers(0, 3)) == 0:
        extra += ["--preset", draw(st.sampled_from(sorted(PRESETS)))]
    if draw(st.integers(0, 3)) == 0:
        role = draw(st.sampled_from(["id", "created", "accessed", "expires", "group"]))
        extra += ["--field", f"{role}={draw(st.sampled_from(FIELDS + ['missing', 'a.b.c', '']))}"]
    extra += ["--now", NOW]
    if draw(st.integers(0, 2)) == 0:
        command = draw(st.sampled_from(READS))
        if command == ["inspect"]:
            wanted = draw(st.sampled_from(id_pool) if id_pool else odd_text)
            # After `--`: an id may start with a dash.
            return ["inspect", "-f", "json", *extra, "--", str(wanted) or "x"]
        return command + extra
    return ["cleanup", *draw(st.sampled_from(CLEANUPS)), "-f", "json", *extra]


def _id_pool(document) -> list:
    pool = []
    container = document
    if isinstance(document, dict) and "sessions" in document:
        container = document["sessions"]
    items = container.values() if isinstance(container, dict) else container
    if isinstance(container, dict):
        pool += list(container)[:3]
    if isinstance(items, (list, type({}.values()))):
        for item in list(items)[:5]:
            if isinstance(item, dict):
                pool += [str(v) for k, v in item.items() if k in ID_FIELDS][:1]
    return [p for p in pool if "\x00" not in p and p.strip()] or ["a"]


# --- checking a cleanup ---------------------------------------------------------------------------


def _canonical(value) -> str:
    """JSON values compared as JSON: NaN equals NaN, key order ignored."""
    return json.dumps(value, sort_keys=True, default=repr)


def _archive_entries(result: dict) -> list[dict]:
    if not result.get("archive"):
        return []
    return read_archive(Path(result["archive"])).entries


def _selected_keys(result: dict) -> list:
    assert not result["sessions_omitted"]
    return [s["key"] for s in result["sessions"]]


def _json_container(raw: bytes, value):
    """The wrapper key and the container of the sessions, as sessionctl reads `raw`."""
    from sessionctl.stores.jsonfile import Document

    wrapper = Document(raw, Path("store.json")).wrapper_key
    return wrapper, (value[wrapper] if wrapper is not None else value)


def check_json_cleanup(before: bytes, after: bytes, result: dict | None, tally: Counter) -> None:
    if result is None:
        assert after == before, "a refused cleanup changed the file"
        return
    if result["deleted"] == 0:
        assert after == before, "nothing was removed, yet the file changed"
        return
    old = json.loads(before.decode("utf-8-sig"))
    new = json.loads(after.decode("utf-8-sig"))
    wrapper, old_items = _json_container(before, old)
    assert type(new) is type(old), "the document changed type"
    new_items = new[wrapper] if wrapper is not None else new
    if wrapper is not None:
        rest_old = {k: v for k, v in old.items() if k != wrapper}
        rest_new = {k: v for k, v in new.items() if k != wrapper}
        assert _canonical(rest_old) == _canonical(rest_new), "the wrapper's other keys changed"
    selected = set(map(str, _selected_keys(result)))
    removed = []
    if isinstance(old_items, list):
        kept = [item for i, item in enumerate(old_items) if str(i) not in selected]
        removed = [(str(i), item) for i, item in enumerate(old_items) if str(i) in selected]
        assert len(new_items) == len(old_items) - result["deleted"]
        assert _canonical(new_items) == _canonical(kept), "an unselected record changed"
    else:
        kept = {k: v for k, v in old_items.items() if str(k) not in selected}
        removed = [(str(k), v) for k, v in old_items.items() if str(k) in selected]
        # A key written twice loses only the member parsers read; the earlier one stays.
        back = {k for k in new_items if str(k) in selected}
        assert back <= _duplicated_keys(before), "a removed session is still there"
        new_items = {k: v for k, v in new_items.items() if k not in back}
        assert _canonical(new_items) == _canonical(kept), "an unselected record changed"
    _check_archived(result, dict(removed), tally)


def _duplicated_keys(raw: bytes) -> set:
    """Keys written more than once in some object of the document."""
    found: set = set()

    def pairs(items):
        names = [name for name, _ in items]
        found.update(name for name in names if names.count(name) > 1)
        return dict(items)

    json.loads(raw.decode("utf-8-sig"), object_pairs_hook=pairs)
    return found


def _check_archived(result: dict, removed: dict, tally: Counter) -> None:
    """Every removed record is in the archive, exactly."""
    entries = {str(e["key"]): e for e in _archive_entries(result)}
    assert set(entries) == set(removed), "archive and removals differ"
    for key, original in removed.items():
        entry = entries[key]
        if entry.get("raw_b64") is not None:
            raw = base64.b64decode(entry["raw_b64"])
            assert (
                raw in (original, canonical_bytes(original))
                or (isinstance(original, bytes) and raw == original)
                or _canonical(json.loads(raw)) == _canonical(original)  # the element's own text
            )
        elif entry.get("raw_json") is not None:
            # The record's original text, kept when its value cannot say it all (1e400).
            text = entry["raw_json"]
            if isinstance(original, bytes):
                assert text.encode() == original
            else:
                assert _canonical(json.loads(text)) == _canonical(original)
        elif isinstance(original, bytes):
            assert _canonical(entry["record"]) == _canonical(json.loads(original))
        else:
            assert _canonical(entry["record"]) == _canonical(original)
        tally["archived records checked"] += 1


def _outcome(result, output, tally: Counter, args) -> None:
    tally[f"exit {result.exit_code}"] += 1
    tally["cases"] += 1
    if args[0] == "cleanup" and output is not None:
        tally["cleanups that removed sessions"] += bool(output["deleted"])
        tally["sessions removed"] += output["deleted"]
    if isinstance(output, list):
        tally["invalid verdicts"] += sum(1 for v in output if v.get("status") == "invalid")
    elif isinstance(output, dict) and "invalid" in output and isinstance(output["invalid"], int):
        tally["invalid verdicts"] += output["invalid"]


# --- the tests ------------------------------------------------------------------------------------


@pytest.fixture
def scratch(tmp_path, monkeypatch, request):
    """A fresh folder for each example's store (one path, reused: examples run one by one).

    On a memory file system when there is one: fsync, which sessionctl calls as it must, costs
    nothing there, and ten thousand cases fit in CI's time. The state folder goes with it.
    """
    base = tmp_path
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        base = Path(tempfile.mkdtemp(prefix="sessionctl-properties-", dir="/dev/shm"))
        request.addfinalizer(lambda: shutil.rmtree(base, ignore_errors=True))
    state = base / "state"
    monkeypatch.setenv("SESSIONCTL_STATE_DIR", str(state))
    folder = base / "case"

    def fresh() -> Path:
        for old in (folder, state / "archives"):
            if old.exists():
                shutil.rmtree(old)
        folder.mkdir()
        return folder

    return fresh


def test_generated_json_file_stores(invoke, scratch, tmp_path_factory):
    from hypothesis import given

    tally: Counter = Counter()
    clock = Stopwatch()

    @examples("json")
    @given(data=st.data())
    def case(data):
        raw = data.draw(json_bytes(), label="store bytes")
        try:
            document = json.loads(raw.decode("utf-8-sig"))
        except (ValueError, RecursionError):
            document = None
        args = data.draw(commands(_id_pool(document)), label="command")
        path = scratch() / "sessions.json"
        path.write_bytes(raw)
        result = invoke([args[0], "-s", f"json:{path}", *args[1:]])
        check_contract(result, args)
        output = parsed_output(result, args)
        after = path.read_bytes()
        if args[0] != "cleanup" or "--dry-run" in args:
            assert after == raw, "a read changed the store"
        else:
            check_json_cleanup(raw, after, output, tally)
        _outcome(result, output, tally, args)

    case()
    assert tally["cases"] >= int(CASES["json"] * SCALE), tally
    record_figures(tmp_path_factory, "properties-json", {**tally, "seconds": clock.seconds})


# --- folders of JSON files ---------------------------------------------------------------------------

file_names = st.one_of(
    st.sampled_from(["a", "b", "dup", "with space", "-rf", "é", "a\nb", "$(x)", "`y`", "q'\""]),
    st.text(
        alphabet=st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",)),
        min_size=1,
        max_size=16,
    ),
).filter(lambda n: n not in (".", "..") and len(n.encode()) < 200)


@st.composite
def folder_files(draw) -> dict:
    files = {}
    for name in draw(st.lists(file_names, max_size=5, unique=True)):
        suffix = draw(st.sampled_from([".json"] * 5 + ["", ".txt", ".json.tmp"]))
        hidden = "." if draw(st.integers(0, 9)) == 0 else ""
        content = draw(json_bytes()) if draw(st.integers(0, 2)) == 0 else None
        if content is None:
            record = draw(records())
            content = json.dumps(record).encode()
        files[hidden + name + suffix] = content
    return files


def test_generated_folder_stores(invoke, scratch, tmp_path, tmp_path_factory):
    from hypothesis import given

    tally: Counter = Counter()
    clock = Stopwatch()
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps({"session_id": "outside", "last_used": 1}))
    outside_bytes = outside.read_bytes()

    @examples("folder")
    @given(data=st.data())
    def case(data):
        files = data.draw(folder_files(), label="files")
        pool = [n.removesuffix(".json") for n in files][:4]
        args = data.draw(commands(pool), label="command")
        folder = scratch() / "sessions"
        folder.mkdir()
        for name, content in files.items():
            (folder / name).write_bytes(content)
        extras = data.draw(st.sets(st.sampled_from(sorted(ODD_ENTRIES))), label="odd entries")
        extras = {name for name in extras if not os.path.lexists(folder / name)}
        for name in extras:
            ODD_ENTRIES[name](folder / name, outside, tmp_path)
        before = {p.name: p.read_bytes() for p in folder.iterdir() if _regular(p)}
        result = invoke([args[0], "-s", f"jsondir:{folder}", *args[1:]])
        check_contract(result, args)
        output = parsed_output(result, args)
        after = {p.name: p.read_bytes() for p in folder.iterdir() if _regular(p)}
        assert outside.read_bytes() == outside_bytes
        for name in extras:
            assert os.path.lexists(folder / name) and not _regular(folder / name), name
        if args[0] != "cleanup" or "--dry-run" in args or output is None:
            assert after == before, "the folder changed"
        else:
            selected = set(map(str, _selected_keys(output)))
            gone = set(before) - set(after)
            assert gone <= selected, "a file that was not selected is gone"
            assert len(gone) == output["deleted"]
            for name in set(after):
                assert after[name] == before[name], "a file changed"
            assert not [n for n in os.listdir(folder) if n.startswith(".sessionctl-removing.")]
            _check_archived(output, {name: before[name] for name in gone}, tally)
        _outcome(result, output, tally, args)

    case()
    assert tally["cases"] >= int(CASES["folder"] * SCALE), tally
    record_figures(tmp_path_factory, "properties-folder", {**tally, "seconds": clock.seconds})


#: Entries of a folder store that are not session files: never read, never removed.
ODD_ENTRIES = {
    "~link to a file~.json": lambda path, outside, _: path.symlink_to(outside),
    "~link to a folder~.json": lambda path, _, folder: path.symlink_to(folder),
    "~dangling~.json": lambda path, _, folder: path.symlink_to(folder / "nowhere"),
    "~fifo~.json": lambda path, *_: os.mkfifo(path),
    "~subfolder~.json": lambda path, *_: path.mkdir(),
}


def _regular(path: Path) -> bool:
    return stat.S_ISREG(path.lstat().st_mode)


# --- SQLite ----------------------------------------------------------------------------------------

COLUMNS = FIELDS + ["expired", "sess", "EXPIRY_TIME", "odd name", 'q"uote', "Session_ID"]
TYPES = ["TEXT", "INTEGER", "REAL", "BLOB", "", "DATETIME", "NUMERIC", "varchar(40)"]


class BadText(bytes):
    """Bytes stored as TEXT: not valid UTF-8, which an application in C may well write."""


sql_values = st.one_of(
    st.none(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    timestamps.filter(lambda v: not isinstance(v, int) or -(2**63) <= v < 2**63),
    odd_text,
    st.binary(max_size=20),
    st.binary(min_size=1, max_size=12).map(lambda b: BadText(b + b"\xff")),
)


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@st.composite
def sqlite_tables(draw) -> dict:
    table = draw(st.sampled_from(["sessions", "django_session", "user sessions", 'odd"t', "S"]))
    columns = draw(st.lists(st.sampled_from(COLUMNS), min_size=1, max_size=6, unique_by=str.lower))
    types = [draw(st.sampled_from(TYPES)) for _ in columns]
    primary = draw(st.sampled_from([None, *columns]))
    without_rowid = primary is not None and draw(st.integers(0, 3)) == 0
    rows = draw(st.lists(st.tuples(*[sql_values for _ in columns]), max_size=8))
    return {
        "table": table,
        "columns": columns,
        "types": types,
        "primary": primary,
        "without_rowid": without_rowid,
        "rows": rows,
        "journal": draw(st.sampled_from(["delete", "wal"])),
        "second": draw(st.integers(0, 5)) == 0,
        "address": draw(st.sampled_from(["path", "table", "table-wrong"])),
    }


def _build_sqlite(path: Path, spec: dict) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA journal_mode = {spec['journal']}")
    conn.execute("PRAGMA synchronous = OFF")
    parts = []
    for name, kind in zip(spec["columns"], spec["types"]):
        primary = " PRIMARY KEY" if name == spec["primary"] else ""
        parts.append(f"{_q(name)} {kind}{primary}".strip())
    tail = " WITHOUT ROWID" if spec["without_rowid"] else ""
    conn.execute(f"CREATE TABLE {_q(spec['table'])} ({', '.join(parts)}){tail}")
    if spec["second"]:
        conn.execute('CREATE TABLE "other_sessions" (session_id TEXT, expires INTEGER)')
        conn.execute("INSERT INTO other_sessions VALUES ('x', 1)")
    for row in spec["rows"]:
        marks = ", ".join("CAST(? AS TEXT)" if isinstance(v, BadText) else "?" for v in row)
        values = [bytes(v) if isinstance(v, BadText) else v for v in row]
        try:
            conn.execute(f"INSERT INTO {_q(spec['table'])} VALUES ({marks})", values)
        except sqlite3.IntegrityError:
            pass  # a duplicate or a text in an INTEGER PRIMARY KEY: the application's problem
    conn.close()


def _dump(path: Path) -> dict:
    """Table -> key -> row, rows keyed the way sessionctl addresses them (rowid, or the
    primary key of a table without one)."""
    conn = sqlite3.connect(path)
    conn.text_factory = bytes
    try:
        tables = {}
        for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
            name = name.decode()
            info = conn.execute(f"PRAGMA table_info({_q(name)})").fetchall()
            try:
                conn.execute(f"SELECT rowid FROM {_q(name)} LIMIT 1").fetchall()
                key = "rowid"
            except sqlite3.OperationalError:
                key = _q(next(row[1].decode() for row in info if row[5]))
            rows = conn.execute(f"SELECT {key}, * FROM {_q(name)}").fetchall()
            tables[name] = {_norm(row[0]): tuple(map(_norm, row[1:])) for row in rows}
        return tables
    finally:
        conn.close()


def _norm(value):
    """Rows and keys, as read directly or as sessionctl reports them (json_safe), alike."""
    if isinstance(value, dict) and set(value) == {"$b64"}:
        value = base64.b64decode(value["$b64"])
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return value
    return value


def test_generated_sqlite_tables(invoke, scratch, tmp_path_factory):
    from hypothesis import given

    tally: Counter = Counter()
    clock = Stopwatch()

    @examples("sqlite")
    @given(data=st.data())
    def case(data):
        spec = data.draw(sqlite_tables(), label="table")
        pool = [str(v) for row in spec["rows"][:3] for v in row[:1] if v is not None]
        args = data.draw(commands(pool), label="command")
        path = scratch() / "app.db"
        _build_sqlite(path, spec)
        address = str(path)
        if spec["address"] == "table":
            address = f"sqlite:{path}?table={spec['table']}"
        elif spec["address"] == "table-wrong":
            address = f"sqlite:{path}?table=nope"
        before = _dump(path)
        result = invoke([args[0], "-s", address, *args[1:]])
        check_contract(result, args)
        output = parsed_output(result, args)
        after = _dump(path)
        conn = sqlite3.connect(path)
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        conn.close()
        if args[0] != "cleanup" or "--dry-run" in args or output is None or not output["deleted"]:
            assert after == before, "the database changed"
        else:
            archive = read_archive(Path(output["archive"]))
            table = archive.header["table"]
            for other in set(before) - {table}:
                assert after[other] == before[other], f"table {other} changed"
            selected = {_norm(k) for k in _selected_keys(output)}
            gone = set(before[table]) - set(after[table])
            assert gone <= selected, "a row that was not selected is gone"
            assert len(gone) == output["deleted"]
            for key, row in after[table].items():
                assert row == before[table][key], "a row changed"
            assert gone == {_norm(e["key"]) for e in archive.entries}
            tally["archived records checked"] += len(gone)
        _outcome(result, output, tally, args)

    case()
    assert tally["cases"] >= int(CASES["sqlite"] * SCALE), tally
    record_figures(tmp_path_factory, "properties-sqlite", {**tally, "seconds": clock.seconds})


@st.composite
def sqlite_files(draw) -> bytes:
    """Files with a SQLite name that are not (quite) SQLite databases."""
    kind = draw(
        st.sampled_from(
            ["empty", "garbage", "header-only", "truncated", "scrambled", "text", "json", "zeros"]
        )
    )
    if kind == "empty":
        return b""
    if kind == "garbage":
        return draw(st.binary(min_size=1, max_size=2000))
    if kind == "header-only":
        return b"SQLite format 3\x00" + draw(st.binary(max_size=200))
    if kind == "text":
        return draw(odd_text).encode("utf-8") or b"x"
    if kind == "json":
        return b'[{"session_id": "a"}]'
    if kind == "zeros":
        return b"\x00" * draw(st.sampled_from([1, 100, 4096]))
    # A real database, then cut short or with some bytes overwritten.
    return b"\x01" + kind.encode()  # replaced by the test with a real database


def test_generated_sqlite_files_that_are_not_databases(invoke, scratch, tmp_path, tmp_path_factory):
    from hypothesis import given

    tally: Counter = Counter()
    clock = Stopwatch()
    template = tmp_path / "template.db"
    _build_sqlite(
        template,
        {
            "table": "django_session",
            "columns": ["session_key", "session_data", "expire_date"],
            "types": ["TEXT", "TEXT", "DATETIME"],
            "primary": "session_key",
            "without_rowid": False,
            "rows": [(f"k{i}", "x" * 300, "2020-01-01 00:00:00") for i in range(60)],
            "journal": "delete",
            "second": False,
        },
    )
    real = template.read_bytes()

    @examples("sqlite_files")
    @given(data=st.data())
    def case(data):
        content = data.draw(sqlite_files(), label="file")
        if content in (b"\x01truncated", b"\x01scrambled"):
            if content == b"\x01truncated":
                content = real[: data.draw(st.integers(16, len(real) - 1))]
            else:
                at = data.draw(st.integers(16, len(real) - 64))
                noise = data.draw(st.binary(min_size=1, max_size=64))
                content = real[:at] + noise + real[at + len(noise) :]
        suffix = data.draw(st.sampled_from([".db", ".sqlite", ".sqlite3"]))
        args = data.draw(commands(["k1", "k2"]), label="command")
        path = scratch() / f"app{suffix}"
        path.write_bytes(content)
        result = invoke([args[0], "-s", path, *args[1:]])
        check_contract(result, args)
        output = parsed_output(result, args)
        if args[0] != "cleanup" or "--dry-run" in args or output is None or not output["deleted"]:
            assert path.read_bytes() == content, "the file changed"
        else:
            tally["damaged databases cleaned"] += 1
        _outcome(result, output, tally, args)

    case()
    assert tally["cases"] >= int(CASES["sqlite_files"] * SCALE), tally
    record_figures(tmp_path_factory, "properties-sqlite-files", {**tally, "seconds": clock.seconds})


# --- what the generated cases found, kept as plain examples ----------------------------------------

DEEP = '{"session_id": "deep", "last_used": 1, "data": ' + "[" * 600 + "]" * 600 + "}"


@pytest.mark.parametrize(
    "raw,args,code",
    [
        # A number Python refuses to read (more than 4300 digits): a clear error, not a crash.
        ('[{"session_id": "a", "last_used": ' + "9" * 5000 + "}]", ["list"], 3),
        # An empty wrapped store is a store without sessions, not one session called "sessions".
        ('{"sessions": {}}', ["cleanup", "--all", "--yes"], 0),
        # What is left after removing one looks like no known shape: still reported as removed.
        ('{"1": {}, "": null, "0": {}}', ["cleanup", "--max-count", "2"], 0),
    ],
)
def test_cases_hypothesis_found(cli, tmp_path, raw, args, code):
    path = tmp_path / "sessions.json"
    path.write_text(raw)
    result = cli(args[0], "-s", f"json:{path}", *args[1:], "-f", "json", code=code)
    if code:
        assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1
    if args[0] == "cleanup" and code == 3:
        assert path.read_text() == raw
    if raw == '{"sessions": {}}':
        assert json.loads(path.read_text()) == {"sessions": {}}
        assert json.loads(result.stdout)["total"] == 0
    if raw.startswith('{"1"'):
        assert json.loads(result.stdout)["deleted"] == 1
        assert json.loads(path.read_text()) == {"": None, "0": {}}


@pytest.mark.parametrize("depth", [400, 800, 900, 950, 990, 2000])
def test_deep_nesting_is_archived_or_refused_whole(cli, tmp_path, depth):
    """Deep enough to break the parser, or the archive writer, or neither: never a crash."""
    path = tmp_path / "sessions.json"
    raw = '[{"session_id": "deep", "last_used": 1e9, "data": ' + "[" * depth + "]" * depth + "}]"
    path.write_text(raw)
    result = cli(
        "cleanup", "-s", path, "--expired", "--idle-timeout", "1h", "-f", "json", code=None
    )
    assert result.exit_code in (0, 3), result.stderr
    assert "Traceback" not in result.stderr
    if result.exit_code == 3:
        assert path.read_text() == raw and result.stderr.count("\n") == 1
    else:
        output = json.loads(result.stdout)
        assert json.loads(path.read_text()) == []
        assert len(read_archive(Path(output["archive"])).entries) == 1


def test_non_finite_numbers_come_back_from_the_archive_as_numbers(cli, tmp_path):
    path = tmp_path / "sessions.json"
    path.write_text('[{"session_id": "a", "last_used": 1, "score": NaN, "limit": Infinity}]')
    result = json.loads(
        cli(
            "cleanup", "-s", path, "--all", "--yes", "--preset", "bash-sessions", "-f", "json"
        ).stdout
    )
    cli("restore", result["archive"])
    (record,) = json.loads(path.read_text())
    assert math.isnan(record["score"]) and record["limit"] == math.inf


def test_a_deep_folder_session_stops_the_cleanup_with_everything_archived(cli, tmp_path):
    folder = tmp_path / "sessions"
    folder.mkdir()
    for index in range(4):
        (folder / f"s{index}.json").write_text(
            json.dumps({"session_id": f"s{index}", "last_used": 1_000_000_000})
        )
    (folder / "zz-deep.json").write_text(DEEP)
    result = cli(
        "cleanup",
        "-s",
        folder,
        "--expired",
        "--idle-timeout",
        "1h",
        "--batch-size",
        "1",
        "-f",
        "json",
        code=None,
    )
    output = json.loads(result.stdout)
    assert result.exit_code in (0, 3)
    remaining = {p.name for p in folder.iterdir()}
    archived = {e["key"] for e in read_archive(Path(output["archive"])).entries}
    assert {f"s{i}.json" for i in range(4)} - remaining <= archived


def test_blob_and_real_keys_of_a_table_without_rowid(cli, tmp_path):
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE sessions (session_id BLOB PRIMARY KEY, expires REAL) WITHOUT ROWID")
    rows = [(b"", 1e9), (b"\xff\x00k", 1e9), (b"keep", 4_000_000_000.0)]
    conn.executemany("INSERT INTO sessions VALUES (?, ?)", rows)
    conn.commit()
    conn.close()
    output = json.loads(cli("cleanup", "-s", path, "--expired", "-f", "json").stdout)
    assert output["deleted"] == 2
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT session_id FROM sessions").fetchall() == [(b"keep",)]
    conn.close()
    cli("restore", output["archive"])
    conn = sqlite3.connect(path)
    assert sorted(conn.execute("SELECT * FROM sessions").fetchall()) == sorted(rows)
    conn.close()


# --- spellings a rewrite must not change --------------------------------------------------------

#: Numbers a re-serialisation would respell (or, for 1e400, turn into `Infinity`).
ODD_NUMBERS = ["1E5", "1e400", "-1e400", "-0", "1.0e-7", "1.10", "0.10000000000000000555", "1E+2"]
ODD_NUMBERS += ["123456789012345678901234567890", "NaN", "-Infinity", "0", "2.5"]
ODD_STRINGS = ['"\\ud800"', '"x\\udc00y"', '"\\ud83d\\ude00"', '"\\u00e9\\/"', '"caf\u00e9"', '"a"']
SPELLING_CLEANUPS = [["--invalid"], ["--expired"], ["--all", "--yes"], ["--max-count", "1"]]


@st.composite
def spelled_records(draw, sid: int) -> str:
    """One session's text, spelled as an application might: odd numbers, duplicate keys, lone
    surrogates, odd spacing and line ends."""
    space = draw(st.sampled_from(["", " ", "  ", "\r\n    ", "\t"]))
    expires = draw(
        st.sampled_from([str(NOW_EPOCH - 86400), str(NOW_EPOCH + 86400), '"x"', "1e400"])
    )
    members = [f'"session_id":{space}"s{sid}"', f'"expires_at":{space}{expires}']
    for _ in range(draw(st.integers(0, 4))):
        name = draw(st.sampled_from(['"n"', '"n"', '"session_id"', '"\\ud800k"', '"m"']))
        value = draw(st.sampled_from(ODD_NUMBERS + ODD_STRINGS + ["[1E5, -0]", '{"a": 1, "a": 2}']))
        members.append(f"{name}{space}:{space}{value}")
    return "{" + f",{space}".join(members) + "}"


@st.composite
def spelled_stores(draw) -> tuple[bytes, list[str], list[str], str, str]:
    """(file bytes, entry texts, member keys or [], prefix, suffix) of a JSON store."""
    count = draw(st.integers(1, 6))
    texts = [draw(spelled_records(i)) for i in range(count)]
    keyed = draw(st.booleans())
    line = draw(st.sampled_from(["\n", "\r\n"]))
    separators = [draw(st.sampled_from([",", ", ", f",{line}  ", f" ,{line}"])) for _ in texts]
    keys = [f'"k{i}"' for i in range(count)] if keyed else []
    entries = [f"{keys[i]}: {t}" for i, t in enumerate(texts)] if keyed else texts
    body = entries[0] + "".join(separators[i] + entries[i] for i in range(1, count))
    opener, closer = ("{", "}") if keyed else ("[", "]")
    prefix = draw(st.sampled_from(["", '{"v": 1E5, "sessions": ' if not keyed else "", "\ufeff"]))
    if prefix.startswith("{") and keyed:
        prefix = ""
    suffix = "}" if prefix.startswith("{") else ""
    suffix += draw(st.sampled_from(["", line]))
    head = prefix + opener + draw(st.sampled_from(["", line + "  "]))
    tail = draw(st.sampled_from(["", line])) + closer + suffix
    data = (head + body + tail).encode()
    return data, texts, keys, head, tail


def _survivors_intact(after: bytes, texts: list[str], keys: list[str], head: str, tail: str):
    """The rewritten file is the old head and tail with the surviving entries between them,
    each exactly as it was, separated by commas and whitespace only. Returns the survivors."""
    text = after.decode()
    opener = head.lstrip("\ufeff").rstrip(" \t\r\n")
    assert text.startswith(opener), "the text before the sessions changed"
    closer = tail.lstrip(" \t\r\n")
    assert text.endswith(closer), "the text after the sessions changed"
    middle = text[len(opener) : len(text) - len(closer)]
    survivors, position = [], 0
    candidates = [f"{keys[i]}: {t}" if keys else t for i, t in enumerate(texts)]
    while middle[position:].strip(" \t\r\n"):
        if survivors:
            position += len(middle[position:]) - len(middle[position:].lstrip(" \t\r\n"))
            assert middle[position] == ",", "survivors are not separated as before"
            position += 1
        position += len(middle[position:]) - len(middle[position:].lstrip(" \t\r\n"))
        found = [c for c in candidates if middle.startswith(c, position)]
        assert found, f"a survivor's bytes changed: {middle[position : position + 60]!r}"
        survivors.append(max(found, key=len))
        position += len(survivors[-1])
    assert len(survivors) == len(set(survivors))
    return survivors


def test_generated_spellings_survive_a_cleanup_byte_for_byte(invoke, scratch):
    """Lone surrogates, CRLF, 1E5, 1e400, -0, 1.0e-7, duplicate keys: after a cleanup, every
    survivor's bytes are what they were, and the archive is strict JSON holding the rest."""
    from hypothesis import given

    @settings(PROFILE, max_examples=max(1, int(400 * SCALE)))
    @given(store=spelled_stores(), how=st.sampled_from(SPELLING_CLEANUPS))
    def case(store, how):
        data, texts, keys, head, tail = store
        path = scratch() / "sessions.json"
        path.write_bytes(data)
        args = ["cleanup", *how, "-f", "json", "--now", NOW]
        result = invoke([args[0], "-s", f"json:{path}", *args[1:]])
        check_contract(result, args)
        assert result.exit_code in (0, 1), result.stderr
        output = json.loads(result.stdout)
        after = path.read_bytes()
        if not output["deleted"]:
            assert after == data
            return
        assert after.startswith(b"\xef\xbb\xbf") == data.startswith(b"\xef\xbb\xbf")
        survivors = _survivors_intact(after.removeprefix(b"\xef\xbb\xbf"), texts, keys, head, tail)
        assert len(survivors) == len(texts) - output["deleted"]

        def refuse(name):
            raise AssertionError(f"{name} in an archive")

        with gzip.open(output["archive"], "rb") as handle:
            lines = [json.loads(line.decode(), parse_constant=refuse) for line in handle]
        assert len(lines) == 1 + output["deleted"]
        for entry in lines[1:]:
            original = (
                entry.get("raw_json") or base64.b64decode(entry.get("raw_b64") or "").decode()
            )
            if original:
                assert original in texts

    case()
