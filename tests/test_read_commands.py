import csv
import io
import json
import sqlite3

import pytest

from helpers import one_line_error, storegen
from stores import CASES, build, session_name


@pytest.fixture(params=CASES, ids=[case[0] for case in CASES])
def store(request, tmp_path):
    return build(tmp_path, *request.param)


def test_list_gives_each_session_its_status(cli, store):
    views = json.loads(cli("list", *store.args, "--format", "json").stdout)
    assert len(views) == store.total
    by_status = {"active": set(), "expired": set(), "invalid": set()}
    for view in views:
        by_status[view["status"]].add(session_name(view))
    for kind in ("active", "expired", "invalid"):
        assert by_status[kind] == set(store.ids[kind]), kind


def test_validate_lists_exactly_the_invalid_sessions_and_exits_1(cli, store):
    result = cli("validate", *store.args, "--format", "json", code=1)
    report = json.loads(result.stdout)
    assert {session_name(v) for v in report["invalid"]} == set(store.ids["invalid"])
    assert report["summary"]["invalid"] == len(store.ids["invalid"])
    assert report["summary"]["total"] == store.total
    assert all(v["reasons"] for v in report["invalid"])
    assert f"{len(store.ids['invalid'])} of {store.total} sessions invalid" in result.stderr


def test_stats_counts(cli, store):
    stats = json.loads(cli("stats", *store.args, "--format", "json").stdout)
    assert stats["total"] == store.total
    assert stats["active"] == len(store.ids["active"])
    assert stats["invalid"] == len(store.ids["invalid"])
    # Invalid sessions may be expired too; every generated expired one is counted.
    assert stats["expired"] >= len(store.ids["expired"])
    assert stats["size_bytes"] > 0
    assert sum(b["count"] for b in stats["age_histogram"]) == store.total


def test_inspect_shows_one_session_with_its_verdict(cli, store):
    session_id = store.ids["expired"][0]
    view = json.loads(cli("inspect", session_id, *store.args, "--format", "json").stdout)
    assert view["id"] == session_id
    assert view["status"] == "expired"
    assert {r["code"] for r in view["reasons"]} & {"expired", "idle", "max_age"}
    assert isinstance(view["record"], dict)
    roles = {row["role"]: row for row in view["mapping"]}
    assert roles["id"]["path"]


def test_table_output_is_plain_text_when_piped(cli, store):
    result = cli("list", *store.args)
    lines = result.stdout.splitlines()
    assert lines[0].split()[:2] == ["ID", "STATUS"]
    assert len(lines) == store.total + 1
    assert "\x1b[" not in result.stdout


def test_ndjson_and_csv_have_the_same_sessions(cli, store):
    ndjson = [
        json.loads(line) for line in cli("list", *store.args, "-f", "ndjson").stdout.splitlines()
    ]
    rows = list(csv.DictReader(io.StringIO(cli("list", *store.args, "-f", "csv").stdout)))
    assert [v["status"] for v in ndjson] == [r["status"] for r in rows]
    assert len(rows) == store.total


def test_no_secret_leaves_unredacted(cli, tmp_path):
    store = build(tmp_path, "raptor", "raptor", "jsondir", [])
    token = store.generated.records[0]["auth_token"]
    session_id = store.generated.records[0]["session_id"]
    outputs = [
        cli("inspect", session_id, *store.args, "-f", "json").stdout,
        cli("inspect", session_id, *store.args).stdout,
        cli("list", *store.args, "--fields", "id,auth_token", "-f", "json").stdout,
        cli("list", *store.args, "--fields", "id,auth_token", "-f", "csv").stdout,
    ]
    for output in outputs:
        assert token not in output
        assert "<redacted" in output
    shown = cli("inspect", session_id, *store.args, "-f", "json", "--show-secrets").stdout
    assert token in shown


def test_django_payload_is_redacted(cli, tmp_path):
    store = build(tmp_path, "django", "django", "sqlite", [])
    payload = store.generated.records[0]["session_data"]
    out = cli("inspect", store.ids["active"][0], *store.args, "-f", "json").stdout
    assert payload not in out and "<redacted" in out


