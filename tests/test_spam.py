"""Spam transfers against a real Anvil and Postgres: dust below an asset's `min_credit` is counted
but recorded per block and announces nothing; payment objects and event payloads stay bounded
however many transfers arrive; the full list is paged."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
import pytest
from test_scanner_support import (
    SENDER,
    Rig,
    chain_entry,
    event_types,
    fresh_address,
    head,
    insert_payment,
    mine,
    payment,
    signed_native,
    signed_tx,
    wait_mined,
)
from web3 import Web3

from ctripd import db
from ctripd.config import Config
from ctripd.dev import tokens as devtokens
from ctripd.http import auth as apikeys
from ctripd.http.payments import encode_cursor
from ctripd.ledger.objects import LATEST_TRANSFERS, load_payment
from ctripd.ledger.payments import Position
from ctripd.ledger.reconcile import reconcile

UNIT = 10**6  # one TD6
MIN_CREDIT = 1_000  # 0.001 TD6


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    r = Rig()
    yield r
    await r.close()


def td6_config(write_config: Any, anvil: Any, min_credit: int = MIN_CREDIT) -> tuple[Config, str]:
    td6 = devtokens.deploy_token(anvil.url, "erc20_6", SENDER)
    devtokens.mint(anvil.url, td6, SENDER, 10**6 * UNIT, SENDER)
    token: dict[str, Any] = {"address": td6, "decimals": 6}
    if min_credit:  # else the default (0): every transfer credited on its own
        token["min_credit"] = min_credit
    return write_config(chains=[chain_entry(anvil, tokens={"TD6": token})]), td6


async def sizes(pool: asyncpg.Pool) -> dict[str, int]:
    """Rows and bytes (with indexes and TOAST) of the tables spam could grow."""
    found = {}
    for table in ("transfers", "events"):
        found[f"{table}_rows"] = await pool.fetchval(f"SELECT count(*) FROM {table}")
        found[f"{table}_bytes"] = await pool.fetchval(f"SELECT pg_total_relation_size('{table}')")
    return found


async def largest_payload(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT max(octet_length(payload::text)) FROM events"))


async def test_5000_dust_transfers_keep_pace_with_bounded_growth(
    write_config, pool, anvil, rig
) -> None:  # type: ignore[no-untyped-def]
    """5,000 one-unit TD6 transfers to one payment in 5 blocks (1,000 a transaction), after a
    real half payment: one scan catches up, 5 dust rows and no event for the dust."""
    config, td6 = td6_config(write_config, anvil)
    watcher = rig.watcher(config)
    await watcher.run_once()
    pid, address = await insert_payment(pool, config, UNIT, asset="TD6")
    devtokens.token_transfer(anvil.url, td6, SENDER, address, UNIT // 2)
    before = await sizes(pool)
    first = head(anvil)
    for _ in range(5):
        devtokens.spray(anvil.url, td6, SENDER, address, 1, 1_000)
    blocks = head(anvil) - first + 1  # the half payment's block too

    started = time.perf_counter()
    await watcher.run_once()
    elapsed = time.perf_counter() - started
    after = await sizes(pool)
    assert await watcher.rpc.call("eth_blockNumber", []) == hex(head(anvil))
    assert await pool.fetchval("SELECT scanned_block FROM chains") == head(anvil)

    row = await payment(pool, pid)
    assert int(row["amount_received"]) == UNIT // 2 + 5_000 and row["status"] == "pending"
    rows = await pool.fetch(
        "SELECT kind, transfer_count, amount FROM transfers WHERE payment_id = $1 ORDER BY id", pid
    )
    assert [(r["kind"], r["transfer_count"]) for r in rows] == [("token", 1)] + [
        ("dust", 1_000)
    ] * 5
    assert await event_types(pool, pid) == ["payment.transfer_received"]
    assert after["transfers_rows"] - before["transfers_rows"] == 6
    assert after["events_rows"] - before["events_rows"] == 1

    rendered = await load_payment(pool, pid)
    assert rendered is not None
    summary = rendered["transfer_summary"]
    assert (summary["count"], summary["dust_count"], summary["has_more"]) == (5_001, 5_000, False)
    (asset,) = summary["assets"]
    assert (asset["asset"], asset["amount_base_units"]) == ("TD6", str(UNIT // 2 + 5_000))
    largest = await largest_payload(pool)
    assert largest < 8_000
    report = await reconcile(pool, watcher.rpc, watcher.chain)
    assert report.mismatches == [] and report.balances >= 1
    print(
        f"\nspam figures: {blocks} blocks (5,000 dust + 1 transfer) scanned in {elapsed:.2f} s; "
        f"transfers +{after['transfers_rows'] - before['transfers_rows']} rows "
        f"+{after['transfers_bytes'] - before['transfers_bytes']} bytes; "
        f"events +{after['events_rows'] - before['events_rows']} rows "
        f"+{after['events_bytes'] - before['events_bytes']} bytes; "
        f"largest event payload {largest} bytes"
    )


async def test_dust_counts_towards_the_payment_without_transfer_events(
    write_config, pool, anvil, rig, make_client
) -> None:  # type: ignore[no-untyped-def]
    """A payer's payment split into dust still pays: the funds are at the address and get swept
    (an attacker paying a payment with dust has paid it). Dust announces nothing by itself; the
    status change it causes does."""
    config, td6 = td6_config(write_config, anvil)
    watcher = rig.watcher(config)
    await watcher.run_once()
    pid, address = await insert_payment(pool, config, 10 * MIN_CREDIT, asset="TD6")
    devtokens.spray(anvil.url, td6, SENDER, address, MIN_CREDIT - 1, 6)
    devtokens.spray(anvil.url, td6, SENDER, address, MIN_CREDIT - 1, 6)
    mine(anvil)
    await watcher.run_once()

    row = await payment(pool, pid)
    assert int(row["amount_received"]) == 12 * (MIN_CREDIT - 1)
    assert row["status"] == "confirmed"
    assert await event_types(pool, pid) == ["payment.detected", "payment.confirmed"]
    report = await reconcile(pool, watcher.rpc, watcher.chain)
    assert report.mismatches == []

    client = await make_client(config)
    async with pool.acquire() as conn:
        secret, _ = await apikeys.create_key(conn, "test", "default")
    headers = {"Authorization": f"Bearer {secret}"}
    resp = await client.get(f"/v1/payments/{pid}", headers=headers)
    body = await resp.json()
    assert [(t["kind"], t["count"], t["amount"]) for t in body["transfers"]] == [
        ("dust", 6, "0.005994"),
        ("dust", 6, "0.005994"),
    ]
    assert body["transfer_summary"]["dust_count"] == 12
    resp = await client.get(f"/v1/payments/{pid}/transfers", headers=headers)
    listed = await resp.json()
    assert listed["data"] == body["transfers"][::-1] and listed["has_more"] is False


def signed_spray(anvil: Any, token: str, to: str, amount: int, count: int) -> tuple[str, str]:
    """(raw tx, hash) of a spray signed offline, so that `anvil_reorg` can re-include it."""
    contract = Web3().eth.contract(abi=devtokens.abi("TestToken"))
    data = contract.encode_abi("spray", [Web3.to_checksum_address(to), amount, count])
    return signed_tx(anvil, to=token, data=data, value=0, gas=3_000_000)


async def test_reorg_orphans_dust_per_block_and_counts_it_once_again(
    write_config, pool, anvil, rig
) -> None:  # type: ignore[no-untyped-def]
    """The aggregate of a replaced block is orphaned (one payment.reorged for it); the same
    transfers in the new block make a new aggregate: counted once, never twice."""
    config, td6 = td6_config(write_config, anvil)
    watcher = rig.watcher(config)
    await watcher.run_once()
    pid, address = await insert_payment(pool, config, 50 * MIN_CREDIT, asset="TD6")
    raw, tx_hash = signed_spray(anvil, td6, address, 7, 40)
    wait_mined(anvil, anvil.rpc("eth_sendRawTransaction", [raw]))
    await watcher.run_once()
    assert int((await payment(pool, pid))["amount_received"]) == 280

    old_hash = anvil.rpc("eth_getTransactionReceipt", [tx_hash])["blockHash"]
    # The same spray in a new block; a marker transaction makes sure the block differs (Anvil
    # rebuilds a block of the same second and content identically, hash and all).
    marker, _ = signed_native(anvil, fresh_address(), 1)
    anvil.rpc("anvil_reorg", [1, [[raw, 0], [marker, 0]]])
    receipt = anvil.rpc("eth_getTransactionReceipt", [tx_hash])
    assert receipt["blockHash"] != old_hash
    await watcher.run_once()

    rows = await pool.fetch(
        "SELECT kind, transfer_count, amount, status, block_hash FROM transfers "
        "WHERE payment_id = $1 ORDER BY id",
        pid,
    )
    assert [(r["kind"], r["transfer_count"], int(r["amount"]), r["status"]) for r in rows] == [
        ("dust", 40, 280, "orphaned"),
        ("dust", 40, 280, "live"),
    ]
    assert rows[1]["block_hash"] == receipt["blockHash"]
    assert int((await payment(pool, pid))["amount_received"]) == 280
    assert await event_types(pool, pid) == ["payment.reorged"]
    reorged = await pool.fetchval(
        "SELECT payload FROM events WHERE payment_id = $1 AND type = 'payment.reorged'", pid
    )
    transfer = (reorged if isinstance(reorged, dict) else orjson.loads(reorged))["data"]["transfer"]
    assert (transfer["kind"], transfer["count"], transfer["status"]) == ("dust", 40, "orphaned")


async def test_many_credited_transfers_keep_payloads_bounded_and_are_paged(
    write_config, pool, anvil, rig, make_client
) -> None:  # type: ignore[no-untyped-def]
    """Above min_credit every transfer is credited and announced, but each event carries the
    latest few transfers and a summary, so payloads stop growing; the full list is paged."""
    config, td6 = td6_config(write_config, anvil, min_credit=0)
    watcher = rig.watcher(config)
    await watcher.run_once()
    pid, address = await insert_payment(pool, config, 1_000 * UNIT, asset="TD6")
    devtokens.spray(anvil.url, td6, SENDER, address, 1, 15)
    await watcher.run_once()
    devtokens.spray(anvil.url, td6, SENDER, address, 1, 15)
    await watcher.run_once()

    assert await event_types(pool, pid) == ["payment.transfer_received"] * 30
    sizes_ = [
        r[0]
        for r in await pool.fetch(
            "SELECT octet_length(payload::text) FROM events "
            "WHERE payment_id = $1 AND type = 'payment.transfer_received' ORDER BY seq",
            pid,
        )
    ]
    # Each step's events carry the payment as that step left it: 15, then 30 transfers, both
    # shown as the latest 10 and a summary, so the second step's are no bigger.
    assert max(sizes_[15:]) <= max(sizes_[:15]) + 50
    rendered = await load_payment(pool, pid)
    assert rendered is not None
    assert len(rendered["transfers"]) == LATEST_TRANSFERS
    assert rendered["transfer_summary"]["count"] == 30
    assert rendered["transfer_summary"]["has_more"] is True

    client = await make_client(config)
    async with pool.acquire() as conn:
        secret, _ = await apikeys.create_key(conn, "test", "default")
        await conn.execute(
            "INSERT INTO merchants (id, name) VALUES ($1, $1) ON CONFLICT DO NOTHING", "acme"
        )
        other, _ = await apikeys.create_key(conn, "other", "acme")
    headers = {"Authorization": f"Bearer {secret}"}
    seen: list[dict[str, Any]] = []
    url = f"/v1/payments/{pid}/transfers?limit=12"
    while True:
        resp = await client.get(url, headers=headers)
        assert resp.status == 200, await resp.text()
        page = await resp.json()
        seen.extend(page["data"])
        if not page["has_more"]:
            break
        url = f"/v1/payments/{pid}/transfers?limit=12&cursor={page['next_cursor']}"
    assert len(seen) == 30 and len({(t["tx_hash"], t["log_index"]) for t in seen}) == 30
    assert [t["block_number"] for t in seen] == sorted(
        (t["block_number"] for t in seen), reverse=True
    )
    assert seen[:LATEST_TRANSFERS] == rendered["transfers"][::-1]

    resp = await client.get(
        f"/v1/payments/{pid}/transfers", headers={"Authorization": f"Bearer {other}"}
    )
    assert resp.status == 404
    # A payments cursor is signed with the same key, for another position: refused here.
    key = bytes(await pool.fetchval(db.queries("api")["cursor_key"]))
    row = await payment(pool, pid)
    listing = encode_cursor(key, "default", Position(row["created_at"], pid))
    for bad in ("nope", "e30.AAAA", listing):
        resp = await client.get(f"/v1/payments/{pid}/transfers?cursor={bad}", headers=headers)
        assert resp.status == 400
        assert (await resp.json())["field"] == "cursor"
    resp = await client.get(f"/v1/payments/{pid}/transfers?limit=0", headers=headers)
    assert resp.status == 400
    resp = await client.get(f"/v1/payments/{pid}/transfers?status=live", headers=headers)
    assert resp.status == 400
