"""`/metrics`: the Prometheus exposition read from the real database, RPC clients and watcher."""

from __future__ import annotations

import importlib.metadata
from typing import Any

import asyncpg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_checkout import open_shop
from test_scanner_support import TREASURY, cancel, head, mine

from ctripd.http.auth import create_key, revoke_key
from ctripd.http.keys import POOL, RPC, WATCHERS

STATUSES = ("pending", "detected", "confirmed", "expired", "canceled")
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(client: Any, headers: dict[str, str] | None = None) -> Samples:
    resp = await client.get("/metrics", headers=headers or {})
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples: Samples = {}
    for family in text_string_to_metric_families(await resp.text()):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


async def insert_attempt(pool: asyncpg.Pool, delivery: str, latency_ms: int, age: int) -> None:
    """A delivery attempt that started `age` seconds ago."""
    await pool.execute(
        "INSERT INTO delivery_attempts (delivery_id, attempted_at, url, http_status, latency_ms) "
        "VALUES ($1, now() - make_interval(secs => $3), 'http://127.0.0.1/hook', 200, $2)",
        delivery,
        latency_ms,
        age,
    )


async def insert_sweep(pool: asyncpg.Pool, kind: str, status: str) -> None:
    await pool.execute(
        "INSERT INTO sweeps (chain, kind, from_address, from_index, to_address, amount, status) "
        "VALUES ('anvil', $1, '0x' || repeat('1', 40), 1000, $2, 1, $3)",
        kind,
        TREASURY,
        status,
    )


async def test_series_come_from_the_database_and_this_process(  # type: ignore[no-untyped-def]
    pool, write_config, make_client, anvil
) -> None:
    config = write_config(toml={"webhooks": {"allow_private_targets": True}})
    shop = await open_shop(pool, config, make_client)
    # The shop's events are deliveries to its endpoint (never reached here).
    resp = await shop.client.post(
        "/v1/webhook-endpoints", json={"url": "http://127.0.0.1:9/hook"}, headers=shop.key
    )
    assert resp.status == 201
    await shop.watcher.run_once()
    kept = await shop.create()
    canceled = await shop.create()
    assert (await cancel(shop.client, canceled["id"], shop.key)).ok
    delivery = await pool.fetchval("SELECT id FROM deliveries WHERE payment_id = $1", kept["id"])
    await pool.execute("UPDATE deliveries SET status = 'failed' WHERE id = $1", delivery)
    for latency_ms, age in ((30, 3600), (100, 0), (101, 0), (20_000, 3600), (45_000, 0)):
        await insert_attempt(pool, delivery, latency_ms, age)
    for kind, status in [("native", "confirmed"), ("native", "confirmed"), ("token", "failed")]:
        await insert_sweep(pool, kind, status)

    s = await scrape(shop.client)
    version = importlib.metadata.version("ctripd")
    assert [v for (name, labels), v in s.items() if name == "ctripd_build_info"] == [1.0]
    assert ("version", version) in next(lb for (n, lb) in s if n == "ctripd_build_info")
    assert value(s, "ctripd_database_up") == 1
    block = head(anvil)
    assert value(s, "ctripd_chain_head_block", chain="anvil") == block
    assert value(s, "ctripd_chain_scanned_block", chain="anvil") == block
    assert value(s, "ctripd_chain_lag_blocks", chain="anvil") == 0
    assert value(s, "ctripd_chain_leader", chain="anvil") == 1
    rpc = {"chain": "anvil", "url": anvil.url, "position": "0"}
    assert value(s, "ctripd_rpc_requests_total", **rpc) >= 2
    assert value(s, "ctripd_rpc_errors_total", **rpc) == 0
    assert value(s, "ctripd_rpc_up", **rpc) == 1
    assert 0 < value(s, "ctripd_rpc_latency_seconds", **rpc) < 10

    payments = {st: value(s, "ctripd_payments", chain="anvil", status=st) for st in STATUSES}
    assert payments == {"pending": 1, "detected": 0, "confirmed": 0, "expired": 0, "canceled": 1}
    # Three events (two created, one canceled), one of them failed.
    assert value(s, "ctripd_webhook_events", status="pending") == 2
    assert value(s, "ctripd_webhook_events", status="failed") == 1
    assert value(s, "ctripd_webhook_oldest_pending_seconds") >= 0
    buckets = {
        le: value(s, "ctripd_webhook_delivery_latency_seconds_bucket", le=le)
        for le in ("0.05", "0.1", "0.25", "10.0", "30.0", "+Inf")
    }
    assert buckets == {"0.05": 1, "0.1": 2, "0.25": 3, "10.0": 3, "30.0": 4, "+Inf": 5}
    assert value(s, "ctripd_webhook_delivery_latency_seconds_count") == 5
    assert value(s, "ctripd_webhook_delivery_latency_seconds_sum") == pytest.approx(65.231)
    histogram = {k: v for k, v in s.items() if k[0].startswith("ctripd_webhook_delivery")}
    again = await scrape(shop.client)
    assert {k: v for k, v in again.items() if k in histogram} == histogram, "nothing twice"
    await insert_attempt(pool, delivery, 200, 0)
    again = await scrape(shop.client)
    assert value(again, "ctripd_webhook_delivery_latency_seconds_count") == 6
    assert value(again, "ctripd_webhook_delivery_latency_seconds_bucket", le="0.25") == 4
    sweeps = {
        (kind, st): value(s, "ctripd_sweeps", chain="anvil", kind=kind, status=st)
        for kind in ("native", "token")
        for st in ("confirmed", "failed")
    }
    assert sweeps == {
        ("native", "confirmed"): 2,
        ("native", "failed"): 0,
        ("token", "confirmed"): 0,
        ("token", "failed"): 1,
    }
    assert value(s, "process_resident_memory_bytes") > 0

    # The chain series move with the chain.
    mine(anvil, 3)
    await shop.watcher.run_once()
    later = await scrape(shop.client)
    assert value(later, "ctripd_chain_head_block", chain="anvil") == block + 3
    assert value(later, "ctripd_chain_scanned_block", chain="anvil") == block + 3
    assert value(later, "ctripd_rpc_requests_total", **rpc) > value(
        s, "ctripd_rpc_requests_total", **rpc
    )


