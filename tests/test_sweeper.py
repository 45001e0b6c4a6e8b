"""Sweeper on a real Anvil and Postgres: native and token sweeps, gas top-ups, crash points,
stuck transactions, grouping, dust, failures.

Payments are inserted as already confirmed, each with a transfer row that matches a real
transfer made on Anvil, so reconciliation can check the books against the chain afterwards.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest
import structlog
from web3 import Web3

from ctripd import db
from ctripd.chain.rpc import RpcClient
from ctripd.chain.wallet import Wallet
from ctripd.config import ChainConfig, Config
from ctripd.dev import tokens as devtokens
from ctripd.dev.devnet import TEST_MNEMONIC, AnvilProcess, start_anvil
from ctripd.jobs.sweeper import FEE_WAIT, InjectedCrash, Step, Sweeper, make_sweepers
from ctripd.ledger.objects import load_payment
from ctripd.ledger.reconcile import reconcile

FUNDER = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"  # Anvil account 0: pays the payments
TREASURY = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"  # Anvil account 1
OUTSIDER = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"  # Anvil account 2
ETH = 10**18
GWEI = 10**9
TRANSFER_TOPIC = Web3.keccak(text="Transfer(address,address,uint256)").to_0x_hex()
WALLET = Wallet.from_mnemonic(TEST_MNEMONIC)
GAS = WALLET.gas_address(0)  # the gas wallet, m/44'/60'/1'/0/0, funded by each rig
_ids = itertools.count(1)


def chain_entry(anvil: AnvilProcess, **extra: Any) -> dict[str, Any]:
    return {
        "name": "anvil",
        "chain_id": 31337,
        "rpc": [anvil.url],
        "confirmations": 2,
        "poll_interval": 1,
        "native": {"symbol": "ETH", "decimals": 18},
        "treasury": TREASURY,
        # The top-up path; tests/test_sweep_7702.py covers EIP-7702 batches.
        "sweep_mode": "topup",
        **extra,
    }


@dataclasses.dataclass
class Rig:
    """One test's chain, database, wallet and clock, with helpers to pay and to sweep."""

    config: Config
    chain: ChainConfig
    pool: asyncpg.Pool
    rpc: RpcClient
    anvil: AnvilProcess
    now: datetime = dataclasses.field(default_factory=lambda: datetime.now(UTC))
    sweepers: list[Sweeper] = dataclasses.field(default_factory=list)

    def sweeper(
        self, chain: ChainConfig | None = None, gas_index: int = 0, **kwargs: Any
    ) -> Sweeper:
        sweeper = Sweeper(
            chain or self.chain,
            self.config.database.dsn,
            self.pool,
            self.rpc,
            WALLET,
            gas_index,
            clock=lambda: self.now,
            **{"operator_url": True, **kwargs},
        )
        self.sweepers.append(sweeper)
        return sweeper

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def rpc_sync(self, method: str, params: list[Any] | None = None) -> Any:
        return self.anvil.rpc(method, params)

    def settled(self) -> None:
        """Wait until automine has mined what was sent: Anvil answers eth_sendTransaction
        before its miner ran, and an evm_mine racing it would blur the block count."""
        if not self.anvil.rpc("anvil_getAutomine"):
            return
        deadline = time.monotonic() + 10
        while int(self.anvil.rpc("txpool_status")["pending"], 16):
            assert time.monotonic() < deadline, "automine did not mine the pool"
            time.sleep(0.005)

    def mine(self, blocks: int = 1) -> None:
        self.settled()
        for _ in range(blocks):
            self.anvil.rpc("evm_mine")

    def balance(self, address: str) -> int:
        return int(self.anvil.rpc("eth_getBalance", [address, "latest"]), 16)

    def nonce(self, address: str) -> int:
        return int(self.anvil.rpc("eth_getTransactionCount", [address, "latest"]), 16)

    def token(self, symbol: str) -> str:
        return self.chain.tokens[symbol].address

    def token_balance(self, symbol: str, owner: str) -> int:
        return devtokens.token_balance(self.anvil.url, self.token(symbol), owner)

    async def insert_payment(
        self, index: int, asset: str, amount: int, tx: dict[str, Any], log_index: int
    ) -> str:
        """A confirmed payment at `WALLET.address(index)` paid by the mined transfer `tx`."""
        payment_id = f"pay_sweep{next(_ids)}"
        token, decimals = self.chain.asset(asset) or (None, 18)
        address = WALLET.address(index)
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO payments (id, merchant, chain, chain_id, asset, token_address,"
                " decimals, amount, address, address_index, status, amount_received,"
                " amount_confirmed, confirmations_required, expires_at, detected_at,"
                " confirmed_at) VALUES ($1, 'default', 'anvil', 31337, $2, $3, $4, $5, $6, $7,"
                " 'confirmed', $5, $5, 2, now() + interval '1 hour', now(), now())",
                payment_id,
                asset,
                token,
                decimals,
                amount,
                address,
                index,
            )
            await self.insert_transfer(conn, payment_id, token, address, amount, tx, log_index)
        return payment_id

    async def insert_transfer(
        self,
        conn: Any,
        payment_id: str,
        token: str | None,
        address: str,
        amount: int,
        tx: dict[str, Any],
        log_index: int,
    ) -> None:
        await conn.execute(
            "INSERT INTO transfers (chain, tx_hash, kind, log_index, payment_id, token_address,"
            " from_address, to_address, amount, block_number, block_hash)"
            " VALUES ('anvil', $1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            tx["transactionHash"],
            "token" if token else "native",
            log_index,
            payment_id,
            token,
            FUNDER,
            address,
            amount,
            int(tx["blockNumber"], 16),
            tx["blockHash"],
        )

    def send_native(self, to: str, amount: int) -> dict[str, Any]:
        gas_price = self.anvil.rpc("eth_gasPrice")  # a legacy transaction suits every hardfork
        tx_hash = self.anvil.rpc(
            "eth_sendTransaction",
            [{"from": FUNDER, "to": to, "value": hex(amount), "gasPrice": gas_price}],
        )
        self.settled()
        return self.anvil.receipt(tx_hash)

    def send_token(self, symbol: str, to: str, amount: int) -> tuple[dict[str, Any], int]:
        devtokens.mint(self.anvil.url, self.token(symbol), FUNDER, amount, FUNDER)
        tx_hash = devtokens.token_transfer(self.anvil.url, self.token(symbol), FUNDER, to, amount)
        receipt: dict[str, Any] = self.anvil.rpc("eth_getTransactionReceipt", [tx_hash])
        (log,) = [lg for lg in receipt["logs"] if lg["topics"][0] == TRANSFER_TOPIC]
        return receipt, int(log["logIndex"], 16)

    async def pay_native(self, index: int, amount: int) -> str:
        tx = self.send_native(WALLET.address(index), amount)
        return await self.insert_payment(index, "ETH", amount, tx, -1)

    async def pay_token(self, symbol: str, index: int, amount: int) -> str:
        tx, log_index = self.send_token(symbol, WALLET.address(index), amount)
        return await self.insert_payment(index, symbol, amount, tx, log_index)

    async def add_native_transfer(
        self, payment_id: str, amount: int, counted: bool = False
    ) -> None:
        """Another native transfer to the payment's address, recorded as the watcher would;
        `counted` adds it to the payment's (native) amounts too."""
        async with self.pool.acquire() as conn, conn.transaction():
            address = await conn.fetchval("SELECT address FROM payments WHERE id = $1", payment_id)
            tx = self.send_native(address, amount)
            await self.insert_transfer(conn, payment_id, None, address, amount, tx, -1)
            if counted:
                await conn.execute(
                    "UPDATE payments SET amount_received = amount_received + $2,"
                    " amount_confirmed = amount_confirmed + $2 WHERE id = $1",
                    payment_id,
                    amount,
                )

    async def sweeps(self, kind: str | None = None) -> list[asyncpg.Record]:
        rows = await self.pool.fetch("SELECT * FROM sweeps ORDER BY id")
        return [r for r in rows if kind is None or r["kind"] == kind]

    async def versions(self, sweep_id: int) -> list[asyncpg.Record]:
        return await self.pool.fetch(
            "SELECT * FROM sweep_txs WHERE sweep_id = $1 ORDER BY id", sweep_id
        )

    async def payment(self, payment_id: str) -> dict[str, Any]:
        payment = await load_payment(self.pool, payment_id)
        assert payment is not None
        return payment

    async def swept_events(self, payment_id: str) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            "SELECT payload FROM events WHERE payment_id = $1 AND type = 'payment.swept'",
            payment_id,
        )
        return [r["payload"] for r in rows]

    async def busy(self) -> bool:
        """Any sweep unfinished or any payment still due."""
        unfinished = await self.pool.fetchval(
            "SELECT count(*) FROM sweeps WHERE status IN ('signed', 'broadcast')"
        )
        due = await self.pool.fetch(db.queries("sweeper")["due_payments"], "anvil", self.now, 10)
        return bool(unfinished or due)

    async def settle(self, sweeper: Sweeper, max_rounds: int = 8) -> int:
        """run_once + one mined block, until nothing is in flight or due; returns the rounds."""
        for round_ in range(1, max_rounds + 1):
            await sweeper.run_once()
            self.mine()
            if not await self.busy():
                return round_
        raise AssertionError(f"still busy after {max_rounds} rounds: {await self.sweeps()}")


