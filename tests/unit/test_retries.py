"""Retry-After parsing (RPC and webhooks), the webhook retry schedule, RPC URLs in logs."""

from __future__ import annotations

from datetime import UTC, datetime

from ctripd.chain.rpc import display_url
from ctripd.jobs.webhooks import retry_delay
from ctripd.retry_after import parse_retry_after


def test_retry_after_parsing() -> None:
    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    assert parse_retry_after(" 7 ", now) == 7
    assert parse_retry_after("Mon, 30 Nov 2026 12:00:30 GMT", now) == 30
    assert parse_retry_after("Mon, 30 Nov 2026 11:00:00 GMT", now) == 0  # already past
    for invalid in ("", "-5", "1.5", "1e3", "+5", "²", "١٢", "soon", "Mon, 30 Nov 2026 25:00:00"):
        assert parse_retry_after(invalid, now) is None, invalid


def test_display_url_hides_keys() -> None:
    assert display_url("https://mainnet.infura.io/v3/SECRETKEY") == "https://mainnet.infura.io/…"
    assert display_url("https://u:pw@rpc.example:8545/?apikey=SECRET") == (
        "https://rpc.example:8545/…"
    )
    assert display_url("http://127.0.0.1:8545") == "http://127.0.0.1:8545"
    assert display_url("http://127.0.0.1:8545/") == "http://127.0.0.1:8545"


def test_retry_after_parsing_and_backoff() -> None:
    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    assert parse_retry_after("30", now) == 30
    assert parse_retry_after("Mon, 30 Nov 2026 12:01:00 GMT", now) == 60
    assert parse_retry_after("Mon, 30 Nov 2026 11:00:00 GMT", now) == 0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None
    schedule = [5, 300]
    assert retry_delay(3, schedule) is None
    delays = {retry_delay(1, schedule) for _ in range(50)}
    assert all(d is not None and 4.5 <= d <= 5.5 for d in delays)
    assert len(delays) > 1, "jittered"
    assert retry_delay(1, schedule, retry_after=60) == 60
    assert all(retry_delay(2, schedule) <= 300 for _ in range(50)), "capped"
    assert retry_delay(2, schedule, retry_after=10**6) == 300
