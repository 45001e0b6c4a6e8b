"""Reconciliation: every deposit address's on-chain balances against the books.

All figures are taken at one block B: `confirmations` deep under the head, and no later than the
watcher's scanned block (so every transfer up to B is recorded). For each deposit address:

    expected native = credited native (live native and internal transfers in blocks ≤ B)
                    + gas top-ups received (confirmed `gas_topup` sweeps to it, mined ≤ B)
                    − native swept out (confirmed native sweeps from it, mined ≤ B)
                    − fees paid (gas_used × effective gas price of every sweep from it mined ≤ B,
                      reverted ones included: a reverted transaction still pays its gas)
    expected token  = credited token (live transfers of that token, ≤ B)
                    − token swept out (confirmed token sweeps, ≤ B)

where swept out includes what each swept entry of a confirmed EIP-7702 batch moved from it, and
what someone else's trigger of the sweep delegate moved to the treasury (booked by the sweeper,
`jobs.outside`);
refunds sent from it count like sweeps.

and the on-chain balance at B must equal it exactly, for the native asset and every configured
token. Any difference (funds moved without ctripd, a missed or double credit, an uncounted sweep)
is printed. Addresses with a sweep in flight are listed but not compared: their transaction may
be mined without its row being final yet.

Funds the sweeper leaves in place are listed as held (they are no mismatch): transfers on this
chain for a payment of another (sent on the wrong network), transfers in an asset their payment
does not accept (another than its own, or than its quoted options' when priced in fiat), and
transfers to payments that expired or were canceled (less what recoveries and refunds gave back).

Per asset, the totals show received = swept + refunded + recovered + held + the rest (still due
at the deposits, dust, fees); with the payout wallet's address, its flows per asset: out in
payouts, refunds after a sweep and fees, its balance, and so what came in.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg

from ctripd.chain.evm import balance_of_data
from ctripd.chain.rpc import RpcClient
from ctripd.config import ChainConfig
from ctripd.db import queries
from ctripd.ledger import recoveries
from ctripd.money import to_decimal_string

Q = queries("reconcile")


@dataclass(frozen=True)
class Mismatch:
    address: str
    asset: str
    decimals: int
    expected: int
    actual: int

    def line(self) -> str:
        diff = self.actual - self.expected

        def dec(units: int) -> str:
            return to_decimal_string(units, self.decimals)

        return (
            f"MISMATCH {self.address} {self.asset}: expected {dec(self.expected)} "
            f"({self.expected}), on chain {dec(self.actual)} ({self.actual}), "
            f"difference {dec(diff)} ({diff})"
        )


@dataclass(frozen=True)
class Held:
    """Recorded funds that stay at their deposit address until the operator acts."""

    address: str
    payment_id: str
    asset: str
    decimals: int
    amount: int
    reason: str

    def line(self) -> str:
        amount = to_decimal_string(self.amount, self.decimals)
        return (
            f"HELD {self.address} {self.asset}: {amount} ({self.amount}) of payment "
            f"{self.payment_id}, {self.reason}"
        )


@dataclass(frozen=True)
class Recovery:
    """Held funds the operator sent elsewhere with `ctripd recover`."""

    id: int
    payment_id: str
    asset: str
    decimals: int
    amount: int
    to: str
    status: str
    error: str | None

    def line(self) -> str:
        amount = to_decimal_string(self.amount, self.decimals)
        state = self.status + (f" ({self.error})" if self.error else "")
        return (
            f"RECOVERY #{self.id} {state}: {amount} {self.asset} ({self.amount}) of payment "
            f"{self.payment_id} to {self.to}"
        )


@dataclass(frozen=True)
class AssetTotal:
    """One asset's flow through the chain's deposit addresses: received = swept + refunded
    (from the deposits) + recovered + held + what else is still there (due, dust, fees)."""

    asset: str
    decimals: int
    received: int
    swept: int
    refunded: int
    recovered: int
    held: int

    def line(self) -> str:
        def dec(units: int) -> str:
            return to_decimal_string(units, self.decimals)

        rest = self.received - self.swept - self.refunded - self.recovered - self.held
        return (
            f"TOTAL {self.asset}: received {dec(self.received)} = swept {dec(self.swept)} + "
            f"refunded {dec(self.refunded)} + recovered {dec(self.recovered)} + held "
            f"{dec(self.held)} + at deposits or fees {dec(rest)}"
        )


@dataclass(frozen=True)
class WalletFlow:
    """One asset of the payout wallet: what went out (payouts, refunds after a sweep; fees in
    native coin), what it holds now, and so what came in."""

    address: str
    asset: str
    decimals: int
    payouts: int
    refunds: int
    fees: int
    balance: int

    def line(self) -> str:
        def dec(units: int) -> str:
            return to_decimal_string(units, self.decimals)

        out = self.payouts + self.refunds + self.fees
        return (
            f"PAYOUT WALLET {self.address} {self.asset}: in {dec(self.balance + out)}, out "
            f"{dec(out)} (payouts {dec(self.payouts)}, refunds {dec(self.refunds)}, fees "
            f"{dec(self.fees)}), balance {dec(self.balance)}"
        )


@dataclass
class Report:
    chain: str
    block: int
    addresses: int = 0
    balances: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)
    in_flight: list[str] = field(default_factory=list)
    held: list[Held] = field(default_factory=list)
    recoveries: list[Recovery] = field(default_factory=list)
    totals: list[AssetTotal] = field(default_factory=list)
    payout_wallet: list[WalletFlow] = field(default_factory=list)


def _sums(rows: list[asyncpg.Record]) -> dict[tuple[str, str | None], int]:
    return {(r["address"].lower(), r.get("token")): int(r["amount"] or 0) for r in rows}


async def reconcile(
    pool: asyncpg.Pool, rpc: RpcClient, chain: ChainConfig, payout_wallet: str | None = None
) -> Report:
    """The chain's report at its block; `payout_wallet`: the payout wallet's address, whose
    flows are shown too."""
    head = await rpc.block_number()
    block = max(0, head - chain.confirmations + 1)
    scanned = await pool.fetchval(Q["scanned_block"], chain.name)
    if scanned is not None:
        block = min(block, scanned)
    report = Report(chain.name, block)
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        addresses = [r["address"] for r in await conn.fetch(Q["deposit_addresses"], chain.name)]
        credited = _sums(await conn.fetch(Q["credited"], chain.name, block))
        swept = _sums(await conn.fetch(Q["swept_out"], chain.name, block))
        fees = _sums(await conn.fetch(Q["fees_paid"], chain.name, block))
        topups = _sums(await conn.fetch(Q["topped_up"], chain.name, block))
        report.held = [_held(chain, r) for r in await conn.fetch(Q["held"], chain.name, block)]
        report.recoveries = [
            _recovery(chain, r) for r in await recoveries.of_chain(conn, chain.name)
        ]
        totals = await conn.fetch(Q["asset_totals"], chain.name, block)
        flows = (
            await conn.fetch(Q["wallet_out"], chain.name, block, payout_wallet)
            if payout_wallet is not None
            else []
        )
        busy = {
            a.lower()
            for r in await conn.fetch(Q["in_flight"], chain.name)
            for a in (r["from_address"], r["to_address"])
        }
    tokens = sorted(chain.tokens.values(), key=lambda t: t.symbol)
    at = hex(block)
    checked = [a for a in addresses if a.lower() not in busy]
    report.in_flight = [a for a in addresses if a.lower() in busy]
    calls: list[tuple[str, list[object]]] = []
    for address in checked:
        calls.append(("eth_getBalance", [address, at]))
        calls += [
            ("eth_call", [{"to": t.address, "data": balance_of_data(address)}, at]) for t in tokens
        ]
    answers = iter(await rpc.batch(calls))
    for address in checked:
        key = address.lower()
        expected = (
            credited.get((key, None), 0)
            + topups.get((key, None), 0)
            - swept.get((key, None), 0)
            - fees.get((key, None), 0)
        )
        _compare(
            report, address, chain.native.symbol, chain.native.decimals, expected, next(answers)
        )
        for t in tokens:
            token = t.address.lower()
            expected = credited.get((key, token), 0) - swept.get((key, token), 0)
            _compare(report, address, t.symbol, t.decimals, expected, next(answers))
    report.addresses = len(checked)
    report.totals = [_total(chain, r, report.held) for r in totals]
    if payout_wallet is not None:
        report.payout_wallet = await _wallet_flows(rpc, chain, payout_wallet, at, flows)
    return report


def _total(chain: ChainConfig, row: asyncpg.Record, held: list[Held]) -> AssetTotal:
    asset, decimals = asset_of(chain, row["token"])
    return AssetTotal(
        asset,
        decimals,
        int(row["received"]),
        int(row["swept"]),
        int(row["refunded"]),
        int(row["recovered"]),
        sum(h.amount for h in held if h.asset == asset),
    )


async def _wallet_flows(
    rpc: RpcClient, chain: ChainConfig, address: str, at: str, rows: list[asyncpg.Record]
) -> list[WalletFlow]:
    """Each configured asset of the payout wallet at block `at`."""
    out = {r["token"]: r for r in rows}
    fees = sum(int(r["fees"]) for r in rows)
    assets: list[tuple[str | None, str, int]] = [(None, chain.native.symbol, chain.native.decimals)]
    assets += [(t.address.lower(), t.symbol, t.decimals) for t in chain.tokens.values()]
    calls: list[tuple[str, list[object]]] = [
        ("eth_getBalance", [address, at])
        if token is None
        else ("eth_call", [{"to": token, "data": balance_of_data(address)}, at])
        for token, _, _ in assets
    ]
    flows = []
    for (token, symbol, decimals), answer in zip(assets, await rpc.batch(calls), strict=True):
        row = out.get(token)
        flows.append(
            WalletFlow(
                address,
                symbol,
                decimals,
                int(row["payouts"]) if row else 0,
                int(row["refunds"]) if row else 0,
                fees if token is None else 0,
                int(str(answer), 16) if answer not in (None, "0x") else 0,
            )
        )
    return flows


def asset_of(chain: ChainConfig, token_address: str | None) -> tuple[str, int]:
    """(symbol, decimals) of a token address (None: the native coin); an unconfigured token is
    named by its address, in base units."""
    return chain.asset_at(token_address) or (str(token_address), 0)


def _recovery(chain: ChainConfig, row: asyncpg.Record) -> Recovery:
    asset, decimals = asset_of(chain, row["token_address"])
    return Recovery(
        row["id"],
        row["payment_id"],
        asset,
        decimals,
        int(row["amount"]),
        row["to_address"],
        row["status"],
        row["error"],
    )


def _held(chain: ChainConfig, row: asyncpg.Record) -> Held:
    asset, decimals = asset_of(chain, row["token"])
    if row["other_chain"]:
        reason = f"sent on {chain.name} for a payment on {row['payment_chain']}"
    elif row["other_asset"]:
        reason = "another asset than the payment's"
    else:
        reason = f"the payment is {row['status']}"
    return Held(row["address"], row["payment_id"], asset, decimals, int(row["amount"]), reason)


def _compare(
    report: Report, address: str, asset: str, decimals: int, expected: int, answer: object
) -> None:
    report.balances += 1
    actual = int(str(answer), 16) if answer not in (None, "0x") else 0
    if actual != expected:
        report.mismatches.append(Mismatch(address, asset, decimals, expected, actual))
