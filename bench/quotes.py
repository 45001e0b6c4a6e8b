"""Benchmark: quote latency on the create path (issue 16), with rate sources up, down and hanging.

    .venv/bin/python -m bench.quotes [--rate 100] [--duration 10]

A real `ctripd run` subprocess on a real Postgres and Anvil (bench.create_payments' daemon,
database and load generator). POST /v1/payments priced in USD accepting ETH, quoted as the median
of three sources (local Coinbase Exchange and Kraken servers answering in their real formats, from
tests/rate_servers.py, and a price-feed aggregator on Anvil; `min_sources` 2), and a pegged
token. Open loop at a fixed rate, latency from each request's scheduled start, in one run:

1. every source up;
2. Coinbase answering errors (HTTP 404), measured once its last reading is past `max_age`;
3. Coinbase hanging past `[rates] timeout`;
4. Coinbase and Kraken answering errors: ETH has one fresh source of the two needed, so creates
   offer the pegged token only;
5. the same with both hanging: a create that lacks a quote waits (up to `create_deadline`) for a
   refresh under way, which now lasts the whole timeout;
6. comparison: the asset-unit create (no price) at the same rate, every source up again.

The rate book's timings are scaled down from the defaults (timeout 5 s, refresh every 30 s,
max_age 300 s) so an outage reaches its steady state within seconds, in about their proportions:
a hanging source holds a refresh for 1 s of every 6 s (5 s of every 35 s by default).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench.create_payments import (
    ROOT,
    create_request,
    daemon,
    fixed_rate,
    make_key,
    postgres,
    request_once,
)
from ctripd import db
from ctripd.dev import tokens as devtokens
from ctripd.dev.devnet import free_port, start_anvil

sys.path.insert(0, str(ROOT / "tests"))
from rate_servers import FUNDER, Exchange, exchange_server

TIMEOUT = 1.0
REFRESH_INTERVAL = 5
MAX_AGE = 10
FEED_EVERY = 1.0  # seconds between the aggregator's rounds (it is a source: it must stay fresh)
ETH_USD = "2005.00"
ACCEPT = ["anvil:ETH", "anvil:USDTL"]
# More than rate × create_deadline: requests held by a refresh must not run out of connections.
CONNECTIONS = 200


def rates_toml(coinbase_url: str, kraken_url: str, feed: str) -> str:
    sources = ["coinbase:ETH-USD", "kraken:XETHZUSD", f"feed:anvil:{feed}"]
    return (
        f'[rates]\ncoinbase_url = "{coinbase_url}"\nkraken_url = "{kraken_url}"\n'
        f"timeout = {TIMEOUT}\nrefresh_interval = {REFRESH_INTERVAL}\nmax_age = {MAX_AGE}\n"
        f'[rates.pairs."ETH/USD"]\nsources = {orjson.dumps(sources).decode()}\n'
        '[rates.pairs."USDTL/USD"]\npeg = true\n'
    )


def priced_request(key: str, n: int) -> bytes:
    body = orjson.dumps(
        {
            "price": {"amount": f"{10 + n % 90}.{n % 100:02d}", "currency": "USD"},
            "accept": ACCEPT,
            "order_id": f"quote-{n}",
        }
    )
    return (
        b"POST /v1/payments HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + key.encode() + b"\r\n"
        b"Idempotency-Key: " + uuid.uuid4().hex.encode() + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


@dataclass
class Tally:
    """How the ETH option of each answer was quoted (and the first few errors, shown)."""

    eth: Counter[str] = field(default_factory=Counter)
    shown: int = 0

    def __call__(self, status: int, body: bytes) -> None:
        if status != 201:
            if self.shown < 3:
                self.shown += 1
                print(f"    error {status}: {body[:200]!r}")
            return
        doc = orjson.loads(body)
        for option in doc.get("options", []):
            if option["asset"] == "ETH":
                self.eth[eth_label(option)] += 1


def eth_label(option: dict[str, Any]) -> str:
    if not option.get("available", True):
        return "unquoted"
    names = sorted(s["source"].partition(":")[0] for s in option["quote"]["sources"])
    return "+".join(names)


class Exchanges:
    """The fake Coinbase and Kraken on an event loop of their own (a thread), so they answer the
    daemon between and during the load phases; modes are switched from the bench's thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.stack = contextlib.AsyncExitStack()

    def __enter__(self) -> Exchanges:
        self.thread.start()

        async def enter() -> tuple[Exchange, Exchange]:
            coinbase = exchange_server("coinbase", {"ETH-USD": "2000.00"})
            kraken = exchange_server("kraken", {"XETHZUSD": "2010.50"})
            return (
                await self.stack.enter_async_context(coinbase),
                await self.stack.enter_async_context(kraken),
            )

        self.coinbase, self.kraken = self.call(enter())
        return self

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def set_mode(self, exchange: Exchange, mode: str) -> None:
        async def switch() -> None:
            if exchange.mode == "hang" and mode != "hang":
                exchange.release.set()  # answer the requests still hanging
                exchange.release = asyncio.Event()
            exchange.mode = mode

        self.call(switch())

    def __exit__(self, *exc: object) -> None:
        self.call(self.stack.aclose())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@contextlib.contextmanager
