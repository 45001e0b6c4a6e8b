"""/healthz (the process is up) and /readyz (the database answers, and every chain has been
scanned, its RPC answers correctly as far as this process last saw, its head block is younger
than the chain's `stall_after`, and its scanner lags no more than `server.max_lag_blocks` behind
the head)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiohttp import web

from ctripd.config import ChainConfig
from ctripd.errors import CtripdError
from ctripd.http.keys import CONFIG, POOL, RPC, WATCHERS
from ctripd.ledger.chains import chain_rows, lag, stalled


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    app = request.app
    checks: dict[str, Any] = {}
    try:
        await asyncio.wait_for(app[POOL].fetchval("SELECT 1"), timeout=3)
        checks["database"] = "ok"
    except (OSError, CtripdError, TimeoutError) as exc:
        checks["database"] = f"error: {type(exc).__name__}"
    except Exception as exc:  # asyncpg raises many kinds; any of them means not ready
        checks["database"] = f"error: {type(exc).__name__}"

    chains = app[CONFIG].chains
    rows = await chain_rows(app[POOL]) if checks["database"] == "ok" else {}
    results = [chain_readiness(app, c, rows.get(c.name)) for c in chains]
    checks["chains"] = {c.name: r for c, r in zip(chains, results, strict=True)}
    ready = checks["database"] == "ok" and all(r == "ok" for r in results)
    return web.json_response(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status=200 if ready else 503,
    )


def chain_readiness(app: web.Application, chain: ChainConfig, row: asyncpg.Record | None) -> str:
    """From what this process and the chain's leader already know, never a call to the node:
    probes are unauthenticated and frequent, and would spend the scanner's RPC budget."""
    name = chain.name
    watcher = app[WATCHERS][name]
    if watcher.state.leader and watcher.state.last_error:
        return f"error: {watcher.state.last_error}"[:200]
    used = [e for e in app[RPC][name].health() if e["requests"]]
    if used and not any(e["ok"] for e in used):
        return f"error: {used[0]['last_error']}"[:200]
    if row is None or row["scanned_at"] is None:
        return "error: not scanned yet"
    if stalled(row["head_time"], chain.stall_after, datetime.now(UTC)):
        return (
            f"error: stalled: head block {row['head']} is from {row['head_time'].isoformat()}, "
            f"more than {chain.stall_after} s ago"
        )
    behind = lag(row)
    max_lag = app[CONFIG].server.max_lag_blocks
    if behind is not None and behind > max_lag:
        return f"error: scanner {behind} blocks behind the head (max {max_lag})"
    return "ok"


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
