"""`GET /v1/chains`: per chain the head, the last scanned block, the lag and RPC health.

Head and cursor come from the database (written by whichever process leads the chain); RPC
health and `leader` are this process's own view. The API key middleware of ctripd.api guards it.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson
from aiohttp import web

from ctripd import openapi
from ctripd.chainwatch import WatchState
from ctripd.config import ChainConfig
from ctripd.db import queries
from ctripd.payments import iso

Q = queries("chains")


def lag(row: asyncpg.Record | None) -> int | None:
    """Blocks between the head and the last scanned block; None before the first scan."""
    if row is None or row["head"] is None or row["scanned_block"] is None:
        return None
    return max(0, int(row["head"]) - int(row["scanned_block"]))


async def chain_rows(pool: asyncpg.Pool) -> dict[str, asyncpg.Record]:
    return {r["name"]: r for r in await pool.fetch(Q["all_chains"])}


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
        },
        "rpc": rpc,
    }


async def get_chains(request: web.Request) -> web.Response:
    from ctripd.app import CONFIG, POOL, RPC, WATCHERS

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
    return web.Response(body=orjson.dumps({"data": data}), content_type="application/json")


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/v1/chains", get_chains)
    openapi.document(app, _PATHS, _SCHEMAS)


_NULLABLE_INT = {"type": "integer", "nullable": True}
_SCHEMAS: dict[str, Any] = {
    "RpcEndpoint": {
        "type": "object",
        "properties": {
            "url": {
                "type": "string",
                "description": "Scheme, host and port only: paths and queries may hold API keys.",
            },
            "ok": {"type": "boolean", "description": "The last request to it succeeded."},
            "last_error": {"type": "string", "nullable": True},
            "last_error_at": {"type": "number", "nullable": True, "description": "Unix time."},
            "latency_ms": {"type": "number", "nullable": True, "description": "Last request."},
            "requests": {"type": "integer"},
            "errors": {"type": "integer"},
        },
    },
    "Chain": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "chain_id": {"type": "integer"},
            "head": {**_NULLABLE_INT, "description": "Latest block the node reported."},
            "head_seen_at": {"type": "string", "format": "date-time", "nullable": True},
            "scanned_block": {**_NULLABLE_INT, "description": "Last block fully scanned."},
            "scanned_at": {"type": "string", "format": "date-time", "nullable": True},
            "lag": {**_NULLABLE_INT, "description": "head − scanned_block."},
            "confirmations": {"type": "integer"},
            "scanner": {
                "type": "object",
                "properties": {
                    "leader": {
                        "type": "boolean",
                        "description": "This process holds the chain's scanner lock.",
                    },
                    "watched_addresses": {"type": "integer"},
                    "last_error": {"type": "string", "nullable": True},
                },
            },
            "rpc": {"type": "array", "items": openapi.ref("RpcEndpoint")},
        },
    },
}
_PATHS: dict[str, Any] = {
    "/v1/chains": {
        "get": {
            "summary": "Chains: head, last scanned block, lag and RPC health",
            "operationId": "listChains",
            "responses": {
                "200": {
                    "description": "Every configured chain",
                    "content": openapi.json_content(
                        {
                            "type": "object",
                            "properties": {
                                "data": {"type": "array", "items": openapi.ref("Chain")}
                            },
                        }
                    ),
                },
                **openapi.problem_responses(401),
            },
        }
    }
}
