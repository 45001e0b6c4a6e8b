"""Benchmark: webhook delivery throughput, and fresh-event delay behind failing backlogs.

    .venv/bin/python -m bench.webhooks [--events 10000] [--dead 100000] [--burst 25000]

Real Postgres (CTRIPD_TEST_DSN, else an embedded pgserver in a temp dir), migrated like
production. The receiver is an aiohttp server in its own process; the worker under test is
ctripd's `WebhookWorker` loop in this process (one asyncio thread, so one core), with the default
`webhooks.concurrency` (16), signing every request.

1. Throughput: `--events` events queued at once (payments × 4 events, each payment's in order),
   all answered 200. Compared with the same worker at concurrency 1.
2. Dead endpoint: `--dead` events of payments whose deliveries fail (the receiver answers 500
   for them), in the state a failing backlog is in: every payment's first event has failed once
   and its retry is due now, its later events wait behind it. While the worker churns through
   those retries, a fresh payment event arrives every 100 ms; its delay (recorded → delivered)
   is the figure. Then the same with an endpoint that hangs past `webhooks.timeout` (2 s here)
   for the failing payments. Compared with the delay on an idle queue.
3. Burst: `--burst` brand-new events (never tried, all due before the fresh ones) of another
   merchant whose endpoint answers 500 (then hangs) for all of them; a fresh event of the default
   merchant's healthy URL arrives every 100 ms and its delay is the figure. Compared with the
   same burst queued to the healthy event's own endpoint (one lane: first come, first served).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import structlog
from aiohttp import web

from bench.create_payments import postgres
from ctripd import db
from ctripd.config import Config, load_config
from ctripd.dev.devnet import TEST_MNEMONIC, free_port
from ctripd.jobs.signing import generate_secret
from ctripd.jobs.webhooks import WebhookWorker
from ctripd.ledger.events import record_event
from ctripd.ledger.objects import load_payment
from ctripd.log import configure_logging

TARGET_DELIVERIES_PER_S = 500
TARGET_FRESH_DELAY_S = 1.0
EVENT_TYPES = [
    "payment.created",
    "payment.transfer_received",
    "payment.detected",
    "payment.confirmed",
]
HANG_S = 5.0

log = structlog.get_logger(__name__)


# --- the receiver, in its own process ----------------------------------------------------------


def serve_receiver(port: int) -> None:
    """/ok answers 200; /dead answers 500 to failing payments' events; /hang makes them wait."""

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        mode = request.match_info["mode"]
        if mode != "ok" and b'"pay_bad_' in body:
            if mode == "hang":
                await asyncio.sleep(HANG_S)
            return web.Response(status=500, text="down")
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/{mode}", handle)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


async def wait_for_port(port: int) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


# --- set-up -------------------------------------------------------------------------------------


def make_config(workdir: Path, dsn: str, url: str, **webhooks: Any) -> Config:
    mnemonic, secret = workdir / "mnemonic", workdir / "webhook-secret"
    mnemonic.write_text(TEST_MNEMONIC + "\n")
    secret.write_text(generate_secret() + "\n")
    for path in (mnemonic, secret):
        path.chmod(0o600)
    extra = "".join(f"{k} = {v}\n" for k, v in webhooks.items())
    (workdir / "ctripd.toml").write_text(
        f'[database]\ndsn = "{dsn}"\n[wallet]\nmnemonic_file = "{mnemonic}"\n'
        f'[webhooks]\nurl = "{url}"\nsecret_file = "{secret}"\n{extra}'
    )
    (workdir / "chains.yaml").write_text(
        "chains:\n  - name: anvil\n    chain_id: 31337\n    rpc: [http://127.0.0.1:1]\n"
        "    native: {symbol: ETH, decimals: 18}\n"
        "    treasury: '0x70997970C51812dc3A010C7d01b50e0d17dc79C8'\n"
    )
    return load_config(workdir / "ctripd.toml", env={})


async def insert_payments(pool: asyncpg.Pool, prefix: str, count: int) -> None:
    await pool.execute(
        "INSERT INTO payments (id, merchant, chain, chain_id, asset, decimals, amount, address,"
        " address_index, confirmations_required, expires_at)"
        " SELECT $1 || g, 'default', 'anvil', 31337, 'ETH', 18, 10^18, '0x' || lpad(to_hex(i), 40,"
        " '0'), i, 2, now() + interval '1 hour'"
        " FROM (SELECT g, nextval('address_index_seq') AS i FROM generate_series(1, $2) g) s",
        prefix,
        count,
    )


