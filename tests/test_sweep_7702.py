"""EIP-7702 sweeps on a real Anvil (Prague) and Postgres: the delegate deployed on first use,
token and native deposits swept in one batch by the gas wallet, nothing left behind, payments
told which batch swept them, the books reconciled; `sweep_mode` auto probing, and the top-up
fallback on a node without EIP-7702 (Anvil `--hardfork cancun`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import structlog
from eth_account import Account
from eth_hash.auto import keccak
from test_sweeper import GAS, OUTSIDER, TREASURY, WALLET, Rig, assert_reconciled, make_rig

from ctripd.chain import delegate
from ctripd.chain.evm import transfer_data
from ctripd.dev.devnet import AnvilProcess, start_anvil
from ctripd.jobs.sweeper import InjectedCrash, Step

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
    async with make_rig(write_config, pool, anvil, tokens=True, sweep_mode="auto") as rig:
        assert rig.chain.sweep_mode == "auto"
        assert await delegate.supports_7702(rig.rpc, rig.chain.chain_id)
        await rig.pay_token("TD6", 1140, 5 * 10**6)
        rig.mine()
        await rig.settle(rig.sweeper())
        assert [s["kind"] for s in await rig.sweeps()] == ["deploy", "batch"]


# ---- safety ---------------------------------------------------------------------------------


def send_as(rig: Rig, sender: str, to: str, data: str, value: int = 0) -> dict[str, Any]:
    """A call from one of Anvil's unlocked accounts (the attacker), whatever its outcome."""
    tx_hash = rig.rpc_sync(
        "eth_sendTransaction",
        [{"from": sender, "to": to, "data": data, "value": hex(value), "gas": hex(500_000)}],
    )
    return rig.anvil.receipt(tx_hash)


def sweep_call(token: str | None) -> str:
    selector = keccak(b"sweep(address)")[:4].hex()
    return "0x" + selector + (token or delegate.NATIVE)[2:].lower().rjust(64, "0")


def deploy_delegate_for(rig: Rig, treasury: str) -> str:
    """A genuine SweepDelegate deployed by the attacker, sweeping to the attacker."""
    tx_hash = rig.rpc_sync(
        "eth_sendTransaction",
        [{"from": OUTSIDER, "data": delegate.creation_data(treasury), "gas": hex(1_000_000)}],
    )
    address: str = rig.anvil.receipt(tx_hash)["contractAddress"]
    return address


def redelegate(rig: Rig, index: int, target: str) -> None:
    """Someone holding the deposit's key delegates it to `target`; the attacker pays the gas."""
    deposit_key = WALLET.private_key(index)
    nonce = rig.nonce(WALLET.address(index))
    auth = delegate.sign_authorization(deposit_key, 31337, target, nonce)
    payer = Account.from_key(b"\x01" * 32)
    rig.rpc_sync("anvil_setBalance", [payer.address, hex(ETH)])
    tx = payer.sign_transaction(
        {
            "type": 4,
            "chainId": 31337,
            "nonce": rig.nonce(payer.address),
            "to": payer.address,
            "value": 0,
            "data": "0x",
            "gas": 100_000,
            "maxFeePerGas": 100 * 10**9,
            "maxPriorityFeePerGas": 10**9,
            "authorizationList": [auth],
        }
    )
    rig.anvil.receipt(rig.rpc_sync("eth_sendRawTransaction", [tx.raw_transaction.to_0x_hex()]))


async def test_an_attacker_moves_funds_nowhere_but_the_treasury(rig_7702: Rig) -> None:
    """Anyone may call the delegate or a delegated deposit: funds only ever reach the
    treasury, and no call runs anything else in the deposit's name."""
    rig = rig_7702
    deposit = WALLET.address(1200)
    await rig.pay_token("USDTL", 1200, 5 * 10**6)
    rig.mine()
    sweeper = rig.sweeper()
    await rig.settle(sweeper)
    address = await delegate_of(rig)
    # More funds arrive at the (now delegated) deposit, and at the delegate itself.
    rig.send_token("USDTL", deposit, 3 * 10**6)
    rig.send_token("TD6", address, 2 * 10**6)
    rig.send_native(deposit, ETH)
    treasury = rig.token_balance("USDTL", TREASURY), rig.balance(TREASURY)
    attacker = rig.balance(OUTSIDER), rig.token_balance("USDTL", OUTSIDER)

    # Arbitrary calls in the deposit's name: there is no such function (only receive()).
    steal = transfer_data(OUTSIDER, 3 * 10**6)
    assert send_as(rig, OUTSIDER, deposit, steal)["status"] == "0x0"
    assert send_as(rig, OUTSIDER, address, steal)["status"] == "0x0"
    # A token that is no contract at all: refused, not "swept".
    assert send_as(rig, OUTSIDER, deposit, sweep_call(OUTSIDER))["status"] == "0x0"
    # Sweeps anyone may trigger: to the treasury, never to the caller.
    assert send_as(rig, OUTSIDER, deposit, sweep_call(rig.token("USDTL")))["status"] == "0x1"
    assert send_as(rig, OUTSIDER, deposit, sweep_call(None))["status"] == "0x1"
    many = delegate.sweep_many_data([address], [rig.token("TD6")])
    assert send_as(rig, OUTSIDER, address, many)["status"] == "0x1"
    # Value sent along stays nowhere but the treasury either.
    assert send_as(rig, OUTSIDER, deposit, sweep_call(None), value=ETH)["status"] == "0x0"

    assert rig.token_balance("USDTL", deposit) == 0
    assert rig.balance(deposit) == 0
    assert rig.token_balance("USDTL", TREASURY) == treasury[0] + 3 * 10**6
    assert rig.balance(TREASURY) == treasury[1] + ETH
    assert rig.token_balance("TD6", address) == 0
    assert rig.token_balance("USDTL", OUTSIDER) == attacker[1]
    assert rig.balance(OUTSIDER) < attacker[0]  # it paid gas, got nothing
    # The delegate wrote nothing into the deposit's storage.
    assert rig.rpc_sync("eth_getStorageAt", [deposit, "0x0", "latest"]) == "0x" + "00" * 32


