"""The payment object of the API, the CLI and webhook payloads, and the reads that build it."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import asyncpg

from ctripd.db import Conn, queries
from ctripd.formats import iso
from ctripd.money import to_decimal_string

Q = queries("payments")

STATUSES = ("pending", "detected", "confirmed", "expired", "canceled")


def payment_uri(address: str, chain_id: int, token_address: str | None, units: int) -> str:
    """EIP-681 URI a wallet can pay from."""
    if token_address is None:
        return f"ethereum:{address}@{chain_id}?value={units}"
    return f"ethereum:{token_address}@{chain_id}/transfer?address={address}&uint256={units}"


def confirmations(head: int | None, block_number: int, status: str) -> int:
    if status != "live" or head is None or head < block_number:
        return 0
    return head - block_number + 1


def same_asset(transfer: asyncpg.Record, payment: asyncpg.Record | dict[str, Any]) -> bool:
    """Whether a transfer is in its payment's asset, the only one its sums count."""
    return (transfer["token_address"] or "").lower() == (payment["token_address"] or "").lower()


def stored_asset(row: asyncpg.Record | dict[str, Any]) -> tuple[str, int] | None:
    """(symbol, decimals) recorded with a transfer; None on a row from before migration 0006
    that it could not backfill."""
    return (row["asset"], row["decimals"]) if row["decimals"] is not None else None


def render_transfer(
    row: asyncpg.Record | dict[str, Any], asset: tuple[str, int] | None, head: int | None
) -> dict[str, Any]:
    """The transfer object, in its own `asset` (symbol, decimals), which may be another than its
    payment's; with the asset unknown, `asset`, `decimals` and `amount` are null."""
    amount = int(row["amount"])
    symbol, decimals = asset if asset is not None else (None, None)
    return {
        "tx_hash": row["tx_hash"],
        "log_index": row["log_index"],
        "kind": row["kind"],
        "block_number": row["block_number"],
        "block_hash": row["block_hash"],
        "from": row["from_address"],
        "asset": symbol,
        "token_address": row["token_address"],
        "decimals": decimals,
        "amount": to_decimal_string(amount, decimals) if decimals is not None else None,
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

    def asset_of(transfer: asyncpg.Record) -> tuple[str, int] | None:
        """The stored asset; a row recorded without one, in the payment's asset, has the
        payment's (crediting always stores it, but it is not a column constraint)."""
        stored = stored_asset(transfer)
        if stored is None and same_asset(transfer, payment):
            return payment["asset"], decimals
        return stored

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
        "transfers": [render_transfer(t, asset_of(t), head) for t in transfers],
        "order_id": payment["order_id"],
        "metadata": payment["metadata"],
        "created_at": iso(payment["created_at"]),
        "expires_at": iso(payment["expires_at"]),
        "detected_at": iso(payment["detected_at"]),
        "confirmed_at": iso(payment["confirmed_at"]),
        "sweep": {
            "status": sweep["status"] if sweep else "none",
            "tx_hash": sweep["tx_hash"] if sweep else None,
        },
    }


async def load_payment(conn: Conn | asyncpg.Pool, payment_id: str) -> dict[str, Any] | None:
    """The payment object, or None if no such payment. Callers check the merchant."""
    row = await conn.fetchrow(Q["payment_by_id"], payment_id)
    if row is None:
        return None
    transfers = await conn.fetch(Q["transfers_of_payment"], payment_id)
    sweep = await conn.fetchrow(Q["sweep_of_payment"], payment_id)
    rendered = render_payment(row, transfers, sweep)
    rendered["merchant"] = row["merchant"]
    return rendered


async def render_rows(
    conn: Conn | asyncpg.Pool, rows: list[asyncpg.Record]
) -> list[dict[str, Any]]:
    """The payment objects of payment rows (with their chain's `head`), in their order; the
    transfers and sweeps of all of them are read in two queries."""
    ids = [r["id"] for r in rows]
    transfers: dict[str, list[asyncpg.Record]] = defaultdict(list)
    sweeps: dict[str, asyncpg.Record] = {}
    if ids:
        for t in await conn.fetch(Q["transfers_of_payments"], ids):
            transfers[t["payment_id"]].append(t)
        sweeps = {s["payment_id"]: s for s in await conn.fetch(Q["sweeps_of_payments"], ids)}
    return [render_payment(r, transfers[r["id"]], sweeps.get(r["id"])) for r in rows]


async def load_payments(conn: Conn | asyncpg.Pool, ids: list[str]) -> dict[str, dict[str, Any]]:
    """`load_payment` for several payments at once (three queries in all), by id."""
    if not ids:
        return {}
    rows = await conn.fetch(Q["payments_by_ids"], ids)
    rendered = await render_rows(conn, rows)
    return {r["id"]: {**p, "merchant": r["merchant"]} for r, p in zip(rows, rendered, strict=True)}
