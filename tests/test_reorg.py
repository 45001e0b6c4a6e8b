"""Reorgs on a real Anvil (`anvil_reorg(depth, [[tx, block offset], …])`): a counted transfer
removed, and one re-included in another block."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from test_scanner_support import (
    ETH,
    Rig,
    event_types,
    head,
    insert_payment,
    mine,
    payment,
    signed_native,
    transfers,
    wait_mined,
)


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    r = Rig()
    yield r
    await r.close()


async def stored_hashes_match_node(pool, anvil) -> bool:  # type: ignore[no-untyped-def]
    rows = await pool.fetch("SELECT number, hash FROM blocks ORDER BY number")
    assert rows
    return all(
        anvil.rpc("eth_getBlockByNumber", [hex(r["number"]), False])["hash"] == r["hash"]
        for r in rows
    )


@pytest.mark.parametrize("new_block_after", [True, False])
async def test_reorg_removes_a_detected_transfer(
    write_config, pool, anvil, rig, new_block_after
) -> None:  # type: ignore[no-untyped-def]
    config = write_config()
    watcher = rig.watcher(config)
    await watcher.run_once()
    pid, address = await insert_payment(pool, config, ETH)
    raw, tx_hash = signed_native(anvil, address, ETH)
    wait_mined(anvil, anvil.rpc("eth_sendRawTransaction", [raw]))
    paid_in = head(anvil)
    await watcher.run_once()
    assert (await payment(pool, pid))["status"] == "detected"

    anvil.rpc("anvil_reorg", [1, []])  # the block is replaced by one without the transaction
    assert anvil.rpc("eth_getTransactionReceipt", [tx_hash]) is None
    if new_block_after:
        mine(anvil)  # noticed by the next block's parent hash
    await watcher.run_once()  # else noticed by the head block's own hash

    row = await payment(pool, pid)
    assert row["status"] == "pending" and int(row["amount_received"]) == 0
    assert row["detected_at"] is None
    (t,) = await transfers(pool, pid)
    assert t["status"] == "orphaned" and t["block_number"] == paid_in
    assert await event_types(pool, pid) == [
        "payment.transfer_received",
        "payment.detected",
        "payment.reorged",
    ]
    reorged = await pool.fetchval(
        "SELECT payload FROM events WHERE payment_id = $1 AND type = 'payment.reorged'", pid
    )
    assert reorged["data"]["payment"]["status"] == "pending"
    assert reorged["data"]["transfer"]["tx_hash"] == tx_hash
    assert reorged["data"]["transfer"]["status"] == "orphaned"
    assert await pool.fetchval("SELECT scanned_block FROM chains") == head(anvil)
    assert await stored_hashes_match_node(pool, anvil)


async def test_reorg_reincludes_a_confirmed_transfer_in_another_block(
    write_config, pool, anvil, rig
) -> None:  # type: ignore[no-untyped-def]
    config = write_config()
    watcher = rig.watcher(config)
    await watcher.run_once()
    pid, address = await insert_payment(pool, config, ETH)
    raw, tx_hash = signed_native(anvil, address, ETH)
    wait_mined(anvil, anvil.rpc("eth_sendRawTransaction", [raw]))
    first_block = head(anvil)
    mine(anvil)
    await watcher.run_once()
    assert (await payment(pool, pid))["status"] == "confirmed"

    # Both blocks are replaced; the transaction lands in the second new one.
    anvil.rpc("anvil_reorg", [2, [[raw, 1]]])
    receipt = anvil.rpc("eth_getTransactionReceipt", [tx_hash])
    assert int(receipt["blockNumber"], 16) == first_block + 1
    await watcher.run_once()

    row = await payment(pool, pid)
    assert row["status"] == "detected"  # one confirmation in its new block
    (t,) = await transfers(pool, pid)  # the same row, alive again with its new block
    assert t["status"] == "live" and t["orphaned_at"] is None
    assert (t["block_number"], t["block_hash"]) == (first_block + 1, receipt["blockHash"])
    assert await event_types(pool, pid) == [
        "payment.transfer_received",
        "payment.detected",
        "payment.confirmed",
        "payment.reorged",
        "payment.transfer_received",
        "payment.detected",
    ]
    mine(anvil)
    await watcher.run_once()
    assert (await payment(pool, pid))["status"] == "confirmed"
    assert await stored_hashes_match_node(pool, anvil)


async def test_reorg_leaves_earlier_transfers_alone(write_config, pool, anvil, rig) -> None:  # type: ignore[no-untyped-def]
    """Only the orphaned blocks' transfers are un-counted: the payment keeps the rest."""
    config = write_config()
    watcher = rig.watcher(config)
    await watcher.run_once()
    pid, address = await insert_payment(pool, config, ETH)
    raw_a, _ = signed_native(anvil, address, ETH // 2)
    wait_mined(anvil, anvil.rpc("eth_sendRawTransaction", [raw_a]))
    mine(anvil, 3)
    raw_b, _ = signed_native(anvil, address, ETH // 2)
    wait_mined(anvil, anvil.rpc("eth_sendRawTransaction", [raw_b]))
    await watcher.run_once()
    assert (await payment(pool, pid))["status"] == "detected"

    anvil.rpc("anvil_reorg", [1, []])
    mine(anvil, 2)
    await watcher.run_once()
    row = await payment(pool, pid)
    assert row["status"] == "pending"
    assert int(row["amount_received"]) == ETH // 2 == int(row["amount_confirmed"])
    assert [t["status"] for t in await transfers(pool, pid)] == ["live", "orphaned"]
