"""The few pieces of the ERC-20 ABI ctripd speaks: call data it sends, the event it reads."""

from __future__ import annotations

from typing import Any

# keccak("Transfer(address,address,uint256)")
TRANSFER_TOPIC = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
TRANSFER_SELECTOR = "a9059cbb"
BALANCE_OF_SELECTOR = "70a08231"
DECIMALS_CALL = "0x313ce567"  # decimals()


def _word(value: int | str) -> str:
    """One 32-byte ABI word: an address left-padded, or an unsigned integer."""
    if isinstance(value, str):
        return value.lower().removeprefix("0x").rjust(64, "0")
    return f"{value:064x}"


def transfer_data(to: str, amount: int) -> str:
    """Call data of `transfer(to, amount)`."""
    return "0x" + TRANSFER_SELECTOR + _word(to) + _word(amount)


def balance_of_data(owner: str) -> str:
    """Call data of `balanceOf(owner)`."""
    return "0x" + BALANCE_OF_SELECTOR + _word(owner)


def transfer_logged(receipt: dict[str, Any], token: str, sender: str, to: str, amount: int) -> bool:
    """Whether the receipt holds `token`'s Transfer of `amount` from `sender` to `to`."""
    sender, to = sender.lower(), to.lower()
    for entry in receipt.get("logs") or []:
        topics = entry.get("topics") or []
        if (
            len(topics) == 3
            and topics[0] == TRANSFER_TOPIC
            and str(entry.get("address", "")).lower() == token.lower()
            and "0x" + topics[1][-40:].lower() == sender
            and "0x" + topics[2][-40:].lower() == to
            and int(entry.get("data") or "0x0", 16) == amount
        ):
            return True
    return False
