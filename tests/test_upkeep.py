"""Upkeep: status counters kept by triggers (so `/metrics` never counts whole tables) and old
webhook events pruned after `[webhooks] retention_days`."""

from __future__ import annotations

import asyncio

import asyncpg
from test_expiry import _payments
from test_metrics import insert_attempt, insert_sweep, scrape, value

from ctripd import db
from ctripd.ledger import upkeep

COUNT_PAYMENTS = "SELECT chain, status, count(*) AS n FROM payments GROUP BY chain, status"
COUNT_SWEEPS = "SELECT chain, kind, status, count(*) AS n FROM sweeps GROUP BY chain, kind, status"


async def counted(pool: asyncpg.Pool) -> tuple[dict[tuple[str, ...], int], ...]:
    """What the counters say (counters plus unfolded deltas, as a scrape reads them), and what
    the tables hold."""
    q = db.queries("metrics")
    kept_payments = {
        (r["chain"], r["status"]): r["n"] for r in await pool.fetch(q["payments_by_status"])
    }
    kept_sweeps = {
        (r["chain"], r["kind"], r["status"]): r["n"]
        for r in await pool.fetch(q["sweeps_by_status"])
    }
    payments = {(r["chain"], r["status"]): r["n"] for r in await pool.fetch(COUNT_PAYMENTS)}
    sweeps = {(r["chain"], r["kind"], r["status"]): r["n"] for r in await pool.fetch(COUNT_SWEEPS)}
    return (
        {k: n for k, n in kept_payments.items() if n},
        payments,
        {k: n for k, n in kept_sweeps.items() if n},
        sweeps,
    )


async def test_counters_follow_every_write(pool: asyncpg.Pool, db_dsn: str) -> None:
    ids = await _payments(pool, 12)
    await pool.execute("UPDATE payments SET status = 'detected' WHERE id = ANY($1)", ids[:5])
    await pool.execute("UPDATE payments SET status = 'confirmed' WHERE id = ANY($1)", ids[:3])
    await pool.execute("UPDATE payments SET metadata = '{}'")  # no status change: no delta
    for kind, status in [("native", "signed"), ("native", "confirmed"), ("token", "failed")]:
        await insert_sweep(pool, kind, status)
    await pool.execute("UPDATE sweeps SET status = 'confirmed' WHERE status = 'signed'")
    kept_p, real_p, kept_s, real_s = await counted(pool)
    assert (
        kept_p
        == real_p
        == {("anvil", "pending"): 7, ("anvil", "detected"): 2, ("anvil", "confirmed"): 3}
    )
    assert kept_s == real_s

    # Folds from two processes at once: one folds, the other skips; nothing counted twice.
    other = await db.create_pool(db_dsn, min_size=1, max_size=1)
    try:
        folded = await asyncio.gather(upkeep.fold_counts(pool), upkeep.fold_counts(other))
    finally:
        await other.close()
    assert True in folded
    assert await pool.fetchval("SELECT count(*) FROM status_count_deltas") == 0
    assert await counted(pool) == (real_p, real_p, real_s, real_s)

    await pool.execute("UPDATE payments SET status = 'expired' WHERE status = 'pending'")
    await pool.execute("DELETE FROM sweeps WHERE kind = 'token'")
    await upkeep.fold_counts(pool)
    kept_p, real_p, kept_s, real_s = await counted(pool)
    assert kept_p == real_p and kept_s == real_s
    assert real_p[("anvil", "expired")] == 7


async def test_metrics_read_the_counters_not_the_tables(  # type: ignore[no-untyped-def]
    pool, write_config, make_client
) -> None:
    """A scrape used to count every payment and sweep row: seconds per scrape of a public
    endpoint at millions of rows."""
    client = await make_client(write_config())
    await _payments(pool, 3)
    await upkeep.fold_counts(pool)
    await pool.execute(
        "UPDATE status_counts SET n = n + 1000 WHERE subject = 'payments' AND status = 'pending'"
    )
    samples = await scrape(client)
    assert value(samples, "ctripd_payments", chain="anvil", status="pending") == 1003


async def test_old_delivered_and_failed_events_are_pruned(pool: asyncpg.Pool) -> None:
    ids = await _payments(pool, 2)
    await pool.execute("DELETE FROM events")  # their payment.created, made again below
    # Oldest first, as events are appended.
    rows = [
        (status, age_days)
        for age_days in (100, 100, 100, 5)
        for status in ("delivered", "failed", "pending")
    ]
    for n, (status, age) in enumerate(rows):
        await pool.execute(
            "WITH e AS (INSERT INTO events (id, payment_id, merchant, type, payload, created_at)"
            " VALUES ($1, $2, 'default', 'payment.created', '{}',"
            " now() - make_interval(days => $3)) RETURNING seq)"
            " INSERT INTO deliveries (id, event_id, event_seq, payment_id, status)"
            " SELECT 'dlv_' || substr($1, 5), $1, seq, $2, $4 FROM e",
            f"evt_old{n}",
            ids[n % 2],
            age,
            status,
        )
        await insert_attempt(pool, f"dlv_old{n}", 10, age * 86400)
    await pool.execute(
        "INSERT INTO events (id, payment_id, merchant, type, payload)"
        " SELECT 'evt_new' || id, id, 'default', 'payment.created', '{}' FROM payments"
    )
    assert await upkeep.prune_events(pool, 0) == 0  # 0 keeps every event
    assert await upkeep.prune_events(pool, 90, batch=2) == 6  # in batches of 2
    left = await pool.fetch(
        "SELECT e.id, d.status FROM events e JOIN deliveries d ON d.event_id = e.id"
        " WHERE e.id LIKE 'evt_old%' ORDER BY e.id"
    )
    assert sorted(r["status"] for r in left) == [
        "delivered",
        "failed",
        "pending",
        "pending",
        "pending",
        "pending",
    ]
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM delivery_attempts WHERE delivery_id LIKE 'dlv_old%'"
        )
        == 6
    )  # the pruned events' attempts went with them
    assert await pool.fetchval("SELECT count(*) FROM events WHERE id LIKE 'evt_new%'") == 2
    assert await upkeep.prune_events(pool, 90) == 0
