from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.helpers.strategies import offsets, rfc3339, times
from worker.timefmt import format_rfc3339, parse_rfc3339


@pytest.mark.parametrize(
    ("text", "instant"),
    [
        ("2026-11-28T15:12:02Z", datetime(2026, 11, 28, 15, 12, 2, tzinfo=UTC)),
        ("2026-11-28t15:12:02z", datetime(2026, 11, 28, 15, 12, 2, tzinfo=UTC)),
        ("2026-11-28T16:12:02+01:00", datetime(2026, 11, 28, 15, 12, 2, tzinfo=UTC)),
        ("2026-11-28T10:12:02.5-05:00", datetime(2026, 11, 28, 15, 12, 2, 500000, tzinfo=UTC)),
        # beyond microseconds is truncated: PostgreSQL's precision is the ordering precision
        ("2026-11-28T15:12:02.123456789Z", datetime(2026, 11, 28, 15, 12, 2, 123456, tzinfo=UTC)),
    ],
)
def test_parses_any_offset_and_precision(text: str, instant: datetime) -> None:
    assert parse_rfc3339(text) == instant


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("2026-11-28", "RFC 3339"),
        ("2026-11-28T15:12:02", "RFC 3339"),  # no offset
        ("2026-11-28 15:12:02Z", "RFC 3339"),
        ("2026-13-28T15:12:02Z", "real date"),
        ("2026-02-30T15:12:02Z", "real date"),
        ("2026-11-28T24:00:00Z", "real date"),
        ("2026-11-28T15:12:60Z", "leap seconds"),
        ("2026-11-28T15:12:02+24:00", "offset"),
        ("1764342722", "RFC 3339"),
        ("", "RFC 3339"),
    ],
)
def test_rejects_what_is_not_rfc3339(text: str, rule: str) -> None:
    with pytest.raises(ValueError, match=rule):
        parse_rfc3339(text)


def test_formats_utc_with_z() -> None:
    assert format_rfc3339(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2026-01-02T03:04:05Z"
    assert (
        format_rfc3339(datetime(2026, 1, 2, 3, 4, 5, 60, tzinfo=UTC))
        == "2026-01-02T03:04:05.000060Z"
    )


@given(times, offsets)
def test_round_trip(moment: datetime, offset: str) -> None:
    parsed = parse_rfc3339(rfc3339(moment, offset))
    assert parsed == moment
    assert parse_rfc3339(format_rfc3339(parsed)) == parsed


@given(
    st.datetimes(timezones=st.just(UTC))
    # away from years 1 and 9999: another offset would move the instant out of range
    | st.datetimes(datetime(2, 1, 1), datetime(9998, 12, 31), timezones=st.timezones())
)
def test_formats_as_isoformat_with_z(moment: datetime) -> None:
    """The one output format: ``isoformat()`` of the instant in UTC, 'Z' for '+00:00'."""
    assert format_rfc3339(moment) == moment.astimezone(UTC).isoformat()[:-6] + "Z"
