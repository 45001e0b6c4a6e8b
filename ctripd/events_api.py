"""Webhook events and their delivery attempts: `GET /v1/events`, `POST /v1/events/{id}/redeliver`
and `ctripd events list|redeliver`. The API shows a merchant its own events; the CLI, run by the
operator, shows all of them.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import json
import re
import sys
from typing import Any, TypeAlias

import asyncpg
import orjson
from aiohttp import web
from asyncpg.pool import PoolConnectionProxy

from ctripd import openapi
from ctripd.cli import with_connection
from ctripd.db import queries
from ctripd.errors import CtripdError, NotFoundError
from ctripd.events import EVENT_TYPES
from ctripd.payments import iso
from ctripd.problems import Problem

Q = queries("webhooks")

STATUSES = ("pending", "delivered", "failed")
DEFAULT_LIMIT = 20
MAX_LIMIT = 100


# A string: PoolConnectionProxy is not subscriptable at run time.
Conn: TypeAlias = "asyncpg.Connection | PoolConnectionProxy[asyncpg.Record]"


class NotRedeliverable(CtripdError):
    """The event is still pending: it is queued or being delivered already."""


def render_event(row: asyncpg.Record, attempts: list[asyncpg.Record]) -> dict[str, Any]:
    """An event as the API and `ctripd events list --json` show it."""
    pending = row["status"] == "pending"
    return {
        "id": row["id"],
        "type": row["type"],
        "payment_id": row["payment_id"],
        "status": row["status"],
        "created_at": iso(row["created_at"]),
        "next_attempt_at": iso(row["next_attempt_at"]) if pending and not row["held"] else None,
        "delivered_at": iso(row["delivered_at"]),
        "last_error": row["last_error"],
        "attempts": [
            {
                "attempted_at": iso(a["attempted_at"]),
                "url": a["url"],
                "http_status": a["http_status"],
                "latency_ms": a["latency_ms"],
                "error": a["error"],
                "response_body": a["response_body"],
            }
            for a in attempts
        ],
        "payload": orjson.loads(row["payload"]),
    }


async def _with_attempts(
    conn: Conn | asyncpg.Pool, rows: list[asyncpg.Record]
) -> list[dict[str, Any]]:
    by_event: dict[str, list[asyncpg.Record]] = {r["id"]: [] for r in rows}
    for attempt in await conn.fetch(Q["attempts_of_events"], list(by_event)):
        by_event[attempt["event_id"]].append(attempt)
    return [render_event(r, by_event[r["id"]]) for r in rows]


async def list_events(
    conn: Conn | asyncpg.Pool,
    merchant: str | None,
    *,
    payment_id: str | None = None,
    status: str | None = None,
    limit: int = DEFAULT_LIMIT,
    before_seq: int | None = None,
) -> tuple[list[dict[str, Any]], int | None]:
    """A page of events, newest first, and the seq to continue before (None on the last page)."""
    rows = await conn.fetch(Q["list_events"], merchant, payment_id, status, before_seq, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return await _with_attempts(conn, rows), rows[-1]["seq"] if more else None


async def redeliver(conn: Conn, event_id: str, merchant: str | None) -> dict[str, Any]:
    """Queue a delivered or failed event again, now, with a fresh retry schedule."""
    async with conn.transaction():
        if await conn.fetchval(Q["redeliver_event"], event_id, merchant) is None:
            row = await conn.fetchrow(Q["event_by_id"], event_id, merchant)
            if row is None:
                raise NotFoundError(f"no event {event_id}")
            raise NotRedeliverable(f"event {event_id} is pending: it is queued for delivery")
        row = await conn.fetchrow(Q["event_by_id"], event_id, merchant)
    assert row is not None
    (event,) = await _with_attempts(conn, [row])
    return event


# --- HTTP ---------------------------------------------------------------------------------------
# Paths under /v1/ pass the API's auth middleware first, which binds the key's merchant.

LIST_PARAMS = ("payment_id", "status", "limit", "cursor")
_EVENT_ID = re.compile(r"evt_[0-9a-f]{32}")
_PAYMENT_ID = re.compile(r"pay_[0-9a-f]{32}")


def encode_cursor(seq: int) -> str:
    """The position after which the next page starts. A forged cursor can only move within the
    merchant's own events, so it needs no signature."""
    return base64.urlsafe_b64encode(f"evt:{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        text = ""
    kind, _, seq = text.partition(":")
    if kind != "evt" or not seq.isascii() or not seq.isdigit() or len(seq) > 18:
        raise Problem(400, "invalid cursor: pass next_cursor back unchanged", field="cursor")
    return int(seq)


def _query_param(request: web.Request, name: str) -> str | None:
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise Problem(400, f"query parameter {name} given more than once", field=name)
    return values[0] if values else None


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


async def get_events(request: web.Request) -> web.Response:
    from ctripd.api import MERCHANT
    from ctripd.app import POOL

    for name in request.query:
        if name not in LIST_PARAMS:
            allowed = ", ".join(LIST_PARAMS)
            raise Problem(400, f"unknown query parameter (allowed: {allowed})", field=name[:100])
    status = _query_param(request, "status")
    if status is not None and status not in STATUSES:
        raise Problem(400, f"status must be one of {', '.join(STATUSES)}", field="status")
    raw_limit = _query_param(request, "limit")
    limit = DEFAULT_LIMIT
    if raw_limit is not None:
        if (
            not raw_limit.isascii()
            or not raw_limit.isdigit()
            or not 1 <= int(raw_limit) <= MAX_LIMIT
        ):
            raise Problem(400, f"limit must be an integer from 1 to {MAX_LIMIT}", field="limit")
        limit = int(raw_limit)
    # Checked here, not left to the query: Postgres refuses a NUL in text with an error.
    payment_id = _query_param(request, "payment_id")
    if payment_id is not None and not _PAYMENT_ID.fullmatch(payment_id):
        raise Problem(400, "payment_id must be a payment id (pay_…)", field="payment_id")
    cursor = _query_param(request, "cursor")
    events, next_seq = await list_events(
        request.app[POOL],
        request[MERCHANT],
        payment_id=payment_id,
        status=status,
        limit=limit,
        before_seq=decode_cursor(cursor) if cursor is not None else None,
    )
    next_cursor = encode_cursor(next_seq) if next_seq is not None else None
    return _json({"data": events, "has_more": next_cursor is not None, "next_cursor": next_cursor})


async def post_redeliver(request: web.Request) -> web.Response:
    from ctripd.api import MERCHANT
    from ctripd.app import POOL

    event_id = request.match_info["id"]
    if not _EVENT_ID.fullmatch(event_id):
        raise Problem(404, "no such event")
    async with request.app[POOL].acquire() as conn:
        try:
            event = await redeliver(conn, event_id, request[MERCHANT])
        except NotFoundError as exc:
            raise Problem(404, str(exc)) from None
        except NotRedeliverable as exc:
            raise Problem(409, str(exc)) from None
    return _json(event, 202)


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/v1/events", get_events)
    app.router.add_post("/v1/events/{id}/redeliver", post_redeliver)
    openapi.document(app, _openapi_paths(), _openapi_schemas())


def _openapi_schemas() -> dict[str, Any]:
    time = {"type": "string", "format": "date-time"}
    nullable_time = {**time, "nullable": True}
    nullable_text = {"type": "string", "nullable": True}
    return {
        "EventPayload": {
            "type": "object",
            "description": (
                "The webhook body, byte for byte as delivered (and signed) on every attempt."
            ),
            "required": ["id", "type", "created_at", "data"],
            "properties": {
                "id": {"type": "string", "description": "`evt_…`; the `webhook-id` header."},
                "type": {"type": "string", "enum": list(EVENT_TYPES)},
                "created_at": time,
                "data": {
                    "type": "object",
                    "required": ["payment"],
                    "properties": {
                        "payment": openapi.ref("Payment"),
                        "transfer": openapi.ref("Transfer"),
                    },
                },
            },
        },
        "DeliveryAttempt": {
            "type": "object",
            "properties": {
                "attempted_at": time,
                "url": {"type": "string", "description": "Without user info or query string."},
                "http_status": {"type": "integer", "nullable": True},
                "latency_ms": {"type": "integer"},
                "error": {**nullable_text, "description": "Null on a 2xx answer."},
                "response_body": {
                    **nullable_text,
                    "description": "The first 1 KiB of the answer, as UTF-8.",
                },
            },
        },
        "Event": {
            "type": "object",
            "properties": {
                "id": {"type": "string"},
                "type": {"type": "string", "enum": list(EVENT_TYPES)},
                "payment_id": {"type": "string"},
                "status": {
                    "type": "string",
                    "enum": list(STATUSES),
                    "description": (
                        "`pending`: queued or retrying; `delivered`: a 2xx answer; `failed`: "
                        "every retry of the schedule failed (redeliver it by hand)."
                    ),
                },
                "created_at": time,
                "next_attempt_at": {
                    **nullable_time,
                    "description": (
                        "Set while pending; null while the event waits for an earlier event of "
                        "its payment that is being retried (events of a payment go out in order)."
                    ),
                },
                "delivered_at": nullable_time,
                "last_error": nullable_text,
                "attempts": {"type": "array", "items": openapi.ref("DeliveryAttempt")},
                "payload": openapi.ref("EventPayload"),
            },
        },
        "EventList": {
            "type": "object",
            "properties": {
                "data": {"type": "array", "items": openapi.ref("Event")},
                "has_more": {"type": "boolean"},
                "next_cursor": nullable_text,
            },
        },
    }


def _openapi_paths() -> dict[str, Any]:
    return {
        "/v1/events": {
            "get": {
                "summary": "List webhook events with their delivery attempts, newest first",
                "operationId": "listEvents",
                "parameters": [
                    {
                        "name": "payment_id",
                        "in": "query",
                        "schema": {"type": "string", "pattern": "^pay_[0-9a-f]{32}$"},
                    },
                    {
                        "name": "status",
                        "in": "query",
                        "schema": {"type": "string", "enum": list(STATUSES)},
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": MAX_LIMIT,
                            "default": DEFAULT_LIMIT,
                        },
                    },
                    {
                        "name": "cursor",
                        "in": "query",
                        "schema": {"type": "string"},
                        "description": "`next_cursor` of the previous page, unchanged.",
                    },
                ],
                "responses": {
                    "200": {
                        "description": "A page",
                        "content": openapi.json_content(openapi.ref("EventList")),
                        "links": {
                            "RedeliverEvent": {
                                "operationId": "redeliverEvent",
                                "parameters": {"id": "$response.body#/data/0/id"},
                                "description": "Redeliver an event of the page.",
                            }
                        },
                    },
                    **openapi.problem_responses(400, 401),
                },
            }
        },
        "/v1/events/{id}/redeliver": {
            "post": {
                "summary": "Queue a delivered or failed event for delivery again",
                "operationId": "redeliverEvent",
                "description": (
                    "The event is sent again as soon as a worker is free, with a fresh retry "
                    "schedule; its earlier attempts stay in the log. A pending event is already "
                    "queued: 409."
                ),
                "parameters": [
                    {
                        "name": "id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                        "description": "Event id (`evt_…`).",
                    }
                ],
                "responses": {
                    "202": {
                        "description": "Queued",
                        "content": openapi.json_content(openapi.ref("Event")),
                    },
                    **openapi.problem_responses(401, 404, 409),
                },
            }
        },
    }


