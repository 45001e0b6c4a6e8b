"""Sweeping payments priced in fiat (SPEC §15): every accepted asset a payment was paid in goes
to the treasury, each option with its own sweep and coverage, on each option's chain, through
gas top-ups and EIP-7702 batches alike; the merchant's own treasury is used on every chain of
its options while the payment's binding verifies; the books reconcile with nothing held.

Payments are created through the API and credited by the real chain watchers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import asyncpg
import pytest
from rate_servers import Exchange, exchange_server
from test_events_api import key_for
from test_scanner_support import Rig as Watchers
from test_scanner_support import mine, send_native
from test_sweeper import FUNDER, GAS, TREASURY, WALLET, Rig, chain_entry, make_rig
from test_transfer_assets import get_payment

from ctripd.chain.rpc import RpcClient
from ctripd.dev import tokens as devtokens
from ctripd.dev.devnet import AnvilProcess, start_anvil
from ctripd.jobs.sweeper import Sweeper
from ctripd.ledger.merchants import set_treasury
from ctripd.ledger.reconcile import Report, reconcile

ETH = 10**18
PRICE = {"amount": "25.00", "currency": "USD"}
SHOP_TREASURY = "0x90F79bf6EB2c4f870365E785982E1f101E93b906"  # Anvil account 3


@pytest.fixture
async def coinbase() -> AsyncIterator[Exchange]:
    async with exchange_server("coinbase", {"ETH-USD": "2000.00"}) as ex:
        yield ex


def rates(coinbase: Exchange, **pairs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A `[rates]` section: ETH at the exchange's price, the test dollars pegged."""
    return {
        "rates": {
            "coinbase_url": coinbase.url,
            "timeout": 0.5,
            "pairs": {
                "ETH/USD": {"sources": ["coinbase:ETH-USD"], "min_sources": 1},
                "TD6/USD": {"peg": True},
                "USDTL/USD": {"peg": True},
                **pairs,
            },
        }
    }


@pytest.fixture(params=["topup", "eip7702"])
async def shop(  # type: ignore[no-untyped-def]
    request, write_config, pool: asyncpg.Pool, anvil: AnvilProcess, coinbase: Exchange
) -> AsyncIterator[Rig]:
    async with make_rig(
        write_config,
        pool,
        anvil,
        tokens=True,
        toml=rates(coinbase),
        sweep_mode=request.param,
        block_time=30,
    ) as rig:
        yield rig


@pytest.fixture
async def watchers() -> AsyncIterator[Watchers]:
    w = Watchers()
    yield w
    await w.close()


async def create(client: Any, headers: dict[str, str], accept: list[str]) -> dict[str, Any]:
    resp = await client.post(
        "/v1/payments", json={"price": PRICE, "accept": accept}, headers=headers
    )
    assert resp.status == 201, await resp.text()
    payment: dict[str, Any] = await resp.json()
    return payment


def assert_clean(report: Report) -> None:
    assert report.mismatches == [] and report.in_flight == [] and report.held == []


async def swept_events(pool: asyncpg.Pool, payment_id: str) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT payload FROM events WHERE payment_id = $1 AND type = 'payment.swept' ORDER BY seq",
        payment_id,
    )
    return [r["payload"]["data"]["sweep"] for r in rows]


async def coverage(pool: asyncpg.Pool, payment_id: str) -> list[tuple[int, int]]:
    rows = await pool.fetch(
        "SELECT confirmed, sweep_covered FROM payment_options WHERE payment_id = $1"
        " ORDER BY position",
        payment_id,
    )
    return [(int(r["confirmed"]), int(r["sweep_covered"])) for r in rows]


async def test_half_in_a_token_half_in_native_both_go_to_the_treasury(  # type: ignore[no-untyped-def]
    shop: Rig, make_client, pool: asyncpg.Pool, watchers: Watchers
) -> None:
    """Only the first quoted option's asset used to be swept: the ETH half stayed at the
    deposit address, neither swept nor listed as held."""
    rig = shop
    client = await make_client(rig.config)
    headers = await key_for(pool, "default")
    watcher = watchers.watcher(rig.config)
    await watcher.run_once()
    payment = await create(client, headers, ["anvil:TD6", "anvil:ETH"])
    address = payment["address"]
    _, eth = payment["options"]
    half_eth = int(eth["amount_base_units"]) // 2 + 1
    rig.send_token("TD6", address, 12_500_000)
    rig.send_native(address, half_eth)
    rig.mine(2)
    await watcher.run_once()
    paid = await get_payment(client, headers, payment["id"])
    assert paid["status"] == "confirmed", paid["price"]
    before = rig.token_balance("TD6", TREASURY), rig.balance(TREASURY)

    await rig.settle(rig.sweeper())

    assert rig.token_balance("TD6", address) == 0
    assert rig.token_balance("TD6", TREASURY) - before[0] == 12_500_000
    native = [
        s for s in await rig.sweeps("native") if s["from_address"] == address
    ]  # the ETH half, less its fee (and the token sweep's, where the deposit paid it)
    (eth_sweep,) = native
    assert eth_sweep["to_address"] == TREASURY and eth_sweep["status"] == "confirmed"
    assert rig.balance(TREASURY) - before[1] == int(eth_sweep["amount"])
    assert rig.balance(address) < 21_000 * int(eth_sweep["max_fee_per_gas"])
    assert await coverage(pool, payment["id"]) == [(12_500_000, 12_500_000), (half_eth, half_eth)]
    told = await swept_events(pool, payment["id"])
    assert sorted((e["token_address"] or "", e["amount_base_units"]) for e in told) == sorted(
        [("", str(int(eth_sweep["amount"]))), (rig.token("TD6"), "12500000")]
    )
    assert [e["amount"] for e in told if e["token_address"]] == ["12.5"]  # in TD6's decimals

    # Nothing more is due, nothing is left held, the books match the chain.
    await rig.sweeper().run_once()
    assert not await rig.busy()
    assert_clean(await reconcile(pool, rig.rpc, rig.chain))