async def queue_events(
    pool: asyncpg.Pool,
    prefix: str,
    template: dict[str, Any],
    types: list[str] = EVENT_TYPES,
    endpoint_id: str | None = None,
) -> int:
    """`types` events per payment of `prefix`, each payment's in order, bodies like real ones,
    each with its delivery to `endpoint_id` (None: the configured URL)."""
    return int(
        (
            await pool.execute(
                "WITH ev AS ("
                " INSERT INTO events (id, payment_id, merchant, type, payload, created_at)"
                " SELECT e.id, e.pid, e.merchant, e.type, jsonb_build_object('id', e.id, 'type',"
                " e.type, 'created_at', now(), 'data', jsonb_build_object('payment',"
                " $2::jsonb || jsonb_build_object('id', e.pid))), now()"
                " FROM (SELECT 'evt_' || md5(p.id || t.type) AS id, p.id AS pid, p.merchant,"
                "       t.type, t.n"
                "       FROM payments p CROSS JOIN unnest($3::text[]) WITH ORDINALITY t(type, n)"
                "       WHERE p.id LIKE $1 || '%') e"
                " ORDER BY e.pid, e.n"
                " RETURNING id, seq, payment_id)"
                " INSERT INTO deliveries (id, event_id, event_seq, payment_id, endpoint_id,"
                " next_attempt_at)"
                " SELECT 'dlv_' || substr(id, 5), id, seq, payment_id, $4,"
                " now() - interval '1 second' FROM ev ORDER BY seq",
                prefix,
                orjson.dumps(template).decode(),
                types,
                endpoint_id,
            )
        ).split()[-1]
    )


async def fresh_event(pool: asyncpg.Pool, payment_id: str) -> str:
    """A healthy payment and its `payment.created`, written the way the API writes them."""
    await pool.execute(
        "INSERT INTO payments (id, merchant, chain, chain_id, asset, decimals, amount, address,"
        " address_index, confirmations_required, expires_at)"
        " SELECT $1, 'default', 'anvil', 31337, 'ETH', 18, 10^18,"
        " '0x' || lpad(to_hex(i), 40, '0'), i, 2, now() + interval '1 hour'"
        " FROM (SELECT nextval('address_index_seq') AS i) s",
        payment_id,
    )
    async with pool.acquire() as conn, conn.transaction():
        return await record_event(conn, "payment.created", payment_id, operator_url=True)  # type: ignore[arg-type]


async def pending(pool: asyncpg.Pool, prefix: str) -> int:
    return int(
        await pool.fetchval(
            "SELECT count(*) FROM deliveries"
            " WHERE status = 'pending' AND payment_id LIKE $1 || '%'",
            prefix,
        )
    )


# --- runs ---------------------------------------------------------------------------------------


async def throughput(
    pool: asyncpg.Pool, config: Config, prefix: str, payments: int, template: Any
) -> tuple[int, float, float]:
    """(events, deliveries/s, CPU seconds of this process per delivery)."""
    await insert_payments(pool, prefix, payments)
    events = await queue_events(pool, prefix, template)
    worker = WebhookWorker(pool, config)
    cpu, start = time.process_time(), time.perf_counter()
    worker.start()
    while True:
        left = await pending(pool, prefix)
        if not left:
            break
        await asyncio.sleep(0.05)
    elapsed, cpu_used = time.perf_counter() - start, time.process_time() - cpu
    await worker.stop(30)
    await worker.close()
    return events, events / elapsed, cpu_used / events


async def fresh_delays(
    pool: asyncpg.Pool, label: str, samples: int, wait: float = 60
) -> list[float]:
    """Record a fresh event every 100 ms; seconds from recording to delivery of each (those not
    delivered within `wait` s count as `inf`)."""
    ids = []
    for i in range(samples):
        ids.append(await fresh_event(pool, f"pay_fresh_{label}_{i}"))
        await asyncio.sleep(0.1)
    deadline = time.monotonic() + wait
    while True:
        rows = await pool.fetch(
            "SELECT extract(epoch FROM d.delivered_at - e.created_at)::float8 AS delay"
            " FROM events e JOIN deliveries d ON d.event_id = e.id"
            " WHERE e.id = ANY($1) AND d.status = 'delivered'",
            ids,
        )
        if len(rows) == len(ids) or time.monotonic() > deadline:
            delays = sorted(r["delay"] for r in rows)
            return delays + [float("inf")] * (len(ids) - len(delays))
        await asyncio.sleep(0.1)


