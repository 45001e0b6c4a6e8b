"""A transfer in another asset than its payment's is shown in its own asset and decimals, never
counted; rows recorded before migration 0006 are backfilled where possible — against a real Anvil
and Postgres."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from test_scanner_support import (
    ETH,
    SENDER,
    Rig,
    chain_entry,
    insert_payment,
    send_native,
)
from yoyo import get_backend, read_migrations

from ctripd import db
from ctripd.chain.scanner import Transfer
from ctripd.dev import tokens as devtokens
from ctripd.http import auth as apikeys
from ctripd.ledger.crediting import Policy, credit_range

MIGRATION = "0006.transfer-asset"


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    r = Rig()
    yield r
    await r.close()


async def key(pool: asyncpg.Pool) -> dict[str, str]:
    async with pool.acquire() as conn:
        secret, _ = await apikeys.create_key(conn, "test", "default")
    return {"Authorization": f"Bearer {secret}"}


async def get_payment(client: Any, headers: dict[str, str], payment_id: str) -> dict[str, Any]:
    resp = await client.get(f"/v1/payments/{payment_id}", headers=headers)
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


def assert_matches(schema: dict[str, Any], obj: dict[str, Any]) -> None:
    """The transfer object against its OpenAPI schema (flat: types, nullable, patterns, enums)."""
    assert set(schema["required"]) == set(schema["properties"]) == set(obj)
    types = {"string": str, "integer": int}
    for name, prop in schema["properties"].items():
        value = obj[name]
        if value is None:
            assert prop.get("nullable") is True, name
            continue
        assert isinstance(value, types[prop["type"]]), name
        if "pattern" in prop:
            assert re.search(prop["pattern"], value), (name, value)
        if "enum" in prop:
            assert value in prop["enum"], (name, value)


def shown(transfer: dict[str, Any]) -> tuple[Any, ...]:
    return (
        transfer["kind"],
        transfer["asset"],
        transfer["token_address"],
        transfer["decimals"],
        transfer["amount"],
        transfer["amount_base_units"],
    )


async def test_transfers_in_other_assets_show_their_own(  # type: ignore[no-untyped-def]
    write_config, make_client, pool, anvil, rig
) -> None:
    td18 = devtokens.deploy_token(anvil.url, "erc20_18", SENDER)
    td6 = devtokens.deploy_token(anvil.url, "erc20_6", SENDER)
    for token in (td18, td6):
        devtokens.mint(anvil.url, token, SENDER, 10**30, SENDER)
    tokens = {"TD18": {"address": td18, "decimals": 18}, "TD6": {"address": td6, "decimals": 6}}
    config = write_config(chains=[chain_entry(anvil, tokens=tokens)])
    client = await make_client(config)
    headers = await key(pool)
    watcher = rig.watcher(config)
    await watcher.run_once()
    resp = await client.post(
        "/v1/payments", json={"chain": "anvil", "asset": "TD6", "amount": "25"}, headers=headers
    )
    assert resp.status == 201
    token_payment = await resp.json()
    resp = await client.post(
        "/v1/payments", json={"chain": "anvil", "asset": "ETH", "amount": "1"}, headers=headers
    )
    native_payment = await resp.json()

    address = token_payment["address"]
    devtokens.token_transfer(anvil.url, td18, SENDER, address, 5 * ETH)
    send_native(anvil, address, ETH // 2)
    devtokens.token_transfer(anvil.url, td6, SENDER, address, 10 * 10**6)
    devtokens.token_transfer(anvil.url, td6, SENDER, native_payment["address"], 5 * 10**6)
    await watcher.run_once()

    paid = await get_payment(client, headers, token_payment["id"])
    assert [shown(t) for t in paid["transfers"]] == [
        ("token", "TD18", td18, 18, "5", str(5 * ETH)),
        ("native", "ETH", None, 18, "0.5", str(ETH // 2)),
        ("token", "TD6", td6, 6, "10", "10000000"),
    ]
    # Only the payment's own asset counts.
    assert paid["status"] == "pending"
    assert paid["amount_received"] == "10" and paid["amount_received_base_units"] == "10000000"
    assert paid["amount_overpaid"] == "0"

    other = await get_payment(client, headers, native_payment["id"])
    assert [shown(t) for t in other["transfers"]] == [
        ("token", "TD6", td6, 6, "5", "5000000"),
    ]
    assert other["status"] == "pending" and other["amount_received"] == "0"

    # The list, and each event's transfer, show the same.
    resp = await client.get("/v1/payments?limit=10", headers=headers)
    listed = {p["id"]: p for p in (await resp.json())["data"]}
    assert listed[token_payment["id"]]["transfers"] == paid["transfers"]
    payloads = await pool.fetch(
        "SELECT payload FROM events WHERE payment_id = $1 AND type = 'payment.transfer_received'"
        " ORDER BY seq",
        token_payment["id"],
    )
    assert [shown(p["payload"]["data"]["transfer"]) for p in payloads] == [
        shown(t) for t in paid["transfers"]
    ]

    doc = await (await client.get("/openapi.json")).json()
    schema = doc["components"]["schemas"]["Transfer"]
    for transfer in [*paid["transfers"], *other["transfers"]]:
        assert_matches(schema, transfer)


async def _roll_back_migration(dsn: str) -> None:
    def run() -> None:
        backend = get_backend(db.yoyo_url(dsn))
        with db.migrations_dir() as path, backend.lock():
            migrations = read_migrations(str(path))
            backend.rollback_migrations(migrations.filter(lambda m: m.id == MIGRATION))
        backend.connection.close()

    await asyncio.to_thread(run)


async def _raw_transfer(
    pool: asyncpg.Pool, payment_id: str, to: str, token: str | None, amount: int, tx: str
) -> None:
    await pool.execute(
        "INSERT INTO transfers (chain, tx_hash, kind, log_index, payment_id, token_address,"
        " from_address, to_address, amount, block_number, block_hash)"
        " VALUES ('anvil', $1, $2, $3, $4, $5, $6, $7, $8, 1, '0xbb')",
        tx,
        "native" if token is None else "token",
        -1 if token is None else 0,
        payment_id,
        token,
        SENDER,
        to,
        amount,
    )


async def test_migration_backfills_what_it_can(  # type: ignore[no-untyped-def]
    write_config, make_client, pool, db_dsn, anvil
) -> None:
    # Real contracts (their decimals are checked at start); the rows are written by hand.
    td18 = devtokens.deploy_token(anvil.url, "erc20_18", SENDER)
    td6 = devtokens.deploy_token(anvil.url, "erc20_6", SENDER)
    tokens = {"TD18": {"address": td18, "decimals": 18}, "TD6": {"address": td6, "decimals": 6}}
    config = write_config(chains=[chain_entry(anvil, tokens=tokens)])
    await _roll_back_migration(db_dsn)
    columns = await pool.fetch(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'transfers'"
        " AND column_name IN ('asset', 'decimals')"
    )
    assert columns == []
    pid, address = await insert_payment(pool, config, 25 * 10**6, asset="TD6")
    await insert_payment(pool, config, ETH)  # an ETH payment names the native asset
    await _raw_transfer(pool, pid, address, td6, 10 * 10**6, "0x01")
    await _raw_transfer(pool, pid, address, None, ETH // 2, "0x02")
    await _raw_transfer(pool, pid, address, td18, 5 * ETH, "0x03")  # no TD18 payment: unknown

    assert await asyncio.to_thread(db.migrate, db_dsn) == [MIGRATION]
    rows = await pool.fetch("SELECT tx_hash, asset, decimals FROM transfers ORDER BY tx_hash")
    assert [tuple(r) for r in rows] == [
        ("0x01", "TD6", 6),
        ("0x02", "ETH", 18),
        ("0x03", None, None),
    ]

    client = await make_client(config)
    headers = await key(pool)
    payment = await get_payment(client, headers, pid)
    assert [shown(t) for t in payment["transfers"]] == [
        ("token", "TD6", td6, 6, "10", "10000000"),
        ("native", "ETH", None, 18, "0.5", str(ETH // 2)),
        ("token", None, td18, None, None, str(5 * ETH)),
    ]
    doc = await (await client.get("/openapi.json")).json()
    for transfer in payment["transfers"]:
        assert_matches(doc["components"]["schemas"]["Transfer"], transfer)

    # The unknown row, orphaned and mined again, is recorded with its asset this time.
    await pool.execute("UPDATE transfers SET status = 'orphaned' WHERE tx_hash = '0x03'")
    chain = config.chain("anvil")
    assert chain is not None
    again = Transfer("token", "0x03", 0, 2, "0xcc", 0, SENDER, address.lower(), td18, 5 * ETH)
    async with pool.acquire() as conn, conn.transaction():
        assert await credit_range(conn, chain, [again], 2, Policy()) == 1
    payment = await get_payment(client, headers, pid)
    assert shown(payment["transfers"][-1]) == ("token", "TD18", td18, 18, "5", str(5 * ETH))
    assert payment["amount_received"] == "10"
