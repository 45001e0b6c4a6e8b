"""Merchants as rows: `ctripd merchants create|list|show|disable`, keys only for a merchant that
exists, and a disabled merchant's keys refused."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from ctripd.cli import main as cli

PAYMENT = {"chain": "anvil", "asset": "ETH", "amount": "1"}


async def run(capsys: pytest.CaptureFixture[str], config: Any, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = await asyncio.to_thread(cli.main, ["--config", config.path, *args])
    out, err = capsys.readouterr()
    return code, out, err


async def test_merchants_cli_and_keys(write_config, make_client, capsys) -> None:  # type: ignore[no-untyped-def]
    config = write_config()
    client = await make_client(config)

    code, out, _ = await run(
        capsys, config, "merchants", "create", "shop-b", "--name", "Shop B", "--json"
    )
    assert code == 0
    (created,) = json.loads(out)
    assert created["id"] == "shop-b" and created["name"] == "Shop B"
    assert created["disabled_at"] is None and created["keys"] == 0

    code, _, err = await run(capsys, config, "merchants", "create", "shop-b")
    assert code == 1 and "exists already" in err
    code, _, err = await run(capsys, config, "merchants", "create", "a b")
    assert code == 1 and "merchant must be" in err

    # A key only for a merchant that exists.
    code, _, err = await run(
        capsys, config, "api-key", "create", "--name", "x", "--merchant", "nope"
    )
    assert code == 1 and "no merchant 'nope'" in err
    code, out, _ = await run(
        capsys, config, "api-key", "create", "--name", "b", "--merchant", "shop-b"
    )
    assert code == 0
    headers = {"Authorization": f"Bearer {out.strip()}"}
    resp = await client.post("/v1/payments", json=PAYMENT, headers=headers)
    assert resp.status == 201

    code, out, _ = await run(capsys, config, "merchants", "list", "--json")
    assert code == 0
    listed = {m["id"]: m for m in json.loads(out)}
    assert set(listed) == {"default", "shop-b"} and listed["shop-b"]["keys"] == 1
    code, out, _ = await run(capsys, config, "merchants", "list")
    assert code == 0 and "shop-b" in out and "Shop B" in out

    code, out, _ = await run(capsys, config, "merchants", "show", "shop-b", "--json")
    assert code == 0 and json.loads(out)["name"] == "Shop B"
    code, _, err = await run(capsys, config, "merchants", "show", "shop-c")
    assert code == 1 and "no merchant 'shop-c'" in err

    # Disabled: its keys stop working on the next request; its rows stay.
    code, out, _ = await run(capsys, config, "merchants", "disable", "shop-b", "--json")
    assert code == 0 and json.loads(out)[0]["disabled_at"] is not None
    resp = await client.get("/v1/payments", headers=headers)
    assert resp.status == 401
    code, _, err = await run(capsys, config, "merchants", "disable", "shop-b")
    assert code == 1 and "already disabled" in err
