"""The payer's checkout page `GET /pay/{id}` and its public status `GET /pay/{id}/status`.

Public (no API key), so both show only what a payer needs: amount, asset, chain, deposit address,
EIP-681 URI, status, confirmations and expiry; never the merchant, order id or metadata, which
the query behind them does not even read. The page is one server-rendered HTML document: the QR
code is inline SVG made here (segno), CSS and script are inline under a nonce-based
Content-Security-Policy, nothing loads from another origin, and every value is HTML-escaped.
The script polls the status endpoint and switches between states without a reload.
"""

from __future__ import annotations

import functools
import html
import importlib.resources
import secrets
from datetime import UTC, datetime
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
from ctripd.ledger.objects import payment_uri
from ctripd.money import to_decimal_string

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
def _template() -> Template:
    return Template(_asset("templates/checkout.html"))


def _csp(nonce: str) -> str:
    return (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


def confirmations_done(row: asyncpg.Record) -> int:
    """Confirmations of the newest transfer the payment counts, capped at those required."""
    required: int = row["confirmations_required"]
    if row["status"] == "confirmed":
        return required
    newest, scanned = row["newest_block"], row["scanned_block"]
    if newest is None or scanned is None or scanned < newest:
        return 0
    return min(required, int(scanned) - int(newest) + 1)


def public_status(row: asyncpg.Record, now: datetime) -> dict[str, Any]:
    """The status document: what the payer's page needs to follow the payment."""
    amount, received = int(row["amount"]), int(row["amount_received"])
    decimals: int = row["decimals"]
    return {
        "id": row["id"],
        "status": row["status"],
        "asset": row["asset"],
        "amount": to_decimal_string(amount, decimals),
        "amount_received": to_decimal_string(received, decimals),
        "amount_remaining": to_decimal_string(max(0, amount - received), decimals),
        "confirmations": {
            "done": confirmations_done(row),
            "required": row["confirmations_required"],
        },
        "expires_at": iso(row["expires_at"]),
        # Seconds left by the server's clock, so a phone with a wrong clock counts down right.
        "expires_in": max(0, int((row["expires_at"] - now).total_seconds())),
        "paid_late": row["paid_late"],
        # partially_refunded / refunded, once the merchant refunded a confirmed payment.
        "refund_status": row["refund_status"],
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


def render_page(row: asyncpg.Record, now: datetime, nonce: str) -> str:
    status = public_status(row, now)
    uri = payment_uri(row["address"], row["chain_id"], row["token_address"], int(row["amount"]))
    esc = html.escape
    token = row["token_address"]
    values = {
        "nonce": nonce,
        "css": _asset("static/checkout.css"),
        "js": _asset("static/checkout.js"),
        "state_json": _script_json(status),
        "status": esc(status["status"]),
        "partial": "true" if status["amount_received"] != "0" else "false",
        "paid_late": "true" if status["paid_late"] else "false",
        "refund": esc(status["refund_status"] or "none"),
        "amount": esc(status["amount"]),
        "asset": esc(row["asset"]),
        "chain": esc(row["chain"]),
        "chain_id": esc(str(row["chain_id"])),
        "address": esc(row["address"]),
        "uri": esc(uri),
        "qr": qr_svg(uri),
        "amount_received": esc(status["amount_received"]),
        "amount_remaining": esc(status["amount_remaining"]),
        "confirmations_done": esc(str(status["confirmations"]["done"])),
        "confirmations_required": esc(str(status["confirmations"]["required"])),
        "expires_at": esc(status["expires_at"]),
        "countdown": esc(countdown(status["expires_in"])),
        "token_note": (
            f'<p class="token">Token contract <code>{esc(token)}</code></p>' if token else ""
        ),
    }
    return _template().substitute(values)


def _not_found() -> web.Response:
    return web.Response(
        text=_NOT_FOUND_PAGE,
        status=404,
        content_type="text/html",
        headers={**_HEADERS, "Content-Security-Policy": _NOT_FOUND_CSP},
    )


async def _row(request: web.Request) -> asyncpg.Record | None:
    payment_id = request.match_info["id"]
    if not PAYMENT_ID.fullmatch(payment_id):
        return None
    row: asyncpg.Record | None = await request.app[POOL].fetchrow(Q["checkout_payment"], payment_id)
    return row


async def page(request: web.Request) -> web.Response:
    row = await _row(request)
    if row is None:
        return _not_found()
    nonce = secrets.token_urlsafe(18)
    return web.Response(
        text=render_page(row, datetime.now(UTC), nonce),
        content_type="text/html",
        headers={**_HEADERS, "Content-Security-Policy": _csp(nonce)},
    )


async def status(request: web.Request) -> web.Response:
    row = await _row(request)
    if row is None:
        raise Problem(404, "no such payment", headers=dict(_HEADERS))
    return web.Response(
        body=orjson.dumps(public_status(row, datetime.now(UTC))),
        content_type="application/json",
        headers=_HEADERS,
    )


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/pay/{id}", page)
    app.router.add_get("/pay/{id}/status", status)
