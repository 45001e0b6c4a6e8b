"""Bookkeeping that keeps the database's cost flat as it ages: status counters folded for
`/metrics`, and old webhook events pruned (`[webhooks] retention_days`).

Both are safe with several processes and cheap when there is nothing to do, so every process
runs them on a schedule.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import structlog

from ctripd.db import queries

Q = queries("upkeep")
log = structlog.get_logger(__name__)

PRUNE_BATCH = 5_000


async def fold_counts(pool: asyncpg.Pool) -> bool:
    """Fold the status-count deltas into the counters; False if another process is folding."""
    async with pool.acquire() as conn, conn.transaction():
        if not await conn.fetchval(Q["try_fold_lock"]):
            return False
        await conn.execute(Q["fold_counts"])
    return True


async def prune_events(pool: asyncpg.Pool, retention_days: int, batch: int = PRUNE_BATCH) -> int:
    """Delete delivered and failed events older than `retention_days` (0: keep them all), with
    their delivery attempts, `batch` per transaction; returns how many."""
    if retention_days <= 0:
        return 0
    cutoff = datetime.now(UTC) - timedelta(days=retention_days)
    upto = await pool.fetchval(Q["retention_seq"], cutoff)
    after, total = 0, 0
    while True:
        seqs = [r[0] for r in await pool.fetch(Q["prune_events"], cutoff, upto, after, batch)]
        total += len(seqs)
        if len(seqs) < batch:
            break
        after = max(seqs)
    if total:
        log.info("events.pruned", count=total, before=cutoff.isoformat())
    return total
