"""Dates that look like numbers, times no session has, presets whose fields are absent, and
reasons that must not quote a secret.

- `20261231` is ISO 8601 (basic), as `fromisoformat` reads it, not epoch seconds of 1970; a time
  before 2000 is invalid (`implausible_timestamp`) and never makes a session expired, on the
  Python and the SQL path alike.
- A preset matches only when the records have its id and time fields; the roles it leaves empty
  are detected by name; `--explain` says where each role came from; a session without an id is
  invalid; an idle timeout on a store with no last-access field is refused unless
  `--idle-from created`.
- A rule on a payload or secret field never quotes its value.
"""

from __future__ import annotations

import json
import math
import sqlite3
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import one_line_error, storegen
from sessionctl.domain.mapping import Mapper, Mapping, detect_preset
from sessionctl.domain.model import Record
from sessionctl.domain.policy import Judge, Policy
from sessionctl.domain.timeparse import TimestampError, parse_timestamp

DAY = 86400.0
PLAUSIBLE_SINCE = datetime(2000, 1, 1, tzinfo=UTC).timestamp()
USAGE = 2

PROPERTIES = settings(
    derandomize=True,
    deadline=None,
    database=None,
    max_examples=300,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def basic_date(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y%m%d")


def views_by_id(result) -> dict:
    return {v["id"]: v for v in json.loads(result.stdout)}


def selected(cli, *args, config=None) -> dict:
    top = ["--config", config] if config else []
    result = cli(*top, "cleanup", "--dry-run", "-f", "json", *args)
    return {
        s["id"] if s["id"] is not None else s["key"]: s["reasons"]
        for s in json.loads(result.stdout)["sessions"]
    }


# --- ISO 8601 basic dates and implausible times -----------------------------------------------


@pytest.mark.parametrize(
    "text,expected",
    [
        ("20261231", datetime(2026, 12, 31, tzinfo=UTC)),
        ("20261231T235959Z", datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC)),
        ("20261231T2359+0100", datetime(2026, 12, 31, 22, 59, tzinfo=UTC)),
        (" 20000101 ", datetime(2000, 1, 1, tzinfo=UTC)),
    ],
)
def test_iso_basic_dates_are_dates_not_epoch_seconds(text, expected):
    assert parse_timestamp(text) == expected.timestamp()


@pytest.mark.parametrize("text", ["20261301", "20260230", "00000000"])
def test_eight_digits_that_are_no_date_are_unreadable(text):
    with pytest.raises(TimestampError):
        parse_timestamp(text)


def test_a_basic_date_expiry_ahead_keeps_the_session(cli, tmp_path, now):
    path = tmp_path / "sessions.json"
    path.write_text(
        json.dumps(
            [
                {"id": "later", "expires_at": basic_date(now + 30 * DAY)},
                {"id": "gone", "expires_at": basic_date(now - 30 * DAY)},
            ]
        )
    )
    views = views_by_id(cli("list", "-s", path, "-f", "json"))
    assert views["later"]["status"] == "active"
    assert views["gone"]["status"] == "expired"
    assert selected(cli, "-s", path, "--expired") == {"gone": ["expired"]}


def test_times_before_2000_are_invalid_never_expired(cli, tmp_path, now):
    """A number where a date was meant (`20261231`, days, seconds for milliseconds) lands in
    1970: the session is invalid, and `cleanup --expired` leaves it alone."""
    path = tmp_path / "sessions.json"
    records = [
        {"id": "yyyymmdd-number", "expires_at": int(basic_date(now + 30 * DAY))},
        {"id": "days", "expires_at": int((now + 30 * DAY) // DAY)},
        {"id": "zero", "expires_at": 0},
        {"id": "old-text", "expires_at": "1999-12-31T23:59:59Z"},
        {"id": "ok", "expires_at": now + DAY},
    ]
    path.write_text(json.dumps(records))
    views = views_by_id(cli("list", "-s", path, "-f", "json"))
    for name in ("yyyymmdd-number", "days", "zero", "old-text"):
        assert views[name]["status"] == "invalid", name
        assert [r["code"] for r in views[name]["reasons"]] == ["implausible_timestamp"], name
    assert views["ok"]["status"] == "active"
    assert selected(cli, "-s", path, "--expired") == {}
    # `validate` names them, so `--invalid` may remove them.
    result = cli("validate", "-s", path, "-f", "json", code=1)
    assert len(json.loads(result.stdout)["invalid"]) == 4


def test_an_implausible_last_access_is_not_replaced_by_the_creation(cli, tmp_path, now):
    path = tmp_path / "sessions.json"
    path.write_text(
        json.dumps(
            [
                {"session_id": "a", "created_at": storegen.iso(now - 30 * DAY), "last_used": 12},
                {"session_id": "b", "created_at": storegen.iso(now - 30 * DAY), "last_used": "x"},
            ]
        )
    )
    assert selected(cli, "-s", path, "--expired", "--idle-timeout", "7d") == {}


ODD_TIMES = [
    None,
    20261231,  # YYYYMMDD as a number: 1970 as seconds
    "20261231",  # ISO basic: a date
    "19991231",
    "20261301",  # no date
    0,
    1,
    946684799,  # one second before 2000
    946684800,  # 2000 exactly
    946684799999,  # milliseconds, before 2000
    946684800000,
    946684799999999,  # microseconds, before 2000
    946684800000000,
    "946684799",
    "1999-12-31 23:59:59",
    "2000-01-01 00:00:00",
    "1970-01-01 00:00:00.5",
    2**62,
    -(2**62),
    1e300,
]


def build_ambiguous_store(path, now: float, n: int = 300, seed: int = 3):
    import random

    rng = random.Random(seed)
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE sessions (session_id TEXT, created_at, last_used, expires, workspace_name)"
    )
    for i in range(n):

        def moment():
            if rng.random() < 0.5:
                return rng.choice(ODD_TIMES)
            around = now + rng.uniform(-20 * DAY, 20 * DAY)
            return rng.choice([int(around), storegen.sql_time(around), basic_date(around)])

        session_id = None if rng.random() < 0.05 else f"s{i}"
        conn.execute(
            "INSERT INTO sessions VALUES (?, ?, ?, ?, ?)",
            (session_id, moment(), moment(), moment(), f"w{i % 4}"),
        )
    conn.commit()
    conn.close()
    return f"sqlite:{path}?table=sessions"


def both(cli, monkeypatch, *args):
    with monkeypatch.context() as patched:
        patched.setenv("SESSIONCTL_PUSHDOWN", "0")
        python = cli(*args, code=None)
    pushed = cli(*args, code=None)
    assert python.exit_code == pushed.exit_code, (python.stderr, pushed.stderr)
    return json.loads(python.stdout), json.loads(pushed.stdout)


@pytest.mark.parametrize("idle_from", ["accessed", "created"])
def test_sql_and_python_judge_ambiguous_times_alike(cli, tmp_path, monkeypatch, now, idle_from):
    address = build_ambiguous_store(tmp_path / "odd.db", now)
    common = ["-s", address, "--now", storegen.iso(now), "--idle-timeout", "3d"]
    common += ["--max-age", "15d", "--idle-from", idle_from]
    python, pushed = both(cli, monkeypatch, "stats", *common, "-f", "json")
    for key in ("total", "active", "expired", "invalid", "by_reason", "age_histogram"):
        assert pushed[key] == python[key], key
    assert python["by_reason"]["implausible_timestamp"] > 20
    assert python["by_reason"]["missing_id"] > 0
    for mode in (["--expired"], ["--invalid"], ["--expired", "--invalid"]):
        args = ["cleanup", "--dry-run", "-f", "json", *common, *mode]
        python, pushed = both(cli, monkeypatch, *args)
        assert sorted(map(str, (s["key"] for s in pushed["sessions"]))) == sorted(
            map(str, (s["key"] for s in python["sessions"]))
        ), mode
        assert pushed["by_reason"] == python["by_reason"], mode


# --- property tests: ambiguous dates and huge numbers ----------------------------------------

#: A time as a store might hold it: numbers of every size, digit strings of every length
#: (8 digits among them), ISO basic and extended dates, and text around them.
AMBIGUOUS = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.integers(min_value=10**300, max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.from_regex(r"\A[+-]?\d{1,20}(\.\d{0,6})?\Z"),
    st.from_regex(r"\A\d{8}\Z"),
    st.from_regex(r"\A(19|20)\d\d(0[1-9]|1[0-2])(0[1-9]|1\d|2[0-8])(T\d\d(\d\d(\d\d)?)?Z?)?\Z"),
    st.dates().map(lambda d: d.strftime("%Y%m%d")),
    st.text(alphabet="0123456789T:-+Z. eE", max_size=25),
)


@PROPERTIES
@given(AMBIGUOUS)
def test_any_time_value_is_an_instant_in_range_or_a_timestamp_error(value):
    try:
        moment = parse_timestamp(value)
    except TimestampError:
        return
    assert isinstance(moment, float) and math.isfinite(moment)
    # Epoch numbers from 1970 on; ISO dates from year 1 (what is before 2000 is invalid).
    assert datetime(1, 1, 1, tzinfo=UTC).timestamp() <= moment <= 253402300799.0


@PROPERTIES
@given(st.dates(min_value=datetime(1, 1, 1).date()))
def test_every_eight_digit_date_reads_as_fromisoformat_reads_it(day):
    text = day.strftime("%Y%m%d")
    if len(text) != 8:  # years before 1000 are written with fewer digits on some platforms
        text = f"{day.year:04d}{day.month:02d}{day.day:02d}"
    expected = datetime.fromisoformat(text).replace(tzinfo=UTC)
    try:
        moment = parse_timestamp(text)
    except TimestampError:
        # Only instants `datetime` cannot represent as epoch seconds are refused.
        assert expected < datetime(1970, 1, 2, tzinfo=UTC)
        return
    assert moment == expected.timestamp()


TIME_ROLES = ("created", "accessed", "expires")


@PROPERTIES
@given(
    st.fixed_dictionaries({role: st.one_of(st.none(), AMBIGUOUS) for role in TIME_ROLES}),
    st.sampled_from([None, "accessed", "created"]),
)
def test_a_time_before_2000_or_unreadable_never_makes_a_session_expired(times, idle_from):
    """Whatever the times, a session is judged without error; each expiry reason rests on a
    readable time from 2000 on; a time before 2000 always makes it invalid."""
    now = datetime(2026, 11, 30, tzinfo=UTC).timestamp()
    mapping = Mapping(fields={"id": "id", **{role: role for role in TIME_ROLES}, "group": None})
    policy = Policy(idle_timeout=3600, max_age=86400, idle_from=idle_from or "accessed")
    data = {"id": "x", **{k: v for k, v in times.items() if v is not None}}
    session = Mapper(mapping).session(Record(key=0, data=data, size=None))
    verdict = Judge(policy, mapping).verdict(session, now)
    codes = {r.code for r in verdict.invalid}
    for role in TIME_ROLES:
        moment = getattr(session, role)
        if moment is not None and moment < PLAUSIBLE_SINCE:
            assert "implausible_timestamp" in codes
    for reason in verdict.expired:
        role = reason.field
        assert role in TIME_ROLES, reason
        moment = getattr(session, role)
        assert moment is not None and moment >= PLAUSIBLE_SINCE, (reason, session)
    if idle_from != "created" and any(r.code == "idle" for r in verdict.expired):
        # idleness from the creation only when there is no last access at all
        assert session.accessed is not None or "accessed" not in data


# --- presets only where their fields are ------------------------------------------------------


def issue_records(now: float, n: int = 20) -> list[dict]:
    """The shape that was taken for the provisioner preset: all created a month ago, half of
    them used an hour ago, half ten days ago."""
    now = int(now)
    return [
        {
            "session_id": f"sess-{i:03d}",
            "userId": f"user-{i % 3}",
            "workspaceSlug": f"ws-{i % 2}",
            "createdAt": storegen.iso(now - 30 * DAY - i),
            "last_accessed": storegen.iso(now - (3600 if i % 2 else 10 * DAY)),
        }
        for i in range(n)
    ]


def stale_ids(records: list[dict]) -> set[str]:
    return {r["session_id"] for i, r in enumerate(records) if not i % 2}


@pytest.mark.parametrize("shape", ["array", "keyed"])
def test_records_without_the_presets_id_are_judged_by_their_own_fields(cli, tmp_path, now, shape):
    records = issue_records(now)
    path = tmp_path / "sessions.json"
    document = records if shape == "array" else {r["session_id"]: r for r in records}
    path.write_text(json.dumps(document))
    args = ["-s", path, "--idle-timeout", "7d"]
    views = views_by_id(cli("list", *args, "-f", "json"))
    assert set(views) == {r["session_id"] for r in records}
    assert {v["accessed"] for v in views.values()} == {r["last_accessed"] for r in records}
    assert set(selected(cli, *args, "--expired")) == stale_ids(records)
    if shape == "array":
        assert detect_preset(records[0], "document") is None


def test_explain_says_where_each_role_came_from(cli, tmp_path, now):
    records = issue_records(now)
    path = tmp_path / "sessions.json"
    path.write_text(json.dumps({r["session_id"]: r for r in records}))
    result = cli("list", "-s", path, "--explain", "--field", "group=workspaceSlug", "--limit", "1")
    lines = {
        line.split("<-")[0].split()[-1]: line for line in result.stderr.splitlines() if "<-" in line
    }
    assert "[preset provisioner (detected from record fields)]" in lines["created"]
    assert "last_accessed" in lines["accessed"]
    assert "[detected by name (preset provisioner has none)]" in lines["accessed"]
    assert "workspaceSlug" in lines["group"] and "[--field]" in lines["group"]
    assert "(none)" in lines["expires"] and "preset provisioner has none" in lines["expires"]


def test_a_session_without_an_id_is_invalid(cli, tmp_path, now):
    """The provisioner preset's rules do not require an id; a session needs one anyway."""
    path = tmp_path / "sessions.json"
    records = [
        {"userId": "u", "workspaceSlug": "w", "createdAt": storegen.iso(now - 60)},
        {"sessionId": "s1", "userId": "u", "workspaceSlug": "w", "createdAt": storegen.iso(now)},
    ]
    path.write_text(json.dumps(records))
    result = cli("validate", "-s", path, "--preset", "provisioner", "-f", "json", code=1)
    invalid = json.loads(result.stdout)["invalid"]
    assert len(invalid) == 1
    assert [r["code"] for r in invalid[0]["reasons"]] == ["missing_id"]


def test_rows_without_an_id_are_invalid_on_both_sqlite_paths(cli, tmp_path, monkeypatch, now):
    db = tmp_path / "s.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE sessions (session_id TEXT, created_at, last_used, cdp_url)")
    rows = [(None, now - 60, now - 30, "ws://x"), ("b", now - 60, now - 30, "ws://y")]
    conn.executemany("INSERT INTO sessions VALUES (?, ?, ?, ?)", rows)
    conn.commit()
    conn.close()
    config = tmp_path / "c.toml"
    config.write_text(
        f'[stores.s]\naddress = "sqlite:{db}?table=sessions"\n'
        '[stores.s.rules]\nrequired = ["cdp_url"]\n'
    )
    python, pushed = both(cli, monkeypatch, "--config", config, "stats", "-s", "s", "-f", "json")
    assert python["by_reason"] == pushed["by_reason"] == {"missing_id": 1}
    for args in (["--invalid"], ["--invalid", "--expired", "--idle-timeout", "1h"]):
        python, pushed = both(
            cli,
            monkeypatch,
            "--config",
            config,
            "cleanup",
            "-s",
            "s",
            "--dry-run",
            "-f",
            "json",
            *args,
        )
        assert [s["reasons"] for s in python["sessions"]] == [["missing_id"]]
        assert [s["reasons"] for s in pushed["sessions"]] == [["missing_id"]]


def no_last_access_store(tmp_path, now):
    path = tmp_path / "sessions.json"
    records = [
        {"session_id": "old", "createdAt": storegen.iso(now - 30 * DAY)},
        {"session_id": "new", "createdAt": storegen.iso(now - 3600)},
    ]
    path.write_text(json.dumps(records))
    return path


@pytest.mark.parametrize("command", [["cleanup", "--expired", "--dry-run"], ["list"], ["stats"]])
def test_an_idle_timeout_without_a_last_access_field_is_refused(cli, tmp_path, now, command):
    path = no_last_access_store(tmp_path, now)
    result = cli(*command, "-s", path, "--idle-timeout", "7d", code=USAGE)
    line = one_line_error(result)
    assert "no last-access field" in line and "--idle-from created" in line
    assert result.stdout == ""


def test_idle_from_created_measures_idleness_from_creation(cli, tmp_path, now):
    path = no_last_access_store(tmp_path, now)
    args = ["-s", path, "--idle-timeout", "7d", "--expired"]
    assert selected(cli, *args, "--idle-from", "created") == {"old": ["idle"]}
    config = tmp_path / "c.toml"
    config.write_text(f'[stores.s]\naddress = "json:{path}"\nidle_from = "created"\n')
    assert selected(cli, "-s", "s", "--idle-timeout", "7d", "--expired", config=config) == {
        "old": ["idle"]
    }
    config.write_text(f'[stores.s]\naddress = "json:{path}"\nidle_from = "creation"\n')
    line = one_line_error(cli("--config", config, "list", "-s", "s", code=USAGE))
    assert "idle_from" in line and "creation" in line


def test_idle_from_created_ignores_the_last_access(cli, tmp_path, now):
    records = issue_records(now)
    path = tmp_path / "sessions.json"
    path.write_text(json.dumps(records))
    args = ["-s", path, "--idle-timeout", "7d", "--expired", "--idle-from", "created"]
    assert set(selected(cli, *args)) == {r["session_id"] for r in records}


# --- secrets in reasons -----------------------------------------------------------------------

TOKEN = "tok-9f8e7d6c5b4a39281706"


def test_a_rule_on_a_secret_field_never_quotes_its_value(cli, tmp_path, now):
    path = tmp_path / "sessions.json"
    path.write_text(
        json.dumps(
            [
                {
                    "id": "s1",
                    "api_token": TOKEN,
                    "data": {"role": "root-" + TOKEN},
                    "browser": "netscape",
                    "expires": now + 3600,
                }
            ]
        )
    )
    config = tmp_path / "c.toml"
    config.write_text(
        f'[stores.s]\naddress = "json:{path}"\npayload = ["data"]\n'
        '[stores.s.rules]\nallowed = { api_token = ["a"], "data.role" = ["user"], '
        'browser = ["chromium"] }\n'
    )
    outputs = [
        cli("--config", config, "validate", "-s", "s", code=1),
        cli("--config", config, "validate", "-s", "s", "-f", "json", code=1),
        cli("--config", config, "list", "-s", "s", "-f", "json"),
        cli("--config", config, "list", "-s", "s", "-f", "csv"),
        cli("--config", config, "inspect", "s1", "-s", "s"),
        cli("--config", config, "inspect", "s1", "-s", "s", "-f", "json"),
    ]
    for result in outputs:
        assert TOKEN not in result.stdout + result.stderr
    view = json.loads(outputs[2].stdout)[0]
    reasons = {r["field"]: r["message"] for r in view["reasons"]}
    assert set(reasons) == {"api_token", "data.role", "browser"}
    assert all(r["code"] == "not_allowed" for r in view["reasons"])
    # A field that is neither payload nor secret is still quoted: that is what helps.
    assert reasons["browser"] == "browser=netscape is not one of: chromium"
    assert "api_token" in reasons["api_token"] and "redacted" in reasons["api_token"]


def test_a_schedule_checks_idle_from_as_the_cleanup_will(cli, tmp_path, now, monkeypatch):
    cron_d = tmp_path / "cron.d"
    cron_d.mkdir()
    monkeypatch.setenv("SESSIONCTL_CRON_D", str(cron_d))
    path = no_last_access_store(tmp_path, now)
    install = ["schedule", "install", "idle", "--every", "1h", "--system", "--"]
    cleanup = ["cleanup", "--expired", "--store", f"json:{path}", "--idle-timeout", "7d"]
    line = one_line_error(cli(*install, *cleanup, code=USAGE))
    assert "--idle-from created" in line
    assert list(cron_d.iterdir()) == []
    cli(*install, *cleanup, "--idle-from", "created")
    (written,) = cron_d.iterdir()
    assert "--idle-from created" in written.read_text()


def test_a_chosen_field_inside_a_payload_named_field_is_redacted_as_in_the_record(cli, tmp_path):
    path = tmp_path / "sessions.json"
    record = {"id": "a", "meta": {"data": TOKEN, "session": {"value": TOKEN}}}
    path.write_text(json.dumps([record]))
    for fmt in ("json", "csv", "table"):
        result = cli("list", "-s", path, "--fields", "id,meta.data,meta.session.value", "-f", fmt)
        assert TOKEN not in result.stdout, fmt
    (view,) = json.loads(cli("list", "-s", path, "--fields", "meta.data", "-f", "json").stdout)
    assert view["fields"]["meta.data"] == f"<redacted: {len(TOKEN)} bytes>"
