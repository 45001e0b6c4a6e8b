"""Crediting (SPEC §4): sums, tolerance, over- and underpayment, late payments, canceled
payments, and the events written with each change — against a real Anvil."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from test_scanner_support import (
    ETH,
    SENDER,
    Rig,
    event_types,
    insert_payment,
    mine,
    payment,
    send_native,
    transfers,
)

from ctripd.ledger.crediting import Policy, decide
from ctripd.ledger.objects import load_payment

NOW = datetime(2026, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    r = Rig()
    yield r
    await r.close()


@pytest.mark.parametrize(
    ("status", "received", "confirmed", "completed", "expected"),
    [
        ("pending", 99, 0, NOW, ("pending", False)),
        ("pending", 100, 0, NOW, ("detected", False)),
        ("pending", 100, 100, NOW, ("confirmed", False)),
        ("pending", 150, 150, NOW, ("confirmed", False)),
        ("detected", 100, 99, NOW, ("detected", False)),
        ("detected", 50, 0, NOW, ("pending", False)),  # un-counted by a reorg
        ("confirmed", 100, 60, NOW, ("detected", False)),
        ("confirmed", 0, 0, NOW, ("pending", False)),
        ("pending", 100, 0, NOW + 2 * HOUR, ("detected", True)),  # late, within the window
        ("expired", 100, 0, NOW + 2 * HOUR, ("detected", True)),
        ("expired", 100, 0, NOW - HOUR, ("detected", False)),  # paid in time, seen late
        ("expired", 100, 100, NOW + 30 * HOUR, ("expired", False)),  # after the window
        ("expired", 40, 0, NOW + 2 * HOUR, ("expired", False)),
        ("canceled", 100, 100, NOW, ("canceled", False)),
    ],
)
def test_decide(
    status: str,
    received: int,
    confirmed: int,
    completed: datetime,
    expected: tuple[str, bool],
) -> None:
    policy = Policy(tolerance_bps=0, late_window=timedelta(days=1))
    assert decide(status, False, 100, NOW, received, confirmed, completed, policy) == expected


async def test_underpay_then_top_up(write_config, pool, anvil, rig) -> None:  # type: ignore[no-untyped-def]
    config = write_config()
    watcher = rig.watcher(config)
    await watcher.run_once()
    pid, address = await insert_payment(pool, config, ETH)
    send_native(anvil, address, 6 * ETH // 10)
    await watcher.run_once()
    row = await payment(pool, pid)
    assert row["status"] == "pending" and int(row["amount_received"]) == 6 * ETH // 10
    assert await event_types(pool, pid) == ["payment.transfer_received"]

    send_native(anvil, address, 4 * ETH // 10)
    await watcher.run_once()
    row = await payment(pool, pid)
    assert row["status"] == "detected" and int(row["amount_received"]) == ETH
    assert await event_types(pool, pid) == [
        "payment.transfer_received",
        "payment.transfer_received",
        "payment.detected",
    ]
    event = await pool.fetchval(
        "SELECT payload FROM events WHERE payment_id = $1 AND type = 'payment.detected'", pid
    )
    assert event["data"]["payment"]["status"] == "detected"
    assert event["data"]["payment"]["amount_received"] == "1"
    assert len(event["data"]["payment"]["transfers"]) == 2


async def test_overpayment_is_recorded(write_config, pool, anvil, rig) -> None:  # type: ignore[no-untyped-def]
    config = write_config()
    watcher = rig.watcher(config)
    await watcher.run_once()
    pid, address = await insert_payment(pool, config, ETH)
    send_native(anvil, address, 3 * ETH // 2)
    await watcher.run_once()
    rendered = await load_payment(pool, pid)
    assert rendered is not None
    assert rendered["status"] == "detected"
    assert rendered["amount_received"] == "1.5" and rendered["amount_overpaid"] == "0.5"


async def test_two_transfers_in_one_block_add_up(write_config, pool, anvil, rig) -> None:  # type: ignore[no-untyped-def]
    config = write_config()
    watcher = rig.watcher(config)
    await watcher.run_once()
    pid, address = await insert_payment(pool, config, ETH)
    anvil.rpc("evm_setAutomine", [False])
    try:
        for value in (ETH // 4, 3 * ETH // 4):
            tx = {"from": SENDER, "to": address, "value": hex(value)}
            anvil.rpc("eth_sendTransaction", [tx])
        anvil.rpc("evm_mine")
    finally:
        anvil.rpc("evm_setAutomine", [True])
    await watcher.run_once()
    rows = await transfers(pool, pid)
    assert len(rows) == 2 and len({r["tx_hash"] for r in rows}) == 2
    assert rows[0]["block_number"] == rows[1]["block_number"]
    assert (await payment(pool, pid))["status"] == "detected"
    assert await event_types(pool, pid) == [
        "payment.transfer_received",
        "payment.transfer_received",
        "payment.detected",
    ]


async def test_underpayment_tolerance(write_config, pool, anvil, rig) -> None:  # type: ignore[no-untyped-def]
    config = write_config(toml={"payments": {"underpayment_tolerance_bps": 100}})
    watcher = rig.watcher(config)
    await watcher.run_once()
    within, within_address = await insert_payment(pool, config, ETH)
    short, short_address = await insert_payment(pool, config, ETH)
    send_native(anvil, within_address, ETH - ETH // 100)
    send_native(anvil, short_address, ETH - ETH // 100 - 1)
    await watcher.run_once()
    assert (await payment(pool, within))["status"] in ("detected", "confirmed")
    assert (await payment(pool, short))["status"] == "pending"


async def test_late_payment_within_the_window(write_config, pool, anvil, rig) -> None:  # type: ignore[no-untyped-def]
    config = write_config()
    watcher = rig.watcher(config)
    await watcher.run_once()
    ago = datetime.now(UTC) - timedelta(minutes=10)
    expired, expired_address = await insert_payment(
        pool, config, ETH, status="expired", expires_at=ago
    )
    # Past its expiry, but the expiry job has not run yet.
    overdue, overdue_address = await insert_payment(pool, config, ETH, expires_at=ago)
    send_native(anvil, expired_address, ETH)
    send_native(anvil, overdue_address, ETH)
    await watcher.run_once()
    for pid in (expired, overdue):
        row = await payment(pool, pid)
        assert row["status"] in ("detected", "confirmed") and row["paid_late"], pid
        assert "payment.detected" in await event_types(pool, pid)
    rendered = await load_payment(pool, expired)
    assert rendered is not None and rendered["paid_late"] is True


async def test_late_payment_after_the_window(write_config, pool, anvil, rig) -> None:  # type: ignore[no-untyped-def]
    config = write_config(toml={"payments": {"late_window": 3600}})
    watcher = rig.watcher(config)
    await watcher.run_once()
    long_ago = datetime.now(UTC) - timedelta(hours=2)
    pid, address = await insert_payment(pool, config, ETH, status="expired", expires_at=long_ago)
    send_native(anvil, address, ETH)
    mine(anvil, 3)
    await watcher.run_once()
    row = await payment(pool, pid)
    assert row["status"] == "expired" and not row["paid_late"]
    assert int(row["amount_received"]) == ETH  # recorded and reported, never dropped
    assert len(await transfers(pool, pid)) == 1
    assert await event_types(pool, pid) == ["payment.transfer_received"]


async def test_paid_in_time_but_scanned_after_expiry(write_config, pool, anvil, rig) -> None:  # type: ignore[no-untyped-def]
    """Lateness is judged by the block's time, not by when ctripd got round to reading it."""
    config = write_config()
    watcher = rig.watcher(config)
    await watcher.run_once()
    pid, address = await insert_payment(pool, config, ETH)
    send_native(anvil, address, ETH)
    block = anvil.rpc("eth_getBlockByNumber", ["latest", False])
    mined_at = datetime.fromtimestamp(int(block["timestamp"], 16), UTC)
    # The expiry job ran between the block and the scan.
    await pool.execute(
        "UPDATE payments SET status = 'expired', expires_at = $2 WHERE id = $1",
        pid,
        mined_at + timedelta(seconds=1),
    )
    await watcher.run_once()
    row = await payment(pool, pid)
    assert row["status"] == "detected" and not row["paid_late"]


