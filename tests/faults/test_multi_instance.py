"""Multi-instance (issue 7, part 6): three `ctripd run` processes on one database share a
payment workload (API calls go to any of them). The one leading the chain (the one whose log
says `chain.leader` true last) is SIGKILLed; another must take the chain over within 10 s (the
time is measured and reported), and the killed one is started again. In the end: no duplicate
transfer, event or sweep, and every other invariant of the suite.

`CTRIPD_FAULTS_FULL=1`: 6 takeovers; by default 2.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

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

INSTANCES = 3
TAKEOVERS = 6 if FULL else 2
TAKEOVER_LIMIT = 10.0


@pytest.fixture
def chain_node() -> Iterator[AnvilProcess]:
    node = start_anvil(block_time=0.5)
    yield node
    node.stop()


def is_leading(line: LogLine) -> bool:
    return line.get("event") == "chain.leader" and line.get("chain") == "anvil"


def leader(daemons: list[Daemon]) -> Daemon | None:
    """The running process whose current incarnation last said it leads the chain."""
    for daemon in daemons:
        if not daemon.alive:
            continue
        said = [
            line["leader"]
            for line in daemon.lines
            if is_leading(line) and line["_incarnation"] == daemon.incarnation
        ]
        if said and said[-1]:
            return daemon
    return None


async def takeover(daemons: list[Daemon], old: Daemon) -> tuple[Daemon, float]:
    """Kill the leader `old`; (the process that took over, seconds it took)."""
    others = [d for d in daemons if d is not old and d.alive]
    waits = {
        asyncio.create_task(d.wait_log(lambda line: is_leading(line) and line["leader"], 60)): d
        for d in others
    }
    killed_at = time.monotonic()
    await old.kill()
    done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    task = done.pop()
    line = task.result()
    assert line is not None, "no process took the chain over"
    return waits[task], line["_t"] - killed_at


async def test_three_instances_one_leader_and_takeover(
    db_dsn: str, chain_node: AnvilProcess, tmp_path: Path
) -> None:
    rng, seed = seeded("multi_instance")
    started = time.monotonic()
    async with aiohttp.ClientSession() as session:
        token = await deploy_usdt(Node(chain_node.url, session))
        chain = ChainSpec(
            "anvil", 31337, chain_node.url, random_address(rng), tokens={"USDT": (token, 6)}
        )
        world = await open_world(
            tmp_path / "etc",
            db_dsn,
            session,
            rng,
            [chain],
            port=free_port(),
            policy=Policy(tolerance_bps=50, late_window=8),
            fail_rate=0.05,
        )
        daemons = [
            Daemon(f"ctripd{i}", world.setup.config_path, free_port(), tmp_path)
            for i in range(INSTANCES)
        ]
        api = Api(session, await api_key(db_dsn), lambda: [d.url for d in daemons if d.alive])
        times: list[float] = []
        leaders: list[str] = []
        stop = asyncio.Event()

        async def workload() -> None:
            tasks = []
            i = 0
            while not stop.is_set() or i < len(PLANS):
                plan = PLANS[i] if i < len(PLANS) else rng.choice(PLANS)
                sub = random.Random(rng.random())
                tasks.append(asyncio.create_task(pay_one(world, api, sub, f"m{i}", "anvil", plan)))
                i += 1
                await asyncio.sleep(rng.uniform(0.2, 0.8))
            await asyncio.gather(*tasks)

        try:
            async with running(daemons):
                await asyncio.gather(*(d.start() for d in daemons))
                work = asyncio.create_task(workload())
                for _ in range(TAKEOVERS):
                    deadline = time.monotonic() + 30
                    while (old := leader(daemons)) is None:
                        assert time.monotonic() < deadline, "no process leads the chain"
                        await asyncio.sleep(0.1)
                    await asyncio.sleep(rng.uniform(0.5, 3.0))
                    new, seconds = await takeover(daemons, old)
                    times.append(seconds)
                    leaders.append(f"{old.name}->{new.name}")
                    await old.start()
                stop.set()
                await work
                unsettled = await settle(world)
                checked = await check_invariants(world)
                assert not unsettled, unsettled
                assert api.server_errors == []
                for daemon in daemons:
                    assert await daemon.stop() == 0
        finally:
            await world.receiver.close()
    assert max(times) <= TAKEOVER_LIMIT, times
    report(
        "multi_instance",
        {
            "seed": seed,
            "instances": INSTANCES,
            "takeovers": len(times),
            "takeover_seconds": [round(t, 2) for t in times],
            "takeover_seconds_median": round(statistics.median(times), 2),
            "takeover_seconds_max": round(max(times), 2),
            "handovers": leaders,
            "payments_by_plan": dict(Counter(c.plan for c in world.created.values())),
            "payment_statuses": checked.statuses,
            "transfers_checked": checked.transfers,
            "events_delivered": checked.events,
            "webhook_arrivals": world.receiver.arrivals,
            "sweeps": checked.sweeps,
            "error_log_events": {d.name: dict(d.errors()) for d in daemons},
            "seconds": round(time.monotonic() - started, 1),
            "duplicates": 0,
        },
    )
