"""Moving money out safely, each test a defect reproduced on the sweeper before: a forged or
rewritten row, fees compounding on refused transactions, sweepers starving the pool, one bad
group stopping a chain's planning, a token that says it moved funds and did not."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest
import structlog
from test_sweeper import (
    ETH,
    FUNDER,
    GAS,
    GWEI,
    OUTSIDER,
    TRANSFER_TOPIC,
    TREASURY,
    WALLET,
    Rig,
    make_rig,
)

from ctripd import db
from ctripd.config import Config
from ctripd.dev import tokens as devtokens
from ctripd.dev.devnet import AnvilProcess
from ctripd.jobs.policy import GasWallet, Intent, PolicyRefusal, SigningPolicy
from ctripd.ledger.reconcile import reconcile


async def forge_sweep(rig: Rig, **row: Any) -> int:
    """A sweeps row and its version, written straight to the database as an intruder would."""
    columns = {
        "chain": "anvil",
        "kind": "native",
        "from_address": FUNDER,
        "from_index": 0,
        "to_address": OUTSIDER,
        "token_address": None,
        "amount": 5 * ETH,
        "nonce": rig.nonce(FUNDER),
        "gas_limit": 21_000,
        "max_fee_per_gas": 10**9,
        "max_priority_fee": 10**9,
        "raw_tx": "0x02f86b",
        "tx_hash": "0x" + "ab" * 32,
        "status": "broadcast",
        "signed_at": rig.now.replace(year=rig.now.year - 1),
        **row,
    }
    names = ", ".join(columns)
    marks = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    sweep_id: int = await rig.pool.fetchval(
        f"INSERT INTO sweeps ({names}) VALUES ({marks}) RETURNING id", *columns.values()
    )
    await rig.pool.execute(
        "INSERT INTO sweep_txs (sweep_id, tx_hash, raw_tx, amount, max_fee_per_gas,"
        " max_priority_fee, signed_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        sweep_id,
        columns["tx_hash"],
        columns["raw_tx"],
        columns["amount"],
        columns["max_fee_per_gas"],
        columns["max_priority_fee"],
        columns["signed_at"],
    )
    return sweep_id


async def test_a_forged_row_moves_nothing(rig: Rig) -> None:
    """Item 1 of the report: a native row from the gas wallet to an outside address, long
    `broadcast`; the sweeper used to re-sign it with the gas wallet's whole balance."""
    outsider, gas_wallet = rig.balance(OUTSIDER), rig.balance(FUNDER)
    nonce = rig.nonce(FUNDER)
    await forge_sweep(rig)
    sweeper = rig.sweeper()
    for _ in range(3):
        await sweeper.run_once()
        rig.mine()
        rig.advance(rig.chain.replace_after + 300)
    assert rig.balance(OUTSIDER) == outsider
    assert (rig.balance(FUNDER), rig.nonce(FUNDER)) == (gas_wallet, nonce)
    assert await rig.pool.fetchval("SELECT count(*) FROM sweep_txs") == 1  # nothing re-signed


async def test_a_rewritten_row_is_refused_at_signing(rig: Rig) -> None:
    """A real sweep the node holds, its row rewritten to another recipient: the replacement is
    checked against the config and refused, loudly, and nothing reaches that address."""
    await rig.pay_native(1000, ETH)
    rig.mine()
    rig.rpc_sync("evm_setAutomine", [False])
    sweeper = rig.sweeper()
    await sweeper.run_once()
    (sweep,) = await rig.sweeps()
    assert rig.rpc_sync("eth_getTransactionByHash", [sweep["tx_hash"]]) is not None
    await rig.pool.execute("UPDATE sweeps SET to_address = $2 WHERE id = $1", sweep["id"], OUTSIDER)
    outsider = rig.balance(OUTSIDER)
    rig.advance(rig.chain.replace_after)
    with structlog.testing.capture_logs() as logs:
        await sweeper.run_once()
    (refused,) = [e for e in logs if e["event"] == "sweep.policy_refused"]
    assert refused["log_level"] == "critical" and "treasury" in refused["reason"]
    (row,) = await rig.sweeps()
    assert row["status"] == "refused"
    assert row["error"].startswith("refused by the signing policy: ")
    assert len(await rig.versions(sweep["id"])) == 1
    rig.mine()
    assert rig.balance(OUTSIDER) == outsider


