"""Webhook events: the outbox rows written in the caller's transaction next to the change they
report, and the reads and redelivery of events with their delivery attempts (for the API, which
shows a merchant its own, and the CLI, which shows the operator all of them)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from ctripd.db import Conn, queries
from ctripd.errors import CtripdError, NotFoundError
from ctripd.formats import iso, new_event_id
from ctripd.ledger.objects import load_payment

Q = queries("events")

EVENT_TYPES = (
    "payment.created",
    "payment.transfer_received",
    "payment.detected",
    "payment.confirmed",
    "payment.expired",
    "payment.canceled",
    "payment.reorged",
    "payment.swept",
)
# Delivery states of an event.
STATUSES = ("pending", "delivered", "failed")


async def record_event(
    conn: Conn,
    event_type: str,
    payment_id: str,
    transfer: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    payment: dict[str, Any] | None = None,
    *,
    operator_url: bool,
) -> list[str]:
    """Insert the outbox rows carrying the payment object as it is now, inside `conn`'s
    transaction: one delivery per endpoint the event goes to; returns their ids (the config
    endpoint's first, for the default merchant while `operator_url`: `[webhooks] url` is set).

    Call this after the state change, on the same connection, within the same transaction.
    `payment` is the object `load_payment` gave after that change, when the caller writes
    several events for one change and loads it once.
    """
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type}")
    if payment is None:
        payment = await load_payment(conn, payment_id)
        if payment is None:
            raise ValueError(f"no payment {payment_id}")
    merchant = payment["merchant"]
    event_id = new_event_id()
    now = datetime.now(UTC)
    data: dict[str, Any] = {"payment": payment}
    if transfer is not None:
        data["transfer"] = transfer
    if extra:
        data.update(extra)
    payload = {
        "id": event_id,
        "type": event_type,
        "created_at": iso(now),
        "merchant": merchant,
        "data": data,
    }
    rows = await conn.fetch(
        Q["insert_event"], event_id, payment_id, merchant, event_type, payload, now, operator_url
    )
    return [r["id"] for r in rows]


class NotRedeliverable(CtripdError):
    """The event is still pending: it is queued or being delivered already."""


def render_event(row: asyncpg.Record, attempts: list[asyncpg.Record]) -> dict[str, Any]:
    """An event as the API and `ctripd events list --json` show it."""
    pending = row["status"] == "pending"
    return {
        "id": row["id"],
        "type": row["type"],
        "payment_id": row["payment_id"],
        "endpoint_id": row["endpoint_id"],
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
    limit: int = 20,
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
