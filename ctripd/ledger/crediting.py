"""Crediting (SPEC §4): transfer rows, payment sums and status, and their events.

Everything here runs inside the caller's transaction, next to the cursor move it belongs to, so a
crash leaves either the whole block range applied or none of it. Sums are always recomputed from
the live transfer rows, never incremented, so re-applying a range or a reorg cannot drift them.

Transfers below their asset's `min_credit` are dust: they count like any other (the funds are at
the address and get swept), but one row per block, payment and asset stands for all of them and
they announce no `payment.transfer_received`, so that spam costs the ledger and the webhook
outbox per block, not per transfer.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import asyncpg
import structlog

from ctripd.chain.scanner import Transfer
from ctripd.config import ChainConfig, PaymentsConfig
from ctripd.db import Conn, queries
from ctripd.ledger.events import record_event, record_events
from ctripd.ledger.objects import load_payments, render_transfer, same_asset, stored_asset
from ctripd.money import fiat_value, scaled, unscaled

Q = queries("crediting")
FQ = queries("fiat")
log = structlog.get_logger(__name__)

# Statuses in which the due amount has arrived.
PAID = frozenset({"detected", "confirmed"})


@dataclass(frozen=True)
class Policy:
    tolerance_bps: int = 0
    late_window: timedelta = timedelta(days=1)
    # `[webhooks] url` is set: the default merchant's events go there too (see record_event).
    operator_url: bool = True

    @classmethod
    def from_config(cls, payments: PaymentsConfig, operator_url: bool) -> Policy:
        return cls(
            payments.underpayment_tolerance_bps,
            timedelta(seconds=payments.late_window),
            operator_url,
        )


def due_minimum(amount: int, tolerance_bps: int) -> int:
    """The least amount that counts as paid: the tolerance is rounded in the payer's disfavour."""
    return amount - amount * tolerance_bps // 10_000


def decide(
    status: str,
    paid_late: bool,
    amount: int,
    expires_at: datetime,
    received: int,
    confirmed: int,
    completed_at: datetime,
    policy: Policy,
) -> tuple[str, bool]:
    """(status, paid_late) that the live transfers justify.

    `completed_at` is when the due amount was reached (its block's time). A payment completed
    after expiry is paid late within the late window; after it, the funds are recorded but the
    status stays. Canceled stays canceled. A paid payment whose transfers were un-counted goes
    back to pending (the expiry job expires it, if its time is up).
    """
    if status == "canceled":
        return status, paid_late
    due = due_minimum(amount, policy.tolerance_bps)
    if received < due:
        return ("pending", False) if status in PAID else (status, paid_late)
    if status not in PAID:
        late = completed_at > expires_at
        if late and completed_at > expires_at + policy.late_window:
            return status, paid_late
        paid_late = late
    return ("confirmed" if confirmed >= due else "detected"), paid_late


@dataclass
class _Dust:
    """The dust transfers of one block to one payment in one asset, named by the last of them."""

    payment: asyncpg.Record
    last: Transfer
    amount: int = 0
    count: int = 0

    def add(self, transfer: Transfer) -> None:
        self.last = transfer
        self.amount += transfer.amount
        self.count += 1


@dataclass
class _Context:
    chain: ChainConfig
    scanned: int
    policy: Policy
    now: datetime

    def render(self, transfer: asyncpg.Record) -> dict[str, Any]:
        asset = stored_asset(transfer) or self.chain.asset_at(transfer["token_address"])
        return render_transfer(transfer, asset, self.scanned)


def _raw(conn: Conn) -> asyncpg.Connection:
    """record_event is typed for a plain connection; a pool's proxy behaves as one."""
    return cast(asyncpg.Connection, conn)


