"""Webhook delivery from the outbox: claim a delivery, sign, POST, log the attempt, settle.

An event is one `events` row; each endpoint it goes to has its own `deliveries` row: the
`[webhooks] url` of the config (the default merchant's, `endpoint_id` NULL) or a merchant's
webhook endpoint, signed with that endpoint's secret (and its previous one while a rotation
overlaps). Every endpoint receives the event's own id as `webhook-id`. Endpoints of merchants are
reached through the SSRF guard of `jobs.targets`; the operator's configured URL is not.

Delivery is at-least-once. A claim is a lease (see `claim_deliveries` in sql/webhooks.sql): it
moves the delivery's `next_attempt_at` past the request timeout in the same statement that
selects it (`FOR UPDATE SKIP LOCKED`), so no lock is held over the HTTP call, two workers never
hold the same delivery, and the deliveries of a worker that died come due again when the lease
ends.

Order per payment and endpoint: a delivery is claimed only when no earlier delivery of its
payment to its endpoint is `pending` (queued, retrying or in flight). A `failed` one (retries
exhausted) no longer holds back the later ones: the merchant sees it failed and can redeliver
it, but the payment's newer events, which carry the newer payment state, are not stuck behind it
for ever. A redelivered event is sent whenever it comes due, possibly after newer events of its
payment. While a delivery is being retried, the later ones of its payment to its endpoint are
`held` out of the due range, so that claims stay cheap however large a failing backlog grows.

Fairness: each endpoint (lane) may hold at most three quarters of the worker's slots, a claim
takes the lanes round-robin, and the last quarter of the free slots is kept for one first
attempt each of endpoints with no first attempt in flight (retries, and endpoints whose first
attempts are already out, get only the rest). So endpoints that fail or hang, however large
their backlogs, cannot delay a healthy endpoint's fresh event by more than one claim round, nor
can the endpoint's own hanging retries. Within a lane first attempts are claimed before
retries, and one lane's retries hold at most three quarters of its share, so an endpoint that
fails for some payments cannot hold up its other payments either.

New events are found by polling every `POLL_INTERVAL`, not by LISTEN/NOTIFY: a NOTIFY in the
transactions that record events serializes their commits (measured here: event-writing
transactions/s roughly halved), while an idle claim costs one index probe.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import structlog

from ctripd.config import Config
from ctripd.db import queries
from ctripd.jobs.signing import Signer, parse_secret
from ctripd.jobs.targets import GuardedResolver, check_url
from ctripd.retry_after import parse_retry_after

Q = queries("webhooks")
log = structlog.get_logger(__name__)

POLL_INTERVAL = 0.25
MAX_RESPONSE_BYTES = 1024
MAX_ERROR_CHARS = 500
# The lease outlives the request timeout by this much, to settle the attempt in the database.
LEASE_MARGIN = 10.0
JITTER = 0.1
USER_AGENT = "ctripd-webhooks/1"
# InternalClientError: a pooled connection whose server died mid-message (a killed postmaster)
# refuses queries until asyncpg sees it closed; the claim loop must outlive it.
DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)


@dataclass(frozen=True)
class Target:
    """Where a delivery goes and how it is signed; `guarded` for merchants' endpoints. The URL
    may carry credentials: never in its repr."""

    url: str = field(repr=False)
    signer: Signer
    guarded: bool

    @property
    def log_url(self) -> str:
        return redact_url(self.url)


@dataclass(frozen=True)
class Claimed:
    id: str
    event_id: str
    payment_id: str | None
    # The endpoint's id, '' for the configured URL.
    lane: str
    attempt: int
    lease: datetime
    retry: bool
    body: bytes
    # None: the endpoint's stored secret is unusable (the attempt fails, the others go on).
    target: Target | None

    @property
    def log_url(self) -> str:
        return self.target.log_url if self.target is not None else ""


@dataclass(frozen=True)
class Outcome:
    attempted_at: datetime
    latency_ms: int
    http_status: int | None = None
    error: str | None = None
    response_body: str | None = None
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return self.http_status is not None and 200 <= self.http_status < 300


@dataclass
class Ended:
    """An attempt waiting to be settled; `settled` tells whether the lease still held."""

    event: Claimed
    outcome: Outcome
    status: str
    next_attempt_at: datetime
    settled: asyncio.Future[bool] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


def retry_delay(
    attempt: int, schedule: list[int], retry_after: float | None = None
) -> float | None:
    """Seconds until the next attempt after failed attempt number `attempt` (1-based), or None
    when it was the last. The schedule's entries are the delays; each gets ±10 % jitter so that
    events failed together do not come back together, within the schedule's longest delay, the
    cap. A later `Retry-After` is honored, up to the cap."""
    if attempt > len(schedule):
        return None
    cap = float(max(schedule))
    delay = min(schedule[attempt - 1] * random.uniform(1 - JITTER, 1 + JITTER), cap)
    if retry_after is not None:
        delay = max(delay, min(retry_after, cap))
    return delay


def redact_url(url: str) -> str:
    """The URL without user info or query string, which may carry credentials."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _text(value: str) -> str:
    """Postgres text cannot hold NUL; one odd answer must not fail a whole batch of attempts."""
    return value.replace("\x00", "\ufffd")


