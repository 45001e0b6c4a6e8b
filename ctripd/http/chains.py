"""`GET /v1/chains`: per chain the head, the last scanned block, the lag and RPC health.

Head and cursor come from the database (written by whichever process leads the chain); RPC
health and `leader` are this process's own view. The API key middleware (`http.auth`) guards it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiohttp import web

from ctripd.config import ChainConfig
from ctripd.formats import iso
from ctripd.http.keys import CONFIG, POOL, RPC, WATCHERS
from ctripd.http.params import json_response
from ctripd.jobs.chainwatch import WatchState
from ctripd.ledger.chains import chain_rows, lag, stalled


def chain_status(
    chain: ChainConfig,
    row: asyncpg.Record | None,
    scanner: WatchState | None,
    rpc: list[dict[str, Any]],
) -> dict[str, Any]:
    """One chain as `/v1/chains` and `ctripd chains` show it (the CLI runs no scanner: None)."""
    return {
        "name": chain.name,
        "chain_id": chain.chain_id,
        "head": row["head"] if row else None,
        "head_seen_at": iso(row["head_seen_at"]) if row else None,
        "head_time": iso(row["head_time"]) if row else None,
        "stalled": stalled(row["head_time"] if row else None, chain.stall_after, datetime.now(UTC)),
        "scanned_block": row["scanned_block"] if row else None,
        "scanned_at": iso(row["scanned_at"]) if row else None,
        "lag": lag(row),
        "confirmations": chain.confirmations,
        "scanner": None
        if scanner is None
        else {
            "leader": scanner.leader,
            "watched_addresses": scanner.watched,
            "last_error": scanner.last_error,
            "ws_connected": scanner.ws_connected,
        },
        "rpc": rpc,
    }


async def get_chains(request: web.Request) -> web.Response:
    app = request.app
    rows = await chain_rows(app[POOL])
    data = [
        chain_status(
            chain,
            rows.get(chain.name),
            app[WATCHERS][chain.name].state,
            app[RPC][chain.name].health(),
        )
        for chain in app[CONFIG].chains
    ]
    return json_response({"data": data})


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/v1/chains", get_chains)
