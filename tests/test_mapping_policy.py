import json

import pytest

from sessionctl.domain import model
from sessionctl.domain.errors import SessionctlError
from sessionctl.domain.mapping import (
    PRESETS,
    Mapper,
    Mapping,
    detect_mapping,
    detect_preset,
    lookup,
    parse_field_overrides,
)
from sessionctl.domain.model import Record
from sessionctl.domain.policy import Judge, Policy, Rules
from sessionctl.domain.redact import redact_record

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    "keys,expected",
    [
        (
            ["sessionId", "createdAt", "lastAccessed", "userId"],
            {
                "id": "sessionId",
                "created": "createdAt",
                "accessed": "lastAccessed",
                "group": "userId",
            },
        ),
        (
            ["session_id", "created_at", "last_used", "workspace_name"],
            {
                "id": "session_id",
                "created": "created_at",
                "accessed": "last_used",
                "group": "workspace_name",
            },
        ),
        (
            ["SESSION_ID", "CREATION_TIME", "LAST_ACCESS_TIME", "EXPIRY_TIME", "PRINCIPAL_NAME"],
            {
                "id": "SESSION_ID",
                "created": "CREATION_TIME",
                "accessed": "LAST_ACCESS_TIME",
                "expires": "EXPIRY_TIME",
                "group": "PRINCIPAL_NAME",
            },
        ),
        (["sid", "expired", "sess"], {"id": "sid", "expires": "expired"}),
        (
            ["session_key", "session_data", "expire_date"],
            {"id": "session_key", "expires": "expire_date"},
        ),
        (
            ["id", "last_update_time", "user_id"],
            {"id": "id", "accessed": "last_update_time", "group": "user_id"},
        ),
    ],
)
def test_detection_by_common_names(keys, expected):
    mapping = detect_mapping(keys)
    for role, path in expected.items():
        assert mapping.path(role) == path
        assert mapping.origin[role] == "detected by name"


def test_detection_finds_expiry_inside_a_json_payload():
    record = {"sid": "a", "sess": json.dumps({"cookie": {"expires": "2030-01-01T00:00:00Z"}})}
    mapping = detect_mapping(["sid", "sess"], [record])
    assert mapping.path("expires") == "sess.cookie.expires"
    assert "sess" in mapping.payload


@pytest.mark.parametrize(
    "columns,table,preset",
    [
        (["session_key", "session_data", "expire_date"], "django_session", "django"),
        (["id", "session_id", "data", "created_at", "updated_at"], "sessions", "rails"),
        (["sid", "expired", "sess"], "sessions", "express"),
        (["id", "session_id", "data", "expiry"], "sessions", "flask"),
        (
            [
                "PRIMARY_ID",
                "SESSION_ID",
                "CREATION_TIME",
                "LAST_ACCESS_TIME",
                "MAX_INACTIVE_INTERVAL",
                "EXPIRY_TIME",
                "PRINCIPAL_NAME",
            ],
            "SPRING_SESSION",
            "spring",
        ),
        (
            ["id", "app_name", "user_id", "state", "created_at", "last_update_time"],
            "sessions",
            "copilot",
        ),
        (
            ["session_id", "workspace_name", "created_at", "last_used"],
            "bash_sessions",
            "bash-sessions",
        ),
    ],
)
def test_presets_detected_from_table_schema(columns, table, preset):
    assert detect_preset(columns, "table", table).name == preset


def test_record_presets_detected_from_fields():
    assert (
        detect_preset(["userId", "workspaceSlug", "createdAt", "$key"], "document").name
        == "provisioner"
    )
    assert (
        detect_preset(
            ["session_id", "cdp_url", "created_at", "last_accessed", "browser_type"], "document"
        ).name
        == "raptor"
    )
    assert detect_preset(["foo", "bar"], "document") is None


def test_every_preset_maps_only_known_roles():
    for preset in PRESETS.values():
        assert set(preset.fields) <= {"id", "created", "accessed", "expires", "group"}
        assert preset.fields["id"], preset.name


def test_dotted_paths_reach_into_json_text_columns():
    record = {
        "sess": json.dumps({"cookie": {"expires": "2030-01-01T00:00:00Z"}, "list": [1, {"x": 2}]})
    }
    assert lookup(record, "sess.cookie.expires") == "2030-01-01T00:00:00Z"
    assert lookup(record, "sess.list.1.x") == 2
    assert lookup(record, "sess.missing") is None
    assert lookup({"sess": "not json"}, "sess.cookie") is None


def test_field_overrides():
    assert parse_field_overrides(["expires=expiry", "group="]) == {
        "expires": "expiry",
        "group": None,
    }
    with pytest.raises(SessionctlError):
        parse_field_overrides(["expires"])
    mapping = Mapping(fields={"id": "id"})
    with pytest.raises(SessionctlError):
        mapping.with_overrides({"colour": "x"}, "--field")


