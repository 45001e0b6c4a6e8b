"""A chain's scan cursor exists before the API takes payments on it. The cursor used to start
at the head of the first *successful* scan while the API already accepted payments, so a payment
paid in between was never seen."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
from structlog.testing import capture_logs

from ctripd.dev.devnet import AnvilProcess, free_port
from ctripd.http import app as app_module
from ctripd.http import auth as apikeys
from ctripd.http.keys import WATCHERS

TREASURY = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
PAYER = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"


async def headers(pool: asyncpg.Pool) -> dict[str, str]:
    async with pool.acquire() as conn:
        key, _ = await apikeys.create_key(conn, "t", "default")
    return {"Authorization": f"Bearer {key}"}


def chain(name: str, chain_id: int, url: str) -> dict[str, Any]:
    return {
        "name": name,
        "chain_id": chain_id,
        "rpc": [url],
        "confirmations": 1,
        "native": {"symbol": "ETH", "decimals": 18},
        "treasury": TREASURY,
    }


async def test_a_payment_paid_before_the_first_scan_is_seen(  # type: ignore[no-untyped-def]
    write_config, make_client, pool: asyncpg.Pool, anvil: AnvilProcess
) -> None:
    client = await make_client(write_config(chains=[chain("anvil", 31337, anvil.url)]))
    head = int(anvil.rpc("eth_blockNumber"), 16)
    assert await pool.fetchval("SELECT scanned_block FROM chains") == head - 1
    body = {"chain": "anvil", "asset": "ETH", "amount": "0.01"}
    resp = await client.post("/v1/payments", json=body, headers=await headers(pool))
    payment = await resp.json()
    assert resp.status == 201, payment
    tx = {"from": PAYER, "to": payment["address"], "value": hex(10**16)}
    anvil.receipt(anvil.rpc("eth_sendTransaction", [tx]))
    anvil.rpc("evm_mine")  # the first scan comes a block later still
    await client.server.app[WATCHERS]["anvil"].run_once()
    status = await pool.fetchval("SELECT status FROM payments WHERE id = $1", payment["id"])
    assert status == "confirmed"


async def test_no_payments_on_a_chain_whose_cursor_could_not_start(  # type: ignore[no-untyped-def]
    write_config, make_client, pool: asyncpg.Pool, anvil: AnvilProcess
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    config = write_config(chains=[chain("anvil", 31337, anvil.url), chain("dead", 31338, dead)])
    client = await make_client(config)
    auth = await headers(pool)
    body = {"chain": "dead", "asset": "ETH", "amount": "0.01"}
    resp = await client.post("/v1/payments", json=body, headers=auth)
    problem = await resp.json()
    assert resp.status == 503 and resp.headers["Retry-After"] == "5"
    assert resp.content_type == "application/problem+json"
    assert problem["detail"].startswith("chain dead is not watched yet")
    ok = await client.post("/v1/payments", json={**body, "chain": "anvil"}, headers=auth)
    assert ok.status == 201


async def test_a_node_that_never_answers_does_not_hold_the_start_back(  # type: ignore[no-untyped-def]
    write_config, make_client, pool: asyncpg.Pool, anvil: AnvilProcess, monkeypatch
) -> None:
    """Start-up checks ran chain after chain, each as long as its retries over a provider that
    swallows requests: with systemd waiting for READY=1, a restart loop."""

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # never answers; the client hangs up

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    monkeypatch.setattr(app_module, "START_CHECKS_DEADLINE", 0.5)
    black_hole = {**chain("hole", 31338, f"http://127.0.0.1:{port}"), "rpc_timeout": 60}
    config = write_config(chains=[chain("anvil", 31337, anvil.url), black_hole])
    try:
        with capture_logs() as logs:
            started = time.monotonic()
            client = await asyncio.wait_for(make_client(config), 20)
            assert time.monotonic() - started < 20
    finally:
        server.close()
    timed_out = [e for e in logs if e["event"] == "chain.start_checks_timed_out"]
    assert [e["chain"] for e in timed_out] == ["hole"]
    cursors = dict(await pool.fetch("SELECT name, scanned_block FROM chains"))
    assert cursors["anvil"] is not None and cursors["hole"] is None
    body = {"chain": "hole", "asset": "ETH", "amount": "0.01"}
    resp = await client.post("/v1/payments", json=body, headers=await headers(pool))
    assert resp.status == 503