async def test_canceled_payment_records_and_reports_funds(write_config, pool, anvil, rig) -> None:  # type: ignore[no-untyped-def]
    config = write_config()
    watcher = rig.watcher(config)
    await watcher.run_once()
    pid, address = await insert_payment(pool, config, ETH, status="canceled")
    send_native(anvil, address, ETH)
    mine(anvil, 2)
    await watcher.run_once()
    row = await payment(pool, pid)
    assert row["status"] == "canceled" and int(row["amount_received"]) == ETH
    assert await event_types(pool, pid) == ["payment.transfer_received"]
    event = await pool.fetchval("SELECT payload FROM events WHERE payment_id = $1", pid)
    assert event["data"]["transfer"]["amount"] == "1"
    assert event["data"]["transfer"]["status"] == "live"


async def test_own_gas_top_up_is_not_a_payment(write_config, pool, anvil, rig) -> None:  # type: ignore[no-untyped-def]
    """A sweeper gas top-up into a deposit address is our own money, not a payment."""
    config = write_config()
    watcher = rig.watcher(config)
    await watcher.run_once()
    pid, address = await insert_payment(pool, config, ETH)
    top_up = send_native(anvil, address, 10**15)
    paid = send_native(anvil, address, ETH)
    sweep_id = await pool.fetchval(
        """
        INSERT INTO sweeps (chain, kind, from_address, from_index, to_address, amount, tx_hash,
                            status)
        VALUES ('anvil', 'gas_topup', $1, 0, $2, $3, $4, 'broadcast') RETURNING id
        """,
        SENDER,
        address,
        10**15,
        top_up,
    )
    await pool.execute(
        "INSERT INTO sweep_txs (sweep_id, tx_hash, raw_tx, amount, signed_at)"
        " VALUES ($1, $2, '0x', $3, now())",
        sweep_id,
        top_up,
        10**15,
    )
    await watcher.run_once()
    assert [t["tx_hash"] for t in await transfers(pool, pid)] == [paid]
    assert int((await payment(pool, pid))["amount_received"]) == ETH