def test_list_filters_sort_and_limit(cli, tmp_path, now):
    store = build(tmp_path, "bash", "bash-sessions", "json-wrapped", [], n=60)
    expired = json.loads(cli("list", *store.args, "--expired", "-f", "json").stdout)
    assert {v["id"] for v in expired} == set(store.ids["expired"])
    active = json.loads(cli("list", *store.args, "--active", "-f", "json").stdout)
    assert {v["id"] for v in active} == set(store.ids["active"])
    both = json.loads(cli("list", *store.args, "--active", "--invalid", "-f", "json").stdout)
    assert len(both) == len(store.ids["active"]) + len(store.ids["invalid"])
    workspace = json.loads(
        cli("list", *store.args, "--where", "workspace_name=workspace3", "-f", "json").stdout
    )
    assert workspace and all(v["group"] == "workspace3" for v in workspace)
    by_group = json.loads(
        cli("list", *store.args, "--where", "group=workspace3", "-f", "json").stdout
    )
    assert [v["id"] for v in by_group] == [v["id"] for v in workspace]
    idle = json.loads(cli("list", *store.args, "--idle-for", "1h", "-f", "json").stdout)
    assert {v["id"] for v in idle} == set(store.ids["expired"])
    top = json.loads(
        cli("list", *store.args, "--sort", "idle", "-r", "--limit", "3", "-f", "json").stdout
    )
    everything = json.loads(cli("list", *store.args, "-f", "json").stdout)
    longest = sorted(everything, key=lambda v: v["idle_s"], reverse=True)[:3]
    assert [v["id"] for v in top] == [v["id"] for v in longest]
    ascending = json.loads(cli("list", *store.args, "--sort", "created", "-f", "json").stdout)
    created = [v["created"] for v in ascending]
    assert created == sorted(created)
    older = json.loads(cli("list", *store.args, "--older-than", "1d", "-f", "json").stdout)
    assert all(v["age_s"] > 86400 for v in older)


def test_list_chosen_fields(cli, tmp_path):
    store = build(tmp_path, "raptor", "raptor", "jsondir", [])
    out = cli("list", *store.args, "--fields", "id,browser_type,size", "-f", "csv").stdout
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == ["id", "browser_type", "size"]
    assert {r["browser_type"] for r in rows} >= {"chromium"}
    assert all(r["size"].isdigit() for r in rows)


def test_explain_says_what_was_detected(cli, tmp_path):
    store = build(tmp_path, "express", "express", "sqlite", [])
    result = cli("list", *store.args, "--explain", "--limit", "1")
    assert "preset express (detected from table columns)" in result.stderr
    assert "table sessions" in result.stderr


def test_detection_without_a_preset(cli, tmp_path, now):
    path = tmp_path / "custom.json"
    path.write_text(
        json.dumps(
            {
                "items": [
                    {"sid": "a", "expiresAt": now + 3600, "owner": "x"},
                    {"sid": "b", "expiresAt": now - 3600, "owner": "x"},
                ]
            }
        )
    )
    views = json.loads(cli("list", "-s", path, "--field", "expires=expiresAt", "-f", "json").stdout)
    assert [(v["id"], v["status"], v["group"]) for v in views] == [
        ("a", "active", "x"),
        ("b", "expired", "x"),
    ]


def test_keyed_object_ids_come_from_keys(cli, tmp_path, now):
    path = tmp_path / "sessions.json"
    path.write_text(
        json.dumps(
            {"s1": {"createdAt": now, "userId": "u"}, "s2": {"createdAt": now, "userId": "u"}}
        )
    )
    views = json.loads(cli("list", "-s", path, "-f", "json").stdout)
    assert [v["id"] for v in views] == ["s1", "s2"]


def test_express_expiry_inside_the_json_payload(cli, tmp_path, now):
    db = tmp_path / "sessions.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE sessions (sid PRIMARY KEY, sess)")
    cookie = lambda t: json.dumps({"cookie": {"expires": storegen.iso(t)}})  # noqa: E731
    conn.executemany(
        "INSERT INTO sessions VALUES (?, ?)", [("old", cookie(now - 60)), ("new", cookie(now + 60))]
    )
    conn.commit()
    conn.close()
    views = json.loads(
        cli(
            "list",
            "-s",
            f"sqlite:{db}?table=sessions",
            "--field",
            "expires=sess.cookie.expires",
            "-f",
            "json",
        ).stdout
    )
    assert {v["id"]: v["status"] for v in views} == {"old": "expired", "new": "active"}


