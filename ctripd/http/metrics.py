"""`/metrics` in Prometheus text format (or OpenMetrics, if the scraper asks for it).

Every value is read at scrape time, so several processes on one database report the same
database-wide figures: chain heads and cursors, payments by status, the webhook queue, delivery
latency and sweeps come from Postgres (one read-only snapshot per scrape); RPC endpoint counters
and scanner leadership are this process's own. The registry belongs to the app: no global state,
so two apps in one process (as in tests) never mix their series.

Access: public when `server.metrics_public` (the default, for a loopback listener), else the
scraper sends `Authorization: Bearer <API key>`.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.metadata
import platform
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg
import structlog
from aiohttp import web
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry

from ctripd.chain.rpc import display_url
from ctripd.db import queries
from ctripd.http.auth import authenticate
from ctripd.http.keys import CONFIG, POOL, RPC, WATCHERS
from ctripd.http.problems import Handler, Problem
from ctripd.ledger.chains import lag, stalled
from ctripd.ledger.merchants import DEFAULT as DEFAULT_MERCHANT
from ctripd.ledger.objects import STATUSES as PAYMENT_STATUSES

Q = queries("metrics")
QC = queries("chains")
log = structlog.get_logger(__name__)

SWEEP_KINDS = ("native", "token", "gas_topup", "recover", "deploy", "batch", "refund", "payout")
SWEEP_STATUSES = ("signed", "broadcast", "confirmed", "failed", "refused")
# Webhook delivery latency buckets, in milliseconds (the delivery timeout defaults to 10 s).
LATENCY_BOUNDS_MS = (50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000)
SCRAPE_STATEMENT_TIMEOUT = "5s"
# Attempts that started longer ago than this are final (see SettledLatencies); far above the
# webhook timeout, and above any clock skew between ctripd and Postgres worth thinking about.
SETTLE_SECONDS = 600
DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)


@dataclass
class Latencies:
    """Delivery attempts per latency bucket (one more bucket than bounds) and their sum in ms."""

    buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BOUNDS_MS) + 1))
    total_ms: int = 0

    def add(self, rows: Iterable[asyncpg.Record]) -> None:
        for r in rows:
            self.buckets[r["bucket"]] += r["n"]
            self.total_ms += int(r["total_ms"])

    def plus(self, other: Latencies) -> Latencies:
        return Latencies(
            [a + b for a, b in zip(self.buckets, other.buckets, strict=True)],
            self.total_ms + other.total_ms,
        )


@dataclass
class SettledLatencies:
    """Attempts with ids up to `upto`, counted once and kept, so a scrape reads only newer rows.

    An attempt's row is inserted when it ends (at most the webhook timeout after it started),
    with an id from a sequence; so once an attempt started more than SETTLE_SECONDS ago, no
    transaction still in flight can add a row with a smaller id, and that range never changes.
    """

    upto: int = 0
    latencies: Latencies = field(default_factory=Latencies)


@dataclass
class Snapshot:
    """The database's figures at one scrape; empty (and `database_up` false) if it failed."""

    database_up: bool = False
    chains: dict[str, asyncpg.Record] = field(default_factory=dict)
    payments: dict[tuple[str, str], int] = field(default_factory=dict)
    events_pending: int = 0
    events_failed: int = 0
    oldest_pending_age: float | None = None
    latencies: Latencies = field(default_factory=Latencies)
    sweeps: dict[tuple[str, str, str], int] = field(default_factory=dict)