async def credit_range(
    conn: Conn,
    chain: ChainConfig,
    transfers: Sequence[Transfer],
    scanned: int,
    policy: Policy,
) -> int:
    """Record `transfers`, then settle every payment they touch or that waits for confirmations.

    `scanned` is the last block read; confirmations count up to it. Returns the number of
    transfers that became live (new, or revived after a reorg), dust included.
    """
    ctx = _Context(chain, scanned, policy, datetime.now(UTC))
    addresses = sorted({t.to_address for t in transfers})
    payments = await conn.fetch(Q["lock_payments_for_step"], chain.name, addresses)
    by_address = {p["address"].lower(): p for p in payments}
    tx_hashes = sorted({t.tx_hash.lower() for t in transfers})
    own = (
        {r[0] for r in await conn.fetch(Q["own_sweep_txs"], chain.name, tx_hashes)}
        if tx_hashes
        else set()
    )
    rows: list[tuple[Any, ...]] = []
    dust: dict[tuple[str, str, str], _Dust] = {}
    times: dict[int, int] = {}
    for t in transfers:
        payment = by_address.get(t.to_address)
        if payment is None:
            log.warning("transfer.no_payment", chain=chain.name, tx=t.tx_hash, to=t.to_address)
            continue
        if t.tx_hash.lower() in own:
            continue  # our own gas top-up for a sweep, not a payment
        times[t.block_number] = t.timestamp
        if t.amount < chain.min_credit_of(t.token_address):
            key = (t.block_hash, payment["id"], (t.token_address or "").lower())
            dust.setdefault(key, _Dust(payment, t)).add(t)
            continue
        symbol, decimals = ctx.chain.asset_at(t.token_address) or (None, None)
        rows.append(
            (
                t.tx_hash,
                t.kind,
                t.position,
                payment["id"],
                t.token_address,
                t.from_address,
                payment["address"],
                t.amount,
                t.block_number,
                t.block_hash,
                symbol,
                decimals,
            )
        )
    aggregates = [_dust_row(ctx, d) for d in dust.values()]
    fresh: dict[str, list[asyncpg.Record]] = defaultdict(list)
    for query, values in (("upsert_transfers", rows), ("upsert_dust", aggregates)):
        if values:
            columns = [list(c) for c in zip(*values, strict=True)]
            for row in await conn.fetch(Q[query], chain.name, *columns):
                fresh[row["payment_id"]].append(row)
    for group in fresh.values():
        group.sort(key=lambda r: (r["block_number"], r["tx_hash"], r["log_index"]))
    await _settle(conn, ctx, payments, fresh, times)
    return sum(r["transfer_count"] for g in fresh.values() for r in g)


def _dust_row(ctx: _Context, dust: _Dust) -> tuple[Any, ...]:
    """The columns of upsert_dust for one aggregate."""
    last = dust.last
    symbol, decimals = ctx.chain.asset_at(last.token_address) or (None, None)
    return (
        last.tx_hash,
        last.position,
        dust.payment["id"],
        last.token_address,
        last.from_address,
        dust.payment["address"],
        dust.amount,
        last.block_number,
        last.block_hash,
        symbol,
        decimals,
        dust.count,
    )


async def orphan_after(conn: Conn, chain: ChainConfig, fork: int, policy: Policy) -> int:
    """Un-count the transfers of blocks after `fork`, settle their payments, report the reorg.

    Returns the number of transfers orphaned.
    """
    ctx = _Context(chain, fork, policy, datetime.now(UTC))
    ids = [r[0] for r in await conn.fetch(Q["live_payments_after"], chain.name, fork)]
    payments = await conn.fetch(Q["lock_payments_by_id"], ids)
    orphaned = await conn.fetch(Q["orphan_transfers_after"], chain.name, fork)
    await _settle(conn, ctx, payments, {}, {})
    for transfer in sorted(orphaned, key=lambda r: (r["block_number"], r["log_index"])):
        log.warning(
            "transfer.orphaned",
            chain=chain.name,
            payment_id=transfer["payment_id"],
            tx=transfer["tx_hash"],
            block=transfer["block_number"],
        )
        await record_event(
            _raw(conn),
            "payment.reorged",
            transfer["payment_id"],
            transfer=ctx.render(transfer),
            operator_url=policy.operator_url,
        )
    return len(orphaned)


