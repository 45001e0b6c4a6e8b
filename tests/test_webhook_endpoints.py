"""Merchants' webhook endpoints: two merchants on one instance, each with its own endpoint and
secret, each receiving exactly its own events (checked with the `standardwebhooks` package);
rotation overlap; event-type filters; per-endpoint retries and order; deletion; the test message;
and the SSRF guard on endpoint URLs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError
from test_events_api import key_for
from test_scanner_support import cancel
from test_webhooks import Received, Receiver, write_secret

from ctripd.http.keys import WEBHOOKS
from ctripd.jobs.targets import GuardedResolver, TargetRefused, address_refused, check_url

PAYMENT = {"chain": "anvil", "asset": "ETH", "amount": "1"}


@pytest.fixture
async def receivers() -> AsyncIterator[dict[str, Receiver]]:
    made = {name: Receiver() for name in ("default", "shop-a", "shop-b")}
    for r in made.values():
        await r.start()
    yield made
    for r in made.values():
        await r.stop()


@pytest.fixture
async def shop(pool, write_config, make_client, receivers, tmp_path: Path):  # type: ignore[no-untyped-def]
    """An instance whose `[webhooks] url` is the default merchant's receiver, and a key each for
    the default merchant, shop-a and shop-b."""
    default_secret = write_secret(tmp_path / "webhook-secret")
    section = {
        "url": receivers["default"].url,
        "secret_file": str(tmp_path / "webhook-secret"),
        "retry_schedule": [1, 1],
        "allow_private_targets": True,  # the receivers listen on loopback
    }
    client = await make_client(write_config(toml={"webhooks": section}))
    keys = {m: await key_for(pool, m) for m in ("default", "shop-a", "shop-b")}
    return client, keys, default_secret


@pytest.fixture
async def guarded(pool, write_config, make_client):  # type: ignore[no-untyped-def]
    """An instance with the SSRF guard on (the default) and a key of shop-a."""
    client = await make_client(write_config())
    return client, await key_for(pool, "shop-a")


async def add_endpoint(client: Any, key: dict[str, str], **body: Any) -> dict[str, Any]:
    resp = await client.post("/v1/webhook-endpoints", json=body, headers=key)
    assert resp.status == 201, await resp.text()
    endpoint: dict[str, Any] = await resp.json()
    return endpoint


async def pay(client: Any, key: dict[str, str]) -> dict[str, Any]:
    resp = await client.post("/v1/payments", json=PAYMENT, headers=key)
    assert resp.status == 201, await resp.text()
    payment: dict[str, Any] = await resp.json()
    return payment


async def deliver_all(client: Any, pool: asyncpg.Pool) -> None:
    worker = client.server.app[WEBHOOKS]
    while True:
        await pool.execute("UPDATE deliveries SET next_attempt_at = now() WHERE status = 'pending'")
        if not await worker.run_once():
            return


def verified(secret: str, req: Received) -> dict[str, Any]:
    result: dict[str, Any] = Webhook(secret).verify(req.body, req.headers)
    return result


async def test_each_merchant_receives_exactly_its_own_events(pool, shop, receivers) -> None:
    client, keys, default_secret = shop
    endpoints = {
        m: await add_endpoint(client, keys[m], url=receivers[m].url, description=f"{m} orders")
        for m in ("shop-a", "shop-b")
    }
    secrets = {m: e["secret"] for m, e in endpoints.items()} | {"default": default_secret}
    assert all(s.startswith("whsec_") for s in secrets.values())
    paid = {m: await pay(client, keys[m]) for m in ("default", "shop-a", "shop-b")}
    assert {m: p["merchant"] for m, p in paid.items()} == {m: m for m in paid}
    for m in ("shop-a", "shop-b"):
        resp = await cancel(client, paid[m]["id"], keys[m])
        assert resp.status == 200

    await deliver_all(client, pool)

    for merchant, receiver in receivers.items():
        expected = ["payment.created"] + (["payment.canceled"] if merchant != "default" else [])
        got = [verified(secrets[merchant], r) for r in receiver.requests]
        assert [e["type"] for e in got] == expected, merchant
        assert {e["data"]["payment"]["id"] for e in got} == {paid[merchant]["id"]}
        # Payloads and the payment object name the merchant.
        assert {e["merchant"] for e in got} == {merchant}
        assert {e["data"]["payment"]["merchant"] for e in got} == {merchant}
        for other in set(secrets) - {merchant}:
            for req in receiver.requests:
                with pytest.raises(WebhookVerificationError):
                    verified(secrets[other], req)
    # Secrets are shown once: never in a listing or a read.
    resp = await client.get("/v1/webhook-endpoints", headers=keys["shop-a"])
    (listed,) = (await resp.json())["data"]
    assert "secret" not in listed and listed["id"] == endpoints["shop-a"]["id"]
    assert listed["description"] == "shop-a orders" and listed["event_types"] is None
    # Each event lists its deliveries, naming their endpoints; the merchant sees its own only.
    resp = await client.get("/v1/events", headers=keys["shop-b"])
    rows = (await resp.json())["data"]
    assert {d["endpoint_id"] for r in rows for d in r["deliveries"]} == {endpoints["shop-b"]["id"]}
    assert {r["status"] for r in rows} == {"delivered"} and len(rows) == 2
    # Another merchant's endpoint is invisible to it.
    eid = endpoints["shop-a"]["id"]
    for method, path in (
        ("GET", f"/v1/webhook-endpoints/{eid}"),
        ("DELETE", f"/v1/webhook-endpoints/{eid}"),
        ("POST", f"/v1/webhook-endpoints/{eid}/rotate-secret"),
        ("POST", f"/v1/webhook-endpoints/{eid}/test"),
    ):
        resp = await client.request(method, path, headers=keys["shop-b"])
        assert resp.status == 404, (method, path)


async def test_one_event_fans_out_with_own_retries_and_order(pool, shop, receivers) -> None:
    client, keys, _ = shop
    failing = await add_endpoint(client, keys["shop-a"], url=receivers["shop-a"].url)
    await add_endpoint(client, keys["shop-a"], url=receivers["shop-b"].url)
    only_cancel = await add_endpoint(
        client, keys["shop-a"], url=receivers["default"].url, event_types=["payment.canceled"]
    )
    assert only_cancel["event_types"] == ["payment.canceled"]

    async def refuse(_: Received) -> web.StreamResponse:
        return web.Response(status=500)

    receivers["shop-a"].reply = refuse
    payment = await pay(client, keys["shop-a"])
    worker = client.server.app[WEBHOOKS]
    assert await worker.run_once() == 2  # created, to the failing and to the working endpoint
    resp = await cancel(client, payment["id"], keys["shop-a"])
    assert resp.status == 200
    await pool.execute("UPDATE deliveries SET next_attempt_at = now() WHERE status = 'pending'")
    # The failing endpoint's retry goes out; its `canceled` waits behind it, while the others
    # get theirs at once.
    assert await worker.run_once() == 3
    types = {n: [r.payload["type"] for r in receivers[n].requests] for n in receivers}
    assert types == {
        "shop-a": ["payment.created", "payment.created"],
        "shop-b": ["payment.created", "payment.canceled"],
        "default": ["payment.canceled"],
    }
    rows = await pool.fetch(
        "SELECT e.type, d.status, d.held FROM deliveries d JOIN events e ON e.id = d.event_id"
        " WHERE d.endpoint_id = $1 ORDER BY d.seq",
        failing["id"],
    )
    assert [tuple(r) for r in rows] == [
        ("payment.created", "pending", False),
        ("payment.canceled", "pending", True),
    ]
    receivers["shop-a"].reply = None
    await deliver_all(client, pool)
    assert [r.payload["type"] for r in receivers["shop-a"].requests][-1] == "payment.canceled"
    # Every endpoint receives the event's own id (in its payload too), whatever its deliveries.
    assert all(r.payload["id"] == r.id for rs in receivers.values() for r in rs.requests)
    ids = {r.payload["type"]: r.id for rs in receivers.values() for r in rs.requests}
    assert ids == {
        e["type"]: e["id"]
        for e in (await (await client.get("/v1/events", headers=keys["shop-a"])).json())["data"]
    }


async def test_rotation_overlap_then_only_the_new_secret(pool, shop, receivers) -> None:
    client, keys, _ = shop
    receiver = receivers["shop-a"]
    endpoint = await add_endpoint(client, keys["shop-a"], url=receiver.url)
    old = endpoint["secret"]
    resp = await client.post(
        f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret", headers=keys["shop-a"]
    )
    assert resp.status == 200
    rotated = await resp.json()
    new = rotated["secret"]
    assert new != old and rotated["previous_secret_expires_at"] is not None

    await pay(client, keys["shop-a"])
    await deliver_all(client, pool)
    (during,) = receiver.requests
    assert len(during.headers["webhook-signature"].split(" ")) == 2
    assert verified(old, during)["id"] == verified(new, during)["id"] == during.id

    # The overlap ends (time moved in the database): only the new secret signs.
    await pool.execute("UPDATE webhook_endpoints SET previous_secret_until = now()")
    await pay(client, keys["shop-a"])
    await deliver_all(client, pool)
    after = receiver.requests[1]
    assert verified(new, after)["id"] == after.id
    with pytest.raises(WebhookVerificationError):
        verified(old, after)
    resp = await client.get(f"/v1/webhook-endpoints/{endpoint['id']}", headers=keys["shop-a"])
    assert (await resp.json())["previous_secret_expires_at"] is None


async def test_test_message_and_delete(pool, shop, receivers) -> None:
    client, keys, _ = shop
    receiver = receivers["shop-b"]
    endpoint = await add_endpoint(client, keys["shop-b"], url=receiver.url)
    resp = await client.post(f"/v1/webhook-endpoints/{endpoint['id']}/test", headers=keys["shop-b"])
    assert resp.status == 200
    result = await resp.json()
    assert result["delivered"] is True and result["http_status"] == 200
    (req,) = receiver.requests
    message = verified(endpoint["secret"], req)
    assert message["type"] == "webhook.test" and message["merchant"] == "shop-b"
    assert req.id == result["id"]
    assert await pool.fetchval("SELECT count(*) FROM events") == 0, "a test is recorded nowhere"

    await pay(client, keys["shop-b"])  # its delivery is pending when the endpoint goes
    resp = await client.delete(f"/v1/webhook-endpoints/{endpoint['id']}", headers=keys["shop-b"])
    assert resp.status == 204
    row = await pool.fetchrow("SELECT status, last_error FROM deliveries")
    assert tuple(row) == ("failed", "endpoint deleted")
    (event_id,) = [r["id"] for r in await pool.fetch("SELECT id FROM events")]
    resp = await client.post(f"/v1/events/{event_id}/redeliver", headers=keys["shop-b"])
    assert resp.status == 409
    assert "no live webhook endpoint" in (await resp.json())["detail"]
    await pay(client, keys["shop-b"])
    await deliver_all(client, pool)
    assert len(receiver.requests) == 1, "nothing more goes to a deleted endpoint"
    assert await pool.fetchval("SELECT count(*) FROM deliveries") == 1
    assert await pool.fetchval("SELECT count(*) FROM events") == 2
    resp = await client.get(f"/v1/webhook-endpoints/{endpoint['id']}", headers=keys["shop-b"])
    assert resp.status == 404
    resp = await client.delete(f"/v1/webhook-endpoints/{endpoint['id']}", headers=keys["shop-b"])
    assert resp.status == 404


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"url": "https://10.1.2.3/hook"}, "private address 10.1.2.3"),
        ({"url": "https://169.254.169.254/latest"}, "private address 169.254.169.254"),
        ({"url": "https://[::ffff:192.168.0.1]/"}, "private address"),
        ({"url": "http://example.com/hook"}, "must use https"),
        # Loopback is an internal service too: its answers would be readable in GET /v1/events.
        ({"url": "https://127.0.0.1:8443/hook"}, "loopback host 127.0.0.1"),
        ({"url": "https://[::1]/hook"}, "loopback host ::1"),
        ({"url": "https://localhost/hook"}, "loopback host localhost"),
        ({"url": "https://admin.localhost/hook"}, "loopback host admin.localhost"),
        ({"url": "http://localhost:8080/hook"}, "must use https"),
        # IPv6 forms carrying a private IPv4 address: NAT64, IPv4-compatible, 6to4.
        ({"url": "https://[64:ff9b::a9fe:a9fe]/"}, "private address"),
        ({"url": "https://[::7f00:1]/"}, "loopback host"),
        ({"url": "https://[2002:a00:1::]/"}, "private address"),
        # Host names delivery could not encode (IDNA): an empty label, a label over 63 characters.
        ({"url": "https://a..b/hook"}, "invalid host name"),
        ({"url": f"https://{'a' * 64}.example.com/"}, "invalid host name"),
        ({"url": "ftp://example.com/"}, "https:// URL"),
        ({"url": "https://example.com/", "event_types": ["payment.nope"]}, "unknown event type"),
        ({"url": "https://example.com/", "event_types": []}, "non-empty list"),
        ({"url": "https://example.com/", "secret": "whsec_x"}, "unknown field"),
        ({}, "url: is required"),
    ],
)
async def test_endpoint_urls_and_fields_refused(guarded, body, detail) -> None:
    client, key = guarded
    resp = await client.post("/v1/webhook-endpoints", json=body, headers=key)
    assert resp.status == 422
    assert resp.content_type == "application/problem+json"
    assert detail in (await resp.json())["detail"]


async def test_private_targets_allowed_by_config(pool, write_config, make_client) -> None:
    config = write_config(toml={"webhooks": {"allow_private_targets": True}})
    client = await make_client(config)
    key = await key_for(pool, "default")
    for url in ("http://10.1.2.3/hook", "http://build-box.internal/hook"):
        endpoint = await add_endpoint(client, key, url=url)
        assert endpoint["url"] == url


def test_target_rules() -> None:
    for private in (
        "127.0.0.1",
        "::1",
        "::ffff:127.0.0.1",
        "64:ff9b::7f00:1",
        "2002:c0a8:101::1",
        "::a00:1",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "fd00::1",
        "fe80::1",
        "0.0.0.0",
        "::ffff:10.0.0.1",
    ):
        assert address_refused(private, allow_private=False), private
        assert not address_refused(private, allow_private=True), private
    for public in ("8.8.8.8", "64:ff9b::808:808", "2002:808:808::1", "2001:4860:4860::8888"):
        assert not address_refused(public, allow_private=False), public
    assert check_url("http://localhost:8080/hook", True)
    with pytest.raises(ValueError, match="loopback host"):
        check_url("https://localhost:8080/hook", False)
    with pytest.raises(ValueError, match="at most 2048"):
        check_url("https://example.com/" + "a" * 2048, False)


async def test_an_unusable_stored_secret_fails_only_its_endpoint(pool, shop, receivers) -> None:
    client, keys, _ = shop
    broken = await add_endpoint(client, keys["shop-a"], url=receivers["shop-a"].url)
    await add_endpoint(client, keys["shop-a"], url=receivers["shop-b"].url)
    await pool.execute("UPDATE webhook_endpoints SET secret = 'nope' WHERE id = $1", broken["id"])
    await pay(client, keys["shop-a"])
    await deliver_all(client, pool)
    assert receivers["shop-a"].requests == []
    assert [r.payload["type"] for r in receivers["shop-b"].requests] == ["payment.created"]
    row = await pool.fetchrow(
        "SELECT status, last_error FROM deliveries WHERE endpoint_id = $1", broken["id"]
    )
    assert tuple(row) == ("failed", "the endpoint's stored secret is not a whsec_ secret")


async def test_loopback_names_refused_at_delivery() -> None:
    """A name that resolves to loopback is refused after DNS unless private targets are
    allowed."""
    with pytest.raises(TargetRefused, match="private address"):
        await GuardedResolver(allow_private=False).resolve("localhost", 443)
    assert await GuardedResolver(allow_private=True).resolve("localhost", 443)


@pytest.mark.parametrize("url", ["https://a..b/hook", f"https://{'a' * 64}.example.com/"])
async def test_a_url_delivery_cannot_encode_fails_its_delivery(  # type: ignore[no-untyped-def]
    pool, shop, tmp_path: Path, write_config, make_client, url: str
) -> None:
    """A stored endpoint URL (or the operator's `[webhooks] url`) whose host IDNA cannot
    encode fails the delivery and the test message with the reason: never a 500, never a
    crashed delivery re-claimed forever."""
    client, keys, _ = shop
    endpoint = await add_endpoint(client, keys["shop-a"], url="https://example.com/hook")
    await pool.execute("UPDATE webhook_endpoints SET url = $2 WHERE id = $1", endpoint["id"], url)
    resp = await client.post(f"/v1/webhook-endpoints/{endpoint['id']}/test", headers=keys["shop-a"])
    assert resp.status == 200, await resp.text()
    result = await resp.json()
    assert result["delivered"] is False and "invalid host name" in result["error"]

    write_secret(tmp_path / "operator-secret")
    section = {"url": url, "secret_file": str(tmp_path / "operator-secret"), "retry_schedule": [1]}
    operator = await make_client(write_config(toml={"webhooks": section}))
    await pool.execute("DELETE FROM events")
    await pay(operator, keys["default"])
    await deliver_all(operator, pool)
    row = await pool.fetchrow("SELECT status, attempts, last_error FROM deliveries")
    assert (row["status"], row["attempts"]) == ("failed", 2)
    assert "UnicodeError" in row["last_error"]


async def test_nothing_is_claimed_for_a_deleted_endpoint(pool, shop, receivers) -> None:
    """A delivery written for an endpoint as it was deleted (the event's insert racing the
    delete's update of its pending rows) is never sent."""
    client, keys, _ = shop
    endpoint = await add_endpoint(client, keys["shop-a"], url=receivers["shop-a"].url)
    await pay(client, keys["shop-a"])
    await pool.execute(
        "UPDATE webhook_endpoints SET deleted_at = now() WHERE id = $1", endpoint["id"]
    )
    await deliver_all(client, pool)
    assert receivers["shop-a"].requests == []


async def test_a_merchant_without_an_endpoint_still_has_its_events(pool, shop, receivers) -> None:
    """A merchant with no live endpoint used to get no event rows at all: its events were missing
    from GET /v1/events, and an endpoint added later could never be sent them."""
    client, keys, _ = shop
    payment = await pay(client, keys["shop-a"])
    resp = await client.get("/v1/events", headers=keys["shop-a"])
    (event,) = (await resp.json())["data"]
    assert (event["type"], event["payment_id"]) == ("payment.created", payment["id"])
    assert (event["status"], event["deliveries"]) == ("none", [])
    assert event["payload"]["id"] == event["id"]

    # Redelivered, it goes to the endpoints that take it now.
    endpoint = await add_endpoint(client, keys["shop-a"], url=receivers["shop-a"].url)
    resp = await client.post(f"/v1/events/{event['id']}/redeliver", headers=keys["shop-a"])
    assert resp.status == 202, await resp.text()
    (delivery,) = (await resp.json())["deliveries"]
    assert (delivery["endpoint_id"], delivery["status"]) == (endpoint["id"], "pending")
    await deliver_all(client, pool)
    (req,) = receivers["shop-a"].requests
    assert verified(endpoint["secret"], req)["id"] == event["id"] == req.id


async def test_a_hanging_endpoint_leaves_slots_for_the_others(  # type: ignore[no-untyped-def]
    pool, write_config, make_client, receivers, tmp_path: Path
) -> None:
    """One merchant's endpoint that hangs used to take every delivery slot: another merchant's
    fresh event waited for those requests to time out."""
    write_secret(tmp_path / "webhook-secret")
    section = {
        "url": receivers["default"].url,
        "secret_file": str(tmp_path / "webhook-secret"),
        "allow_private_targets": True,
        "concurrency": 4,
        "timeout": 30,
    }
    client = await make_client(write_config(toml={"webhooks": section}))
    keys = {m: await key_for(pool, m) for m in ("shop-a", "shop-b")}
    await add_endpoint(client, keys["shop-a"], url=receivers["shop-a"].url)
    await add_endpoint(client, keys["shop-b"], url=receivers["shop-b"].url)
    hanging = receivers["shop-a"]

    async def hang(_: Received) -> web.StreamResponse:
        await hanging.hang()
        return web.Response()

    hanging.reply = hang
    for _ in range(6):
        await pay(client, keys["shop-a"])
    worker = client.server.app[WEBHOOKS]
    worker.start()
    await hanging.wait_until(lambda: len(hanging.requests) == 3)
    fresh = await pay(client, keys["shop-b"])
    await receivers["shop-b"].wait_until(lambda: len(receivers["shop-b"].requests) == 1)
    assert receivers["shop-b"].requests[0].payment_id == fresh["id"]
    assert len(hanging.requests) == 3, "one endpoint holds at most 3 of the 4 slots"
    hanging.release.set()
    await worker.stop(10)


async def test_two_hanging_endpoints_leave_a_slot_for_a_third(  # type: ignore[no-untyped-def]
    pool, write_config, make_client, receivers, tmp_path: Path
) -> None:
    """Two endpoints that hang with backlogs queued at once still leave a slot to an endpoint
    with nothing in flight: a slot is kept for such openings."""
    write_secret(tmp_path / "webhook-secret")
    section = {
        "url": receivers["default"].url,
        "secret_file": str(tmp_path / "webhook-secret"),
        "allow_private_targets": True,
        "concurrency": 4,
        "timeout": 30,
    }
    client = await make_client(write_config(toml={"webhooks": section}))
    keys = {m: await key_for(pool, m) for m in ("default", "shop-a", "shop-b")}
    await add_endpoint(client, keys["shop-a"], url=receivers["shop-a"].url)
    await add_endpoint(client, keys["shop-b"], url=receivers["shop-b"].url)
    hanging = [receivers["default"], receivers["shop-a"]]

    def hang_on(receiver: Receiver) -> Any:
        async def reply(_: Received) -> web.StreamResponse:
            await receiver.hang()
            return web.Response()

        return reply

    for receiver in hanging:
        receiver.reply = hang_on(receiver)
    for _ in range(4):
        await pay(client, keys["default"])
        await pay(client, keys["shop-a"])
    worker = client.server.app[WEBHOOKS]
    worker.start()
    await hanging[0].wait_until(lambda: sum(len(r.requests) for r in hanging) == 3)
    fresh = await pay(client, keys["shop-b"])
    await receivers["shop-b"].wait_until(lambda: len(receivers["shop-b"].requests) == 1)
    assert receivers["shop-b"].requests[0].payment_id == fresh["id"]
    assert sum(len(r.requests) for r in hanging) == 3
    for receiver in hanging:
        receiver.release.set()
    await worker.stop(10)


async def test_an_endpoints_hanging_retries_do_not_shut_out_its_fresh_events(  # type: ignore[no-untyped-def]
    pool, write_config, make_client, receivers, tmp_path: Path
) -> None:
    """The kept slots used to go only to endpoints with nothing in flight: an endpoint whose
    retries hung (for some payments) could not send a fresh event of another payment while a
    second endpoint's hanging first attempts held the rest."""
    write_secret(tmp_path / "webhook-secret")
    section = {
        "url": receivers["default"].url,
        "secret_file": str(tmp_path / "webhook-secret"),
        "allow_private_targets": True,
        "concurrency": 4,
        "timeout": 30,
    }
    client = await make_client(write_config(toml={"webhooks": section}))
    keys = {m: await key_for(pool, m) for m in ("default", "shop-a")}
    await add_endpoint(client, keys["shop-a"], url=receivers["shop-a"].url)
    operator, failing = receivers["default"], receivers["shop-a"]
    stuck = {(await pay(client, keys["default"]))["id"] for _ in range(3)}
    await pool.execute("UPDATE deliveries SET attempts = 1")  # they failed before: retries

    async def hang_stuck(req: Received) -> web.StreamResponse:
        if req.payment_id in stuck:
            await operator.hang()
        return web.Response()

    async def hang(_: Received) -> web.StreamResponse:
        await failing.hang()
        return web.Response()

    operator.reply, failing.reply = hang_stuck, hang
    worker = client.server.app[WEBHOOKS]
    worker.start()
    await operator.wait_until(lambda: len(operator.requests) == 2)
    for _ in range(3):
        await pay(client, keys["shop-a"])
    await failing.wait_until(lambda: len(failing.requests) == 1)
    fresh = await pay(client, keys["default"])
    await operator.wait_until(lambda: any(r.payment_id == fresh["id"] for r in operator.requests))
    assert len(operator.requests) == 3 and len(failing.requests) == 1
    operator.release.set()
    failing.release.set()
    await worker.stop(10)
