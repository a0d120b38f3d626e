"""RFC 3339 timestamps: strict parsing (any offset, any sub-second precision) and the one
output format. Pure functions."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

_RFC3339_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)


def parse_rfc3339(text: str) -> datetime:
    """The instant, in UTC, truncated to microseconds (PostgreSQL's precision, and so the
    precision at which events are ordered). Raises ValueError naming the rule."""
    match = _RFC3339_RE.fullmatch(text)
    if match is None:
        raise ValueError(
            "must be an RFC 3339 timestamp such as 2026-11-28T15:12:02.5Z or "
            "2026-11-28T16:12:02+01:00 (date, 'T', time, and 'Z' or an offset)"
        )
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    fraction = (match.group(7) or "")[:6].ljust(6, "0")
    if match.group(8):
        tz = UTC
    else:
        sign = 1 if match.group(9) == "+" else -1
        off_h, off_m = int(match.group(10)), int(match.group(11))
        if off_h > 23 or off_m > 59:
            raise ValueError("offset must be at most +/-23:59")
        tz = timezone(sign * timedelta(hours=off_h, minutes=off_m))
    if second == 60:
        raise ValueError("leap seconds (:60) are not supported")
    try:
        moment = datetime(year, month, day, hour, minute, second, int(fraction), tzinfo=tz)
        return moment.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"is not a real date and time ({exc})") from None


def format_rfc3339(moment: datetime) -> str:
    """UTC with 'Z'; microseconds only when there are any."""
    text = moment.astimezone(UTC).isoformat()
    return text.removesuffix("+00:00") + "Z"
