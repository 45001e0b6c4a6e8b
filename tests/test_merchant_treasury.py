"""A merchant's own treasury per chain: its payments are swept there (the others' to the chain's
treasury), the signing policy checks the operator's approval of it when it signs, and the CLI
sets, shows and unsets it."""

from __future__ import annotations

import asyncio
import json

import asyncpg
import pytest
import structlog
from test_events_api import key_for
from test_sweeper import ETH, GAS, OUTSIDER, TREASURY, WALLET, Rig, assert_reconciled

from ctripd.cli import main as cli
from ctripd.jobs.policy import GasWallet, Intent, PolicyRefusal, SigningPolicy
from ctripd.ledger.merchants import binding_text, set_treasury

SHOP_TREASURY = "0x90F79bf6EB2c4f870365E785982E1f101E93b906"  # Anvil account 3


async def shop_b(pool: asyncpg.Pool, *payment_ids: str) -> None:
    """Merchant shop-b, owner of the given payments, bound to it as the API binds them."""
    await pool.execute(
        "INSERT INTO merchants (id, name) VALUES ('shop-b', 'Shop B') ON CONFLICT DO NOTHING"
    )
    await pool.execute(
        "UPDATE payments SET merchant = 'shop-b' WHERE id = ANY($1::text[])", list(payment_ids)
    )
    await bind(pool, *payment_ids)


async def bind(pool: asyncpg.Pool, *payment_ids: str) -> None:
    """Bind the payments to their merchants with the wallet's approval key, as the API does."""
    for row in await pool.fetch(
        "SELECT id, merchant, chain, address_index FROM payments WHERE id = ANY($1::text[])",
        list(payment_ids),
    ):
        text = binding_text(row["id"], row["merchant"], row["chain"], row["address_index"])
        await pool.execute(
            "UPDATE payments SET merchant_binding = $2 WHERE id = $1",
            row["id"],
            WALLET.approve(text),
        )


async def test_native_sweeps_go_to_their_merchants_treasury(rig: Rig) -> None:
    mine = await rig.pay_native(1000, ETH)
    default = await rig.pay_native(1001, ETH)
    await shop_b(rig.pool, mine)
    await set_treasury(rig.pool, WALLET, "shop-b", "anvil", SHOP_TREASURY)
    rig.mine()
    before = rig.balance(SHOP_TREASURY), rig.balance(TREASURY)

    await rig.settle(rig.sweeper())

    sweeps = {s["from_address"]: s for s in await rig.sweeps()}
    own, other = sweeps[WALLET.address(1000)], sweeps[WALLET.address(1001)]
    assert (own["to_address"], own["status"]) == (SHOP_TREASURY, "confirmed")
    assert (other["to_address"], other["status"]) == (TREASURY, "confirmed")
    assert rig.balance(SHOP_TREASURY) - before[0] == int(own["amount"])
    assert rig.balance(TREASURY) - before[1] == int(other["amount"])
    assert (await rig.payment(mine))["sweep"]["tx_hash"] == own["tx_hash"]
    assert (await rig.payment(default))["sweep"]["status"] == "confirmed"
    await assert_reconciled(rig)


async def test_token_sweep_to_the_merchants_treasury_change_to_the_chains(token_rig: Rig) -> None:
    rig = token_rig
    payment = await rig.pay_token("TD6", 1002, 5 * 10**6)
    await shop_b(rig.pool, payment)
    await set_treasury(rig.pool, WALLET, "shop-b", "anvil", SHOP_TREASURY)
    rig.mine()

    await rig.settle(rig.sweeper())

    topup, sweep, *change = await rig.sweeps()
    assert (topup["kind"], topup["to_address"]) == ("gas_topup", WALLET.address(1002))
    assert (sweep["kind"], sweep["to_address"], sweep["status"]) == (
        "token",
        SHOP_TREASURY,
        "confirmed",
    )
    assert rig.token_balance("TD6", SHOP_TREASURY) == 5 * 10**6
    # Top-up change is the operator's gas money: back to the chain's treasury.
    assert all(c["to_address"] == TREASURY for c in change)
    await assert_reconciled(rig)