def _session(data, fields, policy=None, key="k"):
    mapping = Mapping(
        fields={
            "id": None,
            "created": None,
            "accessed": None,
            "expires": None,
            "group": None,
            **fields,
        }
    )
    session = Mapper(mapping).session(Record(key=key, data=data, size=None))
    return session, Judge(policy or Policy(), mapping).verdict(session, NOW)


def test_expiry_field_in_the_past_is_expired():
    session, verdict = _session({"id": "a", "exp": NOW - 10}, {"id": "id", "expires": "exp"})
    assert verdict.status == "expired"
    assert [r.code for r in verdict.expired] == [model.EXPIRED]
    _, verdict = _session({"id": "a", "exp": NOW + 10}, {"id": "id", "expires": "exp"})
    assert verdict.status == "active"


def test_idle_timeout_and_max_age_each_give_a_reason():
    policy = Policy(idle_timeout=3600, max_age=86400)
    fields = {"id": "id", "created": "c", "accessed": "a"}
    _, verdict = _session({"id": "a", "c": NOW - 2 * 86400, "a": NOW - 7200}, fields, policy)
    assert {r.code for r in verdict.expired} == {model.IDLE, model.MAX_AGE}
    _, verdict = _session({"id": "a", "c": NOW - 100, "a": NOW - 50}, fields, policy)
    assert verdict.status == "active"


def test_idle_falls_back_to_creation_when_never_accessed():
    policy = Policy(idle_timeout=60)
    _, verdict = _session({"id": "a", "c": NOW - 120}, {"id": "id", "created": "c"}, policy)
    assert [r.code for r in verdict.expired] == [model.IDLE]


def test_a_session_carries_every_reason():
    rules = Rules(
        required=("id", "cdp_url"),
        allowed={"browser": frozenset({"chromium"})},
        types={"port": "integer"},
    )
    policy = Policy(idle_timeout=60, rules=rules)
    data = {"c": "garbage", "a": NOW + 86400, "browser": "netscape", "port": "9222"}
    _, verdict = _session(data, {"id": "id", "created": "c", "accessed": "a"}, policy)
    codes = sorted(r.code for r in verdict.invalid)
    assert codes == sorted(
        [
            model.BAD_TIMESTAMP,
            model.MISSING_ID,
            model.MISSING_FIELD,
            model.NOT_ALLOWED,
            model.WRONG_TYPE,
            model.FUTURE_TIMESTAMP,
        ]
    )
    assert verdict.status == "invalid"


def test_skew_allows_small_clock_differences():
    fields = {"id": "id", "accessed": "a"}
    _, verdict = _session({"id": "x", "a": NOW + 60}, fields)
    assert verdict.status == "active"
    _, verdict = _session({"id": "x", "a": NOW + 600}, fields)
    assert [r.code for r in verdict.invalid] == [model.FUTURE_TIMESTAMP]


def test_far_future_expiry_is_invalid_and_access_before_creation_inconsistent():
    _, verdict = _session({"id": "x", "e": NOW + 40 * 365 * 86400}, {"id": "id", "expires": "e"})
    assert [r.code for r in verdict.invalid] == [model.FUTURE_TIMESTAMP]
    _, verdict = _session(
        {"id": "x", "c": NOW - 10, "a": NOW - 86400}, {"id": "id", "created": "c", "accessed": "a"}
    )
    assert [r.code for r in verdict.invalid] == [model.INCONSISTENT]


def test_corrupt_record_is_invalid_not_an_error():
    mapping = Mapping(fields={"id": "$key"})
    session = Mapper(mapping).session(Record(key="bad.json", data=None, size=3, error="not JSON"))
    verdict = Judge(Policy(), mapping).verdict(session, NOW)
    assert session.id == "bad.json"
    assert [r.code for r in verdict.invalid] == [model.CORRUPT]


def test_rules_from_config_reject_unknown_types():
    with pytest.raises(SessionctlError):
        Rules.from_config({"types": {"x": "uuid"}})
    with pytest.raises(SessionctlError):
        Rules.from_config({"forbidden": ["x"]})


def test_redaction_hides_payload_and_secret_names():
    data = {
        "sid": "a",
        "sess": '{"token": "abc"}',
        "user": {"name": "n", "auth_token": "s3cret"},
        "blob": b"\x00\x01",
    }
    shown = redact_record(data, ("sess",), show_secrets=False)
    assert shown["sid"] == "a"
    assert shown["sess"] == "<redacted: 16 bytes>"
    assert shown["user"]["name"] == "n"
    assert shown["user"]["auth_token"].startswith("<redacted")
    assert "s3cret" not in json.dumps(shown)
    assert shown["blob"] == "<binary: 2 bytes>"
    assert redact_record(data, ("sess",), show_secrets=True)["user"]["auth_token"] == "s3cret"
