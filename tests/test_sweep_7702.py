"""EIP-7702 sweeps on a real Anvil (Prague) and Postgres: the delegate deployed on first use,
token and native deposits swept in one batch by the gas wallet, nothing left behind, payments
told which batch swept them, the books reconciled; `sweep_mode` auto probing, and the top-up
fallback on a node without EIP-7702 (Anvil `--hardfork cancun`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
from test_sweeper import GAS, TREASURY, WALLET, Rig, assert_reconciled, make_rig

from ctripd.chain import delegate
from ctripd.dev.devnet import AnvilProcess, start_anvil

ETH = 10**18


@pytest.fixture
async def rig_7702(write_config, pool: asyncpg.Pool, anvil: AnvilProcess) -> AsyncIterator[Rig]:  # type: ignore[no-untyped-def]
    async with make_rig(write_config, pool, anvil, tokens=True, sweep_mode="eip7702") as r:
        yield r


async def delegate_of(rig: Rig, treasury: str = TREASURY) -> str:
    address: str = await rig.pool.fetchval(
        "SELECT address FROM sweep_delegates WHERE treasury = $1", treasury
    )
    return address


async def test_token_deposits_go_in_one_batch_native_ones_pay_their_own(rig_7702: Rig) -> None:
    rig = rig_7702
    amounts = {"USDTL": 7 * 10**6 + 1, "TD18": 3 * ETH, "TD6": 12 * 10**6}
    tokens = {}
    for i, (symbol, amount) in enumerate(amounts.items()):
        tokens[symbol] = await rig.pay_token(symbol, 1100 + i, amount)
    natives = [await rig.pay_native(1110 + i, ETH // (i + 1)) for i in range(2)]
    rig.mine()
    treasury_eth = rig.balance(TREASURY)
    treasury_tokens = {s: rig.token_balance(s, TREASURY) for s in amounts}
    gas_before = rig.balance(GAS)

    sweeper = rig.sweeper()
    await rig.settle(sweeper)

    (deploy,) = await rig.sweeps("deploy")
    (batch,) = await rig.sweeps("batch")
    assert (deploy["status"], deploy["from_address"]) == ("confirmed", GAS)
    assert (batch["status"], batch["from_address"]) == ("confirmed", GAS)
    assert await rig.sweeps("gas_topup") == []
    assert {(s["from_address"], s["status"]) for s in await rig.sweeps("native")} == {
        (WALLET.address(1110 + i), "confirmed") for i in range(2)
    }
    address = await delegate_of(rig)
    assert batch["to_address"] == address
    assert delegate.is_delegate_for(rig.rpc_sync("eth_getCode", [address, "latest"]), TREASURY)
    for i, (symbol, amount) in enumerate(amounts.items()):
        deposit = WALLET.address(1100 + i)
        assert rig.token_balance(symbol, deposit) == 0
        assert rig.token_balance(symbol, TREASURY) - treasury_tokens[symbol] == amount
        assert rig.balance(deposit) == 0  # no top-up, no change
        code = rig.rpc_sync("eth_getCode", [deposit, "latest"])
        assert delegate.delegated_to(code) == address.lower()
    native_out = sum(int(s["amount"]) for s in await rig.sweeps("native"))
    assert rig.balance(TREASURY) - treasury_eth == native_out
    assert gas_before - rig.balance(GAS) == int(deploy["fee"]) + int(batch["fee"])

    for symbol, payment_id in tokens.items():
        (event,) = await rig.swept_events(payment_id)
        facts = event["data"]["sweep"]
        assert (facts["kind"], facts["tx_hash"]) == ("batch", batch["tx_hash"])
        assert facts["amount_base_units"] == str(amounts[symbol])
        assert (facts["to"], facts["token_address"]) == (TREASURY, rig.token(symbol))
        payment = await rig.payment(payment_id)
        assert payment["sweep"] == {"status": "confirmed", "tx_hash": batch["tx_hash"]}
    for payment_id in natives:
        (event,) = await rig.swept_events(payment_id)
        assert event["data"]["sweep"]["kind"] == "native"
    await assert_reconciled(rig)

    # A later payment to a new deposit: the delegate is reused, no second deployment.
    await rig.pay_token("USDTL", 1120, 5 * 10**6)
    rig.mine()
    await rig.settle(sweeper)
    assert len(await rig.sweeps("deploy")) == 1
    assert len(await rig.sweeps("batch")) == 2
    await assert_reconciled(rig)


@pytest.fixture(scope="module")
def cancun_node() -> Iterator[AnvilProcess]:
    """An Anvil without EIP-7702 (pre-Prague), for the top-up fallback."""
    node = start_anvil(extra_args=["--hardfork", "cancun"])
    yield node
    node.stop()


@pytest.fixture
def cancun(cancun_node: AnvilProcess) -> Iterator[AnvilProcess]:
    snapshot = cancun_node.rpc("evm_snapshot")
    yield cancun_node
    cancun_node.rpc("evm_revert", [snapshot])


@pytest.fixture
async def cancun_rig(write_config, pool: asyncpg.Pool, cancun: AnvilProcess) -> AsyncIterator[Rig]:  # type: ignore[no-untyped-def]
    async with make_rig(write_config, pool, cancun, tokens=True, sweep_mode="auto") as r:
        yield r


async def test_auto_falls_back_to_top_ups_without_eip7702(cancun_rig: Rig) -> None:
    rig = cancun_rig
    assert not await delegate.supports_7702(rig.rpc, rig.chain.chain_id)
    await rig.pay_token("USDTL", 1130, 5 * 10**6)
    rig.mine()
    await rig.settle(rig.sweeper())
    kinds = [(s["kind"], s["status"]) for s in await rig.sweeps()]
    assert kinds[:2] == [("gas_topup", "confirmed"), ("token", "confirmed")]
    assert await rig.pool.fetchval("SELECT count(*) FROM sweep_delegates") == 0
    await assert_reconciled(rig)


async def test_auto_uses_eip7702_where_supported(write_config, pool, anvil) -> None:  # type: ignore[no-untyped-def]
    async with make_rig(write_config, pool, anvil, tokens=True) as rig:
        assert rig.chain.sweep_mode == "auto"
        assert await delegate.supports_7702(rig.rpc, rig.chain.chain_id)
        await rig.pay_token("TD6", 1140, 5 * 10**6)
        rig.mine()
        await rig.settle(rig.sweeper())
        assert [s["kind"] for s in await rig.sweeps()] == ["deploy", "batch"]
