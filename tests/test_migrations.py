"""The migrations apply to an empty database, roll back completely, and apply again."""

from __future__ import annotations

import asyncio

import asyncpg
from test_expiry import _payments
from test_webhooks import new_payment
from yoyo import get_backend, read_migrations

from ctripd import db
from ctripd.http.auth import create_key

TABLES = {
    "chains",
    "blocks",
    "api_keys",
    "payments",
    "transfers",
    "events",
    "delivery_attempts",
    "sweeps",
    "sweep_payments",
}


async def _tables(dsn: str) -> set[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            " AND tablename NOT LIKE '\\_yoyo%' AND tablename NOT LIKE 'yoyo%'"
        )
    finally:
        await conn.close()
    return {r["tablename"] for r in rows}


async def test_apply_rollback_apply(db_dsn: str) -> None:
    assert TABLES <= await _tables(db_dsn)  # the template is already migrated
    rolled = await asyncio.to_thread(db.migrate, db_dsn, True)
    assert rolled, "nothing was rolled back"
    assert await _tables(db_dsn) == set()
    applied = await asyncio.to_thread(db.migrate, db_dsn)
    assert sorted(applied) == sorted(rolled)
    assert TABLES <= await _tables(db_dsn)
    assert await asyncio.to_thread(db.migrate, db_dsn) == []


async def test_amounts_are_numeric_78_0(pool: asyncpg.Pool) -> None:
    rows = await pool.fetch(
        "SELECT table_name, column_name FROM information_schema.columns"
        " WHERE table_schema = 'public' AND data_type = 'numeric'"
        " AND (numeric_precision <> 78 OR numeric_scale <> 0)"
    )
    assert rows == []
    big = 2**256 - 1
    assert await pool.fetchval("SELECT $1::numeric(78,0)", big) == big


def _roll_back_from(dsn: str, first: str) -> list[str]:
    """Roll back the applied migrations from `first` on, newest first."""
    with db.migrations_dir() as path:
        migrations = read_migrations(str(path))
        backend = get_backend(db.yoyo_url(dsn))
        try:
            with backend.lock():
                todo = backend.to_rollback(migrations.filter(lambda m: m.id >= first))
                backend.rollback_migrations(todo)
        finally:
            backend.connection.close()
    return [m.id for m in todo]


async def test_tenant_rollbacks_grant_no_key_more_and_keep_no_stray_delivery(
    db_dsn: str, pool: asyncpg.Pool
) -> None:
    """Rolling back merchants (0016), webhook endpoints (0017) and key scopes (0018) revokes the
    keys those limited (a disabled merchant's, a key with fewer scopes) and drops the deliveries
    to merchants' endpoints rather than leaving them as deliveries to the `[webhooks] url`."""
    await pool.execute(
        "INSERT INTO merchants (id, name, disabled_at) VALUES ('gone', 'Gone', now()),"
        " ('shop', 'Shop', NULL)"
    )
    await pool.execute(
        "INSERT INTO webhook_endpoints (id, merchant, url, secret)"
        " VALUES ('we_1', 'default', 'https://example.com/', 'whsec_x')"
    )
    keys = {
        "disabled": (await create_key(pool, "disabled", "gone"))[1]["id"],
        "limited": (await create_key(pool, "limited", "shop", ["payments:read"]))[1]["id"],
        "full": (await create_key(pool, "full", "shop"))[1]["id"],
    }
    payment = await new_payment(pool)
    assert (
        await pool.fetchval("SELECT count(*) FROM deliveries WHERE payment_id = $1", payment) == 2
    )
    await pool.close()

    rolled = await asyncio.to_thread(_roll_back_from, db_dsn, "0016")
    assert rolled[-1].startswith("0016") and len(rolled) >= 3
    conn = await asyncpg.connect(db_dsn)
    try:
        revoked = {
            r["id"]: r["revoked_at"] is not None
            for r in await conn.fetch("SELECT id, revoked_at FROM api_keys")
        }
        events = await conn.fetchval("SELECT count(*) FROM events WHERE payment_id = $1", payment)
    finally:
        await conn.close()
    assert revoked == {keys["disabled"]: True, keys["limited"]: True, keys["full"]: False}
    assert events == 1, "only the delivery to the [webhooks] url is left"


async def test_rolling_dust_back_keeps_live_dust_counted(db_dsn: str, pool: asyncpg.Pool) -> None:
    """The dust migration's rollback used to delete every aggregate: funds counted in payments'
    sums and swept would vanish from the ledger."""
    (payment_id,) = await _payments(pool, 1)
    token = "0x" + "ab" * 20
    for status, block_hash, count in (("orphaned", "0x01", 2), ("live", "0x02", 3)):
        await pool.execute(
            "INSERT INTO transfers (chain, tx_hash, kind, log_index, payment_id, token_address,"
            " from_address, to_address, amount, block_number, block_hash, status,"
            " transfer_count)"
            " VALUES ('anvil', '0xaa', 'dust', 4, $1, $2, $3, $3, 30, 7, $4, $5, $6)",
            payment_id,
            token,
            "0x" + "11" * 20,
            block_hash,
            status,
            count,
        )

    def rollback_dust() -> None:
        with db.migrations_dir() as path:
            backend = get_backend(db.yoyo_url(db_dsn))
            try:
                with backend.lock():
                    todo = backend.to_rollback(read_migrations(str(path)))
                    backend.rollback_migrations(todo.filter(lambda m: m.id >= "0013"))
            finally:
                backend.connection.close()

    await pool.close()
    await asyncio.to_thread(rollback_dust)
    conn = await asyncpg.connect(db_dsn)
    try:
        rows = await conn.fetch("SELECT kind, log_index, amount, status FROM transfers")
    finally:
        await conn.close()
    assert [tuple(r) for r in rows] == [("token", 4, 30, "live")]
    await asyncio.to_thread(db.migrate, db_dsn)  # and forward again