async def test_policy_checks_the_merchants_treasury_and_its_approval(token_rig: Rig) -> None:
    rig = token_rig
    token = rig.token("TD6")
    own_native = await rig.pay_native(1011, ETH)
    own_token = await rig.pay_token("TD6", 1010, 10**6)
    await rig.pay_native(1012, ETH)  # the default merchant's
    await shop_b(rig.pool, own_native, own_token)
    await set_treasury(rig.pool, WALLET, "shop-b", "anvil", SHOP_TREASURY)
    policy = SigningPolicy(rig.chain, WALLET, GasWallet.of(WALLET, 0, hardened=True))
    token_deposit, native_deposit = WALLET.address(1010), WALLET.address(1011)
    default_deposit = WALLET.address(1012)
    for intent in (
        Intent("native", 1011, native_deposit, SHOP_TREASURY, None, ETH),
        Intent("token", 1010, token_deposit, SHOP_TREASURY, token, 10**6),
        Intent("native", 1010, token_deposit, TREASURY, None, 1),  # top-up change
        Intent("native", 1012, default_deposit, TREASURY, None, ETH),
        Intent("gas_topup", 0, GAS, token_deposit, None, 10**15),
    ):
        await policy.check(rig.pool, intent)
    refused = [
        Intent("native", 1011, native_deposit, TREASURY, None, ETH),
        Intent("token", 1010, token_deposit, TREASURY, token, 10**6),
        Intent("native", 1012, default_deposit, SHOP_TREASURY, None, ETH),
    ]
    for intent in refused:
        with pytest.raises(PolicyRefusal, match="is not the treasury of merchant"):
            await policy.check(rig.pool, intent)

    # A treasury written into the database by anything but the operator's CLI moves nothing:
    # its approval does not verify.
    await rig.pool.execute("UPDATE merchant_treasuries SET address = $1", OUTSIDER)
    with pytest.raises(PolicyRefusal, match="has no valid approval"):
        await policy.check(rig.pool, Intent("native", 1011, native_deposit, OUTSIDER, None, ETH))
    outsider = rig.balance(OUTSIDER)
    rig.mine()
    with structlog.testing.capture_logs() as logs:
        await rig.sweeper().run_once()
    failed = [e for e in logs if e["event"] == "sweep.plan_failed"]
    assert failed and all("no valid approval" in e["error"] for e in failed)
    refused = [e for e in logs if e["event"] == "sweep.policy_refused"]
    assert refused and {e["log_level"] for e in refused} == {"critical"}
    assert not [e for e in logs if e["event"] == "sweep.plan_error"]
    assert not [s for s in await rig.sweeps() if s["from_address"] == native_deposit]
    rig.mine()
    assert rig.balance(OUTSIDER) == outsider


async def test_a_rewritten_merchant_sweeps_to_the_chains_treasury(rig: Rig) -> None:
    """Database write access alone must not move a payment's funds to another merchant's
    treasury: the payment's binding to its merchant no longer verifies, so the chain's."""
    own = await rig.pay_native(1020, ETH)
    victim = await rig.pay_native(1021, ETH)
    await shop_b(rig.pool, own)
    await bind(rig.pool, victim)
    await set_treasury(rig.pool, WALLET, "shop-b", "anvil", SHOP_TREASURY)
    await rig.pool.execute("UPDATE payments SET merchant = 'shop-b' WHERE id = $1", victim)
    policy = SigningPolicy(rig.chain, WALLET, GasWallet.of(WALLET, 0, hardened=True))
    victim_deposit = WALLET.address(1021)
    with pytest.raises(PolicyRefusal, match="is not the treasury of merchant"):
        await policy.check(
            rig.pool, Intent("native", 1021, victim_deposit, SHOP_TREASURY, None, ETH)
        )
    await policy.check(rig.pool, Intent("native", 1021, victim_deposit, TREASURY, None, ETH))
    rig.mine()

    await rig.settle(rig.sweeper())

    sweeps = {s["from_address"]: s for s in await rig.sweeps()}
    assert sweeps[WALLET.address(1020)]["to_address"] == SHOP_TREASURY
    assert (sweeps[victim_deposit]["to_address"], sweeps[victim_deposit]["status"]) == (
        TREASURY,
        "confirmed",
    )
    await assert_reconciled(rig)


