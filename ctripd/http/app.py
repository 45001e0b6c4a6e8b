"""The application factory: pools, HTTP session, RPC clients, webhook worker and scheduler as
cleanup contexts, the routes with their OpenAPI description, and `serve` to run it all."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp
import asyncpg
import structlog
from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from ctripd import db, sdnotify
from ctripd.chain import wallet
from ctripd.chain.rpc import RpcClient
from ctripd.chain.tokens import decimals_mismatches
from ctripd.config import ChainConfig, Config, ConfigError
from ctripd.embedded import EmbeddedPostgres, Supervisor
from ctripd.errors import CtripdError
from ctripd.http import (
    chains,
    checkout,
    endpoints,
    events,
    health,
    metrics,
    openapi,
    outgoing,
    outgoing_docs,
    payments,
    schemas,
)
from ctripd.http.auth import auth_middleware
from ctripd.http.keys import (
    API_POOL,
    API_STATE,
    CONFIG,
    HTTP,
    POOL,
    RATE_LIMITS,
    RATES,
    RPC,
    SWEEPERS,
    TASKS,
    WALLET,
    WATCHERS,
    WEBHOOKS,
    ApiState,
)
from ctripd.http.problems import problem_middleware
from ctripd.http.ratelimit import RateLimits
from ctripd.jobs.chainwatch import ChainWatcher
from ctripd.jobs.sweeper import make_sweepers
from ctripd.jobs.tasks import TaskSet
from ctripd.jobs.watched import WatchedAddresses
from ctripd.jobs.webhooks import WebhookWorker
from ctripd.ledger import chains as chains_ledger
from ctripd.ledger import expiry, upkeep
from ctripd.ledger.payments import IndexPool
from ctripd.log import configure_logging
from ctripd.rates.book import RateBook

log = structlog.get_logger(__name__)

# Seconds a chain's start-up checks (token decimals, first cursor) may take at most.
START_CHECKS_DEADLINE = 30.0
# Seconds between folds of the status counters (`/metrics`) and between prunes of old events.
COUNTS_INTERVAL = 10
PRUNE_INTERVAL = 300


@dataclass(frozen=True)
class AppOptions:
    dsn: str
    # Off in tests, which drive every loop's run_once() themselves.
    background: bool = True
    # The embedded server this process started or joined: supervised while the app runs.
    embedded: EmbeddedPostgres | None = None


def create_app(config: Config, options: AppOptions) -> web.Application:
    app = web.Application(client_max_size=config.server.max_body_bytes)
    app[CONFIG] = config
    app[TASKS] = TaskSet()
    app[WALLET] = wallet.from_config(config)
    app[API_STATE] = ApiState(indexes=IndexPool())
    app[RATE_LIMITS] = RateLimits()
    # First in, last out: systemd's watchdog and the database supervision outlast the drain.
    if options.background:
        app.cleanup_ctx.append(_watchdog_ctx)
        app.on_shutdown.append(_notify_stopping)
    if options.embedded is not None:
        app.cleanup_ctx.append(_supervisor_ctx(options.embedded))
    app.cleanup_ctx.append(_pool_ctx(options.dsn))
    app.cleanup_ctx.append(_api_pool_ctx(options.dsn))
    app.cleanup_ctx.append(_http_ctx)
    app.cleanup_ctx.append(_chains_ctx(options.dsn))
    app.cleanup_ctx.append(_rates_ctx(options.background))
    app.cleanup_ctx.append(_webhooks_ctx(options.background))
    if options.background:
        app.cleanup_ctx.append(_scheduler_ctx)
    app.on_shutdown.append(_begin_stop)
    # problem+json outermost, then auth: every /v1/ path needs a key, whoever added its route.
    app.middlewares.append(problem_middleware)
    app.middlewares.append(auth_middleware)
    for module in (
        health,
        events,
        endpoints,
        chains,
        payments,
        outgoing,
        checkout,
        metrics,
        openapi,
    ):
        module.setup_routes(app)
    for paths, components in (
        schemas.event_docs(),
        schemas.endpoint_docs(),
        schemas.chain_docs(),
        schemas.payment_docs(config),
        outgoing_docs.outgoing_docs(config),
        schemas.checkout_docs(),
        schemas.metrics_docs(config.server.metrics_public),
    ):
        openapi.document(app, paths, components)
    return app


def serve(config: Config, dsn: str, embedded: EmbeddedPostgres | None = None) -> int:
    """Run the daemon in the foreground until SIGINT/SIGTERM, then stop gracefully; `embedded`
    is the embedded server behind `dsn`, if it is one."""
    configure_logging(config.log.level, config.log.format)
    app = create_app(config, AppOptions(dsn=dsn, embedded=embedded))
    log.info("ctripd.starting", host=config.server.host, port=config.server.port)
    web.run_app(
        app,
        host=config.server.host,
        port=config.server.port,
        shutdown_timeout=config.daemon.shutdown_timeout,
        print=_ready,
        access_log=None,
    )
    log.info("ctripd.stopped")
    return 0


def _ready(banner: str) -> None:
    """run_app calls its `print` once the server listens, after every cleanup context (chains,
    scheduler) has started: the daemon is ready, and systemd (Type=notify) is told so."""
    log.info("ctripd.ready")
    sdnotify.notify("READY=1")


async def _notify_stopping(app: web.Application) -> None:
    sdnotify.notify("STOPPING=1")


@contextlib.asynccontextmanager
async def _running(coro: Coroutine[None, None, None], name: str) -> AsyncIterator[None]:
    """`coro` as a task while the block runs (a loop that ends only when cancelled)."""
    task = asyncio.create_task(coro, name=name)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _watchdog_ctx(app: web.Application) -> AsyncIterator[None]:
    """WATCHDOG=1 pings when systemd asks for them (WatchdogSec=)."""
    period = sdnotify.watchdog_period()
    if period is None:
        yield
        return
    async with _running(sdnotify.keep_watchdog(period), "sd-watchdog"):
        yield


def _supervisor_ctx(embedded: EmbeddedPostgres) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        async with _running(Supervisor(embedded).run(), "embedded-postgres"):
            yield

    return ctx


async def _begin_stop(app: web.Application) -> None:
    """SIGTERM: runs before aiohttp waits for in-flight requests, so background work stops
    claiming at once and drains in the same grace period as they do."""
    app[TASKS].begin_stop(app[CONFIG].daemon.shutdown_timeout)


def _pool_ctx(dsn: str) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        cfg = app[CONFIG].database
        app[POOL] = await db.create_pool(
            dsn, cfg.pool_min, cfg.pool_max, acquire_timeout=cfg.acquire_timeout
        )
        yield
        await app[POOL].close()

    return ctx


async def _no_session_reset(conn: asyncpg.Connection) -> None:
    """The API's statements leave no session state (no SET, LISTEN, cursor or advisory lock), so
    the reset query asyncpg sends on every release by default is skipped: it was one of the three
    round trips of a payment's creation (bench/). asyncpg still rolls back an open transaction."""


