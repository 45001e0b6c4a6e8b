"""The embedded Postgres killed (issue 13, item 9): a `ctripd run` on its embedded database (no
`[database] dsn`) takes a payment workload while the database's postmaster is SIGKILLed again and
again, as the OOM killer would. After each kill the test creates a payment, retrying until one is
created, and counts the seconds since the kill. Afterwards the chain is mined until everything
settles and every invariant of the suite is checked: no payment or event lost.

`CTRIPD_FAULTS_FULL=1`: 10 kills; by default 2. The seed is printed (`CTRIPD_FAULTS_SEED`).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from harness import (
    FULL,
    PLANS,
    REPO,
    Api,
    ChainSpec,
    Created,
    Daemon,
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

KILLS = 10 if FULL else 2


@pytest.fixture
def chain_node() -> Iterator[AnvilProcess]:
    """This test's own Anvil, mining a block every half second."""
    node = start_anvil(block_time=0.5)
    yield node
    node.stop()


def postmaster(data_dir: Path) -> tuple[int, str]:
    """The running postmaster's pid and the DSN of its socket (from its postmaster.pid)."""
    lines = (data_dir / "postmaster.pid").read_text().splitlines()
    return int(lines[0]), f"postgresql://postgres@/postgres?host={lines[4]}"


async def migrate(config: Path) -> None:
    """Before the daemon: it then starts the embedded server itself, as a service would."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ctripd", "--config", str(config), "migrate", cwd=REPO
    )
    assert await proc.wait() == 0


async def create_probe(world: World, api: Api, key: str) -> None:
    """One payment created through the API (retried through 503s); it stays unpaid."""
    body = {"chain": "anvil", "asset": "ETH", "amount": "0.01", "expires_in": 3600}
    payment = await api.create(key, {**body, "order_id": key})
    world.created[payment["id"]] = Created(
        payment["id"], "anvil", "ETH", None, payment["address"], 10**16, "none"
    )


async def test_killed_embedded_postgres_comes_back_and_loses_nothing(
    chain_node: AnvilProcess, embedded_state_dir: Path, tmp_path: Path
) -> None:
    rng, seed = seeded("embedded-pg")
    started = time.monotonic()
    async with aiohttp.ClientSession() as session:
        node = Node(chain_node.url, session)
        token = await deploy_usdt(node)
        chain = ChainSpec(
            "anvil", 31337, chain_node.url, random_address(rng), tokens={"USDT": (token, 6)}
        )
        world = await open_world(
            embedded_state_dir / "etc",
            "",  # the embedded server, under <etc>/state/postgres
            session,
            rng,
            [chain],
            port=free_port(),
            policy=Policy(tolerance_bps=50, late_window=8),
            fail_rate=0.1,
        )
        data_dir = embedded_state_dir / "etc" / "state" / "postgres"
        await migrate(world.setup.config_path)
        daemon = Daemon("embedded-pg", world.setup.config_path, free_port(), tmp_path)
        recoveries: list[float] = []
        done = asyncio.Event()
        try:
            async with running([daemon]):
                await daemon.start()
                _, world.dsn = postmaster(data_dir)
                api = Api(session, await api_key(world.dsn), lambda: [daemon.url])

                async def workload() -> None:
                    """Payments keep coming while the kills go on; every plan at least once."""
                    plans = rng.sample(PLANS, len(PLANS))
                    tasks = []
                    i = 0
                    while not done.is_set() or i < len(plans):
                        plan = plans[i] if i < len(plans) else rng.choice(PLANS)
                        sub = random.Random(rng.random())
                        tasks.append(
                            asyncio.create_task(pay_one(world, api, sub, f"e{i}", "anvil", plan))
                        )
                        i += 1
                        await asyncio.sleep(rng.uniform(0.2, 1.0))
                    await asyncio.gather(*tasks)

                work = asyncio.create_task(workload())
                for k in range(KILLS):
                    await asyncio.sleep(rng.uniform(1.0, 4.0))
                    pid, _ = postmaster(data_dir)
                    os.kill(pid, signal.SIGKILL)
                    killed = time.monotonic()
                    await create_probe(world, api, f"probe{k}")
                    recoveries.append(time.monotonic() - killed)
                done.set()
                await work
                unsettled = await settle(world)
                checked = await check_invariants(world)
                assert not unsettled, unsettled
                # While the server was away the API answered 503 problems, never a 500.
                assert [e for e in api.server_errors if ": 503 " not in e] == []
                assert await daemon.stop() == 0
        finally:
            await world.receiver.close()
        events = Counter(line.get("event") for line in daemon.lines)
        report(
            "embedded-pg",
            {
                "seed": seed,
                "kills": KILLS,
                "restarts": events["embedded_postgres.restarted"],
                "failed_restart_attempts": events["embedded_postgres.restart_failed"],
                "seconds_to_payment_created_after_kill": {
                    "max": round(max(recoveries), 2),
                    "median": round(statistics.median(recoveries), 2),
                    "each": [round(r, 2) for r in recoveries],
                },
                "answers_503": len(api.server_errors),
                "payments_by_plan": dict(Counter(c.plan for c in world.created.values())),
                "payment_statuses": checked.statuses,
                "transfers_checked": checked.transfers,
                "events_delivered": checked.events,
                "sweeps": checked.sweeps,
                "api_retries": api.retries,
                "error_log_events": dict(daemon.errors()),
                "seconds": round(time.monotonic() - started, 1),
                "lost": 0,
            },
        )
    assert events["embedded_postgres.restarted"] == KILLS
    assert not (data_dir / "postmaster.pid").exists()  # stopped with the daemon