async def test_the_api_binds_payments_to_their_merchant(  # type: ignore[no-untyped-def]
    pool: asyncpg.Pool, write_config, make_client
) -> None:
    """A signing API binds each payment it creates; a watch-only one cannot (no approval key),
    so its payments are never swept to a merchant's own treasury."""
    body = {"chain": "anvil", "asset": "ETH", "amount": "1"}
    for toml, bound in (({}, True), ({"wallet": {"xpub": WALLET.xpub()}}, False)):
        client = await make_client(write_config(toml=toml))
        headers = await key_for(pool, "shop-b")
        response = await client.post("/v1/payments", json=body, headers=headers)
        assert response.status == 201, await response.text()
        row = await pool.fetchrow(
            "SELECT * FROM payments WHERE id = $1", (await response.json())["id"]
        )
        text = binding_text(row["id"], "shop-b", "anvil", row["address_index"])
        assert row["merchant_binding"] == (WALLET.approve(text) if bound else None)


async def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = await asyncio.to_thread(cli.main, list(args))
    out, err = capsys.readouterr()
    return code, out, err


async def test_cli_sets_shows_and_unsets_a_treasury(rig: Rig, capsys) -> None:  # type: ignore[no-untyped-def]
    base = ("--config", rig.config.path, "merchants")
    assert (await _cli(capsys, *base, "create", "shop-b"))[0] == 0
    code, out, _ = await _cli(
        capsys, *base, "set-treasury", "shop-b", SHOP_TREASURY, "--chain", "anvil", "--json"
    )
    assert code == 0 and json.loads(out)["treasuries"] == {"anvil": SHOP_TREASURY}
    code, out, _ = await _cli(capsys, *base, "show", "shop-b")
    assert code == 0 and f"treasury on anvil: {SHOP_TREASURY}" in out
    policy = SigningPolicy(rig.chain, WALLET, GasWallet.of(WALLET, 0, hardened=True))
    payment = await rig.pay_native(1020, ETH)
    await shop_b(rig.pool, payment)
    await policy.check(
        rig.pool, Intent("native", 1020, WALLET.address(1020), SHOP_TREASURY, None, ETH)
    )

    refusals: list[tuple[tuple[str, ...], str]] = [
        (("set-treasury", "shop-b", SHOP_TREASURY.lower(), "--chain", "anvil"), "checksummed"),
        (("set-treasury", "shop-b", SHOP_TREASURY, "--chain", "nope"), "unknown chain"),
        (("set-treasury", "shop-c", SHOP_TREASURY, "--chain", "anvil"), "no merchant 'shop-c'"),
    ]
    for args, words in refusals:
        code, _, err = await _cli(capsys, *base, *args)
        assert code == 1 and words in err, args

    code, out, _ = await _cli(
        capsys, *base, "unset-treasury", "shop-b", "--chain", "anvil", "--json"
    )
    assert code == 0 and json.loads(out)["treasuries"] == {}
    code, _, err = await _cli(capsys, *base, "unset-treasury", "shop-b", "--chain", "anvil")
    assert code == 1 and "no treasury of its own" in err
    await policy.check(rig.pool, Intent("native", 1020, WALLET.address(1020), TREASURY, None, ETH))
