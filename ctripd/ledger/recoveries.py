"""Recoveries: held funds (an asset the payment does not count, or at an expired or canceled
payment) that the operator sends back or elsewhere with `ctripd recover`. A request is
approved with the wallet's approval key over its canonical text; the sweeper carries it out
as a `recover` sweep only while that approval and the ledger's held funds still allow it."""

from __future__ import annotations

import asyncpg

from ctripd.db import Conn, queries

Q = queries("recoveries")


def request_text(chain: str, payment_id: str, token: str | None, to: str, amount: int) -> str:
    """What an approval signs: every field that decides where funds go, canonical."""
    return f"recover|{chain}|{payment_id}|{(token or 'native').lower()}|{to.lower()}|{amount}"


async def held(
    conn: Conn | asyncpg.Pool, payment_id: str, excluding: int | None = None
) -> dict[str | None, int]:
    """What is left to recover of a payment's held funds, by asset (token address lowercased,
    None for native): less the recoveries approved or done (but `excluding`)."""
    return await _held(conn, [payment_id], excluding, ["approved", "done"])


async def still_there(
    conn: Conn | asyncpg.Pool, payment_ids: list[str], chain: str
) -> dict[str | None, int]:
    """These payments' held funds on `chain` still at their address, by asset: less the
    recoveries done only (an approved one has not moved them yet)."""
    return await _held(conn, payment_ids, None, ["done"], chain)


async def _held(
    conn: Conn | asyncpg.Pool,
    payment_ids: list[str],
    excluding: int | None,
    taking: list[str],
    chain: str | None = None,
) -> dict[str | None, int]:
    rows = await conn.fetch(Q["held_of_payments"], payment_ids, excluding, taking, chain)
    return {r["token"]: int(r["amount"]) for r in rows if int(r["amount"]) > 0}


async def record(
    conn: Conn | asyncpg.Pool,
    chain: str,
    payment_id: str,
    token: str | None,
    to: str,
    amount: int,
    approval: bytes,
) -> int:
    recovery_id: int = await conn.fetchval(
        Q["insert_recovery"], chain, payment_id, token, to, amount, approval
    )
    return recovery_id


async def of_chain(conn: Conn | asyncpg.Pool, chain: str) -> list[asyncpg.Record]:
    return list(await conn.fetch(Q["recoveries_of_chain"], chain))