def test_duplicate_ids_are_invalid(cli, tmp_path, now):
    path = tmp_path / "dups.json"
    record = {"session_id": "same", "created_at": now, "last_used": now, "workspace_name": "w"}
    path.write_text(json.dumps([record, dict(record), {**record, "session_id": "other"}]))
    views = json.loads(cli("list", "-s", path, "-f", "json").stdout)
    assert [v["status"] for v in views] == ["active", "invalid", "active"]
    assert views[1]["reasons"][0]["code"] == "duplicate_id"


def test_presets_command(cli):
    rows = json.loads(cli("presets", "-f", "json").stdout)
    names = {row["name"] for row in rows}
    assert names >= {
        "provisioner",
        "raptor",
        "bash-sessions",
        "copilot",
        "django",
        "rails",
        "express",
        "flask",
        "spring",
    }
    table = cli("presets").stdout
    assert "django_session" in table and "SPRING_SESSION" in table


def test_stats_prometheus_and_alerts(cli, tmp_path):
    store = build(tmp_path, "bash", "bash-sessions", "json-wrapped", [], n=60)
    text = cli("stats", *store.args, "-f", "prometheus").stdout
    assert f'sessionctl_sessions{{store="{store.path}"}} 60' in text.replace("json:", "")
    assert "# TYPE sessionctl_sessions gauge" in text
    result = cli(
        "stats", *store.args, "--alert-expired", "0", "--alert-oldest", "1m", "-f", "json", code=1
    )
    assert "alert: expired sessions" in result.stderr
    assert "alert: oldest session" in result.stderr
    cli("stats", *store.args, "--alert-expired", "1000", "-f", "json")


def test_stats_table_has_histogram_and_groups(cli, tmp_path):
    store = build(tmp_path, "bash", "bash-sessions", "json-wrapped", [], n=60)
    out = cli("stats", *store.args, "--top", "3").stdout
    assert "Age histogram" in out
    assert "Top groups by workspace_name" in out
    assert "60 total" in out


def test_unindexed_expiry_column_warns(cli, tmp_path):
    generated = storegen.generate("express", 10_050, seed=3)
    db = storegen.write_sqlite(tmp_path / "big.db", generated, with_index=True)
    result = cli("stats", "-s", db, "-f", "json")
    assert "has no index" in result.stderr  # express's table has no index on `expired`
    stats = json.loads(result.stdout)
    assert stats["warnings"]


def test_python_dash_m_works():
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "sessionctl", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.startswith("sessionctl ")


def test_help_everywhere(cli):
    for args in (
        ["-h"],
        ["--help"],
        ["list", "-h"],
        ["cleanup", "--help"],
        ["config", "-h"],
        ["config", "show", "-h"],
    ):
        assert "Usage:" in cli(*args).stdout
    version = cli("--version").stdout
    assert version.startswith("sessionctl 0.")


def test_no_store_given_is_a_usage_error(cli):
    line = one_line_error(cli("list", code=2))
    assert "no store given" in line


def test_terminal_table_leaves_out_columns_the_store_lacks(cli, tmp_path, monkeypatch):
    from sessionctl import render

    monkeypatch.setattr(render, "stdout_is_terminal", lambda: True)
    monkeypatch.setenv("COLUMNS", "120")
    store = build(tmp_path, "django", "django", "sqlite", [], n=5)
    out = cli("list", *store.args).stdout
    header = out.strip().splitlines()[0].split()
    assert header == ["ID", "STATUS", "EXPIRES", "REASONS"]  # Django keeps no creation time
    assert store.ids["active"][0] in out
    piped = cli("list", *store.args, "-f", "csv").stdout.splitlines()[0]
    assert piped.split(",")[:4] == ["id", "status", "group", "created"]  # machines get them all
