"""Several ctripd processes on one database, and chains failing independently: one scanner per
chain (advisory lock), takeover when the holder's connection dies, no duplicate transfers or
events, a dead chain never stalling another chain or the API; `GET /v1/chains` and `/readyz`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from test_api_payments import with_webhook_url
from test_rpc import Proxy
from test_scanner_support import (
    ETH,
    Rig,
    chain_entry,
    event_types,
    insert_payment,
    mine,
    payment,
    send_native,
    transfers,
)

from ctripd.chain.rpc import RpcUnavailableError
from ctripd.dev.devnet import AnvilProcess, start_anvil
from ctripd.http import auth as apikeys
from ctripd.http.keys import WATCHERS


@pytest.fixture(scope="module")
def second_anvil() -> Iterator[AnvilProcess]:
    """Another chain (id 31338) for this module, on this test worker."""
    node = start_anvil(chain_id=31338)
    yield node
    node.stop()


@pytest.fixture
async def rigs() -> AsyncIterator[list[Rig]]:
    """Two independent "processes": each its own HTTP session, RPC client and database pool."""
    made = [Rig(), Rig()]
    yield made
    for rig in made:
        await rig.close()


async def bearer(pool) -> dict[str, str]:  # type: ignore[no-untyped-def]
    async with pool.acquire() as conn:
        key, _ = await apikeys.create_key(conn, "test", "default")
    return {"Authorization": f"Bearer {key}"}


async def test_one_scanner_per_chain_and_takeover(write_config, pool, anvil, rigs) -> None:  # type: ignore[no-untyped-def]
    config = write_config()
    a, b = (rig.watcher(config) for rig in rigs)
    assert await a.run_once() == 1
    assert await b.run_once() == 0  # a holds the lock
    assert a.state.leader and not b.state.leader

    paid = []
    for _ in range(3):
        pid, address = await insert_payment(pool, config, ETH)
        send_native(anvil, address, ETH)
        paid.append(pid)
        results = await asyncio.gather(a.run_once(), b.run_once())
        assert results[1] == 0 and results[0] >= 1

    # The leader's database session dies: its lock goes with it, and b takes over.
    assert a._conn is not None
    await pool.execute("SELECT pg_terminate_backend($1)", a._conn.get_server_pid())
    pid, address = await insert_payment(pool, config, ETH)
    send_native(anvil, address, ETH)
    paid.append(pid)
    mine(anvil)
    assert await b.run_once() == 2
    assert b.state.leader
    assert await a.run_once() == 0  # a notices its dead session, and b leads now
    assert not a.state.leader

    for pid in paid:
        assert (await payment(pool, pid))["status"] == "confirmed"
        assert len(await transfers(pool, pid)) == 1
        assert await event_types(pool, pid) == [
            "payment.transfer_received",
            "payment.detected",
            "payment.confirmed",
        ]


async def test_two_app_instances_share_the_work(
    write_config, make_client, pool, anvil, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    config = with_webhook_url(write_config, tmp_path)  # its deliveries are the events read here
    first, second = await make_client(config), await make_client(config)
    headers = await bearer(pool)
    resp = await first.post(
        "/v1/payments", json={"chain": "anvil", "asset": "ETH", "amount": "0.5"}, headers=headers
    )
    assert resp.status == 201, await resp.text()
    created = await resp.json()

    watchers = [c.server.app[WATCHERS]["anvil"] for c in (first, second)]
    await asyncio.gather(*(w.run_once() for w in watchers))
    send_native(anvil, created["address"], ETH // 2)
    for _ in range(3):
        await asyncio.gather(*(w.run_once() for w in watchers))
        mine(anvil)
    assert sorted(w.state.leader for w in watchers) == [False, True]

    resp = await second.get(f"/v1/payments/{created['id']}", headers=headers)
    body = await resp.json()
    assert body["status"] == "confirmed" and len(body["transfers"]) == 1
    assert await event_types(pool, created["id"]) == [
        "payment.transfer_received",
        "payment.detected",
        "payment.confirmed",
    ]
    views = []
    for client in (first, second):
        resp = await client.get("/v1/chains", headers=headers)
        assert resp.status == 200
        (chain,) = (await resp.json())["data"]
        views.append(chain)
    assert views[0]["scanned_block"] == views[1]["scanned_block"] == views[0]["head"]
    assert sorted(v["scanner"]["leader"] for v in views) == [False, True]


async def test_dead_chain_never_stalls_another_or_the_api(
    write_config, make_client, pool, anvil, second_anvil
) -> None:  # type: ignore[no-untyped-def]
    proxy = Proxy(second_anvil.url)
    await proxy.start()
    try:
        config = write_config(
            chains=[
                chain_entry(anvil),
                chain_entry(second_anvil, name="beta", chain_id=31338, rpc=[proxy.url]),
            ]
        )
        client = await make_client(config)
        headers = await bearer(pool)
        watchers = client.server.app[WATCHERS]
        await asyncio.gather(*(w.run_once() for w in watchers.values()))
        pid, address = await insert_payment(pool, config, ETH)

        # beta's only RPC URL stops answering: its watcher hangs on a request meanwhile.
        proxy.hold = asyncio.Event()
        beta = asyncio.create_task(watchers["beta"].run_once())
        send_native(anvil, address, ETH)
        mine(anvil)
        assert await watchers["anvil"].run_once() == 2
        resp = await client.get("/v1/chains", headers=headers)
        assert not beta.done()  # still waiting on its node while anvil and the API carry on
        proxy.down = True  # then the node fails outright, through every retry
        proxy.hold.set()
        with pytest.raises(RpcUnavailableError):
            await beta

        assert (await payment(pool, pid))["status"] == "confirmed"
        assert resp.status == 200
        chains = {c["name"]: c for c in (await resp.json())["data"]}
        assert chains["anvil"]["lag"] == 0 and chains["anvil"]["rpc"][0]["ok"]
        assert chains["anvil"]["scanner"]["watched_addresses"] == 1
        resp = await client.get("/v1/chains", headers=headers)
        beta_view = {c["name"]: c for c in (await resp.json())["data"]}["beta"]
        assert beta_view["rpc"][0]["ok"] is False
        assert beta_view["rpc"][0]["last_error"] == "HTTP 503"
        assert beta_view["scanner"]["last_error"].startswith("RpcUnavailableError")

        resp = await client.get("/readyz")
        body = await resp.json()
        assert resp.status == 503
        assert body["checks"]["chains"]["anvil"] == "ok"
        assert body["checks"]["chains"]["beta"].startswith("error")
    finally:
        await proxy.close()


async def test_chains_endpoint_and_readyz_lag(write_config, make_client, pool, anvil) -> None:  # type: ignore[no-untyped-def]
    config = write_config(toml={"server": {"max_lag_blocks": 5}})
    client = await make_client(config)
    resp = await client.get("/v1/chains")
    assert resp.status == 401  # needs an API key
    headers = await bearer(pool)
    await client.server.app[WATCHERS]["anvil"].run_once()
    resp = await client.get("/v1/chains", headers=headers)
    (chain,) = (await resp.json())["data"]
    expected: dict[str, Any] = {"name": "anvil", "chain_id": 31337, "lag": 0, "confirmations": 2}
    assert {k: chain[k] for k in expected} == expected
    assert chain["head"] == chain["scanned_block"] == int(anvil.rpc("eth_blockNumber"), 16)
    (endpoint,) = chain["rpc"]
    assert endpoint["url"] == anvil.url and endpoint["ok"] and endpoint["requests"] >= 1
    assert (await client.get("/readyz")).status == 200

    # The head runs ahead of the scanner by more than the bound.
    await pool.execute("UPDATE chains SET head = scanned_block + 6")
    resp = await client.get("/readyz")
    body = await resp.json()
    assert resp.status == 503
    assert "6 blocks behind" in body["checks"]["chains"]["anvil"]
