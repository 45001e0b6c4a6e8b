"""The payment object of the API, the CLI and webhook payloads, and the reads that build it."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import asyncpg

from ctripd.db import Conn, queries
from ctripd.formats import iso
from ctripd.money import fiat_string, fiat_value, scaled, to_decimal_string

Q = queries("payments")
FQ = queries("fiat")

STATUSES = ("pending", "detected", "confirmed", "expired", "canceled")
# Transfer rows a payment object carries, the latest: its size stays bounded however many
# arrive; the full list is paged at GET /v1/payments/{id}/transfers.
LATEST_TRANSFERS = 10


def payment_uri(address: str, chain_id: int, token_address: str | None, units: int) -> str:
    """EIP-681 URI a wallet can pay from."""
    if token_address is None:
        return f"ethereum:{address}@{chain_id}?value={units}"
    return f"ethereum:{token_address}@{chain_id}/transfer?address={address}&uint256={units}"


def confirmations(head: int | None, block_number: int, status: str) -> int:
    if status != "live" or head is None or head < block_number:
        return 0
    return head - block_number + 1


def same_asset(transfer: asyncpg.Record, payment: asyncpg.Record | dict[str, Any]) -> bool:
    """Whether a transfer is in its payment's asset, the only one its sums count."""
    return (transfer["token_address"] or "").lower() == (payment["token_address"] or "").lower()


def stored_asset(row: asyncpg.Record | dict[str, Any]) -> tuple[str, int] | None:
    """(symbol, decimals) recorded with a transfer; None on a row from before migration 0006
    that it could not backfill."""
    return (row["asset"], row["decimals"]) if row["decimals"] is not None else None


def payment_asset_of(
    payment: asyncpg.Record | dict[str, Any], transfer: asyncpg.Record
) -> tuple[str, int] | None:
    """A transfer's stored asset; a row recorded without one, in the payment's asset, has the
    payment's (crediting always stores it, but it is not a column constraint)."""
    stored = stored_asset(transfer)
    if stored is None and same_asset(transfer, payment):
        return payment["asset"], payment["decimals"]
    return stored


def render_transfer(
    row: asyncpg.Record | dict[str, Any], asset: tuple[str, int] | None, head: int | None
) -> dict[str, Any]:
    """The transfer object, in its own `asset` (symbol, decimals), which may be another than its
    payment's; with the asset unknown, `asset`, `decimals` and `amount` are null. A dust
    aggregate (kind `dust`) stands for `count` transfers of its block, named by the last."""
    amount = int(row["amount"])
    symbol, decimals = asset if asset is not None else (None, None)
    return {
        "chain": row["chain"],
        "tx_hash": row["tx_hash"],
        "log_index": row["log_index"],
        "kind": row["kind"],
        "block_number": row["block_number"],
        "block_hash": row["block_hash"],
        "from": row["from_address"],
        "asset": symbol,
        "token_address": row["token_address"],
        "decimals": decimals,
        "amount": to_decimal_string(amount, decimals) if decimals is not None else None,
        "amount_base_units": str(amount),
        "confirmations": confirmations(head, row["block_number"], row["status"]),
        "status": row["status"],
        "count": row["transfer_count"],
    }


def render_summary(
    payment: asyncpg.Record | dict[str, Any], groups: Sequence[asyncpg.Record], shown: int
) -> dict[str, Any]:
    """Counts and sums of all of a payment's transfers, from its `transfer_summaries` rows:
    live transfers per chain and asset (the payment's own first; funds on another chain are
    held, never counted), dust among them, orphaned ones, and whether there are more rows than
    the `shown` latest."""
    assets: dict[tuple[bool, str, str], dict[str, Any]] = {}
    totals = {"count": 0, "dust_count": 0, "orphaned_count": 0}
    for g in groups:
        transfers = int(g["transfers"])
        if g["status"] != "live":
            totals["orphaned_count"] += transfers
            continue
        token = g["token"] or ""
        entry = assets.setdefault(
            (g["chain"] != payment["chain"], g["chain"], token),
            {
                "chain": g["chain"],
                "asset": payment_asset_of(payment, g),
                "token_address": g["token_address"],
            },
        )
        entry["count"] = entry.get("count", 0) + transfers
        entry["dust_count"] = entry.get("dust_count", 0) + (transfers if g["dust"] else 0)
        entry["units"] = entry.get("units", 0) + int(g["amount"])
        totals["count"] += transfers
        totals["dust_count"] += transfers if g["dust"] else 0
    own = (payment["token_address"] or "").lower()
    return {
        **totals,
        "assets": [
            _asset_total(assets[key])
            for key in sorted(assets, key=lambda key: (key[0], key[2] != own, key[1], key[2]))
        ],
        "has_more": sum(int(g["rows"]) for g in groups) > shown,
    }


