"""Amounts: integers in base units inside, decimal strings at the API edge. No floats."""

from __future__ import annotations

import re

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
