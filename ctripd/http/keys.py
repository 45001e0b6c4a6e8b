"""Every typed key of the application and of its requests, in one leaf module: the app factory
sets them, handlers read them, and neither imports the other for it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web

from ctripd.chain.rpc import RpcClient
from ctripd.chain.wallet import Wallet
from ctripd.config import Config
from ctripd.http.ratelimit import RateLimits
from ctripd.jobs.chainwatch import ChainWatcher
from ctripd.jobs.sweeper import Sweeper
from ctripd.jobs.tasks import TaskSet
from ctripd.jobs.webhooks import WebhookWorker
from ctripd.ledger.payments import IndexPool
from ctripd.rates.book import RateBook


@dataclass
class ApiState:
    """Per-process state of the payments API: derivation indexes fetched ahead, and the key
    that signs list cursors (read from the database on first use)."""

    indexes: IndexPool
    cursor_key: bytes | None = None
    # Chains whose scan cursor exists: payments on them are taken.
    watched_chains: set[str] = field(default_factory=set)


CONFIG = web.AppKey("config", Config)
# The daemon's pool, for background work and session-level users (locks).
POOL = web.AppKey("pool", asyncpg.Pool)
# The API's own pool: its statements leave no session state, so releases skip the reset.
API_POOL = web.AppKey("api_pool", asyncpg.Pool)
API_STATE = web.AppKey("api_state", ApiState)
HTTP = web.AppKey("http", aiohttp.ClientSession)
RPC = web.AppKey("rpc", dict[str, RpcClient])
WATCHERS = web.AppKey("watchers", dict[str, ChainWatcher])
SWEEPERS = web.AppKey("sweepers", dict[str, Sweeper])
TASKS = web.AppKey("tasks", TaskSet)
WALLET = web.AppKey("wallet", Wallet)
WEBHOOKS = web.AppKey("webhooks", WebhookWorker)
OPENAPI = web.AppKey("openapi", dict[str, Any])
# Exchange rates of assets in fiat currencies, refreshed in the background.
RATES = web.AppKey("rates", RateBook)
# Token buckets of the API keys (per process).
RATE_LIMITS = web.AppKey("rate_limits", RateLimits)

# The merchant of the request's API key, bound by the auth middleware.
MERCHANT = web.RequestKey("merchant", str)