async def failing_backlog(pool: asyncpg.Pool, bad_payments: int, template: Any) -> int:
    await insert_payments(pool, "pay_bad_", bad_payments)
    events = await queue_events(pool, "pay_bad_", template)
    # What the worker leaves behind once: first events failed, retry due; later ones held.
    await pool.execute(
        "UPDATE deliveries d SET attempts = 1, last_error = 'HTTP 500',"
        " next_attempt_at = now() - random() * interval '5 seconds'"
        " FROM events e WHERE e.id = d.event_id AND d.payment_id LIKE 'pay_bad_%' AND e.type = $1",
        EVENT_TYPES[0],
    )
    await pool.execute(
        "UPDATE deliveries d SET held = true"
        " FROM events e WHERE e.id = d.event_id AND d.payment_id LIKE 'pay_bad_%'"
        " AND e.type <> $1",
        EVENT_TYPES[0],
    )
    await pool.execute("ANALYZE events")
    await pool.execute("ANALYZE deliveries")
    return events


async def failing_attempts(pool: asyncpg.Pool) -> int:
    return int(
        await pool.fetchval(
            "SELECT count(*) FROM delivery_attempts a JOIN deliveries d ON d.id = a.delivery_id"
            " WHERE d.payment_id LIKE 'pay_bad_%'"
        )
    )


async def dead_endpoint(
    pool: asyncpg.Pool, config: Config, label: str
) -> tuple[list[float], float]:
    """Fresh-event delays while the worker retries the backlog, and failing attempts/s."""
    attempts_before = await failing_attempts(pool)
    worker = WebhookWorker(pool, config)
    worker.start()
    start = time.perf_counter()
    await asyncio.sleep(1)  # the worker is busy with the backlog
    delays = await fresh_delays(pool, label, 50)
    churn = (await failing_attempts(pool) - attempts_before) / (time.perf_counter() - start)
    await worker.stop(30)
    await worker.close()
    return delays, churn


def summary(delays: list[float]) -> str:
    def ms(x: float) -> str:
        return f"{x * 1000:.0f} ms" if x != float("inf") else "not delivered"

    p50 = statistics.median(delays)
    p95 = delays[int(len(delays) * 0.95) - 1]
    return f"p50 {ms(p50)}, p95 {ms(p95)}, max {ms(max(delays))}"


async def burst(
    pool: asyncpg.Pool,
    config: Config,
    template: Any,
    label: str,
    count: int,
    endpoint_id: str | None,
) -> list[float]:
    """Fresh-event delays behind `count` brand-new failing events queued to `endpoint_id`."""
    prefix = f"pay_bad_{label}_"
    merchant = "default" if endpoint_id is None else "burst"
    await pool.execute(
        "INSERT INTO payments (id, merchant, chain, chain_id, asset, decimals, amount, address,"
        " address_index, confirmations_required, expires_at)"
        " SELECT $1 || g, $3, 'anvil', 31337, 'ETH', 18, 10^18, '0x' || lpad(to_hex(i), 40,"
        " '0'), i, 2, now() + interval '1 hour'"
        " FROM (SELECT g, nextval('address_index_seq') AS i FROM generate_series(1, $2) g) s",
        prefix,
        count,
        merchant,
    )
    await queue_events(pool, prefix, template, EVENT_TYPES[:1], endpoint_id)
    await pool.execute("ANALYZE deliveries")
    worker = WebhookWorker(pool, config)
    worker.start()
    await asyncio.sleep(0.5)  # the worker is busy with the burst
    delays = await fresh_delays(pool, label, 20, wait=30)
    await worker.stop(30)
    await worker.close()
    # Out of the way of the next run.
    await pool.execute(
        "UPDATE deliveries SET status = 'failed' WHERE payment_id LIKE $1 || '%'"
        " AND status = 'pending'",
        prefix,
    )
    return delays


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def delay_verdict(delays: list[float]) -> str:
    ok = max(delays) < TARGET_FRESH_DELAY_S
    return f"target < {TARGET_FRESH_DELAY_S:g} s: {verdict(ok)}"


