"""Expiry: pending payments past `expires_at` become `expired`, each with its `payment.expired`
event in the same transaction. Only `pending` expires: a `detected` payment's funds arrived.

"Expired" says no payment came in time, which only the chain can tell: a payment expires once
its chain is read past `expires_at` (`chains.caught_up_at`: the scanner reached a head the node
reported after it, a head young enough to show the chain as of then). While the scanner or its
node lags (an RPC outage, a catch-up, a node behind or stuck), its payments wait: one paid in
time is detected, never first reported expired.

Safe with several processes: rows are claimed with FOR UPDATE SKIP LOCKED and re-checked as
pending in the UPDATE, so no payment is expired (or reported) twice.
"""

from __future__ import annotations

from typing import cast

import asyncpg
import structlog

from ctripd.db import queries
from ctripd.ledger.events import record_event

Q = queries("payments")
log = structlog.get_logger(__name__)

BATCH = 200


async def run_once(pool: asyncpg.Pool, *, operator_url: bool, batch: int = BATCH) -> int:
    """Expire every due pending payment, `batch` per transaction; returns how many.
    `operator_url`: `[webhooks] url` is set (see `record_event`)."""
    total = 0
    while True:
        async with pool.acquire() as conn, conn.transaction():
            expired = [r["id"] for r in await conn.fetch(Q["expire_due"], batch)]
            for payment_id in expired:
                await record_event(
                    cast(asyncpg.Connection, conn),
                    "payment.expired",
                    payment_id,
                    operator_url=operator_url,
                )
        total += len(expired)
        if expired:
            log.info("payments.expired", count=len(expired))
        if len(expired) < batch:
            return total