async def read_snapshot(pool: asyncpg.Pool, settled: SettledLatencies) -> Snapshot:
    """Read every database figure in one snapshot; moves `settled` forward."""
    snap = Snapshot()
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        await conn.execute(f"SET LOCAL statement_timeout = '{SCRAPE_STATEMENT_TIMEOUT}'")
        snap.chains = {r["name"]: r for r in await conn.fetch(QC["all_chains"])}
        for r in await conn.fetch(Q["payments_by_status"]):
            snap.payments[(r["chain"], r["status"])] = r["n"]
        queue = await conn.fetchrow(Q["webhook_queue"])
        assert queue is not None
        snap.events_pending, snap.events_failed = queue["pending"], queue["failed"]
        snap.oldest_pending_age = queue["oldest_pending_age"]
        thresholds = [bound + 1 for bound in LATENCY_BOUNDS_MS]
        upto = await conn.fetchval(Q["attempts_settled_upto"], settled.upto, SETTLE_SECONDS)
        if upto is not None:
            rows = await conn.fetch(Q["delivery_latency"], thresholds, settled.upto, upto)
            settled.latencies.add(rows)
            settled.upto = upto
        recent = Latencies()
        recent.add(await conn.fetch(Q["delivery_latency"], thresholds, settled.upto, None))
        snap.latencies = settled.latencies.plus(recent)
        for r in await conn.fetch(Q["sweeps_by_status"]):
            snap.sweeps[(r["chain"], r["kind"], r["status"])] = r["n"]
    snap.database_up = True
    return snap