def feed_keeper(rpc_url: str) -> Iterator[str]:
    """A price-feed aggregator on the node, given a new round every FEED_EVERY seconds."""
    feed = devtokens.deploy_price_feed(rpc_url, FUNDER, 8, "ETH / USD")
    answer = int(ETH_USD.replace(".", "")) * 10**6
    devtokens.set_feed_answer(rpc_url, feed, FUNDER, answer, int(time.time()))
    stop = threading.Event()

    def keep() -> None:
        while not stop.wait(FEED_EVERY):
            devtokens.set_feed_answer(rpc_url, feed, FUNDER, answer, int(time.time()))

    thread = threading.Thread(target=keep, daemon=True)
    thread.start()
    try:
        yield feed
    finally:
        stop.set()
        thread.join(10)


def probe(port: int, key: str) -> str:
    """How one priced create's ETH option is quoted now."""
    status, body = asyncio.run(request_once(port, priced_request(key, 0)))
    if status != 201:
        return f"HTTP {status}: {body[:120]!r}"
    doc = orjson.loads(body)
    eth = next(o for o in doc["options"] if o["asset"] == "ETH")
    if not eth.get("available", True):
        return "ETH unquoted, USDTL (pegged) offered alone"
    return f"ETH at {eth['rate']} from {eth_label(eth)}"


@dataclass
class Phase:
    name: str
    result: dict[str, float]
    tally: Tally
    load: float


def run_phase(
    name: str, port: int, key: str, args: argparse.Namespace, make: Callable[[str, int], bytes]
) -> Phase:
    load = os.getloadavg()[0]
    tally = Tally()
    result = asyncio.run(fixed_rate(port, key, args.rate, args.duration, make, tally, CONNECTIONS))
    return Phase(name, result, tally, load)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per phase")
    parser.add_argument("--rate", type=float, default=100.0, help="open-loop requests/s")
    args = parser.parse_args()
    stale = MAX_AGE + REFRESH_INTERVAL + TIMEOUT + 1  # a dead source's last reading is stale
    cycle = REFRESH_INTERVAL + TIMEOUT + 1  # a refresh has seen the new modes
    # (phase, Coinbase's mode, Kraken's mode, seconds to wait first, request)
    steps: list[tuple[str, str, str, float, Callable[[str, int], bytes]]] = [
        ("1. all sources up", "ok", "ok", 0, priced_request),
        ("2. coinbase down (404)", "error", "ok", stale, priced_request),
        ("3. coinbase hanging", "hang", "ok", cycle, priced_request),
        ("4. coinbase+kraken down (404)", "error", "error", stale, priced_request),
        ("5. coinbase+kraken hanging", "hang", "hang", cycle, priced_request),
        ("6. comparison: asset units", "ok", "ok", cycle, create_request),
    ]

    phases: list[Phase] = []
    with postgres() as dsn, tempfile.TemporaryDirectory(prefix="ctbench") as tmp:
        anvil = start_anvil()
        try:
            db.migrate(dsn)
            key = asyncio.run(make_key(dsn))
            usdt = devtokens.deploy_token(anvil.url, "usdt", FUNDER)
            chain = f"    tokens:\n      USDTL: {{address: '{usdt}', decimals: 6}}\n"
            port = free_port()
            with feed_keeper(anvil.url) as feed, Exchanges() as ex:
                toml = rates_toml(ex.coinbase.url, ex.kraken.url, feed)
                with daemon(dsn, anvil.url, Path(tmp), port, toml, chain):
                    warm = asyncio.run(fixed_rate(port, key, args.rate, 2, priced_request))
                    asyncio.run(fixed_rate(port, key, args.rate, 1))
                    print(f"warm-up: {warm['errors']} errors")
                    for name, coinbase, kraken, wait, make in steps:
                        ex.set_mode(ex.coinbase, coinbase)
                        ex.set_mode(ex.kraken, kraken)
                        time.sleep(wait)
                        print(f"  {name}: {probe(port, key)}")
                        phases.append(run_phase(name, port, key, args, make))
        finally:
            anvil.stop()

    print(
        f"\nPOST /v1/payments at a fixed {args.rate:.0f}/s for {args.duration:.0f} s a phase "
        f"({os.cpu_count()} cores shared by server, Postgres, Anvil, client); rates: timeout "
        f"{TIMEOUT} s, refresh every {REFRESH_INTERVAL} s, max_age {MAX_AGE} s; ratios to the "
        "comparison:"
    )
    base = phases[-1].result
    for phase in phases:
        r = phase.result
        eth = ", ".join(f"{k} {v}" for k, v in sorted(phase.tally.eth.items())) or "-"
        print(
            f"  {phase.name:30} p50 {r['p50_ms']:6.1f} ms (×{r['p50_ms'] / base['p50_ms']:.2f})"
            f"  p99 {r['p99_ms']:7.1f} ms (×{r['p99_ms'] / base['p99_ms']:.2f})"
            f"  max {r['max_ms']:7.1f} ms  >100 ms: {r['over_100ms']}"
            f"  {r['requests']:,} requests, {r['errors']} errors  load {phase.load:.2f}"
            f"\n  {'':30} ETH option: {eth}"
        )
    return 0 if not any(p.result["errors"] for p in phases) else 1


if __name__ == "__main__":
    sys.exit(main())
