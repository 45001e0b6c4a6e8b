"""Payments API on the real database: create, idempotency, read, list, cancel, docs, dev pay."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path

import asyncpg
import pytest
from aiohttp import web
from test_scanner_support import ETH, cancel, chain_entry, send_native
from test_webhooks import write_secret

from ctripd.chain.wallet import Wallet
from ctripd.dev import tokens as devtokens
from ctripd.dev.devnet import TEST_MNEMONIC
from ctripd.dev.pay import dev_pay
from ctripd.errors import CtripdError
from ctripd.http import auth as apikeys
from ctripd.http.keys import WATCHERS
from ctripd.ledger.events import record_event

ACCOUNT_0 = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
WALLET = Wallet.from_mnemonic(TEST_MNEMONIC)


async def new_key(pool: asyncpg.Pool, merchant: str = "default") -> dict[str, str]:
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO merchants (id, name) VALUES ($1, $1) ON CONFLICT DO NOTHING", merchant
        )
        key, _ = await apikeys.create_key(conn, "test", merchant)
    return {"Authorization": f"Bearer {key}"}


async def create(client, headers, **fields):  # type: ignore[no-untyped-def]
    body = {"chain": "anvil", "asset": "ETH", "amount": "1.5", **fields}
    resp = await client.post("/v1/payments", json=body, headers=headers)
    assert resp.status == 201, await resp.text()
    return await resp.json()


def with_webhook_url(write_config, tmp_path: Path):  # type: ignore[no-untyped-def]
    """A config with `[webhooks] url` set (never reached here): the default merchant's events
    are written as deliveries to it, which these tests read."""
    write_secret(tmp_path / "webhook-secret")
    section = {"url": "http://127.0.0.1:9/hook", "secret_file": str(tmp_path / "webhook-secret")}
    return write_config(toml={"webhooks": section})


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def test_create_native_payment(write_config, make_client, pool, tmp_path) -> None:  # type: ignore[no-untyped-def]
    client = await make_client(with_webhook_url(write_config, tmp_path))
    headers = await new_key(pool)
    body = {
        "chain": "anvil",
        "asset": "ETH",
        "amount": "1.5",
        "order_id": "order-1",
        "metadata": {"cart": [1, 2], "note": "ünïcode"},
        "expires_in": 600,
    }
    resp = await client.post("/v1/payments", json=body, headers=headers)
    assert resp.status == 201
    payment = await resp.json()
    assert resp.headers["Location"] == f"/v1/payments/{payment['id']}"
    row = await pool.fetchrow("SELECT * FROM payments WHERE id = $1", payment["id"])
    assert row["address_index"] >= 1000
    assert payment["address"] == WALLET.address(row["address_index"]) == row["address"]
    units = 1_500_000_000_000_000_000
    assert row["amount"] == units and row["merchant"] == "default"
    assert payment | {"id": None, "address": None, "created_at": None, "expires_at": None} == {
        "id": None,
        "merchant": "default",
        "chain": "anvil",
        "chain_id": 31337,
        "asset": "ETH",
        "token_address": None,
        "decimals": 18,
        "amount": "1.5",
        "amount_base_units": str(units),
        "address": None,
        "payment_uri": f"ethereum:{payment['address']}@31337?value={units}",
        "status": "pending",
        "amount_received": "0",
        "amount_received_base_units": "0",
        "amount_confirmed": "0",
        "amount_confirmed_base_units": "0",
        "amount_overpaid": "0",
        "amount_overpaid_base_units": "0",
        "paid_late": False,
        "confirmations_required": 2,
        "transfers": [],
        "transfer_summary": {
            "count": 0,
            "dust_count": 0,
            "orphaned_count": 0,
            "assets": [],
            "has_more": False,
        },
        "order_id": "order-1",
        "metadata": {"cart": [1, 2], "note": "ünïcode"},
        "created_at": None,
        "expires_at": None,
        "detected_at": None,
        "confirmed_at": None,
        "sweep": {"status": "none", "tx_hash": None},
        "refund_status": None,
        "price": None,
        "options": [],
    }
    assert (_ts(payment["expires_at"]) - _ts(payment["created_at"])).total_seconds() == 600

    resp = await client.get(f"/v1/payments/{payment['id']}", headers=headers)
    assert resp.status == 200 and await resp.json() == payment

    events = await pool.fetch("SELECT * FROM events")
    assert [(e["type"], e["payment_id"], e["merchant"]) for e in events] == [
        ("payment.created", payment["id"], "default")
    ]
    assert events[0]["payload"]["data"]["payment"] == payment


async def test_created_event_matches_record_event(
    write_config, make_client, pool, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    """The one-statement create writes the payload record_event would write for the same row."""
    client = await make_client(with_webhook_url(write_config, tmp_path))
    payment = await create(client, await new_key(pool), metadata={"a": {"b": None}})
    written = await pool.fetchval("SELECT payload FROM events")
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        event_id = await record_event(conn, "payment.created", payment["id"], operator_url=True)
        reference = await conn.fetchval("SELECT payload FROM events WHERE id = $1", event_id)
        await tx.rollback()
    assert set(written) == set(reference)
    assert written["data"] == reference["data"]
    assert written["type"] == reference["type"]


async def test_token_payment(write_config, make_client, pool, anvil) -> None:  # type: ignore[no-untyped-def]
    token = devtokens.deploy_token(
        anvil.url, "erc20_6", "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
    )
    config = write_config(chains=[_chain_with_token(anvil.url, token)])
    client = await make_client(config)
    payment = await create(client, await new_key(pool), asset="TD6", amount="12.5")
    assert payment["token_address"] == token and payment["decimals"] == 6
    assert payment["amount"] == "12.5" and payment["amount_base_units"] == "12500000"
    assert payment["payment_uri"] == (
        f"ethereum:{token}@31337/transfer?address={payment['address']}&uint256=12500000"
    )


def _chain_with_token(rpc_url: str, token: str) -> dict[str, object]:
    return {
        "name": "anvil",
        "chain_id": 31337,
        "rpc": [rpc_url],
        "confirmations": 2,
        "native": {"symbol": "ETH", "decimals": 18},
        "tokens": {"TD6": {"address": token, "decimals": 6}},
        "treasury": "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
    }


async def test_every_payment_gets_its_own_address_across_processes(
    write_config, make_client, pool
) -> None:  # type: ignore[no-untyped-def]
    """Two app instances (as two processes would) on one database never share an index."""
    config = write_config()
    first, second = await make_client(config), await make_client(config)
    headers = await new_key(pool)
    made = await asyncio.gather(*(create(c, headers) for c in [first, second] * 15))
    rows = await pool.fetch("SELECT address, address_index FROM payments")
    assert len(rows) == 30
    assert len({r["address"] for r in rows}) == len({r["address_index"] for r in rows}) == 30
    assert {p["address"] for p in made} == {WALLET.address(r["address_index"]) for r in rows}


async def test_idempotency_key(write_config, make_client, pool, tmp_path) -> None:  # type: ignore[no-untyped-def]
    client = await make_client(with_webhook_url(write_config, tmp_path))
    headers = await new_key(pool)
    body = {"chain": "anvil", "asset": "ETH", "amount": "2", "metadata": {"x": 1, "y": 2}}
    with_key = {**headers, "Idempotency-Key": "order-42"}
    first = await client.post("/v1/payments", json=body, headers=with_key)
    assert first.status == 201
    payment = await first.json()

    # Same key, same body (keys in another order): the same payment, answered 200.
    again = await client.post(
        "/v1/payments",
        data='{"metadata": {"y": 2, "x": 1}, "amount": "2", "asset": "ETH", "chain": "anvil"}',
        headers={**with_key, "Content-Type": "application/json"},
    )
    assert again.status == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert await again.json() == payment

    # Same key, different body: 409, nothing stored.
    other = await client.post("/v1/payments", json={**body, "amount": "3"}, headers=with_key)
    assert other.status == 409
    problem = await other.json()
    assert problem["field"] == "Idempotency-Key" and payment["id"] in problem["detail"]
    assert problem["type"].endswith("idempotency-conflict")

    # Another merchant's identical key is its own namespace.
    mine = await client.post(
        "/v1/payments",
        json=body,
        headers={**await new_key(pool, "m2"), "Idempotency-Key": "order-42"},
    )
    assert mine.status == 201 and (await mine.json())["id"] != payment["id"]

    assert await pool.fetchval("SELECT count(*) FROM payments") == 2
    # m2 has no webhook endpoint: its payment.created is recorded, delivered nowhere.
    assert await pool.fetchval("SELECT count(*) FROM events") == 2
    assert await pool.fetchval("SELECT count(*) FROM deliveries") == 1


async def test_concurrent_requests_with_one_idempotency_key_make_one_payment(
    write_config, make_client, pool, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    client = await make_client(with_webhook_url(write_config, tmp_path))
    headers = {**await new_key(pool), "Idempotency-Key": "same"}
    body = {"chain": "anvil", "asset": "ETH", "amount": "1"}
    answers = await asyncio.gather(
        *(client.post("/v1/payments", json=body, headers=headers) for _ in range(8))
    )
    assert sorted(a.status for a in answers) == [200] * 7 + [201]
    assert len({(await a.json())["id"] for a in answers}) == 1
    assert await pool.fetchval("SELECT count(*) FROM payments") == 1
    assert await pool.fetchval("SELECT count(*) FROM events") == 1


async def test_get_unknown_payment(write_config, make_client, pool) -> None:  # type: ignore[no-untyped-def]
    client = await make_client(write_config())
    headers = await new_key(pool)
    for payment_id in ("pay_" + "0" * 32, "nope", "pay_%00", "x" * 300):
        resp = await client.get(f"/v1/payments/{payment_id}", headers=headers)
        assert resp.status == 404, payment_id
        assert resp.content_type == "application/problem+json"


async def test_list_filters_and_pagination(write_config, make_client, pool) -> None:  # type: ignore[no-untyped-def]
    client = await make_client(write_config())
    headers = await new_key(pool)
    made = [await create(client, headers, order_id=f"o{i % 2}") for i in range(5)]
    await pool.execute("UPDATE payments SET status = 'detected' WHERE id = $1", made[1]["id"])
    newest_first = [p["id"] for p in reversed(made)]

    seen: list[str] = []
    cursor = None
    for expected_more in (True, True, False):
        query = "?limit=2" + (f"&cursor={cursor}" if cursor else "")
        resp = await client.get(f"/v1/payments{query}", headers=headers)
        assert resp.status == 200
        page = await resp.json()
        seen += [p["id"] for p in page["data"]]
        assert (
            page["has_more"] is expected_more and (page["next_cursor"] is not None) is expected_more
        )
        cursor = page["next_cursor"]
    assert seen == newest_first

    async def ids(query: str) -> list[str]:
        resp = await client.get(f"/v1/payments?{query}", headers=headers)
        assert resp.status == 200, await resp.text()
        return [p["id"] for p in (await resp.json())["data"]]

    assert await ids("status=detected") == [made[1]["id"]]
    assert await ids("status=pending&order_id=o0") == [made[4]["id"], made[2]["id"], made[0]["id"]]
    assert await ids("order_id=o1&status=pending") == [made[3]["id"]]
    assert await ids("chain=anvil&limit=100") == newest_first
    assert await ids("status=expired") == []

    # A cursor belongs to its merchant.
    resp = await client.get("/v1/payments?limit=1", headers=headers)
    cursor = (await resp.json())["next_cursor"]
    resp = await client.get(f"/v1/payments?cursor={cursor}", headers=await new_key(pool, "other"))
    assert resp.status == 400 and (await resp.json())["field"] == "cursor"


async def test_list_shows_transfers_and_sweeps(write_config, make_client, pool) -> None:  # type: ignore[no-untyped-def]
    client = await make_client(write_config())
    headers = await new_key(pool)
    payment = await create(client, headers)
    await pool.execute(
        "INSERT INTO transfers (chain, tx_hash, kind, log_index, payment_id, from_address,"
        " to_address, amount, block_number, block_hash)"
        " VALUES ('anvil', '0xaa', 'native', -1, $1, $2, $3, 500000000000000000, 7, '0xbb')",
        payment["id"],
        ACCOUNT_0,
        payment["address"],
    )
    sweep_id = await pool.fetchval(
        "INSERT INTO sweeps (chain, kind, from_address, from_index, to_address, amount, status,"
        " tx_hash) VALUES ('anvil', 'native', $1, 1000, $2, 1, 'broadcast', '0xcc') RETURNING id",
        payment["address"],
        ACCOUNT_0,
    )
    await pool.execute("INSERT INTO sweep_payments VALUES ($1, $2)", sweep_id, payment["id"])
    resp = await client.get("/v1/payments", headers=headers)
    (listed,) = (await resp.json())["data"]
    resp = await client.get(f"/v1/payments/{payment['id']}", headers=headers)
    assert listed == await resp.json()
    assert listed["transfers"][0]["amount"] == "0.5" and listed["transfers"][0]["from"] == ACCOUNT_0
    assert listed["sweep"] == {"status": "broadcast", "tx_hash": "0xcc"}


async def test_cancel(write_config, make_client, pool, tmp_path) -> None:  # type: ignore[no-untyped-def]
    client = await make_client(with_webhook_url(write_config, tmp_path))
    headers = await new_key(pool)
    payment = await create(client, headers)
    url = f"/v1/payments/{payment['id']}/cancel"
    resp = await cancel(client, payment["id"], headers)
    assert resp.status == 200
    canceled = await resp.json()
    assert canceled["status"] == "canceled"
    assert await pool.fetchval("SELECT canceled_at FROM payments") is not None
    rows = await pool.fetch("SELECT type, payload FROM events ORDER BY seq")
    assert [r["type"] for r in rows] == ["payment.created", "payment.canceled"]
    assert rows[1]["payload"]["data"]["payment"]["status"] == "canceled"

    again = await client.post(url, headers=headers)  # a retried cancel answers the same
    assert again.status == 200 and (await again.json())["status"] == "canceled"
    assert await pool.fetchval("SELECT count(*) FROM events") == 2


async def test_cancel_waits_for_the_scanner(write_config, make_client, pool, anvil) -> None:  # type: ignore[no-untyped-def]
    """A payment paid in time used to be canceled while the scanner was behind: the payer was
    told "canceled" while their funds sat held."""
    client = await make_client(write_config(chains=[chain_entry(anvil, poll_interval=0.2)]))
    watcher = client.server.app[WATCHERS]["anvil"]
    await watcher.run_once()
    headers = await new_key(pool)
    payment = await create(client, headers, amount="1")
    send_native(anvil, payment["address"], ETH)  # mined, not read yet

    resp = await client.post(f"/v1/payments/{payment['id']}/cancel", headers=headers)
    assert resp.status == 409 and resp.headers["Retry-After"] == "1"
    problem = await resp.json()
    assert "not scanned past the time of this request" in problem["detail"]
    assert problem["payment_status"] == "pending"
    assert await pool.fetchval("SELECT status FROM payments") == "pending"

    resp = await cancel(client, payment["id"], headers)  # the scanner runs meanwhile
    assert resp.status == 409
    assert (await resp.json())["payment_status"] == "detected"
    types = await pool.fetch("SELECT type FROM events ORDER BY seq")
    assert "payment.canceled" not in [r["type"] for r in types]


@pytest.mark.parametrize("status", ["detected", "confirmed", "expired"])
async def test_cancel_refused_unless_pending(
    status: str, write_config, make_client, pool, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    client = await make_client(with_webhook_url(write_config, tmp_path))
    headers = await new_key(pool)
    payment = await create(client, headers)
    await pool.execute("UPDATE payments SET status = $1", status)
    resp = await client.post(f"/v1/payments/{payment['id']}/cancel", headers=headers)
    assert resp.status == 409
    problem = await resp.json()
    assert resp.content_type == "application/problem+json" and status in problem["detail"]
    assert await pool.fetchval("SELECT status FROM payments") == status
    assert await pool.fetchval("SELECT count(*) FROM events") == 1


async def test_openapi_documents_every_route(write_config, make_client) -> None:  # type: ignore[no-untyped-def]
    client = await make_client(write_config())
    resp = await client.get("/openapi.json")
    assert resp.status == 200
    doc = await resp.json()
    app: web.Application = client.server.app  # type: ignore[union-attr]
    served = {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    documented = {(m, p) for p, item in doc["paths"].items() for m in item}
    assert served == documented
    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert op["responses"], (method, path)
            for ref in _refs(op):
                assert ref.split("/")[-1] in doc["components"]["schemas"], ref


async def test_payment_object_matches_its_schema(write_config, make_client, pool) -> None:  # type: ignore[no-untyped-def]
    client = await make_client(write_config())
    payment = await create(client, await new_key(pool))
    doc = await (await client.get("/openapi.json")).json()
    schema = doc["components"]["schemas"]["Payment"]
    assert set(schema["required"]) == set(schema["properties"]) == set(payment)
    create_schema = doc["components"]["schemas"]["PaymentCreate"]
    assert create_schema["properties"]["chain"]["enum"] == ["anvil"]


def _refs(node: object) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "$ref"] + [
            r for v in node.values() for r in _refs(v)
        ]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


async def test_docs_page_renders_without_external_resources(write_config, make_client) -> None:  # type: ignore[no-untyped-def]
    client = await make_client(write_config())
    resp = await client.get("/docs")
    assert resp.status == 200 and resp.content_type == "text/html"
    page = await resp.text()
    for needle in (
        "POST</b> /v1/payments",
        "/v1/payments/{id}/cancel",
        "Idempotency-Key",
        "PaymentCreate",
    ):
        assert needle in page
    assert "<script" not in page and "http://" not in page and "https://" not in page


async def test_dev_pay_native(write_config, make_client, pool, anvil) -> None:  # type: ignore[no-untyped-def]
    config = write_config()
    client = await make_client(config)
    headers = await new_key(pool)
    payment = await create(client, headers, amount="1.25")

    def balance() -> int:
        return int(anvil.rpc("eth_getBalance", [payment["address"], "latest"]), 16)

    before = balance()
    tx_hash = await dev_pay(config, payment["id"], None)
    receipt = anvil.rpc("eth_getTransactionReceipt", [tx_hash])
    assert int(receipt["status"], 16) == 1 and receipt["from"].lower() == ACCOUNT_0.lower()
    assert balance() == before + 1_250_000_000_000_000_000
    await dev_pay(config, payment["id"], "0.5")
    assert balance() == before + 1_750_000_000_000_000_000
    with pytest.raises(CtripdError, match="no payment"):
        await dev_pay(config, "pay_" + "0" * 32, None)
    with pytest.raises(CtripdError, match="more than 18 decimals"):
        await dev_pay(config, payment["id"], "0." + "1" * 19)


async def test_dev_pay_token(write_config, make_client, pool, anvil) -> None:  # type: ignore[no-untyped-def]
    token = await asyncio.to_thread(devtokens.deploy_token, anvil.url, "usdt", ACCOUNT_0)
    config = write_config(chains=[_chain_with_token(anvil.url, token)])
    client = await make_client(config)
    payment = await create(client, await new_key(pool), asset="TD6", amount="3.5")
    tx_hash = await dev_pay(config, payment["id"], None)
    assert tx_hash.startswith("0x") and len(tx_hash) == 66
    balance = await asyncio.to_thread(devtokens.token_balance, anvil.url, token, payment["address"])
    assert balance == 3_500_000  # a token deployed in this test: no earlier balance


async def test_events_for_the_config_url_only_while_it_is_set(  # type: ignore[no-untyped-def]
    write_config, make_client, pool, tmp_path
) -> None:
    """Without `[webhooks] url` the default merchant's events write no delivery to it: one would
    never settle, and every claim would read past the growing backlog."""
    headers = await new_key(pool)
    unset = await make_client(write_config())
    payment = await create(unset, headers)
    assert (await cancel(unset, payment["id"], headers)).ok
    assert await pool.fetchval("SELECT count(*) FROM events") == 2
    assert await pool.fetchval("SELECT count(*) FROM deliveries") == 0
    # (One client per test scans the chain: the second only creates.)
    configured = await make_client(with_webhook_url(write_config, tmp_path))
    payment = await create(configured, headers)
    rows = await pool.fetch("SELECT payment_id, endpoint_id FROM deliveries")
    assert [tuple(r) for r in rows] == [(payment["id"], None)]
