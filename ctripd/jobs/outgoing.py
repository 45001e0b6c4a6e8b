"""Refunds and payouts through the sweeper's engine (SPEC §12, §13): each is a `refund` or
`payout` row of `sweeps`, signed, stored and linked to its request in one transaction before
anything is sent, then resumed, re-broadcast, replaced and confirmed like every other row; the
signing policy checks it against its request (`jobs.outgoing_policy`).

- A refund is sent from its payment's deposit address while the funds are still there (the
  sweeper leaves a deposit with an open refund alone, and a refund waits while anything from or
  to its deposit is in flight, so the two never spend the same funds); tokens get a gas top-up
  from the gas wallet first, as for a sweep. Native coin from a deposit pays its fee on top
  when the deposit holds enough, else out of the refund. Funds already swept are refunded from
  the payout wallet, the amount exactly.
- A payout is sent from the payout wallet once it holds the whole amount beside what its
  unfinished transactions may still spend; until then it stays `pending` with the reason, and
  is looked at again every round: never a partial send.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Any, Protocol

import asyncpg
import structlog

from ctripd.chain.evm import balance_of_data, transfer_data
from ctripd.chain.fees import Fee, FeeCapError
from ctripd.chain.rpc import RpcClient, RpcError
from ctripd.config import ChainConfig
from ctripd.db import Conn, queries
from ctripd.errors import CtripdError
from ctripd.jobs.outgoing_policy import KINDS, PayoutWallet
from ctripd.jobs.policy import Entry, GasWallet, PolicyRefusal
from ctripd.ledger import payouts, refunds

RQ = queries("refunds")
PQ = queries("payouts")
log = structlog.get_logger(__name__)

NATIVE_GAS = 21_000

__all__ = ["KINDS", "Engine", "end", "fail", "link", "plan", "replacement"]


class Engine(Protocol):
    """What planning needs of the chain's sweeper (`jobs.sweeper.Sweeper`)."""

    chain: ChainConfig
    pool: asyncpg.Pool
    rpc: RpcClient
    gas: GasWallet
    payout: PayoutWallet

    async def _fee(self) -> Fee: ...

    async def _gas_to(self, sender: str, to: str, value: str, data: str) -> int: ...

    async def _held_native(self, payment_ids: list[str]) -> int: ...

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
        covered: Sequence[tuple[str, int | None, int]],
        recovery: int | None = None,
        entries: Sequence[tuple[Entry, int]] = (),
        ref: int | None = None,
    ) -> int: ...


def _uint(value: Any) -> int:
    if not isinstance(value, str) or value in ("0x", ""):
        raise RpcError(f"expected a hex quantity, got {value!r}")
    return int(value, 16)


async def plan(engine: Engine, head: int) -> list[int]:
    """Sign what the chain's open refunds and payouts need now; returns the new rows' ids."""
    due_refunds = await engine.pool.fetch(RQ["due"], engine.chain.name)
    due_payouts = await engine.pool.fetch(PQ["due"], engine.chain.name)
    if not due_refunds and not due_payouts:
        return []
    try:
        fee = await engine._fee()
    except (FeeCapError, RpcError) as exc:
        log.warning("outgoing.deferred", chain=engine.chain.name, error=str(exc))
        return []
    new: list[int] = []
    busy: set[str] = set()
    for r in due_refunds:
        if r["busy"] or r["address"] in busy:
            continue
        busy.add(r["address"])
        new += await _guarded(engine, "refund", r, _plan_refund(engine, r, fee))
    for p in due_payouts:
        new += await _guarded(engine, "payout", p, _plan_payout(engine, p, fee))
    return new


