"""The migrations apply to an empty database, roll back completely, and apply again."""

from __future__ import annotations

import asyncio

import asyncpg

from ctripd import db

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
