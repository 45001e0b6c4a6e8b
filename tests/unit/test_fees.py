"""Replacement fee maths: at least the 10 % nodes demand, 12.5 % asked, never above the cap."""

from __future__ import annotations

from ctripd.chain.fees import Fee, replacement_fee

GWEI = 10**9
CAP = 500 * GWEI


def test_eip1559_replacement_bumps_both_fields_by_an_eighth() -> None:
    old = Fee(max_fee=40 * GWEI, tip=2 * GWEI)
    assert replacement_fee(old, None, CAP) == Fee(max_fee=45 * GWEI, tip=2_250_000_000)


def test_replacement_follows_todays_fee_when_higher() -> None:
    old = Fee(max_fee=40 * GWEI, tip=2 * GWEI)
    now = Fee(max_fee=100 * GWEI, tip=3 * GWEI)
    assert replacement_fee(old, now, CAP) == Fee(max_fee=100 * GWEI, tip=3 * GWEI)


def test_bumps_round_up_on_tiny_fees() -> None:
    # 1 wei + 12.5 % must still be a raise the node accepts (10 % rounded up is 1 wei).
    assert replacement_fee(Fee(max_fee=1, tip=1), None, CAP) == Fee(max_fee=2, tip=2)
    assert replacement_fee(Fee(gas_price=9), None, CAP) == Fee(gas_price=11)


def test_cap_clips_and_then_refuses() -> None:
    old = Fee(max_fee=450 * GWEI, tip=2 * GWEI)
    # 450 + 12.5 % = 506.25 > cap 500; 500 is still ≥ the 10 % minimum (495): clipped.
    assert replacement_fee(old, None, CAP) == Fee(max_fee=CAP, tip=2_250_000_000)
    # 460 + 10 % = 506 > cap: no valid replacement exists.
    assert replacement_fee(Fee(max_fee=460 * GWEI, tip=2 * GWEI), None, CAP) is None


def test_tip_never_exceeds_the_max_fee() -> None:
    old = Fee(max_fee=10 * GWEI, tip=10 * GWEI)
    new = replacement_fee(old, Fee(max_fee=10 * GWEI, tip=50 * GWEI), CAP)
    assert new is not None and new.tip is not None and new.max_fee is not None
    assert new.tip <= new.max_fee


def test_legacy_replacement() -> None:
    assert replacement_fee(Fee(gas_price=8 * GWEI), None, CAP) == Fee(gas_price=9 * GWEI)
    assert replacement_fee(Fee(gas_price=8 * GWEI), Fee(gas_price=20 * GWEI), CAP) == Fee(
        gas_price=20 * GWEI
    )
    assert replacement_fee(Fee(gas_price=CAP), None, CAP) is None
