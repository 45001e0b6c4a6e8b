"""Benchmark: the chain scanner's catch-up speed, memory and detection latency.

    .venv/bin/python -m bench.scan [--blocks 300] [--txs 100] [--watched 10000,1000000,10000000]

One process run on a real Anvil (`--no-mining`, blocks filled by batched `eth_sendTransaction`
with explicit nonces, then `evm_mine`) and a real Postgres (CTRIPD_TEST_DSN, else an embedded
pgserver in a temp dir). Each block holds `--txs` transactions: 80 % native transfers and 20 %
ERC-20 transfers, three per block to payment addresses (two native, one token), the rest to
random addresses. Over the same blocks it measures, in blocks/s:

  (a) the bare batched JSON-RPC fetch of the full blocks (aiohttp + orjson, parsed, nothing
      else): what the node can serve, the ceiling. Per round, the better of the scanner's batch
      size and concurrency (measured right before and right after the scanner) and of 50 calls
      per request one at a time; the ratio is the median of the rounds' scanner ÷ (a);
  (b) a plain web3.py `get_block(n, full_transactions=True)` loop;
  (c) web3.py's own batch requests of the same calls (`w3.batch_requests()`), which the lean
      client of ctripd.rpc has to beat to earn its place;
  (d) the scanner (`ChainWatcher.run_once()` from the first block to the head), including its
      receipts, eth_getLogs and every database write (transfers, payment updates, events,
      block hashes, cursor), with each size of the watched-address set.

Then, with the largest set loaded: the process RSS, the seconds the set took to load, and the
detection latency (transaction mined → payment `detected`) with the watcher driven by
APScheduler every poll interval, as the daemon runs it; then the same with the chain's `ws` URL,
whose new heads start the scheduler's job at once (the daemon's set-up too).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import os
import random
import statistics
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp
import asyncpg
import orjson
import psutil
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bench.create_payments import postgres
from ctripd import db
from ctripd.chain.rpc import RpcClient
from ctripd.config import ChainConfig, NativeAsset, PaymentsConfig, Token
from ctripd.dev import tokens as devtokens
from ctripd.dev.devnet import start_anvil
from ctripd.jobs.chainwatch import ChainWatcher
from ctripd.jobs.tasks import TaskSet
from ctripd.jobs.watched import WatchedAddresses
from ctripd.log import configure_logging

TARGET_RATIO = 0.9
TARGET_RSS_MB = 400
TARGET_LOAD_S = 10.0
POLL_INTERVAL = 1.0
TARGET_LATENCY = 0.3
TREASURY = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
PAYMENT_WEI = 10**16
PAYMENT_TOKEN_UNITS = 5 * 10**6
SENDERS = 20


async def rpc(session: aiohttp.ClientSession, url: str, calls: list[tuple[str, list[Any]]]) -> Any:
    body = orjson.dumps(
        [{"jsonrpc": "2.0", "id": i, "method": m, "params": p} for i, (m, p) in enumerate(calls)]
    )
    async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
        answers = orjson.loads(await r.read())
    answers.sort(key=lambda a: a["id"])
    for a in answers:
        if "error" in a:
            raise RuntimeError(a["error"])
    return [a["result"] for a in answers]


def transfer_data(to: str, amount: int) -> str:
    return "0xa9059cbb" + to[2:].lower().rjust(64, "0") + hex(amount)[2:].rjust(64, "0")


async def fill_chain(
    session: aiohttp.ClientSession,
    url: str,
    token: str,
    senders: list[str],
    hits: list[tuple[str, bool]],
    blocks: int,
    txs: int,
) -> tuple[int, int]:
    """Mine `blocks` blocks of `txs` transactions; returns (first, last) block numbers."""
    nonces = {
        s: int(n, 16)
        for s, n in zip(
            senders,
            await rpc(session, url, [("eth_getTransactionCount", [s, "pending"]) for s in senders]),
            strict=True,
        )
    }
    fee = {"maxFeePerGas": hex(100 * 10**9), "maxPriorityFeePerGas": "0x1"}
    tokens_per_block = txs // 5
    hit_iter = iter(hits)
    first = None
    for _ in range(blocks):
        calls = []
        block_hits = [next(hit_iter) for _ in range(3)]
        for i in range(txs):
            sender = senders[i % len(senders)]
            is_token = i < tokens_per_block
            to = "0x" + os.urandom(20).hex()
            amount = 1
            if i == 0:  # the token hit
                to, amount = block_hits[0][0], PAYMENT_TOKEN_UNITS
            elif i in (tokens_per_block, tokens_per_block + 1):  # the native hits
                to, amount = block_hits[i - tokens_per_block + 1][0], PAYMENT_WEI
            tx: dict[str, Any] = {"from": sender, "nonce": hex(nonces[sender]), **fee}
            if is_token:
                tx.update(to=token, gas=hex(100_000), data=transfer_data(to, amount))
            else:
                tx.update(to=to, gas=hex(21_000), value=hex(amount))
            nonces[sender] += 1
            calls.append(("eth_sendTransaction", [tx]))
        await rpc(session, url, calls)
        await rpc(session, url, [("evm_mine", [])])
        if first is None:
            first = int((await rpc(session, url, [("eth_blockNumber", [])]))[0], 16)
    last = int((await rpc(session, url, [("eth_blockNumber", [])]))[0], 16)
    assert first is not None
    block = (await rpc(session, url, [("eth_getBlockByNumber", [hex(last), False])]))[0]
    assert len(block["transactions"]) == txs, "a block is not full: raise the gas limit"
    return first, last


async def bare_fetch(
    session: aiohttp.ClientSession, url: str, first: int, last: int, batch: int, concurrency: int
) -> float:
    """(a): blocks/s of batched eth_getBlockByNumber(n, true), parsed, nothing else."""
    numbers = list(range(first, last + 1))
    chunks = [numbers[i : i + batch] for i in range(0, len(numbers), batch)]
    slots = asyncio.Semaphore(concurrency)

    async def one(chunk: list[int]) -> int:
        async with slots:
            got = await rpc(session, url, [("eth_getBlockByNumber", [hex(n), True]) for n in chunk])
            return sum(len(b["transactions"]) for b in got)

    started = time.perf_counter()
    await asyncio.gather(*(one(c) for c in chunks))
    return len(numbers) / (time.perf_counter() - started)


async def web3_loop(url: str, first: int, last: int) -> float:
    """(b): one web3.py get_block(full) call per block."""
    from web3 import AsyncWeb3

    w3 = AsyncWeb3(AsyncWeb3.AsyncHTTPProvider(url))
    started = time.perf_counter()
    for n in range(first, last + 1):
        await w3.eth.get_block(n, full_transactions=True)
    rate = (last - first + 1) / (time.perf_counter() - started)
    await w3.provider.disconnect()
    return rate


async def web3_batch(url: str, first: int, last: int, batch: int) -> float:
    """(c): web3.py's own batch requests of get_block(full), `batch` per request."""
    from web3 import AsyncWeb3

    w3 = AsyncWeb3(AsyncWeb3.AsyncHTTPProvider(url))
    started = time.perf_counter()
    for start in range(first, last + 1, batch):
        async with w3.batch_requests() as requests:
            for n in range(start, min(start + batch, last + 1)):
                requests.add(w3.eth.get_block(n, full_transactions=True))
            await requests.async_execute()
    rate = (last - first + 1) / (time.perf_counter() - started)
    await w3.provider.disconnect()
    return rate


