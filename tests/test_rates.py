"""Rate sources and quotes (SPEC §15): exchanges answering in their real formats on local
servers, a price-feed aggregator on Anvil, medians of the fresh sources, pegs and their guard."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal

import aiohttp
import pytest
from rate_servers import FUNDER, Exchange, exchange_server, price_feed

from ctripd.chain.rpc import RpcClient
from ctripd.config import RatePair, RatesConfig
from ctripd.dev.devnet import AnvilProcess
from ctripd.dev.tokens import set_feed_answer
from ctripd.rates.book import RateBook, RatesUnavailable, median


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def coinbase() -> AsyncIterator[Exchange]:
    async with exchange_server("coinbase", {"ETH-USD": "2000.00", "USDC-USD": "1.0001"}) as ex:
        yield ex


@pytest.fixture
async def kraken() -> AsyncIterator[Exchange]:
    async with exchange_server("kraken", {"XETHZUSD": "2010.50", "USDCUSD": "0.9998"}) as ex:
        yield ex


def book(
    session: aiohttp.ClientSession,
    coinbase: Exchange,
    kraken: Exchange,
    pairs: tuple[RatePair, ...],
    rpcs: dict[str, RpcClient] | None = None,
    **options: object,
) -> RateBook:
    config = RatesConfig(
        coinbase_url=coinbase.url,
        kraken_url=kraken.url,
        pairs=pairs,
        **options,  # type: ignore[arg-type]
    )
    return RateBook(config, session, rpcs or {})


def eth(feed: str | None = None) -> RatePair:
    sources = ["coinbase:ETH-USD", "kraken:XETHZUSD"]
    if feed is not None:
        sources.append(f"feed:anvil:{feed}")
    return RatePair("ETH", "USD", sources)


USDC = RatePair("USDC", "USD", ["coinbase:USDC-USD", "kraken:USDCUSD"], peg=True)


def test_median_is_exact() -> None:
    assert median([Decimal("3"), Decimal("1"), Decimal("2")]) == Decimal("2")
    assert median([Decimal("2000.00"), Decimal("2010.51")]) == Decimal("2005.255")
    assert median([Decimal("0.1"), Decimal("0.2")]) == Decimal("0.15")


async def test_quote_is_the_median_of_three_fresh_sources(
    session: aiohttp.ClientSession, coinbase: Exchange, kraken: Exchange, anvil: AnvilProcess
) -> None:
    feed = price_feed(anvil.url, 2_005_00000000)  # 2005.00 with 8 decimals
    rpc = RpcClient("anvil", [anvil.url], session, expected_chain_id=31337)
    rates = book(session, coinbase, kraken, (eth(feed),), {"anvil": rpc})
    await rates.run_once()
    quote = rates.quote("ETH", "USD")
    assert quote.rate == Decimal("2005")
    assert {r.source for r in quote.sources} == {
        "coinbase:ETH-USD",
        "kraken:XETHZUSD",
        f"feed:anvil:{feed}",
    }
    # The feed moves: the median follows it.
    set_feed_answer(anvil.url, feed, FUNDER, 2_008_12345678, int(time.time()))
    await rates.run_once()
    assert rates.quote("ETH", "USD").rate == Decimal("2008.12345678")


@pytest.mark.parametrize("mode", ["error", "garbage", "hang"])
async def test_one_of_three_down_gives_the_median_of_the_two_left(
    session: aiohttp.ClientSession,
    coinbase: Exchange,
    kraken: Exchange,
    anvil: AnvilProcess,
    mode: str,
) -> None:
    feed = price_feed(anvil.url, 2_020_00000000)
    rpc = RpcClient("anvil", [anvil.url], session, expected_chain_id=31337)
    rates = book(session, coinbase, kraken, (eth(feed),), {"anvil": rpc}, timeout=0.3)
    kraken.mode = mode
    await rates.run_once()
    quote = rates.quote("ETH", "USD")
    assert quote.rate == median([Decimal("2000.00"), Decimal("2020")]) == Decimal("2010")
    assert "kraken:XETHZUSD" in rates.errors
    assert "kraken:XETHZUSD" not in {r.source for r in quote.sources}


async def test_stale_feed_is_not_fresh(
    session: aiohttp.ClientSession, coinbase: Exchange, kraken: Exchange, anvil: AnvilProcess
) -> None:
    """A feed's age is its updatedAt: an old round does not count, however recently read."""
    feed = price_feed(anvil.url, 3_000_00000000, updated_at=int(time.time()) - 3600)
    rpc = RpcClient("anvil", [anvil.url], session, expected_chain_id=31337)
    pair = RatePair("ETH", "USD", [f"feed:anvil:{feed}", "coinbase:ETH-USD"], min_sources=2)
    rates = book(session, coinbase, kraken, (pair,), {"anvil": rpc}, max_age=600)
    await rates.run_once()
    with pytest.raises(RatesUnavailable, match="1 of the 2 rate sources"):
        rates.quote("ETH", "USD")
    set_feed_answer(anvil.url, feed, FUNDER, 3_000_00000000, int(time.time()))  # fresh
    await rates.run_once()
    assert rates.quote("ETH", "USD").rate == Decimal("2500")


