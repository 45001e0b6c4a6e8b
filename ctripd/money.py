"""Amounts: integers in base units inside, decimal strings at the API edge. No floats."""

from __future__ import annotations

import re
from decimal import Decimal

MAX_UINT256 = 2**256 - 1
_DECIMAL = re.compile(r"(0|[1-9][0-9]*)(?:\.([0-9]+))?")


class AmountError(ValueError):
    """An amount string that is not a positive decimal the asset can hold."""


def to_base_units(text: str, decimals: int) -> int:
    """'12.5' with 6 decimals → 12500000; refuses exponents, signs, excess decimals, zero."""
    match = _DECIMAL.fullmatch(text)
    if not match:
        raise AmountError('must be a plain decimal string such as "12.5"')
    whole, frac = match.group(1), match.group(2) or ""
    if len(frac) > decimals:
        raise AmountError(f"has more than {decimals} decimals")
    units: int = int(whole) * 10**decimals + int(frac.ljust(decimals, "0") or "0")
    if units <= 0:
        raise AmountError("must be greater than zero")
    if units > MAX_UINT256:
        raise AmountError("exceeds 2^256-1 base units")
    return units


def to_decimal_string(units: int, decimals: int) -> str:
    """12500000 with 6 decimals → '12.5'."""
    sign = "-" if units < 0 else ""
    whole, frac = divmod(abs(units), 10**decimals)
    if decimals == 0 or frac == 0:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{str(frac).rjust(decimals, '0').rstrip('0')}"


# Fiat sums are integers of 10^-18 units of their currency, so that the status rules (integers
# only) apply to them unchanged. A value in fiat is rounded down (in the payer's disfavour), an
# asset amount due up.
FIAT_DECIMALS = 18
FIAT_SCALE = 10**FIAT_DECIMALS


def units_due(price: Decimal, rate: Decimal, decimals: int) -> int:
    """Base units of an asset worth `price` at `rate` (currency per whole unit), rounded up."""
    pn, pd = price.as_integer_ratio()
    rn, rd = rate.as_integer_ratio()
    units: int = -(-(pn * 10**decimals * rd) // (pd * rn))
    return units


def fiat_value(units: int, rate: Decimal, decimals: int) -> int:
    """What `units` base units are worth at `rate`, in FIAT_SCALE units, rounded down."""
    rn, rd = rate.as_integer_ratio()
    value: int = units * rn * FIAT_SCALE // (rd * 10**decimals)
    return value


def scaled(amount: Decimal) -> int:
    """A fiat amount (at most FIAT_DECIMALS decimals) in FIAT_SCALE units."""
    return int(amount.scaleb(FIAT_DECIMALS))


def fiat_string(value: int, places: int) -> str:
    """FIAT_SCALE units as a decimal string of `places` decimals, rounded down."""
    whole, frac = divmod(value, FIAT_SCALE)
    digits = str(frac).rjust(FIAT_DECIMALS, "0")[:places]
    return f"{whole}.{digits}" if places else str(whole)


def unscaled(value: int) -> Decimal:
    """FIAT_SCALE units as an exact Decimal amount."""
    return Decimal(value).scaleb(-FIAT_DECIMALS)
