"""Webhook delivery against a real Postgres and a small aiohttp receiver written here.

Signatures are checked with the `standardwebhooks` package, not with ctripd's signer. Time is
moved by rewriting `next_attempt_at` in the database, never by sleeping.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import stat
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from multidict import CIMultiDict
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError
from structlog.testing import capture_logs

from ctripd.config import Config, ConfigError
from ctripd.http.keys import WEBHOOKS
from ctripd.jobs.signing import Signer, generate_secret
from ctripd.jobs.webhooks import WebhookWorker
from ctripd.ledger.events import record_event, redeliver

SCHEDULE = [5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400]


@dataclass
class Received:
    id: str
    headers: CIMultiDict[str]
    body: bytes

    @property
    def payload(self) -> dict[str, Any]:
        return dict(json.loads(self.body))

    @property
    def payment_id(self) -> str:
        return str(self.payload["data"]["payment"]["id"])


Reply = Callable[[Received], Awaitable[web.StreamResponse]]


class Receiver:
    """A merchant endpoint: records every request, answers with `reply` (200 by default)."""

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.requests: list[Received] = []
        self.reply: Reply | None = None
        # Handlers that hang wait on this; set at teardown so nothing is left running.
        self.release = asyncio.Event()
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        self.release.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        headers = CIMultiDict(request.headers)
        received = Received(headers["webhook-id"], headers, await request.read())
        self.requests.append(received)
        self._changed.set()
        if self.reply is not None:
            return await self.reply(received)
        return web.Response(text="ok")

    async def hang(self) -> None:
        await self.release.wait()

    async def wait_until(self, predicate: Callable[[], bool], within: float = 10) -> None:
        async with asyncio.timeout(within):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    def ids(self) -> list[str]:
        return [r.id for r in self.requests]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.stop()


def write_secret(path: Path, secret: str | None = None) -> str:
    secret = secret or generate_secret()
    path.write_text(secret + "\n")
    path.chmod(stat.S_IRUSR | stat.S_IWUSR)
    return secret


@pytest.fixture
def hook_config(write_config, tmp_path: Path):  # type: ignore[no-untyped-def]
    """`make(url, **webhooks)` → (Config, secret) with a fresh `whsec_` secret file."""

    def make(url: str, **webhooks: Any) -> tuple[Config, str]:
        secret = write_secret(tmp_path / "webhook-secret")
        section = {"url": url, "secret_file": str(tmp_path / "webhook-secret"), **webhooks}
        return write_config(toml={"webhooks": section}), secret

    return make


@pytest.fixture
async def make_worker(pool: asyncpg.Pool) -> AsyncIterator[Any]:
    workers: list[WebhookWorker] = []

    def make(config: Config, worker_pool: asyncpg.Pool | None = None, **kw: Any) -> WebhookWorker:
        worker = WebhookWorker(worker_pool or pool, config, **kw)
        workers.append(worker)
        return worker

    yield make
    for worker in workers:
        await worker.stop(5)
        await worker.close()


async def new_payment(pool: asyncpg.Pool, merchant: str = "default") -> str:
    """A payment row inserted directly, with its `payment.created` event."""
    payment_id = f"pay_{uuid.uuid4().hex}"
    index = await pool.fetchval("SELECT nextval('address_index_seq')")
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO payments (id, merchant, chain, chain_id, asset, decimals, amount,"
            " address, address_index, confirmations_required, expires_at)"
            " VALUES ($1, $2, 'anvil', 31337, 'ETH', 18, $3, $4, $5, 2, now() + interval '1 hour')",
            payment_id,
            merchant,
            10**18,
            f"0x{index:040x}",
            index,
        )
        await record_event(conn, "payment.created", payment_id, operator_url=True)  # type: ignore[arg-type]
    return payment_id


async def add_event(pool: asyncpg.Pool, payment_id: str, event_type: str) -> str:
    async with pool.acquire() as conn, conn.transaction():
        return await record_event(conn, event_type, payment_id, operator_url=True)  # type: ignore[arg-type]


async def event_ids(pool: asyncpg.Pool, payment_id: str) -> list[str]:
    rows = await pool.fetch("SELECT id FROM events WHERE payment_id = $1 ORDER BY seq", payment_id)
    return [r["id"] for r in rows]


async def event_row(pool: asyncpg.Pool, event_id: str) -> asyncpg.Record:
    """The event with its one delivery (to the configured URL)."""
    (row,) = await pool.fetch(
        "SELECT e.*, d.id AS delivery_id, d.status, d.attempts, d.held, d.next_attempt_at,"
        " d.delivered_at, d.last_error FROM events e JOIN deliveries d ON d.event_id = e.id"
        " WHERE e.id = $1",
        event_id,
    )
    return row


async def attempts(pool: asyncpg.Pool, event_id: str) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT a.* FROM delivery_attempts a JOIN deliveries d ON d.id = a.delivery_id"
        " WHERE d.event_id = $1 ORDER BY a.id",
        event_id,
    )


async def make_due(pool: asyncpg.Pool) -> None:
    """Time passes: every pending delivery (leases included) comes due."""
    await pool.execute("UPDATE deliveries SET next_attempt_at = now() WHERE status = 'pending'")


async def settled_attempts(pool: asyncpg.Pool, count: int) -> None:
    """Wait until the background loop has logged `count` attempts."""
    async with asyncio.timeout(10):
        while True:
            if await pool.fetchval("SELECT count(*) FROM delivery_attempts") >= count:
                return
            await asyncio.sleep(0.01)


async def drain(worker: WebhookWorker) -> int:
    total = 0
    while n := await worker.run_once():
        total += n
    return total


def status_reply(status: int, body: str = "", headers: dict[str, str] | None = None) -> Reply:
    async def reply(_: Received) -> web.StreamResponse:
        return web.Response(status=status, text=body, headers=headers)

    return reply


# --- signing, checked by the reference implementation -------------------------------------------


async def test_delivery_is_signed_per_standard_webhooks(
    pool, hook_config, make_worker, receiver
) -> None:
    config, secret = hook_config(receiver.url)
    payment_id = await new_payment(pool)
    (event_id,) = await event_ids(pool, payment_id)

    assert await make_worker(config).run_once() == 1

    (req,) = receiver.requests
    assert req.id == event_id
    assert req.headers["Content-Type"] == "application/json"
    verified = Webhook(secret).verify(req.body, req.headers)
    assert verified["id"] == event_id
    assert verified["type"] == "payment.created"
    assert verified["data"]["payment"]["id"] == payment_id
    stored = await event_row(pool, event_id)
    assert req.payload == stored["payload"]
    # A receiver holding another secret rejects it: the check above is a real one.
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        Webhook(generate_secret()).verify(req.body, req.headers)
    assert stored["status"] == "delivered"
    assert stored["delivered_at"] is not None
    (attempt,) = await attempts(pool, event_id)
    assert attempt["http_status"] == 200
    assert attempt["error"] is None
    assert attempt["response_body"] == "ok"
    assert attempt["url"] == receiver.url


async def test_rotation_sends_both_signatures(
    pool, hook_config, tmp_path, make_worker, receiver
) -> None:
    old = write_secret(tmp_path / "old-secret")
    config, new = hook_config(receiver.url, previous_secret_file=str(tmp_path / "old-secret"))
    await new_payment(pool)

    await make_worker(config).run_once()

    (req,) = receiver.requests
    signatures = req.headers["webhook-signature"].split(" ")
    assert len(signatures) == 2 and all(s.startswith("v1,") for s in signatures)
    # Receivers on either secret accept the same delivery.
    assert Webhook(new).verify(req.body, req.headers)["id"] == req.id
    assert Webhook(old).verify(req.body, req.headers)["id"] == req.id


async def test_the_same_bytes_are_signed_on_every_attempt(
    pool, hook_config, make_worker, receiver
) -> None:
    config, secret = hook_config(receiver.url)
    await new_payment(pool)
    receiver.reply = status_reply(500)
    worker = make_worker(config)
    await worker.run_once()
    await make_due(pool)
    receiver.reply = None
    await worker.run_once()

    first, second = receiver.requests
    assert first.id == second.id
    assert first.body == second.body
    for req in (first, second):
        Webhook(secret).verify(req.body, req.headers)


# --- retries ------------------------------------------------------------------------------------


async def test_fails_three_times_then_succeeds(pool, hook_config, make_worker, receiver) -> None:
    config, _ = hook_config(receiver.url)
    payment_id = await new_payment(pool)
    (event_id,) = await event_ids(pool, payment_id)
    failures = 0

    async def flaky(_: Received) -> web.StreamResponse:
        nonlocal failures
        if failures < 3:
            failures += 1
            return web.Response(status=500, text="x" * 5000)
        return web.Response(status=204)

    receiver.reply = flaky
    worker = make_worker(config)
    for attempt in (1, 2, 3):
        before = datetime.now(UTC)
        assert await worker.run_once() == 1
        assert await worker.run_once() == 0, "the retry must wait for its time"
        row = await event_row(pool, event_id)
        assert row["status"] == "pending"
        assert row["last_error"] == "HTTP 500"
        delay = (row["next_attempt_at"] - before).total_seconds()
        expected = SCHEDULE[attempt - 1]
        assert 0.9 * expected - 1 <= delay <= 1.1 * expected + 1, (attempt, delay)
        await make_due(pool)
    assert await worker.run_once() == 1

    row = await event_row(pool, event_id)
    assert row["status"] == "delivered"
    assert row["last_error"] is None
    log = await attempts(pool, event_id)
    assert [a["http_status"] for a in log] == [500, 500, 500, 204]
    assert [a["error"] for a in log] == ["HTTP 500"] * 3 + [None]
    assert all(len(a["response_body"]) == 1024 for a in log[:3]), "bodies are truncated to 1 KiB"
    assert receiver.ids() == [event_id] * 4


async def test_last_attempt_marks_failed_and_redeliver_requeues(
    pool, hook_config, make_worker, receiver
) -> None:
    config, _ = hook_config(receiver.url, retry_schedule=[1, 1])
    payment_id = await new_payment(pool)
    (event_id,) = await event_ids(pool, payment_id)
    receiver.reply = status_reply(503)
    worker = make_worker(config)
    for _ in range(3):
        assert await worker.run_once() == 1
        await make_due(pool)
    assert await worker.run_once() == 0
    row = await event_row(pool, event_id)
    assert row["status"] == "failed"
    assert row["last_error"] == "HTTP 503"

    async with pool.acquire() as conn:
        event = await redeliver(conn, event_id, None, operator_url=True)
    assert event["status"] == "pending"
    assert len(event["deliveries"][0]["attempts"]) == 3, "the attempt log is kept"
    receiver.reply = None
    assert await worker.run_once() == 1
    row = await event_row(pool, event_id)
    assert row["status"] == "delivered"
    assert [a["http_status"] for a in await attempts(pool, event_id)] == [503, 503, 503, 200]


async def test_429_with_retry_after_seconds_and_date(
    pool, hook_config, make_worker, receiver
) -> None:
    config, _ = hook_config(receiver.url)
    first = await new_payment(pool)
    second = await new_payment(pool)
    third = await new_payment(pool)
    when = datetime.now(UTC) + timedelta(seconds=600)
    answers = {
        first: {"Retry-After": "120"},
        second: {"Retry-After": format_datetime(when, usegmt=True)},
        third: {"Retry-After": str(10 * 86400)},
    }

    async def limited(req: Received) -> web.StreamResponse:
        return web.Response(status=429, headers=answers[req.payment_id])

    receiver.reply = limited
    before = datetime.now(UTC)
    assert await make_worker(config).run_once() == 3

    def delay_of(row: asyncpg.Record) -> float:
        return float((row["next_attempt_at"] - before).total_seconds())

    rows = {pid: await event_row(pool, (await event_ids(pool, pid))[0]) for pid in answers}
    assert 119 <= delay_of(rows[first]) <= 125
    assert 595 <= delay_of(rows[second]) <= 605
    # A receiver cannot push a retry past the schedule's longest delay.
    assert 86390 <= delay_of(rows[third]) <= 86410
    for row in rows.values():
        assert row["status"] == "pending"
        assert row["last_error"] == "HTTP 429"


async def test_receiver_slower_than_the_timeout(pool, hook_config, make_worker, receiver) -> None:
    config, _ = hook_config(receiver.url, timeout=1)
    payment_id = await new_payment(pool)
    (event_id,) = await event_ids(pool, payment_id)

    async def slow(_: Received) -> web.StreamResponse:
        await receiver.hang()
        return web.Response()

    receiver.reply = slow
    assert await make_worker(config).run_once() == 1

    row = await event_row(pool, event_id)
    assert row["status"] == "pending"
    assert row["last_error"] == "timeout after 1s"
    (attempt,) = await attempts(pool, event_id)
    assert attempt["http_status"] is None
    assert attempt["error"] == "timeout after 1s"
    assert attempt["latency_ms"] >= 900


async def test_redirect_is_not_followed(pool, hook_config, make_worker, receiver) -> None:
    config, _ = hook_config(receiver.url)
    payment_id = await new_payment(pool)
    receiver.reply = status_reply(302, headers={"Location": receiver.url})
    assert await make_worker(config).run_once() == 1
    row = await event_row(pool, (await event_ids(pool, payment_id))[0])
    assert row["status"] == "pending"
    assert row["last_error"] == "HTTP 302"
    assert len(receiver.requests) == 1


async def test_binary_answers_are_logged_safely(pool, hook_config, make_worker, receiver) -> None:
    config, _ = hook_config(receiver.url)
    odd, plain = await new_payment(pool), await new_payment(pool)

    async def binary(req: Received) -> web.StreamResponse:
        if req.payment_id == odd:
            return web.Response(status=500, body=b"\x00\xff\xfe boom")
        return web.Response()

    receiver.reply = binary
    assert await make_worker(config).run_once() == 2
    (broken,) = await attempts(pool, (await event_ids(pool, odd))[0])
    assert broken["response_body"] == "\ufffd\ufffd\ufffd boom"
    (fine,) = await attempts(pool, (await event_ids(pool, plain))[0])
    assert fine["http_status"] == 200


# --- order per payment --------------------------------------------------------------------------


async def test_order_per_payment_with_a_failing_first_event(
    pool, hook_config, make_worker, receiver
) -> None:
    config, _ = hook_config(receiver.url)
    slow_payment = await new_payment(pool)
    await add_event(pool, slow_payment, "payment.detected")
    await add_event(pool, slow_payment, "payment.confirmed")
    other_payment = await new_payment(pool)
    created, detected, confirmed = await event_ids(pool, slow_payment)
    (other,) = await event_ids(pool, other_payment)
    failures = 0

    async def fail_first(req: Received) -> web.StreamResponse:
        nonlocal failures
        if req.id == created and failures < 2:
            failures += 1
            return web.Response(status=500)
        return web.Response()

    receiver.reply = fail_first
    worker = make_worker(config)
    await drain(worker)
    # The other payment is not held back; the failing payment's later events wait.
    assert receiver.ids() == [created, other] or receiver.ids() == [other, created]
    assert await attempts(pool, detected) == []
    # Held out of the due range while the first event is retried.
    assert [(await event_row(pool, i))["held"] for i in (detected, confirmed)] == [True, True]
    # An event recorded meanwhile waits as well.
    swept = await add_event(pool, slow_payment, "payment.swept")
    await make_due(pool)
    await drain(worker)
    assert receiver.ids().count(created) == 2
    assert await attempts(pool, detected) == []
    assert await attempts(pool, swept) == []
    await make_due(pool)
    await drain(worker)

    sent = [i for i in receiver.ids() if i != other]
    assert sent == [created, created, created, detected, confirmed, swept]
    for event_id in (created, detected, confirmed, swept, other):
        row = await event_row(pool, event_id)
        assert row["status"] == "delivered"
        assert not row["held"]


async def test_a_failed_event_does_not_hold_back_later_ones(
    pool, hook_config, make_worker, receiver
) -> None:
    config, _ = hook_config(receiver.url, retry_schedule=[1])
    payment_id = await new_payment(pool)
    await add_event(pool, payment_id, "payment.canceled")
    created, canceled = await event_ids(pool, payment_id)

    async def reject_created(req: Received) -> web.StreamResponse:
        return web.Response(status=400 if req.id == created else 200)

    receiver.reply = reject_created
    worker = make_worker(config)
    await drain(worker)
    await make_due(pool)
    await drain(worker)

    assert receiver.ids() == [created, created, canceled]
    assert (await event_row(pool, created))["status"] == "failed"
    assert (await event_row(pool, canceled))["status"] == "delivered"


# --- crashes, restarts and several workers ------------------------------------------------------


async def test_receiver_down_across_a_restart_loses_nothing(pool, hook_config, make_client) -> None:
    port = free_port()
    receiver = Receiver(port)
    config, secret = hook_config(receiver.url)
    payments = [await new_payment(pool) for _ in range(3)]
    await add_event(pool, payments[0], "payment.detected")

    client = await make_client(config)
    worker: WebhookWorker = client.server.app[WEBHOOKS]
    assert await drain(worker) == 3  # the three heads; the fourth waits behind its payment
    refused = await pool.fetch("SELECT error FROM delivery_attempts")
    assert len(refused) == 3 and all("Connect" in r["error"] for r in refused)
    # A crash mid-delivery: claimed (leased), never settled.
    await make_due(pool)
    lost, *_ = await worker._claim(worker.concurrency, [])
    await client.close()

    await receiver.start()
    try:
        client = await make_client(config)
        worker = client.server.app[WEBHOOKS]
        await make_due(pool)  # the retry time and the crashed lease have passed
        await drain(worker)
        await client.close()
    finally:
        await receiver.stop()

    expected = [i for p in payments for i in await event_ids(pool, p)]
    assert sorted(receiver.ids()) == sorted(expected), "each event delivered exactly once"
    assert lost.event_id in receiver.ids()
    for req in receiver.requests:
        Webhook(secret).verify(req.body, req.headers)
    statuses = await pool.fetch("SELECT DISTINCT status FROM deliveries")
    assert [r["status"] for r in statuses] == ["delivered"]


async def test_two_workers_on_one_database_deliver_each_event_once(
    pool, db_dsn, hook_config, make_worker, receiver
) -> None:
    config, _ = hook_config(receiver.url, concurrency=4)
    payments = [await new_payment(pool) for _ in range(20)]
    for payment_id in payments:
        await add_event(pool, payment_id, "payment.detected")
        await add_event(pool, payment_id, "payment.confirmed")

    async def jittery(req: Received) -> web.StreamResponse:
        await asyncio.sleep(0.001 * (hash(req.id) % 5))
        return web.Response()

    receiver.reply = jittery
    from ctripd import db

    other_pool = await db.create_pool(db_dsn, min_size=1, max_size=5)
    try:
        one, two = make_worker(config), make_worker(config, other_pool)
        counts = list(await asyncio.gather(drain(one), drain(two)))
        # A worker stops when what is left waits behind the other's deliveries in flight.
        while more := await asyncio.gather(drain(one), drain(two)):
            if not any(more):
                break
            counts = [a + b for a, b in zip(counts, more, strict=True)]
    finally:
        await other_pool.close()

    assert sum(counts) == 60
    assert all(c > 0 for c in counts), "both workers took part"
    assert len(receiver.ids()) == 60
    assert len(set(receiver.ids())) == 60, "no event delivered twice"
    assert await pool.fetchval("SELECT count(*) FROM delivery_attempts") == 60
    for payment_id in payments:
        got = [r.id for r in receiver.requests if r.payment_id == payment_id]
        assert got == await event_ids(pool, payment_id), "order per payment holds"


async def test_a_lost_lease_does_not_overwrite_the_new_owner(
    pool, hook_config, make_worker, receiver
) -> None:
    config, _ = hook_config(receiver.url)
    payment_id = await new_payment(pool)
    (event_id,) = await event_ids(pool, payment_id)
    worker = make_worker(config)
    (stale,) = await worker._claim(worker.concurrency, [])
    await make_due(pool)  # the lease ran out while its worker stalled
    (current,) = await worker._claim(worker.concurrency, [])  # another worker took it over

    receiver.reply = status_reply(500)
    await worker._deliver(stale)  # the stalled worker wakes up, and its attempt fails
    row = await event_row(pool, event_id)
    assert row["status"] == "pending"
    assert row["next_attempt_at"] == current.lease, "the stale result is logged, not applied"
    receiver.reply = None
    await worker._deliver(current)
    assert (await event_row(pool, event_id))["status"] == "delivered"
    assert [a["http_status"] for a in await attempts(pool, event_id)] == [500, 200]


async def test_an_attempt_the_database_cannot_record_is_sent_again(
    pool, db_dsn, hook_config, make_worker, receiver
) -> None:
    config, _ = hook_config(receiver.url)
    payment_id = await new_payment(pool)
    (event_id,) = await event_ids(pool, payment_id)
    from ctripd import db

    doomed_pool = await db.create_pool(db_dsn, min_size=1, max_size=1)
    doomed = make_worker(config, doomed_pool)
    (claimed,) = await doomed._claim(doomed.concurrency, [])
    await doomed_pool.close()  # the database goes away during the request
    with capture_logs() as logs:
        await doomed._deliver(claimed)
    assert [e["event"] for e in logs] == ["webhook.settle_failed"]
    assert await attempts(pool, event_id) == []

    await make_due(pool)  # the lease ends
    assert await make_worker(config).run_once() == 1
    assert receiver.ids() == [event_id, event_id], "at least once"
    assert (await event_row(pool, event_id))["status"] == "delivered"


# --- the background loop ------------------------------------------------------------------------


async def test_loop_delivers_new_events_and_stops_gracefully(
    pool, hook_config, make_worker, receiver
) -> None:
    config, _ = hook_config(receiver.url)
    worker = make_worker(config)
    worker.start()
    first = await new_payment(pool)
    await receiver.wait_until(lambda: len(receiver.requests) == 1)
    assert receiver.requests[0].payment_id == first

    gate = asyncio.Event()

    async def held(_: Received) -> web.StreamResponse:
        await gate.wait()
        return web.Response()

    receiver.reply = held
    second = await new_payment(pool)
    await receiver.wait_until(lambda: len(receiver.requests) == 2)
    stopping = asyncio.create_task(worker.stop(30))
    await asyncio.sleep(0.05)
    assert not stopping.done(), "stop waits for the delivery in flight"
    gate.set()
    await asyncio.wait_for(stopping, 10)
    (event_id,) = await event_ids(pool, second)
    assert (await event_row(pool, event_id))["status"] == "delivered"


async def test_fresh_events_pass_hanging_retries(pool, hook_config, make_worker, receiver) -> None:
    config, _ = hook_config(receiver.url, concurrency=4, timeout=30)
    stuck = [await new_payment(pool) for _ in range(6)]
    # These have failed before: retries, all due now, and their endpoint hangs.
    await pool.execute("UPDATE deliveries SET attempts = 1")

    async def hang_stuck(req: Received) -> web.StreamResponse:
        if req.payment_id in stuck:
            await receiver.hang()
        return web.Response()

    receiver.reply = hang_stuck
    worker = make_worker(config)
    worker.start()
    await receiver.wait_until(lambda: len(receiver.requests) == 2)
    fresh = await new_payment(pool)
    await receiver.wait_until(lambda: any(r.payment_id == fresh for r in receiver.requests))
    assert len(receiver.requests) == 3, "one endpoint's retries hold at most 2 of the 4 slots"
    receiver.release.set()
    await worker.stop(10)


async def test_without_url_events_stay_in_the_outbox(pool, write_config, make_client) -> None:
    config = write_config()
    payment_id = await new_payment(pool)
    with capture_logs() as logs:
        client = await make_client(config)
    assert [e["event"] for e in logs].count("webhooks.url_unset") == 1
    assert await client.server.app[WEBHOOKS].run_once() == 0
    (event_id,) = await event_ids(pool, payment_id)
    assert (await event_row(pool, event_id))["status"] == "pending"
    assert await attempts(pool, event_id) == []


# --- secrets ------------------------------------------------------------------------------------


async def test_no_secret_material_in_any_log_line(
    pool, hook_config, tmp_path, make_worker, receiver, write_config
) -> None:
    old = write_secret(tmp_path / "old-secret")
    # Credentials in the URL are secrets too.
    url = receiver.url.replace("//", "//hook:pass-w0rd@") + "?token=t0ken-xyz"
    config, secret = hook_config(
        url, previous_secret_file=str(tmp_path / "old-secret"), retry_schedule=[1]
    )
    replies = [500, 429]  # to the first payment's event; the second's is delivered
    first: list[str] = []

    async def mixed(req: Received) -> web.StreamResponse:
        status = replies.pop(0) if req.payment_id in first and replies else 200
        return web.Response(status=status, headers={"Retry-After": "1"})

    receiver.reply = mixed
    first.append(await new_payment(pool))
    with capture_logs() as logs:
        worker = make_worker(config)
        worker.start()
        await settled_attempts(pool, 1)
        await make_due(pool)
        await new_payment(pool)
        await settled_attempts(pool, 3)
        await worker.stop(10)
    events = {e["event"] for e in logs}
    assert events >= {"webhooks.started", "webhook.retry", "webhook.failed", "webhooks.stopped"}
    assert receiver.requests[0].headers["Authorization"].startswith("Basic ")
    stored_urls = [r["url"] for r in await pool.fetch("SELECT url FROM delivery_attempts")]
    assert stored_urls == [receiver.url] * 3

    bad = tmp_path / "bad-secret"
    write_secret(bad, "whsec_" + base64.b64encode(b"short").decode())
    with pytest.raises(ConfigError) as error:
        Signer.from_config(write_config(toml={"webhooks": {"secret_file": str(bad)}}))
    rendered = [repr(e) for e in logs] + [str(error.value), repr(worker.configured)]
    for value in (secret, old, "whsec_" + base64.b64encode(b"short").decode()):
        for needle in (value, value.removeprefix("whsec_")):
            assert not any(needle in line for line in rendered), "a secret was logged"
    for needle in ("pass-w0rd", "t0ken-xyz"):
        assert not any(needle in line for line in rendered + stored_urls)
    assert "decode to 24..64 bytes" in str(error.value)


async def test_an_event_keeps_integers_beyond_64_bits(pool) -> None:  # type: ignore[no-untyped-def]
    payment_id = await new_payment(pool)
    async with pool.acquire() as conn, conn.transaction():
        event_id = await record_event(
            conn, "payment.confirmed", payment_id, extra={"n": 2**70}, operator_url=True
        )
    payload = await pool.fetchval("SELECT payload FROM events WHERE id = $1", event_id)
    assert payload["data"]["n"] == 2**70 and payload["id"] == event_id
