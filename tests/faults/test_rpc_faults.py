"""RPC faults (issue 7, part 2): chain "alpha" is reached only through a fault-injecting proxy
(two provider URLs, both faulty: timeouts, 429 with Retry-After, 5xx, malformed and truncated
JSON, a lagging node, a node of another chain, batches answered out of order) while payments
arrive on it and on chain "beta", a second Anvil with another chain id reached directly.

The other chain is made a trap: beta holds transfers to alpha's deposit addresses, of a token
deployed at the same address. Beta's scanner records them (held on beta, never counted for the
alpha payment); any answer of the wrong chain that alpha's scanner believed would show up as a
phantom transfer on alpha. Checked: no missed and no phantom transfer (every invariant of the
suite), beta settles while alpha's faults go on, and the API answers every probe meanwhile.

`CTRIPD_FAULTS_FULL=1` keeps the faults on for at least 60 s and 20 of each kind; by default
8 s and 2 of each kind.
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
    deploy_usdt,
    open_world,
    pay_one,
    quiet,
    random_address,
    report,
    running,
    seeded,
    settle,
)
from rpc_proxy import KINDS, RpcProxy

from ctripd.dev.devnet import AnvilProcess, free_port, start_anvil

MIN_SECONDS = 60 if FULL else 8
MAX_SECONDS = 240 if FULL else 60
EACH_KIND = 20 if FULL else 2
FAULT_RATE = 0.35


@pytest.fixture
def nodes() -> Iterator[tuple[AnvilProcess, AnvilProcess]]:
    alpha = start_anvil(block_time=0.5)
    beta = start_anvil(chain_id=31338, block_time=0.5)
    yield alpha, beta
    alpha.stop()
    beta.stop()


class Probe:
    """A merchant reading the API all along: every answer must be a 200."""

    def __init__(self, session: aiohttp.ClientSession, base: str, key: str) -> None:
        self.session = session
        self.base = base
        self.headers = {"Authorization": f"Bearer {key}"}
        self.latencies: list[float] = []
        self.failures: list[str] = []

    async def run(self, world: World, stop: asyncio.Event, rng: random.Random) -> None:
        while not stop.is_set():
            paths = ["/healthz", "/v1/payments?limit=5", "/v1/chains"]
            if world.created:
                paths.append(f"/v1/payments/{rng.choice(list(world.created))}")
            path = rng.choice(paths)
            started = time.monotonic()
            try:
                async with self.session.get(
                    self.base + path, headers=self.headers, timeout=aiohttp.ClientTimeout(5)
                ) as resp:
                    await resp.read()
                    if resp.status != 200:
                        self.failures.append(f"GET {path}: {resp.status}")
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.failures.append(f"GET {path}: {type(exc).__name__}")
            self.latencies.append(time.monotonic() - started)
            await asyncio.sleep(0.1)


async def faults_done(proxy: RpcProxy, started: float) -> None:
    """At least MIN_SECONDS of faults, and EACH_KIND of every kind (MAX_SECONDS at most)."""

    def done() -> bool:
        elapsed = time.monotonic() - started
        enough = min(proxy.injected[k] for k in KINDS) >= EACH_KIND
        return elapsed >= MAX_SECONDS or (elapsed >= MIN_SECONDS and enough)

    while True:
        if done():
            return
        await asyncio.sleep(0.5)


async def test_rpc_faults_lose_nothing_and_stay_on_their_chain(
    db_dsn: str, nodes: tuple[AnvilProcess, AnvilProcess], tmp_path: Path
) -> None:
    rng, seed = seeded("rpc_faults")
    started = time.monotonic()
    alpha_node, beta_node = nodes
    proxy = RpcProxy(alpha_node.url, beta_node.url, rng, hold=2.5)
    await proxy.start()
    async with aiohttp.ClientSession() as session:
        a, b = Node(alpha_node.url, session), Node(beta_node.url, session)
        # The deployer's first transaction on each chain: the same token address on both.
        token, beta_token = await asyncio.gather(deploy_usdt(a), deploy_usdt(b))
        assert token == beta_token
        alpha = ChainSpec(
            "alpha",
            31337,
            alpha_node.url,
            random_address(rng),
            rpc=[proxy.url("a"), proxy.url("b")],
            tokens={"USDT": (token, 6)},
            rpc_timeout=1.0,
        )
        beta = ChainSpec(
            "beta", 31338, beta_node.url, random_address(rng), tokens={"USDT": (token, 6)}
        )
        world = await open_world(
            tmp_path / "etc",
            db_dsn,
            session,
            rng,
            [alpha, beta],
            port=free_port(),
            policy=Policy(tolerance_bps=50, late_window=8),
        )
        daemon = Daemon("rpc", world.setup.config_path, free_port(), tmp_path)
        key = await api_key(db_dsn)
        api = Api(session, key, lambda: [daemon.url])
        probe = Probe(session, daemon.url, key)
        decoys = 0
        stop = asyncio.Event()
        probe_stop = asyncio.Event()

        async def workload() -> None:
            nonlocal decoys
            tasks = []
            i = 0
            while not stop.is_set():
                chain = "alpha" if i % 3 else "beta"
                sub = random.Random(rng.random())
                tasks.append(
                    asyncio.create_task(pay_one(world, api, sub, f"r{i}", chain, rng.choice(PLANS)))
                )
                i += 1
                # Beta pays alpha's deposit addresses too: funds on the wrong chain, which beta's
                # scanner must record (held, never counted) and alpha's must never believe.
                alpha_payments = [c for c in world.created.values() if c.chain == "alpha"]
                if alpha_payments:
                    target = rng.choice(alpha_payments)
                    payer = rng.choice(PAYERS)
                    decoy_token = rng.choice([None, token])
                    amount = rng.randint(1, 10**6)
                    async with world.payer_locks[payer]:
                        tx_hash = await b.send(payer, target.address, decoy_token, amount)
                    world.sent.append(
                        Sent("beta", tx_hash, target.address, decoy_token, amount, target.id)
                    )
                    decoys += 1
                await asyncio.sleep(rng.uniform(0.1, 0.6))
            await asyncio.gather(*tasks)

        try:
            async with running([daemon]):
                await daemon.start()
                proxy.rate = FAULT_RATE
                probing = asyncio.create_task(probe.run(world, probe_stop, rng))
                work = asyncio.create_task(workload())
                await faults_done(proxy, started)
                stop.set()
                await work
                # Beta settles while alpha's provider is still failing.
                deadline = time.monotonic() + 60
                while not await quiet(world, "beta"):
                    assert time.monotonic() < deadline, "beta did not settle during alpha's faults"
                    await asyncio.sleep(0.5)
                probe_stop.set()
                await probing
                faults = dict(proxy.injected)
                fault_seconds = round(time.monotonic() - started, 1)
                proxy.rate = 0.0
                unsettled = await settle(world)
                checked = await check_invariants(world)
                assert not unsettled, unsettled
                assert probe.failures == []
                assert api.server_errors == []
                assert await daemon.stop() == 0
        finally:
            await world.receiver.close()
            await proxy.close()
        assert all(faults.get(k, 0) >= EACH_KIND for k in KINDS), faults
        report(
            "rpc_faults",
            {
                "seed": seed,
                "fault_rate": FAULT_RATE,
                "faults_by_kind": faults,
                "faults": sum(faults.values()),
                "bad_backend_episodes": dict(proxy.episodes),
                "proxied_requests": proxy.requests,
                "seconds_with_faults": fault_seconds,
                "payments_by_chain": dict(Counter(c.chain for c in world.created.values())),
                "payment_statuses": checked.statuses,
                "transfers_checked": checked.transfers,
                "decoy_transfers_on_the_other_chain": decoys,
                "events_delivered": checked.events,
                "sweeps": checked.sweeps,
                "api_probes": len(probe.latencies),
                "api_probe_p50_ms": round(statistics.median(probe.latencies) * 1000, 1),
                "api_probe_max_ms": round(max(probe.latencies) * 1000, 1),
                "error_log_events": dict(daemon.errors()),
                "seconds": round(time.monotonic() - started, 1),
                "missed": 0,
                "phantom": 0,
            },
        )