async def test_a_delegate_row_pointing_elsewhere_is_never_used(rig_7702: Rig) -> None:
    """Database write access alone moves nothing: a delegate row rewritten to a genuine
    SweepDelegate whose treasury is the attacker's fails the code check; nothing is signed."""
    rig = rig_7702
    await rig.pay_token("TD6", 1210, 5 * 10**6)
    rig.mine()
    sweeper = rig.sweeper()
    await sweeper.run_once()  # the deployment
    rig.mine(2)
    await sweeper.run_once()  # deployed; the batch is signed
    rig.mine(2)
    await sweeper.run_once()
    await rig.pay_token("TD6", 1211, 5 * 10**6)
    rig.mine()
    forged = deploy_delegate_for(rig, OUTSIDER)
    await rig.pool.execute("UPDATE sweep_delegates SET address = $1", forged)
    fresh = rig.sweeper()  # a new process: trusts no delegate it has not read itself
    with structlog.testing.capture_logs() as logs:
        for _ in range(3):
            await fresh.run_once()
            rig.mine()
    assert any(e["event"] == "sweep.delegate_mismatch" for e in logs)
    assert len(await rig.sweeps("batch")) == 1
    assert rig.token_balance("TD6", WALLET.address(1211)) == 5 * 10**6


async def test_a_deposit_delegated_elsewhere_is_authorized_again(rig_7702: Rig) -> None:
    rig = rig_7702
    deposit = WALLET.address(1220)
    payment_id = await rig.pay_token("USDTL", 1220, 5 * 10**6)
    rig.mine()
    sweeper = rig.sweeper()
    await rig.settle(sweeper)
    address = await delegate_of(rig)
    # Someone holding the deposit's key points it at another contract; then more funds come.
    elsewhere = deploy_delegate_for(rig, OUTSIDER)
    redelegate(rig, 1220, elsewhere)
    assert delegate.delegated_to(rig.rpc_sync("eth_getCode", [deposit, "latest"])) == (
        elsewhere.lower()
    )
    tx, log_index = rig.send_token("USDTL", deposit, 2 * 10**6)
    async with rig.pool.acquire() as conn:
        await rig.insert_transfer(
            conn, payment_id, rig.token("USDTL"), deposit, 2 * 10**6, tx, log_index
        )
        await conn.execute(
            "UPDATE payments SET amount_received = amount_received + $2,"
            " amount_confirmed = amount_confirmed + $2 WHERE id = $1",
            payment_id,
            2 * 10**6,
        )
    rig.mine()
    treasury = rig.token_balance("USDTL", TREASURY)
    with structlog.testing.capture_logs() as logs:
        await rig.settle(sweeper)
    assert any(e["event"] == "sweep.redelegated" for e in logs)
    _, second = await rig.sweeps("batch")
    (entry,) = await rig.pool.fetch("SELECT * FROM sweep_entries WHERE sweep_id = $1", second["id"])
    assert entry["auth_nonce"] is not None and entry["status"] == "swept"
    assert delegate.delegated_to(rig.rpc_sync("eth_getCode", [deposit, "latest"])) == address
    assert rig.token_balance("USDTL", TREASURY) - treasury == 2 * 10**6
    assert rig.token_balance("USDTL", OUTSIDER) == 0
    await assert_reconciled(rig)