def _asset_total(entry: dict[str, Any]) -> dict[str, Any]:
    symbol, decimals = entry["asset"] or (None, None)
    units: int = entry["units"]
    return {
        "chain": entry["chain"],
        "asset": symbol,
        "token_address": entry["token_address"],
        "decimals": decimals,
        "count": entry["count"],
        "dust_count": entry["dust_count"],
        "amount": to_decimal_string(units, decimals) if decimals is not None else None,
        "amount_base_units": str(units),
    }


def fiat_places(price: Decimal) -> int:
    """Decimals fiat amounts of a price are shown with: the price's own, at least 2."""
    exponent = price.normalize().as_tuple().exponent
    return max(2, -exponent if isinstance(exponent, int) else 0)


def render_price(payment: asyncpg.Record | dict[str, Any]) -> dict[str, Any] | None:
    """The fiat view of a payment priced in fiat (None otherwise): the price and what arrived
    at the locked rates, rounded down to the price's decimals."""
    price = payment.get("price_amount")
    if price is None:
        return None
    places = fiat_places(price)
    due, received = scaled(price), scaled(payment["price_received"])
    confirmed = scaled(payment["price_confirmed"])
    return {
        "amount": fiat_string(due, places),
        "currency": payment["price_currency"],
        "amount_received": fiat_string(received, places),
        "amount_confirmed": fiat_string(confirmed, places),
        "amount_overpaid": fiat_string(max(0, received - due), places),
        "amount_remaining": fiat_string(max(0, due - received), places),
    }


def render_option(
    payment: asyncpg.Record | dict[str, Any], option: asyncpg.Record | dict[str, Any]
) -> dict[str, Any]:
    """One accepted option of a fiat payment: its locked quote and asset amount with the URI a
    wallet pays it from, what arrived in it; or, when it could not be quoted, the problem."""
    decimals: int = option["decimals"]
    received, confirmed = int(option["received"]), int(option["confirmed"])
    rendered: dict[str, Any] = {
        "chain": option["chain"],
        "chain_id": option["chain_id"],
        "asset": option["asset"],
        "token_address": option["token_address"],
        "decimals": decimals,
        "confirmations_required": option["confirmations_required"],
        "amount_received": to_decimal_string(received, decimals),
        "amount_received_base_units": str(received),
        "amount_confirmed": to_decimal_string(confirmed, decimals),
        "amount_confirmed_base_units": str(confirmed),
    }
    if option["rate"] is None:
        return {
            **rendered,
            "available": False,
            "problem": {
                "type": "tag:ctripd,2026:problem:rates-unavailable",
                "title": "No valid exchange rate",
                "status": 503,
                "detail": option["unavailable"],
            },
        }
    amount, rate = int(option["amount"]), option["rate"]
    places = fiat_places(payment["price_amount"])
    return {
        **rendered,
        "available": True,
        "amount": to_decimal_string(amount, decimals),
        "amount_base_units": str(amount),
        "payment_uri": payment_uri(
            payment["address"], option["chain_id"], option["token_address"], amount
        ),
        "rate": str(rate),
        "quote": {
            "rate": str(rate),
            "currency": payment["price_currency"],
            "sources": option["sources"],
            "fetched_at": iso(option["fetched_at"]),
            "locked_until": iso(payment["expires_at"]),
        },
        "value_received": fiat_string(fiat_value(received, rate, decimals), places),
    }


