"""Amounts at the API edge and the EIP-681 URI a wallet pays from: pure functions."""

from __future__ import annotations

import pytest

from ctripd.ledger.objects import payment_uri
from ctripd.money import MAX_UINT256, AmountError, to_base_units, to_decimal_string

ADDRESS = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
TOKEN = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"


@pytest.mark.parametrize(
    ("text", "decimals", "units"),
    [
        ("12.5", 6, 12_500_000),
        ("0.000001", 6, 1),
        ("1", 0, 1),
        ("1.000000000000000000", 18, 10**18),
        ("7", 6, 7_000_000),
    ],
)
def test_decimal_strings_become_base_units(text: str, decimals: int, units: int) -> None:
    assert to_base_units(text, decimals) == units


@pytest.mark.parametrize(
    ("text", "decimals", "problem"),
    [
        ("1.0000001", 6, "more than 6 decimals"),
        ("0", 6, "greater than zero"),
        ("0.000", 6, "greater than zero"),
        ("-1", 6, "plain decimal"),
        ("+1", 6, "plain decimal"),
        ("1e3", 6, "plain decimal"),
        ("01", 6, "plain decimal"),
        (".5", 6, "plain decimal"),
        ("1.", 6, "plain decimal"),
        ("1,5", 6, "plain decimal"),
        ("", 6, "plain decimal"),
        (str(MAX_UINT256 + 1), 0, r"exceeds 2\^256-1"),
    ],
)
def test_bad_amounts_are_refused(text: str, decimals: int, problem: str) -> None:
    with pytest.raises(AmountError, match=problem):
        to_base_units(text, decimals)


@pytest.mark.parametrize(
    ("units", "decimals", "text"),
    [
        (12_500_000, 6, "12.5"),
        (1, 18, "0.000000000000000001"),
        (10**18, 18, "1"),
        (0, 6, "0"),
        (-1_500_000, 6, "-1.5"),
        (42, 0, "42"),
    ],
)
def test_base_units_become_decimal_strings(units: int, decimals: int, text: str) -> None:
    assert to_decimal_string(units, decimals) == text


def test_round_trip_is_exact_at_the_edges() -> None:
    for decimals in (0, 6, 18, 36):
        for units in {1, max(1, 10**decimals - 1), 10**decimals, MAX_UINT256}:
            assert to_base_units(to_decimal_string(units, decimals), decimals) == units


def test_eip681_uris() -> None:
    assert payment_uri(ADDRESS, 1, None, 5 * 10**16) == (
        f"ethereum:{ADDRESS}@1?value=50000000000000000"
    )
    assert payment_uri(ADDRESS, 56, TOKEN, 12_500_000) == (
        f"ethereum:{TOKEN}@56/transfer?address={ADDRESS}&uint256=12500000"
    )
