"""The payment object of the API and of webhook payloads, rendered from its rows."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from ctripd.db import queries
from ctripd.money import to_decimal_string

Q = queries("payments")


def payment_uri(address: str, chain_id: int, token_address: str | None, units: int) -> str:
    """EIP-681 URI a wallet can pay from."""
    if token_address is None:
        return f"ethereum:{address}@{chain_id}?value={units}"
    return f"ethereum:{token_address}@{chain_id}/transfer?address={address}&uint256={units}"


def _iso(ts: datetime | None) -> str | None:
    return ts.isoformat().replace("+00:00", "Z") if ts is not None else None


def confirmations(head: int | None, block_number: int, status: str) -> int:
    if status != "live" or head is None or head < block_number:
        return 0
    return head - block_number + 1


def render_transfer(
    row: asyncpg.Record | dict[str, Any], decimals: int, head: int | None
) -> dict[str, Any]:
    amount = int(row["amount"])
    return {
        "tx_hash": row["tx_hash"],
        "log_index": row["log_index"],
        "kind": row["kind"],
        "block_number": row["block_number"],
        "block_hash": row["block_hash"],
        "from": row["from_address"],
        "amount": to_decimal_string(amount, decimals),
        "amount_base_units": str(amount),
        "confirmations": confirmations(head, row["block_number"], row["status"]),
        "status": row["status"],
    }


def render_payment(
    payment: asyncpg.Record | dict[str, Any],
    transfers: list[asyncpg.Record],
    sweep: asyncpg.Record | None,
) -> dict[str, Any]:
    decimals: int = payment["decimals"]
    amount = int(payment["amount"])
    received = int(payment["amount_received"])
    confirmed = int(payment["amount_confirmed"])
    head = payment["head"]

    def dec(units: int) -> str:
        return to_decimal_string(units, decimals)

    return {
        "id": payment["id"],
        "chain": payment["chain"],
        "chain_id": payment["chain_id"],
        "asset": payment["asset"],
        "token_address": payment["token_address"],
        "decimals": decimals,
        "amount": dec(amount),
        "amount_base_units": str(amount),
        "address": payment["address"],
        "payment_uri": payment_uri(
            payment["address"], payment["chain_id"], payment["token_address"], amount
        ),
        "status": payment["status"],
        "amount_received": dec(received),
        "amount_received_base_units": str(received),
        "amount_confirmed": dec(confirmed),
        "amount_confirmed_base_units": str(confirmed),
        "amount_overpaid": dec(max(0, received - amount)),
        "amount_overpaid_base_units": str(max(0, received - amount)),
        "paid_late": payment["paid_late"],
        "confirmations_required": payment["confirmations_required"],
        "transfers": [render_transfer(t, decimals, head) for t in transfers],
        "order_id": payment["order_id"],
        "metadata": payment["metadata"],
        "created_at": _iso(payment["created_at"]),
        "expires_at": _iso(payment["expires_at"]),
        "detected_at": _iso(payment["detected_at"]),
        "confirmed_at": _iso(payment["confirmed_at"]),
        "sweep": {
            "status": sweep["status"] if sweep else "none",
            "tx_hash": sweep["tx_hash"] if sweep else None,
        },
    }


async def load_payment(
    conn: asyncpg.Connection | asyncpg.Pool, payment_id: str
) -> dict[str, Any] | None:
    """The payment object, or None if no such payment. Callers check the merchant."""
    row = await conn.fetchrow(Q["payment_by_id"], payment_id)
    if row is None:
        return None
    transfers = await conn.fetch(Q["transfers_of_payment"], payment_id)
    sweep = await conn.fetchrow(Q["sweep_of_payment"], payment_id)
    rendered = render_payment(row, transfers, sweep)
    rendered["merchant"] = row["merchant"]
    return rendered
