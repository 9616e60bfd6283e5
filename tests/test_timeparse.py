from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from sessionctl.domain.errors import ExitCode, SessionctlError
from sessionctl.domain.timeparse import (
    TimestampError,
    format_duration,
    parse_duration,
    parse_size,
    parse_timestamp,
    to_iso,
)

MOMENT = datetime(2026, 11, 23, 12, 30, 45, 250000, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    "value",
    [
        "2026-11-23T12:30:45.250Z",
        "2026-11-23T12:30:45.250+00:00",
        "2026-11-23T13:30:45.250+01:00",
        "2026-11-23 12:30:45.250000",  # what SQLite and Django write
        "2026-11-23T12:30:45.25",
        MOMENT,  # epoch seconds as a float
        int(MOMENT * 1000),  # epoch milliseconds
        str(int(MOMENT * 1000)),  # numeric strings too
        int(MOMENT * 1_000_000),  # epoch microseconds
        f"{MOMENT:.3f}",
    ],
)
def test_timestamp_formats_agree(value):
    assert parse_timestamp(value) == pytest.approx(MOMENT, abs=1e-3)


def test_epoch_seconds_and_milliseconds_told_apart_by_magnitude():
    assert parse_timestamp(1_700_000_000) == 1_700_000_000
    assert parse_timestamp(1_700_000_000_000) == 1_700_000_000
    # 1e11 seconds would be the year 5138: read as milliseconds (1973).
    assert parse_timestamp(100_000_000_000) == 100_000_000


def test_naive_times_use_the_given_zone():
    berlin = ZoneInfo("Europe/Berlin")
    assert parse_timestamp("2026-11-23 13:30:45.25", berlin) == pytest.approx(MOMENT)
    # An explicit offset wins over the zone.
    assert parse_timestamp("2026-11-23T12:30:45.25Z", berlin) == pytest.approx(MOMENT)


@pytest.mark.parametrize(
    "value",
    [
        "yesterday",
        "",
        "   ",
        "0000-00-00 00:00:00",
        "2026-13-01",
        float("nan"),
        float("inf"),
        -5,
        1e300,
        True,
        None,
        [2026],
        {"at": 1},
        b"\xff\xfe",
        "NaN",
    ],
)
def test_unreadable_timestamps_raise_with_a_reason(value):
    with pytest.raises(TimestampError) as error:
        parse_timestamp(value)
    assert str(error.value)


def test_to_iso_is_utc_to_the_second():
    assert to_iso(MOMENT) == "2026-11-23T12:30:45Z"
    assert to_iso(None) is None


@pytest.mark.parametrize(
    "text,seconds",
    [
        ("90s", 90),
        ("30m", 1800),
        ("12h", 43200),
        ("7d", 604800),
        ("2w", 1209600),
        ("1d12h", 129600),
        ("1h30m15s", 5415),
        ("0.5h", 1800),
        ("45", 45),
        (" 2h ", 7200),
        (3600, 3600),
    ],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["7x", "d7", "1h-5m", "-3h", "1.2.3h", "hour", ""])
def test_bad_durations_are_usage_errors(text):
    with pytest.raises(SessionctlError) as error:
        parse_duration(text, "--max-age")
    assert error.value.code == ExitCode.USAGE
    assert "--max-age" in error.value.message


@pytest.mark.parametrize(
    "seconds,text",
    [(0, "0s"), (45, "45s"), (750, "12m30s"), (3600, "1h"), (273600, "3d4h"), (-90, "-1m30s")],
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    "text,size",
    [
        ("500", 500),
        ("10K", 10240),
        ("10KiB", 10240),
        ("10KB", 10000),
        ("5MB", 5_000_000),
        ("1G", 1024**3),
    ],
)
def test_sizes(text, size):
    assert parse_size(text) == size


def test_bad_size():
    with pytest.raises(SessionctlError):
        parse_size("ten megs")
