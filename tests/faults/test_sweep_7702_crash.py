"""Crash consistency of EIP-7702 batched sweeps (issue 17): a real `ctripd run` on a chain with
`sweep_mode: eip7702` is SIGKILLed at each step of the engine: while the sweep delegate is
deployed (its `deploy` signed and stored, broadcast, confirmed), and while batches go out (signed
and stored, broadcast, mined but not yet `confirmations` deep, confirmed and settled), or after a
random delay; it is restarted after every kill while token and native payments keep coming.
Afterwards the chain is mined until everything settles and every invariant of the suite is
checked: nothing sent twice (every deposit's nonce is its sweeps plus the authorizations mined
for it), the treasury holds exactly what the sweeps and swept batch entries moved, the gas wallet
spent exactly its deployment and batch fees, every confirmed payment swept, `ctripd reconcile`
clean; and one delegate, no gas top-ups, no coin left at token deposits.

`CTRIPD_FAULTS_FULL=1`: the deployment's three steps once, the batch steps four times each (23
kills); by default each step once (8). The seed is printed (`CTRIPD_FAULTS_SEED`).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from harness import (
    FULL,
    PLANS,
    Api,
    ChainSpec,
    Created,
    Daemon,
    LogLine,
    Node,
    Policy,
    Sent,
    World,
    api_key,
    check_invariants,
    deploy_usdt,
    open_world,
    pay_one,
    random_address,
    report,
    running,
    seeded,
    settle,
)

from ctripd.dev.devnet import AnvilProcess, free_port, start_anvil
from ctripd.money import to_decimal_string

DEPLOY_STEPS = ["deploy_signed", "deploy_broadcast", "deploy_settled"]
BATCH_STEPS = ["batch_signed", "batch_broadcast", "batch_mined", "batch_settled", "random"]
ROUNDS = 4 if FULL else 1
# How long a kill waits for its step before it kills anyway (counted as "timeout"); the first
# deployment waits for a token payment to be confirmed first.
STEP_WITHIN = 10.0
DEPLOY_WITHIN = 40.0


def logged(event: str, kind: str) -> Callable[[LogLine], bool]:
    return lambda line: line.get("event") == event and line.get("kind") == kind


STEPS = {
    "deploy_signed": logged("sweep.signed", "deploy"),
    "deploy_broadcast": logged("sweep.broadcast", "deploy"),
    "deploy_settled": logged("sweep.confirmed", "deploy"),
    "batch_signed": logged("sweep.signed", "batch"),
    "batch_broadcast": logged("sweep.broadcast", "batch"),
    "batch_settled": logged("sweep.confirmed", "batch"),
}


@pytest.fixture
def chain_node() -> Iterator[AnvilProcess]:
    """This test's own Anvil (Prague: EIP-7702), mining a block every half second."""
    node = start_anvil(block_time=0.5)
    yield node
    node.stop()


async def until_batch_mined(dsn: str, node: Node, within: float) -> bool:
    """Wait until a batch's transaction is mined while its row is not final yet."""
    deadline = time.monotonic() + within
    conn = await asyncpg.connect(dsn)
    try:
        while time.monotonic() < deadline:
            hashes = await conn.fetch(
                "SELECT v.tx_hash FROM sweeps s JOIN sweep_txs v ON v.sweep_id = s.id"
                " WHERE s.kind = 'batch' AND s.status IN ('signed', 'broadcast')"
            )
            receipts = await node.batch(
                [("eth_getTransactionReceipt", [r["tx_hash"]]) for r in hashes]
            )
            if any(r is not None for r in receipts):
                return True
            await asyncio.sleep(0.05)
    finally:
        await conn.close()
    return False


async def kill_at(step: str, daemon: Daemon, world: World, rng: random.Random) -> str:
    """Kill the running process at `step`; returns the step actually hit (or "timeout")."""
    within = DEPLOY_WITHIN if step.startswith("deploy") else STEP_WITHIN
    if step == "random":
        await asyncio.sleep(rng.uniform(0.1, 3.0))
        hit = True
    elif step == "batch_mined":
        hit = await until_batch_mined(world.dsn, world.node("anvil"), within)
    elif step.startswith("deploy"):
        # The deployment's next step may come during the start (its transaction was mined
        # while the process was down): already logged by this incarnation counts.
        predicate = STEPS[step]
        now = any(
            line["_incarnation"] == daemon.incarnation and predicate(line) for line in daemon.lines
        )
        hit = now or await daemon.wait_log(predicate, within) is not None
    else:
        hit = await daemon.wait_log(STEPS[step], within) is not None
    await daemon.kill()
    return step if hit else "timeout"


