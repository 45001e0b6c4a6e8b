"""The application factory: pool, HTTP session, RPC clients, scheduler, as cleanup contexts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp
import asyncpg
import structlog
from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from ctripd import db, expiry, wallet
from ctripd.chainwatch import ChainWatcher
from ctripd.config import Config
from ctripd.rpc import RpcClient
from ctripd.sweeper import Sweeper, make_sweepers
from ctripd.tasks import TaskSet

log = structlog.get_logger(__name__)

CONFIG = web.AppKey("config", Config)
POOL = web.AppKey("pool", asyncpg.Pool)
HTTP = web.AppKey("http", aiohttp.ClientSession)
RPC = web.AppKey("rpc", dict[str, RpcClient])
WATCHERS = web.AppKey("watchers", dict[str, ChainWatcher])
TASKS = web.AppKey("tasks", TaskSet)
WALLET = web.AppKey("wallet", wallet.Wallet)
SWEEPERS = web.AppKey("sweepers", dict[str, Sweeper])


@dataclass(frozen=True)
class AppOptions:
    dsn: str
    # Off in tests, which drive every loop's run_once() themselves.
    background: bool = True


def create_app(config: Config, options: AppOptions) -> web.Application:
    from ctripd import api, chains_api, checkout, events_api, health, metrics, webhooks

    app = web.Application(client_max_size=config.server.max_body_bytes)
    app[CONFIG] = config
    app[TASKS] = TaskSet()
    app[WALLET] = wallet.from_config(config)
    app.cleanup_ctx.append(_pool_ctx(options.dsn))
    app.cleanup_ctx.append(_http_ctx)
    app.cleanup_ctx.append(_chains_ctx(options.dsn))
    app.cleanup_ctx.append(webhooks.webhooks_ctx(options.background))
    if options.background:
        app.cleanup_ctx.append(_scheduler_ctx)
    app.on_shutdown.append(_begin_stop)
    health.setup_routes(app)
    events_api.setup_routes(app)
    chains_api.setup_routes(app)
    api.setup_routes(app, options.dsn)
    checkout.setup_routes(app)
    metrics.setup_routes(app)
    return app


async def _begin_stop(app: web.Application) -> None:
    """SIGTERM: runs before aiohttp waits for in-flight requests, so background work stops
    claiming at once and drains in the same grace period as they do."""
    app[TASKS].begin_stop(app[CONFIG].daemon.shutdown_timeout)


def _pool_ctx(dsn: str) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        cfg = app[CONFIG].database
        app[POOL] = await db.create_pool(dsn, cfg.pool_min, cfg.pool_max)
        yield
        await app[POOL].close()

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
        for chain in config.chains:
            await pool.execute(db.queries("chains")["upsert_chain"], chain.name, chain.chain_id)
            rpc = RpcClient(
                chain.name,
                list(chain.rpc),
                app[HTTP],
                timeout=chain.rpc_timeout,
                expected_chain_id=chain.chain_id,
            )
            app[RPC][chain.name] = rpc
            # The watcher holds its own connection: the chain's leadership lock lives on it.
            app[WATCHERS][chain.name] = ChainWatcher(chain, dsn, rpc, config.payments)
        app[SWEEPERS] = make_sweepers(config, pool, app[RPC], app[WALLET])
        yield
        for watcher in app[WATCHERS].values():
            await watcher.close()

    return ctx


async def _scheduler_ctx(app: web.Application) -> AsyncIterator[None]:
    """Per-chain watch jobs and expiry; on shutdown stop scheduling, then finish in-flight work."""
    config = app[CONFIG]
    tasks = app[TASKS]
    scheduler = AsyncIOScheduler()
    for chain in config.chains:
        watcher = app[WATCHERS][chain.name]
        scheduler.add_job(
            tasks.job(f"watch:{chain.name}", watcher.run_once),
            "interval",
            seconds=chain.poll_interval,
            id=f"watch:{chain.name}",
            max_instances=1,
            coalesce=True,
            next_run_time=_now(),
        )
    for name, sweeper in app[SWEEPERS].items():
        scheduler.add_job(
            tasks.job(f"sweep:{name}", sweeper.run_once),
            "interval",
            seconds=sweeper.chain.poll_interval,
            id=f"sweep:{name}",
            max_instances=1,
            coalesce=True,
            next_run_time=_now(),
        )
    scheduler.add_job(
        tasks.job("expiry", lambda: expiry.run_once(app[POOL])),
        "interval",
        seconds=config.payments.expiry_interval,
        id="expiry",
        max_instances=1,
        coalesce=True,
        next_run_time=_now(),
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


def _now() -> datetime:
    return datetime.now(UTC)
