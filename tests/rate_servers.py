"""Local stand-ins for the exchanges' public ticker endpoints, answering in each one's real
format (Coinbase Exchange `GET /products/{id}/ticker`, Kraken `GET /0/public/Ticker?pair=`),
with switches for errors, garbage and hanging; and a price-feed aggregator on Anvil."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web

from ctripd.dev.tokens import deploy_price_feed, set_feed_answer

FUNDER = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"  # Anvil account 0: owns the feeds


@dataclass
class Exchange:
    """One fake exchange: market → price text; `mode` "ok", "error", "garbage" or "hang"."""

    prices: dict[str, str] = field(default_factory=dict)
    mode: str = "ok"
    url: str = ""
    requests: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)


EXCHANGE = web.AppKey("exchange", Exchange)


async def _coinbase(request: web.Request) -> web.Response:
    exchange: Exchange = request.app[EXCHANGE]
    exchange.requests += 1
    product = request.match_info["product"]
    if exchange.mode == "hang":
        await exchange.release.wait()
    if exchange.mode == "garbage":
        return web.Response(text="<html>502 Bad Gateway</html>", content_type="text/html")
    if exchange.mode == "error" or product not in exchange.prices:
        return web.json_response({"message": "NotFound"}, status=404)
    return web.json_response(
        {
            "ask": exchange.prices[product],
            "bid": exchange.prices[product],
            "volume": "12345.67",
            "trade_id": 123456,
            "price": exchange.prices[product],
            "size": "0.01",
            "time": "2026-12-01T12:00:00.000000Z",
            "rfq_volume": "0",
        }
    )


async def _kraken(request: web.Request) -> web.Response:
    exchange: Exchange = request.app[EXCHANGE]
    exchange.requests += 1
    pair = request.query.get("pair", "")
    if exchange.mode == "hang":
        await exchange.release.wait()
    if exchange.mode == "garbage":
        return web.json_response({"error": [], "result": {pair: {"c": [12.5, "1"]}}})
    if exchange.mode == "error" or pair not in exchange.prices:
        return web.json_response({"error": ["EQuery:Unknown asset pair"]})
    price = exchange.prices[pair]
    return web.json_response(
        {
            "error": [],
            "result": {
                pair: {
                    "a": [price, "1", "1.000"],
                    "b": [price, "2", "2.000"],
                    "c": [price, "0.05"],
                    "v": ["100.0", "200.0"],
                    "p": [price, price],
                    "t": [10, 20],
                    "l": [price, price],
                    "h": [price, price],
                    "o": price,
                }
            },
        }
    )


@asynccontextmanager
async def exchange_server(kind: str, prices: dict[str, str]) -> AsyncIterator[Exchange]:
    """A running fake of `kind` ("coinbase" or "kraken") on a free local port."""
    exchange = Exchange(dict(prices))
    app = web.Application()
    app[EXCHANGE] = exchange
    if kind == "coinbase":
        app.router.add_get("/products/{product}/ticker", _coinbase)
    else:
        app.router.add_get("/0/public/Ticker", _kraken)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    exchange.url = f"http://127.0.0.1:{port}"
    try:
        yield exchange
    finally:
        exchange.release.set()
        await runner.cleanup()


def price_feed(rpc_url: str, answer: int, decimals: int = 8, updated_at: int = 0) -> str:
    """A PriceFeed on the node with a first answer, updated at `updated_at` (default now, by this
    machine's clock: the shared test node's block times may run ahead of it); returns its
    address."""
    address = deploy_price_feed(rpc_url, FUNDER, decimals, "ETH / USD")
    set_feed_answer(rpc_url, address, FUNDER, answer, updated_at or int(time.time()))
    return address
