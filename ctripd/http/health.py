"""/healthz (the process is up) and /readyz (database and every chain's RPC answer correctly,
and no chain's scanner lags more than `server.max_lag_blocks` behind its head)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from ctripd.errors import CtripdError
from ctripd.http.keys import CONFIG, POOL, RPC
from ctripd.ledger.chains import chain_rows, lag


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

    async def chain_check(name: str, expected: int) -> str:
        try:
            got = await asyncio.wait_for(app[RPC][name].chain_id(), timeout=5)
        except (CtripdError, TimeoutError) as exc:
            return f"error: {exc}"[:200]
        return "ok" if got == expected else f"error: chain id {got}, expected {expected}"

    chains = app[CONFIG].chains
    results = await asyncio.gather(*(chain_check(c.name, c.chain_id) for c in chains))
    if checks["database"] == "ok":
        max_lag = app[CONFIG].server.max_lag_blocks
        rows = await chain_rows(app[POOL])
        for i, chain in enumerate(chains):
            behind = lag(rows.get(chain.name))
            if results[i] == "ok" and behind is not None and behind > max_lag:
                results[i] = f"error: scanner {behind} blocks behind the head (max {max_lag})"
    checks["chains"] = {c.name: r for c, r in zip(chains, results, strict=True)}
    ready = checks["database"] == "ok" and all(r == "ok" for r in results)
    return web.json_response(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status=200 if ready else 503,
    )


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
