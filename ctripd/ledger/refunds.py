"""Refunds (SPEC §13): a merchant gives back what one of its payments received. The request is
recorded here, in one transaction with its `refund.created` event, under the payment's row lock
so that refunds of one payment are decided in turn; the sweeper signs and sends it
(`jobs.outgoing`) and ends it with `refund.confirmed` or `refund.failed`.

What a payment can give back in an asset is what it received in it (confirmed live transfers on
its chain) less the refunds not failed and the operator's recoveries. Without an amount the
refund is the part not needed to settle the payment: its overpaid part, or everything in an
asset that is not the payment's, or of an expired or canceled payment. A confirmed payment's
own due amount may be refunded too (named explicitly); once refunds of it confirm, the payment's
`refund_status` is `partially_refunded`, or `refunded` when all it received went back.

Each request is bound to what the authenticated call recorded by an HMAC under the wallet's
approval key (`request_text`): the signing policy refuses a row a database write created or
changed."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, cast

import asyncpg

from ctripd.chain.wallet import Wallet
from ctripd.db import Conn, queries
from ctripd.errors import CtripdError
from ctripd.formats import iso
from ctripd.ledger.events import record_event
from ctripd.money import to_decimal_string

Q = queries("refunds")

STATUSES = ("requested", "signed", "broadcast", "confirmed", "failed")
MAX_LIST = 100


class RefundRefused(CtripdError):
    """A refund request the ledger does not allow: `status` is the HTTP answer, `field` the
    request field at fault."""

    def __init__(self, status: int, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.field = field


@dataclass(frozen=True)
class RefundRequest:
    merchant: str
    payment_id: str
    to: str
    # Asset units as base units (None: the default amount).
    amount: int | None
    # The asset: its symbol, decimals and token address (None: native).
    asset: str
    decimals: int
    token: str | None
    idempotency_key: str | None
    request_hash: bytes | None


def new_refund_id() -> str:
    return f"ref_{uuid.uuid4().hex}"


def request_text(
    public_id: str, merchant: str, payment_id: str, token: str | None, to: str, amount: int
) -> str:
    """What a refund's binding signs: every field that decides where funds go, canonical."""
    return (
        f"refund|{public_id}|{merchant}|{payment_id}|{(token or 'native').lower()}|"
        f"{to.lower()}|{amount}"
    )


@dataclass(frozen=True)
class Figures:
    """One asset of a payment: received (confirmed), refunded (not failed), recovered."""

    received: int
    refunded: int
    recovered: int

    @property
    def refundable(self) -> int:
        return max(0, self.received - self.refunded - self.recovered)


async def figures(
    conn: Conn | asyncpg.Pool, payment_id: str, excluding: int | None = None
) -> dict[str | None, Figures]:
    """A payment's figures per asset (token address lowercased, None: native)."""
    rows = await conn.fetch(Q["figures"], payment_id, excluding)
    return {
        r["token"]: Figures(int(r["received"]), int(r["refunded"]), int(r["recovered"]))
        for r in rows
    }


def _own(payment: asyncpg.Record, token: str | None) -> bool:
    return (token or "").lower() == (payment["token_address"] or "").lower()


def default_amount(payment: asyncpg.Record, token: str | None, found: Figures) -> int:
    """The part of `found` not needed to settle the payment."""
    if not _own(payment, token) or payment["status"] in ("expired", "canceled"):
        return found.refundable
    overpaid = max(0, found.received - int(payment["amount"]))
    return max(0, min(found.refundable, overpaid - found.refunded - found.recovered))


def allowed_amount(payment: asyncpg.Record, token: str | None, found: Figures) -> int:
    """The most a refund may take now: all that is refundable, but of a payment's own asset
    before it is confirmed (or expired, canceled) only what it does not need to settle."""
    if _own(payment, token) and payment["status"] in ("pending", "detected"):
        return default_amount(payment, token, found)
    return found.refundable