async def test_each_app_has_its_own_registry(pool, write_config, make_client) -> None:  # type: ignore[no-untyped-def]
    config = write_config()
    busy = await make_client(config)
    idle = await make_client(config)
    await busy.server.app[WATCHERS]["anvil"].run_once()
    busy_rpc = await scrape(busy)
    idle_rpc = await scrape(idle)
    url = config.chains[0].rpc[0]
    rpc = {"chain": "anvil", "url": url, "position": "0"}
    assert value(busy_rpc, "ctripd_rpc_requests_total", **rpc) > 0
    assert value(idle_rpc, "ctripd_rpc_requests_total", **rpc) == 0
    assert value(busy_rpc, "ctripd_chain_leader", chain="anvil") == 1
    assert value(idle_rpc, "ctripd_chain_leader", chain="anvil") == 0
    # The database-wide series are the same for both.
    assert value(idle_rpc, "ctripd_chain_scanned_block", chain="anvil") == value(
        busy_rpc, "ctripd_chain_scanned_block", chain="anvil"
    )


async def test_private_metrics_need_a_live_api_key(pool, write_config, make_client) -> None:  # type: ignore[no-untyped-def]
    client = await make_client(write_config(toml={"server": {"metrics_public": False}}))
    async with pool.acquire() as conn:
        key, row = await create_key(conn, "prometheus", "default")  # type: ignore[arg-type]
    for headers in (
        {},
        {"Authorization": "Bearer"},
        {"Authorization": f"Basic {key}"},
        {"Authorization": "Bearer ctk_" + "x" * 43},
    ):
        resp = await client.get("/metrics", headers=headers)
        assert resp.status == 401, headers
        assert resp.content_type == "application/problem+json"
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert "ctripd_" not in await resp.text()
    s = await scrape(client, {"Authorization": f"Bearer {key}"})
    assert value(s, "ctripd_database_up") == 1
    # The figures span every merchant: another merchant's key may not read them.
    async with pool.acquire() as conn:
        await conn.execute("INSERT INTO merchants (id, name) VALUES ('shop-b', 'shop-b')")
        other, _ = await create_key(conn, "shop-b", "shop-b")  # type: ignore[arg-type]
    resp = await client.get("/metrics", headers={"Authorization": f"Bearer {other}"})
    assert resp.status == 403 and "default" in (await resp.json())["detail"]
    assert "ctripd_" not in await resp.text()
    async with pool.acquire() as conn:
        await revoke_key(conn, row["id"])  # type: ignore[arg-type]
    resp = await client.get("/metrics", headers={"Authorization": f"Bearer {key}"})
    assert resp.status == 401


async def test_public_metrics_need_no_key(write_config, make_client) -> None:  # type: ignore[no-untyped-def]
    client = await make_client(write_config(toml={"server": {"metrics_public": True}}))
    assert value(await scrape(client), "ctripd_database_up") == 1


async def test_openmetrics_when_asked(write_config, make_client) -> None:  # type: ignore[no-untyped-def]
    client = await make_client(write_config())
    resp = await client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
    text = await resp.text()
    assert text.rstrip().endswith("# EOF") and "ctripd_chain_leader" in text


async def test_database_down_still_answers(write_config, make_client) -> None:  # type: ignore[no-untyped-def]
    """Without Postgres the scrape still works: database_up 0 and this process's own series."""
    config = write_config()
    client = await make_client(config)
    await client.server.app[POOL].close()
    s = await scrape(client)
    assert value(s, "ctripd_database_up") == 0
    rpc = {"chain": "anvil", "url": config.chains[0].rpc[0], "position": "0"}
    # This process's own count: the start's one request (the chain's cursor was set from it).
    (endpoint,) = client.server.app[RPC]["anvil"].endpoints
    assert value(s, "ctripd_rpc_requests_total", **rpc) == endpoint.requests == 1
    assert value(s, "ctripd_chain_leader", chain="anvil") == 0
    assert not any(name in DATABASE_SERIES for name, _ in s)


DATABASE_SERIES = {
    "ctripd_chain_head_block",
    "ctripd_payments",
    "ctripd_webhook_events",
    "ctripd_webhook_delivery_latency_seconds_count",
    "ctripd_sweeps",
}