async def _settle(
    conn: Conn,
    ctx: _Context,
    payments: Sequence[asyncpg.Record],
    fresh: Mapping[str, list[asyncpg.Record]],
    times: Mapping[int, int],
) -> None:
    """Recompute sums and status of locked `payments` of this chain; write the events of what
    changed (each new transfer but dust, which only moves the sums). Payments of other chains
    only get their new transfers reported: funds on another chain never count."""
    if not payments:
        return
    priced = [p for p in payments if p["price_amount"] is not None]
    events = await _settle_priced(conn, ctx, priced, fresh, times)
    payments = [p for p in payments if p["price_amount"] is None]
    own = [p["id"] for p in payments if p["chain"] == ctx.chain.name]
    sums = {
        r["id"]: (int(r["received"]), int(r["confirmed"]))
        for r in await conn.fetch(Q["payment_sums"], own, ctx.scanned)
    }
    changed: list[tuple[Any, ...]] = []
    for p in payments:
        new = fresh.get(p["id"], [])
        # Each new transfer is announced but dust, which only moves the sums.
        events.extend(
            ("payment.transfer_received", p["id"], ctx.render(t))
            for t in new
            if t["kind"] != "dust"
        )
        if p["chain"] != ctx.chain.name:
            # Sent on the wrong network: recorded, reported and held, never counted.
            for t in new:
                log.warning(
                    "transfer.wrong_chain",
                    chain=ctx.chain.name,
                    payment_chain=p["chain"],
                    payment_id=p["id"],
                    tx=t["tx_hash"],
                    amount=str(t["amount"]),
                    asset=t["asset"],
                )
            continue
        received, confirmed = sums[p["id"]]
        completed_at = _completed_at(p, received, new, times, ctx)
        old = p["status"]
        status, paid_late = decide(
            old,
            p["paid_late"],
            int(p["amount"]),
            p["expires_at"],
            received,
            confirmed,
            completed_at,
            ctx.policy,
        )
        detected_at, confirmed_at = _paid_times(p, status, ctx.now)
        values = (received, confirmed, status, paid_late, detected_at, confirmed_at)
        current = (
            int(p["amount_received"]),
            int(p["amount_confirmed"]),
            old,
            p["paid_late"],
            p["detected_at"],
            p["confirmed_at"],
        )
        if values != current:
            changed.append((p["id"], *values))
        if status != old:
            log.info(
                "payment.status",
                chain=ctx.chain.name,
                payment_id=p["id"],
                old=old,
                new=status,
                paid_late=paid_late,
                received=str(received),
                confirmed=str(confirmed),
            )
        events.extend(_status_events(p["id"], old, status))
    if changed:
        await conn.execute(Q["update_payments"], *[list(c) for c in zip(*changed, strict=True)])
    # Each event carries the payment as it is now, so they are written after the updates; the
    # payments with events in this step are loaded together, once.
    loaded = await load_payments(conn, sorted({payment_id for _, payment_id, _ in events}))
    await record_events(
        conn,
        [(event_type, payment_id, transfer, None) for event_type, payment_id, transfer in events],
        loaded,
        operator_url=ctx.policy.operator_url,
    )


Event = tuple[str, str, dict[str, Any] | None]


def _paid_times(
    payment: asyncpg.Record, status: str, now: datetime
) -> tuple[datetime | None, datetime | None]:
    """(detected_at, confirmed_at) after the payment moves to `status`."""
    old = payment["status"]
    detected_at, confirmed_at = payment["detected_at"], payment["confirmed_at"]
    if status in PAID and old not in PAID:
        detected_at = now
    if status == "confirmed" and old != "confirmed":
        confirmed_at = now
    if old in PAID and status not in PAID:
        detected_at = confirmed_at = None
    if status == "detected":
        confirmed_at = None
    return detected_at, confirmed_at


def _status_events(payment_id: str, old: str, status: str) -> list[Event]:
    events: list[Event] = []
    if status in PAID and old not in PAID:
        events.append(("payment.detected", payment_id, None))
    if status == "confirmed" and old != "confirmed":
        events.append(("payment.confirmed", payment_id, None))
    return events


def _option_key(chain: str, token_address: str | None) -> tuple[str, str]:
    return chain, (token_address or "").lower()


