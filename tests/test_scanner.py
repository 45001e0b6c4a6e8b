"""The scanner against a real Anvil: native, token and internal transfers, failed transactions,
confirmations, and catching up after downtime."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from test_scanner_support import (
    ETH,
    SENDER,
    Rig,
    chain_entry,
    event_types,
    head,
    insert_payment,
    mine,
    payment,
    send_native,
    transfers,
    wait_mined,
)

from ctripd.dev import tokens as devtokens


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    r = Rig()
    yield r
    await r.close()


async def test_exact_native_payment(write_config, pool, anvil, rig) -> None:  # type: ignore[no-untyped-def]
    config = write_config()
    watcher = rig.watcher(config)
    assert await watcher.run_once() == 1  # first start: the cursor begins at the head
    pid, address = await insert_payment(pool, config, ETH)

    tx_hash = send_native(anvil, address, ETH)
    assert await watcher.run_once() == 1
    row = await payment(pool, pid)
    assert row["status"] == "detected"
    assert int(row["amount_received"]) == ETH and int(row["amount_confirmed"]) == 0
    assert row["detected_at"] is not None and not row["paid_late"]
    (t,) = await transfers(pool, pid)
    block = anvil.rpc("eth_getBlockByNumber", ["latest", False])
    assert (t["tx_hash"], t["kind"], t["log_index"]) == (tx_hash, "native", -1)
    assert (t["block_number"], t["block_hash"]) == (int(block["number"], 16), block["hash"])
    assert t["from_address"] == SENDER and t["to_address"] == address and t["status"] == "live"
    assert await event_types(pool, pid) == ["payment.transfer_received", "payment.detected"]

    mine(anvil)  # the second confirmation
    assert await watcher.run_once() == 1
    row = await payment(pool, pid)
    assert row["status"] == "confirmed" and int(row["amount_confirmed"]) == ETH
    assert await event_types(pool, pid) == [
        "payment.transfer_received",
        "payment.detected",
        "payment.confirmed",
    ]
    assert await watcher.run_once() == 0  # nothing new: no writes, no events
    assert len(await event_types(pool, pid)) == 3


async def test_watched_set_sees_payments_committed_late(write_config, pool, anvil, rig) -> None:  # type: ignore[no-untyped-def]
    """A payment whose transaction began first but committed after a later one, and after a
    refresh of the watched set, is still watched: the refresh is exact, not "newest seen"."""
    config = write_config()
    watcher = rig.watcher(config)
    await watcher.run_once()
    async with pool.acquire() as slow:
        tx = slow.transaction()
        await tx.start()
        late, late_address = await insert_payment(slow, config, ETH)
        early, early_address = await insert_payment(pool, config, ETH)
        await watcher.run_once()  # sees `early`, not yet `late`
        await tx.commit()
    send_native(anvil, late_address, ETH)
    send_native(anvil, early_address, ETH)
    await watcher.run_once()
    assert (await payment(pool, late))["amount_received"] == ETH
    assert (await payment(pool, early))["amount_received"] == ETH
    assert watcher.state.watched == 2


async def test_never_confirmed_before_the_threshold(write_config, pool, anvil, rig) -> None:  # type: ignore[no-untyped-def]
    config = write_config(chains=[chain_entry(anvil, confirmations=4)])
    watcher = rig.watcher(config)
    await watcher.run_once()
    pid, address = await insert_payment(pool, config, ETH)
    send_native(anvil, address, ETH)
    statuses = []
    for _ in range(5):
        await watcher.run_once()
        statuses.append((await payment(pool, pid))["status"])
        mine(anvil)
    # Confirmations 1, 2, 3 are not enough; the 4th confirms.
    assert statuses == ["detected", "detected", "detected", "confirmed", "confirmed"]


@pytest.mark.parametrize("kind", ["erc20_18", "erc20_6", "usdt"])
async def test_token_payment(write_config, pool, anvil, rig, kind) -> None:  # type: ignore[no-untyped-def]
    spec = devtokens.TOKEN_KINDS[kind]
    token = devtokens.deploy_token(anvil.url, kind, SENDER)
    devtokens.mint(anvil.url, token, SENDER, 10**30, SENDER)
    tokens = {spec.symbol: {"address": token, "decimals": spec.decimals}}
    config = write_config(chains=[chain_entry(anvil, tokens=tokens)])
    watcher = rig.watcher(config)
    await watcher.run_once()
    amount = 25 * 10**spec.decimals
    pid, address = await insert_payment(pool, config, amount, asset=spec.symbol)
    other, other_address = await insert_payment(pool, config, ETH)

    # Tokens of the right contract to a native payment are recorded but do not pay it.
    devtokens.token_transfer(anvil.url, token, SENDER, other_address, ETH)
    # Native coin sent to a token payment is recorded, not counted.
    send_native(anvil, address, 12345)
    tx_hash = devtokens.token_transfer(anvil.url, token, SENDER, address, amount)
    await watcher.run_once()

    row = await payment(pool, pid)
    assert row["status"] == "detected" and int(row["amount_received"]) == amount
    rows = await transfers(pool, pid)
    assert [(r["kind"], r["token_address"], int(r["amount"])) for r in rows] == [
        ("native", None, 12345),
        ("token", token, amount),
    ]
    assert rows[1]["tx_hash"] == tx_hash and rows[1]["log_index"] >= 0
    other_row = await payment(pool, other)
    assert other_row["status"] == "pending" and int(other_row["amount_received"]) == 0
    assert await event_types(pool, other) == ["payment.transfer_received"]
    mine(anvil)
    await watcher.run_once()
    assert (await payment(pool, pid))["status"] == "confirmed"


async def test_contract_payment_seen_in_traces(write_config, pool, anvil, rig) -> None:  # type: ignore[no-untyped-def]
    forwarder = devtokens.deploy_forwarder(anvil.url, SENDER)
    config = write_config(chains=[chain_entry(anvil, trace=True)])
    watcher = rig.watcher(config)
    await watcher.run_once()
    paid, paid_address = await insert_payment(pool, config, ETH)
    half_a, address_a = await insert_payment(pool, config, ETH // 2)
    half_b, address_b = await insert_payment(pool, config, ETH // 2)
    reverted, reverted_address = await insert_payment(pool, config, ETH)
    contract = devtokens._web3(anvil.url).eth.contract(
        address=forwarder, abi=devtokens.abi("Forwarder")
    )

    def call(fn: str, *args: str, value: int, gas: int | None = None) -> str:
        tx = {"from": SENDER, "to": forwarder, "value": hex(value)}
        tx["data"] = contract.encode_abi(fn, args=list(args))
        if gas is not None:
            tx["gas"] = hex(gas)  # skips estimation, which would refuse a reverting call
        return wait_mined(anvil, anvil.rpc("eth_sendTransaction", [tx]))

    call("forward", paid_address, value=ETH)
    call("forwardTwice", address_a, address_b, value=ETH)
    failed = call("revertAfterSend", reverted_address, value=ETH, gas=200_000)
    assert anvil.rpc("eth_getTransactionReceipt", [failed])["status"] == "0x0"
    await watcher.run_once()

    for pid in (paid, half_a, half_b):
        row = await payment(pool, pid)
        assert row["status"] in ("detected", "confirmed"), pid
        assert row["amount_received"] == row["amount"]
        assert [t["kind"] for t in await transfers(pool, pid)] == ["internal"]
    a, b = (await transfers(pool, half_a))[0], (await transfers(pool, half_b))[0]
    assert a["tx_hash"] == b["tx_hash"] and (a["log_index"], b["log_index"]) == (1, 2)
    assert (await payment(pool, reverted))["status"] == "pending"
    assert await transfers(pool, reverted) == []


async def test_internal_transfers_need_traces(write_config, pool, anvil, rig) -> None:  # type: ignore[no-untyped-def]
    forwarder = devtokens.deploy_forwarder(anvil.url, SENDER)
    config = write_config()  # trace off
    watcher = rig.watcher(config)
    await watcher.run_once()
    pid, address = await insert_payment(pool, config, ETH)
    contract = devtokens._web3(anvil.url).eth.contract(
        address=forwarder, abi=devtokens.abi("Forwarder")
    )
    data = contract.encode_abi("forward", args=[address])
    tx = {"from": SENDER, "to": forwarder, "value": hex(ETH), "data": data}
    wait_mined(anvil, anvil.rpc("eth_sendTransaction", [tx]))
    await watcher.run_once()
    assert await transfers(pool, pid) == []


async def test_failed_native_transaction_does_not_count(write_config, pool, anvil, rig) -> None:  # type: ignore[no-untyped-def]
    config = write_config()
    watcher = rig.watcher(config)
    await watcher.run_once()
    pid, address = await insert_payment(pool, config, ETH)
    # Code at the deposit address that always reverts (PUSH0 PUSH0 REVERT): the top-level
    # transfer is mined with status 0 and must not count.
    anvil.rpc("anvil_setCode", [address, "0x5f5ffd"])
    failed = send_native(anvil, address, ETH, gas=hex(100_000))
    assert anvil.rpc("eth_getTransactionReceipt", [failed])["status"] == "0x0"
    await watcher.run_once()
    assert await transfers(pool, pid) == []
    assert (await payment(pool, pid))["status"] == "pending"


async def test_catches_up_after_downtime(write_config, pool, anvil, rig) -> None:  # type: ignore[no-untyped-def]
    config = write_config()
    first = rig.watcher(config)
    await first.run_once()
    await first.close()  # the daemon stops
    stopped_at = head(anvil)

    paid = []
    for _ in range(5):
        mine(anvil, 99)
        pid, address = await insert_payment(pool, config, ETH)
        send_native(anvil, address, ETH)
        paid.append(pid)
    assert head(anvil) - stopped_at == 500

    restarted = rig.watcher(config)
    assert await restarted.run_once() == 500
    assert await pool.fetchval("SELECT scanned_block FROM chains") == head(anvil)
    # Payments sat at blocks 100, 200, …, 500, at the edges of the 100-block steps; the last
    # one is at the head, with one confirmation of two.
    mine(anvil)
    assert await restarted.run_once() == 1
    for pid in paid:
        assert (await payment(pool, pid))["status"] == "confirmed", pid
        assert len(await transfers(pool, pid)) == 1
        assert await event_types(pool, pid) == [
            "payment.transfer_received",
            "payment.detected",
            "payment.confirmed",
        ]
