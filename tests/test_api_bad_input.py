"""Bad input: each case answers its 4xx as problem+json, never 500, and stores nothing."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import pytest

from ctripd.http import auth as apikeys

GOOD: dict[str, Any] = {"chain": "anvil", "asset": "ETH", "amount": "1.5"}
MAX_BODY = 8192  # [server] max_body_bytes in these tests


async def _setup(write_config, make_client, pool):  # type: ignore[no-untyped-def]
    client = await make_client(write_config(toml={"server": {"max_body_bytes": MAX_BODY}}))
    async with pool.acquire() as conn:
        key, _ = await apikeys.create_key(conn, "test", "default")
    return client, {"Authorization": f"Bearer {key}"}


async def _assert_problem(resp, status: int, field: str | None) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    text = await resp.text()
    assert resp.status == status, text
    assert resp.content_type == "application/problem+json", text
    problem = json.loads(text)
    assert {"type", "title", "status", "detail"} <= set(problem)
    assert problem["status"] == status and problem["type"].startswith("tag:ctripd,2026:problem:")
    assert problem.get("field") == field, problem
    return problem


async def _assert_nothing_stored(pool: asyncpg.Pool) -> None:
    assert await pool.fetchval("SELECT count(*) FROM payments") == 0
    assert await pool.fetchval("SELECT count(*) FROM events") == 0


BAD_BODIES: list[tuple[str, Any, str | None]] = [
    # (case, body or fields merged into GOOD, offending field)
    ("unknown chain", {"chain": "mainnet"}, "chain"),
    ("chain not a string", {"chain": 1}, "chain"),
    ("unknown asset", {"asset": "DOGE"}, "asset"),
    ("asset of another case", {"asset": "eth"}, "asset"),
    ("missing amount", {"amount": None}, "amount"),
    ("amount zero", {"amount": "0"}, "amount"),
    ("amount zero with decimals", {"amount": "0.000"}, "amount"),
    ("amount negative", {"amount": "-1"}, "amount"),
    ("amount with a plus sign", {"amount": "+1"}, "amount"),
    ("amount with too many decimals", {"amount": "0.0000000000000000001"}, "amount"),
    ("amount in exponent notation", {"amount": "1e18"}, "amount"),
    ("amount as a JSON integer", {"amount": 1}, "amount"),
    ("amount as a JSON float", {"amount": 1.5}, "amount"),
    ("amount as a boolean", {"amount": True}, "amount"),
    ("amount above 2^256-1 base units", {"amount": str(2**256 // 10**18 + 1)}, "amount"),
    ("amount with leading zeros", {"amount": "01.5"}, "amount"),
    ("amount with spaces", {"amount": " 1.5"}, "amount"),
    ("amount with a trailing newline", {"amount": "1.5\n"}, "amount"),
    ("amount with non-ASCII digits", {"amount": "١٫٥"}, "amount"),
    ("amount of 5000 digits", {"amount": "9" * 5000}, "amount"),
    ("amount empty", {"amount": ""}, "amount"),
    ("metadata a list", {"metadata": [1, 2]}, "metadata"),
    ("metadata a string", {"metadata": "x"}, "metadata"),
    ("metadata over 4 KiB", {"metadata": {"k": "x" * 4100}}, "metadata"),
    (
        "metadata nested too deep",
        {"metadata": json.loads('{"a":' * 20 + "1" + "}" * 20)},
        "metadata",
    ),
    ("metadata with a NUL", {"metadata": {"k": "a\x00b"}}, "metadata.k"),
    ("metadata key with a NUL", {"metadata": {"k\x00": 1}}, "metadata"),
    ("metadata integer over 64 bits", {"metadata": {"n": 2**64}}, "metadata.n"),
    ("order_id over 255 characters", {"order_id": "x" * 256}, "order_id"),
    ("order_id empty", {"order_id": ""}, "order_id"),
    ("order_id a number", {"order_id": 5}, "order_id"),
    ("order_id with a NUL", {"order_id": "a\x00"}, "order_id"),
    ("expires_in below the minimum", {"expires_in": 59}, "expires_in"),
    ("expires_in above the maximum", {"expires_in": 30 * 86400 + 1}, "expires_in"),
    ("expires_in negative", {"expires_in": -5}, "expires_in"),
    ("expires_in a string", {"expires_in": "3600"}, "expires_in"),
    ("expires_in a float", {"expires_in": 3600.5}, "expires_in"),
    ("expires_in a boolean", {"expires_in": True}, "expires_in"),
    ("unknown field", {"amount_base_units": "1"}, "amount_base_units"),
    ("body a list", ["anvil", "ETH", "1"], None),
    ("body a string", "hello", None),
    ("body null", None, None),
]


@pytest.mark.parametrize(
    ("body", "field"), [(b, f) for _, b, f in BAD_BODIES], ids=[c for c, _, _ in BAD_BODIES]
)
async def test_invalid_field(body: Any, field: str | None, write_config, make_client, pool) -> None:  # type: ignore[no-untyped-def]
    client, headers = await _setup(write_config, make_client, pool)
    if isinstance(body, dict):
        body = {k: v for k, v in {**GOOD, **body}.items() if v is not None}
    resp = await client.post(
        "/v1/payments",
        data=json.dumps(body),
        headers={**headers, "Content-Type": "application/json"},
    )
    problem = await _assert_problem(resp, 422, field)
    assert problem["type"].endswith("validation-error")
    await _assert_nothing_stored(pool)


BAD_JSON: list[tuple[str, bytes]] = [
    ("truncated", b'{"chain": "anvil", "asset": "ETH", "amount": "1"'),
    ("empty", b""),
    ("not JSON", b"chain=anvil&asset=ETH"),
    ("NaN", b'{"chain": "anvil", "asset": "ETH", "amount": "1", "metadata": {"x": NaN}}'),
    (
        "Infinity",
        b'{"chain": "anvil", "asset": "ETH", "amount": "1", "metadata": {"x": -Infinity}}',
    ),
    (
        "number overflowing a double",
        b'{"chain":"anvil","asset":"ETH","amount":"1","metadata":{"x":1e400}}',
    ),
    ("invalid UTF-8", b'{"chain": "anvil", "asset": "ETH", "amount": "\xff"}'),
]


@pytest.mark.parametrize("raw", [r for _, r in BAD_JSON], ids=[c for c, _ in BAD_JSON])
async def test_malformed_json(raw: bytes, write_config, make_client, pool) -> None:  # type: ignore[no-untyped-def]
    client, headers = await _setup(write_config, make_client, pool)
    resp = await client.post(
        "/v1/payments", data=raw, headers={**headers, "Content-Type": "application/json"}
    )
    problem = await _assert_problem(resp, 400, None)
    assert problem["detail"].startswith("malformed JSON")
    await _assert_nothing_stored(pool)


async def test_deep_nesting_is_refused(write_config, make_client, pool) -> None:  # type: ignore[no-untyped-def]
    """As deep as the body limit allows: a 400 if the parser gives up (its limit depends on
    the process's recursion limit, which eth-account's py_ecc raises), else a 422; never a 500."""
    client, headers = await _setup(write_config, make_client, pool)
    depth = MAX_BODY // 2 - 60
    raw = b'{"chain":"anvil","asset":"ETH","amount":"1","metadata":' + b'{"a":' * (depth // 5)
    raw += b"1" + b"}" * (depth // 5) + b"}"
    assert len(raw) <= MAX_BODY
    resp = await client.post(
        "/v1/payments", data=raw, headers={**headers, "Content-Type": "application/json"}
    )
    assert resp.status in (400, 422)
    await _assert_problem(resp, resp.status, "metadata" if resp.status == 422 else None)
    await _assert_nothing_stored(pool)


async def test_lone_surrogate_is_refused(write_config, make_client, pool) -> None:  # type: ignore[no-untyped-def]
    client, headers = await _setup(write_config, make_client, pool)
    raw = b'{"chain": "anvil", "asset": "ETH", "amount": "1", "order_id": "\\ud800"}'
    resp = await client.post(
        "/v1/payments", data=raw, headers={**headers, "Content-Type": "application/json"}
    )
    await _assert_problem(resp, 422, "order_id")
    await _assert_nothing_stored(pool)


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", None]
)
async def test_wrong_content_type(
    content_type: str | None, write_config, make_client, pool
) -> None:  # type: ignore[no-untyped-def]
    client, headers = await _setup(write_config, make_client, pool)
    if content_type is not None:
        headers["Content-Type"] = content_type
    resp = await client.post("/v1/payments", data=json.dumps(GOOD).encode(), headers=headers)
    await _assert_problem(resp, 415, None)
    await _assert_nothing_stored(pool)


async def test_json_content_type_with_charset_is_fine(write_config, make_client, pool) -> None:  # type: ignore[no-untyped-def]
    client, headers = await _setup(write_config, make_client, pool)
    headers["Content-Type"] = "application/json; charset=utf-8"
    resp = await client.post("/v1/payments", data=json.dumps(GOOD).encode(), headers=headers)
    assert resp.status == 201


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_body_over_the_limit(chunked: bool, write_config, make_client, pool) -> None:  # type: ignore[no-untyped-def]
    client, headers = await _setup(write_config, make_client, pool)
    raw = json.dumps({**GOOD, "metadata": {"pad": "x" * MAX_BODY}}).encode()

    async def body():  # type: ignore[no-untyped-def]
        for i in range(0, len(raw), 512):
            yield raw[i : i + 512]

    resp = await client.post(
        "/v1/payments",
        data=body() if chunked else raw,
        headers={**headers, "Content-Type": "application/json"},
    )
    problem = await _assert_problem(resp, 413, None)
    assert str(MAX_BODY) in problem["detail"]
    await _assert_nothing_stored(pool)


@pytest.mark.parametrize(
    "key", ["x" * 256, "tab\there", ""], ids=["too long", "control char", "empty"]
)
async def test_bad_idempotency_key(key: str, write_config, make_client, pool) -> None:  # type: ignore[no-untyped-def]
    client, headers = await _setup(write_config, make_client, pool)
    resp = await client.post("/v1/payments", json=GOOD, headers={**headers, "Idempotency-Key": key})
    await _assert_problem(resp, 400, "Idempotency-Key")
    await _assert_nothing_stored(pool)


BAD_QUERIES: list[tuple[str, str]] = [
    ("status=paid", "status"),
    ("status=", "status"),
    ("chain=mainnet", "chain"),
    ("limit=0", "limit"),
    ("limit=101", "limit"),
    ("limit=-1", "limit"),
    ("limit=ten", "limit"),
    ("limit=%D9%A1", "limit"),  # a non-ASCII digit
    ("order_id=" + "x" * 256, "order_id"),
    ("order_id=a%00b", "order_id"),
    ("status=pending&status=expired", "status"),
    ("foo=1", "foo"),
    ("cursor=garbage", "cursor"),
    ("cursor=", "cursor"),
    ("cursor=a.b.c", "cursor"),
    ("cursor=%00", "cursor"),
]


@pytest.mark.parametrize(("query", "field"), BAD_QUERIES, ids=[q for q, _ in BAD_QUERIES])
async def test_bad_list_query(query: str, field: str, write_config, make_client, pool) -> None:  # type: ignore[no-untyped-def]
    client, headers = await _setup(write_config, make_client, pool)
    resp = await client.get(f"/v1/payments?{query}", headers=headers)
    await _assert_problem(resp, 400, field)


async def test_tampered_cursor(write_config, make_client, pool) -> None:  # type: ignore[no-untyped-def]
    client, headers = await _setup(write_config, make_client, pool)
    for _ in range(3):
        assert (await client.post("/v1/payments", json=GOOD, headers=headers)).status == 201
    resp = await client.get("/v1/payments?limit=1", headers=headers)
    cursor = (await resp.json())["next_cursor"]
    assert (await client.get(f"/v1/payments?cursor={cursor}", headers=headers)).status == 200
    body, _, mac = cursor.partition(".")
    flip = {"A": "B"}
    tampered = [
        body[:5] + ("x" if body[5] != "x" else "y") + body[6:] + "." + mac,
        body[:-1] + flip.get(body[-1], "A") + "." + mac,
        body + "." + mac[:-1] + flip.get(mac[-1], "A"),
        body + "." + mac[:-2],
        body,
        "." + mac,
        "eyJ4IjoxfQ." + mac,  # another payload under the old signature
    ]
    for bad in tampered:
        resp = await client.get(f"/v1/payments?cursor={bad}", headers=headers)
        await _assert_problem(resp, 400, "cursor")


async def test_unknown_route_and_method(write_config, make_client, pool) -> None:  # type: ignore[no-untyped-def]
    client, headers = await _setup(write_config, make_client, pool)
    resp = await client.get("/nope")
    await _assert_problem(resp, 404, None)
    resp = await client.delete("/v1/payments", headers=headers)
    await _assert_problem(resp, 405, None)
    assert "POST" in resp.headers["Allow"] and "GET" in resp.headers["Allow"]
    resp = await client.put("/healthz")
    await _assert_problem(resp, 405, None)
    resp = await client.get("/v1/payments/pay_0/cancel", headers=headers)
    await _assert_problem(resp, 405, None)
