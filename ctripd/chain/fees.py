"""Sweep fees: EIP-1559 where the chain has a base fee, legacy gas price otherwise, under a cap.

A fee is a `Fee`: EIP-1559 (`max_fee`, `tip`) or legacy (`gas_price`); `per_gas` is what the
sender must be able to pay per unit of gas either way. A replacement raises every field by at
least the 10 % nodes demand (12.5 % asked, so that stricter pools accept it too).
"""

from __future__ import annotations

from dataclasses import dataclass

from ctripd.chain.rpc import RpcClient


class FeeCapError(Exception):
    """The fee the chain asks for now is above the chain's `max_fee_per_gas`."""


@dataclass(frozen=True)
class Fee:
    max_fee: int | None = None
    tip: int | None = None
    gas_price: int | None = None

    @property
    def eip1559(self) -> bool:
        return self.max_fee is not None

    @property
    def per_gas(self) -> int:
        """The most the transaction can cost per unit of gas."""
        value = self.max_fee if self.max_fee is not None else self.gas_price
        assert value is not None
        return value

    def tx_fields(self) -> dict[str, int]:
        if self.eip1559:
            assert self.tip is not None
            return {"type": 2, "maxFeePerGas": self.per_gas, "maxPriorityFeePerGas": self.tip}
        return {"gasPrice": self.per_gas}


async def current_fee(rpc: RpcClient, cap: int) -> Fee:
    """What a transaction should offer now: twice the next base fee plus the node's suggested
    tip (room for several full blocks of base-fee rises), or the node's gas price on chains
    whose blocks have no base fee (pre-London).

    Raises FeeCapError when even the bare minimum is above `cap`.
    """
    latest = await rpc.call("eth_getBlockByNumber", ["latest", False])
    if latest.get("baseFeePerGas") is None:
        gas_price = int(await rpc.call("eth_gasPrice"), 16)
        if gas_price > cap:
            raise FeeCapError(f"gas price {gas_price} above the cap {cap}")
        return Fee(gas_price=gas_price)
    history, tip_hex = await rpc.batch(
        [("eth_feeHistory", [1, "latest", []]), ("eth_maxPriorityFeePerGas", [])]
    )
    # The last entry of feeHistory is the next block's base fee.
    base = max(int(latest["baseFeePerGas"], 16), int(history["baseFeePerGas"][-1], 16))
    tip = int(tip_hex, 16)
    if base + tip > cap:
        raise FeeCapError(f"base fee {base} + tip {tip} above the cap {cap}")
    return Fee(max_fee=min(cap, 2 * base + tip), tip=tip)


def _min_bump(old: int) -> int:
    return old + -(-old // 10)


def _bump(old: int) -> int:
    return old + -(-old // 8)


def replacement_fee(old: Fee, now: Fee | None, cap: int) -> Fee | None:
    """A fee that replaces `old` (same nonce): +12.5 % or the current fee, whichever is higher,
    clipped to `cap`; None when the cap leaves no room for the 10 % a replacement needs."""
    now = now or Fee()
    if old.eip1559:
        assert old.max_fee is not None and old.tip is not None
        max_fee = min(cap, max(_bump(old.max_fee), now.max_fee or 0))
        tip = min(max_fee, max(_bump(old.tip), now.tip or 0))
        if max_fee < _min_bump(old.max_fee) or tip < _min_bump(old.tip):
            return None
        return Fee(max_fee=max_fee, tip=tip)
    assert old.gas_price is not None
    price = min(cap, max(_bump(old.gas_price), now.gas_price or 0))
    if price < _min_bump(old.gas_price):
        return None
    return Fee(gas_price=price)