async def add_filler_payments(pool: asyncpg.Pool, count: int, salt: str) -> None:
    """Watched payments nobody pays, generated in SQL (lowercase hex addresses)."""
    await pool.execute(
        """
        INSERT INTO payments (id, merchant, chain, chain_id, asset, decimals, amount, address,
                              address_index, confirmations_required, expires_at)
        SELECT 'pay_' || md5($1 || i), 'default', 'bench', 31337, 'ETH', 18, $2,
               '0x' || substr(md5(i || $1) || md5($1 || i), 1, 40),
               nextval('address_index_seq'), 12, now() + interval '1 day'
        FROM generate_series(1, $3) AS i
        """,
        salt,
        PAYMENT_WEI,
        count,
    )


async def add_paid_payments(pool: asyncpg.Pool, hits: list[tuple[str, bool]], token: str) -> None:
    rows = [
        (
            f"pay_{os.urandom(16).hex()}",
            "USDT" if is_token else "ETH",
            token if is_token else None,
            6 if is_token else 18,
            PAYMENT_TOKEN_UNITS if is_token else PAYMENT_WEI,
            address,
        )
        for address, is_token in hits
    ]
    await pool.executemany(
        """
        INSERT INTO payments (id, merchant, chain, chain_id, asset, token_address, decimals,
                              amount, address, address_index, confirmations_required, expires_at)
        VALUES ($1, 'default', 'bench', 31337, $2, $3, $4, $5, $6, nextval('address_index_seq'),
                12, now() + interval '1 day')
        """,
        rows,
    )


