"""`ctripd recover`: held funds go where the operator says, through the sweeper's signing
policy, once; a request nobody approved with the wallet's key moves nothing."""

from __future__ import annotations

import asyncio

import structlog
from test_sweeper import ETH, OUTSIDER, WALLET, Rig

from ctripd.cli import main as cli
from ctripd.ledger.reconcile import reconcile


async def scanned(rig: Rig) -> None:
    """The watcher's cursor at the head, as a running daemon keeps it."""
    head = int(rig.rpc_sync("eth_blockNumber"), 16)
    await rig.pool.execute(
        "UPDATE chains SET head = $2, scanned_block = $2 WHERE name = $1", rig.chain.name, head
    )


async def recover(rig: Rig, *args: str) -> int:
    return await asyncio.to_thread(cli.main, ["--config", rig.config.path, "recover", *args])


async def test_wrong_asset_coin_goes_where_the_operator_says(token_rig: Rig, capsys) -> None:  # type: ignore[no-untyped-def]
    rig = token_rig
    payment_id = await rig.pay_token("TD6", 1060, 5 * 10**6)
    await rig.add_native_transfer(payment_id, ETH // 20)  # the payer sent coin, not tokens
    rig.mine(2)
    await scanned(rig)
    outsider = rig.balance(OUTSIDER)
    assert await recover(rig, payment_id, "--to", OUTSIDER) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"recovery #1: 0.05 ETH of payment {payment_id}") and "approved" in err

    await rig.settle(rig.sweeper(), max_rounds=12)
    (sent,) = await rig.sweeps("recover")
    assert (sent["status"], sent["to_address"], sent["from_address"]) == (
        "confirmed",
        OUTSIDER,
        WALLET.address(1060),
    )
    assert (
        rig.balance(OUTSIDER) - outsider
        == int(sent["amount"])
        == ETH // 20 - int(sent["gas_limit"]) * int(sent["max_fee_per_gas"])
    )
    # The token payment was swept as usual; its top-up's change never took the payer's coin.
    assert rig.token_balance("TD6", WALLET.address(1060)) == 0
    assert await rig.pool.fetchval("SELECT status FROM recoveries") == "done"
    await scanned(rig)
    report = await reconcile(rig.pool, rig.rpc, rig.chain)
    assert report.mismatches == [] and report.held == []
    assert [(r.status, r.amount, r.to) for r in report.recoveries] == [
        ("done", ETH // 20, OUTSIDER)
    ]
    assert await recover(rig, payment_id, "--to", OUTSIDER) == 1  # nothing held any more
    assert "holds no funds to recover" in capsys.readouterr().err


async def test_tokens_of_an_expired_payment_are_topped_up_and_sent(token_rig: Rig) -> None:
    rig = token_rig
    payment_id = await rig.pay_token("USDTL", 1061, 7 * 10**6)
    await rig.pool.execute("UPDATE payments SET status = 'expired' WHERE id = $1", payment_id)
    rig.mine(2)
    await scanned(rig)
    assert await recover(rig, payment_id, "--to", OUTSIDER, "--amount", "2.5") == 0
    await rig.settle(rig.sweeper(), max_rounds=12)
    assert [s["kind"] for s in await rig.sweeps()] == ["gas_topup", "recover"]
    assert rig.token_balance("USDTL", OUTSIDER) == 2_500_000
    assert rig.token_balance("USDTL", WALLET.address(1061)) == 4_500_000
    await scanned(rig)
    report = await reconcile(rig.pool, rig.rpc, rig.chain)
    assert report.mismatches == []
    assert [(h.payment_id, h.amount) for h in report.held] == [(payment_id, 4_500_000)]


async def test_a_request_nobody_approved_moves_nothing(token_rig: Rig) -> None:
    rig = token_rig
    payment_id = await rig.pay_token("TD6", 1062, 5 * 10**6)
    await rig.add_native_transfer(payment_id, ETH // 20)
    rig.mine(2)
    await scanned(rig)
    outsider = rig.balance(OUTSIDER)
    await rig.pool.execute(
        "INSERT INTO recoveries (chain, payment_id, token_address, to_address, amount, approval)"
        " VALUES ('anvil', $1, NULL, $2, $3, $4)",
        payment_id,
        OUTSIDER,
        ETH // 20,
        b"\x00" * 32,
    )
    with structlog.testing.capture_logs() as logs:
        await rig.settle(rig.sweeper(), max_rounds=12)
    assert any(e["event"] == "sweep.policy_refused" for e in logs)
    row = await rig.pool.fetchrow("SELECT status, error FROM recoveries")
    assert row["status"] == "failed" and "does not verify" in row["error"]
    assert await rig.sweeps("recover") == []
    assert rig.balance(OUTSIDER) == outsider


async def test_recover_mistakes_are_one_line(token_rig: Rig, capsys) -> None:  # type: ignore[no-untyped-def]
    rig = token_rig
    payment_id = await rig.pay_token("TD6", 1063, 5 * 10**6)
    await rig.add_native_transfer(payment_id, ETH // 20)
    rig.mine(2)
    await scanned(rig)
    for args, message in (
        ((payment_id, "--to", OUTSIDER.lower()), "is not a checksummed address: use "),
        (("pay_" + "0" * 32, "--to", OUTSIDER), "no payment"),
        ((payment_id, "--to", OUTSIDER, "--amount", "1"), "more than the 0.05 ETH"),
        ((payment_id, "--to", OUTSIDER, "--asset", "TD18"), "holds no TD18"),
        ((payment_id, "--to", OUTSIDER, "--asset", "XYZ"), "is not an asset of anvil"),
    ):
        assert await recover(rig, *args) == 1
        err = capsys.readouterr().err
        assert err.startswith("ctripd: ") and message in err and len(err.splitlines()) == 1
    assert await rig.pool.fetchval("SELECT count(*) FROM recoveries") == 0
