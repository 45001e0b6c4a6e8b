"""The process's watched set: one load shared by its chains' watchers, topped up per scan, and
the `[scanner] watch_after_sweep_days` policy."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from test_scanner_support import ETH, Rig, chain_entry, insert_payment

from ctripd.config import ScannerConfig
from ctripd.jobs.watched import WatchedAddresses


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    r = Rig()
    yield r
    await r.close()


def key(address: str) -> bytes:
    return bytes.fromhex(address[2:])


async def test_chains_share_one_set(write_config, pool, anvil, rig) -> None:  # type: ignore[no-untyped-def]
    config = write_config(
        chains=[chain_entry(anvil), chain_entry(anvil, name="beta", chain_id=31338)]
    )
    watched = WatchedAddresses()
    alpha, beta = rig.watcher(config, "anvil", watched), rig.watcher(config, "beta", watched)
    _, first = await insert_payment(pool, config, ETH)
    await alpha.run_once()
    loaded = watched.addresses
    assert key(first) in loaded
    _, second = await insert_payment(pool, config, ETH, chain="beta")
    await beta.run_once()  # tops up the same set: no second load
    assert watched.addresses is loaded and key(second) in loaded
    assert alpha.state.watched == 1 and beta.state.watched == 2


async def test_a_refresh_as_of_an_earlier_moment_is_done_already(write_config, pool) -> None:  # type: ignore[no-untyped-def]
    config = write_config()
    watched = WatchedAddresses()
    async with pool.acquire() as conn:
        await watched.refresh(conn, time.monotonic())
        before = time.monotonic()
        _, address = await insert_payment(pool, config, ETH)
        await watched.refresh(conn, before - 1)  # the last refresh began after that moment
        assert key(address) not in watched.addresses
        await watched.refresh(conn, time.monotonic())
        assert key(address) in watched.addresses


async def swept(pool, payment_id: str, address: str, days_ago: float) -> None:  # type: ignore[no-untyped-def]
    """The payment confirmed and all of it swept, by a sweep confirmed `days_ago`."""
    await pool.execute(
        "UPDATE payments SET status = 'confirmed', amount_received = amount,"
        " amount_confirmed = amount, sweep_covered = amount WHERE id = $1",
        payment_id,
    )
    sweep = await pool.fetchval(
        """
        INSERT INTO sweeps (chain, kind, from_address, from_index, to_address, amount, status,
                            confirmed_at)
        VALUES ('anvil', 'native', $1, 1000, $1, 1, 'confirmed',
                now() - make_interval(secs => $2 * 86400))
        RETURNING id
        """,
        address,
        days_ago,
    )
    await pool.execute("INSERT INTO sweep_payments VALUES ($1, $2)", sweep, payment_id)


@pytest.mark.parametrize(("days", "old_watched"), [(None, True), (30, True), (5, False)])
async def test_swept_addresses_age_out_by_policy(write_config, pool, days, old_watched) -> None:  # type: ignore[no-untyped-def]
    config = write_config()
    old, old_address = await insert_payment(pool, config, ETH)
    recent, recent_address = await insert_payment(pool, config, ETH)
    _, unpaid_address = await insert_payment(pool, config, ETH, status="expired")
    await swept(pool, old, old_address, days_ago=10)
    await swept(pool, recent, recent_address, days_ago=1)
    watched = WatchedAddresses(ScannerConfig(watch_after_sweep_days=days))
    async with pool.acquire() as conn:
        await watched.refresh(conn, time.monotonic())
    assert (key(old_address) in watched.addresses) is old_watched
    assert key(recent_address) in watched.addresses
    assert key(unpaid_address) in watched.addresses
    assert len(watched) == 2 + old_watched
