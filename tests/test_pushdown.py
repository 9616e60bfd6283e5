"""SQLite judges in SQL where it can; the verdicts must be exactly those of the Python judge.

Each test runs the same command twice, with SESSIONCTL_PUSHDOWN=0 (every row through the Python
judge) and without (SQL, with the rows it cannot decide handed to Python), on stores full of
values that sit on every edge the two could disagree on.
"""

import gzip
import json
import random
import shutil
import sqlite3

import pytest

from helpers import storegen

NOW = 1_795_000_000.0  # a fixed "now", passed with --now, so both runs judge alike
NOW_ISO = storegen.iso(NOW)


def odd_time(rng: random.Random, calm: float = 0.0):
    """A timestamp as applications (mis)write them; `calm` is the share of plain good ones."""
    around = NOW + rng.uniform(-40 * 86400, 40 * 86400)
    if rng.random() < calm:
        return storegen.sql_time(NOW - rng.uniform(0, 86400))
    choice = rng.randrange(22)
    if choice == 0:
        return None
    if choice == 1:
        return int(around)  # epoch seconds
    if choice == 2:
        return int(around * 1000)  # epoch ms
    if choice == 3:
        return int(around * 1_000_000)  # epoch µs
    if choice == 4:
        return around  # float seconds
    if choice == 5:
        return storegen.sql_time(around)  # Django
    if choice == 6:
        return storegen.sql_time(around)[:19]  # no fraction
    if choice == 7:
        return storegen.sql_time(around)[:23]  # milliseconds
    if choice == 8:
        return storegen.iso(around)  # ISO with Z and 'T'
    if choice == 9:
        return storegen.sql_time(around).replace(" ", "T")
    if choice == 10:
        return str(int(around))  # numeric text
    if choice == 11:
        return rng.choice(
            [
                "2026-02-30 10:00:00",
                "2026-11-23 24:00:00",
                "0000-00-00 00:00:00",
                "2026-13-01 00:00:00",
            ]
        )
    if choice == 12:
        return rng.choice(["garbage", "", " ", "NaN", "yesterday", "2026-11-23"])
    if choice == 13:
        return -int(around)
    if choice == 14:
        return 10**18
    if choice == 15:
        return b"\x00binary"
    if choice == 16:
        return storegen.sql_time(around) + "+02:00"
    if choice == 17:
        return " " + storegen.sql_time(around)
    if choice == 18:
        return storegen.sql_time(around) + "1"  # 7 fraction digits
    if choice == 19:
        return NOW  # exactly now
    if choice == 20:
        return NOW + 100 * 365 * 86400  # far future
    return storegen.sql_time(around)[:21]  # one fraction digit


def build_odd_store(path, seed: int, n: int = 400, unique_ids: bool = False, calm: float = 0.0):
    rng = random.Random(seed)
    conn = sqlite3.connect(path)
    key = "PRIMARY KEY" if unique_ids else ""
    conn.execute(
        f"CREATE TABLE sessions (session_id TEXT {key}, created_at, last_used, expires, workspace_name, browser_type, cdp_url)"
    )
    ids = [f"s{i}" for i in range(n)]
    for i in range(n):
        session_id = ids[i] if unique_ids or rng.random() > 0.08 else rng.choice(ids[: i + 1])
        if rng.random() < 0.03:
            session_id = None if not unique_ids else ids[i]
        conn.execute(
            "INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                session_id,
                odd_time(rng, calm),
                odd_time(rng, calm),
                odd_time(rng, calm),
                rng.choice(["w1", "w2", "w3", None, 7, ""]),
                rng.choice(["chromium", "firefox", "netscape", None, 1, b"x"]),
                rng.choice(["ws://x", "", None, 5]),
            ),
        )
    conn.commit()
    conn.close()
    return path


RULES = """
[stores.odd.rules]
required = ["id", "cdp_url", "created"]
allowed = { browser_type = ["chromium", "firefox", 1] }
types = { cdp_url = "string" }
"""


def both(cli, monkeypatch, *args):
    with monkeypatch.context() as patched:
        patched.setenv("SESSIONCTL_PUSHDOWN", "0")
        python = cli(*args, code=None)
    pushed = cli(*args, code=None)
    assert python.exit_code == pushed.exit_code, (python.stderr, pushed.stderr)
    return json.loads(python.stdout), json.loads(pushed.stdout)


