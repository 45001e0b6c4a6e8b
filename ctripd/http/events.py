"""Webhook events of the key's merchant with their deliveries and attempts: `GET /v1/events` and
`POST /v1/events/{id}/redeliver`."""

from __future__ import annotations

import base64
import binascii

from aiohttp import web

from ctripd.errors import NotFoundError
from ctripd.formats import EVENT_ID, PAYMENT_ID
from ctripd.http.keys import API_POOL, CONFIG, MERCHANT
from ctripd.http.params import (
    json_response,
    limit_param,
    query_param,
    refuse_unknown_params,
    status_param,
)
from ctripd.http.problems import Problem
from ctripd.ledger.events import STATUSES, NotRedeliverable, list_events, redeliver

LIST_PARAMS = ("payment_id", "status", "limit", "cursor")
DEFAULT_LIMIT = 20
MAX_LIMIT = 100


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


async def get_events(request: web.Request) -> web.Response:
    refuse_unknown_params(request, LIST_PARAMS)
    status = status_param(request, STATUSES)
    limit = limit_param(request, DEFAULT_LIMIT, MAX_LIMIT)
    # Checked here, not left to the query: Postgres refuses a NUL in text with an error.
    payment_id = query_param(request, "payment_id")
    if payment_id is not None and not PAYMENT_ID.fullmatch(payment_id):
        raise Problem(400, "payment_id must be a payment id (pay_…)", field="payment_id")
    cursor = query_param(request, "cursor")
    events, next_seq = await list_events(
        request.app[API_POOL],
        request[MERCHANT],
        payment_id=payment_id,
        status=status,
        limit=limit,
        before_seq=decode_cursor(cursor) if cursor is not None else None,
    )
    next_cursor = encode_cursor(next_seq) if next_seq is not None else None
    return json_response(
        {"data": events, "has_more": next_cursor is not None, "next_cursor": next_cursor}
    )


async def post_redeliver(request: web.Request) -> web.Response:
    event_id = request.match_info["id"]
    if not EVENT_ID.fullmatch(event_id):
        raise Problem(404, "no such event")
    async with request.app[API_POOL].acquire() as conn:
        try:
            event = await redeliver(
                conn,
                event_id,
                request[MERCHANT],
                operator_url=bool(request.app[CONFIG].webhooks.url),
            )
        except NotFoundError as exc:
            raise Problem(404, str(exc)) from None
        except NotRedeliverable as exc:
            raise Problem(409, str(exc)) from None
    return json_response(event, 202)


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/v1/events", get_events)
    app.router.add_post("/v1/events/{id}/redeliver", post_redeliver)