# --- command line -------------------------------------------------------------------------------


def cmd_list(args: argparse.Namespace) -> int:
    from ctripd.cli import listing_limit

    limit = listing_limit(args.status, STATUSES, args.limit, MAX_LIMIT)

    async def work(conn: asyncpg.Connection) -> list[dict[str, Any]]:
        events, _ = await list_events(
            conn, None, payment_id=args.payment_id, status=args.status, limit=limit
        )
        return events

    events: list[dict[str, Any]] = asyncio.run(with_connection(args, work))
    if args.json:
        print(json.dumps(events, indent=2))
        return 0
    header = ("ID", "TYPE", "PAYMENT", "STATUS", "ATTEMPTS", "CREATED", "LAST ERROR")
    table = [header] + [
        (
            e["id"],
            e["type"],
            e["payment_id"] or "-",
            e["status"],
            str(len(e["attempts"])),
            e["created_at"] or "",
            (e["last_error"] or "")[:60],
        )
        for e in events
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for line in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
    return 0


def cmd_redeliver(args: argparse.Namespace) -> int:
    async def work(conn: asyncpg.Connection) -> dict[str, Any]:
        return await redeliver(conn, args.id, None)

    event: dict[str, Any] = asyncio.run(with_connection(args, work))
    print(f"event {event['id']} queued for redelivery", file=sys.stderr)
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("events", help="list webhook events and redeliver them")
    esub = parser.add_subparsers(dest="events_command", required=True)
    listing = esub.add_parser("list", help="list events with their delivery attempts")
    listing.add_argument("--payment-id", help="only this payment's events")
    listing.add_argument("--status", help=f"only events in this status ({', '.join(STATUSES)})")
    listing.add_argument(
        "--limit",
        default=str(DEFAULT_LIMIT),
        help=f"at most this many ({DEFAULT_LIMIT}, at most {MAX_LIMIT})",
    )
    listing.add_argument("--json", action="store_true", help="JSON output, attempts included")
    listing.set_defaults(func=cmd_list)
    again = esub.add_parser("redeliver", help="queue a delivered or failed event again")
    again.add_argument("id", help="event id (evt_…)")
    again.set_defaults(func=cmd_redeliver)