def render_payment(
    payment: asyncpg.Record | dict[str, Any],
    transfers: list[asyncpg.Record],
    sweep: asyncpg.Record | None,
    summary: Sequence[asyncpg.Record] = (),
    options: Sequence[asyncpg.Record | dict[str, Any]] = (),
) -> dict[str, Any]:
    """The payment object; `transfers` are its latest rows, oldest first, `summary` its
    `transfer_summaries` rows and `options` its payment_options rows (priced in fiat)."""
    decimals: int = payment["decimals"]
    amount = int(payment["amount"])
    received = int(payment["amount_received"])
    confirmed = int(payment["amount_confirmed"])

    def dec(units: int) -> str:
        return to_decimal_string(units, decimals)

    return {
        "id": payment["id"],
        "merchant": payment["merchant"],
        "chain": payment["chain"],
        "chain_id": payment["chain_id"],
        "asset": payment["asset"],
        "token_address": payment["token_address"],
        "decimals": decimals,
        "amount": dec(amount),
        "amount_base_units": str(amount),
        "address": payment["address"],
        "payment_uri": payment_uri(
            payment["address"], payment["chain_id"], payment["token_address"], amount
        ),
        "status": payment["status"],
        "amount_received": dec(received),
        "amount_received_base_units": str(received),
        "amount_confirmed": dec(confirmed),
        "amount_confirmed_base_units": str(confirmed),
        "amount_overpaid": dec(max(0, received - amount)),
        "amount_overpaid_base_units": str(max(0, received - amount)),
        "paid_late": payment["paid_late"],
        "confirmations_required": payment["confirmations_required"],
        "transfers": [
            render_transfer(t, payment_asset_of(payment, t), t["head"]) for t in transfers
        ],
        "transfer_summary": render_summary(payment, summary, len(transfers)),
        "order_id": payment["order_id"],
        "metadata": payment["metadata"],
        "created_at": iso(payment["created_at"]),
        "expires_at": iso(payment["expires_at"]),
        "detected_at": iso(payment["detected_at"]),
        "confirmed_at": iso(payment["confirmed_at"]),
        "sweep": {
            "status": sweep["status"] if sweep else "none",
            "tx_hash": sweep["tx_hash"] if sweep else None,
        },
        # partially_refunded / refunded: refunds gave back part or all of a confirmed
        # payment's own amount (ledger.refunds); None otherwise.
        "refund_status": payment.get("refund_status"),
        "price": render_price(payment),
        "options": [render_option(payment, o) for o in options],
    }


async def load_payment(conn: Conn | asyncpg.Pool, payment_id: str) -> dict[str, Any] | None:
    """The payment object, or None if no such payment. Callers check the merchant."""
    row = await conn.fetchrow(Q["payment_by_id"], payment_id)
    if row is None:
        return None
    (rendered,) = await render_rows(conn, [row])
    return rendered


async def render_rows(
    conn: Conn | asyncpg.Pool, rows: list[asyncpg.Record]
) -> list[dict[str, Any]]:
    """The payment objects of payment rows (with their chain's `head`), in their order; the
    latest transfers, transfer summaries and sweeps of all of them are read in three queries."""
    ids = [r["id"] for r in rows]
    transfers: dict[str, list[asyncpg.Record]] = defaultdict(list)
    summaries: dict[str, list[asyncpg.Record]] = defaultdict(list)
    sweeps: dict[str, asyncpg.Record] = {}
    options: dict[str, list[asyncpg.Record]] = defaultdict(list)
    priced = [r["id"] for r in rows if r["price_amount"] is not None]
    if priced:
        for o in await conn.fetch(FQ["options_of_payments"], priced):
            options[o["payment_id"]].append(o)
    if ids:
        for t in await conn.fetch(Q["latest_transfers_of_payments"], ids, LATEST_TRANSFERS):
            transfers[t["payment_id"]].insert(0, t)  # newest first: oldest first once all in
        for g in await conn.fetch(Q["transfer_summaries"], ids):
            summaries[g["payment_id"]].append(g)
        sweeps = {s["payment_id"]: s for s in await conn.fetch(Q["sweeps_of_payments"], ids)}
    return [
        render_payment(
            r, transfers[r["id"]], sweeps.get(r["id"]), summaries[r["id"]], options[r["id"]]
        )
        for r in rows
    ]


async def load_payments(conn: Conn | asyncpg.Pool, ids: list[str]) -> dict[str, dict[str, Any]]:
    """`load_payment` for several payments at once (three queries in all), by id."""
    if not ids:
        return {}
    rows = await conn.fetch(Q["payments_by_ids"], ids)
    rendered = await render_rows(conn, rows)
    return {r["id"]: p for r, p in zip(rows, rendered, strict=True)}


async def transfers_page(
    conn: Conn | asyncpg.Pool, payment_id: str, limit: int, after: tuple[int, int] | None
) -> tuple[str, list[dict[str, Any]], tuple[int, int] | None] | None:
    """A page of a payment's transfers, newest first, after the (block, row id) position where
    the previous page ended: (the payment's merchant, the page, the position after it or None
    on the last page); None if no such payment. Callers check the merchant."""
    payment = await conn.fetchrow(Q["payment_by_id"], payment_id)
    if payment is None:
        return None
    block, row_id = after or (None, None)
    rows = await conn.fetch(Q["transfers_page"], payment_id, block, row_id, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    page = [render_transfer(t, payment_asset_of(payment, t), t["head"]) for t in rows]
    return payment["merchant"], page, (rows[-1]["block_number"], rows[-1]["id"]) if more else None
