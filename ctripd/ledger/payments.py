"""Payment writes: create, list and cancel, each state change with its event in one transaction."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import asyncpg
import orjson

from ctripd.chain.wallet import Wallet
from ctripd.db import Conn, queries
from ctripd.formats import new_event_id, new_payment_id
from ctripd.ledger.events import record_event
from ctripd.ledger.merchants import binding
from ctripd.ledger.objects import render_payment, render_rows

Q = queries("payments")


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


async def next_address_indexes(conn: asyncpg.Connection | asyncpg.Pool, count: int) -> list[int]:
    """`count` fresh derivation indexes from the database sequence, unique across processes."""
    return [r["index"] for r in await conn.fetch(Q["next_address_indexes"], count)]


@dataclass
class IndexPool:
    """Fresh derivation indexes from `address_index_seq`, fetched in batches; the ones a process
    leaves unused at exit are skipped for good."""

    batch: int = 100
    free: deque[int] = field(default_factory=deque)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def take(self, pool: asyncpg.Pool) -> int:
        while not self.free:
            async with self.lock:
                if not self.free:
                    self.free.extend(await next_address_indexes(pool, self.batch))
        return self.free.popleft()


async def insert_payment(
    conn: asyncpg.Connection | asyncpg.Pool,
    wallet: Wallet,
    new: NewPayment,
    index: int,
    *,
    operator_url: bool,
) -> dict[str, Any] | None:
    """Insert the payment at the wallet's address `index`, bound to its merchant, and its
    `payment.created` event in one statement (so atomically).

    Returns the payment object, or None when the merchant already used this idempotency key.
    The event payload is the payment object as rendered for the API, like `record_event` writes.
    """
    payment, args = created_payment(wallet, new, index, new_payment_id())
    inserted = await conn.fetchval(Q["insert_payment_with_event"], *args, operator_url)
    return payment if inserted is not None else None


def created_payment(
    wallet: Wallet,
    new: NewPayment,
    index: int,
    payment_id: str,
    extra: dict[str, Any] | None = None,
    options: Sequence[dict[str, Any]] = (),
) -> tuple[dict[str, Any], list[Any]]:
    """The new payment's object (rendered from the values inserted, not read back; `extra`
    columns and `options` rows of a payment priced in fiat) and the parameters $1…$20 of the
    statements that insert it with its `payment.created` event and its merchant binding."""
    now = datetime.now(UTC)
    address = wallet.address(index)
    row: dict[str, Any] = {
        "id": payment_id,
        "merchant": new.merchant,
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
        **(extra or {}),
    }
    payment = render_payment(row, [], None, options=options)
    event_id = new_event_id()
    payload = {
        "id": event_id,
        "type": "payment.created",
        "created_at": payment["created_at"],
        "merchant": new.merchant,
        "data": {"payment": payment},
    }
    args = [
        payment_id,
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
        binding(wallet, payment_id, new.merchant, new.chain, index),
    ]
    return payment, args


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


async def database_now(pool: asyncpg.Pool) -> datetime:
    """The database's clock, which the scanner's caught-up times are read by."""
    now: datetime = await pool.fetchval(Q["database_now"])
    return now


async def cancel_payment(
    pool: asyncpg.Pool,
    payment_id: str,
    merchant: str,
    requested_at: datetime,
    *,
    operator_url: bool,
) -> tuple[str | None, str | None]:
    """Cancel a pending payment with its `payment.canceled` event in one transaction, once its
    chain is scanned past `requested_at` (a time of the database's clock).

    Returns (None, chain) when canceled now, else what prevented it and the payment's chain: its
    status, "missing" if the merchant has no such payment (chain None), or "scanning" while a
    pending payment's chain is not yet scanned past `requested_at`.
    """
    async with pool.acquire() as conn, conn.transaction():
        chain = await conn.fetchval(Q["cancel_payment"], payment_id, merchant, requested_at)
        if chain is not None:
            await record_event(
                cast(asyncpg.Connection, conn),
                "payment.canceled",
                payment_id,
                operator_url=operator_url,
            )
            return None, chain
        row = await conn.fetchrow(Q["status_of_payment"], payment_id, merchant)
    if row is None:
        return "missing", None
    status: str = row["status"]
    return ("scanning" if status == "pending" else status), row["chain"]


async def list_all_payments(
    pool: asyncpg.Pool,
    *,
    merchant: str | None = None,
    status: str | None = None,
    chain: str | None = None,
    order_id: str | None = None,
    limit: int = 20,
) -> list[dict[str, Any]]:
    """The operator's listing: payment objects of every merchant (or one), newest first."""
    rows = await pool.fetch(Q["list_all_payments"], merchant, status, chain, order_id, limit)
    return await render_rows(pool, rows)