def _describe(exc: BaseException) -> str:
    return _text(f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS])


class WebhookWorker:
    """Delivers outbox events to their endpoints. Tests drive `run_once()`; the daemon `start()`s
    a loop that runs the same claim and delivery code continuously."""

    def __init__(
        self, pool: asyncpg.Pool, config: Config, *, poll_interval: float = POLL_INTERVAL
    ) -> None:
        wh = config.webhooks
        self.pool = pool
        self.allow_private = wh.allow_private_targets
        self.schedule = list(wh.retry_schedule)
        self.timeout = float(wh.timeout)
        self.concurrency = max(1, wh.concurrency)
        # Slots that retries may not take, kept for first attempts.
        self.reserved = max(1, self.concurrency // 4) if self.concurrency > 1 else 0
        self.min_batch = max(1, self.concurrency // 4)
        # Slots one endpoint may hold at most, the rest staying for the others; and its retries,
        # leaving it room for first attempts.
        self.lane_cap = max(1, self.concurrency - self.concurrency // 4)
        self.lane_retry_cap = max(1, self.lane_cap - max(1, self.lane_cap // 4))
        self.poll_interval = poll_interval
        # The config's endpoint, the default merchant's: its events wait while it is unset.
        self.configured = (
            Target(wh.url, Signer.from_config(config), guarded=False) if wh.url else None
        )
        self._sessions: dict[bool, aiohttp.ClientSession] = {}
        self._inflight: dict[asyncio.Task[None], Claimed] = {}
        self._signal = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._ended: list[Ended] = []
        self._settler: asyncio.Task[None] | None = None

    def _http(self, guarded: bool) -> aiohttp.ClientSession:
        """One session for the configured URL, one whose resolver guards merchants' endpoints."""
        if guarded not in self._sessions:
            resolver = GuardedResolver(self.allow_private) if guarded else None
            connector = aiohttp.TCPConnector(
                limit=self.concurrency, limit_per_host=0, resolver=resolver
            )
            self._sessions[guarded] = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                headers={"user-agent": USER_AGENT},
            )
        return self._sessions[guarded]

    async def close(self) -> None:
        sessions, self._sessions = self._sessions, {}
        for session in sessions.values():
            await session.close()

    async def run_once(self) -> int:
        """Claim what is due (up to `concurrency`), deliver it concurrently; returns how many."""
        claimed = await self._claim(self.concurrency, [])
        await asyncio.gather(*(self._deliver(event) for event in claimed))
        return len(claimed)

    async def _claim(self, free: int, in_flight: list[Claimed]) -> list[Claimed]:
        # The last `reserved` free slots are kept for a first attempt each of endpoints with no
        # first attempt in flight: retries, and endpoints already sending one, get the rest.
        spare = max(0, free - self.reserved)
        retry_room = min(
            spare, max(0, self.concurrency - self.reserved - sum(c.retry for c in in_flight))
        )
        per_lane: dict[str, list[int]] = {}
        for c in in_flight:
            counts = per_lane.setdefault(c.lane, [0, 0])
            counts[0] += 1
            counts[1] += c.retry
        # A lane with no first attempt in flight may still open one in the kept slots.
        fresh_busy = [lane for lane, (n, r) in per_lane.items() if n > r]
        rows = await self.pool.fetch(
            Q["claim_deliveries"],
            free,
            retry_room,
            free,
            self.timeout + LEASE_MARGIN,
            self.configured is not None,
            min(free, self.lane_cap),
            min(free, self.lane_retry_cap),
            list(per_lane),
            [
                min(spare if n > r else max(spare, 1), free, max(0, self.lane_cap - n))
                for n, r in per_lane.values()
            ],
            [min(spare, max(0, self.lane_retry_cap - r)) for _, r in per_lane.values()],
            spare,
            fresh_busy,
        )
        return [
            Claimed(
                id=r["id"],
                event_id=r["event_id"],
                payment_id=r["payment_id"],
                lane=r["lane"],
                attempt=r["attempts"],
                lease=r["lease"],
                retry=r["retry"],
                body=r["body"].encode(),
                target=self._target(r),
            )
            for r in rows
        ]

    def _target(self, row: asyncpg.Record) -> Target | None:
        if row["endpoint_id"] is None:
            assert self.configured is not None  # the claim takes these only when it is set
            return self.configured
        try:
            return endpoint_target(row["url"], row["secret"], row["previous_secret"])
        except ValueError:  # a row ctripd did not write; never quote the secret
            log.error("webhook.bad_secret", endpoint_id=row["endpoint_id"], delivery_id=row["id"])
            return None

    async def _deliver(self, event: Claimed) -> None:
        if event.target is None:
            error = "the endpoint's stored secret is not a whsec_ secret"
            outcome = Outcome(datetime.now(UTC), 0, error=error)
        else:
            outcome = await self.post(event.target, event.event_id, event.body)
        try:
            await self._settle(event, outcome)
        except DB_ERRORS as exc:
            # The lease runs out and the event is sent again: at-least-once.
            log.error("webhook.settle_failed", delivery_id=event.id, error=_describe(exc))

    async def post(self, target: Target, msg_id: str, body: bytes) -> Outcome:
        """Sign and POST one message to `target`; never raises for the endpoint's faults."""
        attempted_at = datetime.now(UTC)
        headers = {
            "content-type": "application/json",
            **target.signer.headers(msg_id, int(attempted_at.timestamp()), body),
        }
        started = time.monotonic()

        def elapsed() -> int:
            return round((time.monotonic() - started) * 1000)

        if target.guarded:
            try:
                check_url(target.url, self.allow_private)
            except ValueError as exc:
                return Outcome(attempted_at, elapsed(), error=_text(f"endpoint URL {exc}"))
        try:
            async with self._http(target.guarded).post(
                target.url, data=body, headers=headers, allow_redirects=False
            ) as resp:
                answer = await _read_prefix(resp, MAX_RESPONSE_BYTES)
                return Outcome(
                    attempted_at=attempted_at,
                    latency_ms=elapsed(),
                    http_status=resp.status,
                    error=None if 200 <= resp.status < 300 else f"HTTP {resp.status}",
                    response_body=_text(answer.decode("utf-8", "replace")),
                    retry_after=parse_retry_after(
                        resp.headers.get("Retry-After"), datetime.now(UTC)
                    ),
                )
        except TimeoutError:
            error = f"timeout after {self.timeout:g}s"
        # ValueError: e.g. a host name IDNA cannot encode (UnicodeError), found only on connecting.
        except (aiohttp.ClientError, ValueError) as exc:
            error = _describe(exc)
        return Outcome(attempted_at=attempted_at, latency_ms=elapsed(), error=error)

    async def _settle(self, event: Claimed, outcome: Outcome) -> None:
        now = datetime.now(UTC)
        delay = None
        if not outcome.ok:
            delay = retry_delay(event.attempt, self.schedule, outcome.retry_after)
        if outcome.ok:
            ended = Ended(event, outcome, "delivered", now)
        elif delay is None:
            ended = Ended(event, outcome, "failed", now)
        else:
            ended = Ended(event, outcome, "pending", now + timedelta(seconds=delay))
        self._ended.append(ended)
        if self._settler is None or self._settler.done():
            self._settler = asyncio.create_task(self._settle_ended(), name="webhooks:settle")
        settled = await ended.settled
        fields: dict[str, Any] = {
            "event_id": event.event_id,
            "delivery_id": event.id,
            "endpoint_id": event.lane or None,
            "payment_id": event.payment_id,
            "attempt": event.attempt,
            "http_status": outcome.http_status,
            "latency_ms": outcome.latency_ms,
        }
        if not settled:
            log.warning("webhook.lease_lost", **fields)
        elif outcome.ok:
            log.debug("webhook.delivered", **fields)
        elif delay is None:
            log.error("webhook.failed", error=outcome.error, url=event.log_url, **fields)
        else:
            log.info("webhook.retry", error=outcome.error, retry_in=round(delay, 1), **fields)

    async def _settle_ended(self) -> None:
        """Settle, in one statement, every attempt that ended since the previous statement."""
        while self._ended:
            batch, self._ended = self._ended, []
            try:
                rows = await self.pool.fetch(
                    Q["finish_attempts"],
                    [e.event.id for e in batch],
                    [e.outcome.attempted_at for e in batch],
                    [e.event.log_url for e in batch],
                    [e.outcome.http_status for e in batch],
                    [e.outcome.latency_ms for e in batch],
                    [e.outcome.error for e in batch],
                    [e.outcome.response_body for e in batch],
                    [e.status for e in batch],
                    [e.next_attempt_at for e in batch],
                    [e.event.lease for e in batch],
                )
            except DB_ERRORS as exc:
                for e in batch:
                    if not e.settled.done():
                        e.settled.set_exception(exc)
                continue
            settled = {r["id"] for r in rows}
            for e in batch:
                if not e.settled.done():
                    e.settled.set_result(e.event.id in settled)

    # The long-running loop.

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="webhooks")
        self._task.add_done_callback(self._done)

    def stop_claiming(self) -> None:
        self._stopping.set()
        self._signal.set()

    async def stop(self, grace: float) -> None:
        """Stop claiming; in-flight deliveries finish (up to `grace` s) and are recorded."""
        self.stop_claiming()
        if self._task is None:
            return
        await asyncio.wait({self._task}, timeout=grace)
        if not self._task.done():
            # Cut short: those events' leases run out and they are delivered again.
            log.warning(
                "webhooks.cancelled", deliveries=len(self._inflight), grace_seconds=round(grace, 1)
            )
            for task in list(self._inflight):
                task.cancel()
            await asyncio.wait({self._task}, timeout=5)

    async def run(self) -> None:
        """Keep up to `concurrency` deliveries in flight: claim when enough slots are free, when a
        delivery ends after the queue ran dry (it may free its payment's next event), or every
        `poll_interval` s."""
        url = self.configured.log_url if self.configured else None
        log.info("webhooks.started", url=url, concurrency=self.concurrency)
        drained = True
        try:
            while not self._stopping.is_set():
                self._signal.clear()
                free = self.concurrency - len(self._inflight)
                if free > 0 and (free >= self.min_batch or drained):
                    try:
                        claimed = await self._claim(free, list(self._inflight.values()))
                    except DB_ERRORS as exc:
                        log.warning("webhooks.claim_failed", error=_describe(exc))
                        claimed = []
                    drained = len(claimed) < free
                    for event in claimed:
                        task = asyncio.create_task(self._deliver(event), name=f"webhook:{event.id}")
                        self._inflight[task] = event
                        task.add_done_callback(self._done)
                try:
                    await asyncio.wait_for(self._signal.wait(), timeout=self.poll_interval)
                except TimeoutError:
                    pass
        finally:
            if self._inflight:
                await asyncio.wait(set(self._inflight))
            log.info("webhooks.stopped")

    def _done(self, task: asyncio.Task[None]) -> None:
        """A delivery (or the loop itself) ended; a crash is logged, never swallowed."""
        self._inflight.pop(task, None)
        self._signal.set()
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("webhooks.task_crashed", task=task.get_name(), error=_describe(exc))


async def _read_prefix(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    data = b""
    while len(data) < limit:
        chunk = await resp.content.read(limit - len(data))
        if not chunk:
            break
        data += chunk
    return data


def endpoint_target(url: str, secret: str, previous_secret: str | None) -> Target:
    """A merchant's endpoint: signed with its secret, and its previous one during an overlap."""
    keys = [parse_secret(secret)]
    if previous_secret is not None:
        keys.append(parse_secret(previous_secret))
    return Target(url, Signer(keys), guarded=True)