async def test_signing_policy_rules(token_rig: Rig) -> None:
    rig = token_rig
    token = rig.token("TD6")
    await rig.pay_token("TD6", 1010, 10**6)
    await rig.pay_native(1011, ETH)
    policy = SigningPolicy(rig.chain, WALLET, GasWallet.of(WALLET, 0, hardened=True))
    deposit, native_deposit = WALLET.address(1010), WALLET.address(1011)
    allowed = [
        Intent("token", 1010, deposit, TREASURY, token, 10**6),
        Intent("native", 1011, native_deposit, TREASURY, None, ETH),
        Intent("native", 1010, deposit, TREASURY, None, 1),  # change at a token payment
        Intent("gas_topup", 0, GAS, deposit, None, 10**15),
        # The former gas wallet (deposit chain, index 0: Anvil's FUNDER): what it still holds
        # goes to the treasury; a top-up it had in flight may be re-signed.
        Intent("native", 0, FUNDER, TREASURY, None, ETH),
        Intent("gas_topup", 0, FUNDER, deposit, None, 10**15),
    ]
    for intent in allowed:
        await policy.check(rig.pool, intent)
    refused = {
        "treasury": Intent("native", 1011, native_deposit, OUTSIDER, None, ETH),
        "does not derive": Intent("native", 1012, native_deposit, TREASURY, None, ETH),
        "holds no payment": Intent("native", 1013, WALLET.address(1013), TREASURY, None, ETH),
        "not a token": Intent("token", 1010, deposit, TREASURY, OUTSIDER, 10**6),
        "in this asset": Intent("token", 1011, native_deposit, TREASURY, token, 10**6),
        "not the gas wallet": Intent("gas_topup", 1011, native_deposit, deposit, None, 1),
        "no deposit address": Intent("gas_topup", 0, GAS, OUTSIDER, None, 10**15),
        "confirmed token payment": Intent("gas_topup", 0, GAS, native_deposit, None, 1),
        "ceiling": Intent("gas_topup", 0, GAS, deposit, None, ETH),
        "is not the treasury": Intent("native", 0, FUNDER, OUTSIDER, None, ETH),
        "only native coin": Intent("token", 0, FUNDER, TREASURY, token, 1),
        "unknown kind": Intent("mint", 0, FUNDER, OUTSIDER, None, 1),
        "no payout wallet": Intent("payout", 0, FUNDER, OUTSIDER, None, 1),
        "not positive": Intent("native", 1011, native_deposit, TREASURY, None, 0),
    }
    for words, intent in refused.items():
        with pytest.raises(PolicyRefusal, match=words):
            await policy.check(rig.pool, intent)


async def test_an_unfunded_top_up_is_sent_again_never_repriced(token_rig: Rig) -> None:
    """Item 2: with the gas wallet empty for two hours the top-up used to be re-signed ~50 times
    at +12.5 % each, and was mined at ~150× the normal fee once funded."""
    rig = token_rig
    gas_wallet = WALLET.gas_address(20)  # not one of Anvil's funded accounts
    await rig.pay_token("TD6", 1020, 5 * 10**6)
    rig.mine()
    sweeper = rig.sweeper(gas_index=20)
    await sweeper.run_once()
    (topup,) = await rig.sweeps()
    for _ in range(60):  # two hours, a round every two minutes
        rig.advance(120)
        await sweeper.run_once()
    (version,) = await rig.versions(topup["id"])
    assert version["max_fee_per_gas"] == topup["max_fee_per_gas"]
    rig.rpc_sync("anvil_setBalance", [gas_wallet, hex(ETH)])
    rig.advance(300)
    await rig.settle(sweeper)
    done = {s["kind"]: s for s in await rig.sweeps()}
    assert done["gas_topup"]["status"] == "confirmed" and done["token"]["status"] == "confirmed"
    assert int(done["gas_topup"]["effective_gas_price"]) <= int(topup["max_fee_per_gas"])


