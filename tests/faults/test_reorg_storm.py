"""Reorg storm (issue 7, part 3): while payments arrive, the test mines the chain itself and
replaces its last 1 to confirmations + 2 blocks again and again with `anvil_reorg(depth,
[[raw tx, block offset], …])`. Every replaced transaction comes back, in its order, at a random
offset of the new blocks (so transfers move to other blocks and lose confirmations), except
that a reorg shallower than the confirmation depth drops some payment transactions for good
(they were sent by one-off senders, so no nonce gap is left behind). The first new block also
holds a marker transaction of its own, so that every replaced block really changes (Anvil would
otherwise rebuild an empty block of the same second identically, hash and all).

Checked: no payment is ever confirmed on a transfer that a reorg shallower than the
confirmations later removed (from the `payment.confirmed` payloads and the block hashes each
reorg replaced), and in the end the books equal the canonical chain (every invariant).

`CTRIPD_FAULTS_FULL=1` storms for 60 s; by default 12 s.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from eth_account import Account
from harness import (
    DEPLOYER,
    FULL,
    PLANS,
    Api,
    ChainSpec,
    Daemon,
    Node,
    Policy,
    ReorgLog,
    Snapshot,
    World,
    api_key,
    check_invariants,
    fund_senders,
    open_world,
    pay_one,
    random_address,
    report,
    running,
    seeded,
    settle,
)

from ctripd.dev import tokens as devtokens
from ctripd.dev.devnet import AnvilProcess, free_port, start_anvil

SECONDS = 60 if FULL else 12
CONFIRMATIONS = 3
SENDERS = 240 if FULL else 50
BLOCK_EVERY = 0.4
REORG_SHARE = 0.4


@pytest.fixture
def chain_node() -> Iterator[AnvilProcess]:
    """Base fee 0 (it stays 0 in blocks below the gas target), so a transaction costs the same
    in any block: a sweep that a reorg deeper than the confirmations moves after it was settled
    keeps the fee on record. (With a moving base fee its recorded fee would be the old block's:
    reconciliation would flag that difference, beyond what confirmations promise.)"""
    node = start_anvil(extra_args=["--base-fee", "0"])
    yield node
    node.stop()


def marker(key: bytes) -> str:
    """A 0-value self-transfer of a one-off sender: makes a block different."""
    address = Account.from_key(key).address
    tx = {"to": address, "value": 0, "gas": 21_000, "nonce": 0, "chainId": 31337}
    tx.update(maxFeePerGas=100 * 10**9, maxPriorityFeePerGas=10**9, type=2)
    return Account.sign_transaction(tx, key).raw_transaction.to_0x_hex()


async def reorg(
    node: Node,
    world: World,
    log: ReorgLog,
    rng: random.Random,
    depth: int,
    base: int,
    markers: list[bytes],
) -> None:
    """Replace the last `depth` blocks (never below `base`) as described above."""
    head = await node.head()
    depth = min(depth, head - base)
    if depth < 1:
        return
    blocks = await node.batch(
        [("eth_getBlockByNumber", [hex(n), True]) for n in range(head - depth + 1, head + 1)]
    )
    payments = {s.tx_hash.lower() for s in world.sent}
    keep = []
    for block in blocks:
        for tx in block["transactions"]:
            if tx["hash"].lower() in payments and depth < log.confirmations and rng.random() < 0.4:
                log.dropped += 1
                continue
            keep.append(tx["hash"])
    raws = await node.batch([("eth_getRawTransactionByHash", [h]) for h in keep])
    offsets = sorted(rng.randrange(depth) for _ in keep)
    log.moved += len(keep)
    moves = [[marker(markers.pop()), 0]]
    moves += [[raw, offset] for raw, offset in zip(raws, offsets, strict=True)]
    await node.rpc("anvil_reorg", [depth, moves])
    new = await node.batch(
        [("eth_getBlockByNumber", [hex(n), False]) for n in range(head - depth + 1, head + 1)]
    )
    log.replaced(depth, [b["hash"] for b in blocks], [b["hash"] for b in new])


async def test_reorg_storm_never_confirms_on_a_shallow_orphan(
    db_dsn: str, chain_node: AnvilProcess, tmp_path: Path
) -> None:
    rng, seed = seeded("reorg_storm")
    started = time.monotonic()
    async with aiohttp.ClientSession() as session:
        node = Node(chain_node.url, session)
        token = await asyncio.to_thread(devtokens.deploy_token, chain_node.url, "usdt", DEPLOYER)
        senders = [rng.randbytes(32) for _ in range(SENDERS)]
        await fund_senders(node, senders, [token])
        markers = [rng.randbytes(32) for _ in range(SENDERS)]
        for key in markers:
            await node.rpc("anvil_setBalance", [Account.from_key(key).address, hex(10**17)])
        chain = ChainSpec(
            "anvil",
            31337,
            chain_node.url,
            random_address(rng),
            confirmations=CONFIRMATIONS,
            tokens={"USDT": (token, 6)},
            interval_mining=False,
            # Blocks come when the storm makes them, seconds apart at times: a head that old
            # still shows the chain (cancels and expiry need not wait for the next one).
            block_time=30,
        )
        world = await open_world(
            tmp_path / "etc",
            db_dsn,
            session,
            rng,
            [chain],
            port=free_port(),
            policy=Policy(tolerance_bps=50, late_window=8),
        )
        world.senders = senders
        # From here on only the test mines; the set-up is buried deeper than any reorg.
        await node.rpc("evm_setAutomine", [False])
        await node.rpc("anvil_mine", [hex(CONFIRMATIONS + 3)])
        base = await node.head()
        log = ReorgLog(CONFIRMATIONS)
        daemon = Daemon("storm", world.setup.config_path, free_port(), tmp_path)
        api = Api(session, await api_key(db_dsn), lambda: [daemon.url])
        blocks_mined = 0
        try:
            async with running([daemon]):
                await daemon.start()
                tasks = []
                i = 0
                while time.monotonic() - started < SECONDS:
                    if len(world.senders) >= 2 and rng.random() < 0.5:
                        sub = random.Random(rng.random())
                        plan = rng.choice(PLANS)
                        tasks.append(
                            asyncio.create_task(pay_one(world, api, sub, f"s{i}", "anvil", plan))
                        )
                        i += 1
                    await node.rpc("evm_mine")
                    blocks_mined += 1
                    # The watcher has seen the block (most of the time) when it is replaced.
                    await asyncio.sleep(BLOCK_EVERY)
                    if rng.random() < REORG_SHARE and markers:
                        depth = rng.randint(1, CONFIRMATIONS + 2)
                        await reorg(node, world, log, rng, depth, base, markers)
                await asyncio.gather(*tasks)
                unsettled = await settle(world)
                checked = await check_invariants(world, reorgs=log)
                assert not unsettled, unsettled
                assert api.server_errors == []
                assert await daemon.stop() == 0
            conn = await asyncpg.connect(db_dsn)
            try:
                snap = await Snapshot.read(conn)
            finally:
                await conn.close()
        finally:
            await world.receiver.close()
    reorged = [e for e in snap.events if e["type"] == "payment.reorged"]
    # Confirmed payments that a reorg of at least the confirmation depth moved back (reported).
    unconfirmed = 0
    status: dict[str, str] = {}
    for e in snap.events:
        now = json.loads(e["payload"])["data"]["payment"]["status"]
        if e["type"] == "payment.reorged" and status.get(e["payment_id"]) == "confirmed":
            unconfirmed += now != "confirmed"
        status[e["payment_id"]] = now
    report(
        "reorg_storm",
        {
            "seed": seed,
            "confirmations": CONFIRMATIONS,
            "reorgs": sum(log.depths.values()),
            "reorgs_by_depth": dict(sorted(log.depths.items())),
            "blocks_mined": blocks_mined,
            "payment_txs_dropped": log.dropped,
            "txs_reincluded": log.moved,
            "blocks_rebuilt_identically": log.identical,
            "payments_by_plan": dict(Counter(c.plan for c in world.created.values())),
            "payment_statuses": checked.statuses,
            "transfers_checked": checked.transfers,
            "orphaned_transfer_rows": sum(1 for t in snap.transfers if t["status"] != "live"),
            "payment_reorged_events": len(reorged),
            "confirmed_payments_moved_back_by_deep_reorgs": unconfirmed,
            "events_delivered": checked.events,
            "sweeps": checked.sweeps,
            "error_log_events": dict(daemon.errors()),
            "seconds": round(time.monotonic() - started, 1),
            "confirmed_on_shallow_orphan": 0,
        },
    )
