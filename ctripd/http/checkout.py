"""The payer's checkout page `GET /pay/{id}` and its public status `GET /pay/{id}/status`.

Public (no API key), so both show only what a payer needs: amount, asset, chain, deposit address,
EIP-681 URI, status, confirmations and expiry; never the merchant, order id or metadata, which
the query behind them does not even read. The page is one server-rendered HTML document: the QR
code is inline SVG made here (segno), CSS and script are inline under a nonce-based
Content-Security-Policy, nothing loads from another origin, and every value is HTML-escaped.
The script polls the status endpoint and switches between states without a reload.

A payment priced in fiat shows its price, and each quoted option (chain and asset) as a choice,
with the unquoted ones shown unavailable; picking one (radio buttons: CSS alone shows the
chosen option's panel, no script needed) shows its amount, QR code and the deposit address. Its
amounts to go are in the currency and, per option, in the option's asset; the countdown is the
quotes' lock, which ends with the payment's window.
"""

from __future__ import annotations

import functools
import html
import importlib.resources
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from string import Template
from typing import Any

import asyncpg
import orjson
import segno
from aiohttp import web

from ctripd.db import queries
from ctripd.formats import PAYMENT_ID, iso
from ctripd.http.keys import POOL
from ctripd.http.problems import Problem
from ctripd.ledger.objects import payment_uri, render_price
from ctripd.money import scaled, to_decimal_string, units_due, unscaled

Q = queries("checkout")

