"""Payments priced in a fiat currency (SPEC §15): their accepted options with the locked
quotes, and the insert of such a payment."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg
import orjson

from ctripd.chain.wallet import Wallet
from ctripd.db import queries
from ctripd.formats import new_payment_id
from ctripd.ledger.payments import NewPayment, created_payment

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
    payment_id = new_payment_id()
    rows = [o.row(payment_id, i) for i, o in enumerate(options)]
    extra = {
        "price_amount": price,
        "price_currency": currency,
        "price_received": Decimal(0),
        "price_confirmed": Decimal(0),
    }
    payment, args = created_payment(wallet, new, index, payment_id, extra, rows)
    inserted = await conn.fetchval(
        Q["insert_fiat_payment_with_event"],
        *args,
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
