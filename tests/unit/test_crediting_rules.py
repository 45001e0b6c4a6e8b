"""The crediting rules, pure: what a payment's status becomes for the sums its transfers give."""

from __future__ import annotations

from datetime import UTC, datetime

from ctripd.ledger.crediting import Policy, decide, due_minimum

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def test_due_minimum_rounds_against_the_payer() -> None:
    assert due_minimum(10_000, 0) == 10_000
    assert due_minimum(10_000, 100) == 9_900
    assert due_minimum(1, 9_999) == 1  # a tolerance never makes a payment free
    assert due_minimum(199, 50) == 199  # 0.995 base units of tolerance round to none


def test_decide_keeps_paid_late_once_paid() -> None:
    policy = Policy()
    assert decide("detected", True, 100, NOW, 100, 100, NOW, policy) == ("confirmed", True)


def test_decide_tolerance() -> None:
    policy = Policy(tolerance_bps=100)
    assert decide("pending", False, 10_000, NOW, 9_900, 0, NOW, policy)[0] == "detected"
    assert decide("pending", False, 10_000, NOW, 9_899, 0, NOW, policy)[0] == "pending"