@contextlib.asynccontextmanager
async def make_rig(
    write_config: Callable[..., Config],
    pool: asyncpg.Pool,
    anvil: AnvilProcess,
    tokens: bool = False,
    token_dust: dict[str, int] | None = None,
    other_tokens: dict[str, dict[str, Any]] | None = None,
    toml: dict[str, dict[str, Any]] | None = None,
    **chain_extra: Any,
) -> AsyncIterator[Rig]:
    extra = dict(chain_extra)
    extra["tokens"] = dict(other_tokens or {})
    if tokens:
        deployed = devtokens.deploy_test_tokens(anvil.url, FUNDER)
        extra["tokens"] |= {
            s: {"address": a, "decimals": d, "dust_threshold": (token_dust or {}).get(s, 0)}
            for s, (a, d) in deployed.items()
        }
    config = write_config(toml, chains=[chain_entry(anvil, **extra)])
    anvil.rpc("anvil_setBalance", [GAS, hex(1000 * ETH)])
    (chain,) = config.chains
    await pool.execute(db.queries("chains")["upsert_chain"], chain.name, chain.chain_id)
    # Anvil keeps the next block's base fee across evm_revert: put it back afterwards.
    london = anvil.rpc("eth_getBlockByNumber", ["latest", False]).get("baseFeePerGas") is not None
    next_base_fee = anvil.rpc("eth_feeHistory", [1, "latest", []])["baseFeePerGas"][-1]
    async with aiohttp.ClientSession() as session:
        rig = Rig(config, chain, pool, RpcClient(chain.name, list(chain.rpc), session), anvil)
        try:
            yield rig
        finally:
            for sweeper in rig.sweepers:
                await sweeper.close()
            # Pending transactions would survive the snapshot revert into the next test too.
            anvil.rpc("anvil_dropAllTransactions")
            anvil.rpc("evm_setAutomine", [True])
            if london:
                anvil.rpc("anvil_setNextBlockBaseFeePerGas", [next_base_fee])