async def run(dsn: str, port: int, workdir: Path, events: int, dead: int, bursts: int) -> None:
    await asyncio.to_thread(db.migrate, dsn)
    pool = await db.create_pool(dsn, 2, 10)
    base = f"http://127.0.0.1:{port}"
    try:
        await insert_payments(pool, "pay_template_", 1)
        template = await load_payment(pool, "pay_template_1")
        assert template is not None
        template.pop("merchant")
        body_size = len(orjson.dumps({"data": {"payment": template}}))

        ok = make_config(workdir, dsn, f"{base}/ok")
        print(f"webhooks bench: Postgres {db.dsn_summary(dsn)}, receiver in its own process")
        print(f"  body ≈ {body_size} bytes, signed; worker = one asyncio thread in this process")

        n, rate, cpu = await throughput(pool, ok, "pay_tp_", events // 4, template)
        concurrency = ok.webhooks.concurrency
        print(
            f"  {n:,} queued events, concurrency {concurrency}: {rate:,.0f} deliveries/s"
            f" (target ≥ {TARGET_DELIVERIES_PER_S}/s: {verdict(rate >= TARGET_DELIVERIES_PER_S)});"
            f" worker CPU {cpu * 1e3:.2f} ms/delivery = {1 / cpu:,.0f}/s per core"
        )
        one = make_config(workdir, dsn, f"{base}/ok", concurrency=1)
        n1, rate1, _ = await throughput(pool, one, "pay_tp1_", max(1, events // 20), template)
        print(f"  comparison, concurrency 1, {n1:,} events: {rate1:,.0f} deliveries/s")

        idle_worker = WebhookWorker(pool, ok)
        idle_worker.start()
        idle = await fresh_delays(pool, "idle", 20)
        await idle_worker.stop(10)
        await idle_worker.close()
        print(f"  fresh event on an idle queue: {summary(idle)}")

        backlog = await failing_backlog(pool, dead // 4, template)
        print(
            f"  dead endpoint: {backlog:,} events of {dead // 4:,} payments failing, first"
            " events' retries all due now, later events waiting behind them"
        )
        dead_cfg = make_config(workdir, dsn, f"{base}/dead")
        delays, churn = await dead_endpoint(pool, dead_cfg, "dead")
        print(
            f"    answering 500: fresh event delay {summary(delays)}"
            f" ({delay_verdict(delays)});"
            f" meanwhile {churn:,.0f} failing attempts/s"
        )
        await pool.execute(
            "UPDATE deliveries SET next_attempt_at = now() - random() * interval '5 seconds'"
            " WHERE payment_id LIKE 'pay_bad_%' AND status = 'pending' AND attempts > 0"
        )
        hang_cfg = make_config(workdir, dsn, f"{base}/hang", timeout=2)
        delays, churn = await dead_endpoint(pool, hang_cfg, "hang")
        print(
            f"    hanging past the 2 s timeout: fresh event delay {summary(delays)}"
            f" ({delay_verdict(delays)});"
            f" meanwhile {churn:,.1f} failing attempts/s"
        )

        await pool.execute("INSERT INTO merchants (id, name) VALUES ('burst', 'burst')")
        for mode in ("dead", "hang"):
            await pool.execute(
                "INSERT INTO webhook_endpoints (id, merchant, url, secret)"
                " VALUES ($1, 'burst', $2, $3)",
                f"we_burst_{mode}",
                f"{base}/{mode}",
                generate_secret(),
            )
        print(
            f"  burst: {bursts:,} brand-new events of another merchant, all due before the"
            " fresh ones, to its endpoint that fails every one of them"
        )
        for mode, timeout in (("dead", 10), ("hang", 2)):
            cfg = make_config(
                workdir, dsn, f"{base}/{mode}", timeout=timeout, allow_private_targets="true"
            )
            fair = await burst(pool, cfg, template, f"b{mode}", bursts, f"we_burst_{mode}")
            one_lane = await burst(pool, cfg, template, f"s{mode}", bursts, None)
            what = "answering 500" if mode == "dead" else f"hanging past the {timeout} s timeout"
            print(
                f"    {what}: fresh event delay {summary(fair)} ({delay_verdict(fair)});"
                f" comparison, the burst queued to the fresh event's own endpoint:"
                f" {summary(one_lane)}"
            )
    finally:
        await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--dead", type=int, default=100_000)
    parser.add_argument("--burst", type=int, default=25_000)
    args = parser.parse_args()
    configure_logging("warning", "console")
    port = free_port()
    receiver = multiprocessing.get_context("spawn").Process(
        target=serve_receiver, args=(port,), daemon=True
    )
    receiver.start()
    try:
        asyncio.run(wait_for_port(port))
        with postgres() as dsn, tempfile.TemporaryDirectory(prefix="ctwh") as workdir:
            asyncio.run(run(dsn, port, Path(workdir), args.events, args.dead, args.burst))
    finally:
        receiver.terminate()
        receiver.join(5)


if __name__ == "__main__":
    main()
