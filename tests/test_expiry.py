"""Expiry: only pending payments past their window expire, each once, with its event."""

from __future__ import annotations

import asyncio

import asyncpg

from ctripd import db
from ctripd.chain.wallet import Wallet
from ctripd.dev.devnet import TEST_MNEMONIC
from ctripd.http import auth as apikeys
from ctripd.http.keys import WATCHERS
from ctripd.ledger import expiry, payments

WALLET = Wallet.from_mnemonic(TEST_MNEMONIC)


async def _payments(pool: asyncpg.Pool, count: int, merchant: str = "default") -> list[str]:
    """Create payments through the same one-statement path as the API."""
    new = payments.NewPayment(
        merchant=merchant,
        chain="anvil",
        chain_id=31337,
        asset="ETH",
        token_address=None,
        decimals=18,
        amount=10**18,
        confirmations_required=2,
        expires_in=3600,
        order_id=None,
        metadata={},
        metadata_json="{}",
        idempotency_key=None,
        request_hash=None,
    )
    ids = []
    for index in await payments.next_address_indexes(pool, count):
        made = await payments.insert_payment(pool, WALLET, new, index, operator_url=True)
        assert made is not None
        ids.append(made["id"])
    return ids


async def _backdate(pool: asyncpg.Pool, ids: list[str]) -> None:
    """Past their window, with the chain scanned up to a head seen since: the state a caught-up
    watcher leaves (`test_expiry_waits_for_the_scanner` drives a real one)."""
    await pool.execute(
        "UPDATE payments SET expires_at = now() - interval '1 second' WHERE id = ANY($1)", ids
    )
    await pool.execute(
        "INSERT INTO chains (name, chain_id, caught_up_at) VALUES ('anvil', 31337, now())"
        " ON CONFLICT (name) DO UPDATE SET caught_up_at = now()"
    )


async def test_only_due_pending_payments_expire(pool: asyncpg.Pool) -> None:
    due, not_due, detected, confirmed, canceled = (await _payments(pool, 5))[:5]
    await _backdate(pool, [due, detected, confirmed, canceled])
    for payment_id, status in (
        (detected, "detected"),
        (confirmed, "confirmed"),
        (canceled, "canceled"),
    ):
        await pool.execute("UPDATE payments SET status = $2 WHERE id = $1", payment_id, status)

    assert await expiry.run_once(pool, operator_url=True) == 1
    statuses = dict(await pool.fetch("SELECT id, status FROM payments"))
    assert statuses == {
        due: "expired",
        not_due: "pending",
        detected: "detected",
        confirmed: "confirmed",
        canceled: "canceled",
    }
    assert await pool.fetchval("SELECT expired_at FROM payments WHERE id = $1", due) is not None
    event = await pool.fetchrow("SELECT * FROM events WHERE type = 'payment.expired'")
    assert event["payment_id"] == due and event["merchant"] == "default"
    assert event["payload"]["data"]["payment"]["status"] == "expired"

    assert await expiry.run_once(pool, operator_url=True) == 0
    assert await pool.fetchval("SELECT count(*) FROM events WHERE type = 'payment.expired'") == 1


async def test_concurrent_runs_expire_each_payment_once(db_dsn: str) -> None:
    """Two processes' expiry jobs over the same backlog: every payment expired and reported once."""
    first = await db.create_pool(db_dsn, min_size=1, max_size=2)
    second = await db.create_pool(db_dsn, min_size=1, max_size=2)
    try:
        ids = await _payments(first, 120)
        await _backdate(first, ids)
        counts = await asyncio.gather(
            expiry.run_once(first, operator_url=True, batch=7),
            expiry.run_once(second, operator_url=True, batch=7),
        )
        assert sum(counts) == 120
        rows = await first.fetch(
            "SELECT payment_id, count(*) AS n FROM events WHERE type = 'payment.expired'"
            " GROUP BY payment_id"
        )
        assert {r["payment_id"] for r in rows} == set(ids)
        assert {r["n"] for r in rows} == {1}
        assert await first.fetchval("SELECT count(*) FROM payments WHERE status <> 'expired'") == 0
    finally:
        await first.close()
        await second.close()


async def test_a_locked_payment_is_skipped_not_waited_for(pool: asyncpg.Pool) -> None:
    """A payment a watcher holds (crediting it) is left for the next run, without blocking."""
    held, free = await _payments(pool, 2)
    await _backdate(pool, [held, free])
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT 1 FROM payments WHERE id = $1 FOR UPDATE", held)
        assert await asyncio.wait_for(expiry.run_once(pool, operator_url=True), timeout=10) == 1
    assert await expiry.run_once(pool, operator_url=True) == 1
    assert await pool.fetchval("SELECT count(*) FROM payments WHERE status = 'expired'") == 2


async def test_expired_payment_through_the_api(write_config, make_client, pool) -> None:  # type: ignore[no-untyped-def]
    client = await make_client(write_config())
    async with pool.acquire() as conn:
        key, _ = await apikeys.create_key(conn, "t", "default")
    headers = {"Authorization": f"Bearer {key}"}
    resp = await client.post(
        "/v1/payments", json={"chain": "anvil", "asset": "ETH", "amount": "1"}, headers=headers
    )
    payment = await resp.json()
    await _backdate(pool, [payment["id"]])
    assert await expiry.run_once(pool, operator_url=True) == 1
    resp = await client.get(f"/v1/payments/{payment['id']}", headers=headers)
    assert (await resp.json())["status"] == "expired"
    resp = await client.get("/v1/payments?status=expired", headers=headers)
    assert [p["id"] for p in (await resp.json())["data"]] == [payment["id"]]
    resp = await client.post(f"/v1/payments/{payment['id']}/cancel", headers=headers)
    assert resp.status == 409


async def test_expiry_waits_for_the_scanner(write_config, make_client, pool, anvil) -> None:  # type: ignore[no-untyped-def]
    """Past its window, a payment expires only once the chain is scanned up to a head seen after
    the window: a transfer mined in time but not read yet (RPC down, catch-up) would otherwise
    be reported after `payment.expired`."""
    client = await make_client(write_config())
    watcher = client.server.app[WATCHERS]["anvil"]
    await watcher.run_once()
    (payment_id,) = await _payments(pool, 1)
    # The window ends after the scanner last caught up.
    await pool.execute("UPDATE payments SET expires_at = now() WHERE id = $1", payment_id)
    anvil.rpc("evm_mine")
    assert await expiry.run_once(pool, operator_url=True) == 0

    await watcher.run_once()  # reads the new block: caught up with a head seen after the window
    assert await expiry.run_once(pool, operator_url=True) == 1
    assert await pool.fetchval("SELECT status FROM payments WHERE id = $1", payment_id) == "expired"

    # With no new block, reaching the reported head again also counts.
    (idle,) = await _payments(pool, 1)
    await pool.execute("UPDATE payments SET expires_at = now() WHERE id = $1", idle)
    assert await expiry.run_once(pool, operator_url=True) == 0
    await watcher.run_once()
    assert await expiry.run_once(pool, operator_url=True) == 1
