"""/healthz and /readyz against the real database and Anvil. Readiness comes from what the
scanner and this process already know: a probe never calls the node."""

from __future__ import annotations

import asyncio
import contextlib

from ctripd.dev.devnet import free_port
from ctripd.http.keys import RPC, WATCHERS


async def test_healthz_and_readyz(write_config, make_client, anvil) -> None:  # type: ignore[no-untyped-def]
    client = await make_client(write_config())
    resp = await client.get("/healthz")
    assert resp.status == 200
    # The start set the chain's cursor from the node's head: ready before the first scan.
    resp = await client.get("/readyz")
    body = await resp.json()
    assert resp.status == 200, body
    assert body["checks"]["chains"] == {"anvil": "ok"}
    await client.server.app[WATCHERS]["anvil"].run_once()
    assert (await client.get("/readyz")).status == 200


async def test_readyz_waits_for_a_chain_never_reached(write_config, make_client, pool) -> None:  # type: ignore[no-untyped-def]
    dead = {
        "name": "dead",
        "chain_id": 31338,
        "rpc": [f"http://127.0.0.1:{free_port()}"],
        "native": {"symbol": "ETH", "decimals": 18},
        "treasury": "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
    }
    client = await make_client(write_config(chains=[dead]))
    resp = await client.get("/readyz")
    body = await resp.json()
    assert resp.status == 503
    assert body["checks"]["chains"]["dead"].startswith("error: cannot connect")
    # Another process may lead the chain: once its scans are recorded, this one is ready too.
    await pool.execute("UPDATE chains SET head = 7, scanned_block = 7, scanned_at = now()")
    for endpoint in client.server.app[RPC]["dead"].endpoints:
        endpoint.requests = 0  # as in a process that never asked the node itself
    assert (await client.get("/readyz")).status == 200


async def test_probes_never_call_the_node(write_config, make_client) -> None:  # type: ignore[no-untyped-def]
    """20 concurrent probes used to send 20 `eth_chainId` at top priority, ahead of the
    scanner's calls, and spend the provider's quota."""
    client = await make_client(write_config())
    await client.server.app[WATCHERS]["anvil"].run_once()
    (endpoint,) = client.server.app[RPC]["anvil"].endpoints
    before = endpoint.requests
    answers = await asyncio.gather(*(client.get("/readyz") for _ in range(20)))
    assert [a.status for a in answers] == [200] * 20
    assert endpoint.requests == before


async def test_readyz_fails_on_wrong_chain_id(write_config, make_client, anvil) -> None:  # type: ignore[no-untyped-def]
    chain = {
        "name": "wrong",
        "chain_id": 1,
        "rpc": [anvil.url],
        "native": {"symbol": "ETH", "decimals": 18},
        "treasury": "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
    }
    client = await make_client(write_config(chains=[chain]))
    with contextlib.suppress(Exception):  # the scan fails: the node is another chain
        await client.server.app[WATCHERS]["wrong"].run_once()
    resp = await client.get("/readyz")
    body = await resp.json()
    assert resp.status == 503
    assert "chain id 31337, expected 1" in body["checks"]["chains"]["wrong"]
