"""Payouts (SPEC §13): a merchant pays someone from the operator's payout wallet. The request
is recorded here with its `payout.created` event; with `[payouts] require_approval` it waits in
`pending_approval` until the operator's CLI approves it (or rejects it); then the sweeper signs
it (`jobs.outgoing`) once the payout wallet holds the whole amount (`pending`, with a reason,
until then: never a partial send) and ends it with `payout.confirmed` or `payout.failed`.

The request is bound by an HMAC under the wallet's approval key to what the authenticated call
recorded (`request_text`), and the operator's approval is another one (`approval_text`): the
signing policy refuses a row a database write created, changed or approved."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from typing import Any

import asyncpg

from ctripd.chain.wallet import Wallet
from ctripd.config import PayoutsConfig
from ctripd.db import Conn, queries
from ctripd.errors import CtripdError, NotFoundError
from ctripd.formats import iso, new_event_id
from ctripd.money import to_base_units, to_decimal_string

Q = queries("payouts")

STATUSES = (
    "pending_approval",
    "pending",
    "signed",
    "broadcast",
    "confirmed",
    "failed",
    "rejected",
)
MAX_LIST = 100
DAY = timedelta(hours=24)


class PayoutRefused(CtripdError):
    """A payout request refused: `status` is the HTTP answer, `field` the request field."""

    def __init__(self, status: int, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.field = field


@dataclass(frozen=True)
class PayoutRequest:
    merchant: str
    chain: str
    asset: str
    decimals: int
    token: str | None
    to: str
    amount: int
    reference: str | None
    idempotency_key: str | None
    request_hash: bytes | None


def new_payout_id() -> str:
    return f"po_{uuid.uuid4().hex}"


def request_text(
    public_id: str, merchant: str, chain: str, token: str | None, to: str, amount: int
) -> str:
    """What a payout's binding signs: every field that decides where funds go, canonical."""
    return (
        f"payout|{public_id}|{merchant}|{chain}|{(token or 'native').lower()}|{to.lower()}|{amount}"
    )


def approval_text(public_id: str, binding: bytes) -> str:
    """What the operator's approval of a payout signs: the payout as its binding fixed it."""
    return f"payout-approval|{public_id}|{binding.hex()}"


