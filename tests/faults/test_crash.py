"""Crash consistency (issue 7, part 1): a payment workload against a real `ctripd run` that is
SIGKILLed again and again, at moments picked from its own log (a range scanned, transfers
credited, a sweep signed or broadcast), while a webhook is being delivered (the receiver kills the
process before answering), or after a random delay. It is restarted after every kill. Afterwards
the chain is mined until everything settles and every invariant of the suite is checked.

`CTRIPD_FAULTS_FULL=1`: 24 kills; by default 4. The seed is printed (`CTRIPD_FAULTS_SEED`).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from harness import (
    FULL,
    PLANS,
    Api,
    ChainSpec,
    Daemon,
    LogLine,
    Node,
    Policy,
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

KILLS = 24 if FULL else 4
# How long a kill waits for its moment before it kills anyway (counted as "timeout").
MOMENT_WITHIN = 8.0
MOMENTS: dict[str, Any] = {
    "scan": lambda line: line.get("event") == "chain.scanned",
    "credit": lambda line: line.get("event") == "chain.credited",
    "sweep_signed": lambda line: line.get("event") == "sweep.signed",
    "sweep_broadcast": lambda line: line.get("event") == "sweep.broadcast",
    "deliver": None,
    "random": None,
}


@pytest.fixture
def chain_node() -> Iterator[AnvilProcess]:
    """This test's own Anvil, mining a block every half second."""
    node = start_anvil(block_time=0.5)
    yield node
    node.stop()


async def kill_at(moment: str, daemon: Daemon, world: World, rng: random.Random) -> str:
    """Kill the running process at `moment`; returns the moment actually hit."""
    if moment == "random":
        await asyncio.sleep(rng.uniform(0.1, 3.0))
        await daemon.kill()
        return moment
    if moment == "deliver":
        killed = asyncio.Event()

        async def kill_before_ack(payload: dict[str, Any]) -> None:
            world.receiver.before_ack = None
            await daemon.kill()
            killed.set()

        world.receiver.before_ack = kill_before_ack
        try:
            await asyncio.wait_for(killed.wait(), MOMENT_WITHIN)
            return moment
        except TimeoutError:
            world.receiver.before_ack = None
            await daemon.kill()
            return "timeout"
    predicate = MOMENTS[moment]
    line: LogLine | None = await daemon.wait_log(predicate, MOMENT_WITHIN)
    await daemon.kill()
    return moment if line is not None else "timeout"


async def test_sigkill_at_random_moments_loses_nothing(
    db_dsn: str, chain_node: AnvilProcess, tmp_path: Path
) -> None:
    rng, seed = seeded("crash")
    started = time.monotonic()
    async with aiohttp.ClientSession() as session:
        node = Node(chain_node.url, session)
        token = await deploy_usdt(node)
        chain = ChainSpec(
            "anvil", 31337, chain_node.url, random_address(rng), tokens={"USDT": (token, 6)}
        )
        policy = Policy(tolerance_bps=50, late_window=8)
        world = await open_world(
            tmp_path / "etc",
            db_dsn,
            session,
            rng,
            [chain],
            port=free_port(),
            policy=policy,
            fail_rate=0.1,
        )
        daemon = Daemon("crash", world.setup.config_path, free_port(), tmp_path)
        api = Api(session, await api_key(db_dsn), lambda: [daemon.url] if daemon.alive else [])
        kills: Counter[str] = Counter()
        done = asyncio.Event()

        async def workload() -> None:
            """Payments keep coming while the kills go on; every plan at least once."""
            plans = rng.sample(PLANS, len(PLANS))
            tasks = []
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
                order: list[str] = []
                for _ in range(KILLS):
                    if not order:
                        order = rng.sample(list(MOMENTS), len(MOMENTS))
                    kills[await kill_at(order.pop(), daemon, world, rng)] += 1
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
        report(
            "crash",
            {
                "seed": seed,
                "kills": sum(kills.values()),
                "kills_by_moment": dict(kills),
                "restarts": daemon.incarnation - 1,
                "payments_by_plan": dict(Counter(c.plan for c in world.created.values())),
                "payment_statuses": checked.statuses,
                "transfers_checked": checked.transfers,
                "events_delivered": checked.events,
                "webhook_arrivals": world.receiver.arrivals,
                "webhooks_refused": dict(world.receiver.refused),
                "sweeps": checked.sweeps,
                "api_retries": api.retries,
                "error_log_events": dict(daemon.errors()),
                "seconds": round(time.monotonic() - started, 1),
                "lost": 0,
            },
        )
    assert sum(kills.values()) == KILLS