def _version() -> str:
    try:
        return importlib.metadata.version("ctripd")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class GatewayCollector(Collector):
    """Renders the snapshot that `refresh()` read; the handler calls both back to back."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.snapshot = Snapshot()
        self.settled = SettledLatencies()
        # One refresh at a time: two would both count the same newly settled attempts.
        self.lock = asyncio.Lock()
        self.version = _version()

    async def refresh(self) -> None:
        async with self.lock:
            try:
                self.snapshot = await read_snapshot(self.app[POOL], self.settled)
            except DB_ERRORS as exc:
                log.warning("metrics.database_unavailable", error=type(exc).__name__)
                self.snapshot = Snapshot()

    def collect(self) -> Iterable[Metric]:
        yield InfoMetricFamily(
            "ctripd_build",
            "ctripd version",
            value={"version": self.version, "python": platform.python_version()},
        )
        up = GaugeMetricFamily("ctripd_database_up", "1 if the last scrape could read Postgres")
        up.add_metric([], 1 if self.snapshot.database_up else 0)
        yield up
        yield from self._chains()
        yield from self._rpc()
        if self.snapshot.database_up:
            yield from self._payments()
            yield from self._webhooks()
            yield from self._sweeps()

    def _chains(self) -> Iterator[Metric]:
        gauge = functools.partial(GaugeMetricFamily, labels=["chain"])
        head = gauge("ctripd_chain_head_block", "Latest block seen")
        scanned = gauge("ctripd_chain_scanned_block", "Last block fully scanned")
        behind = gauge("ctripd_chain_lag_blocks", "Blocks between head and last scanned")
        scanned_at = gauge(
            "ctripd_chain_scanned_timestamp_seconds",
            "Unix time of the last scan step; alert on time() minus this",
        )
        leader = gauge("ctripd_chain_leader", "1 if this process holds the chain's scanner lock")
        stuck = gauge(
            "ctripd_chain_stalled", "1 if the head block is older than the chain's stall_after"
        )
        now = datetime.now(UTC)
        for chain in self.app[CONFIG].chains:
            name = [chain.name]
            watcher = self.app[WATCHERS].get(chain.name)
            leader.add_metric(name, 1 if watcher is not None and watcher.state.leader else 0)
            row = self.snapshot.chains.get(chain.name)
            if row is None:
                continue
            if row["head"] is not None:
                head.add_metric(name, row["head"])
            if row["scanned_block"] is not None:
                scanned.add_metric(name, row["scanned_block"])
            if (blocks := lag(row)) is not None:
                behind.add_metric(name, blocks)
            if row["scanned_at"] is not None:
                scanned_at.add_metric(name, row["scanned_at"].timestamp())
            if row["head_time"] is not None:
                stuck.add_metric(name, int(stalled(row["head_time"], chain.stall_after, now)))
        yield from (head, scanned, behind, scanned_at, leader, stuck)

    def _rpc(self) -> Iterator[Metric]:
        # `position` keeps two URLs of one host apart: the shown URL drops paths (API keys).
        labels = ["chain", "url", "position"]
        requests = CounterMetricFamily(
            "ctripd_rpc_requests", "HTTP requests to the RPC URL", labels=labels
        )
        errors = CounterMetricFamily(
            "ctripd_rpc_errors", "Failed HTTP requests to the RPC URL", labels=labels
        )
        gauge = functools.partial(GaugeMetricFamily, labels=labels)
        latency = gauge(
            "ctripd_rpc_latency_seconds", "Latency of the last successful request to the RPC URL"
        )
        ok = gauge("ctripd_rpc_up", "1 if the last request to the RPC URL succeeded")
        for chain, client in self.app[RPC].items():
            for position, endpoint in enumerate(client.endpoints):
                values = [chain, display_url(endpoint.url), str(position)]
                requests.add_metric(values, endpoint.requests)
                errors.add_metric(values, endpoint.errors)
                ok.add_metric(values, 1 if endpoint.ok else 0)
                if endpoint.latency_ms is not None:
                    latency.add_metric(values, endpoint.latency_ms / 1000)
        yield from (requests, errors, latency, ok)

    def _payments(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "ctripd_payments", "Payments by chain and status", labels=["chain", "status"]
        )
        counts = dict.fromkeys(
            ((c.name, s) for c in self.app[CONFIG].chains for s in PAYMENT_STATUSES), 0
        )
        counts.update(self.snapshot.payments)
        for (chain, status), n in sorted(counts.items()):
            family.add_metric([chain, status], n)
        yield family

    def _webhooks(self) -> Iterator[Metric]:
        snap = self.snapshot
        events = GaugeMetricFamily(
            "ctripd_webhook_events",
            "Webhook deliveries (an event to one endpoint) pending (queued or retrying) and failed"
            " (retries exhausted)",
            labels=["status"],
        )
        events.add_metric(["pending"], snap.events_pending)
        events.add_metric(["failed"], snap.events_failed)
        yield events
        oldest = GaugeMetricFamily(
            "ctripd_webhook_oldest_pending_seconds",
            "Age of the event of the oldest pending webhook delivery",
        )
        oldest.add_metric([], snap.oldest_pending_age or 0.0)
        yield oldest
        cumulative, buckets = 0, []
        for bound, n in zip(
            [*(str(b / 1000) for b in LATENCY_BOUNDS_MS), "+Inf"],
            snap.latencies.buckets,
            strict=True,
        ):
            cumulative += n
            buckets.append((bound, float(cumulative)))
        yield HistogramMetricFamily(
            "ctripd_webhook_delivery_latency_seconds",
            "Webhook delivery attempts by latency (all processes, from delivery_attempts)",
            buckets=buckets,
            sum_value=snap.latencies.total_ms / 1000,
        )

    def _sweeps(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "ctripd_sweeps", "Sweeps by chain, kind and status", labels=["chain", "kind", "status"]
        )
        counts = dict.fromkeys(
            (
                (c.name, k, s)
                for c in self.app[CONFIG].chains
                for k in SWEEP_KINDS
                for s in SWEEP_STATUSES
            ),
            0,
        )
        counts.update(self.snapshot.sweeps)
        for labels, n in sorted(counts.items()):
            family.add_metric(list(labels), n)
        yield family


async def _check_key(request: web.Request) -> None:
    """A key of the default merchant, the operator's: the figures span every merchant, so
    another merchant's key would see the others' volumes."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    key = None
    if scheme.lower() == "bearer":
        key = await authenticate(request.app[POOL], token.strip())
    if key is None:
        raise Problem(
            401,
            "/metrics needs Authorization: Bearer <API key> (server.metrics_public is false)",
            headers={"WWW-Authenticate": 'Bearer realm="ctripd", error="invalid_token"'},
        )
    if key.merchant != DEFAULT_MERCHANT:
        raise Problem(
            403, f"/metrics needs a key of the {DEFAULT_MERCHANT!r} merchant (the operator's)"
        )


def _handler(registry: CollectorRegistry, collector: GatewayCollector) -> Handler:
    async def metrics(request: web.Request) -> web.Response:
        if not request.app[CONFIG].server.metrics_public:
            await _check_key(request)
        await collector.refresh()
        # No await between the refresh and the rendering: a concurrent scrape cannot interleave.
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encoder(registry), headers={"Content-Type": content_type})

    return metrics


def setup_routes(app: web.Application) -> None:
    registry = CollectorRegistry(auto_describe=False)
    collector = GatewayCollector(app)
    registry.register(collector)
    ProcessCollector(registry=registry)
    app.router.add_get("/metrics", _handler(registry, collector))
