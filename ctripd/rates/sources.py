"""Rate sources: an exchange's public ticker over HTTP (Coinbase Exchange, Kraken) or a
Chainlink-style price-feed aggregator read through a chain's RPC. Each answers one `Reading`
or raises `SourceError`; rates are exact Decimals parsed from the text, never floats."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import aiohttp
import orjson

from ctripd.chain.rpc import RpcClient, display_url
from ctripd.config import RatesConfig
from ctripd.errors import CtripdError

# Selectors of AggregatorV3Interface's decimals() and latestRoundData().
DECIMALS_CALL = "0x313ce567"
LATEST_ROUND_CALL = "0xfeaf968c"
# A price longer than this is garbage, not a rate.
MAX_RATE_TEXT = 64
MAX_BODY = 1 << 16


class SourceError(CtripdError):
    """A source gave no usable rate (down, an error answer, garbage)."""


@dataclass(frozen=True, slots=True)
class Reading:
    """One source's rate: currency units per whole asset unit, as of `at` (a feed's own update
    time, else when it was fetched)."""

    source: str
    rate: Decimal
    at: datetime


def parse_rate(value: Any, what: str) -> Decimal:
    """A positive finite decimal from a JSON string such as "2034.51"."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_RATE_TEXT:
        raise SourceError(f"{what}: expected a decimal string, got {str(value)[:40]!r}")
    try:
        rate = Decimal(value)
    except InvalidOperation:
        raise SourceError(f"{what}: not a number: {value[:40]!r}") from None
    if not rate.is_finite() or rate <= 0:
        raise SourceError(f"{what}: not a positive rate: {value[:40]!r}")
    return rate


async def _get_json(session: aiohttp.ClientSession, url: str, params: dict[str, str]) -> Any:
    # Errors name the host only: an operator's source URL (a proxy, say) may carry a key.
    shown = display_url(url)
    async with session.get(url, params=params, allow_redirects=False) as response:
        body = await response.content.read(MAX_BODY + 1)
        if len(body) > MAX_BODY:
            raise SourceError(f"{shown}: answer larger than {MAX_BODY} bytes")
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise SourceError(f"{shown}: HTTP {response.status}, not JSON") from None
        if response.status != 200:
            message = doc.get("message") if isinstance(doc, dict) else None
            raise SourceError(f"{shown}: HTTP {response.status} {str(message or '')[:80]}".strip())
        return doc


async def coinbase(session: aiohttp.ClientSession, base_url: str, product: str) -> Decimal:
    """Coinbase Exchange `GET /products/{product}/ticker`: `{"price": "...", ...}`."""
    doc = await _get_json(session, f"{base_url.rstrip('/')}/products/{product}/ticker", {})
    if not isinstance(doc, dict):
        raise SourceError(f"coinbase {product}: expected a JSON object")
    return parse_rate(doc.get("price"), f"coinbase {product} price")


async def kraken(session: aiohttp.ClientSession, base_url: str, pair: str) -> Decimal:
    """Kraken `GET /0/public/Ticker?pair=`: `{"error": [], "result": {"<pair>": {"c": [last
    trade price, lot volume], ...}}}` (the result's key may be Kraken's own name of the pair)."""
    doc = await _get_json(session, f"{base_url.rstrip('/')}/0/public/Ticker", {"pair": pair})
    if not isinstance(doc, dict):
        raise SourceError(f"kraken {pair}: expected a JSON object")
    errors = doc.get("error")
    if errors:
        raise SourceError(f"kraken {pair}: {str(errors)[:120]}")
    result = doc.get("result")
    if not isinstance(result, dict) or len(result) != 1:
        raise SourceError(f"kraken {pair}: expected one pair in result")
    (ticker,) = result.values()
    last = ticker.get("c") if isinstance(ticker, dict) else None
    if not isinstance(last, list) or not last:
        raise SourceError(f"kraken {pair}: no last trade (c)")
    return parse_rate(last[0], f"kraken {pair} c[0]")


def _words(data: Any, count: int, what: str) -> list[int]:
    """The first `count` 32-byte words of an eth_call's return data."""
    if not isinstance(data, str) or not data.startswith("0x") or len(data) < 2 + 64 * count:
        raise SourceError(f"{what}: short or malformed return data")
    try:
        return [int(data[2 + 64 * i : 66 + 64 * i], 16) for i in range(count)]
    except ValueError:
        raise SourceError(f"{what}: malformed return data") from None


async def feed(rpc: RpcClient, address: str) -> tuple[Decimal, datetime]:
    """A price-feed aggregator's latest answer and its `updatedAt`, scaled by its decimals()."""
    calls = [
        ("eth_call", [{"to": address, "data": DECIMALS_CALL}, "latest"]),
        ("eth_call", [{"to": address, "data": LATEST_ROUND_CALL}, "latest"]),
    ]
    decimals_data, round_data = await rpc.batch(calls)
    (decimals,) = _words(decimals_data, 1, f"feed {address} decimals()")
    _, answer, _, updated_at, _ = _words(round_data, 5, f"feed {address} latestRoundData()")
    if answer >= 2**255:  # int256: negative
        answer -= 2**256
    if decimals > 36 or answer <= 0 or updated_at == 0:
        raise SourceError(f"feed {address}: no valid answer (answer {answer}, decimals {decimals})")
    try:
        at = datetime.fromtimestamp(updated_at, UTC)
    except (OverflowError, OSError, ValueError):
        raise SourceError(f"feed {address}: updatedAt {updated_at} out of range") from None
    return Decimal(answer).scaleb(-decimals), at


async def read(
    name: str,
    config: RatesConfig,
    session: aiohttp.ClientSession,
    rpcs: dict[str, RpcClient],
    now: datetime,
) -> Reading:
    """The reading of the source named `name` in the config ("kraken:XETHZUSD", ...)."""
    kind, _, market = name.partition(":")
    if kind == "coinbase":
        return Reading(name, await coinbase(session, config.coinbase_url, market), now)
    if kind == "kraken":
        return Reading(name, await kraken(session, config.kraken_url, market), now)
    chain, _, address = market.partition(":")
    rpc = rpcs.get(chain)
    if rpc is None:
        raise SourceError(f"{name}: chain {chain} has no RPC client")
    rate, at = await feed(rpc, address)
    return Reading(name, rate, at)
