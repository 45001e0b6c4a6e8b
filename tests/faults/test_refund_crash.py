"""Refunds and payouts through kills (issue 14): a real `ctripd run` is SIGKILLed at each step of
the engine for a refund and for a payout (its row signed and committed, broadcast, confirmed;
the kill lands as the step's log line is written), and restarted. Refunds of overpaid native and
token payments (from the deposit while unswept, or from the payout wallet) and payouts of coin
and tokens all end confirmed; each recipient (a fresh address) holds exactly its amount, so
nothing was sent twice; each request has one transaction row and one event per state; and the
books reconcile with the chain.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from harness import (
    PAYERS,
    Api,
    ChainSpec,
    Daemon,
    Node,
    Policy,
    api_key,
    deploy_usdt,
    open_world,
    random_address,
    report,
    running,
    seeded,
)

from ctripd.chain.rpc import RpcClient
from ctripd.config import load_config
from ctripd.dev import tokens as devtokens
from ctripd.dev.devnet import AnvilProcess, free_port, start_anvil
from ctripd.ledger.reconcile import reconcile

# The engine's steps, as the log writes them once each is done.
STEPS = ("sweep.signed", "sweep.broadcast", "sweep.confirmed")
MOMENT_WITHIN = 30.0
ETH = 10**18


@pytest.fixture
def chain_node() -> Iterator[AnvilProcess]:
    node = start_anvil(block_time=0.5)
    yield node
    node.stop()


async def wait_for(check: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, f"{what}: not within {within} s"
        await asyncio.sleep(0.3)


async def test_sigkill_at_each_step_of_refunds_and_payouts(
    db_dsn: str, chain_node: AnvilProcess, tmp_path: Path
) -> None:
    rng, seed = seeded("refund-crash")
    async with aiohttp.ClientSession() as session:
        node = Node(chain_node.url, session)
        usdt = await deploy_usdt(node)
        spec = ChainSpec("anvil", 31337, chain_node.url, random_address(rng))
        spec.tokens = {"USDT": (usdt, 6)}
        world = await open_world(
            tmp_path / "etc", db_dsn, session, rng, [spec], port=free_port(), policy=Policy()
        )
        payout_wallet = world.setup.wallet.gas_address(1)
        await node.rpc("anvil_setBalance", [payout_wallet, hex(100 * ETH)])
        await asyncio.to_thread(devtokens.mint, node.url, usdt, payout_wallet, 10**12, PAYERS[0])
        daemon = Daemon("refunds", world.setup.config_path, free_port(), tmp_path)
        api = Api(session, await api_key(db_dsn), lambda: [daemon.url] if daemon.alive else [])
        pool = await asyncpg.create_pool(db_dsn, min_size=1, max_size=2)
        # (kind, asset, amount in base units, recipient) of every request made.
        asked: list[tuple[str, str, int, str]] = []
        kills: list[str] = []
        try:
            async with running([daemon]):
                await daemon.start()
                payments = await pay_overpaid(world, api, node, rng, usdt)
                for kind in ("refund", "payout"):
                    for step in STEPS:
                        request = await ask(api, kind, payments, rng, len(asked))
                        asked.append(request)
                        line = await daemon.wait_log(
                            lambda ln, s=step, k=kind: ln.get("event") == s and ln.get("kind") == k,
                            MOMENT_WITHIN,
                        )
                        await daemon.kill()
                        kills.append(f"{kind}@{step}" if line else f"{kind}@timeout")
                        await daemon.start()

                async def final() -> bool:
                    open_ = await pool.fetchval(
                        "SELECT (SELECT count(*) FROM refunds WHERE status <> 'confirmed')"
                        " + (SELECT count(*) FROM payouts WHERE status <> 'confirmed')"
                        " + (SELECT count(*) FROM sweeps WHERE status IN ('signed', 'broadcast'))"
                    )
                    return int(open_) == 0

                await wait_for(final, 120, "refunds and payouts confirmed")
                problems = await check(pool, node, asked, usdt)
                problems += await reconciled(world.setup.config_path, session)
        finally:
            await pool.close()
        report(
            "refund_crash",
            {"seed": seed, "kills": kills, "requests": len(asked), "problems": problems},
        )
        assert kills.count("refund@timeout") + kills.count("payout@timeout") == 0, kills
        assert problems == []


async def pay_overpaid(
    world: Any, api: Api, node: Node, rng: random.Random, usdt: str
) -> list[tuple[dict[str, Any], str]]:
    """Native and USDT payments paid 1.5 times over, confirmed: (payment, asset symbol)."""
    made = []
    for i, (symbol, amount, token) in enumerate(
        [("ETH", "1", None), ("USDT", "10", usdt), ("ETH", "2", None)]
    ):
        payment = await api.create(f"pay{i}", {"chain": "anvil", "asset": symbol, "amount": amount})
        units = int(payment["amount_base_units"])
        await node.send(PAYERS[0], payment["address"], token, units * 3 // 2)
        made.append((payment, symbol))

    async def confirmed() -> bool:
        statuses = [(await api.get(p["id"]))["status"] for p, _ in made]
        return all(s == "confirmed" for s in statuses)

    await wait_for(confirmed, 60, "payments confirmed")
    return made


async def ask(
    api: Api, kind: str, payments: list[tuple[dict[str, Any], str]], rng: random.Random, n: int
) -> tuple[str, str, int, str]:
    """One refund (of a payment's overpaid part) or payout to a fresh address, through kills:
    the Idempotency-Key makes a repeat the same request."""
    to = random_address(rng)
    if kind == "refund":
        payment, symbol = payments[n % len(payments)]
        status, body = await api._call(
            "POST",
            f"/v1/payments/{payment['id']}/refunds",
            json={"to": to},
            headers={"Idempotency-Key": f"refund{n}"},
        )
    else:
        symbol = "USDT" if n % 2 else "ETH"
        status, body = await api._call(
            "POST",
            "/v1/payouts",
            json={"chain": "anvil", "asset": symbol, "to": to, "amount": "0.5"},
            headers={"Idempotency-Key": f"payout{n}"},
        )
    assert status in (200, 201), (status, body)
    return kind, symbol, int(body["amount_base_units"]), to


async def check(
    pool: asyncpg.Pool, node: Node, asked: list[tuple[str, str, int, str]], usdt: str
) -> list[str]:
    problems = []
    for kind, symbol, amount, to in asked:
        got = await (node.balance(to) if symbol == "ETH" else node.token_balance(usdt, to))
        if got != amount:
            problems.append(f"{kind} to {to}: {got} arrived, {amount} asked")
    rows = await pool.fetch(
        "SELECT kind, count(*) AS n FROM sweeps WHERE kind IN ('refund', 'payout') GROUP BY kind"
    )
    counts = {r["kind"]: r["n"] for r in rows}
    for kind in ("refund", "payout"):
        if counts.get(kind, 0) != sum(1 for a in asked if a[0] == kind):
            problems.append(f"{counts.get(kind, 0)} {kind} transactions for the requests")
    events = await pool.fetch(
        "SELECT type, count(*) AS n FROM events WHERE type LIKE 'refund.%' OR type LIKE "
        "'payout.%' GROUP BY type"
    )
    seen = {r["type"]: r["n"] for r in events}
    for kind in ("refund", "payout"):
        n = sum(1 for a in asked if a[0] == kind)
        for state in ("created", "confirmed"):
            if seen.get(f"{kind}.{state}", 0) != n:
                problems.append(f"{seen.get(f'{kind}.{state}', 0)} {kind}.{state} events for {n}")
    return problems


async def reconciled(config_path: Path, session: aiohttp.ClientSession) -> list[str]:
    """`ctripd reconcile`'s verdict, once the running scanner caught up: its mismatches."""
    config = load_config(config_path, env={})
    (chain,) = config.chains
    pool = await asyncpg.create_pool(config.database.dsn, min_size=1, max_size=1)
    try:
        rpc = RpcClient(chain.name, list(chain.rpc), session)
        await asyncio.sleep(3 * chain.poll_interval + 1)
        found = await reconcile(pool, rpc, chain)
    finally:
        await pool.close()
    return [m.line() for m in found.mismatches] + [f"in flight {a}" for a in found.in_flight]