@pytest.fixture
def odd(tmp_path):
    def make(seed, unique_ids=False, rules=True, extra=""):
        calm = 0.85 if seed >= 4 else 0.0
        db = build_odd_store(tmp_path / f"odd{seed}.db", seed, unique_ids=unique_ids, calm=calm)
        config = tmp_path / f"c{seed}.toml"
        config.write_text(
            f'[stores.odd]\naddress = "sqlite:{db}?table=sessions"\n'
            f'idle_timeout = "3d"\nmax_age = "20d"\n{extra}\n' + (RULES if rules else "")
        )
        return db, config

    return make


@pytest.mark.parametrize("seed", range(6))
def test_stats_agree(cli, odd, monkeypatch, seed):
    db, config = odd(seed, unique_ids=seed % 2 == 0, rules=seed % 3 != 2)
    args = ["--config", config, "stats", "-s", "odd", "--now", NOW_ISO, "-f", "json"]
    python, pushed = both(cli, monkeypatch, *args)
    for key in (
        "total",
        "active",
        "expired",
        "invalid",
        "by_reason",
        "age_histogram",
        "groups",
        "top_groups",
    ):
        assert pushed[key] == python[key], key
    for key in ("oldest", "newest", "least_recently_used"):
        assert (pushed[key] or {}).get(
            "created" if key != "least_recently_used" else "accessed"
        ) == (python[key] or {}).get("created" if key != "least_recently_used" else "accessed"), key
    assert python["invalid"] > 0 and python["expired"] > 0 and python["total"] == 400
    if seed >= 4:
        assert python["active"] > 0


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(
    "mode", [["--expired"], ["--invalid"], ["--expired", "--invalid"], ["--all", "--yes"]]
)
def test_cleanup_selection_agrees(cli, odd, monkeypatch, seed, mode):
    db, config = odd(seed, unique_ids=seed % 2 == 1)
    args = [
        "--config",
        config,
        "cleanup",
        "-s",
        "odd",
        "--now",
        NOW_ISO,
        *mode,
        "--dry-run",
        "-f",
        "json",
    ]
    python, pushed = both(cli, monkeypatch, *args)
    assert pushed["selected"] == python["selected"]
    assert pushed["total"] == python["total"]
    assert pushed["by_reason"] == python["by_reason"]
    assert sorted((s["key"], s["reasons"]) for s in pushed["sessions"]) == sorted(
        (s["key"], s["reasons"]) for s in python["sessions"]
    )


@pytest.mark.parametrize("seed", range(3))
def test_cleanup_removes_the_same_rows(cli, odd, monkeypatch, tmp_path, seed):
    db, config = odd(seed)
    copy = tmp_path / "copy.db"
    shutil.copy(db, copy)
    config2 = tmp_path / "copy.toml"
    config2.write_text(config.read_text().replace(str(db), str(copy)))
    with monkeypatch.context() as patched:
        patched.setenv("SESSIONCTL_PUSHDOWN", "0")
        python = json.loads(
            cli(
                "--config",
                config,
                "cleanup",
                "-s",
                "odd",
                "--now",
                NOW_ISO,
                "--expired",
                "--invalid",
                "--batch-size",
                "7",
                "-f",
                "json",
            ).stdout
        )
    pushed = json.loads(
        cli(
            "--config",
            config2,
            "cleanup",
            "-s",
            "odd",
            "--now",
            NOW_ISO,
            "--expired",
            "--invalid",
            "--batch-size",
            "7",
            "-f",
            "json",
        ).stdout
    )
    assert pushed["deleted"] == python["deleted"] > 0

    def rows(path):
        conn = sqlite3.connect(path)
        try:
            return sorted(map(repr, conn.execute("SELECT rowid, * FROM sessions")))
        finally:
            conn.close()

    assert rows(copy) == rows(db)


def test_presets_use_pushdown_and_say_so(cli, tmp_path):
    for preset in ("django", "rails", "express", "flask", "spring", "copilot", "bash-sessions"):
        db = storegen.write_sqlite(tmp_path / f"{preset}.db", storegen.generate(preset, 30))
        err = cli("stats", "-s", db, "--explain", "-f", "json").stderr
        assert "judged in SQL" in err, (preset, err)


