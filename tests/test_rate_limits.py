"""Per-key rate limits: a token bucket per key (configured default, per-key override), 429 with
`Retry-After`, and the IETF `RateLimit`/`RateLimit-Policy` fields on every answer."""

from __future__ import annotations

import asyncpg

from ctripd.http import auth as apikeys
from ctripd.http.ratelimit import RateLimits


async def key(pool: asyncpg.Pool, rate_limit: int | None = None) -> dict[str, str]:
    async with pool.acquire() as conn:
        secret, _ = await apikeys.create_key(conn, "k", "default", rate_limit=rate_limit)
    return {"Authorization": f"Bearer {secret}"}


async def test_default_limit_per_key_with_headers(pool, write_config, make_client) -> None:  # type: ignore[no-untyped-def]
    config = write_config(toml={"server": {"rate_limit": 3, "rate_limit_window": 60}})
    client = await make_client(config)
    first, second = await key(pool), await key(pool)
    remaining = []
    for _ in range(3):
        resp = await client.get("/v1/payments", headers=first)
        assert resp.status == 200
        assert resp.headers["RateLimit-Policy"] == '"default";q=3;w=60'
        remaining.append(resp.headers["RateLimit"])
    assert [r.split(";")[1] for r in remaining] == ["r=2", "r=1", "r=0"]

    resp = await client.get("/v1/payments", headers=first)
    assert resp.status == 429
    assert resp.content_type == "application/problem+json"
    problem = await resp.json()
    assert (
        problem["type"].endswith(":too-many-requests")
        and "3 requests per 60 s" in (problem["detail"])
    )
    # One request comes back every 20 s.
    assert resp.headers["Retry-After"] == "20"
    assert resp.headers["RateLimit"].startswith('"default";r=0;t=')
    assert resp.headers["RateLimit-Policy"] == '"default";q=3;w=60'

    # Each key has its own bucket; errors from the route carry the fields too.
    resp = await client.get("/v1/payments/pay_" + "0" * 32, headers=second)
    assert resp.status == 404 and resp.headers["RateLimit"].startswith('"default";r=2;')
    # Public routes are not limited.
    assert (await client.get("/healthz")).status == 200


async def test_a_keys_own_limit_overrides_the_default(pool, write_config, make_client) -> None:  # type: ignore[no-untyped-def]
    client = await make_client(write_config(toml={"server": {"rate_limit": 3}}))
    strict, unlimited = await key(pool, rate_limit=1), await key(pool, rate_limit=0)
    assert (await client.get("/v1/payments", headers=strict)).status == 200
    resp = await client.get("/v1/payments", headers=strict)
    assert resp.status == 429 and resp.headers["Retry-After"] == "60"
    for _ in range(10):
        resp = await client.get("/v1/payments", headers=unlimited)
        assert resp.status == 200 and "RateLimit" not in resp.headers


async def test_no_limit_by_default(pool, write_config, make_client) -> None:  # type: ignore[no-untyped-def]
    client = await make_client(write_config())
    headers = await key(pool)
    for _ in range(20):
        resp = await client.get("/v1/payments", headers=headers)
        assert resp.status == 200 and "RateLimit-Policy" not in resp.headers


def test_bucket_refills_evenly_over_the_window() -> None:
    now = [1000.0]
    limits = RateLimits(clock=lambda: now[0])
    assert [limits.take(1, 2, 10).allowed for _ in range(3)] == [True, True, False]
    now[0] += 4.9
    refused = limits.take(1, 2, 10)
    assert not refused.allowed and refused.headers["Retry-After"] == "1"
    now[0] += 0.1  # 5 s: one request back
    allowed = limits.take(1, 2, 10)
    assert allowed.allowed and allowed.headers["RateLimit"] == '"default";r=0;t=10'
    now[0] += 100  # never more than the quota
    assert [limits.take(1, 2, 10).allowed for _ in range(3)] == [True, True, False]