async def test_readings_age_out_of_the_cache(
    session: aiohttp.ClientSession, coinbase: Exchange, kraken: Exchange
) -> None:
    now = [time.time()]
    rates = book(session, coinbase, kraken, (eth(),), max_age=60)
    rates.clock = lambda: now[0]
    await rates.run_once()
    assert rates.quote("ETH", "USD").rate == Decimal("2005.25")
    coinbase.mode = kraken.mode = "error"
    now[0] += 61
    await rates.run_once()
    with pytest.raises(RatesUnavailable, match="0 of the 2"):
        rates.quote("ETH", "USD")


async def test_all_down_refuses_volatile_but_pegged_is_quoted(
    session: aiohttp.ClientSession, coinbase: Exchange, kraken: Exchange
) -> None:
    rates = book(session, coinbase, kraken, (eth(), USDC))
    coinbase.mode = kraken.mode = "error"
    await rates.run_once()
    with pytest.raises(RatesUnavailable):
        rates.quote("ETH", "USD")
    quote = rates.quote("USDC", "USD")
    assert quote.rate == 1
    assert [r.source for r in quote.sources] == ["peg"]


async def test_pegged_with_sources_is_guarded_against_a_depeg(
    session: aiohttp.ClientSession, coinbase: Exchange, kraken: Exchange
) -> None:
    rates = book(session, coinbase, kraken, (USDC,), depeg_tolerance_bps=200)
    await rates.run_once()
    quote = rates.quote("USDC", "USD")
    assert quote.rate == 1
    assert {r.source for r in quote.sources} == {"peg", "coinbase:USDC-USD", "kraken:USDCUSD"}
    coinbase.prices["USDC-USD"] = "0.95"
    kraken.prices["USDCUSD"] = "0.96"
    await rates.run_once()
    with pytest.raises(RatesUnavailable, match="off its USD peg"):
        rates.quote("USDC", "USD")


async def test_quotes_wait_for_a_missing_rate_only_up_to_the_deadline(
    session: aiohttp.ClientSession, coinbase: Exchange, kraken: Exchange
) -> None:
    """The first request reads the sources (no background loop in tests); a hanging source
    costs it the deadline, not the source's timeout, and the pegged option is still quoted."""
    rates = book(session, coinbase, kraken, (eth(), USDC), create_deadline=0.2, timeout=30.0)
    coinbase.mode = kraken.mode = "hang"
    found = await rates.quotes([("ETH", "USD"), ("USDC", "USD")])
    assert isinstance(found[("ETH", "USD")], str)
    usdc = found[("USDC", "USD")]
    assert not isinstance(usdc, str) and usdc.rate == 1
    # A refresh is still running: the next request waits for it again, within its deadline.
    assert rates._running is not None and not rates._running.done()
    coinbase.mode = kraken.mode = "ok"
    coinbase.release.set()
    kraken.release.set()
    await rates.refresh()
    found = await rates.quotes([("ETH", "USD")])
    eth_quote = found[("ETH", "USD")]
    assert not isinstance(eth_quote, str) and eth_quote.rate == Decimal("2005.25")
    assert eth_quote.fetched_at <= rates.now() + timedelta(seconds=1)


async def test_unknown_pair_is_unavailable(
    session: aiohttp.ClientSession, coinbase: Exchange, kraken: Exchange
) -> None:
    rates = book(session, coinbase, kraken, (eth(),))
    with pytest.raises(RatesUnavailable, match="no rate source is configured for ETH in EUR"):
        rates.quote("ETH", "EUR")


async def test_an_outage_after_start_makes_no_create_wait(
    session: aiohttp.ClientSession, coinbase: Exchange, kraken: Exchange
) -> None:
    """Once the sources were read, a quote missing through an outage used to make creates wait
    for a refresh (up to `create_deadline` each time a refresh was due): with hanging sources,
    a third of the creates took the whole deadline. Now only the first reading is waited for."""
    now = [time.time()]
    rates = book(session, coinbase, kraken, (eth(), USDC), max_age=60, create_deadline=30.0)
    rates.clock = lambda: now[0]
    await rates.run_once()
    coinbase.mode = kraken.mode = "hang"
    now[0] += 61  # every reading is stale now, and a refresh is long due
    found = await rates.quotes([("ETH", "USD"), ("USDC", "USD")])
    assert "0 of the 2" in str(found[("ETH", "USD")])
    assert not isinstance(found[("USDC", "USD")], str)
    assert rates._running is None, "no refresh was started for the request, none waited for"
    coinbase.release.set()
    kraken.release.set()


async def test_a_source_error_names_no_credentials_of_its_url(
    session: aiohttp.ClientSession, coinbase: Exchange, kraken: Exchange
) -> None:
    keyed = coinbase.url.replace("//", "//user:s3cret@") + "/?key=t0ken"
    rates = book(session, coinbase, kraken, (eth(),))
    rates.config = RatesConfig(coinbase_url=keyed, kraken_url=kraken.url, pairs=(eth(),))
    coinbase.mode = "error"
    await rates.run_once()
    error = rates.errors["coinbase:ETH-USD"]
    assert "HTTP" in error and "s3cret" not in error and "t0ken" not in error
