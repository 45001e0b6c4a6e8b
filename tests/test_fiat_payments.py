"""Payments priced in fiat (SPEC §15) end to end: quotes locked at creation from local exchange
servers and pegs, mixed-asset settling at the locked rates, late payment, and a rate outage —
against a real Anvil and Postgres."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from rate_servers import Exchange, exchange_server
from test_scanner_support import ETH, SENDER, Rig, chain_entry, mine, send_native
from test_transfer_assets import get_payment, key

from ctripd.cli.main import main
from ctripd.dev import tokens as devtokens
from ctripd.http.keys import RATES
from ctripd.jobs.signing import generate_secret
from ctripd.money import units_due

PRICE = {"amount": "25.00", "currency": "USD"}


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    r = Rig()
    yield r
    await r.close()


@pytest.fixture
async def coinbase() -> AsyncIterator[Exchange]:
    async with exchange_server("coinbase", {"ETH-USD": "2000.00"}) as ex:
        yield ex


@pytest.fixture
async def kraken() -> AsyncIterator[Exchange]:
    async with exchange_server("kraken", {"XETHZUSD": "2010.50"}) as ex:
        yield ex


@pytest.fixture
def shop(write_config, anvil, coinbase: Exchange, kraken: Exchange):  # type: ignore[no-untyped-def]
    """A config with two pegged test dollars and ETH quoted by two exchanges."""
    return open_shop(write_config, anvil, coinbase, kraken)


def open_shop(  # type: ignore[no-untyped-def]
    write_config, anvil, coinbase: Exchange, kraken: Exchange, **toml: dict[str, Any]
):
    """(config, TD6 address, USDTL address) of `shop`, with more `toml` sections."""
    td6 = devtokens.deploy_token(anvil.url, "erc20_6", SENDER)
    usdt = devtokens.deploy_token(anvil.url, "usdt", SENDER)
    for token in (td6, usdt):
        devtokens.mint(anvil.url, token, SENDER, 10**30, SENDER)
    tokens = {"TD6": {"address": td6, "decimals": 6}, "USDTL": {"address": usdt, "decimals": 6}}
    rates = {
        "coinbase_url": coinbase.url,
        "kraken_url": kraken.url,
        "timeout": 0.5,
        "pairs": {
            "ETH/USD": {"sources": ["coinbase:ETH-USD", "kraken:XETHZUSD"]},
            "TD6/USD": {"peg": True},
            "USDTL/USD": {"peg": True},
        },
    }
    config = write_config({"rates": rates, **toml}, chains=[chain_entry(anvil, tokens=tokens)])
    return config, td6, usdt


async def create(client: Any, headers: dict[str, str], **body: Any) -> Any:
    return await client.post("/v1/payments", json={"price": PRICE, **body}, headers=headers)


async def test_create_locks_every_option_and_a_mix_of_assets_pays_it(  # type: ignore[no-untyped-def]
    shop, make_client, pool: asyncpg.Pool, anvil, rig: Rig
) -> None:
    config, td6, usdt = shop
    client = await make_client(config)
    headers = await key(pool)
    watcher = rig.watcher(config)
    await watcher.run_once()
    resp = await create(
        client, headers, accept=["anvil:TD6", "anvil:USDTL", "anvil:ETH"], order_id="o-1"
    )
    assert resp.status == 201, await resp.text()
    payment = await resp.json()
    assert payment["price"] == {
        "amount": "25.00",
        "currency": "USD",
        "amount_received": "0.00",
        "amount_confirmed": "0.00",
        "amount_overpaid": "0.00",
        "amount_remaining": "25.00",
    }
    td6_option, usdt_option, eth_option = payment["options"]
    assert (td6_option["asset"], td6_option["amount"], td6_option["rate"]) == ("TD6", "25", "1")
    assert [s["source"] for s in td6_option["quote"]["sources"]] == ["peg"]
    assert usdt_option["payment_uri"] == (
        f"ethereum:{usdt}@31337/transfer?address={payment['address']}&uint256=25000000"
    )
    # ETH: the median of the two exchanges, the amount rounded up to the wei.
    assert eth_option["rate"] == "2005.25"
    wei = units_due(Decimal("25.00"), Decimal("2005.25"), 18)
    assert eth_option["amount_base_units"] == str(wei)
    assert wei * Decimal("2005.25") >= Decimal(25) * ETH > (wei - 1) * Decimal("2005.25")
    assert {s["source"] for s in eth_option["quote"]["sources"]} == {
        "coinbase:ETH-USD",
        "kraken:XETHZUSD",
    }
    assert eth_option["quote"]["locked_until"] == payment["expires_at"]
    # The asset columns are the first option's.
    assert (payment["chain"], payment["asset"], payment["amount"]) == ("anvil", "TD6", "25")

    # Half in one test dollar, half in the other: paid once both are confirmed.
    address = payment["address"]
    devtokens.token_transfer(anvil.url, td6, SENDER, address, 12_500_000)
    await watcher.run_once()
    partial = await get_payment(client, headers, payment["id"])
    assert partial["status"] == "pending"
    assert partial["price"]["amount_received"] == "12.50"
    assert partial["price"]["amount_remaining"] == "12.50"
    devtokens.token_transfer(anvil.url, usdt, SENDER, address, 12_500_000)
    await watcher.run_once()
    detected = await get_payment(client, headers, payment["id"])
    assert detected["status"] == "detected"
    mine(anvil, 2)
    await watcher.run_once()
    paid = await get_payment(client, headers, payment["id"])
    assert paid["status"] == "confirmed" and not paid["paid_late"]
    assert paid["price"]["amount_received"] == paid["price"]["amount_confirmed"] == "25.00"
    assert [o["amount_received"] for o in paid["options"]] == ["12.5", "12.5", "0"]
    assert [o["value_received"] for o in paid["options"]] == ["12.50", "12.50", "0.00"]
    # The first option's columns hold what arrived in that asset (what its sweep moves).
    assert paid["amount_received_base_units"] == "12500000"

    # The events carry the locked quote.
    types = [
        r["type"]
        for r in await pool.fetch(
            "SELECT type FROM events WHERE payment_id = $1 ORDER BY seq", payment["id"]
        )
    ]
    assert types == [
        "payment.created",
        "payment.transfer_received",
        "payment.transfer_received",
        "payment.detected",
        "payment.confirmed",
    ]
    created = await pool.fetchval(
        "SELECT payload FROM events WHERE payment_id = $1 AND type = 'payment.created'",
        payment["id"],
    )
    assert created["data"]["payment"]["price"] == payment["price"]
    assert created["data"]["payment"]["options"] == payment["options"]
    confirmed = await pool.fetchval(
        "SELECT payload FROM events WHERE payment_id = $1 AND type = 'payment.confirmed'",
        payment["id"],
    )
    assert confirmed["data"]["payment"]["options"][2]["rate"] == "2005.25"
    assert confirmed["data"]["payment"]["price"]["amount_confirmed"] == "25.00"


async def test_overpayment_and_non_accepted_assets(  # type: ignore[no-untyped-def]
    shop, make_client, pool: asyncpg.Pool, anvil, rig: Rig
) -> None:
    config, td6, usdt = shop
    client = await make_client(config)
    headers = await key(pool)
    watcher = rig.watcher(config)
    await watcher.run_once()
    resp = await create(client, headers, accept=["anvil:USDTL"])
    payment = await resp.json()
    devtokens.token_transfer(anvil.url, td6, SENDER, payment["address"], 30_000_000)
    await watcher.run_once()
    held = await get_payment(client, headers, payment["id"])
    assert held["status"] == "pending" and held["price"]["amount_received"] == "0.00"
    devtokens.token_transfer(anvil.url, usdt, SENDER, payment["address"], 26_000_000)
    mine(anvil, 2)
    await watcher.run_once()
    paid = await get_payment(client, headers, payment["id"])
    assert paid["status"] == "confirmed"
    assert paid["price"]["amount_overpaid"] == "1.00"
    assert paid["price"]["amount_received"] == "26.00"


async def test_a_rate_outage_offers_the_pegged_options_only(  # type: ignore[no-untyped-def]
    shop, make_client, pool: asyncpg.Pool, coinbase: Exchange, kraken: Exchange, rig: Rig
) -> None:
    config, _, _ = shop
    client = await make_client(config)
    headers = await key(pool)
    await rig.watcher(config).run_once()
    coinbase.mode = kraken.mode = "error"
    resp = await create(client, headers, accept=["anvil:ETH", "anvil:USDTL"])
    assert resp.status == 201, await resp.text()
    payment = await resp.json()
    eth_option, usdt_option = payment["options"]
    assert eth_option["available"] is False
    assert eth_option["problem"]["type"].endswith(":rates-unavailable")
    assert eth_option["problem"]["status"] == 503
    assert "amount" not in eth_option and usdt_option["available"] is True
    assert payment["asset"] == "USDTL"

    resp = await create(client, headers, accept=["anvil:ETH"])
    assert resp.status == 503
    assert resp.content_type == "application/problem+json"
    problem = await resp.json()
    assert problem["type"].endswith(":rates-unavailable")
    assert "0 of the 2 rate sources of ETH in USD are fresh" in problem["detail"]
    assert resp.headers["Retry-After"]


async def test_late_payment_counts_at_the_locked_rate(  # type: ignore[no-untyped-def]
    shop, make_client, pool: asyncpg.Pool, anvil, coinbase: Exchange, kraken: Exchange, rig: Rig
) -> None:
    config, _, _ = shop
    client = await make_client(config)
    headers = await key(pool)
    watcher = rig.watcher(config)
    await watcher.run_once()
    resp = await create(client, headers, accept=["anvil:ETH"])
    payment = await resp.json()
    (option,) = payment["options"]
    # ETH halves after creation; the window ends unpaid.
    coinbase.prices["ETH-USD"] = "1000.00"
    kraken.prices["XETHZUSD"] = "1000.00"
    await client.server.app[RATES].run_once()
    await pool.execute(
        "UPDATE payments SET expires_at = now() - interval '1 minute', status = 'expired'"
        " WHERE id = $1",
        payment["id"],
    )
    send_native(anvil, payment["address"], int(option["amount_base_units"]))
    mine(anvil, 2)
    await watcher.run_once()
    late = await get_payment(client, headers, payment["id"])
    assert late["status"] == "confirmed" and late["paid_late"] is True
    assert late["price"]["amount_received"] == "25.00"
    assert late["options"][0]["rate"] == "2005.25"


async def test_bad_priced_requests_name_their_field(  # type: ignore[no-untyped-def]
    shop, make_client, pool: asyncpg.Pool
) -> None:
    config, _, _ = shop
    client = await make_client(config)
    headers = await key(pool)
    for body, field in (
        ({"price": {"amount": "25", "currency": "usd"}, "accept": ["anvil:ETH"]}, "price.currency"),
        ({"price": {"amount": 25, "currency": "USD"}, "accept": ["anvil:ETH"]}, "price.amount"),
        ({"price": {"amount": "0", "currency": "USD"}, "accept": ["anvil:ETH"]}, "price.amount"),
        ({"price": PRICE, "accept": []}, "accept"),
        ({"price": PRICE, "accept": ["anvil:DOGE"]}, "accept[0]"),
        ({"price": PRICE, "accept": ["anvil:ETH", "anvil:ETH"]}, "accept[1]"),
        ({"price": {"amount": "25", "currency": "EUR"}, "accept": ["anvil:ETH"]}, "accept[0]"),
        ({"price": PRICE, "accept": ["anvil:ETH"], "asset": "ETH"}, "asset"),
        ({"price": PRICE}, "accept"),
        ({"price": None, "accept": ["anvil:ETH"]}, "price"),
    ):
        resp = await client.post("/v1/payments", json=body, headers=headers)
        assert resp.status == 422, (body, await resp.text())
        assert (await resp.json())["field"] == field, body


async def test_export_csv_has_the_figures_for_the_books(  # type: ignore[no-untyped-def]
    shop, make_client, pool: asyncpg.Pool, anvil, rig: Rig
) -> None:
    config, td6, _ = shop
    client = await make_client(config)
    headers = await key(pool)
    watcher = rig.watcher(config)
    await watcher.run_once()
    payment = await (await create(client, headers, accept=["anvil:ETH", "anvil:TD6"])).json()
    devtokens.token_transfer(anvil.url, td6, SENDER, payment["address"], 25_000_000)
    mine(anvil, 2)
    await watcher.run_once()
    resp = await client.get("/v1/payments/export.csv?from=2020-01-01", headers=headers)
    assert resp.status == 200 and resp.content_type == "text/csv"
    rows = list(csv.DictReader(io.StringIO(await resp.text())))
    (row,) = rows
    assert row["payment_id"] == payment["id"] and row["status"] == "confirmed"
    assert (row["price"], row["currency"], row["price_received"]) == ("25.00", "USD", "25.00")
    assert row["locked_rates"] == "anvil:ETH=2005.25;anvil:TD6=1"
    assert row["amounts_received"] == "anvil:TD6=25"
    assert (
        row["confirmed_at"] == (await get_payment(client, headers, payment["id"]))["confirmed_at"]
    )
    resp = await client.get("/v1/payments/export.csv?transfers=true", headers=headers)
    (transfer,) = list(csv.DictReader(io.StringIO(await resp.text())))
    assert (transfer["asset"], transfer["amount"], transfer["locked_rate"]) == ("TD6", "25", "1")
    assert Decimal(transfer["value"]) == 25
    resp = await client.get("/v1/payments/export.csv?from=yesterday", headers=headers)
    assert resp.status == 400 and (await resp.json())["field"] == "from"
    resp = await client.get("/v1/payments/export.csv?to=2020-01-01", headers=headers)
    assert len((await resp.text()).splitlines()) == 1  # the header only


async def test_payment_created_carries_the_price_and_options(  # type: ignore[no-untyped-def]
    write_config, anvil, coinbase: Exchange, kraken: Exchange, make_client, pool, tmp_path
) -> None:
    secret = tmp_path / "webhook-secret"
    secret.write_text(generate_secret() + "\n")
    secret.chmod(0o600)
    hook = {"url": "http://127.0.0.1:9/hook", "secret_file": str(secret)}
    config, _, _ = open_shop(write_config, anvil, coinbase, kraken, webhooks=hook)
    client = await make_client(config)
    headers = await key(pool)
    payment = await (await create(client, headers, accept=["anvil:USDTL", "anvil:ETH"])).json()
    event = await pool.fetchrow(
        "SELECT id, payload FROM events WHERE payment_id = $1 AND type = 'payment.created'",
        payment["id"],
    )
    assert event is not None
    # Delivered to the configured url like every event of the default merchant.
    assert await pool.fetchval("SELECT count(*) FROM deliveries WHERE event_id = $1", event["id"])
    told = event["payload"]["data"]["payment"]
    assert told["price"] == payment["price"]
    assert told["price"]["amount"] == "25.00" and told["price"]["currency"] == "USD"
    assert told["options"] == payment["options"]
    usdt, eth = told["options"]
    assert (usdt["asset"], usdt["amount"], usdt["rate"]) == ("USDTL", "25", "1")
    assert eth["rate"] == "2005.25"
    assert {s["source"] for s in eth["quote"]["sources"]} == {
        "coinbase:ETH-USD",
        "kraken:XETHZUSD",
    }


async def test_export_from_the_cli(  # type: ignore[no-untyped-def]
    shop, make_client, pool: asyncpg.Pool, anvil, rig: Rig, capsys
) -> None:
    config, td6, _ = shop
    client = await make_client(config)
    headers = await key(pool)
    watcher = rig.watcher(config)
    await watcher.run_once()
    payment = await (await create(client, headers, accept=["anvil:ETH", "anvil:TD6"])).json()
    devtokens.token_transfer(anvil.url, td6, SENDER, payment["address"], 25_000_000)
    mine(anvil, 2)
    await watcher.run_once()

    def export(*args: str) -> list[dict[str, str]]:
        capsys.readouterr()
        code = main(["--config", config.path, "payments", "export", "--csv", *args])
        assert code == 0
        return list(csv.DictReader(io.StringIO(capsys.readouterr().out)))

    (row,) = await asyncio.to_thread(export, "--from", "2020-01-01")
    assert row["payment_id"] == payment["id"] and row["status"] == "confirmed"
    assert (row["price"], row["currency"], row["price_received"]) == ("25.00", "USD", "25.00")
    assert row["locked_rates"] == "anvil:ETH=2005.25;anvil:TD6=1"
    assert row["amounts_received"] == "anvil:TD6=25"
    # The same rows as the API's export.
    resp = await client.get("/v1/payments/export.csv?from=2020-01-01", headers=headers)
    assert list(csv.DictReader(io.StringIO(await resp.text()))) == [row]
    (transfer,) = await asyncio.to_thread(export, "--transfers", "--merchant", "default")
    assert (transfer["asset"], transfer["amount"], transfer["locked_rate"]) == ("TD6", "25", "1")
    assert await asyncio.to_thread(export, "--to", "2020-01-01") == []
    assert await asyncio.to_thread(export, "--merchant", "nobody") == []