def _api_pool_ctx(dsn: str) -> Callable[[web.Application], AsyncIterator[None]]:
    """The API's own pool (the app's pool keeps the default reset for session-level users)."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        cfg = app[CONFIG].database
        app[API_POOL] = await db.create_pool(
            dsn,
            cfg.pool_min,
            cfg.pool_max,
            reset=_no_session_reset,
            acquire_timeout=cfg.acquire_timeout,
        )
        yield
        await app[API_POOL].close()

    return ctx


async def _http_ctx(app: web.Application) -> AsyncIterator[None]:
    connector = aiohttp.TCPConnector(limit=100, limit_per_host=32)
    app[HTTP] = aiohttp.ClientSession(connector=connector)
    yield
    await app[HTTP].close()


def _chains_ctx(dsn: str) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        """One RPC client and one watcher per configured chain; each chain has its row."""
        config = app[CONFIG]
        pool = app[POOL]
        app[RPC] = {}
        app[WATCHERS] = {}
        # Every chain watches every payment's address: one set for all of this process's chains.
        watched = WatchedAddresses(config.scanner)
        for chain in config.chains:
            await chains_ledger.register(pool, chain.name, chain.chain_id)
            rpc = RpcClient(
                chain.name,
                list(chain.rpc),
                app[HTTP],
                timeout=chain.rpc_timeout,
                expected_chain_id=chain.chain_id,
            )
            app[RPC][chain.name] = rpc
            # Watcher and sweeper hold their own connections: the chain's locks live on them.
            app[WATCHERS][chain.name] = ChainWatcher(
                chain, dsn, rpc, config.payments, watched, operator_url=bool(config.webhooks.url)
            )
        await asyncio.gather(
            *(_start_chain(config, pool, chain, app[RPC][chain.name]) for chain in config.chains)
        )
        app[SWEEPERS] = make_sweepers(config, dsn, pool, app[RPC], app[WALLET])
        yield
        for watcher in app[WATCHERS].values():
            await watcher.close()
        for sweeper in app[SWEEPERS].values():
            await sweeper.close()

    return ctx


async def _start_chain(
    config: Config, pool: asyncpg.Pool, chain: ChainConfig, rpc: RpcClient
) -> None:
    """A chain's start-up checks, all chains at once and each within START_CHECKS_DEADLINE: a
    provider that swallows requests must not hold the API (and systemd's READY=1) back; what
    could not be checked is a warning, and the scanner sets a missing cursor later."""
    try:
        async with asyncio.timeout(START_CHECKS_DEADLINE):
            await _check_tokens(config, chain, rpc)
            await _start_cursor(pool, chain, rpc)
    except TimeoutError:
        log.warning("chain.start_checks_timed_out", chain=chain.name, after_s=START_CHECKS_DEADLINE)


async def _start_cursor(pool: asyncpg.Pool, chain: ChainConfig, rpc: RpcClient) -> None:
    """The chain's cursor exists before the API takes payments on it: a payment made before the
    first scan is then never behind the block the scan starts at. Without a node to ask, the
    API refuses payments on the chain until its scanner sets the cursor."""
    if await chains_ledger.cursor(pool, chain.name) is not None:
        return
    try:
        head = await rpc.block_number()
    except CtripdError as exc:
        log.warning("chain.cursor_pending", chain=chain.name, error=str(exc))
        return
    await chains_ledger.ensure_cursor(pool, chain, head)


async def _check_tokens(config: Config, chain: ChainConfig, rpc: RpcClient) -> None:
    """Refuse to start on a token whose contract has other decimals than configured (payments in
    it would be priced 10^n off); a node that cannot be asked now is only a warning."""
    try:
        wrong = await decimals_mismatches(rpc, chain)
    except CtripdError as exc:
        log.warning("chain.tokens_unchecked", chain=chain.name, error=str(exc))
        return
    if wrong:
        mismatch = wrong[0]
        raise ConfigError(
            config.daemon.chains_file,
            f"chains.{chain.name}.tokens.{mismatch.token.symbol}.decimals",
            mismatch.problem(),
        )


def _rates_ctx(background: bool) -> Callable[[web.Application], AsyncIterator[None]]:
    """The rate book (tests call its `run_once()`); its refresh loop runs only in the
    background, and only when some rate pair is configured."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        book = RateBook(app[CONFIG].rates, app[HTTP], app[RPC])
        app[RATES] = book
        if background and app[CONFIG].rates.pairs:
            async with _running(book.run(), "rates"):
                yield
        else:
            yield
        await book.close()

    return ctx


def _webhooks_ctx(background: bool) -> Callable[[web.Application], AsyncIterator[None]]:
    """The app's worker (tests call its `run_once()`); its loop runs only in the background."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        config = app[CONFIG]
        worker = WebhookWorker(app[POOL], config)
        app[WEBHOOKS] = worker
        if worker.configured is None:
            log.warning(
                "webhooks.url_unset",
                reason="no deliveries of the default merchant's events to webhooks.url are "
                "written; webhook endpoints of merchants are delivered",
            )
        if background:
            worker.start()
            app[TASKS].on_stop.append(worker.stop_claiming)
        yield
        await worker.stop(app[TASKS].remaining(config.daemon.shutdown_timeout))
        await worker.close()

    return ctx


async def _scheduler_ctx(app: web.Application) -> AsyncIterator[None]:
    """Per-chain watch and sweep jobs, expiry and upkeep; on shutdown stop scheduling, then
    finish in-flight work."""
    config = app[CONFIG]
    tasks = app[TASKS]
    scheduler = AsyncIOScheduler()

    def every(
        seconds: float, job_id: str, run: Callable[[], Awaitable[object]]
    ) -> Callable[[], Awaitable[None]]:
        job = tasks.job(job_id, run)
        scheduler.add_job(
            job,
            "interval",
            seconds=seconds,
            id=job_id,
            max_instances=1,
            coalesce=True,
            next_run_time=datetime.now(UTC),
        )
        return job

    for chain in config.chains:
        watcher = app[WATCHERS][chain.name]
        scan = every(chain.poll_interval, f"watch:{chain.name}", watcher.run_once)
        if watcher.heads is not None:
            # A head announced over the chain's WebSocket starts the same job at once.
            tasks.spawn(watcher.follow_heads(scan), f"heads:{chain.name}")
            tasks.on_stop.append(watcher.stop_heads)
    for name, sweeper in app[SWEEPERS].items():
        every(sweeper.chain.poll_interval, f"sweep:{name}", sweeper.run_once)
    every(
        config.payments.expiry_interval,
        "expiry",
        lambda: expiry.run_once(app[POOL], operator_url=bool(config.webhooks.url)),
    )
    every(COUNTS_INTERVAL, "counts", lambda: upkeep.fold_counts(app[POOL]))
    every(
        PRUNE_INTERVAL,
        "prune",
        lambda: upkeep.prune_events(app[POOL], config.webhooks.retention_days),
    )
    scheduler.start()
    tasks.on_stop.append(scheduler.pause)
    log.info("scheduler.started", jobs=[j.id for j in scheduler.get_jobs()])
    yield
    # Runs stopped starting at begin_stop; let the in-flight ones finish (or cut them short past
    # the grace), and only then shut the scheduler down, so that it has no run left to cancel.
    tasks.begin_stop(config.daemon.shutdown_timeout)
    await tasks.drain(tasks.remaining(config.daemon.shutdown_timeout))
    scheduler.shutdown(wait=False)
    log.info("scheduler.stopped")
