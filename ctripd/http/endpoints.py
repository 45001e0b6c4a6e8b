"""Merchants' webhook endpoints, self-service: `POST/GET /v1/webhook-endpoints`,
`GET/DELETE /v1/webhook-endpoints/{id}`, `POST …/{id}/rotate-secret` and `POST …/{id}/test`.

An endpoint's `whsec_` secret is shown only when it is made (create, rotate-secret). Every event
of the merchant whose type the endpoint's filter takes is delivered to it as its own delivery.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
from aiohttp import web

from ctripd.db import queries
from ctripd.formats import iso, new_event_id
from ctripd.http.keys import API_POOL, CONFIG, MERCHANT, WEBHOOKS
from ctripd.http.params import check_text, json_response, read_json, short
from ctripd.http.problems import Problem, validation
from ctripd.jobs.signing import generate_secret
from ctripd.jobs.targets import check_url
from ctripd.jobs.webhooks import endpoint_target
from ctripd.ledger.events import EVENT_TYPES

Q = queries("endpoints")

FIELDS = ("url", "event_types", "description")
DESCRIPTION_MAX = 255
# Each event is written once per endpoint of its merchant: the fan-out is bounded.
MAX_ENDPOINTS = 16
ENDPOINT_ID = re.compile(r"we_[0-9a-f]{32}")
TEST_EVENT = "webhook.test"


def _rotating(row: asyncpg.Record) -> bool:
    """Whether the previous secret still signs (a rotation's overlap lasts)."""
    until = row["previous_secret_until"]
    return until is not None and bool(until > datetime.now(UTC))


def render(row: asyncpg.Record, secret: bool = False) -> dict[str, Any]:
    """An endpoint as the API shows it; its secret only where it was just made."""
    previous_until = row["previous_secret_until"]
    shown: dict[str, Any] = {
        "id": row["id"],
        "url": row["url"],
        "description": row["description"],
        "event_types": row["event_types"],
        "created_at": iso(row["created_at"]),
        "previous_secret_expires_at": iso(previous_until) if _rotating(row) else None,
    }
    if secret:
        shown["secret"] = row["secret"]
    return shown


def parse_create(body: Any, allow_private: bool) -> tuple[str, list[str] | None, str | None]:
    if not isinstance(body, dict):
        raise Problem(422, "the request body must be a JSON object")
    for name in body:
        if name not in FIELDS:
            raise validation(str(name)[:100], f"unknown field (allowed: {', '.join(FIELDS)})")
    url = body.get("url")
    if not isinstance(url, str):
        raise validation("url", "is required: the https:// URL events are POSTed to")
    check_text(url, "url")
    try:
        check_url(url, allow_private)
    except ValueError as exc:
        raise validation("url", str(exc)) from None
    event_types = body.get("event_types")
    if event_types is not None:
        if not isinstance(event_types, list) or not event_types:
            raise validation("event_types", "must be a non-empty list of event types, or null")
        for value in event_types:
            if value not in EVENT_TYPES:
                raise validation(
                    "event_types",
                    f"unknown event type {short(value)} (known: {', '.join(EVENT_TYPES)})",
                )
        event_types = sorted(set(event_types), key=EVENT_TYPES.index)
    description = body.get("description")
    if description is not None:
        if not isinstance(description, str) or len(description) > DESCRIPTION_MAX:
            raise validation("description", f"must be a string of at most {DESCRIPTION_MAX}")
        check_text(description, "description")
    return url, event_types, description


def _endpoint_id(request: web.Request) -> str:
    endpoint_id = request.match_info["id"]
    if not ENDPOINT_ID.fullmatch(endpoint_id):
        raise Problem(404, "no such webhook endpoint")
    return endpoint_id


async def _endpoint(request: web.Request) -> asyncpg.Record:
    row: asyncpg.Record | None = await request.app[API_POOL].fetchrow(
        Q["endpoint_by_id"], _endpoint_id(request), request[MERCHANT]
    )
    if row is None:
        raise Problem(404, "no such webhook endpoint")
    return row


async def create_endpoint(request: web.Request) -> web.Response:
    allow_private = request.app[CONFIG].webhooks.allow_private_targets
    url, event_types, description = parse_create(await read_json(request), allow_private)
    merchant = request[MERCHANT]
    async with request.app[API_POOL].acquire() as conn, conn.transaction():
        # Serializes creations of one merchant, so the bound holds under concurrency.
        await conn.execute(Q["lock_merchant"], merchant)
        if await conn.fetchval(Q["count_live"], merchant) >= MAX_ENDPOINTS:
            raise Problem(409, f"a merchant has at most {MAX_ENDPOINTS} webhook endpoints")
        row = await conn.fetchrow(
            Q["insert_endpoint"],
            f"we_{uuid.uuid4().hex}",
            merchant,
            url,
            description,
            event_types,
            generate_secret(),
        )
    assert row is not None
    return json_response(render(row, secret=True), 201)


async def list_endpoints(request: web.Request) -> web.Response:
    rows = await request.app[API_POOL].fetch(Q["list_endpoints"], request[MERCHANT])
    return json_response({"data": [render(r) for r in rows]})


async def get_endpoint(request: web.Request) -> web.Response:
    return json_response(render(await _endpoint(request)))


async def delete_endpoint(request: web.Request) -> web.Response:
    """Deleted at once: its pending deliveries are marked failed and nothing more is sent."""
    gone = await request.app[API_POOL].fetchval(
        Q["delete_endpoint"], _endpoint_id(request), request[MERCHANT]
    )
    if gone is None:
        raise Problem(404, "no such webhook endpoint")
    return web.Response(status=204)


async def rotate_secret(request: web.Request) -> web.Response:
    """A new secret; the old one keeps signing beside it for `webhooks.secret_overlap` s."""
    overlap = request.app[CONFIG].webhooks.secret_overlap
    row = await request.app[API_POOL].fetchrow(
        Q["rotate_secret"], _endpoint_id(request), request[MERCHANT], generate_secret(), overlap
    )
    if row is None:
        raise Problem(404, "no such webhook endpoint")
    return json_response(render(row, secret=True))


async def send_test(request: web.Request) -> web.Response:
    """Send a signed `webhook.test` message now (recorded nowhere) and answer how it went."""
    row = await _endpoint(request)
    previous = row["previous_secret"] if _rotating(row) else None
    target = endpoint_target(row["url"], row["secret"], previous)
    message_id = new_event_id()
    body = orjson.dumps(
        {
            "id": message_id,
            "type": TEST_EVENT,
            "created_at": iso(datetime.now(UTC)),
            "merchant": request[MERCHANT],
            "data": {"endpoint_id": row["id"]},
        }
    )
    outcome = await request.app[WEBHOOKS].post(target, message_id, body)
    return json_response(
        {
            "id": message_id,
            "delivered": outcome.ok,
            "http_status": outcome.http_status,
            "latency_ms": outcome.latency_ms,
            "error": outcome.error,
        }
    )


def setup_routes(app: web.Application) -> None:
    app.router.add_post("/v1/webhook-endpoints", create_endpoint)
    app.router.add_get("/v1/webhook-endpoints", list_endpoints)
    app.router.add_get("/v1/webhook-endpoints/{id}", get_endpoint)
    app.router.add_delete("/v1/webhook-endpoints/{id}", delete_endpoint)
    app.router.add_post("/v1/webhook-endpoints/{id}/rotate-secret", rotate_secret)
    app.router.add_post("/v1/webhook-endpoints/{id}/test", send_test)
