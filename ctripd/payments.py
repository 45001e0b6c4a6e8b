"""Payments: the payment object of the API and of webhook payloads, and the writes that create,
list and cancel payments (each state change with its event, in one transaction)."""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

import asyncpg
import orjson

from ctripd.db import queries
from ctripd.money import to_decimal_string

Q = queries("payments")

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    # What callers pass as "the connection": a bare one or one acquired from the pool.
    Conn = asyncpg.Connection | PoolConnectionProxy[asyncpg.Record]


def payment_uri(address: str, chain_id: int, token_address: str | None, units: int) -> str:
    """EIP-681 URI a wallet can pay from."""
    if token_address is None:
        return f"ethereum:{address}@{chain_id}?value={units}"
    return f"ethereum:{token_address}@{chain_id}/transfer?address={address}&uint256={units}"


def iso(ts: datetime | None) -> str | None:
    """An API timestamp: ISO 8601 in UTC with a Z."""
    return ts.isoformat().replace("+00:00", "Z") if ts is not None else None


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


async def render_rows(conn: Any, rows: list[asyncpg.Record]) -> list[dict[str, Any]]:
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


async def load_payments(conn: Any, ids: list[str]) -> dict[str, dict[str, Any]]:
    """`load_payment` for several payments at once (three queries in all), by id."""
    if not ids:
        return {}
    rows = await conn.fetch(Q["payments_by_ids"], ids)
    rendered = await render_rows(conn, rows)
    return {r["id"]: {**p, "merchant": r["merchant"]} for r, p in zip(rows, rendered, strict=True)}


@dataclass(frozen=True, slots=True)
class NewPayment:
    """A validated create request (amount in base units, metadata already as compact JSON)."""

    merchant: str
    chain: str
    chain_id: int
    asset: str
    token_address: str | None
    decimals: int
    amount: int
    confirmations_required: int
    expires_in: int
    order_id: str | None
    metadata: dict[str, Any]
    metadata_json: str
    idempotency_key: str | None
    request_hash: bytes | None


def new_payment_id() -> str:
    return f"pay_{uuid.uuid4().hex}"


async def next_address_indexes(conn: asyncpg.Connection | asyncpg.Pool, count: int) -> list[int]:
    """`count` fresh derivation indexes from the database sequence, unique across processes."""
    return [r["index"] for r in await conn.fetch(Q["next_address_indexes"], count)]


async def insert_payment(
    conn: asyncpg.Connection | asyncpg.Pool, new: NewPayment, index: int, address: str
) -> dict[str, Any] | None:
    """Insert the payment and its `payment.created` event in one statement (so atomically).

    Returns the payment object, or None when the merchant already used this idempotency key.
    The event payload is the payment object as rendered for the API, like `record_event` writes.
    """
    from ctripd.events import new_event_id

    now = datetime.now(UTC)
    row: dict[str, Any] = {
        "id": new_payment_id(),
        "chain": new.chain,
        "chain_id": new.chain_id,
        "asset": new.asset,
        "token_address": new.token_address,
        "decimals": new.decimals,
        "amount": new.amount,
        "address": address,
        "status": "pending",
        "amount_received": 0,
        "amount_confirmed": 0,
        "paid_late": False,
        "confirmations_required": new.confirmations_required,
        "order_id": new.order_id,
        "metadata": new.metadata,
        "created_at": now,
        "expires_at": now + timedelta(seconds=new.expires_in),
        "detected_at": None,
        "confirmed_at": None,
        "head": None,
    }
    payment = render_payment(row, [], None)
    event_id = new_event_id()
    payload = {
        "id": event_id,
        "type": "payment.created",
        "created_at": payment["created_at"],
        "data": {"payment": payment},
    }
    inserted = await conn.fetchval(
        Q["insert_payment_with_event"],
        row["id"],
        new.merchant,
        new.chain,
        new.chain_id,
        new.asset,
        new.token_address,
        new.decimals,
        new.amount,
        address,
        index,
        new.confirmations_required,
        new.order_id,
        new.metadata_json,
        new.idempotency_key,
        new.request_hash,
        now,
        row["expires_at"],
        event_id,
        orjson.dumps(payload).decode(),
    )
    return payment if inserted is not None else None


async def payment_by_idempotency_key(
    conn: asyncpg.Connection | asyncpg.Pool, merchant: str, key: str
) -> tuple[str, bytes] | None:
    """(payment id, request hash) of the merchant's earlier request with this key."""
    row = await conn.fetchrow(Q["payment_by_idempotency_key"], merchant, key)
    return (row["id"], bytes(row["request_hash"])) if row is not None else None


@dataclass(frozen=True, slots=True)
class Position:
    """Where a page ends in the newest-first order: (created_at, id) of its last payment."""

    created_at: datetime
    id: str


async def list_payments(
    conn: Conn,
    merchant: str,
    *,
    status: str | None = None,
    chain: str | None = None,
    order_id: str | None = None,
    after: Position | None = None,
    limit: int = 20,
) -> tuple[list[dict[str, Any]], Position | None]:
    """A page of the merchant's payments, newest first, and the position of the next page."""
    rows = await conn.fetch(
        Q["list_payments"],
        merchant,
        status,
        chain,
        order_id,
        after.created_at if after else None,
        after.id if after else None,
        limit + 1,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    page = await render_rows(conn, rows)
    last = rows[-1] if rows else None
    return page, Position(last["created_at"], last["id"]) if more and last else None


async def cancel_payment(pool: asyncpg.Pool, payment_id: str, merchant: str) -> str | None:
    """Cancel a pending payment with its `payment.canceled` event in one transaction.

    Returns None when canceled now, else the status that prevented it ("missing" if the merchant
    has no such payment).
    """
    from ctripd.events import record_event

    async with pool.acquire() as conn, conn.transaction():
        if await conn.fetchval(Q["cancel_payment"], payment_id, merchant) is not None:
            await record_event(cast(asyncpg.Connection, conn), "payment.canceled", payment_id)
            return None
        status: str | None = await conn.fetchval(Q["status_of_payment"], payment_id, merchant)
        return status or "missing"
