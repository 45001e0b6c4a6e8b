"""Stalled nodes (issue 13): chain "anvil" is reached through two provider URLs of a proxy,
while payments keep arriving. In turns:

- the first URL's node freezes at its head while the second follows the chain: the scanner must
  move to the node that keeps up (a frozen node answers "nothing new", never an error);
- both nodes freeze for longer than the chain's `stall_after`: the chain must show `stalled`
  (`/readyz`, `/v1/chains`), and payments created and paid in time during the freeze, whose
  windows end during it, must not expire: their transfers are mined but unread.

Afterwards every invariant of the suite (missed 0, phantom 0), and no payment paid in time ever
reported `payment.expired`.

`CTRIPD_FAULTS_FULL=1`: 4 rounds of both; by default 1.
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
import asyncpg
import pytest
from harness import (
    FULL,
    PLANS,
    Api,
    ChainSpec,
    Created,
    Daemon,
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
from rpc_proxy import RpcProxy

from ctripd.dev.devnet import AnvilProcess, free_port, start_anvil
from ctripd.money import to_decimal_string

ROUNDS = 4 if FULL else 1
STALL_AFTER = 3
# A frozen first URL; both frozen (longer than STALL_AFTER, and than the short windows below).
PRIMARY_FROZEN = 4.0
BOTH_FROZEN = STALL_AFTER + 5.0
# Windows of the payments paid during a full freeze: they end while both nodes are frozen.
SHORT_WINDOW = 3
SHORT_PAYMENTS = 3
# Plans of the background workload: paid at once (late plans wait out windows of their own).
BACKGROUND = [p for p in PLANS if p not in ("late", "too_late")]


@pytest.fixture
def chain_node() -> Iterator[AnvilProcess]:
    node = start_anvil(block_time=0.5)
    yield node
    node.stop()


async def pay_in_time(world: World, api: Api, rng: random.Random, key: str) -> Created:
    """A native payment with a short window, paid in full at once."""
    units = rng.randint(2, 500) * 10**14
    body = {
        "chain": "anvil",
        "asset": "ETH",
        "amount": to_decimal_string(units, 18),
        "expires_in": SHORT_WINDOW,
        "order_id": key,
    }
    payment = await api.create(key, body)
    created = Created(payment["id"], "anvil", "ETH", None, payment["address"], units, "exact")
    world.created[created.id] = created
    payer = rng.choice(world.payers["anvil"])
    async with world.payer_locks[payer]:
        tx_hash = await world.node("anvil").send(payer, created.address, None, units)
    world.sent.append(Sent("anvil", tx_hash, created.address, None, units, created.id))
    return created


async def readiness(session: aiohttp.ClientSession, daemon: Daemon) -> str:
    async with session.get(daemon.url + "/readyz") as resp:
        body = await resp.json()
        chain: str = body["checks"]["chains"]["anvil"]
        return chain


async def chain_row(session: aiohttp.ClientSession, daemon: Daemon, key: str) -> dict[str, object]:
    headers = {"Authorization": f"Bearer {key}"}
    async with session.get(daemon.url + "/v1/chains", headers=headers) as resp:
        (row,) = (await resp.json())["data"]
        return dict(row)


async def test_stalled_nodes_miss_nothing_and_expire_nothing_paid_in_time(
    db_dsn: str, chain_node: AnvilProcess, tmp_path: Path
) -> None:
    rng, seed = seeded("stalled")
    started = time.monotonic()
    proxy = RpcProxy(chain_node.url, chain_node.url, rng)
    await proxy.start()
    async with aiohttp.ClientSession() as session:
        chain = ChainSpec(
            "anvil",
            31337,
            chain_node.url,
            random_address(rng),
            rpc=[proxy.url("a"), proxy.url("b")],
            rpc_timeout=1.0,
            block_time=0.5,
            stall_after=STALL_AFTER,
        )
        world = await open_world(
            tmp_path / "etc", db_dsn, session, rng, [chain], port=free_port(), policy=Policy()
        )
        daemon = Daemon("stalled", world.setup.config_path, free_port(), tmp_path)
        key = await api_key(db_dsn)
        api = Api(session, key, lambda: [daemon.url])
        stop = asyncio.Event()
        in_time: list[Created] = []
        failover_s: list[float] = []
        stall_seen_s: list[float] = []
        ready_again_s: list[float] = []

        async def workload() -> None:
            tasks, i = [], 0
            while not stop.is_set():
                sub = random.Random(rng.random())
                plan = rng.choice(BACKGROUND)
                tasks.append(asyncio.create_task(pay_one(world, api, sub, f"s{i}", "anvil", plan)))
                i += 1
                await asyncio.sleep(rng.uniform(0.2, 0.8))
            await asyncio.gather(*tasks)

        async def wait_for(check: object, within: float) -> float:
            """Seconds until `check()` holds (polled), at most `within`."""
            began = time.monotonic()
            while not await check():  # type: ignore[operator]
                assert time.monotonic() - began < within, f"not within {within} s"
                await asyncio.sleep(0.1)
            return time.monotonic() - began

        try:
            async with running([daemon]):
                await daemon.start()
                work = asyncio.create_task(workload())
                for round_ in range(ROUNDS):
                    # The first URL's node freezes; a payment paid now must still be seen.
                    proxy.frozen["a"] = await proxy.head()
                    frozen_at = time.monotonic()
                    probe = await pay_in_time(world, api, rng, f"probe{round_}")

                    async def seen(payment: Created = probe) -> bool:
                        status = (await api.get(payment.id))["status"]
                        return status in ("detected", "confirmed")

                    failover_s.append(await wait_for(seen, PRIMARY_FROZEN + 20))
                    await asyncio.sleep(max(0.0, PRIMARY_FROZEN - (time.monotonic() - frozen_at)))
                    del proxy.frozen["a"]

                    # Both nodes freeze; payments paid in time meanwhile must not expire.
                    head = await proxy.head()
                    proxy.frozen.update(a=head, b=head)
                    frozen_at = time.monotonic()
                    for n in range(SHORT_PAYMENTS):
                        in_time.append(await pay_in_time(world, api, rng, f"short{round_}.{n}"))

                    async def stalled() -> bool:
                        return (await readiness(session, daemon)).startswith("error: stalled")

                    stall_seen_s.append(await wait_for(stalled, STALL_AFTER + 10))
                    assert (await chain_row(session, daemon, key))["stalled"] is True
                    await asyncio.sleep(max(0.0, BOTH_FROZEN - (time.monotonic() - frozen_at)))
                    proxy.frozen.clear()

                    async def ready() -> bool:
                        return await readiness(session, daemon) == "ok"

                    ready_again_s.append(await wait_for(ready, 30))
                stop.set()
                await work
                unsettled = await settle(world)
                checked = await check_invariants(world)
                assert not unsettled, unsettled
                assert api.server_errors == []
                conn = await asyncpg.connect(db_dsn)
                try:
                    expired = await conn.fetchval(
                        "SELECT count(*) FROM events WHERE type = 'payment.expired'"
                        " AND payment_id = ANY($1)",
                        [c.id for c in in_time],
                    )
                    statuses = Counter(
                        r["status"]
                        for r in await conn.fetch(
                            "SELECT status FROM payments WHERE id = ANY($1)",
                            [c.id for c in in_time],
                        )
                    )
                finally:
                    await conn.close()
                assert expired == 0, f"{expired} payments paid in time reported expired"
                assert set(statuses) <= {"detected", "confirmed"}, statuses
                assert await daemon.stop() == 0
        finally:
            await world.receiver.close()
            await proxy.close()
        report(
            "stalled",
            {
                "seed": seed,
                "rounds": ROUNDS,
                "stall_after_s": STALL_AFTER,
                "primary_frozen_s": PRIMARY_FROZEN,
                "both_frozen_s": BOTH_FROZEN,
                "payment_seen_past_a_frozen_first_url_s": [round(s, 2) for s in failover_s],
                "stalled_shown_after_s": [round(s, 2) for s in stall_seen_s],
                "ready_again_after_unfreezing_s": [round(s, 2) for s in ready_again_s],
                "paid_in_time_during_stalls": len(in_time),
                "their_statuses": dict(statuses),
                "expired_although_paid_in_time": expired,
                "payments": len(world.created),
                "payment_statuses": checked.statuses,
                "transfers_checked": checked.transfers,
                "events_delivered": checked.events,
                "sweeps": checked.sweeps,
                "median_stall_seen_s": round(statistics.median(stall_seen_s), 2),
                "error_log_events": dict(daemon.errors()),
                "seconds": round(time.monotonic() - started, 1),
                "missed": 0,
                "phantom": 0,
            },
        )
