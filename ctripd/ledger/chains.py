"""The chains' rows: head and scan cursor, written by whichever process leads each chain."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from ctripd.config import ChainConfig
from ctripd.db import Conn, queries
from ctripd.errors import DatabaseError

Q = queries("chains")


def lag(row: asyncpg.Record | None) -> int | None:
    """Blocks between the head and the last scanned block; None before the first scan."""
    if row is None or row["head"] is None or row["scanned_block"] is None:
        return None
    return max(0, int(row["head"]) - int(row["scanned_block"]))


def stalled(head_time: datetime | None, stall_after: int, now: datetime) -> bool:
    """The head block is older than `stall_after` seconds: no node follows the chain."""
    return head_time is not None and (now - head_time).total_seconds() > stall_after


async def chain_rows(pool: asyncpg.Pool) -> dict[str, asyncpg.Record]:
    return {r["name"]: r for r in await pool.fetch(Q["all_chains"])}


async def register(pool: asyncpg.Pool, name: str, chain_id: int) -> None:
    """The chain's row, created or given its configured id. Processes starting together race
    for the insert: one of them sees the other's row on its chain id unique index instead of its
    name, and the statement is simply run again, now as an update."""
    for attempt in (1, 2):
        try:
            await pool.execute(Q["upsert_chain"], name, chain_id)
            return
        except asyncpg.UniqueViolationError as exc:
            if attempt == 2:
                raise DatabaseError(
                    f"chain id {chain_id} of chain {name!r} is recorded for another chain name: "
                    f"{exc}"
                ) from None


async def cursor(pool: asyncpg.Pool, name: str) -> int | None:
    """The last block scanned of the chain, or None before its cursor exists."""
    scanned: int | None = await pool.fetchval(Q["chain_cursor"], name)
    return scanned


def first_block(chain: ChainConfig, head: int) -> int:
    """Where a chain's scan starts when it has no cursor: `start_block`, else the head."""
    return chain.start_block if chain.start_block is not None else head


async def init_cursor(conn: Conn | asyncpg.Pool, name: str, first: int) -> bool:
    """Start the chain's scan at block `first` unless its cursor exists (first writer wins)."""
    status: str = await conn.execute(Q["init_cursor"], name, first - 1)
    return status.endswith(" 1")