async def assert_reconciled(rig: Rig) -> None:
    report = await reconcile(rig.pool, rig.rpc, rig.chain)
    assert report.mismatches == []
    assert report.in_flight == []


# ---- native ---------------------------------------------------------------------------------


async def test_native_sweep_moves_balance_minus_fee(rig: Rig) -> None:
    payment_id = await rig.pay_native(1000, ETH)
    deposit = WALLET.address(1000)
    rig.mine()  # the payment's transfer has its 2 confirmations
    treasury_before = rig.balance(TREASURY)

    sweeper = rig.sweeper()
    await sweeper.run_once()
    (sweep,) = await rig.sweeps()
    assert (sweep["kind"], sweep["status"], sweep["nonce"]) == ("native", "broadcast", 0)
    assert (await rig.payment(payment_id))["sweep"] == {
        "status": "broadcast",
        "tx_hash": sweep["tx_hash"],
    }
    assert await rig.swept_events(payment_id) == []

    rig.mine()  # the sweep has its 2 confirmations
    await sweeper.run_once()
    (sweep,) = await rig.sweeps()
    assert sweep["status"] == "confirmed"
    one_fee = 21_000 * int(sweep["max_fee_per_gas"])
    assert int(sweep["amount"]) == ETH - one_fee
    assert rig.balance(TREASURY) - treasury_before == ETH - one_fee
    left = rig.balance(deposit)
    assert 0 <= left < one_fee
    assert left == ETH - int(sweep["amount"]) - int(sweep["fee"])
    assert int(sweep["fee"]) == 21_000 * int(sweep["effective_gas_price"])

    payment = await rig.payment(payment_id)
    assert payment["sweep"] == {"status": "confirmed", "tx_hash": sweep["tx_hash"]}
    (event,) = await rig.swept_events(payment_id)
    assert event["data"]["payment"]["sweep"]["status"] == "confirmed"
    facts = event["data"]["sweep"]
    assert facts["tx_hash"] == sweep["tx_hash"]
    assert facts["amount_base_units"] == str(ETH - one_fee)
    assert facts["fee_base_units"] == str(int(sweep["fee"]))
    assert facts["to"] == TREASURY

    await sweeper.run_once()  # nothing more to do: no second sweep
    assert len(await rig.sweeps()) == 1
    assert rig.nonce(deposit) == 1
    await assert_reconciled(rig)


async def test_balance_is_read_only_where_every_counted_transfer_is_visible(rig: Rig) -> None:
    """Balances are read `confirmations` deep. A payment whose transfer is newer than that (the
    node lags the watcher's) waits, rather than being taken for dust."""
    await rig.pay_native(1000, ETH)
    sweeper = rig.sweeper()
    await sweeper.run_once()
    assert await rig.sweeps() == []
    rig.mine()
    await rig.settle(sweeper)
    (sweep,) = await rig.sweeps()
    assert sweep["status"] == "confirmed"


# ---- tokens ---------------------------------------------------------------------------------


@pytest.mark.parametrize("symbol", ["TD18", "TD6", "USDTL"])
async def test_token_sweep_with_gas_top_up(token_rig: Rig, symbol: str) -> None:
    rig = token_rig
    decimals = rig.chain.tokens[symbol].decimals
    amount = 1234 * 10**decimals + 5
    payment_id = await rig.pay_token(symbol, 1001, amount)
    deposit = WALLET.address(1001)
    assert rig.balance(deposit) == 0
    rig.mine()
    treasury_tokens = rig.token_balance(symbol, TREASURY)

    await rig.settle(rig.sweeper())

    topup, sweep, *change = await rig.sweeps()
    assert (topup["kind"], topup["status"]) == ("gas_topup", "confirmed")
    assert (topup["from_address"], topup["to_address"]) == (GAS, deposit)
    assert (sweep["kind"], sweep["status"]) == ("token", "confirmed")
    assert (sweep["from_address"], sweep["token_address"]) == (deposit, rig.token(symbol))
    assert int(sweep["amount"]) == amount
    assert rig.token_balance(symbol, deposit) == 0
    assert rig.token_balance(symbol, TREASURY) - treasury_tokens == amount
    # The deposit paid its gas from the top-up; the rest went back if that paid for itself.
    assert [(c["kind"], c["from_address"], c["status"]) for c in change] in (
        [],
        [("native", deposit, "confirmed")],
    )
    back = sum(int(c["amount"]) + int(c["fee"]) for c in change)
    assert rig.balance(deposit) == int(topup["amount"]) - int(sweep["fee"]) - back
    assert int(sweep["gas_used"]) <= int(sweep["gas_limit"])

    payment = await rig.payment(payment_id)
    assert payment["sweep"] == {"status": "confirmed", "tx_hash": sweep["tx_hash"]}
    (event,) = await rig.swept_events(payment_id)
    assert event["data"]["sweep"]["amount_base_units"] == str(amount)
    assert event["data"]["sweep"]["token_address"] == rig.token(symbol)
    links = await rig.pool.fetch(
        "SELECT sweep_id FROM sweep_payments WHERE payment_id = $1", payment_id
    )
    assert sorted(r["sweep_id"] for r in links) == [topup["id"], sweep["id"]]
    await assert_reconciled(rig)