async def create(
    pool: asyncpg.Pool,
    wallet: Wallet,
    req: RefundRequest,
    *,
    operator_url: bool,
) -> tuple[dict[str, Any], bool]:
    """Record the refund with its `refund.created` event; returns it and whether it is new (an
    Idempotency-Key used before for the same request gives the earlier one)."""
    async with pool.acquire() as conn, conn.transaction():
        # The payment's lock first: a repeat with the same key waits for the first to commit.
        payment = await conn.fetchrow(Q["lock_payment"], req.payment_id)
        assert payment is not None
        if req.idempotency_key is not None:
            earlier = await conn.fetchrow(
                Q["by_idempotency_key"], req.merchant, req.idempotency_key
            )
            if earlier is not None:
                if bytes(earlier["request_hash"]) != req.request_hash:
                    raise RefundRefused(
                        409,
                        f"Idempotency-Key already used for refund {earlier['public_id']} with a "
                        "different request",
                        "Idempotency-Key",
                    )
                found = await get(conn, earlier["public_id"], req.merchant)
                assert found is not None
                return found, False
        token = req.token.lower() if req.token else None
        asset = (await figures(conn, payment["id"])).get(token, Figures(0, 0, 0))
        if req.amount is None:
            amount = default_amount(payment, token, asset)
            if amount <= 0:
                raise RefundRefused(
                    422,
                    "nothing to refund by default (the payment holds no overpaid, held or "
                    "unneeded funds in this asset); name an amount to refund a confirmed payment",
                    "amount",
                )
        else:
            amount = req.amount
            most = allowed_amount(payment, token, asset)
            if amount > most:
                raise RefundRefused(
                    422,
                    f"more than the {most} base units refundable in this asset now (received "
                    f"{asset.received}, refunded {asset.refunded}, recovered {asset.recovered}"
                    f"{'; the due part only once confirmed' if most < asset.refundable else ''})",
                    "amount",
                )
        public_id = new_refund_id()
        binding = wallet.approve(
            request_text(public_id, req.merchant, payment["id"], req.token, req.to, amount)
        )
        try:
            refund_id = await conn.fetchval(
                Q["insert_refund"],
                public_id,
                payment["id"],
                req.merchant,
                payment["chain"],
                req.asset,
                req.decimals,
                req.token,
                req.to,
                amount,
                binding,
                req.idempotency_key,
                req.request_hash,
            )
        except asyncpg.UniqueViolationError:  # the same key on another payment, at this moment
            raise RefundRefused(
                409, "a request with this Idempotency-Key is in progress; retry", "Idempotency-Key"
            ) from None
        refund = await _one(conn, refund_id)
        await record_event(
            cast(asyncpg.Connection, conn),
            "refund.created",
            payment["id"],
            extra={"refund": refund},
            operator_url=operator_url,
        )
    return refund, True


def render(row: asyncpg.Record) -> dict[str, Any]:
    """The refund object of the API, webhooks and CLI."""
    decimals = int(row["decimals"])
    amount = int(row["amount"])
    status = row["status"]
    if status == "signed" and row["broadcast_at"] is not None:
        status = "broadcast"
    sent = row["amount_sent"]
    return {
        "id": row["public_id"],
        "payment_id": row["payment_id"],
        "chain": row["chain"],
        "asset": row["asset"],
        "token_address": row["token_address"],
        "decimals": decimals,
        "to": row["to_address"],
        "amount": to_decimal_string(amount, decimals),
        "amount_base_units": str(amount),
        "status": status,
        "source": row["source"],
        "from": row["from_address"],
        "amount_sent_base_units": None if sent is None else str(int(sent)),
        "tx_hash": row["tx_hash"],
        "block_number": row["block_number"],
        "fee_base_units": None if row["fee"] is None else str(int(row["fee"])),
        "error": row["error"],
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
        "confirmed_at": iso(row["confirmed_at"]),
    }


async def _rows(
    conn: Conn | asyncpg.Pool,
    *,
    refund_id: int | None = None,
    public_id: str | None = None,
    payment_id: str | None = None,
    merchant: str | None = None,
    limit: int = MAX_LIST,
) -> list[dict[str, Any]]:
    rows = await conn.fetch(Q["refund_rows"], refund_id, public_id, payment_id, merchant, limit)
    return [render(r) for r in rows]


async def _one(conn: Conn | asyncpg.Pool, refund_id: int) -> dict[str, Any]:
    (refund,) = await _rows(conn, refund_id=refund_id, limit=1)
    return refund


async def get(
    conn: Conn | asyncpg.Pool, public_id: str, merchant: str | None
) -> dict[str, Any] | None:
    found = await _rows(conn, public_id=public_id, merchant=merchant, limit=1)
    return found[0] if found else None


async def of_payment(
    conn: Conn | asyncpg.Pool, payment_id: str, merchant: str | None
) -> list[dict[str, Any]]:
    return await _rows(conn, payment_id=payment_id, merchant=merchant)


async def listing(conn: Conn | asyncpg.Pool, limit: int = MAX_LIST) -> list[dict[str, Any]]:
    """Every merchant's refunds, oldest first (for the operator's CLI)."""
    return await _rows(conn, limit=limit)


async def end(conn: Conn, refund: asyncpg.Record, status: str, *, operator_url: bool) -> None:
    """Tell the merchant how refund `refund` (its id and payment) ended, in the transaction
    that ended it; a confirmed one may change its payment's `refund_status`."""
    payment_id = refund["payment_id"]
    if status == "confirmed":
        await _update_refund_status(conn, payment_id)
    await record_event(
        cast(asyncpg.Connection, conn),
        f"refund.{status}",
        payment_id,
        extra={"refund": await _one(conn, refund["id"])},
        operator_url=operator_url,
    )


async def _update_refund_status(conn: Conn, payment_id: str) -> None:
    payment = await conn.fetchrow(Q["lock_payment"], payment_id)
    assert payment is not None
    if payment["status"] != "confirmed":
        return
    given = int(await conn.fetchval(Q["confirmed_own"], payment_id))
    token = payment["token_address"].lower() if payment["token_address"] else None
    received = (await figures(conn, payment_id)).get(token, Figures(0, 0, 0)).received
    overpaid = max(0, received - int(payment["amount"]))
    if given <= overpaid:
        return
    status = "refunded" if given >= received else "partially_refunded"
    await conn.execute(Q["set_refund_status"], payment_id, status)
