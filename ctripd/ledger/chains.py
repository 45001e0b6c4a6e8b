"""The chains' rows: head and scan cursor, written by whichever process leads each chain."""

from __future__ import annotations

from datetime import datetime

import asyncpg
import structlog

from ctripd.config import ChainConfig
from ctripd.db import Conn, queries
from ctripd.errors import DatabaseError

Q = queries("chains")
log = structlog.get_logger(__name__)


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


async def ensure_cursor(conn: Conn | asyncpg.Pool, chain: ChainConfig, head: int) -> int:
    """The chain's last scanned block; a chain without a cursor starts at `start_block`, else at
    `head` (the first writer wins: the API's start and the watcher may race)."""
    first = chain.start_block if chain.start_block is not None else head
    status: str = await conn.execute(Q["init_cursor"], chain.name, first - 1)
    if status.endswith(" 1"):
        log.info("chain.cursor_initialized", chain=chain.name, first_block=first)
    scanned: int = await conn.fetchval(Q["chain_cursor"], chain.name)
    return scanned