async def test_token_sweep_never_pays_gas_with_the_payers_held_coin(token_rig: Rig) -> None:
    """Coin a payer sent to a token payment by mistake is held for them (recoverable): the token
    sweep's gas comes from a top-up even though the address could pay it."""
    rig = token_rig
    deposit = WALLET.address(1002)
    payment_id = await rig.pay_token("TD6", 1002, 5 * 10**6)
    await rig.add_native_transfer(payment_id, ETH // 10)
    rig.mine()
    await rig.pool.execute(
        "UPDATE chains SET scanned_block = $2 WHERE name = $1",
        rig.chain.name,
        int(rig.rpc_sync("eth_blockNumber"), 16),
    )
    await rig.settle(rig.sweeper())
    topup, sweep, *change = await rig.sweeps()
    assert (topup["kind"], sweep["kind"], sweep["status"]) == ("gas_topup", "token", "confirmed")
    assert rig.token_balance("TD6", deposit) == 0
    back = sum(int(c["amount"]) + int(c["fee"]) for c in change)
    assert rig.balance(deposit) == ETH // 10 + int(topup["amount"]) - int(sweep["fee"]) - back
    assert rig.balance(deposit) >= ETH // 10  # the payer's coin is all there
    await assert_reconciled(rig)


async def test_gas_wallet_nonces_have_no_gap_across_a_crash(token_rig: Rig) -> None:
    """Two top-ups from the gas wallet; the process dies after signing the first."""
    rig = token_rig
    await rig.pay_token("TD18", 1003, 10**18)
    await rig.pay_token("TD18", 1004, 2 * 10**18)
    rig.mine()
    gas_nonce = rig.nonce(GAS)

    with pytest.raises(InjectedCrash):
        await rig.sweeper(crash_at=Step.SIGNED).run_once()
    (first,) = await rig.sweeps()
    assert (first["kind"], first["status"], first["nonce"]) == ("gas_topup", "signed", gas_nonce)
    assert rig.nonce(GAS) == gas_nonce  # nothing sent

    await rig.settle(rig.sweeper())
    topups = await rig.sweeps("gas_topup")
    assert [t["nonce"] for t in topups] == [gas_nonce, gas_nonce + 1]
    assert {t["status"] for t in topups} == {"confirmed"}
    assert first["tx_hash"] == topups[0]["tx_hash"]  # the same signed transaction was sent
    assert rig.nonce(GAS) == gas_nonce + 2
    assert [s["status"] for s in await rig.sweeps("token")] == ["confirmed", "confirmed"]
    await assert_reconciled(rig)


async def test_empty_gas_wallet_keeps_its_nonces_and_retries(token_rig: Rig) -> None:
    """Top-ups the node refuses stay signed with their nonces (0, 1: no reuse, no gap), are
    retried after a back-off, and go through in order once the gas wallet is funded."""
    rig = token_rig
    gas_wallet = WALLET.gas_address(20)  # not one of Anvil's funded accounts
    await rig.pay_token("TD18", 1007, 10**18)
    await rig.pay_token("TD6", 1008, 10**6)
    rig.mine()
    sweeper = rig.sweeper(gas_index=20)
    with structlog.testing.capture_logs() as logs:
        await sweeper.run_once()
    topups = await rig.sweeps()
    assert [(t["kind"], t["nonce"], t["status"]) for t in topups] == [
        ("gas_topup", 0, "signed"),
        ("gas_topup", 1, "signed"),
    ]
    assert all(t["attempts"] == 1 and "nsufficient funds" in t["error"] for t in topups)
    assert [e["event"] for e in logs].count("sweep.broadcast_failed") == 2

    await sweeper.run_once()  # backing off: not even tried
    assert [t["attempts"] for t in await rig.sweeps()] == [1, 1]
    rig.rpc_sync("anvil_setBalance", [gas_wallet, hex(ETH)])
    rig.advance(2)
    await rig.settle(sweeper)
    # (The top-ups' change goes back in native sweeps of its own when it pays for itself.)
    assert [(s["kind"], s["status"]) for s in await rig.sweeps() if s["kind"] != "native"] == [
        ("gas_topup", "confirmed"),
        ("gas_topup", "confirmed"),
        ("token", "confirmed"),
        ("token", "confirmed"),
    ]
    assert rig.nonce(gas_wallet) == 2
    await assert_reconciled(rig)


# ---- crash safety ---------------------------------------------------------------------------


@pytest.mark.parametrize("step", [Step.SIGNED, Step.SENT, Step.BROADCAST])
async def test_crash_then_resume_sweeps_exactly_once(rig: Rig, step: Step) -> None:
    """SIGNED: row committed, nothing sent → the fresh process sends the same raw tx.
    SENT: the node has it (mined, automine), the row still says 'signed' → receipt found, never
    sent again. BROADCAST: row 'broadcast', no receipt looked at → confirmed from the receipt."""
    await rig.pay_native(1000, ETH)
    deposit = WALLET.address(1000)
    rig.mine()
    treasury_before = rig.balance(TREASURY)

    with pytest.raises(InjectedCrash):
        await rig.sweeper(crash_at=step).run_once()
    (signed,) = await rig.sweeps()
    assert signed["status"] == ("broadcast" if step is Step.BROADCAST else "signed")
    rig.settled()
    assert rig.nonce(deposit) == (0 if step is Step.SIGNED else 1)

    with structlog.testing.capture_logs() as logs:
        rounds = await rig.settle(rig.sweeper())
    sent_again = "sweep.broadcast" in [e["event"] for e in logs]
    assert sent_again is (step is Step.SIGNED)  # a transaction the node has is not re-sent
    (sweep,) = await rig.sweeps()
    assert sweep["status"] == "confirmed"
    assert (sweep["tx_hash"], sweep["raw_tx"], sweep["nonce"]) == (
        signed["tx_hash"],
        signed["raw_tx"],
        0,
    )
    assert len(await rig.versions(sweep["id"])) == 1
    assert rounds == 2  # sent (or found mined) in the first, 2 confirmations in the second
    assert rig.nonce(deposit) == 1  # one transaction from the deposit address, ever
    assert rig.balance(TREASURY) - treasury_before == int(sweep["amount"])
    await assert_reconciled(rig)


async def test_crash_during_token_sweep_with_top_up(token_rig: Rig) -> None:
    """The top-up's broadcast is recorded and then the process dies; a fresh sweeper confirms it
    from the receipt and finishes the token sweep, without a second top-up."""
    rig = token_rig
    await rig.pay_token("USDTL", 1005, 7 * 10**6)
    rig.mine()
    gas_nonce = rig.nonce(GAS)
    with pytest.raises(InjectedCrash):
        await rig.sweeper(crash_at=Step.BROADCAST).run_once()
    await rig.settle(rig.sweeper())
    topup, sweep, *change = await rig.sweeps()
    assert (topup["kind"], sweep["kind"]) == ("gas_topup", "token")
    assert all(c["kind"] == "native" for c in change)
    assert rig.nonce(GAS) == gas_nonce + 1
    assert rig.token_balance("USDTL", WALLET.address(1005)) == 0
    await assert_reconciled(rig)


async def test_resent_transaction_the_node_already_has_counts_as_broadcast(rig: Rig) -> None:
    """Crash after sending, while the transaction waits in the node's pool: re-sending gets
    "already imported", which the node's own view settles as broadcast."""
    await rig.pay_native(1000, ETH)
    rig.mine()
    rig.rpc_sync("evm_setAutomine", [False])
    with pytest.raises(InjectedCrash):
        await rig.sweeper(crash_at=Step.SENT).run_once()
    (signed,) = await rig.sweeps()
    assert signed["status"] == "signed"
    sweeper = rig.sweeper()
    with structlog.testing.capture_logs() as logs:
        await sweeper.run_once()
    events = [e["event"] for e in logs]
    assert "sweep.broadcast" in events and "sweep.broadcast_failed" not in events
    (row,) = await rig.sweeps()
    assert (row["status"], row["tx_hash"]) == ("broadcast", signed["tx_hash"])
    assert int(rig.rpc_sync("txpool_status")["pending"], 16) == 1
    rig.mine(2)
    await sweeper.run_once()
    assert [s["status"] for s in await rig.sweeps()] == ["confirmed"]


async def test_node_that_forgot_the_transaction_gets_the_same_bytes_again(rig: Rig) -> None:
    await rig.pay_native(1000, ETH)
    rig.mine()
    rig.rpc_sync("evm_setAutomine", [False])
    await rig.sweeper().run_once()
    (sweep,) = await rig.sweeps()
    assert sweep["status"] == "broadcast"
    assert rig.rpc_sync("eth_getTransactionByHash", [sweep["tx_hash"]]) is not None
    rig.rpc_sync("anvil_dropTransaction", [sweep["tx_hash"]])  # e.g. the node restarted

    fresh = rig.sweeper()
    await fresh.run_once()
    assert rig.rpc_sync("eth_getTransactionByHash", [sweep["tx_hash"]]) is not None
    rig.mine(2)
    await fresh.run_once()
    (done,) = await rig.sweeps()
    assert done["status"] == "confirmed"
    assert (done["tx_hash"], done["raw_tx"]) == (sweep["tx_hash"], sweep["raw_tx"])
    assert len(await rig.versions(done["id"])) == 1


# ---- fees -----------------------------------------------------------------------------------


async def test_stuck_sweep_is_replaced_with_higher_fee_same_nonce(rig: Rig) -> None:
    await rig.pay_native(1000, ETH)
    deposit = WALLET.address(1000)
    rig.mine()
    treasury_before = rig.balance(TREASURY)
    rig.rpc_sync("evm_setAutomine", [False])
    sweeper = rig.sweeper()
    await sweeper.run_once()
    (first,) = await rig.sweeps()
    # The base fee jumps above what the sweep offers: it cannot be mined.
    rig.rpc_sync("anvil_setNextBlockBaseFeePerGas", [hex(100 * GWEI)])
    rig.mine()
    assert rig.rpc_sync("eth_getTransactionReceipt", [first["tx_hash"]]) is None

    await sweeper.run_once()  # not yet `replace_after` old: left alone
    assert len(await rig.versions(first["id"])) == 1
    rig.advance(rig.chain.replace_after)
    await sweeper.run_once()
    old, new = await rig.versions(first["id"])
    assert old["tx_hash"] == first["tx_hash"]
    assert int(new["max_fee_per_gas"]) >= int(old["max_fee_per_gas"]) * 11 // 10
    assert int(new["max_priority_fee"]) >= int(old["max_priority_fee"]) * 11 // 10
    assert int(new["max_fee_per_gas"]) <= rig.chain.max_fee_per_gas
    assert int(new["amount"]) == ETH - 21_000 * int(new["max_fee_per_gas"])

    rig.mine(2)
    await sweeper.run_once()
    (sweep,) = await rig.sweeps()
    assert sweep["status"] == "confirmed"
    assert sweep["tx_hash"] == new["tx_hash"]
    assert int(sweep["amount"]) == int(new["amount"])
    assert rig.rpc_sync("eth_getTransactionReceipt", [old["tx_hash"]]) is None
    assert rig.nonce(deposit) == 1
    assert rig.balance(TREASURY) - treasury_before == int(new["amount"])
    await assert_reconciled(rig)


async def test_an_older_version_mined_after_a_replacement_is_the_one_recorded(rig: Rig) -> None:
    await rig.pay_native(1000, ETH)
    rig.mine()
    treasury_before = rig.balance(TREASURY)
    rig.rpc_sync("evm_setAutomine", [False])
    sweeper = rig.sweeper()
    await sweeper.run_once()
    rig.advance(rig.chain.replace_after)
    await sweeper.run_once()
    (row,) = await rig.sweeps()
    old, new = await rig.versions(row["id"])
    assert row["tx_hash"] == new["tx_hash"]
    # Another node had the first version and it won the race.
    rig.rpc_sync("anvil_dropTransaction", [new["tx_hash"]])
    rig.rpc_sync("eth_sendRawTransaction", [old["raw_tx"]])
    rig.mine(2)
    await sweeper.run_once()
    (done,) = await rig.sweeps()
    assert (done["status"], done["tx_hash"]) == ("confirmed", old["tx_hash"])
    assert int(done["amount"]) == int(old["amount"]) > int(new["amount"])
    assert rig.balance(TREASURY) - treasury_before == int(old["amount"])
    await assert_reconciled(rig)


async def test_crash_between_signing_a_replacement_and_sending_it(rig: Rig) -> None:
    await rig.pay_native(1000, ETH)
    rig.mine()
    rig.rpc_sync("evm_setAutomine", [False])
    await rig.sweeper().run_once()
    (first,) = await rig.sweeps()
    rig.rpc_sync("anvil_setNextBlockBaseFeePerGas", [hex(100 * GWEI)])
    rig.mine()
    # Anvil drops the underpriced transaction and refuses it again: only a new price helps.
    await rig.sweeper().run_once()
    rig.advance(rig.chain.replace_after)
    with pytest.raises(InjectedCrash):
        await rig.sweeper(crash_at=Step.SIGNED).run_once()
    old, new = await rig.versions(first["id"])
    assert old["tx_hash"] == first["tx_hash"]
    (row,) = await rig.sweeps()
    assert (row["status"], row["tx_hash"]) == ("signed", new["tx_hash"])
    assert rig.rpc_sync("eth_getTransactionByHash", [new["tx_hash"]]) is None

    sweeper = rig.sweeper()
    await sweeper.run_once()  # sends the stored replacement, signs nothing new
    assert len(await rig.versions(first["id"])) == 2
    assert rig.rpc_sync("eth_getTransactionByHash", [new["tx_hash"]]) is not None
    rig.mine(2)
    await sweeper.run_once()
    (done,) = await rig.sweeps()
    assert (done["status"], done["tx_hash"]) == ("confirmed", new["tx_hash"])
    assert rig.nonce(WALLET.address(1000)) == 1


async def test_legacy_chain_uses_gas_price_and_replaces_it(
    write_config: Any, pool: asyncpg.Pool
) -> None:
    berlin = start_anvil(extra_args=["--hardfork", "berlin"])
    try:
        async with make_rig(write_config, pool, berlin) as rig:
            await rig.pay_native(1000, ETH)
            rig.mine()
            rig.rpc_sync("evm_setAutomine", [False])
            sweeper = rig.sweeper()
            await sweeper.run_once()
            (sweep,) = await rig.sweeps()
            assert sweep["max_fee_per_gas"] is None and sweep["gas_price"] > 0
            rig.advance(rig.chain.replace_after)
            await sweeper.run_once()
            old, new = await rig.versions(sweep["id"])
            assert int(new["gas_price"]) >= int(old["gas_price"]) * 11 // 10
            assert int(new["amount"]) == ETH - 21_000 * int(new["gas_price"])
            rig.mine(2)
            await sweeper.run_once()
            (done,) = await rig.sweeps()
            assert (done["status"], done["tx_hash"]) == ("confirmed", new["tx_hash"])
            assert rig.balance(WALLET.address(1000)) == 0  # legacy: exactly the fee is paid
            await assert_reconciled(rig)
    finally:
        berlin.stop()


async def test_contract_treasury_gets_the_gas_it_needs(rig: Rig) -> None:
    """A treasury with code (a multisig) may spend gas on receipt: 21000 would revert."""
    rig.rpc_sync("anvil_setCode", [TREASURY, "0x600160005500"])  # SSTORE(0, 1); STOP
    await rig.pay_native(1000, ETH)
    rig.mine()
    treasury_before = rig.balance(TREASURY)
    await rig.settle(rig.sweeper())
    (sweep,) = await rig.sweeps()
    assert sweep["status"] == "confirmed"
    assert int(sweep["gas_limit"]) > 21_000
    assert int(sweep["gas_used"]) > 21_000
    assert rig.balance(TREASURY) - treasury_before == int(sweep["amount"])
    assert rig.balance(WALLET.address(1000)) < int(sweep["gas_limit"]) * int(
        sweep["max_fee_per_gas"]
    )
    await assert_reconciled(rig)


async def test_replacement_never_exceeds_the_fee_cap(rig: Rig) -> None:
    await rig.pay_native(1000, ETH)
    rig.mine()
    history = rig.rpc_sync("eth_feeHistory", [1, "latest", []])
    latest = rig.rpc_sync("eth_getBlockByNumber", ["latest", False])
    base = max(int(history["baseFeePerGas"][-1], 16), int(latest["baseFeePerGas"], 16))
    tip = int(rig.rpc_sync("eth_maxPriorityFeePerGas"), 16)
    capped = dataclasses.replace(rig.chain, max_fee_per_gas=base + tip + 1)
    rig.rpc_sync("evm_setAutomine", [False])
    sweeper = rig.sweeper(capped)
    await sweeper.run_once()
    (sweep,) = await rig.sweeps()
    assert int(sweep["max_fee_per_gas"]) == capped.max_fee_per_gas
    rig.rpc_sync("anvil_setNextBlockBaseFeePerGas", [hex(100 * GWEI)])
    rig.mine()
    await sweeper.run_once()  # refused for its fee when sent again
    rig.advance(capped.replace_after)
    with structlog.testing.capture_logs() as logs:
        await sweeper.run_once()
    (failed,) = [e for e in logs if e["event"] == "sweep.replace_failed"]
    assert "fee cap" in failed["error"]
    assert len(await rig.versions(sweep["id"])) == 1
    # The failure backs the sweep off instead of retrying (and logging) every round.
    with structlog.testing.capture_logs() as logs:
        await sweeper.run_once()
    assert logs == []
    (row,) = await rig.sweeps()
    assert row["status"] == "broadcast" and row["attempts"] >= 1
    assert row["next_try_at"] > rig.now


# ---- planning -------------------------------------------------------------------------------


async def test_two_payments_to_one_address_are_swept_in_one_transaction(rig: Rig) -> None:
    """The schema gives every payment its own address today (UNIQUE); the sweeper groups by
    address anyway, so this test lifts the constraint in its own throw-away database."""
    await rig.pool.execute(
        "ALTER TABLE payments DROP CONSTRAINT payments_address_key,"
        " DROP CONSTRAINT payments_address_index_key"
    )
    deposit = WALLET.address(1000)
    first = await rig.pay_native(1000, ETH // 2)
    await rig.add_native_transfer(first, ETH // 4, counted=True)
    second = await rig.pay_native(1000, ETH // 4)
    rig.mine()
    treasury_before = rig.balance(TREASURY)
    await rig.settle(rig.sweeper())

    (sweep,) = await rig.sweeps()
    assert sweep["status"] == "confirmed"
    assert int(sweep["amount"]) == ETH - 21_000 * int(sweep["max_fee_per_gas"])
    assert rig.balance(TREASURY) - treasury_before == int(sweep["amount"])
    linked = await rig.pool.fetch(
        "SELECT payment_id FROM sweep_payments WHERE sweep_id = $1 ORDER BY payment_id",
        sweep["id"],
    )
    assert sorted(r["payment_id"] for r in linked) == sorted([first, second])
    for payment_id in (first, second):
        (event,) = await rig.swept_events(payment_id)
        assert event["data"]["sweep"]["tx_hash"] == sweep["tx_hash"]
        assert (await rig.payment(payment_id))["sweep"]["status"] == "confirmed"
    assert rig.nonce(deposit) == 1


async def test_dust_waits_until_more_funds_arrive(
    write_config: Any, pool: asyncpg.Pool, anvil: AnvilProcess
) -> None:
    dust = 10**15
    async with make_rig(write_config, pool, anvil, dust_threshold=dust) as rig:
        payment_id = await rig.pay_native(1000, dust)
        deposit = WALLET.address(1000)
        rig.mine()
        sweeper = rig.sweeper()
        with structlog.testing.capture_logs() as logs:
            await rig.settle(sweeper)
        assert await rig.sweeps() == []
        assert "sweep.dust" in [e["event"] for e in logs]
        assert rig.balance(deposit) == dust
        await sweeper.run_once()  # no busy loop: the payment is no longer due
        assert await rig.sweeps() == []

        # Late funds to the same payment make it due again; the whole balance goes.
        await rig.add_native_transfer(payment_id, ETH, counted=True)
        rig.mine()
        await rig.settle(sweeper)
        (sweep,) = await rig.sweeps()
        assert sweep["status"] == "confirmed"
        assert int(sweep["amount"]) == dust + ETH - 21_000 * int(sweep["max_fee_per_gas"])
        await assert_reconciled(rig)


async def test_balance_below_todays_fee_waits_for_lower_fees(rig: Rig) -> None:
    """Not dust: during a fee spike the payment is deferred, not written off; once fees fall
    it is swept without any new funds (its address never gets more)."""
    payment_id = await rig.pay_native(1000, 21_000 * 50 * GWEI)
    rig.rpc_sync("anvil_setNextBlockBaseFeePerGas", [hex(100 * GWEI)])
    rig.mine()
    sweeper = rig.sweeper()
    with structlog.testing.capture_logs() as logs:
        await sweeper.run_once()
    events = [e["event"] for e in logs]
    assert "sweep.deferred" in events and "sweep.dust" not in events
    assert await rig.sweeps() == []

    rig.rpc_sync("anvil_setNextBlockBaseFeePerGas", [hex(GWEI)])
    rig.mine()
    await sweeper.run_once()
    assert await rig.sweeps() == []  # not before the wait is over
    rig.advance(FEE_WAIT + 1)
    await rig.settle(sweeper)
    (sweep,) = await rig.sweeps()
    assert sweep["status"] == "confirmed"
    assert (await rig.payment(payment_id))["sweep"]["status"] == "confirmed"
    await assert_reconciled(rig)


async def test_dust_threshold_is_per_asset(
    write_config: Any, pool: asyncpg.Pool, anvil: AnvilProcess
) -> None:
    """The native threshold (wei) never applies to a token's base units, nor one token's to
    another's: 7 USDTL (7,000,000 units) is far below 10**15 but is no dust."""
    async with make_rig(
        write_config, pool, anvil, tokens=True, dust_threshold=10**15, token_dust={"TD6": 10**7}
    ) as rig:
        usdt = await rig.pay_token("USDTL", 1010, 7 * 10**6)
        td6 = await rig.pay_token("TD6", 1011, 5 * 10**6)
        rig.mine()
        with structlog.testing.capture_logs() as logs:
            await rig.settle(rig.sweeper())
        dust = [e for e in logs if e["event"] == "sweep.dust"]
        assert [e["address"] for e in dust] == [WALLET.address(1011)]
        assert rig.token_balance("USDTL", WALLET.address(1010)) == 0
        assert rig.token_balance("TD6", WALLET.address(1011)) == 5 * 10**6
        assert (await rig.payment(usdt))["sweep"]["status"] == "confirmed"
        assert (await rig.payment(td6))["sweep"] == {"status": "none", "tx_hash": None}
        await assert_reconciled(rig)


async def test_only_confirmed_payments_are_swept(rig: Rig) -> None:
    payment_id = await rig.pay_native(1000, ETH)
    await rig.pool.execute("UPDATE payments SET status = 'expired' WHERE id = $1", payment_id)
    rig.mine()
    await rig.settle(rig.sweeper())
    assert await rig.sweeps() == []
    assert rig.balance(WALLET.address(1000)) == ETH


# ---- failures -------------------------------------------------------------------------------


def _balance_slot(owner: str) -> str:
    """Storage slot of TestToken.balanceOf[owner] (mapping at slot 3)."""
    key = bytes.fromhex(owner[2:].rjust(64, "0")) + (3).to_bytes(32, "big")
    return Web3.keccak(key).to_0x_hex()


async def test_reverted_sweep_fails_with_reason_and_is_retried_later(token_rig: Rig) -> None:
    rig = token_rig
    deposit = WALLET.address(1006)
    payment_id = await rig.pay_token("TD18", 1006, 10**18)
    await rig.add_native_transfer(payment_id, ETH // 10)  # gas, so no top-up
    rig.mine()
    with pytest.raises(InjectedCrash):
        await rig.sweeper(crash_at=Step.SIGNED).run_once()
    # Behind ctripd's back, the tokens vanish before the signed sweep is sent: it will revert.
    rig.rpc_sync(
        "anvil_setStorageAt", [rig.token("TD18"), _balance_slot(deposit), "0x" + "00" * 32]
    )
    sweeper = rig.sweeper()
    with structlog.testing.capture_logs() as logs:
        await rig.settle(sweeper)
    (sweep,) = await rig.sweeps()
    assert sweep["status"] == "failed"
    assert sweep["error"].startswith("reverted in block")
    assert int(sweep["fee"]) > 0
    failed = [e for e in logs if e["event"] == "sweep.failed"]
    assert failed and failed[0]["reason"].startswith("reverted")
    assert (await rig.payment(payment_id))["sweep"]["status"] == "failed"

    # Back-off: nothing is planned at once; a minute later the payment is looked at again.
    await sweeper.run_once()
    assert len(await rig.sweeps()) == 1
    rig.advance(61)
    with structlog.testing.capture_logs() as logs:
        await sweeper.run_once()
    assert "sweep.dust" in [e["event"] for e in logs]  # nothing left to sweep
    report = await reconcile(rig.pool, rig.rpc, rig.chain)
    assert [(m.asset, m.expected, m.actual) for m in report.mismatches] == [("TD18", 10**18, 0)]


async def test_nonce_taken_by_another_transaction_fails_the_sweep(rig: Rig) -> None:
    """Someone else holding the deposit key spends nonce 0 first: the signed sweep can never
    be mined, so it fails, and its payment is planned again (with the next nonce)."""
    await rig.pay_native(1000, ETH)
    deposit = WALLET.address(1000)
    rig.mine()
    with pytest.raises(InjectedCrash):
        await rig.sweeper(crash_at=Step.SIGNED).run_once()
    rig.rpc_sync("anvil_impersonateAccount", [deposit])
    rig.rpc_sync(
        "eth_sendTransaction",
        [{"from": deposit, "to": OUTSIDER, "value": hex(ETH // 2), "gasPrice": hex(10 * GWEI)}],
    )
    rig.rpc_sync("anvil_stopImpersonatingAccount", [deposit])
    rig.mine(2)
    sweeper = rig.sweeper()
    with structlog.testing.capture_logs() as logs:
        await sweeper.run_once()
    (sweep,) = await rig.sweeps()
    assert (sweep["status"], sweep["error"]) == ("failed", "nonce used by another transaction")
    assert "sweep.failed" in [e["event"] for e in logs]
    rig.advance(61)
    await rig.settle(sweeper)
    failed, retried = await rig.sweeps()
    assert (failed["status"], failed["id"]) == ("failed", sweep["id"])
    assert (retried["status"], retried["nonce"]) == ("confirmed", 1)
    report = await reconcile(rig.pool, rig.rpc, rig.chain)
    (mismatch,) = report.mismatches
    assert mismatch.asset == "ETH" and mismatch.expected - mismatch.actual > 0


# ---- switches -------------------------------------------------------------------------------


async def test_watch_only_or_sweep_off_disables_sweeping_with_one_log_line(
    write_config: Any, pool: asyncpg.Pool
) -> None:
    xpub_config = write_config(toml={"wallet": {"xpub": WALLET.xpub()}})
    off_config = write_config(toml={"wallet": {"sweep": False}})
    async with aiohttp.ClientSession() as session:
        rpcs = {"anvil": RpcClient("anvil", list(off_config.chains[0].rpc), session)}
        for config, wallet, reason in (
            (xpub_config, Wallet.from_xpub(WALLET.xpub()), "watch-only"),
            (off_config, WALLET, "sweep = false"),
        ):
            with structlog.testing.capture_logs() as logs:
                assert make_sweepers(config, "", pool, rpcs, wallet) == {}
            (line,) = logs
            assert line["event"] == "sweep.disabled" and reason in line["reason"]
        on = make_sweepers(write_config(), "", pool, rpcs, WALLET)
        assert list(on) == ["anvil"]
