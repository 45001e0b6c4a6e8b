"""`ctripd payments list|show`, `ctripd chains` and `ctripd events list`, run in-process through
`ctripd.cli.main` against a real database whose payments were made by the API and the watcher."""

from __future__ import annotations

import asyncio
import json
import socket
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from test_scanner_support import ETH, cancel, chain_entry, mine, send_native

from ctripd.cli.main import main
from ctripd.http.auth import create_key
from ctripd.http.keys import WATCHERS


@dataclass
class Shop:
    """A config on disk, the app over it, two merchants' keys, and payments they made."""

    config: Any
    client: Any
    keys: dict[str, dict[str, str]]
    payments: dict[str, dict[str, Any]]


async def cli(capsys: pytest.CaptureFixture[str], shop: Shop, *args: str) -> tuple[int, str, str]:
    """Run `ctripd --config … ARGS` (in a thread: it runs its own event loop)."""
    capsys.readouterr()
    code = await asyncio.to_thread(main, ["--config", shop.config.path, *args])
    out, err = capsys.readouterr()
    return code, out, err


def dead_url() -> str:
    """An http URL on a port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
async def shop(pool, write_config, make_client, anvil) -> Shop:  # type: ignore[no-untyped-def]
    """alice: one pending and one canceled payment; bob: one paid and confirmed on Anvil; each
    with a webhook endpoint."""
    config = write_config(
        toml={"webhooks": {"allow_private_targets": True}},  # endpoints on loopback
        chains=[chain_entry(anvil, rpc=[anvil.url, dead_url()])],
    )
    client = await make_client(config)
    keys = {}
    for merchant in ("alice", "bob"):
        async with pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO merchants (id, name) VALUES ($1, $1) ON CONFLICT DO NOTHING", merchant
            )
            key, _ = await create_key(conn, "cli-test", merchant)
        keys[merchant] = {"Authorization": f"Bearer {key}"}
        # Each merchant's events are deliveries to its webhook endpoint (one here, never reached).
        resp = await client.post(
            "/v1/webhook-endpoints", json={"url": dead_url() + "/hook"}, headers=keys[merchant]
        )
        assert resp.status == 201, await resp.text()
    watcher = client.server.app[WATCHERS]["anvil"]
    await watcher.run_once()  # the cursor starts at the current head

    async def create(merchant: str, amount: str, order_id: str) -> dict[str, Any]:
        body = {"chain": "anvil", "asset": "ETH", "amount": amount, "order_id": order_id}
        resp = await client.post("/v1/payments", json=body, headers=keys[merchant])
        assert resp.status == 201, await resp.text()
        payment: dict[str, Any] = await resp.json()
        return payment

    made = {
        "open": await create("alice", "1.5", "A-1"),
        "canceled": await create("alice", "2", "A-2"),
        "paid": await create("bob", "0.25", "B-1"),
    }
    resp = await cancel(client, made["canceled"]["id"], keys["alice"])
    assert resp.status == 200
    send_native(anvil, made["paid"]["address"], ETH // 4)
    await watcher.run_once()
    mine(anvil)
    await watcher.run_once()
    return Shop(config, client, keys, made)


async def api_payment(shop: Shop, merchant: str, payment_id: str) -> dict[str, Any]:
    resp = await shop.client.get(f"/v1/payments/{payment_id}", headers=shop.keys[merchant])
    assert resp.status == 200
    payment: dict[str, Any] = await resp.json()
    return payment


async def test_payments_list_json_spans_merchants_and_filters(shop: Shop, capsys) -> None:  # type: ignore[no-untyped-def]
    ids = {name: p["id"] for name, p in shop.payments.items()}

    async def listed(*args: str) -> list[dict[str, Any]]:
        code, out, err = await cli(capsys, shop, "payments", "list", "--json", *args)
        assert (code, err) == (0, "")
        found: list[dict[str, Any]] = json.loads(out)
        return found

    everything = await listed()
    assert [p["id"] for p in everything] == [ids["paid"], ids["canceled"], ids["open"]]
    assert [p["merchant"] for p in everything] == ["bob", "alice", "alice"]
    paid = everything[0]
    assert paid == await api_payment(shop, "bob", ids["paid"])
    assert paid["status"] == "confirmed" and paid["amount_received"] == "0.25"

    assert [p["id"] for p in await listed("--merchant", "alice")] == [ids["canceled"], ids["open"]]
    assert [p["id"] for p in await listed("--status", "canceled")] == [ids["canceled"]]
    assert [p["id"] for p in await listed("--status", "detected")] == []
    assert [p["id"] for p in await listed("--order-id", "A-1")] == [ids["open"]]
    assert len(await listed("--chain", "anvil")) == 3
    assert [p["id"] for p in await listed("--limit", "1")] == [ids["paid"]]
    both = await listed("--merchant", "alice", "--status", "pending")
    assert [p["id"] for p in both] == [ids["open"]]


async def test_payments_list_prints_aligned_rows(shop: Shop, capsys) -> None:  # type: ignore[no-untyped-def]
    code, out, err = await cli(capsys, shop, "payments", "list")
    assert (code, err) == (0, "")
    header, *rows = out.splitlines()
    assert len(rows) == 3
    assert header.split() == [
        "ID",
        "MERCHANT",
        "CHAIN",
        "AMOUNT",
        "RECEIVED",
        "STATUS",
        "SWEEP",
        "ORDER",
        "CREATED",
    ]
    paid = shop.payments["paid"]
    assert rows[0].split()[:9] == [
        paid["id"],
        "bob",
        "anvil",
        "0.25",
        "ETH",
        "0.25",
        "confirmed",
        "none",
        "B-1",
    ]
    assert rows[1].split()[6] == "canceled" and rows[2].split()[6] == "pending"
    # Columns line up: every row's status starts under the STATUS header.
    column = header.index("STATUS")
    assert {row[column:].split()[0] for row in rows} == {"confirmed", "canceled", "pending"}


async def test_payments_show(shop: Shop, capsys) -> None:  # type: ignore[no-untyped-def]
    paid = shop.payments["paid"]
    code, out, err = await cli(capsys, shop, "payments", "show", paid["id"], "--json")
    assert (code, err) == (0, "")
    shown = json.loads(out)
    assert shown["merchant"] == "bob"
    assert shown == await api_payment(shop, "bob", paid["id"])

    code, out, err = await cli(capsys, shop, "payments", "show", paid["id"])
    assert (code, err) == (0, "")
    lines = dict(line.split(None, 1) for line in out.splitlines()[:20] if line)
    assert lines["id"] == paid["id"] and lines["merchant"] == "bob"
    assert lines["status"] == "confirmed"
    assert lines["amount"] == "0.25 ETH (250000000000000000 base units)"
    assert lines["address"] == paid["address"] and lines["order_id"] == "B-1"
    assert lines["confirmations_required"] == "2" and lines["sweep"] == "none"
    assert lines["transfers"] == "1 live (0 dust)"
    (transfer,) = shown["transfers"]
    transfer_row = out.splitlines()[-1].split()
    assert transfer_row[0] == transfer["tx_hash"] and transfer_row[-1] == "live"
    assert transfer_row[-2] == str(transfer["confirmations"]) == "2"
    assert transfer_row[-4:-2] == ["0.25", "ETH"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("payments", "show", "pay_" + "0" * 32), "ctripd: no payment 'pay_" + "0" * 32 + "'"),
        (("payments", "show", "pay_\x1b[31m"), "ctripd: no payment 'pay_?[31m'"),
        (("payments", "list", "--status", "paid"), "ctripd: --status must be one of pending, "),
        (
            ("payments", "list", "--chain", "nope"),
            "ctripd: unknown chain 'nope' in ",
        ),
        (("payments", "list", "--limit", "0"), "ctripd: --limit must be an integer from 1 to "),
        (("payments", "list", "--limit", "10001"), "ctripd: --limit must be an integer from 1 to "),
        (("payments", "list", "--limit", "x"), "ctripd: --limit must be an integer from 1 to "),
        (("events", "list", "--status", "sent"), "ctripd: --status must be one of pending, "),
        (("events", "list", "--limit", "101"), "ctripd: --limit must be an integer from 1 to 100"),
        (("events", "list", "--limit", "x"), "ctripd: --limit must be an integer from 1 to 100"),
    ],
)
async def test_errors_are_one_line(shop: Shop, capsys, args: tuple[str, ...], message: str) -> None:  # type: ignore[no-untyped-def]
    code, out, err = await cli(capsys, shop, *args)
    assert code == 1 and out == ""
    assert err.startswith(message) and err.count("\n") == 1, err


async def test_chains_shows_the_data_of_v1_chains(shop: Shop, capsys, anvil) -> None:  # type: ignore[no-untyped-def]
    resp = await shop.client.get("/v1/chains", headers=shop.keys["alice"])
    (api,) = (await resp.json())["data"]

    code, out, err = await cli(capsys, shop, "chains", "--json")
    assert code == 0, err
    (chain,) = json.loads(out)  # the dead URL's log lines went to stderr, not into the JSON
    assert "rpc.failed" in err
    assert set(chain) == set(api)
    same = ("name", "chain_id", "head", "head_seen_at", "scanned_block", "scanned_at", "lag")
    assert {k: chain[k] for k in same} == {k: api[k] for k in same}
    assert chain["confirmations"] == 2 and chain["scanner"] is None
    assert chain["scanned_block"] is not None and chain["lag"] == 0
    live, dead = chain["rpc"]
    assert live["url"] == anvil.url and live["ok"] and live["requests"] == 1
    assert not dead["ok"] and dead["errors"] == 1 and "cannot connect" in dead["last_error"]

    code, out, _ = await cli(capsys, shop, "chains")
    assert code == 0
    header, row = out.splitlines()
    assert header.split()[:3] == ["NAME", "CHAIN", "ID"]
    cells = row.split()
    assert cells[:5] == ["anvil", "31337", str(api["head"]), str(api["scanned_block"]), "0"]
    assert f"{anvil.url} ok" in row and "FAILED (cannot connect" in row


async def test_events_list_spans_merchants(shop: Shop, capsys, pool: asyncpg.Pool) -> None:  # type: ignore[no-untyped-def]
    code, out, err = await cli(capsys, shop, "events", "list", "--json", "--limit", "100")
    assert (code, err) == (0, "")
    events = json.loads(out)
    by_payment: dict[str, list[str]] = {}
    for event in reversed(events):
        by_payment.setdefault(event["payment_id"], []).append(event["type"])
    assert by_payment == {
        shop.payments["open"]["id"]: ["payment.created"],
        shop.payments["canceled"]["id"]: ["payment.created", "payment.canceled"],
        shop.payments["paid"]["id"]: [
            "payment.created",
            "payment.transfer_received",
            "payment.detected",
            "payment.confirmed",
        ],
    }
    assert await pool.fetchval("SELECT count(*) FROM events") == len(events)

    code, out, err = await cli(
        capsys, shop, "events", "list", "--payment-id", shop.payments["open"]["id"]
    )
    assert code == 0 and err == ""
    header, row = out.splitlines()
    assert header.split()[:4] == ["ID", "TYPE", "PAYMENT", "STATUS"]
    assert row.split()[1:4] == ["payment.created", shop.payments["open"]["id"], "pending"]