async def create(
    pool: asyncpg.Pool,
    wallet: Wallet,
    rules: PayoutsConfig,
    req: PayoutRequest,
    *,
    operator_url: bool,
) -> tuple[dict[str, Any], bool]:
    """Record the payout with its `payout.created` event; returns it and whether it is new."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(Q["merchant_lock"], req.merchant)
        if req.idempotency_key is not None:
            earlier = await conn.fetchrow(
                Q["by_idempotency_key"], req.merchant, req.idempotency_key
            )
            if earlier is not None:
                if bytes(earlier["request_hash"]) != req.request_hash:
                    raise PayoutRefused(
                        409,
                        f"Idempotency-Key already used for payout {earlier['public_id']} with a "
                        "different request",
                        "Idempotency-Key",
                    )
                found = await get(conn, earlier["public_id"], req.merchant)
                assert found is not None
                return found, False
        limit = rules.daily_limit(req.asset)
        if limit is not None:
            places = Decimal(1).scaleb(-req.decimals)
            most = to_base_units(
                str(Decimal(limit).quantize(places, rounding=ROUND_DOWN)), req.decimals
            )
            since = datetime.now(UTC) - DAY
            paid = int(
                await conn.fetchval(Q["paid_today"], req.merchant, req.chain, req.token, since)
            )
            if paid + req.amount > most:
                left = to_decimal_string(max(0, most - paid), req.decimals)
                raise PayoutRefused(
                    422,
                    f"over the daily payout limit of {limit} {req.asset} on {req.chain}: "
                    f"{left} {req.asset} left in the last 24 hours",
                    "amount",
                )
        public_id = new_payout_id()
        binding = wallet.approve(
            request_text(public_id, req.merchant, req.chain, req.token, req.to, req.amount)
        )
        payout_id = await conn.fetchval(
            Q["insert_payout"],
            public_id,
            req.merchant,
            req.chain,
            req.asset,
            req.decimals,
            req.token,
            req.to,
            req.amount,
            req.reference,
            binding,
            "pending_approval" if rules.require_approval else "pending",
            req.idempotency_key,
            req.request_hash,
        )
        payout = await record_event(conn, payout_id, "payout.created", operator_url=operator_url)
    return payout, True


async def record_event(
    conn: Conn, payout_id: int, event_type: str, *, operator_url: bool
) -> dict[str, Any]:
    """The payout's event as it is now, in the caller's transaction; returns the payout."""
    payout = await _one(conn, payout_id)
    event_id = new_event_id()
    now = datetime.now(UTC)
    payload = {
        "id": event_id,
        "type": event_type,
        "created_at": iso(now),
        "merchant": payout["merchant"],
        "data": {"payout": payout},
    }
    await conn.execute(
        Q["insert_event"],
        event_id,
        payout["id"],
        payout["merchant"],
        event_type,
        payload,
        now,
        operator_url,
    )
    return payout


def render(row: asyncpg.Record) -> dict[str, Any]:
    """The payout object of the API, webhooks and CLI."""
    decimals = int(row["decimals"])
    amount = int(row["amount"])
    status = row["status"]
    if status == "signed" and row["broadcast_at"] is not None:
        status = "broadcast"
    return {
        "id": row["public_id"],
        "merchant": row["merchant"],
        "chain": row["chain"],
        "asset": row["asset"],
        "token_address": row["token_address"],
        "decimals": decimals,
        "to": row["to_address"],
        "amount": to_decimal_string(amount, decimals),
        "amount_base_units": str(amount),
        "reference": row["reference"],
        "status": status,
        "reason": row["reason"],
        "from": row["from_address"],
        "tx_hash": row["tx_hash"],
        "block_number": row["block_number"],
        "fee_base_units": None if row["fee"] is None else str(int(row["fee"])),
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
        "approved_at": iso(row["approved_at"]),
        "confirmed_at": iso(row["confirmed_at"]),
    }


async def _rows(
    conn: Conn | asyncpg.Pool,
    *,
    payout_id: int | None = None,
    public_id: str | None = None,
    merchant: str | None = None,
    status: str | None = None,
    after: str | None = None,
    limit: int = MAX_LIST,
) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(Q["payout_rows"], payout_id, public_id, merchant, status, after, limit)
    )


async def _one(conn: Conn | asyncpg.Pool, payout_id: int) -> dict[str, Any]:
    (row,) = await _rows(conn, payout_id=payout_id, limit=1)
    return render(row)


async def get(
    conn: Conn | asyncpg.Pool, public_id: str, merchant: str | None
) -> dict[str, Any] | None:
    rows = await _rows(conn, public_id=public_id, merchant=merchant, limit=1)
    return render(rows[0]) if rows else None


async def page(
    conn: Conn | asyncpg.Pool,
    merchant: str | None,
    *,
    status: str | None = None,
    after: str | None = None,
    limit: int = 20,
) -> tuple[list[dict[str, Any]], bool]:
    """Payouts newest first after the one with id `after`, and whether more follow."""
    rows = await _rows(conn, merchant=merchant, status=status, after=after, limit=limit + 1)
    return [render(r) for r in rows[:limit]], len(rows) > limit


async def decide(
    pool: asyncpg.Pool, wallet: Wallet, public_id: str, approve: bool, *, operator_url: bool
) -> dict[str, Any]:
    """The operator's decision on a payout waiting for approval, with its event."""
    async with pool.acquire() as conn, conn.transaction():
        rows = await _rows(conn, public_id=public_id, limit=1)
        if not rows:
            raise NotFoundError(f"no payout {public_id}")
        row = rows[0]
        if row["status"] != "pending_approval":
            raise CtripdError(f"payout {public_id} is {row['status']}, not pending_approval")
        if approve:
            approval = wallet.approve(approval_text(public_id, bytes(row["binding"])))
            await conn.execute(Q["approve"], row["id"], approval)
            return await record_event(conn, row["id"], "payout.approved", operator_url=operator_url)
        await conn.execute(Q["reject"], row["id"], "rejected by the operator")
        return await record_event(conn, row["id"], "payout.rejected", operator_url=operator_url)