async def test_a_batch_dropped_by_a_reorg_is_sent_again(rig_7702: Rig) -> None:
    rig = rig_7702
    payments = [await rig.pay_token("TD18", 1230 + i, (i + 1) * ETH) for i in range(3)]
    rig.mine()
    sweeper = rig.sweeper()
    await sweeper.run_once()  # the deployment
    rig.mine(2)
    # The batch, mined when sent (automine): 1 confirmation of 2. Once, in a full run, the node
    # held it broadcast but unmined; a block is mined per round until it is in one.
    for _ in range(5):
        await sweeper.run_once()
        batches = await rig.sweeps("batch")
        if batches and batches[0]["tx_hash"] is not None:
            if rig.rpc_sync("eth_getTransactionReceipt", [batches[0]["tx_hash"]]) is not None:
                break
        rig.mine()
    (batch,) = await rig.sweeps("batch")
    raw = batch["raw_tx"]
    assert rig.rpc_sync("eth_getTransactionReceipt", [batch["tx_hash"]]) is not None
    rig.settled()
    rig.rpc_sync("evm_setAutomine", [False])
    rig.rpc_sync("anvil_reorg", [1, []])  # its block is replaced by an empty one
    rig.rpc_sync("anvil_dropAllTransactions")
    assert rig.rpc_sync("eth_getTransactionReceipt", [batch["tx_hash"]]) is None
    rig.rpc_sync("evm_setAutomine", [True])
    await rig.settle(sweeper)
    (batch,) = await rig.sweeps("batch")
    assert batch["status"] == "confirmed" and batch["raw_tx"] == raw
    for i, payment_id in enumerate(payments):
        assert rig.token_balance("TD18", WALLET.address(1230 + i)) == 0
        assert len(await rig.swept_events(payment_id)) == 1
    await assert_reconciled(rig)


def test_check_probes_eip7702(tmp_path: Path, anvil: AnvilProcess, cancun: AnvilProcess) -> None:
    """`ctripd check` says which mode `auto` takes, and fails `eip7702` where it cannot be."""
    from test_check import check, write

    path = write(tmp_path, anvil, "")
    assert "ok   chain anvil sweep_mode auto: EIP-7702 batches" in check(path).stdout
    path = write(tmp_path, cancun, "")
    assert "ok   chain anvil sweep_mode auto: gas top-ups (the node refuses" in check(path).stdout
    chains = tmp_path / "chains.yaml"
    chains.write_text(chains.read_text().replace("treasury:", "sweep_mode: eip7702, treasury:"))
    result = check(path)
    assert "FAIL chain anvil sweep_mode eip7702: the node refuses EIP-7702" in result.stdout


# ---- the books of a batch -------------------------------------------------------------------


async def sign_batch_unsent(rig: Rig) -> None:
    """Deploy the delegate, then sign and store a batch of the due deposits without sending it
    (the process dies right after the commit)."""
    await rig.sweeper().run_once()  # the deployment
    rig.mine(2)
    with pytest.raises(InjectedCrash):
        await rig.sweeper(crash_at=Step.SIGNED).run_once()
    (batch,) = await rig.sweeps("batch")
    assert batch["status"] == "signed"


async def test_a_payment_shows_its_own_entrys_outcome(rig_7702: Rig) -> None:
    """A batch confirmed with one entry failed: that payment's sweep shows `failed` (it waits
    to be swept again), the other's `confirmed`; swept again, it shows the new batch."""
    rig = rig_7702
    swept = await rig.pay_token("TD6", 1300, 5 * 10**6)
    stale = await rig.pay_token("TD6", 1301, 7 * 10**6)
    rig.mine()
    await sign_batch_unsent(rig)
    # The deposit's nonce moves before the batch is sent: its authorization no longer applies.
    rig.rpc_sync("anvil_setNonce", [WALLET.address(1301), "0x5"])
    sweeper = rig.sweeper()
    await rig.settle(sweeper)
    (batch,) = await rig.sweeps("batch")
    assert batch["status"] == "confirmed"
    assert (await rig.payment(swept))["sweep"] == {
        "status": "confirmed",
        "tx_hash": batch["tx_hash"],
    }
    assert (await rig.payment(stale))["sweep"] == {"status": "failed", "tx_hash": batch["tx_hash"]}
    assert await rig.swept_events(stale) == []

    rig.advance(120)  # past the back-off
    await rig.settle(sweeper)
    _, again = await rig.sweeps("batch")
    assert (await rig.payment(stale))["sweep"] == {
        "status": "confirmed",
        "tx_hash": again["tx_hash"],
    }
    assert rig.token_balance("TD6", WALLET.address(1301)) == 0
    await assert_reconciled(rig)


