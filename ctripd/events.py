"""Webhook events: written in the caller's transaction, next to the change they report."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg

from ctripd.db import queries
from ctripd.payments import load_payment

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


def new_event_id() -> str:
    return f"evt_{uuid.uuid4().hex}"


async def record_event(
    conn: asyncpg.Connection,
    event_type: str,
    payment_id: str,
    transfer: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    payment: dict[str, Any] | None = None,
) -> str:
    """Insert an outbox row carrying the payment object as it is now, inside `conn`'s transaction.

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
    payment = dict(payment)
    merchant = payment.pop("merchant")
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
        "created_at": now.isoformat().replace("+00:00", "Z"),
        "data": data,
    }
    await conn.execute(Q["insert_event"], event_id, payment_id, merchant, event_type, payload, now)
    return event_id
