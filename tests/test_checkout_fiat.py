"""The checkout page and its status endpoint for payments priced in fiat (SPEC §10, §15), over
HTTP against the real database and Anvil: the price, one choice per option with its amount and
QR code, unquoted options shown unavailable, what is still to send in each option's asset,
the countdown of the locked quotes (the browser tests are in test_checkout_fiat_browser.py)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from rate_servers import Exchange, exchange_server
from test_checkout import (
    MERCHANT,
    PRIVATE_METADATA,
    PRIVATE_ORDER_ID,
    STATUS_FIELDS,
    Shop,
    data_status,
    open_shop,
)
from test_scanner_support import SENDER, chain_entry, mine

from ctripd.dev import tokens as devtokens
from ctripd.dev.devnet import AnvilProcess

PRICE = {"amount": "25.00", "currency": "USD"}
ACCEPT = ["anvil:TD6", "anvil:USDTL", "anvil:ETH"]


@dataclass
class FiatShop:
    """A shop whose config quotes the test dollars (pegged) and ETH (by an exchange that is
    down: ETH cannot be quoted)."""

    shop: Shop
    tokens: dict[str, str]

    async def create(self, accept: list[str] = ACCEPT, **extra: Any) -> dict[str, Any]:
        body = {"price": PRICE, "accept": accept, **extra}
        resp = await self.shop.client.post("/v1/payments", json=body, headers=self.shop.key)
        assert resp.status == 201, await resp.text()
        payment: dict[str, Any] = await resp.json()
        return payment


@pytest.fixture
async def coinbase() -> AsyncIterator[Exchange]:
    async with exchange_server("coinbase", {"ETH-USD": "2000.00"}) as ex:
        ex.mode = "error"
        yield ex


async def open_fiat_shop(  # type: ignore[no-untyped-def]
    pool: asyncpg.Pool, write_config, make_client, anvil: AnvilProcess, coinbase: Exchange
) -> FiatShop:
    tokens = {
        "TD6": devtokens.deploy_token(anvil.url, "erc20_6", SENDER),
        "USDTL": devtokens.deploy_token(anvil.url, "usdt", SENDER),
    }
    for token in tokens.values():
        devtokens.mint(anvil.url, token, SENDER, 10**30, SENDER)
    rates = {
        "coinbase_url": coinbase.url,
        "timeout": 0.5,
        "pairs": {
            "ETH/USD": {"sources": ["coinbase:ETH-USD"], "min_sources": 1},
            "TD6/USD": {"peg": True},
            "USDTL/USD": {"peg": True},
        },
    }
    chain_tokens = {s: {"address": a, "decimals": 6} for s, a in tokens.items()}
    config = write_config({"rates": rates}, chains=[chain_entry(anvil, tokens=chain_tokens)])
    return FiatShop(await open_shop(pool, config, make_client), tokens)


@pytest.fixture
async def fiat(pool, write_config, make_client, anvil, coinbase) -> FiatShop:  # type: ignore[no-untyped-def]
    return await open_fiat_shop(pool, write_config, make_client, anvil, coinbase)


async def test_status_shows_the_price_and_each_option(fiat: FiatShop) -> None:
    payment = await fiat.create(
        expires_in=600, order_id=PRIVATE_ORDER_ID, metadata={"e": PRIVATE_METADATA}
    )
    status = await fiat.shop.status(payment["id"])
    assert set(status) == STATUS_FIELDS | {"options"}
    td6, usdtl, eth = payment["options"]
    assert {k: v for k, v in status.items() if k != "expires_in"} == {
        "id": payment["id"],
        "status": "pending",
        "asset": "USD",
        "amount": "25.00",
        "amount_received": "0.00",
        "amount_remaining": "25.00",
        "confirmations": {"done": 0, "required": 2},
        "expires_at": payment["expires_at"],
        "paid_late": False,
        "refund_status": None,
        "options": [
            {
                "chain": "anvil",
                "chain_id": 31337,
                "asset": "TD6",
                "token_address": fiat.tokens["TD6"],
                "available": True,
                "amount": "25",
                "amount_remaining": "25",
                "rate": "1",
                "payment_uri": td6["payment_uri"],
            },
            {
                "chain": "anvil",
                "chain_id": 31337,
                "asset": "USDTL",
                "token_address": fiat.tokens["USDTL"],
                "available": True,
                "amount": "25",
                "amount_remaining": "25",
                "rate": "1",
                "payment_uri": usdtl["payment_uri"],
            },
            {
                "chain": "anvil",
                "chain_id": 31337,
                "asset": "ETH",
                "token_address": None,
                "available": False,
            },
        ],
    }
    # The countdown is the quotes' lock: they are locked for the payment's window.
    assert td6["quote"]["locked_until"] == status["expires_at"]
    assert eth["available"] is False
    assert 595 <= status["expires_in"] <= 600
    text = str(status)
    for private in (PRIVATE_ORDER_ID, PRIVATE_METADATA, MERCHANT, "peg", "sources"):
        assert private not in text


async def test_status_follows_a_payment_in_two_assets(fiat: FiatShop, anvil) -> None:  # type: ignore[no-untyped-def]
    shop = fiat.shop
    await shop.watcher.run_once()  # the cursor starts at the current head
    payment = await fiat.create()
    pid, address = payment["id"], payment["address"]

    devtokens.token_transfer(anvil.url, fiat.tokens["TD6"], SENDER, address, 10_000_000)
    await shop.watcher.run_once()
    status = await shop.status(pid)
    assert (status["status"], status["amount_received"], status["amount_remaining"]) == (
        "pending",
        "10.00",
        "15.00",
    )
    assert [o.get("amount_remaining") for o in status["options"]] == ["15", "15", None]
    page = await shop.page(pid)
    assert data_status(page) == "pending" and 'data-partial="true"' in page
    assert '<span data-field="remaining-1">15</span> USDTL' in page

    devtokens.token_transfer(anvil.url, fiat.tokens["USDTL"], SENDER, address, 15_000_000)
    await shop.watcher.run_once()
    status = await shop.status(pid)
    assert (status["status"], status["amount_remaining"]) == ("detected", "0.00")
    # The USDTL transfer is the one still waiting for its confirmations.
    assert status["confirmations"] == {"done": 1, "required": 2}
    assert [o.get("amount_remaining") for o in status["options"]] == ["0", "0", None]

    mine(anvil)
    await shop.watcher.run_once()
    status = await shop.status(pid)
    assert (status["status"], status["amount_received"]) == ("confirmed", "25.00")
    assert status["confirmations"] == {"done": 2, "required": 2}
    assert data_status(await shop.page(pid)) == "confirmed"


async def test_page_offers_a_choice_per_option(fiat: FiatShop) -> None:
    payment = await fiat.create()
    resp = await fiat.shop.client.get(f"/pay/{payment['id']}")
    assert resp.status == 200
    page = await resp.text()
    td6, usdtl, _ = payment["options"]

    assert '<h1><span id="amount">25.00</span> <span class="asset">USD</span></h1>' in page
    assert "at rates locked for this payment" in page
    assert re.search(
        r'Rates locked for <time id="countdown"[^>]*>(59:[0-5]\d|1:00:00)</time>', page
    )
    # A choice per option, none chosen yet (two can be paid); ETH could not be quoted.
    picks = re.findall(
        r'<input class="pick" type="radio" name="option" id="option-(\d)"[^>]*>', page
    )
    assert picks == ["0", "1", "2"]
    assert " checked" not in page
    assert re.search(r'id="option-2" value="2" disabled>', page)
    assert "unavailable: no exchange rate now" in page
    # A panel (QR code, amount) per quoted option, shown by CSS once its choice is checked.
    assert page.count("<svg ") == 2 and 'id="panel-2"' not in page
    for i, option in ((0, td6), (1, usdtl)):
        assert f'href="{option["payment_uri"].replace("&", "&amp;")}"' in page
        assert f"#option-{i}:checked ~ #panel-{i} {{ display: block; }}" in page
        assert f"<strong>25 {option['asset']}</strong> on anvil (chain id 31337)" in page
        assert f"Token contract <code>{option['token_address']}</code>" in page
    assert page.count(f'<code id="address">{payment["address"]}</code>') == 1
    # As for every payment: nothing from elsewhere, nothing inline but under the nonce.
    assert not re.search(r"\b(src|srcset|action)=", page)
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"\s(style|on[a-z]+)=", page)
    assert resp.headers["Content-Security-Policy"].startswith("default-src 'none'")


async def test_a_single_quoted_option_is_chosen_already(fiat: FiatShop) -> None:
    payment = await fiat.create(accept=["anvil:ETH", "anvil:USDTL"])
    page = await fiat.shop.page(payment["id"])
    assert re.search(r'id="option-1" value="1" checked>', page)
    assert re.search(r'id="option-0" value="0" disabled>', page)