async def test_any_number_of_chains_sweep_with_a_pool_of_two(rig: Rig, db_dsn: str) -> None:
    """Item 3: each run held a pooled connection for its lock and needed more from the same
    pool, so as many sweepers as connections never finished a round."""
    await rig.pay_native(1000, ETH)
    rig.mine()
    small = await db.create_pool(db_dsn, min_size=1, max_size=2)
    try:
        chains = [rig.chain] + [dataclasses.replace(rig.chain, name=n) for n in ("b", "c", "d")]
        small_rig = dataclasses.replace(rig, pool=small, sweepers=[])
        sweepers = [small_rig.sweeper(chain) for chain in chains]
        for _ in range(3):
            await asyncio.wait_for(asyncio.gather(*(s.run_once() for s in sweepers)), 30)
            rig.mine()
        (sweep,) = await rig.sweeps()
        assert sweep["status"] == "confirmed"
    finally:
        for sweeper in small_rig.sweepers:
            await sweeper.close()
        await small.close()


async def test_a_group_that_cannot_be_planned_does_not_stop_the_others(token_rig: Rig) -> None:
    """Item 5: a token removed from chains.yaml while a payment in it is unswept raised inside
    planning every round, and every group planned after it starved."""
    rig = token_rig
    by_address = sorted(range(1100, 1200), key=lambda i: WALLET.address(i).lower())
    token_index, native_indexes = by_address[0], by_address[-2:]  # planned in address order
    await rig.pay_token("TD6", token_index, 10**6)
    natives = [await rig.pay_native(i, ETH // 10) for i in native_indexes]
    rig.mine()
    without_td6 = dataclasses.replace(
        rig.chain, tokens={s: t for s, t in rig.chain.tokens.items() if s != "TD6"}
    )
    sweeper = rig.sweeper(without_td6)
    with structlog.testing.capture_logs() as logs:
        for _ in range(4):
            await sweeper.run_once()
            rig.mine()
    swept = [(await rig.payment(p))["sweep"]["status"] for p in natives]
    assert swept == ["confirmed", "confirmed"]
    assert any(e["event"] == "sweep.plan_failed" for e in logs)
    assert [s["kind"] for s in await rig.sweeps()] == ["native", "native"]


async def test_a_token_that_returns_false_is_not_reported_swept(
    write_config: Callable[..., Config], pool: asyncpg.Pool, anvil: AnvilProcess
) -> None:
    """Item 6: `payment.swept` was reported from the receipt's status alone."""
    token = devtokens.deploy_false_token(anvil.url, FUNDER)
    tokens = {"TDF": {"address": token, "decimals": 6}}
    async with make_rig(write_config, pool, anvil, other_tokens=tokens) as rig:
        deposit = WALLET.address(1030)
        devtokens.mint(anvil.url, token, deposit, 7 * 10**6, FUNDER)
        receipt = rig.rpc_sync(
            "eth_getTransactionReceipt",
            [rig.rpc_sync("eth_getBlockByNumber", ["latest", False])["transactions"][0]],
        )
        (log,) = [lg for lg in receipt["logs"] if lg["topics"][0] == TRANSFER_TOPIC]
        payment_id = await rig.insert_payment(
            1030, "TDF", 7 * 10**6, receipt, int(log["logIndex"], 16)
        )
        rig.mine()
        sweeper = rig.sweeper()
        for _ in range(4):
            await sweeper.run_once()
            rig.mine()
        sweeps = {s["kind"]: s for s in await rig.sweeps()}
        assert sweeps["gas_topup"]["status"] == "confirmed"
        assert sweeps["token"]["status"] == "failed"
        assert f"without a Transfer of 7000000 to {TREASURY}" in sweeps["token"]["error"]
        assert await rig.swept_events(payment_id) == []
        assert (await rig.payment(payment_id))["sweep"]["status"] == "failed"
        assert devtokens.token_balance(anvil.url, token, deposit) == 7 * 10**6


async def test_top_up_change_goes_back_to_the_treasury(token_rig: Rig) -> None:
    """Item 4: what a gas top-up leaves at the deposit address after the token sweep used to stay
    there for good; it goes to the treasury once it pays for its own transfer."""
    rig = token_rig
    deposit = WALLET.address(1040)
    await rig.pay_token("TD18", 1040, 3 * 10**18)
    # Fees well above the devnet's near-zero base fee, where the tip is most of the price and
    # the change would not pay for its own transfer.
    rig.rpc_sync("anvil_setNextBlockBaseFeePerGas", [hex(20 * GWEI)])
    rig.mine()
    treasury = rig.balance(TREASURY)
    sweeper = rig.sweeper()
    await rig.settle(sweeper)
    topup, token_sweep, back = await rig.sweeps()
    assert (topup["kind"], token_sweep["kind"]) == ("gas_topup", "token")
    assert (back["kind"], back["status"], back["from_address"]) == ("native", "confirmed", deposit)
    change = int(topup["amount"]) - int(token_sweep["fee"])
    assert rig.balance(TREASURY) - treasury == int(back["amount"])
    assert rig.balance(deposit) == change - int(back["amount"]) - int(back["fee"])
    # What stays is less than the most one more transfer could cost.
    assert rig.balance(deposit) < int(back["gas_limit"]) * int(back["max_fee_per_gas"])
    assert await rig.pool.fetchval("SELECT count(*) FROM events WHERE type = 'payment.swept'") == 1
    for _ in range(2):  # looked at once: nothing more to send
        await sweeper.run_once()
        rig.mine()
    assert len(await rig.sweeps()) == 3
    report = await reconcile(rig.pool, rig.rpc, rig.chain)
    assert report.mismatches == [] and report.in_flight == []


async def test_the_former_gas_wallet_empties_into_the_treasury(token_rig: Rig) -> None:
    """Item 4: the gas wallet moved off the deposit addresses' chain (one exported deposit key
    plus the xpub gave it away); an existing install's former gas wallet sends what is left to
    the treasury, once, through the same policy-checked signer."""
    rig = token_rig
    former = WALLET.address(21)
    rig.rpc_sync("anvil_setBalance", [former, hex(ETH)])
    await rig.pay_token("TD6", 1050, 10**6)
    rig.mine()
    await rig.settle(rig.sweeper(gas_index=21, gas_hardened=False))
    topup = (await rig.sweeps("gas_topup"))[0]
    assert topup["from_address"] == former
    left, treasury = rig.balance(former), rig.balance(TREASURY)

    rig.rpc_sync("anvil_setBalance", [WALLET.gas_address(21), hex(ETH)])
    sweeper = rig.sweeper(gas_index=21)
    for _ in range(3):
        await sweeper.run_once()
        rig.mine()
    (moved,) = [s for s in await rig.sweeps("native") if s["from_address"] == former]
    assert (moved["to_address"], moved["status"]) == (TREASURY, "confirmed")
    assert rig.balance(TREASURY) - treasury == int(moved["amount"])
    assert rig.balance(former) == left - int(moved["amount"]) - int(moved["fee"])
    await rig.sweeper(gas_index=21).run_once()  # a fresh process looks once more: nothing left
    assert len([s for s in await rig.sweeps("native") if s["from_address"] == former]) == 1