_FILES = importlib.resources.files(__package__)
# Headers of every checkout answer: never cached (the status changes), never framed, no referrer
# (the URL is the payment's capability), no content sniffing.
_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}
_NOT_FOUND_CSP = "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
_NOT_FOUND_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>Payment not found</title></head>
<body><h1>Payment not found</h1>
<p>There is no payment at this address. Check the link you were given, or ask the merchant
for a new one.</p></body></html>
"""


@functools.cache
def _asset(name: str) -> str:
    return _FILES.joinpath(name).read_text()


@functools.cache
def _template(name: str = "checkout") -> Template:
    return Template(_asset(f"templates/{name}.html"))


def _csp(nonce: str) -> str:
    return (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


def confirmations_done(status: str, row: asyncpg.Record) -> int:
    """Confirmations of the newest transfer counted in `row` (a payment, or an option of one
    priced in fiat), capped at those required."""
    required: int = row["confirmations_required"]
    if status == "confirmed":
        return required
    newest, scanned = row["newest_block"], row["scanned_block"]
    if newest is None or scanned is None or scanned < newest:
        return 0
    return min(required, int(scanned) - int(newest) + 1)


def _confirmations(status: str, row: asyncpg.Record) -> dict[str, int]:
    return {"done": confirmations_done(status, row), "required": row["confirmations_required"]}


def public_status(
    row: asyncpg.Record, now: datetime, options: Sequence[asyncpg.Record] = ()
) -> dict[str, Any]:
    """The status document: what the payer's page needs to follow the payment (priced in
    fiat: with `options`, its `checkout_options` rows)."""
    amount, received = int(row["amount"]), int(row["amount_received"])
    decimals: int = row["decimals"]
    status = {
        "id": row["id"],
        "status": row["status"],
        "asset": row["asset"],
        "amount": to_decimal_string(amount, decimals),
        "amount_received": to_decimal_string(received, decimals),
        "amount_remaining": to_decimal_string(max(0, amount - received), decimals),
        "confirmations": _confirmations(row["status"], row),
        "expires_at": iso(row["expires_at"]),
        # Seconds left by the server's clock, so a phone with a wrong clock counts down right.
        "expires_in": max(0, int((row["expires_at"] - now).total_seconds())),
        "paid_late": row["paid_late"],
        # partially_refunded / refunded, once the merchant refunded a confirmed payment.
        "refund_status": row["refund_status"],
    }
    if row["price_amount"] is not None:
        status |= _fiat_status(row, options)
    return status


def _fiat_status(row: asyncpg.Record, options: Sequence[asyncpg.Record]) -> dict[str, Any]:
    """A payment priced in fiat: its amounts in the currency (`asset`), the confirmations of
    the option furthest from them, and each option with what is still to send in it."""
    price = render_price(row)
    assert price is not None
    remaining = unscaled(max(0, scaled(row["price_amount"]) - scaled(row["price_received"])))
    quoted = [o for o in options if o["rate"] is not None]
    paid = [o for o in quoted if int(o["received"]) > 0]
    waiting = [o for o in paid if int(o["confirmed"]) < int(o["received"])]
    shown = waiting or paid or quoted
    furthest = max(
        shown,
        key=lambda o: o["confirmations_required"] - confirmations_done(row["status"], o),
        default=row,
    )
    return {
        "asset": price["currency"],
        "amount": price["amount"],
        "amount_received": price["amount_received"],
        "amount_remaining": price["amount_remaining"],
        "confirmations": _confirmations(row["status"], furthest),
        "options": [_option_status(row["address"], o, remaining) for o in options],
    }


def _option_status(address: str, option: asyncpg.Record, remaining: Decimal) -> dict[str, Any]:
    """One option as the payer sees it: unavailable (no quote), or its amount, what is still
    to send in it (the price remaining at its locked rate, rounded up) and its EIP-681 URI."""
    shown: dict[str, Any] = {
        "chain": option["chain"],
        "chain_id": option["chain_id"],
        "asset": option["asset"],
        "token_address": option["token_address"],
        "available": option["rate"] is not None,
    }
    if option["rate"] is None:
        return shown
    decimals: int = option["decimals"]
    amount = int(option["amount"])
    left = units_due(remaining, option["rate"], decimals) if remaining > 0 else 0
    return shown | {
        "amount": to_decimal_string(amount, decimals),
        "amount_remaining": to_decimal_string(left, decimals),
        "rate": str(option["rate"]),
        "payment_uri": payment_uri(address, option["chain_id"], option["token_address"], amount),
    }


def qr_svg(uri: str) -> str:
    """The URI as a QR code in inline SVG (scalable: no width/height, only a viewBox)."""
    code = segno.make(uri, error="m")
    svg: str = code.svg_inline(
        scale=1, border=4, omitsize=True, dark="#000", light="#fff", svgclass="qr"
    )
    return svg


def countdown(seconds: int) -> str:
    """`1:02:03` or `2:03`, as the page's script writes it."""
    hours, rest = divmod(max(0, seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02}:{secs:02}" if hours else f"{minutes}:{secs:02}"


def _script_json(data: Any) -> str:
    """JSON safe inside a <script> element: no `<`, `>` or `&` that could end or alter it."""
    text = orjson.dumps(data).decode()
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _token_note(token: str | None) -> str:
    return f'<p class="token">Token contract <code>{html.escape(token)}</code></p>' if token else ""


def _plain_pay(row: asyncpg.Record, status: dict[str, Any]) -> tuple[str, str]:
    """(where, pay section) of a payment in asset units."""
    esc = html.escape
    uri = payment_uri(row["address"], row["chain_id"], row["token_address"], int(row["amount"]))
    where = (
        f'<p class="chain">on <strong id="chain">{esc(row["chain"])}</strong>'
        f" (chain id {row['chain_id']})</p>"
    )
    pay = _template("checkout-pay").substitute(
        amount=esc(status["amount"]),
        asset=esc(row["asset"]),
        chain=esc(row["chain"]),
        address=esc(row["address"]),
        uri=esc(uri),
        qr=qr_svg(uri),
        token_note=_token_note(row["token_address"]),
    )
    return where, pay


def _fiat_pay(row: asyncpg.Record, status: dict[str, Any]) -> tuple[str, str, str]:
    """(where, pay section, CSS showing the chosen option's panel) of a payment priced in
    fiat. A single available option is chosen already."""
    esc = html.escape
    options: list[dict[str, Any]] = status["options"]
    available = [i for i, o in enumerate(options) if o["available"]]
    choices, panels, css = [], [], []
    for i, o in enumerate(options):
        asset, chain = esc(o["asset"]), esc(o["chain"])
        if not o["available"]:
            choices.append(
                _template("checkout-choice").substitute(
                    i=i,
                    attrs=" disabled",
                    amount="",
                    asset=asset,
                    chain=chain,
                    why='<span class="why">unavailable: no exchange rate now</span>',
                )
            )
            continue
        choices.append(
            _template("checkout-choice").substitute(
                i=i,
                attrs=" checked" if available == [i] else "",
                amount=esc(o["amount"]),
                asset=asset,
                chain=chain,
                why="",
            )
        )
        panels.append(
            _template("checkout-option").substitute(
                i=i,
                uri=esc(o["payment_uri"]),
                qr=qr_svg(o["payment_uri"]),
                amount=esc(o["amount"]),
                remaining=esc(o["amount_remaining"]),
                asset=asset,
                chain=chain,
                chain_id=o["chain_id"],
                token_note=_token_note(o["token_address"]),
            )
        )
        css.append(f"#option-{i}:checked ~ #panel-{i} {{ display: block; }}")
    pay = _template("checkout-options").substitute(
        choices="".join(choices), panels="".join(panels), address=esc(row["address"])
    )
    where = '<p class="chain">in one of the assets below, at rates locked for this payment</p>'
    return where, pay, "\n".join(css)


def render_page(
    row: asyncpg.Record, now: datetime, nonce: str, options: Sequence[asyncpg.Record] = ()
) -> str:
    status = public_status(row, now, options)
    esc = html.escape
    css = ""
    if row["price_amount"] is None:
        where, pay = _plain_pay(row, status)
    else:
        where, pay, css = _fiat_pay(row, status)
    received = int(row["amount_received"]) if row["price_amount"] is None else row["price_received"]
    values = {
        "nonce": nonce,
        "css": _asset("static/checkout.css") + css,
        "js": _asset("static/checkout.js"),
        "state_json": _script_json(status),
        "status": esc(status["status"]),
        "partial": "true" if received > 0 else "false",
        "paid_late": "true" if status["paid_late"] else "false",
        "refund": esc(status["refund_status"] or "none"),
        "amount": esc(status["amount"]),
        "asset": esc(status["asset"]),
        "where": where,
        "pay": pay,
        "amount_received": esc(status["amount_received"]),
        "amount_remaining": esc(status["amount_remaining"]),
        "confirmations_done": esc(str(status["confirmations"]["done"])),
        "confirmations_required": esc(str(status["confirmations"]["required"])),
        "expires_at": esc(status["expires_at"]),
        "countdown_label": "Expires in" if row["price_amount"] is None else "Rates locked for",
        "countdown": esc(countdown(status["expires_in"])),
    }
    return _template().substitute(values)


def _not_found() -> web.Response:
    return web.Response(
        text=_NOT_FOUND_PAGE,
        status=404,
        content_type="text/html",
        headers={**_HEADERS, "Content-Security-Policy": _NOT_FOUND_CSP},
    )


async def _row(request: web.Request) -> tuple[asyncpg.Record | None, list[asyncpg.Record]]:
    """The payment's checkout row (None: no such payment) and, priced in fiat, its options."""
    payment_id = request.match_info["id"]
    if not PAYMENT_ID.fullmatch(payment_id):
        return None, []
    pool = request.app[POOL]
    row: asyncpg.Record | None = await pool.fetchrow(Q["checkout_payment"], payment_id)
    if row is None or row["price_amount"] is None:
        return row, []
    return row, list(await pool.fetch(Q["checkout_options"], payment_id))


async def page(request: web.Request) -> web.Response:
    row, options = await _row(request)
    if row is None:
        return _not_found()
    nonce = secrets.token_urlsafe(18)
    return web.Response(
        text=render_page(row, datetime.now(UTC), nonce, options),
        content_type="text/html",
        headers={**_HEADERS, "Content-Security-Policy": _csp(nonce)},
    )


async def status(request: web.Request) -> web.Response:
    row, options = await _row(request)
    if row is None:
        raise Problem(404, "no such payment", headers=dict(_HEADERS))
    return web.Response(
        body=orjson.dumps(public_status(row, datetime.now(UTC), options)),
        content_type="application/json",
        headers=_HEADERS,
    )


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/pay/{id}", page)
    app.router.add_get("/pay/{id}/status", status)