@pytest.fixture(scope="module")
def beta_node() -> Iterator[AnvilProcess]:
    node = start_anvil(chain_id=31338)
    yield node
    node.stop()


@pytest.fixture
def beta(beta_node: AnvilProcess) -> Iterator[AnvilProcess]:
    snapshot = beta_node.rpc("evm_snapshot")
    yield beta_node
    beta_node.rpc("evm_revert", [snapshot])


async def test_each_option_is_swept_on_its_chain_to_the_merchants_treasury_there(  # type: ignore[no-untyped-def]
    write_config,
    pool: asyncpg.Pool,
    anvil: AnvilProcess,
    beta: AnvilProcess,
    coinbase: Exchange,
    make_client,
    watchers: Watchers,
) -> None:
    """A payment is bound to its merchant with its own (first option's) chain; on another chain
    of its options it used to go to that chain's treasury (the binding checked with the wrong
    chain) or be refused by the signing policy (no payment of that chain at the address)."""
    tokens = devtokens.deploy_test_tokens(anvil.url, FUNDER)
    anvil_entry = chain_entry(
        anvil,
        block_time=30,
        tokens={s: {"address": a, "decimals": d} for s, (a, d) in tokens.items()},
    )
    beta_entry = chain_entry(
        beta, name="beta", chain_id=31338, native={"symbol": "BETH", "decimals": 18}, block_time=30
    )
    config = write_config(
        rates(coinbase, **{"BETH/USD": {"peg": True}}), chains=[anvil_entry, beta_entry]
    )
    anvil.rpc("anvil_setBalance", [GAS, hex(1000 * ETH)])
    headers = await key_for(pool, "shop")
    for chain in ("anvil", "beta"):
        await set_treasury(pool, WALLET, "shop", chain, SHOP_TREASURY)
    client = await make_client(config)
    on_anvil, on_beta = watchers.watcher(config, "anvil"), watchers.watcher(config, "beta")
    for w in (on_anvil, on_beta):
        await w.run_once()
    payment = await create(client, headers, ["anvil:TD6", "beta:BETH"])
    assert payment["chain"] == "anvil"
    address = payment["address"]
    devtokens.mint(anvil.url, tokens["TD6"][0], FUNDER, 12_500_000, FUNDER)
    devtokens.token_transfer(anvil.url, tokens["TD6"][0], FUNDER, address, 12_500_000)
    send_native(beta, address, 13 * ETH)
    mine(anvil, 2)
    mine(beta, 2)
    for w in (on_anvil, on_beta):
        await w.run_once()
    assert (await get_payment(client, headers, payment["id"]))["status"] == "confirmed"
    shop_beth = int(beta.rpc("eth_getBalance", [SHOP_TREASURY, "latest"]), 16)

    async with aiohttp.ClientSession() as session:
        rpcs = {c.name: RpcClient(c.name, list(c.rpc), session) for c in config.chains}
        sweepers = [
            Sweeper(c, config.database.dsn, pool, rpcs[c.name], WALLET, 0, operator_url=True)
            for c in config.chains
        ]
        try:
            for _ in range(6):
                for sweeper in sweepers:
                    await sweeper.run_once()
                mine(anvil)
                mine(beta)
            reports = [await reconcile(pool, rpcs[c.name], c) for c in config.chains]
        finally:
            for sweeper in sweepers:
                await sweeper.close()
            anvil.rpc("anvil_dropAllTransactions")

    sweeps = await pool.fetch(
        "SELECT chain, kind, to_address, amount, status FROM sweeps"
        " WHERE kind IN ('token', 'native') ORDER BY id"
    )
    assert {(s["chain"], s["kind"], s["to_address"], s["status"]) for s in sweeps} == {
        ("anvil", "token", SHOP_TREASURY, "confirmed"),
        ("beta", "native", SHOP_TREASURY, "confirmed"),
    }
    (beth,) = [s for s in sweeps if s["chain"] == "beta"]
    assert devtokens.token_balance(anvil.url, tokens["TD6"][0], SHOP_TREASURY) == 12_500_000
    now = int(beta.rpc("eth_getBalance", [SHOP_TREASURY, "latest"]), 16)
    assert now - shop_beth == int(beth["amount"]) > 12 * ETH
    assert await coverage(pool, payment["id"]) == [(12_500_000, 12_500_000), (13 * ETH, 13 * ETH)]
    for report in reports:
        assert_clean(report)