async def _guarded(
    engine: Engine, kind: str, row: asyncpg.Record, step: Awaitable[list[int]]
) -> list[int]:
    """Run one request's planning step; a refusal or a node's error leaves it waiting with the
    reason, retried next round (the others go on). Returns the ids it signed."""
    try:
        return await step
    except PolicyRefusal as exc:
        log.critical(
            "sweep.policy_refused",
            chain=engine.chain.name,
            kind=kind,
            ref=row["id"],
            reason=str(exc),
        )
        reason = f"refused by the signing policy: {exc}"
    except (FeeCapError, RpcError, CtripdError) as exc:
        reason = f"{type(exc).__name__}: {exc}"
    await _wait(engine, kind, row["id"], reason)
    return []


async def _wait(engine: Engine, kind: str, ref: int, reason: str) -> None:
    await engine.pool.execute((RQ if kind == "refund" else PQ)["wait"], ref, reason[:500])
    log.info("outgoing.waiting", chain=engine.chain.name, kind=kind, ref=ref, reason=reason)


async def _balances(engine: Engine, address: str, token: str | None) -> tuple[int, int]:
    """(native, token) balances of `address` at the latest block (token 0 for native)."""
    calls: list[tuple[str, list[Any]]] = [("eth_getBalance", [address, "latest"])]
    if token is not None:
        calls.append(("eth_call", [{"to": token, "data": balance_of_data(address)}, "latest"]))
    answers = await engine.rpc.batch(calls)
    return _uint(answers[0]), _uint(answers[1]) if token is not None else 0


async def _plan_refund(engine: Engine, r: asyncpg.Record, fee: Fee) -> list[int]:
    address, to, token = r["address"], r["to_address"], r["token_address"]
    amount = int(r["amount"])
    native, token_balance = await _balances(engine, address, token)
    held = await engine._held_native([r["payment_id"]])
    if token is None:
        gas = await engine._gas_to(address, to, "0x1", "0x")
        cost = gas * fee.per_gas
        # The payer's coin held for another refund or recovery is no fee for this one.
        own = native - max(0, held - amount)
        if own >= amount + cost:
            return [await _sign_refund(engine, r, address, amount, gas, fee)]
        if own >= amount and amount > cost:
            return [await _sign_refund(engine, r, address, amount - cost, gas, fee)]
    elif token_balance >= amount:
        gas = await engine._gas_to(address, token, "0x0", transfer_data(to, amount))
        need = gas * fee.per_gas
        free = max(0, native - held)
        if free >= need:
            return [await _sign_refund(engine, r, address, amount, gas, fee)]
        top_up = await engine._create(
            kind="gas_topup",
            index=engine.gas.index,
            sender=engine.gas.address,
            to=address,
            token=None,
            amount=need - free,
            gas=NATIVE_GAS,
            fee=fee,
            covered=[],
        )
        return [top_up]
    # Swept (or never there): the payout wallet gives it back.
    problem = await _short(engine, token, amount, fee)
    if problem is not None:
        await _wait(engine, "refund", r["id"], problem)
        return []
    return [await _sign_refund(engine, r, engine.payout.address, amount, None, fee)]


async def _sign_refund(
    engine: Engine, r: asyncpg.Record, sender: str, amount: int, gas: int | None, fee: Fee
) -> int:
    token, to = r["token_address"], r["to_address"]
    from_deposit = sender == r["address"]
    if gas is None:
        gas = await _payout_gas(engine, to, token, amount)
    return await engine._create(
        kind="refund",
        index=int(r["address_index"]) if from_deposit else engine.payout.index,
        sender=sender,
        to=to,
        token=token,
        amount=amount,
        gas=gas,
        fee=fee,
        covered=[],
        ref=int(r["id"]),
    )


async def _payout_gas(engine: Engine, to: str, token: str | None, amount: int) -> int:
    sender = engine.payout.address
    if token is None:
        return await engine._gas_to(sender, to, hex(amount), "0x")
    return await engine._gas_to(sender, token, "0x0", transfer_data(to, amount))


