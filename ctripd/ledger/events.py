"""Webhook events: the outbox rows written in the caller's transaction next to the change they
report, and the reads and redelivery of events with their delivery attempts (for the API, which
shows a merchant its own, and the CLI, which shows the operator all of them)."""

from __future__ import annotations

import json
from collections.abc import Sequence
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
    "refund.created",
    "refund.confirmed",
    "refund.failed",
    "payout.created",
    "payout.approved",
    "payout.rejected",
    "payout.confirmed",
    "payout.failed",
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
) -> str:
    """Insert the outbox event carrying the payment object as it is now, inside `conn`'s
    transaction, with one delivery per endpoint it goes to (the default merchant's `[webhooks]
    url` among them while `operator_url`: one is set); returns the event's id.

    Call this after the state change, on the same connection, within the same transaction.
    `payment` is the object `load_payment` gave after that change, when the caller writes
    several events for one change and loads it once.
    """
    if payment is None:
        payment = await load_payment(conn, payment_id)
        if payment is None:
            raise ValueError(f"no payment {payment_id}")
    (row,) = _event_rows([(event_type, payment_id, transfer, extra)], {payment_id: payment})
    await conn.execute(Q["insert_event"], *row, operator_url)
    return row[0]


NewEvent = tuple[str, str, dict[str, Any] | None, dict[str, Any] | None]


async def record_events(
    conn: Conn,
    events: Sequence[NewEvent],
    payments: dict[str, dict[str, Any]],
    *,
    operator_url: bool,
) -> list[str]:
    """`record_event` for many events in one round trip, in order: each (type, payment id,
    transfer, extra), with the payment objects as they are now."""
    rows = _event_rows(events, payments)
    await conn.executemany(Q["insert_event"], [(*row, operator_url) for row in rows])
    return [row[0] for row in rows]


def _event_rows(
    events: Sequence[NewEvent], payments: dict[str, dict[str, Any]]
) -> list[tuple[str, str, str, str, str, datetime]]:
    rows = []
    for event_type, payment_id, transfer, extra in events:
        if event_type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {event_type}")
        payment = payments.get(payment_id)
        if payment is None:
            raise ValueError(f"no payment {payment_id}")
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
            "merchant": payment["merchant"],
            "data": data,
        }
        try:
            body = orjson.dumps(payload).decode()
        except orjson.JSONEncodeError:  # an integer beyond 64 bits, which orjson refuses
            body = json.dumps(payload, separators=(",", ":"))
        rows.append((event_id, payment_id, payment["merchant"], event_type, body, now))
    return rows


class NotRedeliverable(CtripdError):
    """Nothing to send again: every delivery is pending, or no live endpoint takes the event."""


def event_status(deliveries: list[dict[str, Any]]) -> str:
    """One status for an event: pending while any delivery is, failed if any failed, delivered
    once every delivery was; `none` when no endpoint took it."""
    statuses = {d["status"] for d in deliveries}
    for status in ("pending", "failed", "delivered"):
        if status in statuses:
            return status
    return "none"


def _render_delivery(row: asyncpg.Record, attempts: list[asyncpg.Record]) -> dict[str, Any]:
    pending = row["status"] == "pending"
    return {
        "id": row["id"],
        "endpoint_id": row["endpoint_id"],
        "status": row["status"],
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
    }


def render_event(row: asyncpg.Record, deliveries: list[dict[str, Any]]) -> dict[str, Any]:
    """An event as the API and `ctripd events list --json` show it."""
    return {
        "id": row["id"],
        "type": row["type"],
        "payment_id": row["payment_id"],
        "status": event_status(deliveries),
        "created_at": iso(row["created_at"]),
        "deliveries": deliveries,
        "payload": orjson.loads(row["payload"]),
    }


async def _with_deliveries(
    conn: Conn | asyncpg.Pool, rows: list[asyncpg.Record]
) -> list[dict[str, Any]]:
    deliveries = await conn.fetch(Q["deliveries_of_events"], [r["id"] for r in rows])
    attempts: dict[str, list[asyncpg.Record]] = {d["id"]: [] for d in deliveries}
    for attempt in await conn.fetch(Q["attempts_of_deliveries"], list(attempts)):
        attempts[attempt["delivery_id"]].append(attempt)
    by_event: dict[str, list[dict[str, Any]]] = {r["id"]: [] for r in rows}
    for d in deliveries:
        by_event[d["event_id"]].append(_render_delivery(d, attempts[d["id"]]))
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
    """A page of events, newest first, and the seq to continue before (None on the last page);
    `status` keeps the events with a delivery in that status."""
    rows = await conn.fetch(Q["list_events"], merchant, payment_id, status, before_seq, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return await _with_deliveries(conn, rows), rows[-1]["seq"] if more else None


async def redeliver(
    conn: Conn, event_id: str, merchant: str | None, *, operator_url: bool
) -> dict[str, Any]:
    """Send an event again, now, with a fresh retry schedule, to each live endpoint that takes it
    and has no delivery of it pending (`operator_url`: the `[webhooks] url` is set)."""
    async with conn.transaction():
        queued = await conn.fetch(Q["redeliver_event"], event_id, merchant, operator_url)
        row = await conn.fetchrow(Q["event_by_id"], event_id, merchant)
        if row is None:
            raise NotFoundError(f"no event {event_id}")
        if not queued:
            if await conn.fetchval(Q["pending_deliveries_of_event"], event_id):
                raise NotRedeliverable(f"event {event_id} is pending: it is queued for delivery")
            raise NotRedeliverable(f"no live webhook endpoint takes event {event_id}")
    (event,) = await _with_deliveries(conn, [row])
    return event