async def test_funds_a_batch_moved_after_the_safe_block_are_covered_when_they_confirm(
    rig_7702: Rig,
) -> None:
    """A batch moves the deposit's whole balance, also funds that arrived after the safe block
    it was planned at: once those confirm, the payment is covered by that batch, never marked
    as dust for the balance they left behind (none)."""
    rig = rig_7702
    deposit = WALLET.address(1310)
    payment_id = await rig.pay_token("TD6", 1310, 5 * 10**6)
    rig.mine()
    await sign_batch_unsent(rig)
    # More funds arrive before the batch goes out: received, not yet confirmed.
    tx, log_index = rig.send_token("TD6", deposit, 3 * 10**6)
    async with rig.pool.acquire() as conn:
        await rig.insert_transfer(
            conn, payment_id, rig.token("TD6"), deposit, 3 * 10**6, tx, log_index
        )
        await conn.execute(
            "UPDATE payments SET amount_received = amount_received + $2 WHERE id = $1",
            payment_id,
            3 * 10**6,
        )
    sweeper = rig.sweeper()
    await rig.settle(sweeper)
    (batch,) = await rig.sweeps("batch")
    (entry,) = await rig.pool.fetch("SELECT * FROM sweep_entries WHERE sweep_id = $1", batch["id"])
    assert (int(entry["amount"]), int(entry["moved"])) == (5 * 10**6, 8 * 10**6)
    assert rig.token_balance("TD6", deposit) == 0

    await rig.pool.execute(
        "UPDATE payments SET amount_confirmed = amount_received WHERE id = $1", payment_id
    )
    rig.mine(2)
    with structlog.testing.capture_logs() as logs:
        await rig.settle(sweeper)
    assert [e for e in logs if e["event"] == "sweep.dust"] == []
    assert len(await rig.sweeps("batch")) == 1
    link = await rig.pool.fetchval(
        "SELECT covered FROM sweep_payments WHERE sweep_id = $1", batch["id"]
    )
    assert int(link) == 8 * 10**6
    assert (
        int(await rig.pool.fetchval("SELECT sweep_covered FROM payments WHERE id = $1", payment_id))
        == 8 * 10**6
    )
    (event,) = await rig.swept_events(payment_id)
    assert event["data"]["sweep"]["amount_base_units"] == str(8 * 10**6)
    assert (await rig.payment(payment_id))["sweep"]["status"] == "confirmed"
    await assert_reconciled(rig)


async def test_a_deposit_someone_else_swept_is_booked_as_swept(rig_7702: Rig) -> None:
    """Anyone may trigger the delegate: a third party sweeps a delegated deposit's new funds to
    the treasury before ctripd does. They are booked as swept by that transaction (the payment
    covered and told, reconcile clean), never as dust; booked once."""
    rig = rig_7702
    deposit = WALLET.address(1320)
    payment_id = await rig.pay_token("USDTL", 1320, 5 * 10**6)
    rig.mine()
    sweeper = rig.sweeper()
    await rig.settle(sweeper)  # the delegate deployed, the deposit delegated and swept
    # More funds, confirmed for the payment; a third party sweeps them first.
    tx, log_index = rig.send_token("USDTL", deposit, 3 * 10**6)
    async with rig.pool.acquire() as conn:
        await rig.insert_transfer(
            conn, payment_id, rig.token("USDTL"), deposit, 3 * 10**6, tx, log_index
        )
        await conn.execute(
            "UPDATE payments SET amount_received = amount_received + $2,"
            " amount_confirmed = amount_confirmed + $2 WHERE id = $1",
            payment_id,
            3 * 10**6,
        )
    treasury = rig.token_balance("USDTL", TREASURY)
    outside = send_as(rig, OUTSIDER, deposit, sweep_call(rig.token("USDTL")))
    assert outside["status"] == "0x1"
    assert rig.token_balance("USDTL", TREASURY) - treasury == 3 * 10**6
    rig.mine(2)
    rig.advance(60)

    with structlog.testing.capture_logs() as logs:
        await rig.settle(sweeper)
        await sweeper.run_once()
    assert [e for e in logs if e["event"] == "sweep.dust"] == []
    assert len([e for e in logs if e["event"] == "sweep.outside"]) == 1
    assert len(await rig.sweeps("batch")) == 1
    covered = await rig.pool.fetchval(
        "SELECT sweep_covered FROM payments WHERE id = $1", payment_id
    )
    assert int(covered) == 8 * 10**6
    events = [e["data"]["sweep"] for e in await rig.swept_events(payment_id)]
    assert sorted(e["kind"] for e in events) == ["batch", "outside"]
    (facts,) = [e for e in events if e["kind"] == "outside"]
    assert (facts["kind"], facts["tx_hash"]) == ("outside", outside["transactionHash"])
    assert (facts["amount_base_units"], facts["fee_base_units"]) == (str(3 * 10**6), "0")
    assert (facts["from"], facts["to"]) == (deposit, TREASURY)
    assert (await rig.payment(payment_id))["sweep"] == {
        "status": "confirmed",
        "tx_hash": outside["transactionHash"],
    }
    await assert_reconciled(rig)
