"""Spam transfers (issue 13, item 1): while ordinary payments come and go against a real `ctripd
run`, an attacker sprays one-unit token transfers (below the token's `min_credit`) at some of
their deposit addresses, 1,000 Transfer logs per transaction (TestToken.spray), into a few
blocks. Checked: the scanner keeps pace, the books equal the chain (dust aggregated per block,
payment and asset; every invariant: no transfer missed, none phantom), the transfers and events
tables grow with the blocks the spam used, not with each transfer, and no event payload grows
with it.

`CTRIPD_FAULTS_FULL=1`: 20,000 dust transfers; by default 2,000. The seed is printed.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from harness import (
    DEPLOYER,
    FULL,
    PAYERS,
    PLANS,
    Api,
    ChainSpec,
    Daemon,
    Node,
    Policy,
    Sent,
    World,
    api_key,
    check_invariants,
    open_world,
    pay_one,
    random_address,
    report,
    running,
    seeded,
    settle,
)
from web3 import Web3

from ctripd.dev import tokens as devtokens
from ctripd.dev.devnet import AnvilProcess, free_port, start_anvil

DUST = 20_000 if FULL else 2_000
PER_TX = 1_000
PAYMENTS = 12 if FULL else 6
TARGETS = 3  # payments whose addresses the spam hits
MIN_CREDIT = 100  # TD6 base units: 0.0001 TD6


@pytest.fixture
def chain_node() -> Iterator[AnvilProcess]:
    """This test's own Anvil, mining a block every second."""
    node = start_anvil(block_time=1)
    yield node
    node.stop()


async def spray(world: World, token: str, to: str, payment_id: str) -> str:
    """PER_TX one-unit transfers to `to` in one transaction from the deployer."""
    contract = Web3().eth.contract(abi=devtokens.abi("TestToken"))
    data = contract.encode_abi("spray", [Web3.to_checksum_address(to), 1, PER_TX])
    node = world.node("anvil")
    tx = {"from": DEPLOYER, "to": token, "data": data, "gas": hex(PER_TX * 2_500 + 100_000)}
    tx_hash: str = await node.rpc("eth_sendTransaction", [tx])
    world.sent.append(Sent("anvil", tx_hash, to, token, 1, payment_id))
    return tx_hash


async def table_bytes(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        return {
            t: await conn.fetchval(f"SELECT pg_total_relation_size('{t}')")
            for t in ("transfers", "events")
        }
    finally:
        await conn.close()


async def test_spam_transfers_grow_nothing_per_transfer(
    db_dsn: str, chain_node: AnvilProcess, tmp_path: Path
) -> None:
    rng, seed = seeded("spam")
    started = time.monotonic()
    async with aiohttp.ClientSession() as session:
        node = Node(chain_node.url, session)
        token = await asyncio.to_thread(devtokens.deploy_token, node.url, "erc20_6", DEPLOYER)
        await asyncio.to_thread(devtokens.mint, node.url, token, DEPLOYER, 10**12, DEPLOYER)
        for payer in PAYERS:
            await asyncio.to_thread(devtokens.mint, node.url, token, payer, 10**12, DEPLOYER)
        chain = ChainSpec(
            "anvil",
            31337,
            chain_node.url,
            random_address(rng),
            tokens={"TD6": (token, 6)},
            poll_interval=0.5,
            min_credit={"TD6": MIN_CREDIT},
        )
        world = await open_world(
            tmp_path / "etc", db_dsn, session, rng, [chain], port=free_port(), policy=Policy()
        )
        daemon = Daemon("spam", world.setup.config_path, free_port(), tmp_path)
        api = Api(session, await api_key(db_dsn), lambda: [daemon.url] if daemon.alive else [])
        try:
            async with running([daemon]):
                await daemon.start()
                before = await table_bytes(db_dsn)
                plans = [rng.choice(PLANS[:6]) for _ in range(PAYMENTS)]
                created = await asyncio.gather(
                    *(
                        pay_one(world, api, random.Random(rng.random()), f"s{i}", "anvil", plan)
                        for i, plan in enumerate(plans)
                    )
                )
                targets = rng.sample(created, TARGETS)
                sprays = [
                    await spray(world, token, t.address, t.id)
                    for t in (targets[i % TARGETS] for i in range(DUST // PER_TX))
                ]
                receipts = [await node.rpc("eth_getTransactionReceipt", [h]) for h in sprays]
                while None in receipts:
                    await asyncio.sleep(0.2)
                    receipts = [await node.rpc("eth_getTransactionReceipt", [h]) for h in sprays]
                assert all(r["status"] == "0x1" for r in receipts)
                last_block = max(int(r["blockNumber"], 16) for r in receipts)
                blocks = len({r["blockHash"] for r in receipts})
                hit = len({(r["blockHash"], r["logs"][0]["topics"][2]) for r in receipts})
                mined_at = time.monotonic()
                caught_up = await scanned_to(db_dsn, last_block, within=60)
                lag = round(caught_up - mined_at, 1)
                unsettled = await settle(world)
                checked = await check_invariants(world)
                assert not unsettled, unsettled
                assert api.server_errors == []
                after = await table_bytes(db_dsn)
                figures = await outbox_figures(db_dsn, [t.id for t in targets])
                assert await daemon.stop() == 0
        finally:
            await world.receiver.close()
        dust_rows = figures.pop("dust_rows")
        # One aggregate per block and payment hit (and maybe one of a real payment's small part).
        assert dust_rows <= hit + PAYMENTS
        assert figures["transfer_received_of_targets"] <= PAYMENTS  # only their real payments
        assert figures["largest_payload_bytes"] < 10_000
        report(
            "spam",
            {
                "seed": seed,
                "dust_transfers": DUST,
                "spray_transactions": len(sprays),
                "spray_blocks": blocks,
                "spray_block_payments": hit,
                "payments": PAYMENTS,
                "payments_by_plan": dict(Counter(plans)),
                "payment_statuses": checked.statuses,
                "transfer_rows_checked": checked.transfers,
                "dust_rows": dust_rows,
                "events": checked.events,
                **figures,
                "transfers_bytes_growth": after["transfers"] - before["transfers"],
                "events_bytes_growth": after["events"] - before["events"],
                "scanned_past_spam_within_s": lag,
                "sweeps": checked.sweeps,
                "error_log_events": dict(daemon.errors()),
                "seconds": round(time.monotonic() - started, 1),
                "missed": 0,
                "phantom": 0,
            },
        )


async def scanned_to(dsn: str, block: int, within: float) -> float:
    """When the chain's cursor reached `block` (monotonic clock); fails after `within` s."""
    deadline = time.monotonic() + within
    conn = await asyncpg.connect(dsn)
    try:
        while (await conn.fetchval("SELECT scanned_block FROM chains") or 0) < block:
            assert time.monotonic() < deadline, f"scanner not past block {block} in {within} s"
            await asyncio.sleep(0.1)
        return time.monotonic()
    finally:
        await conn.close()


async def outbox_figures(dsn: str, targets: list[str]) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        return {
            "dust_rows": await conn.fetchval("SELECT count(*) FROM transfers WHERE kind = 'dust'"),
            "transfer_rows": await conn.fetchval("SELECT count(*) FROM transfers"),
            "transfer_received_of_targets": await conn.fetchval(
                "SELECT count(*) FROM events WHERE type = 'payment.transfer_received' "
                "AND payment_id = ANY($1::text[])",
                targets,
            ),
            "largest_payload_bytes": await conn.fetchval(
                "SELECT max(octet_length(payload::text)) FROM events"
            ),
        }
    finally:
        await conn.close()
