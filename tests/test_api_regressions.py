"""Regressions found by the API fuzzing of tests/faults/test_fuzz_api.py, one test per finding."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from typing import Any

import pytest
from test_scanner_support import cancel

from ctripd.http import auth as apikeys

GOOD: dict[str, Any] = {"chain": "anvil", "asset": "ETH", "amount": "1.5"}


async def _setup(write_config, make_client, pool):  # type: ignore[no-untyped-def]
    client = await make_client(write_config())
    async with pool.acquire() as conn:
        key, _ = await apikeys.create_key(conn, "test", "default")
    return client, {"Authorization": f"Bearer {key}"}


async def _create(client, headers: dict[str, str], raw: str):  # type: ignore[no-untyped-def]
    return await client.post(
        "/v1/payments", data=raw, headers={**headers, "Content-Type": "application/json"}
    )


@pytest.mark.parametrize("number", ["1e20", "-1e19", "9.3e18", "1.5e300"])
async def test_metadata_float_beyond_64_bit_integers_is_refused(
    number: str, write_config, make_client, pool
) -> None:  # type: ignore[no-untyped-def]
    """Postgres stored such a float as a huge integer, which read back as an int the JSON encoder
    refused: the create answered 201, then every read of the payment (GET, the list page holding
    it, and the cancel answer) was a 500."""
    client, headers = await _setup(write_config, make_client, pool)
    resp = await _create(
        client,
        headers,
        f'{{"chain":"anvil","asset":"ETH","amount":"1","metadata":{{"x":{number}}}}}',
    )
    assert resp.status == 422, await resp.text()
    assert (await resp.json())["field"] == "metadata.x"
    assert await pool.fetchval("SELECT count(*) FROM payments") == 0


async def test_metadata_floats_within_range_read_back(write_config, make_client, pool) -> None:  # type: ignore[no-untyped-def]
    client, headers = await _setup(write_config, make_client, pool)
    raw = '{"chain":"anvil","asset":"ETH","amount":"1","metadata":{"big":1e18,"small":-2.5e-300}}'
    resp = await _create(client, headers, raw)
    assert resp.status == 201, await resp.text()
    payment_id = (await resp.json())["id"]
    resp = await client.get(f"/v1/payments/{payment_id}", headers=headers)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["metadata"] == {"big": 10**18, "small": -2.5e-300}
    resp = await client.get("/v1/payments", headers=headers)
    assert resp.status == 200, await resp.text()
    resp = await cancel(client, payment_id, headers)
    assert resp.status == 200, await resp.text()


@pytest.mark.parametrize("payment_id", ["a\x00b", "pay_x", "PAY_" + "0" * 32, ""])
async def test_events_filter_by_malformed_payment_id_is_a_400(
    payment_id: str, write_config, make_client, pool
) -> None:  # type: ignore[no-untyped-def]
    """A NUL in the filter reached Postgres, which refuses it in text: a 500."""
    client, headers = await _setup(write_config, make_client, pool)
    resp = await client.get("/v1/events", params={"payment_id": payment_id}, headers=headers)
    assert resp.status == 400, await resp.text()
    assert resp.content_type == "application/problem+json"
    assert (await resp.json())["field"] == "payment_id"


async def test_events_filter_by_unknown_payment_id_is_an_empty_page(
    write_config, make_client, pool
) -> None:  # type: ignore[no-untyped-def]
    client, headers = await _setup(write_config, make_client, pool)
    params = {"payment_id": "pay_" + "0" * 32}
    resp = await client.get("/v1/events", params=params, headers=headers)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["data"] == []


async def test_expires_in_null_means_the_default_as_documented(
    write_config, make_client, pool
) -> None:  # type: ignore[no-untyped-def]
    """The API took `expires_in: null` as the default expiry while the document called the
    field non-nullable; the document now says what the API does."""
    client, headers = await _setup(write_config, make_client, pool)
    doc = await (await client.get("/openapi.json")).json()
    field = doc["components"]["schemas"]["PaymentCreate"]["properties"]["expires_in"]
    assert field["nullable"] is True
    resp = await _create(client, headers, json.dumps({**GOOD, "expires_in": None}))
    assert resp.status == 201, await resp.text()
    payment = await resp.json()
    created = datetime.fromisoformat(payment["created_at"])
    expires = datetime.fromisoformat(payment["expires_at"])
    assert (expires - created).total_seconds() == field["default"]


def test_stdlib_tracebacks_stay_one_json_line() -> None:
    """aiohttp logs a traceback for every malformed request (a NUL in a header, say); it went out
    as raw multi-line text in the middle of the JSON log."""
    script = (
        "import logging\n"
        "from ctripd.log import configure_logging\n"
        "configure_logging('info', 'json')\n"
        "try:\n"
        "    raise ValueError('bad header')\n"
        "except ValueError:\n"
        "    logging.getLogger('aiohttp.server').exception('Error handling request from %s', 'x')\n"
        "logging.getLogger('apscheduler').info('below warning: dropped')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    (line,) = out.stdout.splitlines()
    entry = json.loads(line)
    assert entry["event"] == "Error handling request from x"
    assert entry["logger"] == "aiohttp.server" and entry["level"] == "error"
    assert "ValueError: bad header" in entry["exception"]
    assert out.stderr == ""
