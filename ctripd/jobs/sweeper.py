"""Sweeper: every transaction ctripd signs on a chain. It moves confirmed payments' funds from
their deposit addresses to the treasury (the payment's merchant's own on the chain, if the
operator set one, else the chain's), tops deposit addresses up with gas, sends top-up change and
the former gas wallet's coin back to the chain's treasury, and carries out approved recoveries.

One `Sweeper` per chain; `run_once()` resumes every unfinished sweep, plans new ones, and
broadcasts them. A sweep is one nonce slot of one sender, stored with its signed raw
transaction *before* anything is sent:

    signed ──send──▶ broadcast ──receipt `confirmations` deep──▶ confirmed | failed (reverted)
       └───────────── nonce used by a transaction not ours ─────────▶ failed

- After a crash, a `signed` sweep is sent again as the same raw transaction; a `broadcast` one
  is looked up by receipt and re-sent (same bytes) if the node forgot it. Nothing is ever signed
  with another nonce for funds already in a sweep: a stuck transaction is replaced with the same
  nonce and higher fees, and every version is kept, since any of them may be the one mined.
- A sweep only fails when its nonce is used on chain: reverted (the fee is paid), or taken by a
  transaction that is none of ours. A sweep the node refuses stays `signed` and is retried, so
  the gas wallet's nonces never have a gap. Its payments are planned again after a back-off.
- Native: balance − gas × max fee per gas goes out, so the deposit keeps less than one fee. A
  balance that does not pay today's fee is looked at again later, never written off as dust.
  Token: the whole token balance, after a gas top-up from the gas wallet if the deposit cannot
  pay the gas (the top-up is a `gas_topup` sweep linked to the same payments); a payer's held
  coin at the address never pays it. What the top-up leaves goes back once it pays for itself.
- Balances are read at the block `confirmations` deep, so unconfirmed deposits are never swept.
- Only `confirmed` payments are swept (paid-late ones too, once confirmed), in each asset they
  count on this chain: their own, or each quoted option of one priced in fiat (its tokens
  first: a token sweep may pay its gas with the native coin the payment accepts there), each
  with its own sweep and coverage. Funds at expired or canceled payments stay where they are:
  they may be owed back to the payer, an operator decision that `ctripd recover` records and
  `_plan_recoveries` carries out.
- Every signature, first or replacement, passes the signing policy (`jobs.policy`) at that
  moment; a row it refuses is `refused`, logged at critical level and counted in `/metrics`.
- A stuck transaction is replaced only while the node holds it; one the node refused or forgot
  is sent again as it is, so fees never compound on transactions no node has seen.
- A token sweep is done only when its receipt carries the token's Transfer of the amount to the
  treasury; a token that returns false or takes a fee fails the sweep with the reason.
- The run lock lives on a connection of its own, so a run never holds a pool connection while
  it waits on the node, and any number of chains sweep with a small pool.
- EIP-7702 (`sweep_mode`, probed for `auto` on the first run): the due deposits, token and
  native alike, are swept by `batch` transactions of the gas wallet through their treasury's
  delegate (`jobs.batches`), deployed by a `deploy` sweep on first use; no top-ups, nothing
  left at the deposits. Both are rows of this engine like any other.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import asyncpg
import structlog
from eth_account import Account
from eth_account.datastructures import SignedTransaction

from ctripd import db
from ctripd.chain import delegate
from ctripd.chain.evm import balance_of_data, transfer_data, transfer_logged
from ctripd.chain.fees import Fee, FeeCapError, current_fee, replacement_fee
from ctripd.chain.rpc import RpcClient, RpcError
from ctripd.chain.wallet import Wallet
from ctripd.config import ChainConfig, Config, PayoutsConfig
from ctripd.db import Conn, queries
from ctripd.jobs import batches, outgoing, outgoing_policy, outside
from ctripd.jobs.policy import (
    Entry,
    GasWallet,
    Intent,
    PolicyRefusal,
    SigningPolicy,
    treasury_of,
)
from ctripd.ledger import recoveries
from ctripd.ledger.events import record_event
from ctripd.money import to_decimal_string

Q = queries("sweeper")
log = structlog.get_logger(__name__)

NATIVE_GAS = 21_000
# Safety margin on eth_estimateGas of a token transfer; unused gas is not paid.
GAS_MARGIN = (6, 5)
MAX_RETRY_DELAY = 300.0
# A native balance that does not pay the fee is looked at again after this many seconds.
FEE_WAIT = 600.0
PLAN_LIMIT = 200
# Deposit addresses looked at for native change per round.
CHANGE_LIMIT = 50
# Kinds the gas wallet sends (with its own key where it has an account of its own).
GAS_WALLET_KINDS = ("gas_topup", "deploy", "batch")


class Step(enum.Enum):
    """Points where a test can make the sweeper stop as if the process had died."""

    SIGNED = "signed"  # the signed row is committed, nothing sent
    SENT = "sent"  # the node accepted the transaction, the row still says 'signed'
    BROADCAST = "broadcast"  # the row says 'broadcast', no receipt looked at


class InjectedCrash(Exception):
    """Raised at `Sweeper(crash_at=step)`: the test's stand-in for a killed process."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _uint(value: Any) -> int:
    if not isinstance(value, str) or value in ("0x", ""):
        raise RpcError(f"expected a hex quantity, got {value!r}")
    return int(value, 16)


async def _insert_version(
    conn: Conn, sweep_id: int, tx_hash: str, raw: str, amount: int, fee: Fee, now: datetime
) -> None:
    """Store one signed version of a sweep's transaction, before it is broadcast."""
    await conn.execute(
        Q["insert_version"],
        sweep_id,
        tx_hash,
        raw,
        amount,
        fee.max_fee,
        fee.tip,
        fee.gas_price,
        now,
    )


# What a sweep covers of one payment: (payment id, option position (None: the payment's own
# asset), the confirmed amount of that asset it covers).
Covered = tuple[str, int | None, int]


@dataclass(frozen=True)
class _Group:
    """The confirmed payments of one deposit address and asset (each payment's own, or an
    option of one priced in fiat): swept by one transaction."""

    address: str
    index: int
    token: str | None
    payments: list[asyncpg.Record]

    @property
    def covered(self) -> list[Covered]:
        return [(p["id"], p["position"], int(p["amount_confirmed"])) for p in self.payments]

    @property
    def payment_ids(self) -> list[str]:
        return [p["id"] for p in self.payments]

    def treasury(self, wallet: Wallet, chain: ChainConfig) -> str:
        """Where the group's funds go: its merchant's treasury on the chain, or the chain's."""
        return treasury_of(wallet, chain, self.payments[0])


def disabled_reason(config: Config, wallet: Wallet) -> str | None:
    """Why sweeping is off, or None when it is on."""
    if not config.wallet.sweep:
        return "[wallet] sweep = false"
    if wallet.watch_only:
        return "watch-only wallet ([wallet] xpub) holds no keys to sign sweeps"
    return None


