"""Pool acquisition gives up instead of waiting for ever: a starved pool is an error."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from ctripd import db


async def outcome(work: Awaitable[Any]) -> BaseException | None:
    """What `work` raised, asserting it ended by itself (within 10 s, not cut off by us)."""
    task = asyncio.ensure_future(work)
    done, _ = await asyncio.wait({task}, timeout=10)
    assert done, "still waiting for a connection after 10 s"
    return task.exception()


async def test_every_acquisition_has_a_timeout(db_dsn: str) -> None:
    pool = await db.create_pool(db_dsn, min_size=1, max_size=1, acquire_timeout=0.2)
    try:
        async with pool.acquire():
            # The shortcuts acquire too; without a timeout both would wait for ever.
            assert isinstance(await outcome(pool.fetchval("SELECT 1")), TimeoutError)
            assert isinstance(await outcome(pool.acquire()), TimeoutError)
        assert await pool.fetchval("SELECT 1") == 1
    finally:
        await pool.close()
