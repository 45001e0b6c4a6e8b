"""The checkout page `/pay/{id}` and its status endpoint, over HTTP against the real database and
Anvil (the browser tests are in test_checkout_browser.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from test_scanner_support import ETH, TREASURY, cancel, chain_entry, mine, send_native

from ctripd.dev import tokens as devtokens
from ctripd.http.auth import create_key
from ctripd.http.keys import WATCHERS
from ctripd.jobs.chainwatch import ChainWatcher
from ctripd.ledger import expiry

STATUS_FIELDS = {
    "id",
    "status",
    "asset",
    "amount",
    "amount_received",
    "amount_remaining",
    "confirmations",
    "expires_at",
    "expires_in",
    "paid_late",
    "refund_status",
}
PRIVATE_ORDER_ID = "order-7f3a-private"
PRIVATE_METADATA = "customer-jane@example.org"
MERCHANT = "acme-shop-merchant"


@dataclass
class Shop:
    """An app client, a merchant key, and its chain watcher."""

    client: Any
    key: dict[str, str]
    pool: asyncpg.Pool

    @property
    def watcher(self) -> ChainWatcher:
        watcher: ChainWatcher = self.client.server.app[WATCHERS]["anvil"]
        return watcher

    async def create(self, amount: str = "1.5", asset: str = "ETH", **extra: Any) -> dict[str, Any]:
        body = {"chain": "anvil", "asset": asset, "amount": amount, **extra}
        resp = await self.client.post("/v1/payments", json=body, headers=self.key)
        assert resp.status == 201, await resp.text()
        payment: dict[str, Any] = await resp.json()
        return payment

    async def status(self, payment_id: str) -> dict[str, Any]:
        resp = await self.client.get(f"/pay/{payment_id}/status")
        assert resp.status == 200
        assert resp.headers["Cache-Control"] == "no-store"
        data: dict[str, Any] = await resp.json()
        return data

    async def page(self, payment_id: str) -> str:
        resp = await self.client.get(f"/pay/{payment_id}")
        assert resp.status == 200
        assert resp.content_type == "text/html"
        text: str = await resp.text()
        return text


async def open_shop(pool: asyncpg.Pool, config: Any, make_client: Any) -> Shop:
    client = await make_client(config)
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO merchants (id, name) VALUES ($1, $1) ON CONFLICT DO NOTHING", MERCHANT
        )
        key, _ = await create_key(conn, "checkout-test", MERCHANT)  # type: ignore[arg-type]
    return Shop(client, {"Authorization": f"Bearer {key}"}, pool)


@pytest.fixture
async def shop(pool, write_config, make_client) -> Shop:  # type: ignore[no-untyped-def]
    return await open_shop(pool, write_config(), make_client)


def data_status(page: str) -> str:
    match = re.search(r'<main id="checkout" data-status="(\w+)"', page)
    assert match is not None
    return match.group(1)


async def test_page_shows_what_the_payer_needs_and_nothing_else(shop: Shop) -> None:
    payment = await shop.create(order_id=PRIVATE_ORDER_ID, metadata={"email": PRIVATE_METADATA})
    resp = await shop.client.get(f"/pay/{payment['id']}")
    assert resp.status == 200 and resp.content_type == "text/html"
    page = await resp.text()

    assert payment["address"] in page
    assert f'href="{payment["payment_uri"]}"' in page
    assert '<h1><span id="amount">1.5</span> <span class="asset">ETH</span></h1>' in page
    assert '<strong id="chain">anvil</strong> (chain id 31337)' in page
    assert '<svg viewBox="0 0 ' in page and 'class="qr"' in page, "the QR code is inline SVG"
    assert data_status(page) == "pending"
    assert re.search(r'<time id="countdown"[^>]*>(59:[0-5]\d|1:00:00)</time>', page)
    for private in (PRIVATE_ORDER_ID, PRIVATE_METADATA, MERCHANT, "ctk_"):
        assert private not in page

    # Nothing loads from elsewhere; scripts and styles run only under this response's nonce.
    assert not re.search(r"\b(src|srcset|action)=", page)
    assert "http://" not in page and "https://" not in page
    csp = resp.headers["Content-Security-Policy"]
    nonce = re.search(r"script-src 'nonce-([A-Za-z0-9_-]+)'", csp)
    assert nonce is not None
    assert f"style-src 'nonce-{nonce.group(1)}'" in csp
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    scripts = re.findall(r"<script([^>]*)>", page)
    assert scripts == [' type="application/json" id="checkout-state"', f' nonce="{nonce.group(1)}"']
    assert re.findall(r"<style([^>]*)>", page) == [f' nonce="{nonce.group(1)}"']
    assert not re.search(r"\s(style|on[a-z]+)=", page), "no inline style or event attributes"
    for name, value in {
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
    }.items():
        assert resp.headers[name] == value

    again = await shop.client.get(f"/pay/{payment['id']}")
    assert again.headers["Content-Security-Policy"] != csp, "a fresh nonce per response"


async def test_status_exposes_only_the_payer_fields(shop: Shop) -> None:
    payment = await shop.create(
        amount="2", expires_in=600, order_id=PRIVATE_ORDER_ID, metadata={"e": PRIVATE_METADATA}
    )
    status = await shop.status(payment["id"])
    assert set(status) == STATUS_FIELDS
    assert {k: v for k, v in status.items() if k != "expires_in"} == {
        "id": payment["id"],
        "status": "pending",
        "asset": "ETH",
        "amount": "2",
        "amount_received": "0",
        "amount_remaining": "2",
        "confirmations": {"done": 0, "required": 2},
        "expires_at": payment["expires_at"],
        "paid_late": False,
        "refund_status": None,
    }
    assert 595 <= status["expires_in"] <= 600


async def test_status_follows_the_chain_watcher(shop: Shop, anvil) -> None:  # type: ignore[no-untyped-def]
    await shop.watcher.run_once()  # the cursor starts at the current head
    payment = await shop.create(amount="1.5")
    pid, address = payment["id"], payment["address"]

    send_native(anvil, address, ETH // 2)
    await shop.watcher.run_once()
    status = await shop.status(pid)
    assert (status["status"], status["amount_received"], status["amount_remaining"]) == (
        "pending",
        "0.5",
        "1",
    )
    page = await shop.page(pid)
    assert data_status(page) == "pending" and 'data-partial="true"' in page

    send_native(anvil, address, ETH)
    await shop.watcher.run_once()
    status = await shop.status(pid)
    assert status["status"] == "detected"
    assert status["confirmations"] == {"done": 1, "required": 2}
    assert status["amount_received"] == "1.5" and status["amount_remaining"] == "0"
    page = await shop.page(pid)
    assert data_status(page) == "detected"
    assert (
        '<span data-field="confirmations_done">1</span> of'
        ' <span data-field="confirmations_required">2</span>'
    ) in page

    mine(anvil)
    await shop.watcher.run_once()
    status = await shop.status(pid)
    assert status["status"] == "confirmed" and status["paid_late"] is False
    assert status["confirmations"] == {"done": 2, "required": 2}
    assert data_status(await shop.page(pid)) == "confirmed"


async def test_canceled_and_expired_payments(shop: Shop, pool) -> None:  # type: ignore[no-untyped-def]
    canceled = await shop.create()
    resp = await cancel(shop.client, canceled["id"], shop.key)
    assert resp.status == 200
    assert (await shop.status(canceled["id"]))["status"] == "canceled"
    assert data_status(await shop.page(canceled["id"])) == "canceled"

    late = await shop.create()
    await pool.execute(
        "UPDATE payments SET expires_at = now() - interval '1 second' WHERE id = $1", late["id"]
    )
    await shop.watcher.run_once()  # expiry waits for the scanner to catch up
    assert await expiry.run_once(pool, operator_url=True) == 1
    status = await shop.status(late["id"])
    assert (status["status"], status["expires_in"]) == ("expired", 0)
    page = await shop.page(late["id"])
    assert data_status(page) == "expired" and '<time id="countdown"' in page


async def test_a_refunded_payment_says_so(shop: Shop, pool) -> None:  # type: ignore[no-untyped-def]
    payment = await shop.create()
    await pool.execute(
        "UPDATE payments SET status = 'confirmed', refund_status = 'refunded' WHERE id = $1",
        payment["id"],
    )
    assert (await shop.status(payment["id"]))["refund_status"] == "refunded"
    page = await shop.page(payment["id"])
    assert 'data-refund="refunded"' in page and "The merchant refunded this payment." in page


@pytest.mark.parametrize(
    "payment_id",
    [
        "pay_" + "0" * 32,  # well formed, unknown
        "pay_" + "A" * 32,
        "pay_123",
        "nope",
        "%3Cscript%3Ealert(1)%3C%2Fscript%3E",
        "pay_" + "0" * 32 + "%00",
    ],
)
async def test_unknown_or_malformed_ids_get_a_plain_404_page(shop: Shop, payment_id: str) -> None:
    resp = await shop.client.get(f"/pay/{payment_id}")
    assert resp.status == 404 and resp.content_type == "text/html"
    page = await resp.text()
    assert "<h1>Payment not found</h1>" in page
    assert "<script" not in page and "alert" not in page
    assert resp.headers["Content-Security-Policy"].startswith("default-src 'none'")
    resp = await shop.client.get(f"/pay/{payment_id}/status")
    assert resp.status == 404 and resp.content_type == "application/problem+json"


async def test_values_from_the_configuration_are_escaped(  # type: ignore[no-untyped-def]
    pool, write_config, make_client, anvil
) -> None:
    symbol = "<b>T&T'\"</b>"
    token = devtokens.deploy_token(anvil.url, "erc20_6", TREASURY)
    tokens = {symbol: {"address": token, "decimals": 6}}
    config = write_config(chains=[chain_entry(anvil, tokens=tokens)])
    shop = await open_shop(pool, config, make_client)
    payment = await shop.create(amount="3", asset=symbol)
    page = await shop.page(payment["id"])
    assert "<b>" not in page and "T&T" not in page
    assert "&lt;b&gt;T&amp;T&#x27;&quot;&lt;/b&gt;" in page
    # The state handed to the script keeps the symbol, escaped for a <script> element.
    assert '"asset":"\\u003cb\\u003eT\\u0026T\'\\"\\u003c/b\\u003e"' in page
    uri = payment["payment_uri"]
    assert "&" in uri and f'href="{uri.replace("&", "&amp;")}"' in page
    assert f"Token contract <code>{token}</code>" in page
