"""Scopes of API keys: a key does only what its scopes allow, and is told which scope it lacks
(403 problem+json); every `/v1/` route needs one; keys are made with scopes by the CLI."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
import pytest

from ctripd.cli import main as cli
from ctripd.http import auth as apikeys
from ctripd.http.scopes import ROUTE_SCOPES, SCOPES

PAYMENT = {"chain": "anvil", "asset": "ETH", "amount": "1"}


async def key_with(pool: asyncpg.Pool, *scopes: str) -> dict[str, str]:
    async with pool.acquire() as conn:
        key, row = await apikeys.create_key(conn, "scoped", "default", scopes or SCOPES)
    assert row["scopes"] == list(scopes or SCOPES)
    return {"Authorization": f"Bearer {key}"}


async def test_a_key_does_only_what_its_scopes_allow(pool, write_config, make_client) -> None:  # type: ignore[no-untyped-def]
    client = await make_client(write_config())
    full = await key_with(pool)
    reader = await key_with(pool, "payments:read")
    writer = await key_with(pool, "payments:write")
    resp = await client.post("/v1/payments", json=PAYMENT, headers=full)
    assert resp.status == 201
    payment = await resp.json()

    resp = await client.get(f"/v1/payments/{payment['id']}", headers=reader)
    assert resp.status == 200
    resp = await client.get("/v1/payments", headers=reader)
    assert resp.status == 200
    resp = await client.post("/v1/payments", json=PAYMENT, headers=writer)
    assert resp.status == 201

    refused: list[tuple[str, str, dict[str, str], str]] = [
        ("POST", "/v1/payments", reader, "payments:write"),
        ("POST", f"/v1/payments/{payment['id']}/cancel", reader, "payments:write"),
        ("GET", f"/v1/payments/{payment['id']}", writer, "payments:read"),
        ("GET", "/v1/events", reader, "events:read"),
        ("POST", "/v1/events/evt_0/redeliver", reader, "events:write"),
        ("GET", "/v1/webhook-endpoints", reader, "webhooks:manage"),
        ("POST", "/v1/webhook-endpoints", writer, "webhooks:manage"),
    ]
    for method, path, headers, scope in refused:
        resp = await client.request(method, path, json=PAYMENT, headers=headers)
        assert resp.status == 403, (method, path)
        assert resp.content_type == "application/problem+json"
        problem = await resp.json()
        assert problem["scope"] == scope and scope in problem["detail"], problem
        assert problem["type"].endswith(":forbidden")
    assert await pool.fetchval("SELECT count(*) FROM payments") == 2, "nothing refused was done"
    assert await pool.fetchval("SELECT status FROM payments WHERE id = $1", payment["id"]) == (
        "pending"
    )


async def test_every_v1_route_needs_a_documented_scope(write_config, make_client) -> None:  # type: ignore[no-untyped-def]
    client = await make_client(write_config())
    app = client.server.app
    routes = {
        (r.method, r.resource.canonical)
        for r in app.router.routes()
        if r.resource is not None and r.resource.canonical.startswith("/v1/") and r.method != "HEAD"
    }
    assert routes == set(ROUTE_SCOPES)
    doc = await (await client.get("/openapi.json")).json()
    for (method, path), scope in ROUTE_SCOPES.items():
        operation = doc["paths"][path][method.lower()]
        assert operation["x-scope"] == scope and "403" in operation["responses"]
        assert f"`{scope}`" in operation["description"]


async def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        code = await asyncio.to_thread(cli.main, list(args))
    except SystemExit as exc:  # argparse's refusals
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


async def test_cli_creates_keys_with_scopes(write_config, make_client, capsys) -> None:  # type: ignore[no-untyped-def]
    config = write_config()
    client = await make_client(config)
    base = ("--config", config.path, "api-key")
    code, out, err = await _cli(
        capsys,
        *base,
        "create",
        "--name",
        "ro",
        "--scope",
        "events:read",
        "--scope",
        "payments:read",
    )
    assert code == 0 and "scopes payments:read events:read" in err
    key = out.strip()
    code, out, _ = await _cli(capsys, *base, "create", "--name", "full")
    assert code == 0
    code, out, _ = await _cli(capsys, *base, "list", "--json")
    listed: dict[str, Any] = {k["name"]: k for k in json.loads(out)}
    assert listed["ro"]["scopes"] == ["payments:read", "events:read"]
    assert listed["full"]["scopes"] == list(SCOPES)
    code, out, _ = await _cli(capsys, *base, "list")
    assert "payments:read,events:read" in out and " all " in out

    resp = await client.post(
        "/v1/payments", json=PAYMENT, headers={"Authorization": f"Bearer {key}"}
    )
    assert resp.status == 403
    code, _, err = await _cli(capsys, *base, "create", "--name", "x", "--scope", "everything")
    assert code == 2 and "invalid choice" in err


async def test_keys_need_a_known_scope(pool) -> None:  # type: ignore[no-untyped-def]
    async with pool.acquire() as conn:
        with pytest.raises(ValueError, match="unknown scope payments:delete"):
            await apikeys.create_key(conn, "x", "default", ["payments:delete"])
        with pytest.raises(ValueError, match="at least one scope"):
            await apikeys.create_key(conn, "x", "default", [])
