"""Gas top-ups through a gas-wallet outage (issue 12): token payments are confirmed while the gas
wallet is empty, so every top-up the sweeper signs is refused by the node; `ctripd run` is
SIGKILLed again and again meanwhile (while top-ups are signed, and at random), with stuck
transactions due for replacement after 1 s; then the gas wallet is funded and the kills go on
while the top-ups and token sweeps go out. Afterwards: every invariant of the suite (nothing
sent twice, treasuries and gas wallet as the sweeps say, `ctripd reconcile` clean), and no
top-up re-signed while no node held it, so none went out above the fee it was first signed at.

`CTRIPD_FAULTS_FULL=1`: 12 kills over a 20 s outage; by default 4 over 6 s.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from harness import (
    FULL,
    Api,
    ChainSpec,
    Created,
    Daemon,
    Node,
    Policy,
    Sent,
    World,
    api_key,
    check_invariants,
    deploy_usdt,
    open_world,
    random_address,
    report,
    running,
    seeded,
    settle,
)

from ctripd.dev.devnet import AnvilProcess, free_port, start_anvil
from ctripd.money import to_decimal_string

KILLS = 12 if FULL else 4
OUTAGE = 20.0 if FULL else 6.0
PAYMENTS = 12 if FULL else 5
FUNDS = 10 * 10**18


@pytest.fixture
def chain_node() -> Iterator[AnvilProcess]:
    node = start_anvil(block_time=0.5)
    yield node
    node.stop()


async def pay_usdt(world: World, api: Api, rng: random.Random, key: str, token: str) -> None:
    """A USDT payment, paid in full: a token sweep, so a gas top-up first."""
    units = rng.randint(2, 500) * 10**4
    amount = to_decimal_string(units, 6)
    body = {"chain": "anvil", "asset": "USDT", "amount": amount, "order_id": key}
    payment = await api.create(key, body)
    created = Created(payment["id"], "anvil", "USDT", token, payment["address"], units, "exact")
    world.created[created.id] = created
    payer = rng.choice(world.payers["anvil"])
    async with world.payer_locks[payer]:
        tx_hash = await world.node("anvil").send(payer, created.address, token, units)
    world.sent.append(Sent("anvil", tx_hash, created.address, token, units, created.id))


async def kill_soon(daemon: Daemon, rng: random.Random) -> str:
    """Kill while a top-up is signed, or (every other time) after a random delay."""
    if rng.random() < 0.5:
        line = await daemon.wait_log(
            lambda e: e.get("event") == "sweep.signed" and e.get("kind") == "gas_topup", 4.0
        )
        await daemon.kill()
        return "topup_signed" if line is not None else "timeout"
    await asyncio.sleep(rng.uniform(0.2, 2.0))
    await daemon.kill()
    return "random"


async def test_topups_through_a_gas_wallet_outage(
    db_dsn: str, chain_node: AnvilProcess, tmp_path: Path
) -> None:
    rng, seed = seeded("topup")
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
            replace_after=1,
        )
        world = await open_world(
            tmp_path / "etc", db_dsn, session, rng, [chain], port=free_port(), policy=Policy()
        )
        gas_wallet = world.setup.gas_wallet
        await node.rpc("anvil_setBalance", [gas_wallet, "0x0"])
        world.gas_start["anvil"] = 0
        daemon = Daemon("topup", world.setup.config_path, free_port(), tmp_path)
        api = Api(session, await api_key(db_dsn), lambda: [daemon.url] if daemon.alive else [])
        kills: dict[str, int] = {}
        try:
            async with running([daemon]):
                await daemon.start()
                await asyncio.gather(
                    *(pay_usdt(world, api, rng, f"t{i}", token) for i in range(PAYMENTS))
                )
                outage_ends = time.monotonic() + OUTAGE
                for i in range(KILLS):
                    if i == KILLS // 2:
                        await asyncio.sleep(max(0.0, outage_ends - time.monotonic()))
                        await node.rpc("anvil_setBalance", [gas_wallet, hex(FUNDS)])
                        world.gas_start["anvil"] = FUNDS
                        funded_at = time.time()
                    moment = await kill_soon(daemon, rng)
                    kills[moment] = kills.get(moment, 0) + 1
                    await daemon.start()
                unsettled = await settle(world)
                checked = await check_invariants(world)
                assert not unsettled, unsettled
                assert api.server_errors == []
                assert await daemon.stop() == 0
        finally:
            await world.receiver.close()

    conn = await asyncpg.connect(db_dsn)
    try:
        topups = await conn.fetch(
            "SELECT s.id, s.status, s.effective_gas_price,"
            " array_agg(v.max_fee_per_gas ORDER BY v.id) AS offers,"
            " array_agg(extract(epoch FROM v.signed_at) ORDER BY v.id) AS signed"
            " FROM sweeps s JOIN sweep_txs v ON v.sweep_id = s.id"
            " WHERE s.kind = 'gas_topup' GROUP BY s.id ORDER BY s.id"
        )
        token_sweeps = await conn.fetchval(
            "SELECT count(*) FROM sweeps WHERE kind = 'token' AND status = 'confirmed'"
        )
    finally:
        await conn.close()
    # Re-signed while the gas wallet was empty: the fee compounding the sweeper used to do.
    repriced_unheld = [t["id"] for t in topups if sum(s < funded_at for s in t["signed"]) > 1]
    over_priced = [
        t["id"]
        for t in topups
        if t["effective_gas_price"] is not None and t["effective_gas_price"] > t["offers"][0]
    ]
    report(
        "topup",
        {
            "seed": seed,
            "kills": sum(kills.values()),
            "kills_by_moment": kills,
            "restarts": daemon.incarnation - 1,
            "outage_seconds": OUTAGE,
            "token_payments": PAYMENTS,
            "topups": len(topups),
            "topup_versions": sum(len(t["offers"]) for t in topups),
            "token_sweeps_confirmed": token_sweeps,
            "repriced_while_unheld": len(repriced_unheld),
            "over_priced": len(over_priced),
            "sweeps": checked.sweeps,
            "error_log_events": dict(daemon.errors()),
            "seconds": round(time.monotonic() - started, 1),
        },
    )
    assert repriced_unheld == [] and over_priced == []
    assert token_sweeps >= PAYMENTS
    assert sum(kills.values()) == KILLS