def make_sweepers(
    config: Config, dsn: str, pool: asyncpg.Pool, rpcs: dict[str, RpcClient], wallet: Wallet
) -> dict[str, Sweeper]:
    """One sweeper per chain, or none, with one log line at start saying why."""
    reason = disabled_reason(config, wallet)
    if reason is not None:
        log.warning("sweep.disabled", reason=reason)
        return {}
    return {
        c.name: Sweeper(
            c,
            dsn,
            pool,
            rpcs[c.name],
            wallet,
            config.wallet.gas_wallet_index,
            gas_hardened=config.wallet.gas_wallet == "hardened",
            operator_url=bool(config.webhooks.url),
            payouts=config.payouts,
        )
        for c in config.chains
    }


class Sweeper:
    def __init__(
        self,
        chain: ChainConfig,
        dsn: str,
        pool: asyncpg.Pool,
        rpc: RpcClient,
        wallet: Wallet,
        gas_wallet_index: int,
        *,
        gas_hardened: bool = True,
        clock: Callable[[], datetime] = _utcnow,
        crash_at: Step | None = None,
        operator_url: bool,
        payouts: PayoutsConfig | None = None,
    ) -> None:
        """`operator_url`: `[webhooks] url` is set (see `record_event`); `payouts`: the payout
        wallet and approval rules of refunds and payouts (`jobs.outgoing`)."""
        self.operator_url = operator_url
        self.chain = chain
        self.dsn = dsn
        self.pool = pool
        self.rpc = rpc
        self.wallet = wallet
        self.gas = GasWallet.of(wallet, gas_wallet_index, gas_hardened)
        rules = payouts or PayoutsConfig()
        self.payout = outgoing_policy.PayoutWallet.of(wallet, rules.wallet_index)
        self.policy = SigningPolicy(
            chain,
            wallet,
            self.gas,
            outgoing_policy.Rules(self.payout, rules.require_approval),
        )
        # Whether the former gas wallet (deposit chain) was looked at for coin left in it.
        self._legacy_gas_done = self.gas.legacy is None
        # The run lock's own connection (never a pooled one), opened on first use.
        self._lock_conn: asyncpg.Connection | None = None
        self.clock = clock
        self.crash_at = crash_at
        # Consecutive planning failures per address, for the back-off's doubling.
        self._plan_failures: dict[str, int] = {}
        # Treasuries (the chain's, merchants') by whether they have code, asked once each.
        self._has_code: dict[str, bool] = {}
        # Today's fee, read once per round by whichever step needs it first.
        self._round_fee: Fee | None = None
        # "topup" or "eip7702"; None until the first run has probed an `auto` chain.
        self._mode: str | None = None if chain.sweep_mode == "auto" else chain.sweep_mode

    # ---- the loop -------------------------------------------------------------------------

    async def run_once(self) -> None:
        """Resume unfinished sweeps (receipts, re-broadcasts, replacements), plan new ones,
        broadcast them. Skips the round if another process sweeps this chain."""
        async with self._run_lock() as held:
            if not held:
                log.debug("sweep.locked_elsewhere", chain=self.chain.name)
                return
            head = await self.rpc.block_number()
            self._round_fee = None
            await self._advance(head)
            mode = await self._sweep_mode()
            if mode == "eip7702":
                new = await self._plan_batches(head)
            elif mode == "topup":
                new = await self._plan(head)
            else:
                new = []
            new += await self._plan_change(head)
            new += await self._plan_legacy_gas(head)
            new += await self._plan_recoveries()
            new += await outgoing.plan(self, head)
            if new:
                rows = await self.pool.fetch(Q["sweeps_by_id"], new)
                versions = await self._versions(rows)
                for row in rows:
                    try:
                        await self._send(row, versions[row["id"]][-1])
                    except RpcError as exc:
                        self._log_check_failed(row, exc)

    @contextlib.asynccontextmanager
    async def _run_lock(self) -> AsyncIterator[bool]:
        """One sweeper per chain across processes: a session lock on a connection of its own,
        held for the run while the run's database work uses short pooled connections."""
        key = f"ctripd.sweep:{self.chain.name}"
        if self._lock_conn is None or self._lock_conn.is_closed():
            self._lock_conn = await db.connect(self.dsn)
        conn = self._lock_conn
        held: bool = await conn.fetchval(Q["try_run_lock"], key)
        try:
            yield held
        finally:
            if held and not conn.is_closed():
                await conn.fetchval(Q["run_unlock"], key)

    async def close(self) -> None:
        if self._lock_conn is not None:
            await self._lock_conn.close()
            self._lock_conn = None

    async def _sweep_mode(self) -> str | None:
        """The chain's mode; `auto` asks the node once whether it takes EIP-7702 transactions
        (None while it cannot be asked: nothing new is planned)."""
        if self._mode is None:
            try:
                supported = await delegate.supports_7702(self.rpc, self.chain.chain_id)
            except RpcError as exc:
                log.warning("sweep.mode_probe_failed", chain=self.chain.name, error=str(exc))
                return None
            self._mode = "eip7702" if supported else "topup"
            log.info(
                "sweep.mode",
                chain=self.chain.name,
                mode=self._mode,
                reason="the node takes EIP-7702 transactions"
                if supported
                else "the node refuses EIP-7702 transactions: gas top-ups",
            )
        return self._mode

    async def _fee(self) -> Fee:
        """Today's fee under the chain's cap; replacements, planning, change and recoveries of
        one round share one reading (FeeCapError is not kept: the next step asks again)."""
        if self._round_fee is None:
            self._round_fee = await current_fee(self.rpc, self.chain.max_fee_per_gas)
        return self._round_fee

    def _sweep_log(self, row: asyncpg.Record) -> Any:
        """The log of one sweep's transaction: chain, sweep and nonce bound."""
        return log.bind(chain=self.chain.name, sweep=row["id"], nonce=row["nonce"])

    def _crash(self, step: Step) -> None:
        if self.crash_at is step:
            raise InjectedCrash(step.value)

    def _safe_block(self, head: int) -> int:
        return max(0, head - self.chain.confirmations + 1)

    # ---- unfinished sweeps ------------------------------------------------------------------

    async def _versions(self, rows: Sequence[asyncpg.Record]) -> dict[int, list[asyncpg.Record]]:
        by_sweep: dict[int, list[asyncpg.Record]] = {r["id"]: [] for r in rows}
        for v in await self.pool.fetch(Q["versions"], list(by_sweep)):
            by_sweep[v["sweep_id"]].append(v)
        return by_sweep

    async def _advance(self, head: int) -> None:
        rows = await self.pool.fetch(Q["unfinished"], self.chain.name, self.clock())
        if not rows:
            return
        versions = await self._versions(rows)
        for row in rows:
            try:
                await self._advance_one(row, versions[row["id"]], head)
            except InjectedCrash:
                raise
            except RpcError as exc:
                self._log_check_failed(row, exc)
            except Exception as exc:  # one bad sweep never stops the others
                log.exception("sweep.advance_failed", chain=self.chain.name, sweep=row["id"])
                self._log_check_failed(row, exc)

    def _log_check_failed(self, row: asyncpg.Record, exc: Exception) -> None:
        """The node could not be asked; the sweep stays as it is for the next round."""
        log.warning("sweep.check_failed", chain=self.chain.name, sweep=row["id"], error=str(exc))

    async def _advance_one(
        self, row: asyncpg.Record, versions: list[asyncpg.Record], head: int
    ) -> None:
        # One batch, so one node's view: the sender's nonce at the safe block and every receipt.
        answers = await self.rpc.batch(
            [("eth_getTransactionCount", [row["from_address"], hex(self._safe_block(head))])]
            + [("eth_getTransactionReceipt", [v["tx_hash"]]) for v in versions]
        )
        safe_nonce = _uint(answers[0])
        mined = next(((v, r) for v, r in zip(versions, answers[1:], strict=True) if r), None)
        if mined is not None:
            version, receipt = mined
            depth = head - _uint(receipt["blockNumber"]) + 1
            if depth >= self.chain.confirmations:
                await self._finish(row, version, receipt)
            elif row["status"] == "signed":
                await self.pool.execute(Q["mark_broadcast"], row["id"], self.clock())
            return
        if safe_nonce > row["nonce"]:
            # None of our versions is mined and the nonce is used: it never can be.
            await self._fail_unmined(row, "nonce used by another transaction")
            return
        current = versions[-1]
        age = (self.clock() - current["signed_at"]).total_seconds()
        if row["status"] == "signed" and not row["attempts"]:
            await self._send(row, current)
            return
        held = await self.rpc.call("eth_getTransactionByHash", [current["tx_hash"]]) is not None
        if not held and not (age >= self.chain.replace_after and _fee_refused(row["error"])):
            # Refused (no funds yet) or forgotten: the same bytes again. Re-pricing would raise
            # the fee of a transaction no node holds, again every round it stays unfunded.
            log.info("sweep.rebroadcast", chain=self.chain.name, sweep=row["id"])
            await self._send(row, current)
            return
        # Held and stuck, or refused for its fee (the base fee rose above it): a new version,
        # priced from today's fee.
        if age >= self.chain.replace_after:
            problem = await self._replace(row, current, head)
            if problem is not None:
                await self._retry_later(row, problem, "sweep.replace_failed")

    async def _send(self, row: asyncpg.Record, version: asyncpg.Record) -> None:
        """Send the stored raw transaction; any refusal is settled by asking whether the node
        now knows it ("already known" and lost answers alike)."""
        tx_hash = version["tx_hash"]
        try:
            await self.rpc.call("eth_sendRawTransaction", [version["raw_tx"]])
        except RpcError as exc:
            if await self.rpc.call("eth_getTransactionByHash", [tx_hash]) is None:
                await self._retry_later(row, str(exc))
                return
        self._crash(Step.SENT)
        await self.pool.execute(Q["mark_broadcast"], row["id"], self.clock())
        self._sweep_log(row).info("sweep.broadcast", kind=row["kind"], tx_hash=tx_hash)
        self._crash(Step.BROADCAST)

    async def _retry_later(
        self, row: asyncpg.Record, error: str, event: str = "sweep.broadcast_failed"
    ) -> None:
        """Record why, and look at the sweep again after a back-off."""
        now = self.clock()
        delay = min(MAX_RETRY_DELAY, self.chain.poll_interval * 2 ** row["attempts"])
        await self.pool.execute(
            Q["retry_later"], row["id"], now + timedelta(seconds=delay), error[:500], now
        )
        log.warning(
            event,
            chain=self.chain.name,
            sweep=row["id"],
            kind=row["kind"],
            tx_hash=row["tx_hash"],
            error=error,
            retry_in=delay,
        )

    async def _finish(
        self, row: asyncpg.Record, version: asyncpg.Record, receipt: dict[str, Any]
    ) -> None:
        ok = _uint(receipt["status"]) == 1
        block = _uint(receipt["blockNumber"])
        gas_used = _uint(receipt["gasUsed"])
        price = _uint(receipt.get("effectiveGasPrice") or hex(int(version["gas_price"] or 0)))
        error = None if ok else f"reverted in block {block}"
        moves_tokens = row["token_address"] is not None and row["kind"] in (
            "token",
            "recover",
            *outgoing.KINDS,
        )
        if ok and row["kind"] == "deploy":
            created = str(receipt.get("contractAddress") or "").lower()
            expected = await self.pool.fetchval(Q["deployed_delegate"], row["id"])
            if expected is None or created != expected.lower():
                ok = False
                error = f"mined in block {block} without creating the delegate {expected}"
        if ok and moves_tokens and not _moved(row, int(version["amount"]), receipt):
            ok = False
            error = (
                f"mined in block {block} without a Transfer of {int(version['amount'])} to "
                f"{row['to_address']} (the token returned false, took a fee or moved less)"
            )
        status = "confirmed" if ok else "failed"
        async with self.pool.acquire() as conn, conn.transaction():
            done = await conn.fetchrow(
                Q["finish_mined"],
                row["id"],
                version["id"],
                status,
                block,
                gas_used,
                price,
                error,
                self.clock(),
            )
            if done is None:
                return
            if done["kind"] == "recover":
                await conn.execute(Q["finish_recovery"], row["id"], status, error)
            elif done["kind"] == "deploy":
                if not ok:
                    await conn.execute(Q["forget_delegate"], row["id"])
            elif done["kind"] == "batch":
                await self._finish_batch(conn, done, receipt if ok else None)
            elif done["kind"] in outgoing.KINDS:
                await outgoing.end(conn, done, ok, error, operator_url=self.operator_url)
            elif ok and done["kind"] != "gas_topup":
                for payment in await conn.fetch(Q["cover_payments"], row["id"]):
                    await record_event(
                        cast(asyncpg.Connection, conn),
                        "payment.swept",
                        payment["id"],
                        extra={"sweep": _sweep_facts(done, payment["decimals"])},
                        operator_url=self.operator_url,
                    )
        event = "sweep.confirmed" if ok else "sweep.failed"
        (log.info if ok else log.error)(
            event,
            chain=self.chain.name,
            sweep=row["id"],
            kind=row["kind"],
            tx_hash=done["tx_hash"],
            amount=str(int(done["amount"])),
            fee=str(int(done["fee"])),
            block=block,
            **({"reason": error} if error else {}),
        )

    async def _finish_batch(
        self, conn: Conn, done: asyncpg.Record, receipt: dict[str, Any] | None
    ) -> None:
        """Each entry of a mined batch by its effect in the receipt (None: reverted): the
        payments of a swept one are covered and told, in the same transaction."""
        treasury = await conn.fetchval(Q["delegate_treasury"], self.chain.name, done["to_address"])
        for e in await conn.fetch(Q["entries"], done["id"]):
            entry = Entry(e["address"], int(e["address_index"]), e["token_address"], None)
            moved = (
                None
                if receipt is None or treasury is None
                else batches.moved(entry, int(e["amount"]), treasury, receipt)
            )
            status = "failed" if moved is None else "swept"
            await conn.execute(Q["finish_entry"], done["id"], e["address"], status, moved)
            if moved is None:
                self._sweep_log(done).warning(
                    "sweep.entry_failed",
                    address=e["address"],
                    token=e["token_address"],
                    reason="the receipt shows no sweep of the planned amount to the treasury"
                    " (re-delegated elsewhere, swept before, or the batch reverted)",
                )
        for payment in await conn.fetch(Q["cover_entry_payments"], done["id"]):
            facts = batches.entry_facts(
                done,
                payment["address"],
                payment["token_address"],
                str(treasury),
                int(payment["moved"]),
                payment["decimals"],
            )
            await record_event(
                cast(asyncpg.Connection, conn),
                "payment.swept",
                payment["id"],
                extra={"sweep": facts},
                operator_url=self.operator_url,
            )

    async def _fail_unmined(self, row: asyncpg.Record, reason: str) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(Q["fail_unmined"], row["id"], reason, self.clock())
            await conn.execute(Q["fail_entries"], row["id"])
            await conn.execute(Q["forget_delegate"], row["id"])
            await conn.execute(Q["finish_recovery"], row["id"], "failed", reason)
            await outgoing.fail(conn, row, reason, operator_url=self.operator_url)
        self._sweep_log(row).error("sweep.failed", kind=row["kind"], reason=reason)

    async def _replace(self, row: asyncpg.Record, current: asyncpg.Record, head: int) -> str | None:
        """Re-sign the same nonce with higher fees (never above the cap); a native sweep sends
        correspondingly less, a token sweep may first need more gas at its deposit address.
        Returns why it could not, or None once the replacement is stored and sent."""
        cap = self.chain.max_fee_per_gas
        old = Fee(
            max_fee=_opt_int(current["max_fee_per_gas"]),
            tip=_opt_int(current["max_priority_fee"]),
            gas_price=_opt_int(current["gas_price"]),
        )
        try:
            now_fee: Fee | None = await self._fee()
        except FeeCapError:
            now_fee = None
        fee = replacement_fee(old, now_fee, cap)
        if fee is None:
            return f"fee cap {cap} leaves no room for a replacement"
        gas = int(row["gas_limit"])
        amount = int(row["amount"])
        if row["kind"] == "native":
            balance = _uint(
                await self.rpc.call(
                    "eth_getBalance", [row["from_address"], hex(self._safe_block(head))]
                )
            )
            amount = balance - gas * fee.per_gas
            if amount <= 0:
                return f"balance {balance} does not cover the higher fee"
        elif row["kind"] == "token":
            balance = _uint(await self.rpc.call("eth_getBalance", [row["from_address"], "latest"]))
            payments = [
                (r["payment_id"], r["position"])
                for r in await self.pool.fetch(Q["payments_of_sweep"], row["id"])
            ]
            free = max(0, balance - await self._held_native([p for p, _ in payments]))
            if free < gas * fee.per_gas:
                await self._top_up_for_replacement(row, payments, gas * fee.per_gas - free, fee)
                return "waiting for a gas top-up to pay the higher fee"
        recovery = None
        if row["kind"] == "recover":
            recovery = await self.pool.fetchrow(Q["recovery_of_sweep"], row["id"])
        if recovery is not None and row["token_address"] is None:
            # A native recovery pays its fee from the recovered funds, at the new price too.
            amount = int(recovery["amount"]) - gas * fee.per_gas
        ref = recovery["id"] if recovery is not None else None
        if row["kind"] in outgoing.KINDS:
            ref, amount = await outgoing.replacement(self.pool, row, fee)
        entries: tuple[Entry, ...] = ()
        if row["kind"] == "batch":
            # After a restart the delegate's code is read again before anything is re-signed.
            treasury = await self.pool.fetchval(
                Q["delegate_treasury"], self.chain.name, row["to_address"]
            )
            if treasury is not None:
                await self._trusted(row["to_address"], treasury)
            entries = tuple(
                Entry(
                    e["address"],
                    int(e["address_index"]),
                    e["token_address"],
                    _opt_int(e["auth_nonce"]),
                )
                for e in await self.pool.fetch(Q["entries"], row["id"])
            )
        intent = Intent(
            kind=row["kind"],
            index=int(row["from_index"]),
            sender=row["from_address"],
            to=row["to_address"],
            token=row["token_address"],
            amount=amount,
            ref=ref,
            entries=entries,
        )
        try:
            signed = await self._sign(intent, int(row["nonce"]), int(row["gas_limit"]), fee)
        except PolicyRefusal as exc:
            await self._refuse(row, str(exc))
            return None
        now = self.clock()
        tx_hash = signed.hash.to_0x_hex()
        raw = signed.raw_transaction.to_0x_hex()
        async with self.pool.acquire() as conn, conn.transaction():
            await _insert_version(conn, row["id"], tx_hash, raw, amount, fee, now)
            await conn.execute(
                Q["replace_current"],
                row["id"],
                raw,
                tx_hash,
                amount,
                fee.max_fee,
                fee.tip,
                fee.gas_price,
                now,
            )
        self._sweep_log(row).info(
            "sweep.replaced", old_tx=current["tx_hash"], tx_hash=tx_hash, per_gas=fee.per_gas
        )
        self._crash(Step.SIGNED)
        (fresh,) = await self.pool.fetch(Q["sweeps_by_id"], [row["id"]])
        versions = await self._versions([fresh])
        await self._send(fresh, versions[row["id"]][-1])
        return None

    async def _top_up_for_replacement(
        self, row: asyncpg.Record, payments: list[tuple[str, int | None]], short: int, fee: Fee
    ) -> None:
        if await self.pool.fetchval(Q["unfinished_topup_to"], self.chain.name, row["from_address"]):
            return
        sweep_id = await self._create(
            kind="gas_topup",
            index=self.gas.index,
            sender=self.gas.address,
            to=row["from_address"],
            token=None,
            amount=short,
            gas=NATIVE_GAS,
            fee=fee,
            covered=[(p, position, 0) for p, position in payments],
        )
        (fresh,) = await self.pool.fetch(Q["sweeps_by_id"], [sweep_id])
        versions = await self._versions([fresh])
        await self._send(fresh, versions[sweep_id][-1])

    # ---- planning ---------------------------------------------------------------------------

    async def _due(self, head: int) -> list[tuple[_Group, int, int]] | None:
        """The due payments by deposit address and asset, with the address's native and token
        balances at the safe block; None when the fee or the balances cannot be had now."""
        now = self.clock()
        safe_block = self._safe_block(head)
        due = await self.pool.fetch(Q["due_payments"], self.chain.name, now, PLAN_LIMIT)
        groups: dict[tuple[str, str | None], list[asyncpg.Record]] = {}
        for p in due:
            # A balance read at the safe block must include every transfer counted: a node
            # behind the watcher's would make funds look missing (or like dust) otherwise.
            if p["last_block"] is not None and p["last_block"] <= safe_block:
                groups.setdefault((p["address"], p["token_address"]), []).append(p)
        if not groups:
            return []
        safe = hex(safe_block)
        calls: list[tuple[str, list[Any]]] = []
        for address, token in groups:
            calls.append(("eth_getBalance", [address, safe]))
            if token is not None:
                calls.append(("eth_call", [{"to": token, "data": balance_of_data(address)}, safe]))
        try:
            await self._fee()
            answers = iter(await self.rpc.batch(calls))
        except FeeCapError as exc:
            log.warning("sweep.fee_above_cap", chain=self.chain.name, error=str(exc))
            return None
        except RpcError as exc:
            # E.g. a node behind the safe block ("header not found"): the unfinished sweeps
            # were already advanced this round; planning waits for the next one.
            log.warning("sweep.plan_deferred", chain=self.chain.name, error=str(exc))
            return None
        found: list[tuple[_Group, int, int]] = []
        for (address, token), payments in groups.items():
            native = _uint(next(answers))
            token_balance = _uint(next(answers)) if token is not None else 0
            group = _Group(address, int(payments[0]["address_index"]), token, payments)
            if self.wallet.address(group.index) != address:
                log.error(
                    "sweep.wrong_wallet",
                    chain=self.chain.name,
                    address=address,
                    index=group.index,
                    reason="the wallet derives another address at this index",
                )
                await self._defer(group, MAX_RETRY_DELAY)
                continue
            found.append((group, native, token_balance))
        return found

    async def _plan_failed(self, group: _Group, exc: Exception) -> None:
        """A group that could not be planned waits (doubling back-off); the others go on."""
        address = group.address
        if isinstance(exc, PolicyRefusal):
            # E.g. a merchant's treasury row the operator did not approve: nothing was
            # signed, and someone wrote to the database.
            log.critical(
                "sweep.policy_refused", chain=self.chain.name, sender=address, reason=str(exc)
            )
        elif not isinstance(exc, RpcError):
            log.exception("sweep.plan_error", chain=self.chain.name, address=address)
        failures = self._plan_failures.get(address, 0) + 1
        self._plan_failures[address] = failures
        delay = min(MAX_RETRY_DELAY, self.chain.poll_interval * 2**failures)
        await self._defer(group, delay)
        log.warning(
            "sweep.plan_failed",
            chain=self.chain.name,
            address=address,
            error=str(exc),
            retry_in=delay,
        )

    async def _plan(self, head: int) -> list[int]:
        """Sign sweeps (or gas top-ups) for the due payments; returns the new sweeps' ids."""
        due = await self._due(head)
        if not due:
            return []
        fee = await self._fee()
        new: list[int] = []
        busy: set[str] = set()
        for group, native, token_balance in due:
            if group.address in busy:
                continue
            try:
                sweep_id = await (
                    self._plan_native(group, native, fee)
                    if group.token is None
                    else self._plan_token(group, token_balance, native, fee)
                )
            except InjectedCrash:
                raise
            except Exception as exc:  # one bad group never stops the chain's planning
                await self._plan_failed(group, exc)
                continue
            self._plan_failures.pop(group.address, None)
            if sweep_id is not None:
                new.append(sweep_id)
                busy.add(group.address)
        return new

    # ---- EIP-7702 batches --------------------------------------------------------------------

    async def _plan_batches(self, head: int) -> list[int]:
        """The due token deposits, grouped by treasury, swept through the treasury's delegate
        in batches of at most `sweep_batch_size` (fewer where the block gas limit demands); a
        treasury without a delegate gets one deployed first. Native deposits keep paying their
        own sweep (see README, "Gas-less sweeps"): cheaper in gas, and an address that was
        never delegated still takes 21,000-gas payments."""
        due = await self._due(head)
        if not due:
            return []
        fee = await self._fee()
        by_treasury: dict[str, list[tuple[_Group, int]]] = {}
        new: list[int] = []
        seen: set[str] = set()
        for group, native, token_balance in due:
            # One sweep per deposit and round: a second asset at it waits for the next one.
            if group.address in seen:
                continue
            seen.add(group.address)
            try:
                if group.token is None:
                    sweep_id = await self._plan_native(group, native, fee)
                    new += [] if sweep_id is None else [sweep_id]
                    continue
                if await self._swept_outside(group, token_balance, head):
                    continue
                if token_balance <= self.chain.dust_threshold_of(group.token):
                    await self._mark_dust(group, token_balance)
                    continue
                treasury = group.treasury(self.wallet, self.chain)
            except InjectedCrash:
                raise
            except Exception as exc:
                await self._plan_failed(group, exc)
                continue
            by_treasury.setdefault(treasury, []).append((group, token_balance))
        for treasury, items in by_treasury.items():
            try:
                address, deploy = await self._delegate(treasury, fee)
                if deploy is not None:
                    new.append(deploy)
                if address is None:
                    continue
                new += await self._plan_treasury_batches(address, items, fee)
            except InjectedCrash:
                raise
            except Exception as exc:  # the other treasuries' deposits go on
                for group, _ in items:
                    await self._plan_failed(group, exc)
        return new

    async def _swept_outside(self, group: _Group, balance: int, head: int) -> bool:
        """Whether someone else's trigger of the delegate swept what the group's payments
        still need (`jobs.outside`, booked now): then nothing is left to plan for them."""
        covered = [
            await outside.swept(
                self.pool,
                self.rpc,
                self.chain.name,
                p,
                lambda: group.treasury(self.wallet, self.chain),
                balance,
                self._safe_block(head),
                self.clock(),
                operator_url=self.operator_url,
            )
            for p in group.payments
        ]
        return all(covered)

    async def _delegate(self, treasury: str, fee: Fee) -> tuple[str | None, int | None]:
        """The treasury's delegate once usable (its code checked on chain, once per process),
        and the id of a `deploy` sweep signed now for a treasury without one."""
        configured = self.chain.sweep_delegate
        if configured is not None and treasury == self.chain.treasury:
            await self.pool.execute(Q["configure_delegate"], self.chain.name, treasury, configured)
        row = await self.pool.fetchrow(Q["delegate"], self.chain.name, treasury)
        if row is None:
            data = delegate.creation_data(treasury)
            estimate = _uint(
                await self.rpc.call("eth_estimateGas", [{"from": self.gas.address, "data": data}])
            )
            sweep_id = await self._create(
                kind="deploy",
                index=self.gas.index,
                sender=self.gas.address,
                to=treasury,
                token=None,
                amount=0,
                gas=-(-estimate * GAS_MARGIN[0] // GAS_MARGIN[1]),
                fee=fee,
                covered=[],
            )
            log.info("sweep.delegate_deploying", chain=self.chain.name, treasury=treasury)
            return None, sweep_id
        if row["sweep_id"] is not None and row["deploy_status"] != "confirmed":
            return None, None  # its deployment is in flight
        address: str = row["address"]
        return (address if await self._trusted(address, treasury) else None), None

    async def _trusted(self, address: str, treasury: str) -> bool:
        """Whether `address` holds the delegate's code for `treasury`, read from the chain once
        per process (the signing policy trusts nothing else)."""
        if self.policy.trusted_treasury(address) == treasury:
            return True
        code = await self.rpc.call("eth_getCode", [address, "latest"])
        if self.policy.trust_delegate(address, treasury, code):
            return True
        log.critical(
            "sweep.delegate_mismatch",
            chain=self.chain.name,
            delegate=address,
            treasury=treasury,
            reason="its code is not the sweep delegate's for this treasury: no batch goes"
            " through it",
        )
        return False

    async def _plan_treasury_batches(
        self, address: str, items: list[tuple[_Group, int]], fee: Fee
    ) -> list[int]:
        """Batches of one treasury's deposits. A deposit not delegated to `address` (no code,
        or delegated elsewhere by someone holding its key) gets an authorization at its nonce."""
        calls: list[tuple[str, list[Any]]] = []
        for group, _ in items:
            calls.append(("eth_getCode", [group.address, "latest"]))
            calls.append(("eth_getTransactionCount", [group.address, "pending"]))
        answers = iter(await self.rpc.batch(calls))
        planned: list[tuple[_Group, int, Entry]] = []
        for group, balance in items:
            code, nonce = next(answers), _uint(next(answers))
            target = delegate.delegated_to(code)
            if target is not None and target != address.lower():
                log.warning(
                    "sweep.redelegated",
                    chain=self.chain.name,
                    address=group.address,
                    delegate=target,
                    reason="delegated elsewhere: authorized to the treasury's delegate again",
                )
            auth = None if target == address.lower() else nonce
            planned.append((group, balance, Entry(group.address, group.index, group.token, auth)))
        limit = await self._batch_gas_limit()
        new: list[int] = []
        for chunk in batches.chunks(planned, self.chain.sweep_batch_size):
            new += await self._plan_batch(address, list(chunk), fee, limit)
        return new

    async def _batch_gas_limit(self) -> int:
        """Half the latest block's gas limit: what one batch may use at most."""
        latest = await self.rpc.call("eth_getBlockByNumber", ["latest", False])
        return _uint(latest["gasLimit"]) // 2

    async def _plan_batch(
        self, address: str, planned: list[tuple[_Group, int, Entry]], fee: Fee, limit: int
    ) -> list[int]:
        """Sign one batch (halved until its estimate fits under `limit`)."""
        intent = Intent(
            "batch",
            self.gas.index,
            self.gas.address,
            address,
            None,
            0,
            entries=tuple(e for _, _, e in planned),
        )
        # The estimate needs the signed authorizations: the policy sees the batch first.
        await self.policy.check(self.pool, intent)
        params = batches.estimate_params(self.wallet, self.chain.chain_id, intent)
        gas = -(
            -_uint(await self.rpc.call("eth_estimateGas", [params]))
            * GAS_MARGIN[0]
            // GAS_MARGIN[1]
        )
        if gas > limit and len(planned) > 1:
            half = len(planned) // 2
            return await self._plan_batch(address, planned[:half], fee, limit) + (
                await self._plan_batch(address, planned[half:], fee, limit)
            )
        sweep_id = await self._create(
            kind="batch",
            index=self.gas.index,
            sender=self.gas.address,
            to=address,
            token=None,
            amount=0,
            gas=gas,
            fee=fee,
            covered=[c for group, _, _ in planned for c in group.covered],
            entries=[(entry, balance) for _, balance, entry in planned],
        )
        for group, _, _ in planned:
            self._plan_failures.pop(group.address, None)
        return [sweep_id]

    async def _plan_change(self, head: int) -> list[int]:
        """Native coin left at deposit addresses by gas top-ups, after their token sweeps, goes
        to the treasury when what arrives exceeds the most the transfer may cost; otherwise it
        stays, and the address is not looked at again until its next token sweep."""
        due = await self.pool.fetch(Q["change_due"], self.chain.name, CHANGE_LIMIT)
        if not due:
            return []
        safe = hex(self._safe_block(head))
        try:
            fee = await self._fee()
            balances = await self.rpc.batch([("eth_getBalance", [r["address"], safe]) for r in due])
        except (FeeCapError, RpcError) as exc:
            log.warning("sweep.change_deferred", chain=self.chain.name, error=str(exc))
            return []
        new: list[int] = []
        for row, answer in zip(due, balances, strict=True):
            address, balance = row["address"], _uint(answer)
            try:
                gas = await self._native_gas(address, self.chain.treasury)
                cost = gas * fee.per_gas
                # The transfer pays its own fee from the change; what arrives must exceed the
                # most that fee may be.
                amount = min(balance, int(row["change"])) - cost
                if amount > cost:
                    new.append(
                        await self._create(
                            kind="native",
                            index=int(row["index"]),
                            sender=address,
                            to=self.chain.treasury,
                            token=None,
                            amount=amount,
                            gas=gas,
                            fee=fee,
                            covered=[],
                        )
                    )
            except InjectedCrash:
                raise
            except Exception as exc:  # the others' change is still looked at
                log.warning(
                    "sweep.change_failed",
                    chain=self.chain.name,
                    address=address,
                    error=f"{type(exc).__name__}: {exc}",
                )
                continue
            await self.pool.execute(Q["change_checked"], self.chain.name, [address])
        return new

    async def _plan_recoveries(self) -> list[int]:
        """Carry out approved recoveries: a native one sends the amount less its fee; a token
        one first has its gas topped up like a token sweep. The signing policy checks each
        against its approval and the payment's held funds."""
        due = await self.pool.fetch(Q["due_recoveries"], self.chain.name)
        if not due:
            return []
        new: list[int] = []
        try:
            fee = await self._fee()
        except (FeeCapError, RpcError) as exc:
            log.warning("sweep.recovery_deferred", chain=self.chain.name, error=str(exc))
            return []
        for r in due:
            address, to, token = r["address"], r["to_address"], r["token_address"]
            amount = int(r["amount"])
            try:
                if token is None:
                    gas = await self._gas_to(address, to, "0x1", "0x")
                    amount -= gas * fee.per_gas  # its fee comes out of the recovered coin
                else:
                    gas = await self._gas_to(address, token, "0x0", transfer_data(to, amount))
                    native = _uint(await self.rpc.call("eth_getBalance", [address, "latest"]))
                    free = max(0, native - await self._held_native([r["payment_id"]]))
                    if free < gas * fee.per_gas:
                        if not r["topup_in_flight"]:
                            new.append(
                                await self._create(
                                    kind="gas_topup",
                                    index=self.gas.index,
                                    sender=self.gas.address,
                                    to=address,
                                    token=None,
                                    amount=gas * fee.per_gas - free,
                                    gas=NATIVE_GAS,
                                    fee=fee,
                                    covered=[],
                                )
                            )
                        continue
                new.append(
                    await self._create(
                        kind="recover",
                        index=int(r["address_index"]),
                        sender=address,
                        to=to,
                        token=token,
                        amount=amount,
                        gas=gas,
                        fee=fee,
                        covered=[],
                        recovery=r["id"],
                    )
                )
            except InjectedCrash:
                raise
            except PolicyRefusal as exc:
                await self.pool.execute(Q["fail_recovery"], r["id"], f"refused: {exc}")
                log.critical(
                    "sweep.policy_refused", chain=self.chain.name, recovery=r["id"], reason=str(exc)
                )
            except Exception as exc:  # the other recoveries go on
                log.warning(
                    "sweep.recovery_failed",
                    chain=self.chain.name,
                    recovery=r["id"],
                    error=f"{type(exc).__name__}: {exc}",
                )
        return new

    async def _gas_to(self, sender: str, to: str, value: str, data: str) -> int:
        """Gas for a transfer to `to`: 21000 to an address without code, else the estimate
        with a margin (unused gas is not paid)."""
        if data == "0x":
            code = await self.rpc.call("eth_getCode", [to, "latest"])
            if code in (None, "0x", "0x0"):
                return NATIVE_GAS
        return await self._estimate(sender, to, value, data)

    async def _estimate(self, sender: str, to: str, value: str, data: str) -> int:
        """eth_estimateGas with a margin (unused gas is not paid), at least 21000."""
        estimate = _uint(
            await self.rpc.call(
                "eth_estimateGas", [{"from": sender, "to": to, "value": value, "data": data}]
            )
        )
        return max(NATIVE_GAS, -(-estimate * GAS_MARGIN[0] // GAS_MARGIN[1]))

    async def _plan_legacy_gas(self, head: int) -> list[int]:
        """Coin left in the former gas wallet (the deposit chain's `gas_wallet_index`, before
        the gas wallet had an account of its own) goes to the treasury once nothing of it is in
        flight, when what arrives exceeds the most the transfer may cost; looked at once per
        process until then."""
        legacy = self.gas.legacy
        if self._legacy_gas_done or legacy is None:
            return []
        state = await self.pool.fetchrow(Q["sender_state"], self.chain.name, legacy)
        assert state is not None
        if not state["used"]:
            self._legacy_gas_done = True
            return []
        if state["unfinished"]:
            return []
        try:
            fee = await self._fee()
            balance = _uint(
                await self.rpc.call("eth_getBalance", [legacy, hex(self._safe_block(head))])
            )
            gas = await self._native_gas(legacy, self.chain.treasury)
        except (FeeCapError, RpcError) as exc:
            log.warning("sweep.legacy_gas_deferred", chain=self.chain.name, error=str(exc))
            return []
        cost = gas * fee.per_gas
        if balance - cost <= cost:
            self._legacy_gas_done = True
            return []
        log.info(
            "sweep.legacy_gas_wallet",
            chain=self.chain.name,
            address=legacy,
            balance=str(balance),
            reason="the gas wallet moved to its own account; what is left goes to the treasury",
        )
        sweep_id = await self._create(
            kind="native",
            index=self.gas.index,
            sender=legacy,
            to=self.chain.treasury,
            token=None,
            amount=balance - cost,
            gas=gas,
            fee=fee,
            covered=[],
        )
        return [sweep_id]

    async def _held_native(self, payment_ids: list[str]) -> int:
        """Native coin the ledger holds on this chain for these payments' payers (not yet
        recovered); coin a payment accepts (priced in fiat, with a native option) is not."""
        held = await recoveries.still_there(self.pool, payment_ids, self.chain.name)
        return held.get(None, 0)

    async def _defer(self, group: _Group, seconds: float) -> None:
        """Plan the group's payments again after `seconds`; the others keep their turn."""
        not_before = self.clock() + timedelta(seconds=seconds)
        await self.pool.execute(Q["defer_sweep"], [p["id"] for p in group.payments], not_before)

    async def _mark_dust(self, group: _Group, balance: int) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            for payment_id, position, covered in group.covered:
                await conn.execute(Q["mark_dust"], payment_id, position, covered)
        log.info(
            "sweep.dust",
            chain=self.chain.name,
            address=group.address,
            token=group.token,
            balance=str(balance),
            reason="at or below the dust threshold",
        )

    async def _native_gas(self, sender: str, treasury: str) -> int:
        """Gas of a coin transfer to a treasury: 21000 unless it has code (a multisig may want
        more); whether it has code is asked once."""
        if treasury not in self._has_code:
            code = await self.rpc.call("eth_getCode", [treasury, "latest"])
            self._has_code[treasury] = code not in (None, "0x", "0x0")
        if not self._has_code[treasury]:
            return NATIVE_GAS
        return await self._estimate(sender, treasury, "0x1", "0x")

    async def _plan_native(self, group: _Group, balance: int, fee: Fee) -> int | None:
        if balance <= self.chain.dust_threshold_of(None):
            await self._mark_dust(group, balance)
            return None
        treasury = group.treasury(self.wallet, self.chain)
        gas = await self._native_gas(group.address, treasury)
        max_fee = gas * fee.per_gas
        if balance <= max_fee:
            # Not dust: fees fall again, and no more funds may ever come to this address.
            await self._defer(group, FEE_WAIT)
            log.info(
                "sweep.deferred",
                chain=self.chain.name,
                address=group.address,
                balance=str(balance),
                reason="the balance does not pay today's fee",
                retry_in=FEE_WAIT,
            )
            return None
        return await self._create(
            kind="native",
            index=group.index,
            sender=group.address,
            to=treasury,
            token=None,
            amount=balance - max_fee,
            gas=gas,
            fee=fee,
            covered=group.covered,
        )

    async def _plan_token(self, group: _Group, balance: int, native: int, fee: Fee) -> int | None:
        assert group.token is not None
        if balance <= self.chain.dust_threshold_of(group.token):
            await self._mark_dust(group, balance)
            return None
        # Tokens like USDT return no data from transfer(): only gas and the receipt matter.
        treasury = group.treasury(self.wallet, self.chain)
        data = transfer_data(treasury, balance)
        gas = await self._estimate(group.address, group.token, "0x0", data)
        need = gas * fee.per_gas
        # Coin a payer sent there by mistake is held for them: the sweep's gas never comes from
        # it, only from top-ups (and their change).
        free = max(0, native - await self._held_native(group.payment_ids))
        if free < need:
            return await self._create(
                kind="gas_topup",
                index=self.gas.index,
                sender=self.gas.address,
                to=group.address,
                token=None,
                amount=need - free,
                gas=NATIVE_GAS,
                fee=fee,
                covered=[(p, position, 0) for p, position, _ in group.covered],
            )
        return await self._create(
            kind="token",
            index=group.index,
            sender=group.address,
            to=treasury,
            token=group.token,
            amount=balance,
            gas=gas,
            fee=fee,
            covered=group.covered,
        )

    async def _create(
        self,
        *,
        kind: str,
        index: int,
        sender: str,
        to: str,
        token: str | None,
        amount: int,
        gas: int,
        fee: Fee,
        covered: Sequence[Covered],
        recovery: int | None = None,
        entries: Sequence[tuple[Entry, int]] = (),
        ref: int | None = None,
    ) -> int:
        """Allocate the sender's next nonce, sign, and commit the sweep before anything is sent.

        The nonce is the larger of the node's pending count and our highest stored nonce + 1,
        under a per-sender lock held to the commit: no two sweeps share one, none is skipped.
        A batch's entries (each with the balance it plans to move) and the delegate a `deploy`
        creates are committed with it.
        """
        intent = Intent(
            kind,
            index,
            sender,
            to,
            token,
            amount,
            recovery if recovery is not None else ref,
            tuple(e for e, _ in entries),
        )
        # Asked before the lock: a lock never holds a pooled connection across network I/O.
        pending = _uint(await self.rpc.call("eth_getTransactionCount", [sender, "pending"]))
        now = self.clock()
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(Q["nonce_lock"], f"ctripd.nonce:{self.chain.name}:{sender}")
            stored = await conn.fetchval(Q["max_nonce"], self.chain.name, sender)
            nonce = max(pending, -1 if stored is None else stored + 1)
            signed = await self._sign(intent, nonce, gas, fee, conn)
            tx_hash = signed.hash.to_0x_hex()
            raw = signed.raw_transaction.to_0x_hex()
            sweep_id: int = await conn.fetchval(
                Q["insert_sweep"],
                self.chain.name,
                kind,
                sender,
                index,
                to,
                token,
                amount,
                nonce,
                gas,
                fee.max_fee,
                fee.tip,
                fee.gas_price,
                raw,
                tx_hash,
                now,
            )
            await _insert_version(conn, sweep_id, tx_hash, raw, amount, fee, now)
            for entry, planned in entries:
                await conn.execute(
                    Q["insert_entry"],
                    sweep_id,
                    entry.address,
                    entry.index,
                    entry.token,
                    planned,
                    entry.auth_nonce,
                )
            if kind == "deploy":
                address = delegate.create_address(sender, nonce)
                await conn.execute(Q["record_delegate"], self.chain.name, to, address, sweep_id)
            for payment_id, position, part in covered:
                await conn.execute(Q["link_payment"], sweep_id, payment_id, part, position)
            if recovery is not None:
                await conn.execute(Q["link_recovery"], recovery, sweep_id)
            if ref is not None:
                await outgoing.link(conn, kind, ref, sweep_id, sender != self.payout.address)
        log.info(
            "sweep.signed",
            chain=self.chain.name,
            sweep=sweep_id,
            kind=kind,
            sender=sender,
            to=to,
            token=token,
            amount=str(amount),
            nonce=nonce,
            per_gas=fee.per_gas,
            tx_hash=tx_hash,
            payments=[p for p, _, _ in covered],
        )
        self._crash(Step.SIGNED)
        return sweep_id

    # ---- signing ----------------------------------------------------------------------------

    async def _sign(
        self, intent: Intent, nonce: int, gas: int, fee: Fee, conn: Conn | None = None
    ) -> SignedTransaction:
        """Check `intent` against the signing policy now, then sign it."""
        await self.policy.check(conn if conn is not None else self.pool, intent)
        on_gas_account = self.gas.hardened and intent.sender == self.gas.address
        key = (
            self.wallet.gas_private_key(intent.index)
            if intent.kind in GAS_WALLET_KINDS and on_gas_account
            else self.wallet.private_key(intent.index)
        )
        if intent.kind in outgoing.KINDS and intent.sender == self.payout.address:
            # The payout wallet (refunds after a sweep, payouts) is on the gas wallet's account.
            key = self.wallet.gas_private_key(intent.index)
        signed: SignedTransaction = Account.sign_transaction(
            self._transaction(intent, nonce, gas, fee), key
        )
        return signed

    def _transaction(self, intent: Intent, nonce: int, gas: int, fee: Fee) -> dict[str, Any]:
        if intent.kind == "batch":
            return batches.transaction(self.wallet, self.chain.chain_id, intent, nonce, gas, fee)
        tx: dict[str, Any] = {"chainId": self.chain.chain_id, "nonce": nonce, "gas": gas}
        if intent.kind == "deploy":
            tx |= {"value": 0, "data": delegate.creation_data(intent.to)}
        elif intent.token is not None:  # a token sweep or a recovery of tokens
            tx |= {"to": intent.token, "value": 0, "data": transfer_data(intent.to, intent.amount)}
        else:
            tx |= {"to": intent.to, "value": intent.amount, "data": "0x"}
        return tx | fee.tx_fields()

    async def _refuse(self, row: asyncpg.Record, reason: str) -> None:
        """A row the policy refuses to sign is final: `refused`, with the rule it broke."""
        await self.pool.execute(Q["refuse"], row["id"], f"refused by the signing policy: {reason}")
        self._sweep_log(row).critical(
            "sweep.policy_refused",
            kind=row["kind"],
            sender=row["from_address"],
            to=row["to_address"],
            amount=str(int(row["amount"])),
            reason=reason,
        )


# Node refusals that name the fee: only a new price gets such a transaction mined.
_FEE_REFUSALS = ("underpriced", "fee too low", "less than block base fee", "fee cap")


def _fee_refused(error: str | None) -> bool:
    return error is not None and any(reason in error.lower() for reason in _FEE_REFUSALS)


def _moved(row: asyncpg.Record, amount: int, receipt: dict[str, Any]) -> bool:
    """Whether the receipt holds the token's Transfer of `amount` from the deposit address to
    the sweep's recipient: the only proof the tokens arrived."""
    return transfer_logged(
        receipt, row["token_address"], row["from_address"], row["to_address"], amount
    )


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _sweep_facts(row: asyncpg.Record, decimals: int) -> dict[str, Any]:
    """What `payment.swept` tells the merchant about the sweep (amounts of the whole address)."""
    amount = int(row["amount"])
    return {
        "id": row["id"],
        "kind": row["kind"],
        "tx_hash": row["tx_hash"],
        "block_number": row["block_number"],
        "from": row["from_address"],
        "to": row["to_address"],
        "token_address": row["token_address"],
        "amount": to_decimal_string(amount, decimals),
        "amount_base_units": str(amount),
        "fee_base_units": str(int(row["fee"])),
    }
