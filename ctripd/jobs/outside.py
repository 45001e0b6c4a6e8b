"""Deposits swept by someone else (SPEC §16). Anyone may trigger the sweep delegate, so a third
party can move a delegated deposit's balance to its treasury before ctripd's batch does: the
funds are where they belong, and this books them, never as dust.

When a due token payment's deposit holds less at the safe block than the payment still needs
swept, the delegate's `Swept` logs at the deposit (from the payment's first transfer to the safe
block) are read. Each one in a transaction that is none of ctripd's, whose receipt also carries
the token's Transfer of that amount from the deposit to the payment's treasury, is booked once
(`outside_sweeps`): `ctripd reconcile` counts it out of the deposit, it covers the payment, and
`payment.swept` names that transaction (`kind` `outside`, no fee of ctripd's). Native coin is not
looked for: its move leaves no Transfer to check, and native deposits are not delegated.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, cast

import asyncpg
import structlog

from ctripd.chain import delegate
from ctripd.chain.evm import transfer_logged
from ctripd.chain.rpc import RpcClient
from ctripd.db import queries
from ctripd.ledger.events import record_event
from ctripd.money import to_decimal_string

Q = queries("outside")
log = structlog.get_logger(__name__)


def _facts(row: asyncpg.Record, decimals: int) -> dict[str, Any]:
    """What `payment.swept` tells the merchant about a sweep someone else sent."""
    amount = int(row["amount"])
    return {
        "id": row["id"],
        "kind": "outside",
        "tx_hash": row["tx_hash"],
        "block_number": row["block_number"],
        "from": row["address"],
        "to": row["treasury"],
        "token_address": row["token_address"],
        "amount": to_decimal_string(amount, decimals),
        "amount_base_units": str(amount),
        "fee_base_units": "0",
    }


async def swept(
    pool: asyncpg.Pool,
    rpc: RpcClient,
    chain: str,
    payment: asyncpg.Record,
    treasury_of: Callable[[], str],
    balance: int,
    safe_block: int,
    now: datetime,
    *,
    operator_url: bool,
) -> bool:
    """Book what someone else swept from `payment`'s deposit through the delegate, when its
    `balance` at `safe_block` falls short of what the payment still needs swept; returns
    whether the payment is now covered (nothing is left to plan for it). `treasury_of` gives
    the payment's treasury, asked only when funds are missing."""
    token = payment["token_address"]
    owed = await pool.fetchrow(Q["owed"], payment["id"])
    if token is None or owed is None or balance >= int(owed["uncovered"]):
        return False
    first = owed["first_block"]
    if first is None or first > safe_block:
        return False
    address = payment["address"]
    logs = [
        entry
        for entry in await rpc.get_logs(first, safe_block, [address], delegate.swept_topics(token))
        if not entry.get("removed")
    ]
    if not logs:
        return False
    treasury = treasury_of()
    hashes = sorted({entry["transactionHash"].lower() for entry in logs})
    ours = {r["tx_hash"] for r in await pool.fetch(Q["own_txs"], chain, hashes)}
    logs = [entry for entry in logs if entry["transactionHash"].lower() not in ours]
    receipts = await rpc.batch(
        [("eth_getTransactionReceipt", [e["transactionHash"]]) for e in logs]
    )
    covered = False
    for entry, receipt in zip(logs, receipts, strict=True):
        amount = int(entry["data"], 16)
        if (
            not receipt
            or receipt.get("status") != "0x1"
            or not transfer_logged(receipt, token, address, treasury, amount)
        ):
            continue
        async with pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                Q["book"],
                chain,
                entry["transactionHash"],
                int(entry["logIndex"], 16),
                int(entry["blockNumber"], 16),
                address,
                token,
                treasury,
                amount,
                payment["id"],
                now,
            )
            if row is None:
                continue  # booked before
            covered = bool(await conn.fetchval(Q["cover"], payment["id"], amount))
            await record_event(
                cast(asyncpg.Connection, conn),
                "payment.swept",
                payment["id"],
                extra={"sweep": _facts(row, owed["decimals"])},
                operator_url=operator_url,
            )
        log.warning(
            "sweep.outside",
            chain=chain,
            address=address,
            token=token,
            amount=str(amount),
            tx_hash=entry["transactionHash"],
            payment=payment["id"],
            reason="someone else triggered the sweep delegate: the funds reached the treasury",
        )
    return covered