async def _short(engine: Engine, token: str | None, amount: int, fee: Fee) -> str | None:
    """Why the payout wallet cannot send `amount` now (None: it can): what its unfinished
    transactions may still spend is kept aside."""
    address = engine.payout.address
    native, token_balance = await _balances(engine, address, token)
    spending = {
        r["token"]: (int(r["amount"]), int(r["fees"] or 0))
        for r in await engine.pool.fetch(PQ["wallet_in_flight"], engine.chain.name, address)
    }
    fees = sum(f for _, f in spending.values())
    native_free = native - spending.get(None, (0, 0))[0] - fees
    # Gas of a token transfer is estimated only once the tokens are there; this bounds it.
    cost = (NATIVE_GAS if token is None else 100_000) * fee.per_gas
    wallet = f"the payout wallet {address}"
    if token is None:
        if native_free < amount + cost:
            return f"{wallet} lacks coin: {native_free} free, needs {amount + cost} with the fee"
        return None
    token_free = token_balance - spending.get(token.lower(), (0, 0))[0]
    if token_free < amount:
        return f"{wallet} lacks tokens: {token_free} free of {token}, needs {amount}"
    if native_free < cost:
        return f"{wallet} lacks coin for gas: {native_free} free, needs {cost}"
    return None


async def _plan_payout(engine: Engine, p: asyncpg.Record, fee: Fee) -> list[int]:
    token, amount = p["token_address"], int(p["amount"])
    problem = await _short(engine, token, amount, fee)
    if problem is not None:
        if p["reason"] != problem[:500]:
            await _wait(engine, "payout", p["id"], problem)
        return []
    gas = await _payout_gas(engine, p["to_address"], token, amount)
    sweep_id = await engine._create(
        kind="payout",
        index=engine.payout.index,
        sender=engine.payout.address,
        to=p["to_address"],
        token=token,
        amount=amount,
        gas=gas,
        fee=fee,
        covered=[],
        ref=int(p["id"]),
    )
    return [sweep_id]


# ---- hooks of the engine -----------------------------------------------------------------------


async def link(conn: Conn, kind: str, ref: int, sweep_id: int, deposit: bool) -> None:
    """The request is signed: linked to its sweep in the transaction that stores it."""
    if kind == "refund":
        source = "deposit" if deposit else "payout_wallet"
        await conn.execute(RQ["link"], ref, sweep_id, source)
    else:
        await conn.execute(PQ["link"], ref, sweep_id)


async def end(
    conn: Conn, sweep: asyncpg.Record, ok: bool, error: str | None, *, operator_url: bool
) -> None:
    """The request of a finished `refund`/`payout` sweep ends with it, with its event, in the
    transaction that finishes the sweep."""
    status = "confirmed" if ok else "failed"
    if sweep["kind"] == "refund":
        for refund in await conn.fetch(RQ["finish"], sweep["id"], status, error):
            await refunds.end(conn, refund, status, operator_url=operator_url)
    else:
        for payout in await conn.fetch(PQ["finish"], sweep["id"], status, error):
            await payouts.record_event(
                conn, payout["id"], f"payout.{status}", operator_url=operator_url
            )


async def fail(conn: Conn, sweep: asyncpg.Record, reason: str, *, operator_url: bool) -> None:
    """A `refund`/`payout` sweep whose nonce another transaction used: its request failed."""
    if sweep["kind"] in KINDS:
        await end(conn, sweep, False, reason, operator_url=operator_url)


async def replacement(pool: asyncpg.Pool, sweep: asyncpg.Record, fee: Fee) -> tuple[int, int]:
    """(request id, amount) of a replacement of a `refund`/`payout` sweep at `fee`: a native
    refund whose fee came out of it pays the new fee out of it too."""
    q = RQ if sweep["kind"] == "refund" else PQ
    row = await pool.fetchrow(q["of_sweep"], sweep["id"])
    assert row is not None
    asked, sent = int(row["amount"]), int(sweep["amount"])
    if sweep["token_address"] is None and sent < asked:
        sent = asked - int(sweep["gas_limit"]) * fee.per_gas
    return int(row["id"]), sent
