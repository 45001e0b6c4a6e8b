"""API keys: stored as hashes, 401 for every kind of bad key, merchant scoping, and the CLI."""

from __future__ import annotations

import asyncio
import hashlib
import json

import asyncpg
import pytest

from ctripd.cli import main as cli
from ctripd.http import auth as apikeys

PAYMENT = {"chain": "anvil", "asset": "ETH", "amount": "1"}


async def new_key(pool: asyncpg.Pool, merchant: str = "default", name: str = "test") -> str:
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO merchants (id, name) VALUES ($1, $1) ON CONFLICT DO NOTHING", merchant
        )
        key, _ = await apikeys.create_key(conn, name, merchant)
    return key


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_key_is_stored_only_as_its_hash(pool: asyncpg.Pool) -> None:
    key = await new_key(pool, "shop-1")
    assert apikeys.well_formed(key)
    row = await pool.fetchrow("SELECT * FROM api_keys")
    assert bytes(row["key_hash"]) == hashlib.sha256(key.encode()).digest()
    assert row["prefix"] == key[:12] and row["merchant"] == "shop-1"
    stored = " ".join(str(v) for v in row.values())
    assert key not in stored and key[12:] not in stored


async def test_authenticate(pool: asyncpg.Pool) -> None:
    key = await new_key(pool, "m1")
    found = await apikeys.authenticate(pool, key)
    assert found is not None and found.merchant == "m1"
    other = apikeys.generate_key()  # well formed, never stored
    assert await apikeys.authenticate(pool, other) is None
    assert await apikeys.authenticate(pool, key[:-1]) is None
    async with pool.acquire() as conn:
        await apikeys.revoke_key(conn, found.id)
    assert await apikeys.authenticate(pool, key) is None


@pytest.mark.parametrize(
    ("header", "detail"),
    [
        (None, "missing"),
        ("", "missing"),
        ("Basic dXNlcjpwYXNz", "malformed"),
        ("Bearer", "malformed"),
        ("Bearer not-a-key", "malformed"),
        ("Bearer ctk_short", "malformed"),
        ("Bearer " + "ctk_" + "A" * 43, "unknown or revoked"),
        ("revoked", "unknown or revoked"),
    ],
)
async def test_bad_keys_get_401_and_store_nothing(
    header: str | None, detail: str, write_config, make_client, pool
) -> None:  # type: ignore[no-untyped-def]
    client = await make_client(write_config())
    if header == "revoked":
        key = await new_key(pool)
        async with pool.acquire() as conn:
            await apikeys.revoke_key(conn, (await apikeys.authenticate(conn, key)).id)  # type: ignore[union-attr]
        header = f"Bearer {key}"
    headers = {} if header is None else {"Authorization": header}
    for method, path in (("POST", "/v1/payments"), ("GET", "/v1/payments"), ("GET", "/v1/nope")):
        resp = await client.request(method, path, json=PAYMENT, headers=headers)
        assert resp.status == 401, (method, path)
        assert resp.content_type == "application/problem+json"
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        body = await resp.json()
        assert body["status"] == 401 and detail in body["detail"]
    assert await pool.fetchval("SELECT count(*) FROM payments") == 0
    assert await pool.fetchval("SELECT count(*) FROM events") == 0


async def test_payments_are_scoped_to_the_merchant(write_config, make_client, pool) -> None:  # type: ignore[no-untyped-def]
    client = await make_client(write_config())
    alice, alice_rotated, bob = (
        await new_key(pool, "alice"),
        await new_key(pool, "alice"),
        await new_key(pool, "bob"),
    )
    resp = await client.post("/v1/payments", json=PAYMENT, headers=auth(alice))
    assert resp.status == 201
    payment = await resp.json()
    url = f"/v1/payments/{payment['id']}"

    resp = await client.get(url, headers=auth(bob))
    assert resp.status == 404 and resp.content_type == "application/problem+json"
    resp = await client.post(f"{url}/cancel", headers=auth(bob))
    assert resp.status == 404
    resp = await client.get("/v1/payments", headers=auth(bob))
    assert (await resp.json())["data"] == []
    resp = await client.get(f"/v1/payments?order_id={payment['id']}", headers=auth(bob))
    assert (await resp.json())["data"] == []

    # Another key of the same merchant sees everything: rotating keys loses nothing.
    resp = await client.get(url, headers=auth(alice_rotated))
    assert resp.status == 200 and (await resp.json())["status"] == "pending"
    resp = await client.get("/v1/payments", headers=auth(alice_rotated))
    assert [p["id"] for p in (await resp.json())["data"]] == [payment["id"]]
    assert await pool.fetchval("SELECT status FROM payments") == "pending"


async def _cli(*args: str) -> int:
    return await asyncio.to_thread(cli.main, list(args))


async def test_cli_create_list_revoke(write_config, make_client, pool, capsys) -> None:  # type: ignore[no-untyped-def]
    config = write_config()
    client = await make_client(config)
    capsys.readouterr()  # the app's start-up log lines
    base = ("--config", config.path, "api-key")

    assert await _cli("--config", config.path, "merchants", "create", "shop") == 0
    capsys.readouterr()
    assert await _cli(*base, "create", "--name", "checkout", "--merchant", "shop") == 0
    out, err = capsys.readouterr()
    key = out.strip()
    assert apikeys.well_formed(key) and "shown only this once" in err
    resp = await client.post("/v1/payments", json=PAYMENT, headers=auth(key))
    assert resp.status == 201
    assert await pool.fetchval("SELECT merchant FROM payments") == "shop"

    assert await _cli(*base, "list", "--json") == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["name"] == "checkout" and listed["merchant"] == "shop"
    assert listed["prefix"] == key[:12] and listed["revoked_at"] is None
    assert key not in json.dumps(listed)

    assert await _cli(*base, "list") == 0
    table = capsys.readouterr().out
    assert "checkout" in table and key[:12] in table and key not in table

    assert await _cli(*base, "revoke", str(listed["id"])) == 0
    capsys.readouterr()
    resp = await client.post("/v1/payments", json=PAYMENT, headers=auth(key))
    assert resp.status == 401

    assert await _cli(*base, "revoke", str(listed["id"])) == 1
    assert "already revoked" in capsys.readouterr().err
    assert await _cli(*base, "revoke", "999") == 1
    assert "no API key with id 999" in capsys.readouterr().err


async def test_cli_refuses_bad_merchant(write_config, capsys) -> None:  # type: ignore[no-untyped-def]
    config = write_config()
    code = await _cli(
        "--config", config.path, "api-key", "create", "--name", "x", "--merchant", "a b"
    )
    assert code == 1
    assert "merchant must be" in capsys.readouterr().err