async def pay_usdt(world: World, api: Api, rng: random.Random, key: str, token: str) -> None:
    """A USDT payment paid in full: the first ones make the sweeper deploy its delegate."""
    units = rng.randint(2, 500) * 10**4
    body = {"chain": "anvil", "asset": "USDT", "amount": to_decimal_string(units, 6)}
    payment = await api.create(key, body | {"order_id": key})
    created = Created(payment["id"], "anvil", "USDT", token, payment["address"], units, "exact")
    world.created[created.id] = created
    payer = rng.choice(world.payers["anvil"])
    async with world.payer_locks[payer]:
        tx_hash = await world.node("anvil").send(payer, created.address, token, units)
    world.sent.append(Sent("anvil", tx_hash, created.address, token, units, created.id))


async def test_sigkill_at_each_batch_sweep_step_loses_nothing(
    db_dsn: str, chain_node: AnvilProcess, tmp_path: Path
) -> None:
    rng, seed = seeded("sweep-7702")
    started = time.monotonic()
    async with aiohttp.ClientSession() as session:
        node = Node(chain_node.url, session)
        token = await deploy_usdt(node)
        chain = ChainSpec(
            "anvil",
            31337,
            chain_node.url,
            random_address(rng),
            tokens={"USDT": (token, 6)},
            sweep_mode="eip7702",
        )
        policy = Policy(tolerance_bps=50, late_window=8)
        world = await open_world(
            tmp_path / "etc", db_dsn, session, rng, [chain], port=free_port(), policy=policy
        )
        daemon = Daemon("sweep-7702", world.setup.config_path, free_port(), tmp_path)
        api = Api(session, await api_key(db_dsn), lambda: [daemon.url] if daemon.alive else [])
        kills: Counter[str] = Counter()
        done = asyncio.Event()

        async def workload() -> None:
            """Token payments first (the deployment), then every plan in either asset, until
            the kills are over."""
            tasks = [
                asyncio.create_task(pay_usdt(world, api, rng, f"u{i}", token)) for i in range(3)
            ]
            plans = rng.sample(PLANS, len(PLANS))
            i = 0
            while not done.is_set() or i < len(plans):
                plan = plans[i] if i < len(plans) else rng.choice(PLANS)
                sub = random.Random(rng.random())
                tasks.append(asyncio.create_task(pay_one(world, api, sub, f"c{i}", "anvil", plan)))
                i += 1
                await asyncio.sleep(rng.uniform(0.2, 1.0))
            await asyncio.gather(*tasks)

        try:
            async with running([daemon]):
                await daemon.start()
                work = asyncio.create_task(workload())
                steps = DEPLOY_STEPS + [s for _ in range(ROUNDS) for s in BATCH_STEPS]
                for step in steps:
                    kills[await kill_at(step, daemon, world, rng)] += 1
                    await daemon.start()
                done.set()
                await work
                unsettled = await settle(world)
                checked = await check_invariants(world)
                assert not unsettled, unsettled
                assert api.server_errors == []
                assert await daemon.stop() == 0
        finally:
            await world.receiver.close()

        conn = await asyncpg.connect(db_dsn)
        try:
            kinds = Counter(
                (r["kind"], r["status"])
                for r in await conn.fetch("SELECT kind, status FROM sweeps")
            )
            entries = Counter(
                r["status"] for r in await conn.fetch("SELECT status FROM sweep_entries")
            )
            delegates = await conn.fetchval("SELECT count(*) FROM sweep_delegates")
            token_deposits = [
                r["address"]
                for r in await conn.fetch(
                    "SELECT address FROM payments WHERE token_address IS NOT NULL"
                )
            ]
        finally:
            await conn.close()
        left = [a for a in token_deposits if await node.balance(a) != 0]
    report(
        "sweep-7702",
        {
            "seed": seed,
            "kills": sum(kills.values()),
            "kills_by_step": dict(kills),
            "restarts": daemon.incarnation - 1,
            "payments_by_plan": dict(Counter(c.plan for c in world.created.values())),
            "payment_statuses": checked.statuses,
            "sweeps_by_kind_and_status": {f"{k}:{s}": n for (k, s), n in kinds.items()},
            "batch_entries": dict(entries),
            "token_deposits_with_coin": len(left),
            "transfers_checked": checked.transfers,
            "events_delivered": checked.events,
            "error_log_events": dict(daemon.errors()),
            "seconds": round(time.monotonic() - started, 1),
            "double_sweeps": 0,
            "lost": 0,
        },
    )
    assert sum(kills.values()) == len(DEPLOY_STEPS) + ROUNDS * len(BATCH_STEPS)
    assert delegates == 1 and kinds[("deploy", "confirmed")] == 1
    assert not any(kind == "gas_topup" for kind, _ in kinds)
    assert kinds[("batch", "confirmed")] >= 1
    assert left == []
