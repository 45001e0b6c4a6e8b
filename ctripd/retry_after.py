"""The HTTP `Retry-After` header, read the same way for webhook receivers and RPC providers."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """`Retry-After` as seconds from now: delta-seconds or an HTTP-date (one already past is 0);
    None if absent or invalid, a negative or fractional number included."""
    if not value:
        return None
    value = value.strip()
    # ASCII only: str.isdigit() also accepts "²" (which float() refuses) and other scripts' digits.
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())