async def _settle_priced(
    conn: Conn,
    ctx: _Context,
    payments: Sequence[asyncpg.Record],
    fresh: Mapping[str, list[asyncpg.Record]],
    times: Mapping[int, int],
) -> list[Event]:
    """`_settle` for payments priced in fiat: transfers on any chain in any quoted option count
    at that option's locked rate, summed in fiat; the rest is recorded, reported and held.
    Returns the events to write (after the updates, with the others)."""
    if not payments:
        return []
    sums: dict[str, list[asyncpg.Record]] = defaultdict(list)
    for o in await conn.fetch(
        FQ["option_sums"], [p["id"] for p in payments], ctx.chain.name, ctx.scanned
    ):
        sums[o["payment_id"]].append(o)
    events: list[Event] = []
    changed: list[tuple[Any, ...]] = []
    option_rows: list[tuple[Any, ...]] = []
    for p in payments:
        options = {_option_key(o["chain"], o["token_address"]): o for o in sums[p["id"]]}
        new = fresh.get(p["id"], [])
        for t in new:
            if t["kind"] != "dust":
                events.append(("payment.transfer_received", p["id"], ctx.render(t)))
            if _option_key(t["chain"], t["token_address"]) not in options:
                log.warning(
                    "transfer.not_accepted",
                    chain=ctx.chain.name,
                    payment_id=p["id"],
                    tx=t["tx_hash"],
                    amount=str(t["amount"]),
                    asset=t["asset"],
                )
        received = sum(
            fiat_value(int(o["received"]), o["rate"], o["decimals"]) for o in options.values()
        )
        confirmed = sum(
            fiat_value(int(o["confirmed"]), o["rate"], o["decimals"]) for o in options.values()
        )
        option_rows.extend(
            (o["payment_id"], o["position"], o["received"], o["confirmed"])
            for o in options.values()
        )
        price = scaled(p["price_amount"])
        old = p["status"]
        status, paid_late = decide(
            old,
            p["paid_late"],
            price,
            p["expires_at"],
            received,
            confirmed,
            _completed_priced_at(p, options, received, new, times, ctx),
            ctx.policy,
        )
        detected_at, confirmed_at = _paid_times(p, status, ctx.now)
        own = options.get(_option_key(p["chain"], p["token_address"]))
        units = (int(own["received"]), int(own["confirmed"])) if own is not None else (0, 0)
        values = (
            *units,
            status,
            paid_late,
            detected_at,
            confirmed_at,
            unscaled(received),
            unscaled(confirmed),
        )
        current = (
            int(p["amount_received"]),
            int(p["amount_confirmed"]),
            old,
            p["paid_late"],
            p["detected_at"],
            p["confirmed_at"],
            p["price_received"],
            p["price_confirmed"],
        )
        if values != current:
            changed.append((p["id"], *values))
        if status != old:
            log.info(
                "payment.status",
                chain=ctx.chain.name,
                payment_id=p["id"],
                old=old,
                new=status,
                paid_late=paid_late,
                received=str(unscaled(received)),
                confirmed=str(unscaled(confirmed)),
                currency=p["price_currency"],
            )
        events.extend(_status_events(p["id"], old, status))
    if option_rows:
        await conn.execute(
            FQ["update_option_sums"], *[list(c) for c in zip(*option_rows, strict=True)]
        )
    if changed:
        await conn.execute(
            FQ["update_fiat_payments"], *[list(c) for c in zip(*changed, strict=True)]
        )
    return events


def _completed_priced_at(
    payment: asyncpg.Record,
    options: Mapping[tuple[str, str], asyncpg.Record],
    received: int,
    new: Sequence[asyncpg.Record],
    times: Mapping[int, int],
    ctx: _Context,
) -> datetime:
    """`_completed_at` in fiat: the block whose transfer brought the value to the price due."""
    counted = [
        (t, options[key])
        for t in new
        if (key := _option_key(t["chain"], t["token_address"])) in options
    ]
    values = [fiat_value(int(t["amount"]), o["rate"], o["decimals"]) for t, o in counted]
    running = received - sum(values)
    due = due_minimum(scaled(payment["price_amount"]), ctx.policy.tolerance_bps)
    for (t, _), value in zip(counted, values, strict=True):
        running += value
        stamp = times.get(t["block_number"])
        if running >= due and stamp is not None:
            return datetime.fromtimestamp(stamp, UTC)
    return ctx.now


def _completed_at(
    payment: asyncpg.Record,
    received: int,
    new: Sequence[asyncpg.Record],
    times: Mapping[int, int],
    ctx: _Context,
) -> datetime:
    """Time of the block whose transfer brought the sum to the due amount (now if unknown)."""
    counted = [t for t in new if same_asset(t, payment)]
    running = received - sum(int(t["amount"]) for t in counted)
    due = due_minimum(int(payment["amount"]), ctx.policy.tolerance_bps)
    for t in counted:
        running += int(t["amount"])
        stamp = times.get(t["block_number"])
        if running >= due and stamp is not None:
            return datetime.fromtimestamp(stamp, UTC)
    return ctx.now
