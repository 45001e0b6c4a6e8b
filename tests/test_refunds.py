"""Refunds through the API and the sweeper's engine, on a real Anvil node and Postgres: from the
deposit address while the funds are there (with a gas top-up for tokens), from the payout wallet
once swept; never more than received, once per Idempotency-Key, and never racing a sweep."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
import pytest
from test_recover import scanned
from test_sweeper import ETH, OUTSIDER, TREASURY, WALLET, Rig, make_rig

from ctripd.http.auth import create_key
from ctripd.jobs.sweeper import InjectedCrash, Step
from ctripd.ledger.reconcile import reconcile

PAYOUT = WALLET.gas_address(1)  # the payout wallet, m/44'/60'/1'/0/1


async def client_of(rig: Rig, make_client: Any) -> Any:
    client = await make_client(rig.config)
    async with rig.pool.acquire() as conn:
        key, _ = await create_key(conn, "refunds", "default")
    client.headers = {"Authorization": f"Bearer {key}"}
    return client


async def post(client: Any, path: str, body: dict[str, Any], key: str | None = None) -> Any:
    headers = dict(client.headers)
    if key is not None:
        headers["Idempotency-Key"] = key
    return await client.post(path, json=body, headers=headers)


async def get(client: Any, path: str) -> Any:
    resp = await client.get(path, headers=client.headers)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def run_until_done(rig: Rig, rounds: int = 12) -> None:
    """Sweeper rounds, one block each, until no refund is open and nothing is in flight."""
    sweeper = rig.sweeper()
    for _ in range(rounds):
        await sweeper.run_once()
        rig.mine()
        await scanned(rig)
        open_refunds = await rig.pool.fetchval(
            "SELECT count(*) FROM refunds WHERE status IN ('requested', 'signed')"
        )
        if not open_refunds and not await rig.busy():
            return
    raise AssertionError(f"still busy: {await rig.sweeps()}")


async def events(pool: asyncpg.Pool, payment_id: str) -> list[str]:
    rows = await pool.fetch(
        "SELECT type FROM events WHERE payment_id = $1 AND type LIKE 'refund.%' ORDER BY seq",
        payment_id,
    )
    return [r["type"] for r in rows]


async def test_overpaid_native_part_goes_back_from_the_deposit(rig: Rig, make_client) -> None:  # type: ignore[no-untyped-def]
    payment_id = await rig.pay_native(1100, 3 * ETH // 2)
    await rig.pool.execute("UPDATE payments SET amount = $2 WHERE id = $1", payment_id, ETH)
    rig.mine()
    await scanned(rig)
    client = await client_of(rig, make_client)
    before = rig.balance(OUTSIDER)
    treasury = rig.balance(TREASURY)

    resp = await post(client, f"/v1/payments/{payment_id}/refunds", {"to": OUTSIDER.lower()})
    assert resp.status == 201, await resp.text()
    refund = await resp.json()
    assert (refund["amount"], refund["status"], refund["to"]) == ("0.5", "requested", OUTSIDER)

    await run_until_done(rig)
    assert rig.balance(OUTSIDER) - before == ETH // 2  # the deposit paid the fee on top
    done = await get(client, f"/v1/refunds/{refund['id']}")
    assert (done["status"], done["source"]) == ("confirmed", "deposit")
    assert done["from"] == WALLET.address(1100)
    kinds = [(s["kind"], s["status"]) for s in await rig.sweeps()]
    assert kinds == [("refund", "confirmed"), ("native", "confirmed")]
    # The rest went to the treasury; the payment's own amount was never refunded.
    assert rig.balance(TREASURY) - treasury > ETH - ETH // 100
    assert (await rig.payment(payment_id))["refund_status"] is None
    assert await events(rig.pool, payment_id) == ["refund.created", "refund.confirmed"]
    listed = await get(client, f"/v1/payments/{payment_id}/refunds")
    assert [r["id"] for r in listed["data"]] == [refund["id"]]
    await scanned(rig)
    report = await reconcile(rig.pool, rig.rpc, rig.chain)
    assert report.mismatches == [] and report.in_flight == []


async def test_same_key_one_refund_and_never_more_than_received(rig: Rig, make_client) -> None:  # type: ignore[no-untyped-def]
    payment_id = await rig.pay_native(1101, ETH)
    rig.mine()
    await scanned(rig)
    client = await client_of(rig, make_client)
    path = f"/v1/payments/{payment_id}/refunds"
    body = {"to": OUTSIDER, "amount": "0.25"}
    first = await post(client, path, body, key="k1")
    again = await post(client, path, body, key="k1")
    assert (first.status, again.status) == (201, 200)
    assert (await first.json())["id"] == (await again.json())["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    other = await post(client, path, {**body, "amount": "0.3"}, key="k1")
    assert other.status == 409
    together = await asyncio.gather(*(post(client, path, body, key="k2") for _ in range(4)))
    assert sorted(r.status for r in together) == [200, 200, 200, 201]
    assert await rig.pool.fetchval("SELECT count(*) FROM refunds") == 2

    too_much = await post(client, path, {"to": OUTSIDER, "amount": "0.50001"})
    assert too_much.status == 422
    problem = await too_much.json()
    assert problem["field"] == "amount" and "refundable" in problem["detail"]
    # Nothing overpaid: no default amount.
    assert (await post(client, path, {"to": OUTSIDER})).status == 422
    zero, bad_checksum = "0x" + "0" * 40, "0x3c44CdDdB6a900fa2b585dd299e03d12FA4293BC"
    for bad in (zero, OUTSIDER[:-1], bad_checksum):
        resp = await post(client, path, {"to": bad, "amount": "0.1"})
        assert resp.status == 422 and (await resp.json())["field"] == "to", bad
    own = await post(client, path, {"to": WALLET.address(1101), "amount": "0.1"})
    assert own.status == 422 and "deposit" in (await own.json())["detail"]


async def test_full_refund_after_sweep_comes_from_the_payout_wallet(rig: Rig, make_client) -> None:  # type: ignore[no-untyped-def]
    rig.anvil.rpc("anvil_setBalance", [PAYOUT, hex(10 * ETH)])
    payment_id = await rig.pay_native(1102, ETH)
    rig.mine()
    await scanned(rig)
    await rig.settle(rig.sweeper())  # swept
    client = await client_of(rig, make_client)
    before = rig.balance(OUTSIDER)
    resp = await post(client, f"/v1/payments/{payment_id}/refunds", {"to": OUTSIDER, "amount": "1"})
    assert resp.status == 201, await resp.text()
    refund = await resp.json()
    await run_until_done(rig)
    assert rig.balance(OUTSIDER) - before == ETH
    done = await get(client, f"/v1/refunds/{refund['id']}")
    assert (done["status"], done["source"], done["from"]) == ("confirmed", "payout_wallet", PAYOUT)
    payment = await rig.payment(payment_id)
    assert (payment["status"], payment["refund_status"]) == ("confirmed", "refunded")
    # Nothing left to refund.
    path = f"/v1/payments/{payment_id}/refunds"
    again = await post(client, path, {"to": OUTSIDER, "amount": "0.1"})
    assert again.status == 422
    await scanned(rig)
    report = await reconcile(rig.pool, rig.rpc, rig.chain)
    assert report.mismatches == []


async def test_canceled_token_payment_is_topped_up_and_refunded(token_rig, make_client) -> None:  # type: ignore[no-untyped-def]
    rig = token_rig
    payment_id = await rig.pay_token("USDTL", 1103, 7 * 10**6)
    await rig.pool.execute("UPDATE payments SET status = 'canceled' WHERE id = $1", payment_id)
    rig.mine(2)
    await scanned(rig)
    client = await client_of(rig, make_client)
    resp = await post(client, f"/v1/payments/{payment_id}/refunds", {"to": OUTSIDER})
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["amount_base_units"] == str(7 * 10**6)
    await run_until_done(rig)
    assert rig.token_balance("USDTL", OUTSIDER) == 7 * 10**6
    assert rig.token_balance("USDTL", WALLET.address(1103)) == 0
    assert [s["kind"] for s in await rig.sweeps()] == ["gas_topup", "refund"]
    assert await events(rig.pool, payment_id) == ["refund.created", "refund.confirmed"]
    await scanned(rig)
    report = await reconcile(rig.pool, rig.rpc, rig.chain)
    assert report.mismatches == [] and report.held == []


async def test_wrong_asset_coin_goes_back_and_the_tokens_are_swept(token_rig, make_client) -> None:  # type: ignore[no-untyped-def]
    rig = token_rig
    payment_id = await rig.pay_token("TD6", 1104, 5 * 10**6)
    await rig.add_native_transfer(payment_id, ETH // 20)  # the payer sent coin too
    rig.mine(2)
    await scanned(rig)
    client = await client_of(rig, make_client)
    before = rig.balance(OUTSIDER)
    resp = await post(
        client, f"/v1/payments/{payment_id}/refunds", {"to": OUTSIDER, "asset": "ETH"}
    )
    assert resp.status == 201, await resp.text()
    refund = await resp.json()
    assert refund["amount"] == "0.05"
    await run_until_done(rig)
    done = await get(client, f"/v1/refunds/{refund['id']}")
    assert done["status"] == "confirmed"
    # All the deposit had was the payer's coin: its fee came out of it.
    assert rig.balance(OUTSIDER) - before == int(done["amount_sent_base_units"])
    assert ETH // 20 - ETH // 1000 < int(done["amount_sent_base_units"]) < ETH // 20
    assert rig.token_balance("TD6", WALLET.address(1104)) == 0  # swept as usual
    await scanned(rig)
    report = await reconcile(rig.pool, rig.rpc, rig.chain)
    assert report.mismatches == [] and report.held == []


async def test_a_refund_waits_for_a_sweep_in_flight(rig: Rig, make_client) -> None:  # type: ignore[no-untyped-def]
    rig.anvil.rpc("anvil_setBalance", [PAYOUT, hex(10 * ETH)])
    payment_id = await rig.pay_native(1105, ETH)
    rig.mine()
    await scanned(rig)
    sweeper = rig.sweeper()
    await sweeper.run_once()  # the sweep is broadcast, not yet confirmed
    client = await client_of(rig, make_client)
    path = f"/v1/payments/{payment_id}/refunds"
    assert (await post(client, path, {"to": OUTSIDER, "amount": "0.5"})).status == 201
    await sweeper.run_once()
    assert [s["kind"] for s in await rig.sweeps()] == ["native"]  # the refund waits
    await run_until_done(rig)
    assert [(s["kind"], s["from_address"]) for s in await rig.sweeps()] == [
        ("native", WALLET.address(1105)),
        ("refund", PAYOUT),
    ]
    payment = await rig.payment(payment_id)
    assert payment["refund_status"] == "partially_refunded"


async def test_a_tampered_refund_moves_nothing(rig: Rig, make_client) -> None:  # type: ignore[no-untyped-def]
    payment_id = await rig.pay_native(1106, 3 * ETH // 2)
    await rig.pool.execute("UPDATE payments SET amount = $2 WHERE id = $1", payment_id, ETH)
    rig.mine()
    await scanned(rig)
    client = await client_of(rig, make_client)
    resp = await post(client, f"/v1/payments/{payment_id}/refunds", {"to": OUTSIDER})
    assert resp.status == 201
    # Someone with database access redirects it, and adds one of their own.
    await rig.pool.execute("UPDATE refunds SET to_address = $1", TREASURY)
    sweeper = rig.sweeper()
    await sweeper.run_once()
    rig.mine()
    await sweeper.run_once()
    assert await rig.sweeps("refund") == []
    error = await rig.pool.fetchval("SELECT error FROM refunds")
    assert "binding" in error and "does not verify" in error


# ---- payouts ------------------------------------------------------------------------------------


async def payout_rig(write_config, pool, anvil, **payouts: Any) -> Any:  # type: ignore[no-untyped-def]
    return make_rig(write_config, pool, anvil, tokens=True, toml={"payouts": payouts})


async def test_a_payout_waits_for_approval_then_for_funds(
    write_config, pool, anvil, make_client, capsys
) -> None:  # type: ignore[no-untyped-def]
    from ctripd.cli import main as cli

    async with await payout_rig(
        write_config, pool, anvil, require_approval=True, daily_limits=["TD6=10"]
    ) as rig:
        rig.anvil.rpc("anvil_setBalance", [PAYOUT, hex(ETH)])
        client = await client_of(rig, make_client)
        body = {"chain": "anvil", "asset": "TD6", "to": OUTSIDER, "amount": "6", "reference": "r1"}
        resp = await post(client, "/v1/payouts", body, key="p1")
        assert resp.status == 201, await resp.text()
        payout = await resp.json()
        assert (payout["status"], payout["amount_base_units"]) == ("pending_approval", "6000000")
        over = await post(client, "/v1/payouts", {**body, "amount": "4.000001"})
        assert over.status == 422 and "daily payout limit" in (await over.json())["detail"]

        sweeper = rig.sweeper(payouts=rig.config.payouts)
        await sweeper.run_once()
        assert await rig.sweeps() == []  # not approved: nothing signed
        args = ["--config", rig.config.path, "payouts", "approve", payout["id"]]
        assert await asyncio.to_thread(cli.main, args) == 0
        await sweeper.run_once()
        waiting = await get(client, f"/v1/payouts/{payout['id']}")
        assert waiting["status"] == "pending" and "lacks tokens" in waiting["reason"]
        assert await rig.sweeps() == []  # never a partial send

        rig.send_token("TD6", PAYOUT, 7 * 10**6)
        for _ in range(4):
            await sweeper.run_once()
            rig.mine()
        done = await get(client, f"/v1/payouts/{payout['id']}")
        assert (done["status"], done["from"]) == ("confirmed", PAYOUT)
        assert rig.token_balance("TD6", OUTSIDER) == 6 * 10**6
        types = await rig.pool.fetch(
            "SELECT type FROM events WHERE payload->'data'->'payout'->>'id' = $1 ORDER BY seq",
            payout["id"],
        )
        assert [t["type"] for t in types] == [
            "payout.created",
            "payout.approved",
            "payout.confirmed",
        ]
        listed = await get(client, "/v1/payouts?status=confirmed")
        assert [p["id"] for p in listed["data"]] == [payout["id"]]

        # The operator's view, and a rejection.
        other = await (await post(client, "/v1/payouts", {**body, "amount": "1"})).json()

        async def cli_json(*args: str) -> Any:
            capsys.readouterr()
            argv = ["--config", rig.config.path, *args, "--json"]
            assert await asyncio.to_thread(cli.main, argv) == 0
            return json.loads(capsys.readouterr().out)

        assert (await cli_json("payouts", "reject", other["id"]))["status"] == "rejected"
        listing = await cli_json("payouts", "list")
        assert [(p["id"], p["status"]) for p in listing] == [
            (other["id"], "rejected"),
            (payout["id"], "confirmed"),
        ]
        assert (await cli_json("payouts", "show", payout["id"]))["tx_hash"] == done["tx_hash"]
        wallet = await cli_json("payouts", "wallet")
        assert wallet["address"] == PAYOUT
        assert {
            "chain": "anvil",
            "asset": "TD6",
            "balance": "1",
            "balance_base_units": "1000000",
        } in wallet["balances"]
        assert await cli_json("refunds", "list") == []
        page = await get(client, "/v1/payouts?limit=1")
        assert page["has_more"] and [p["id"] for p in page["data"]] == [other["id"]]
        rest = await get(client, f"/v1/payouts?limit=1&cursor={page['next_cursor']}")
        assert [p["id"] for p in rest["data"]] == [payout["id"]] and not rest["has_more"]


async def test_an_approval_written_to_the_database_moves_nothing(
    write_config, pool, anvil, make_client
) -> None:  # type: ignore[no-untyped-def]
    async with await payout_rig(write_config, pool, anvil, require_approval=True) as rig:
        rig.anvil.rpc("anvil_setBalance", [PAYOUT, hex(10 * ETH)])
        client = await client_of(rig, make_client)
        body = {"chain": "anvil", "asset": "ETH", "to": OUTSIDER, "amount": "1"}
        resp = await post(client, "/v1/payouts", body)
        assert resp.status == 201
        await rig.pool.execute("UPDATE payouts SET status = 'pending', approval = '\\x00'")
        sweeper = rig.sweeper(payouts=rig.config.payouts)
        await sweeper.run_once()
        assert await rig.sweeps() == []
        reason = await rig.pool.fetchval("SELECT reason FROM payouts")
        assert "no valid approval" in reason


async def test_reconcile_totals_and_the_payout_wallet(rig: Rig, make_client) -> None:  # type: ignore[no-untyped-def]
    rig.anvil.rpc("anvil_setBalance", [PAYOUT, hex(10 * ETH)])
    payment_id = await rig.pay_native(1107, ETH)
    rig.mine()
    await scanned(rig)
    await rig.settle(rig.sweeper())
    client = await client_of(rig, make_client)
    path = f"/v1/payments/{payment_id}/refunds"
    assert (await post(client, path, {"to": OUTSIDER, "amount": "0.25"})).status == 201
    await run_until_done(rig)
    report = await reconcile(rig.pool, rig.rpc, rig.chain, PAYOUT)
    (total,) = report.totals
    assert (total.asset, total.received, total.refunded) == ("ETH", ETH, 0)
    assert 0 < ETH - total.swept < ETH // 1000  # the sweep's fee stayed behind
    (native,) = [f for f in report.payout_wallet if f.asset == "ETH"]
    assert (native.refunds, native.payouts) == (ETH // 4, 0)
    assert native.balance + native.refunds + native.fees == 10 * ETH
    assert "PAYOUT WALLET" in native.line() and "TOTAL ETH" in total.line()


async def test_watch_only_gateway_refuses_refunds_and_payouts(rig: Rig, make_client) -> None:  # type: ignore[no-untyped-def]
    from dataclasses import replace

    payment_id = await rig.pay_native(1108, ETH)
    config = replace(
        rig.config, wallet=replace(rig.config.wallet, mnemonic_file="", xpub=WALLET.xpub())
    )
    client = await make_client(config)
    async with rig.pool.acquire() as conn:
        key, _ = await create_key(conn, "watch", "default")
    client.headers = {"Authorization": f"Bearer {key}"}
    refund = await post(client, f"/v1/payments/{payment_id}/refunds", {"to": OUTSIDER})
    payout = await post(
        client, "/v1/payouts", {"chain": "anvil", "asset": "ETH", "to": OUTSIDER, "amount": "1"}
    )
    assert (refund.status, payout.status) == (409, 409)
    assert "watch-only" in (await refund.json())["detail"]


async def test_the_devnet_funds_the_payout_wallet(anvil) -> None:  # type: ignore[no-untyped-def]
    from test_sweeper import FUNDER

    from ctripd.dev import tokens as devtokens
    from ctripd.dev.run import DEV_PAYOUT_TOKENS, fund_payout_wallet

    deployed = devtokens.deploy_test_tokens(anvil.url, FUNDER)
    fund_payout_wallet(anvil, WALLET, deployed, FUNDER)
    assert int(anvil.rpc("eth_getBalance", [PAYOUT, "latest"]), 16) > 0
    for address, decimals in deployed.values():
        balance = devtokens.token_balance(anvil.url, address, PAYOUT)
        assert balance == DEV_PAYOUT_TOKENS * 10**decimals


@pytest.mark.parametrize("step", list(Step))
async def test_a_crash_at_each_step_sends_a_refund_and_a_payout_once(
    rig: Rig, make_client, step: Step
) -> None:  # type: ignore[no-untyped-def]
    rig.anvil.rpc("anvil_setBalance", [PAYOUT, hex(10 * ETH)])
    payment_id = await rig.pay_native(1109, 2 * ETH)
    await rig.pool.execute("UPDATE payments SET amount = $2 WHERE id = $1", payment_id, ETH)
    rig.mine()
    await scanned(rig)
    client = await client_of(rig, make_client)
    payer, payee = random_address(), random_address()
    path = f"/v1/payments/{payment_id}/refunds"
    assert (await post(client, path, {"to": payer})).status == 201
    payout = {"chain": "anvil", "asset": "ETH", "to": payee, "amount": "0.3"}
    assert (await post(client, "/v1/payouts", payout)).status == 201
    for _ in range(2):  # the refund's crash, then the payout's
        with pytest.raises(InjectedCrash):
            await rig.sweeper(crash_at=step).run_once()
    await run_until_done(rig)
    assert rig.balance(payer) == ETH
    assert rig.balance(payee) == 3 * ETH // 10
    kinds = sorted(s["kind"] for s in await rig.sweeps() if s["kind"] in ("refund", "payout"))
    assert kinds == ["payout", "refund"]
    assert await rig.pool.fetchval("SELECT count(*) FROM payouts WHERE status = 'confirmed'") == 1
    assert await events(rig.pool, payment_id) == ["refund.created", "refund.confirmed"]
    await scanned(rig)
    report = await reconcile(rig.pool, rig.rpc, rig.chain)
    assert report.mismatches == [] and report.in_flight == []


def random_address() -> str:
    from eth_account import Account

    return str(Account.create().address)
