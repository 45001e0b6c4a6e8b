"""The chains' rows: head and scan cursor, written by whichever process leads each chain."""

from __future__ import annotations

import asyncpg

from ctripd.db import queries

Q = queries("chains")


def lag(row: asyncpg.Record | None) -> int | None:
    """Blocks between the head and the last scanned block; None before the first scan."""
    if row is None or row["head"] is None or row["scanned_block"] is None:
        return None
    return max(0, int(row["head"]) - int(row["scanned_block"]))


async def chain_rows(pool: asyncpg.Pool) -> dict[str, asyncpg.Record]:
    return {r["name"]: r for r in await pool.fetch(Q["all_chains"])}
