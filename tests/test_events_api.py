"""GET /v1/events, POST /v1/events/{id}/redeliver and `ctripd events list|redeliver`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from test_webhooks import Received, Receiver, event_ids, new_payment, write_secret

from ctripd.cli.main import main
from ctripd.http.auth import create_key
from ctripd.http.keys import WEBHOOKS
from ctripd.jobs.webhooks import WebhookWorker


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.stop()


@pytest.fixture
async def setup(pool, write_config, make_client, receiver, tmp_path: Path):  # type: ignore[no-untyped-def]
    """A client whose webhooks go to `receiver` (one retry, so failures come fast) and a key."""
    write_secret(tmp_path / "webhook-secret")
    section = {
        "url": receiver.url,
        "secret_file": str(tmp_path / "webhook-secret"),
        "retry_schedule": [1],
    }
    config = write_config(toml={"webhooks": section})
    client = await make_client(config)
    return config, client, await key_for(pool, "default")


async def key_for(pool: asyncpg.Pool, merchant: str) -> dict[str, str]:
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO merchants (id, name) VALUES ($1, $1) ON CONFLICT DO NOTHING", merchant
        )
        key, _ = await create_key(conn, "test", merchant)  # type: ignore[arg-type]
    return {"Authorization": f"Bearer {key}"}


async def deliver_all(client: Any, pool: asyncpg.Pool) -> None:
    """Run the worker until nothing is due, letting each retry come due at once."""
    worker: WebhookWorker = client.server.app[WEBHOOKS]
    while True:
        await pool.execute("UPDATE deliveries SET next_attempt_at = now() WHERE status = 'pending'")
        if not await worker.run_once():
            return


def reject(payment_ids: set[str]) -> Any:
    async def reply(req: Received) -> web.StreamResponse:
        return web.Response(status=500 if req.payment_id in payment_ids else 200, text="no")

    return reply


async def test_list_with_attempts_filters_and_pages(pool, setup, receiver) -> None:
    _, client, key = setup
    failing = await new_payment(pool)
    fine = await new_payment(pool)
    foreign = await new_payment(pool, merchant="other")
    receiver.reply = reject({failing})
    await deliver_all(client, pool)

    resp = await client.get("/v1/events", headers=key)
    assert resp.status == 200
    body = await resp.json()
    assert body["has_more"] is False and body["next_cursor"] is None
    events = body["data"]
    assert [e["payment_id"] for e in events] == [fine, failing], "newest first, own events only"
    assert events[1]["status"] == "failed" and events[0]["status"] == "delivered"
    (failed,), (delivered,) = events[1]["deliveries"], events[0]["deliveries"]
    assert failed["status"] == "failed" and failed["endpoint_id"] is None
    assert failed["next_attempt_at"] is None
    assert failed["last_error"] == "HTTP 500"
    assert [(a["http_status"], a["error"]) for a in failed["attempts"]] == [(500, "HTTP 500")] * 2
    assert failed["attempts"][0]["response_body"] == "no"
    assert failed["attempts"][0]["url"] == receiver.url
    assert delivered["status"] == "delivered"
    assert delivered["delivered_at"] is not None
    assert [a["http_status"] for a in delivered["attempts"]] == [200]
    delivered = events[0]
    sent = next(r for r in receiver.requests if r.payment_id == fine)
    assert delivered["payload"] == sent.payload
    assert delivered["id"] == sent.id

    resp = await client.get("/v1/events", params={"status": "failed"}, headers=key)
    assert [e["payment_id"] for e in (await resp.json())["data"]] == [failing]
    resp = await client.get("/v1/events", params={"payment_id": foreign}, headers=key)
    assert (await resp.json())["data"] == [], "another merchant's events are invisible"
    # "other" has no webhook endpoint: its events are listed, delivered nowhere (none went to
    # the default merchant's URL).
    resp = await client.get("/v1/events", headers=await key_for(pool, "other"))
    (other,) = (await resp.json())["data"]
    assert (other["payment_id"], other["status"], other["deliveries"]) == (foreign, "none", [])
    assert not any(r.payment_id == foreign for r in receiver.requests)

    for _ in range(3):
        await new_payment(pool)
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = await (await client.get("/v1/events", params=params, headers=key)).json()
        assert len(page["data"]) <= 2
        seen += [e["id"] for e in page["data"]]
        cursor = page["next_cursor"]
        assert page["has_more"] is (cursor is not None)
        if cursor is None:
            break
    everything = await (await client.get("/v1/events", headers=key)).json()
    assert seen == [e["id"] for e in everything["data"]]
    assert len(seen) == 5


async def test_payment_created_by_the_api_is_delivered(pool, setup, receiver) -> None:
    _, client, key = setup
    resp = await client.post(
        "/v1/payments", json={"chain": "anvil", "asset": "ETH", "amount": "1.5"}, headers=key
    )
    assert resp.status == 201, await resp.text()
    payment = await resp.json()
    await deliver_all(client, pool)

    resp = await client.get("/v1/events", params={"payment_id": payment["id"]}, headers=key)
    (event,) = (await resp.json())["data"]
    assert event["type"] == "payment.created"
    assert event["status"] == "delivered"
    (sent,) = receiver.requests
    assert sent.id == event["id"]
    assert sent.payload["data"]["payment"] == payment


async def test_redeliver(pool, setup, receiver) -> None:
    _, client, key = setup
    payment_id = await new_payment(pool)
    (event_id,) = await event_ids(pool, payment_id)
    receiver.reply = reject({payment_id})
    await deliver_all(client, pool)

    url = f"/v1/events/{event_id}/redeliver"
    assert (await client.post(url)).status == 401
    resp = await client.post(url, headers=await key_for(pool, "other"))
    assert resp.status == 404
    assert resp.content_type == "application/problem+json"

    resp = await client.post(url, headers=key)
    assert resp.status == 202
    event = await resp.json()
    assert event["status"] == "pending"
    assert len(event["deliveries"][0]["attempts"]) == 2, "the attempt log is kept"

    resp = await client.post(url, headers=key)
    assert resp.status == 409
    assert "pending" in (await resp.json())["detail"]

    receiver.reply = None
    await deliver_all(client, pool)
    page = await (await client.get("/v1/events", headers=key)).json()
    (event,) = page["data"]
    assert event["status"] == "delivered"
    assert [a["http_status"] for a in event["deliveries"][0]["attempts"]] == [500, 500, 200]

    resp = await client.post(url, headers=key)
    assert resp.status == 202, "a delivered event can be sent again too"
    resp = await client.post("/v1/events/evt_nope/redeliver", headers=key)
    assert resp.status == 404


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"status": "lost"}, "status"),
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"limit": "２"}, "limit"),
        ({"cursor": "garbage"}, "cursor"),
        ({"cursor": "ZXZ0Oi0x"}, "cursor"),  # "evt:-1"
        ({"sort": "asc"}, "sort"),
    ],
)
async def test_bad_query_is_a_400_naming_the_field(
    pool, setup, params: dict[str, str], field: str
) -> None:
    _, client, key = setup
    resp = await client.get("/v1/events", params=params, headers=key)
    assert resp.status == 400
    assert resp.content_type == "application/problem+json"
    assert (await resp.json())["field"] == field


async def test_openapi_documents_the_events_routes(setup) -> None:
    _, client, _ = setup
    doc = await (await client.get("/openapi.json")).json()
    assert {"get"} <= set(doc["paths"]["/v1/events"])
    assert {"post"} <= set(doc["paths"]["/v1/events/{id}/redeliver"])
    schemas = doc["components"]["schemas"]
    refs = json.dumps({k: schemas[k] for k in ("Event", "EventList", "EventPayload")})
    for name in ("Payment", "Transfer", "DeliveryAttempt", "Event", "EventPayload"):
        if f"#/components/schemas/{name}" in refs:
            assert name in schemas


async def test_cli_list_and_redeliver(pool, setup, receiver, capsys) -> None:
    config, client, _ = setup
    payment_id = await new_payment(pool)
    (event_id,) = await event_ids(pool, payment_id)
    receiver.reply = reject({payment_id})
    await deliver_all(client, pool)
    capsys.readouterr()  # the worker's log lines

    def cli(*args: str) -> int:
        return main(["--config", config.path, "events", *args])

    assert await asyncio.to_thread(cli, "list", "--status", "failed", "--json") == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["id"] == event_id
    assert len(listed["deliveries"][0]["attempts"]) == 2

    assert await asyncio.to_thread(cli, "list", "--payment-id", payment_id) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:6] == ["ID", "TYPE", "PAYMENT", "STATUS", "DELIVERIES", "ATTEMPTS"]
    assert table[1].split()[:6] == [event_id, "payment.created", payment_id, "failed", "1", "2"]

    assert await asyncio.to_thread(cli, "redeliver", event_id) == 0
    assert "queued for redelivery" in capsys.readouterr().err
    assert await asyncio.to_thread(cli, "redeliver", event_id) == 1
    assert "is pending" in capsys.readouterr().err
    assert await asyncio.to_thread(cli, "redeliver", "evt_missing") == 1
    assert "no event evt_missing" in capsys.readouterr().err
    status = await pool.fetchval("SELECT status FROM deliveries WHERE event_id = $1", event_id)
    assert status == "pending"