async def reset_scan(pool: asyncpg.Pool, first: int) -> None:
    """Forget what a scanner run wrote, so the next run scans the same blocks afresh."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("DELETE FROM events WHERE type <> 'payment.created'")
        await conn.execute("DELETE FROM transfers")
        await conn.execute("DELETE FROM blocks")
        await conn.execute(
            "UPDATE payments SET status = 'pending', amount_received = 0, amount_confirmed = 0,"
            " detected_at = NULL, confirmed_at = NULL WHERE amount_received > 0"
        )
        await conn.execute("UPDATE chains SET scanned_block = $1", first - 1)


async def start_watcher(
    chain: ChainConfig,
    dsn: str,
    session: aiohttp.ClientSession,
    pool: asyncpg.Pool,
    last: int,
    watched: WatchedAddresses | None = None,
) -> tuple[ChainWatcher, float]:
    """A watcher past its start-up (leadership, loading the watched set unless given one
    loaded); seconds that took."""
    # As the daemon builds it: every request also checks the node's chain id.
    rpc = RpcClient(chain.name, chain.rpc, session, expected_chain_id=chain.chain_id)
    watcher = ChainWatcher(
        chain, dsn, rpc, PaymentsConfig(), watched or WatchedAddresses(), operator_url=True
    )
    await pool.execute("UPDATE chains SET scanned_block = $1", last)
    started = time.perf_counter()
    assert await watcher.run_once() == 0
    return watcher, time.perf_counter() - started


async def detection_latency(
    watcher: ChainWatcher,
    pool: asyncpg.Pool,
    session: aiohttp.ClientSession,
    url: str,
    sender: str,
    samples: int,
) -> list[float]:
    """Seconds from `evm_mine` returning until the payment reads as detected, under the scheduler
    (polled every 5 ms); with the chain's `ws`, each new head also starts the scheduler's job."""
    addresses = [
        r["address"]
        for r in await pool.fetch(
            "SELECT address FROM payments WHERE amount_received = 0 LIMIT $1", samples
        )
    ]
    tasks = TaskSet()
    scheduler = AsyncIOScheduler()
    job = tasks.job("watch", watcher.run_once)
    if watcher.heads is not None:
        tasks.spawn(watcher.follow_heads(job), "heads")
        tasks.on_stop.append(watcher.stop_heads)
    scheduler.add_job(
        job,
        "interval",
        seconds=POLL_INTERVAL,
        max_instances=1,
        coalesce=True,
        next_run_time=datetime.now(UTC),
    )
    scheduler.start()
    latencies = []
    try:
        await asyncio.sleep(POLL_INTERVAL * 1.5)
        for address in addresses:
            await asyncio.sleep(random.uniform(0, POLL_INTERVAL))
            tx = {"from": sender, "to": address, "value": hex(PAYMENT_WEI), "gas": hex(21_000)}
            await rpc(session, url, [("eth_sendTransaction", [tx])])
            await rpc(session, url, [("evm_mine", [])])
            mined = time.time()
            for _ in range(int(30 / 0.005)):
                query = "SELECT detected_at FROM payments WHERE address = $1"
                if await pool.fetchval(query, address) is not None:
                    latencies.append(time.time() - mined)
                    break
                await asyncio.sleep(0.005)
            else:
                raise AssertionError(f"payment to {address} not detected in 30 s")
    finally:
        scheduler.shutdown(wait=False)
        tasks.begin_stop(10)
        await tasks.drain(10)
    return latencies


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def main(args: argparse.Namespace) -> None:
    configure_logging("warning", "console")
    sizes = sorted(int(s) for s in args.watched.split(","))
    payment_count = 3 * args.blocks
    anvil = start_anvil(extra_args=["--accounts", str(SENDERS), "--gas-limit", "60000000"])
    try:
        with postgres() as dsn:
            db.migrate(dsn)
            asyncio.run(run(args, sizes, payment_count, anvil.url, dsn))
    finally:
        anvil.stop()


async def run(
    args: argparse.Namespace, sizes: list[int], payment_count: int, url: str, dsn: str
) -> None:
    connector = aiohttp.TCPConnector(limit=100, limit_per_host=32)
    async with aiohttp.ClientSession(connector=connector) as session:
        senders = (await rpc(session, url, [("eth_accounts", [])]))[0][:SENDERS]
        token = devtokens.deploy_token(url, "usdt", senders[0])
        for sender in senders:
            devtokens.mint(url, token, sender, 10**15, senders[0])
        await rpc(session, url, [("evm_setAutomine", [False])])
        hits = [("0x" + os.urandom(20).hex(), i % 3 == 0) for i in range(payment_count)]
        print(f"filling {args.blocks} blocks of {args.txs} transactions …", flush=True)
        started = time.perf_counter()
        first, last = await fill_chain(session, url, token, senders, hits, args.blocks, args.txs)
        print(f"  blocks {first}..{last} in {time.perf_counter() - started:.1f} s", flush=True)

        chain = ChainConfig(
            name="bench",
            chain_id=31337,
            rpc=[url],
            native=NativeAsset("ETH", 18),
            treasury=TREASURY,
            confirmations=12,
            poll_interval=POLL_INTERVAL,
            tokens={"USDT": Token("USDT", token, 6)},
        )
        probe = RpcClient("bench", [url], session)
        batch, concurrency = probe.batch_size, probe.concurrency

        pool = await db.create_pool(dsn, 1, 4)
        await pool.execute("INSERT INTO chains (name, chain_id) VALUES ('bench', 31337)")
        await add_paid_payments(pool, hits, token)
        rows: list[str] = []
        verdicts: list[bool] = []
        watcher = None
        have = payment_count
        rss_before = 0.0
        for size in sizes:
            if size > have:
                t0 = time.perf_counter()
                await add_filler_payments(pool, size - have, f"s{size}")
                print(f"  +{size - have:,} payments in {time.perf_counter() - t0:.1f} s")
                have = size
            await pool.execute("VACUUM ANALYZE payments")
            if watcher is not None:
                await watcher.close()
            watcher = None
            gc.collect()
            rss_before = psutil.Process().memory_info().rss / 2**20
            watcher, load = await start_watcher(chain, dsn, session, pool, last)
            # Each round brackets the scanner with (a) at its own settings, before and after, and
            # also takes (a) at 50 calls per request, one at a time: the round's ceiling is the
            # better of the two, so the ratio is taken under the load the machine had just then.
            ceilings: list[float] = []
            scans: list[float] = []
            for _ in range(args.rounds):
                before = await bare_fetch(session, url, first, last, batch, concurrency)
                await reset_scan(pool, first)
                t0 = time.perf_counter()
                scanned = await watcher.run_once()
                scans.append(scanned / (time.perf_counter() - t0))
                after = await bare_fetch(session, url, first, last, batch, concurrency)
                single = await bare_fetch(session, url, first, last, 50, 1)
                ceilings.append(max((before + after) / 2, single))
                credited = await pool.fetchval("SELECT count(*) FROM transfers")
                assert credited == payment_count, f"{credited} of {payment_count} found"
                print(
                    f"  {size:,} watched (set loaded in {load:.2f} s): scanner {scans[-1]:.1f}; "
                    f"(a) {before:.1f} before, {after:.1f} after at {batch}x{concurrency}, "
                    f"{single:.1f} at 50x1",
                    flush=True,
                )
            ratios = [s / c for s, c in zip(scans, ceilings, strict=True)]
            ratio = statistics.median(ratios)
            verdicts.append(ratio >= TARGET_RATIO)
            rows.append(
                _row(
                    f"(a) bare batched fetch, better config [{size:,}]",
                    statistics.median(ceilings),
                    1.0,
                )
                + f"   rounds: {_list(ceilings)}"
            )
            rows.append(
                _row(
                    f"(d) scanner, {size:,} watched, with DB writes",
                    statistics.median(scans),
                    ratio,
                )
                + f"   ≥ {TARGET_RATIO}: {verdict(verdicts[-1])}   rounds: {_list(scans)}"
                + f" = {'/'.join(f'{r:.2f}' for r in ratios)} of (a)"
            )
        assert watcher is not None
        rss_mb = psutil.Process().memory_info().rss / 2**20

        print("(b) web3 loop, (c) web3 batch requests …", flush=True)
        loop_rate = await web3_loop(url, first, last)
        web3_batch_rate = await web3_batch(url, first, last, 50)
        lean_rate = await bare_fetch(session, url, first, last, 50, 1)

        print(f"detection latency, {args.samples} samples each, poll then ws …", flush=True)
        polled = await detection_latency(watcher, pool, session, url, senders[1], args.samples)
        watched = watcher.watched
        await watcher.close()
        # The same chain with its ws URL (Anvil serves WebSocket on its RPC port), the same set.
        ws_chain = dataclasses.replace(chain, ws=url.replace("http://", "ws://", 1))
        head = int((await rpc(session, url, [("eth_blockNumber", [])]))[0], 16)
        watcher, _ = await start_watcher(ws_chain, dsn, session, pool, head, watched)
        woken = await detection_latency(watcher, pool, session, url, senders[1], args.samples)
        await watcher.close()
        await pool.close()
    print()
    print(
        f"catch-up over {last - first + 1} blocks × {args.txs} txs "
        f"({args.txs * 4 // 5} native + {args.txs // 5} ERC-20), {payment_count} of them to "
        f"payments; medians of {args.rounds} rounds; the scanner asks {batch} calls per request, "
        f"{concurrency} requests in flight"
    )
    print(
        f"{'':48} {'blocks/s':>9} {'÷ (a)':>6}   (medians; ÷ (a) is the median of per-round ratios)"
    )
    print("\n".join(rows))
    print(_row("(b) web3.py get_block(full) loop", loop_rate, None))
    print(_row("(c) web3.py batch_requests, 50 per request", web3_batch_rate, None))
    print(
        _row("    aiohttp + orjson, 50 per request", lean_rate, None)
        + f"   lean ÷ (c) = {lean_rate / web3_batch_rate:.1f}x"
    )
    print(
        f"{f'RSS with {sizes[-1]:,} watched addresses':48} {rss_mb:6.0f} MB"
        f"          ≤ {TARGET_RSS_MB} MB: {verdict(rss_mb <= TARGET_RSS_MB)}"
        f"   (before loading the set: {rss_before:.0f} MB)"
    )
    print(
        f"{f'loading {sizes[-1]:,} watched addresses':48} {load:7.2f} s"
        f"          ≤ {TARGET_LOAD_S:g} s: {verdict(load <= TARGET_LOAD_S)}"
    )
    for label, latencies in (("ws newHeads", woken), (f"poll every {POLL_INTERVAL:g} s", polled)):
        p50 = statistics.median(latencies)
        print(
            f"{f'detection latency p50, {label}':48} {p50:7.2f} s"
            f"          ≤ {TARGET_LATENCY:.1f} s: {verdict(p50 <= TARGET_LATENCY)}"
            f"   (max {max(latencies):.2f} s, {len(latencies)} samples)"
        )


def _row(label: str, rate: float, ratio: float | None) -> str:
    return f"{label:48} {rate:9.1f} " + (f"{ratio:6.2f}" if ratio is not None else " " * 6)


def _list(rates: list[float]) -> str:
    return "/".join(f"{r:.1f}" for r in rates)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", type=int, default=300)
    parser.add_argument("--txs", type=int, default=100)
    parser.add_argument("--watched", default="10000,1000000")
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    return parser.parse_args()


if __name__ == "__main__":
    main(parse_args())
