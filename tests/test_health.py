"""/healthz and /readyz against the real database and Anvil."""

from __future__ import annotations


async def test_healthz_and_readyz(write_config, make_client) -> None:  # type: ignore[no-untyped-def]
    client = await make_client(write_config())
    resp = await client.get("/healthz")
    assert resp.status == 200
    resp = await client.get("/readyz")
    body = await resp.json()
    assert resp.status == 200, body
    assert body["checks"]["chains"] == {"anvil": "ok"}


async def test_readyz_fails_on_wrong_chain_id(write_config, make_client, anvil) -> None:  # type: ignore[no-untyped-def]
    chain = {
        "name": "wrong",
        "chain_id": 1,
        "rpc": [anvil.url],
        "native": {"symbol": "ETH", "decimals": 18},
        "treasury": "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
    }
    client = await make_client(write_config(chains=[chain]))
    resp = await client.get("/readyz")
    body = await resp.json()
    assert resp.status == 503
    assert "chain id 31337, expected 1" in body["checks"]["chains"]["wrong"]
