"""Pool acquisition gives up instead of waiting for ever: a starved pool is an error."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from ctripd import db
from ctripd.ledger.chains import register


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


async def test_instances_starting_together_register_their_chain(db_dsn: str) -> None:
    """Concurrent first starts race for the chain's row: the loser used to die on the chain id
    unique index (seen in the multi-instance fault run); now every one of them starts."""
    pools = [await db.create_pool(db_dsn, min_size=1, max_size=1) for _ in range(6)]
    try:
        for round_ in range(10):
            name, chain_id = f"race{round_}", 90_000 + round_
            await asyncio.gather(*(register(pool, name, chain_id) for pool in pools))
            rows = await pools[0].fetch("SELECT chain_id FROM chains WHERE name = $1", name)
            assert [r["chain_id"] for r in rows] == [chain_id]
    finally:
        for pool in pools:
            await pool.close()
