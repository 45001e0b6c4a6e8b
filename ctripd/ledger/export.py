"""Exports for the books: one CSV row per payment (or per transfer) with the fiat price, the
locked rates, asset amounts, confirmation time, sweep transactions and their fees."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from datetime import datetime
from decimal import Decimal

import asyncpg

from ctripd.db import queries
from ctripd.formats import iso
from ctripd.ledger.objects import fiat_places
from ctripd.money import fiat_string, fiat_value, scaled, to_decimal_string, unscaled

Q = queries("export")
FQ = queries("fiat")

PAYMENT_COLUMNS = (
    "payment_id",
    "merchant",
    "order_id",
    "status",
    "created_at",
    "expires_at",
    "confirmed_at",
    "paid_late",
    "price",
    "currency",
    "price_received",
    "locked_rates",
    "chain",
    "asset",
    "amount",
    "amount_received",
    "amounts_received",
    "sweep_txs",
    "sweep_fees_base_units",
)
TRANSFER_COLUMNS = (
    "payment_id",
    "merchant",
    "order_id",
    "chain",
    "tx_hash",
    "log_index",
    "kind",
    "block_number",
    "from",
    "asset",
    "token_address",
    "amount",
    "amount_base_units",
    "count",
    "status",
    "locked_rate",
    "currency",
    "value",
)


def _received(option: asyncpg.Record) -> str:
    amount = to_decimal_string(int(option["received"]), option["decimals"])
    return f"{option['chain']}:{option['asset']}={amount}"


def _fiat(value: Decimal | None, price: Decimal | None) -> str:
    """A fiat sum as the payment object shows it: rounded down to the price's decimals."""
    if value is None or price is None:
        return ""
    return fiat_string(scaled(value), fiat_places(price))


def _decimal(value: object) -> str:
    return "" if value is None else str(value)


async def export_csv(
    conn: asyncpg.Pool | asyncpg.Connection,
    merchant: str | None,
    start: datetime,
    end: datetime,
    *,
    transfers: bool,
) -> str:
    """The CSV text of the payments created in [start, end), or of their transfers."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if transfers:
        writer.writerow(TRANSFER_COLUMNS)
        for t in await conn.fetch(Q["export_transfers"], merchant, start, end):
            decimals, rate, amount = t["decimals"], t["locked_rate"], int(t["amount"])
            value = ""
            if rate is not None and decimals is not None and t["status"] == "live":
                value = str(unscaled(fiat_value(amount, rate, decimals)))
            writer.writerow(
                (
                    t["payment_id"],
                    t["merchant"],
                    t["order_id"] or "",
                    t["chain"],
                    t["tx_hash"],
                    t["log_index"],
                    t["kind"],
                    t["block_number"],
                    t["from_address"],
                    t["asset"] or "",
                    t["token_address"] or "",
                    to_decimal_string(amount, decimals) if decimals is not None else "",
                    amount,
                    t["transfer_count"],
                    t["status"],
                    _decimal(rate),
                    t["price_currency"] if rate is not None else "",
                    value,
                )
            )
        return out.getvalue()
    rows = await conn.fetch(Q["export_payments"], merchant, start, end)
    options: dict[str, list[asyncpg.Record]] = defaultdict(list)
    priced = [r["id"] for r in rows if r["price_amount"] is not None]
    if priced:
        for o in await conn.fetch(FQ["options_of_payments"], priced):
            options[o["payment_id"]].append(o)
    writer.writerow(PAYMENT_COLUMNS)
    for p in rows:
        decimals = p["decimals"]
        own = options[p["id"]]
        writer.writerow(
            (
                p["id"],
                p["merchant"],
                p["order_id"] or "",
                p["status"],
                iso(p["created_at"]),
                iso(p["expires_at"]),
                iso(p["confirmed_at"]) or "",
                str(p["paid_late"]).lower(),
                _decimal(p["price_amount"]),
                p["price_currency"] or "",
                _fiat(p["price_received"], p["price_amount"]),
                ";".join(f"{o['chain']}:{o['asset']}={o['rate']}" for o in own if o["rate"]),
                p["chain"],
                p["asset"],
                to_decimal_string(int(p["amount"]), decimals),
                to_decimal_string(int(p["amount_received"]), decimals),
                ";".join(_received(o) for o in own if int(o["received"])),
                p["sweep_txs"] or "",
                _decimal(p["sweep_fees"]),
            )
        )
    return out.getvalue()