def test_non_utc_text_times_go_to_python(cli, tmp_path, monkeypatch):
    db = storegen.write_sqlite(tmp_path / "d.db", storegen.generate("django", 50))
    args = ["stats", "-s", db, "--tz", "Europe/Berlin", "--now", NOW_ISO, "-f", "json"]
    python, pushed = both(cli, monkeypatch, *args)
    assert pushed["expired"] == python["expired"]


# --- tables shaped to make the two judges disagree: collations, affinities, shadowed names,
# --- text that is not UTF-8, cascade chains and DELETE triggers

TRICKY_IDS = ["ab", "AB", "Ab", "ab ", "7", 7, b"7", "07", "ß", "SS", None]
TRICKY_GROUPS = ["w1", "W1", "w1 ", 7, "7", b"w1", None, "", " "]


def build_tricky_store(path, seed: int, id_type: str, collation: str, shadow: str | None):
    """Sessions whose ids and groups differ only in case, trailing spaces or type, in columns
    of every affinity and collation; a column that shadows the rowid; a few TEXT values that
    are not UTF-8; children two levels deep under ON DELETE CASCADE; a DELETE trigger."""
    rng = random.Random(seed)
    conn = sqlite3.connect(path)
    extra = f", {shadow} INTEGER" if shadow else ""
    conn.executescript(
        f"""
        PRAGMA foreign_keys = ON;
        CREATE TABLE sessions (session_id {id_type} COLLATE {collation}, created_at,
            last_used, expires, workspace_name TEXT COLLATE {collation}, browser_type,
            cdp_url, n INTEGER UNIQUE{extra});
        CREATE TABLE pages (id INTEGER PRIMARY KEY, owner INTEGER
            REFERENCES sessions(n) ON DELETE CASCADE, title TEXT);
        CREATE TABLE notes (id INTEGER PRIMARY KEY, page INTEGER
            REFERENCES pages(id) ON DELETE CASCADE, body TEXT);
        CREATE TABLE gone (what);
        CREATE TRIGGER remember AFTER DELETE ON sessions
            BEGIN INSERT INTO gone VALUES (old.session_id); END;
        """
    )
    for i in range(200):
        values = [
            rng.choice(TRICKY_IDS),
            odd_time(rng, 0.6),
            odd_time(rng, 0.6),
            odd_time(rng, 0.6),
            rng.choice(TRICKY_GROUPS),
            rng.choice(["chromium", "CHROMIUM", "firefox", None, 1]),
            rng.choice(["ws://x", "", None]),
            i,
        ]
        if shadow:
            values.append(rng.choice([1, 7, None]))
        marks = ["?"] * len(values)
        if rng.random() < 0.04:  # text that is not UTF-8, in a random column (not n)
            column = rng.choice([0, 1, 2, 3, 4, 5, 6])
            marks[column] = "CAST(x'ff41' AS TEXT)"
            values[column] = None
        values = [v for v, m in zip(values, marks) if m == "?"]
        conn.execute(f"INSERT INTO sessions VALUES ({', '.join(marks)})", values)
    for n, owner in enumerate(rng.sample(range(200), 40)):
        conn.execute("INSERT INTO pages VALUES (?, ?, ?)", (n, owner, f"p{n}"))
        if n % 2:
            conn.execute("INSERT INTO notes VALUES (?, ?, ?)", (n, n, f"note {n}"))
    conn.commit()
    conn.close()
    return path


TRICKY_RULES = """
[stores.t.fields]
id = "session_id"
group = "workspace_name"
[stores.t.rules]
required = ["id", "created", "workspace_name"]
allowed = { browser_type = ["chromium", "firefox", 1] }
"""


TRICKY = [
    (0, "TEXT", "NOCASE", None),
    (1, "TEXT", "RTRIM", "rowid"),
    (2, "", "NOCASE", "oid"),
    (3, "INTEGER", "BINARY", None),
    (4, "NUMERIC", "NOCASE", "_rowid_"),
    (5, "BLOB", "RTRIM", None),
]


