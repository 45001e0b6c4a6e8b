"""Payments priced in a fiat currency (SPEC §15): their accepted options with the locked
quotes, and the insert of such a payment."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import orjson

from ctripd.chain.wallet import Wallet
from ctripd.db import queries
from ctripd.formats import new_event_id, new_payment_id
from ctripd.ledger.merchants import binding
from ctripd.ledger.objects import render_payment
from ctripd.ledger.payments import NewPayment

Q = queries("fiat")


@dataclass(frozen=True, slots=True)
class Option:
    """One accepted chain and asset of a fiat payment with its locked quote, or without one
    (`unavailable`: why)."""

    chain: str
    chain_id: int
    asset: str
    token_address: str | None
    decimals: int
    confirmations_required: int
    amount: int | None = None
    rate: Decimal | None = None
    sources: list[dict[str, str]] | None = None
    fetched_at: datetime | None = None
    unavailable: str | None = None

    def row(self, payment_id: str, position: int) -> dict[str, Any]:
        """As the payment_options row reads, for rendering before it is written."""
        return {
            "payment_id": payment_id,
            "position": position,
            "chain": self.chain,
            "chain_id": self.chain_id,
            "asset": self.asset,
            "token_address": self.token_address,
            "decimals": self.decimals,
            "confirmations_required": self.confirmations_required,
            "amount": self.amount,
            "rate": self.rate,
            "sources": self.sources,
            "fetched_at": self.fetched_at,
            "unavailable": self.unavailable,
            "received": 0,
            "confirmed": 0,
        }


async def insert_fiat_payment(
    conn: asyncpg.Connection | asyncpg.Pool,
    wallet: Wallet,
    new: NewPayment,
    price: Decimal,
    currency: str,
    options: list[Option],
    index: int,
    *,
    operator_url: bool,
) -> dict[str, Any] | None:
    """As `payments.insert_payment`, for a payment priced in fiat: the payment (in the asset
    columns: its first quoted option), its options and its `payment.created` event, in one
    statement. None when the merchant already used this idempotency key."""
    now = datetime.now(UTC)
    address = wallet.address(index)
    payment_id = new_payment_id()
    row: dict[str, Any] = {
        "id": payment_id,
        "merchant": new.merchant,
        "chain": new.chain,
        "chain_id": new.chain_id,
        "asset": new.asset,
        "token_address": new.token_address,
        "decimals": new.decimals,
        "amount": new.amount,
        "address": address,
        "status": "pending",
        "amount_received": 0,
        "amount_confirmed": 0,
        "paid_late": False,
        "confirmations_required": new.confirmations_required,
        "order_id": new.order_id,
        "metadata": new.metadata,
        "created_at": now,
        "expires_at": now + timedelta(seconds=new.expires_in),
        "detected_at": None,
        "confirmed_at": None,
        "head": None,
        "price_amount": price,
        "price_currency": currency,
        "price_received": Decimal(0),
        "price_confirmed": Decimal(0),
    }
    rows = [o.row(payment_id, i) for i, o in enumerate(options)]
    payment = render_payment(row, [], None, options=rows)
    event_id = new_event_id()
    payload = {
        "id": event_id,
        "type": "payment.created",
        "created_at": payment["created_at"],
        "merchant": new.merchant,
        "data": {"payment": payment},
    }
    inserted = await conn.fetchval(
        Q["insert_fiat_payment_with_event"],
        payment_id,
        new.merchant,
        new.chain,
        new.chain_id,
        new.asset,
        new.token_address,
        new.decimals,
        new.amount,
        address,
        index,
        new.confirmations_required,
        new.order_id,
        new.metadata_json,
        new.idempotency_key,
        new.request_hash,
        now,
        row["expires_at"],
        event_id,
        orjson.dumps(payload).decode(),
        binding(wallet, payment_id, new.merchant, new.chain, index),
        operator_url,
        price,
        currency,
        [o.chain for o in options],
        [o.chain_id for o in options],
        [o.asset for o in options],
        [o.token_address for o in options],
        [o.decimals for o in options],
        [o.confirmations_required for o in options],
        [o.amount for o in options],
        [o.rate for o in options],
        [orjson.dumps(o.sources).decode() if o.sources is not None else None for o in options],
        [o.fetched_at for o in options],
        [o.unavailable for o in options],
    )
    return payment if inserted is not None else None