@pytest.fixture
def tricky(tmp_path):
    def make(seed, id_type, collation, shadow, name="t"):
        db = build_tricky_store(tmp_path / f"{name}{seed}.db", seed, id_type, collation, shadow)
        config = tmp_path / f"{name}{seed}.toml"
        config.write_text(
            f'[stores.t]\naddress = "sqlite:{db}?table=sessions"\n'
            f'idle_timeout = "3d"\nmax_age = "20d"\n' + TRICKY_RULES
        )
        return db, config

    return make


@pytest.mark.parametrize("seed,id_type,collation,shadow", TRICKY)
def test_tricky_tables_stats_agree(cli, tricky, monkeypatch, seed, id_type, collation, shadow):
    db, config = tricky(seed, id_type, collation, shadow)
    args = ["--config", config, "stats", "-s", "t", "--now", NOW_ISO, "-f", "json"]
    python, pushed = both(cli, monkeypatch, *args)
    for key in ("total", "active", "expired", "invalid", "by_reason", "groups", "top_groups"):
        assert pushed[key] == python[key], key
    assert python["total"] == 200
    assert python["by_reason"].get("corrupt", 0) > 0
    assert python["by_reason"].get("duplicate_id", 0) > 0
    err = cli(*args, "--explain").stderr
    assert "judged in SQL" in err, err  # the pushdown really ran


@pytest.mark.parametrize("seed,id_type,collation,shadow", TRICKY)
@pytest.mark.parametrize("mode", [["--expired"], ["--invalid"], ["--all", "--yes"]])
def test_tricky_tables_select_alike(
    cli, tricky, monkeypatch, seed, id_type, collation, shadow, mode
):
    db, config = tricky(seed, id_type, collation, shadow)
    args = ["--config", config, "cleanup", "-s", "t", "--now", NOW_ISO, *mode, "-n", "-f", "json"]
    python, pushed = both(cli, monkeypatch, *args)
    assert python["error"] is None and pushed["error"] is None
    assert python["by_reason"].get("corrupt") or mode != ["--invalid"]
    assert pushed["by_reason"] == python["by_reason"]
    assert sorted((s["key"], s["reasons"]) for s in pushed["sessions"]) == sorted(
        (s["key"], s["reasons"]) for s in python["sessions"]
    )


@pytest.mark.parametrize("seed,id_type,collation,shadow", TRICKY[:3])
def test_tricky_tables_lose_the_same_rows_and_restore_them(
    cli, tricky, monkeypatch, tmp_path, seed, id_type, collation, shadow
):
    """Both paths delete the same rows, cascade children and trigger effects included, and
    archive every cascade row that went."""
    dumps = []
    for flag in ("0", "1"):
        db, config = tricky(seed, id_type, collation, shadow, name=f"p{flag}")
        before = _tables(db)
        archive = tmp_path / f"a{flag}.ndjson.gz"
        with monkeypatch.context() as patched:
            patched.setenv("SESSIONCTL_PUSHDOWN", flag)
            run = ["--config", config, "cleanup", "-s", "t", "--now", NOW_ISO]
            refused = cli(*run, "--expired", "--invalid", code=2)
            assert "remember on sessions" in refused.stderr
            out = json.loads(
                cli(
                    *run,
                    "--expired",
                    "--invalid",
                    "--allow-triggers",
                    "--batch-size",
                    "9",
                    "--archive",
                    archive,
                    "-f",
                    "json",
                ).stdout
            )
        assert out["deleted"] > 0
        dumps.append(_tables(db))
        with gzip.open(archive, "rt") as handle:
            entries = handle.read().splitlines()[1:]
        assert len(entries) == out["deleted"]
        # Every cascade row that went is in the archive, under its session.
        archived_pages = sum(
            len(json.loads(e).get("children", {}).get("pages", [])) for e in entries
        )
        assert archived_pages == len(before["pages"]) - len(dumps[-1]["pages"])
    assert dumps[0] == dumps[1]


def _tables(db) -> dict:
    conn = sqlite3.connect(db)
    conn.text_factory = bytes
    try:
        return {
            # The trigger's rows come in the order of deletion, which the paths need not share.
            table: sorted(map(repr, conn.execute(f"SELECT {key} * FROM {table}")))
            for table, key in (
                ("sessions", "_rowid_,"),
                ("pages", "_rowid_,"),
                ("notes", "_rowid_,"),
                ("gone", ""),
            )
        }
    finally:
        conn.close()
