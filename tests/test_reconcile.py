"""`ctripd reconcile`: clean after real sweeps, loud after funds move behind ctripd's back."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest
from test_sweeper import ETH, FUNDER, WALLET, Rig, make_rig

from ctripd.cli import main as cli
from ctripd.config import Config
from ctripd.dev import tokens as devtokens
from ctripd.dev.devnet import AnvilProcess
from ctripd.jobs.sweeper import InjectedCrash, Step
from ctripd.ledger.reconcile import reconcile


async def run_cli(rig: Rig, *args: str) -> int:
    return await asyncio.to_thread(cli.main, ["--config", rig.config.path, "reconcile", *args])


async def test_reconcile_clean_after_sweeps_then_mismatch_after_funds_moved(
    write_config: Callable[..., Config],
    pool: asyncpg.Pool,
    anvil: AnvilProcess,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with make_rig(write_config, pool, anvil, tokens=True) as rig:
        await rig.pay_native(1000, ETH)
        await rig.pay_token("TD6", 1001, 25 * 10**6)
        await rig.pay_token("USDTL", 1002, 3 * 10**6)
        rig.mine()
        await rig.settle(rig.sweeper())
        assert {s["status"] for s in await rig.sweeps()} == {"confirmed"}
        capsys.readouterr()

        assert await run_cli(rig, "--chain", "anvil") == 0
        out = capsys.readouterr().out
        assert "reconcile anvil at block" in out
        assert "3 addresses, 12 balances, 0 mismatches" in out
        assert "MISMATCH" not in out

        # Behind ctripd's back: ETH appears at one deposit, unrecorded tokens at another.
        native_deposit, token_deposit = WALLET.address(1000), WALLET.address(1001)
        left = rig.balance(native_deposit)
        rig.rpc_sync("anvil_setBalance", [native_deposit, hex(left + 5 * 10**15)])
        devtokens.mint(rig.anvil.url, rig.token("TD6"), token_deposit, 10**6, FUNDER)
        rig.mine(2)

        assert await run_cli(rig, "--chain", "anvil") == 1
        out = capsys.readouterr().out
        lines = [line for line in out.splitlines() if line.startswith("MISMATCH")]
        assert len(lines) == 2
        assert any(
            native_deposit in line and " ETH:" in line and "difference 0.005 " in line
            for line in lines
        )
        assert any(
            token_deposit in line and " TD6:" in line and "difference 1 (1000000)" in line
            for line in lines
        )

        assert await run_cli(rig, "--chain", "anvil", "--json") == 1
        report: dict[str, Any] = json.loads(capsys.readouterr().out)
        assert {(m["address"], m["asset"]) for m in report["mismatches"]} == {
            (native_deposit, "ETH"),
            (token_deposit, "TD6"),
        }


async def test_funds_left_in_place_are_listed_as_held(
    write_config: Callable[..., Config],
    pool: asyncpg.Pool,
    anvil: AnvilProcess,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Tokens sent to an ETH payment, and funds of an expired payment, are recorded and never
    swept: the books match the chain, and the operator sees them to decide on a refund."""
    async with make_rig(write_config, pool, anvil, tokens=True) as rig:
        paid = await rig.pay_native(1000, ETH)
        tx, log_index = rig.send_token("TD6", WALLET.address(1000), 5 * 10**6)
        async with rig.pool.acquire() as conn:
            await rig.insert_transfer(
                conn, paid, rig.token("TD6"), WALLET.address(1000), 5 * 10**6, tx, log_index
            )
        expired = await rig.pay_native(1001, ETH // 4)
        await rig.pool.execute("UPDATE payments SET status = 'expired' WHERE id = $1", expired)
        rig.mine()
        await rig.settle(rig.sweeper())
        capsys.readouterr()

        assert await run_cli(rig, "--chain", "anvil") == 0
        out = capsys.readouterr().out
        assert "0 mismatches, 2 held, 0 recoveries" in out
        held = sorted(line for line in out.splitlines() if line.startswith("HELD"))
        assert held == sorted(
            [
                f"HELD {WALLET.address(1000)} TD6: 5 (5000000) of payment {paid}, another asset"
                " than the payment's",
                f"HELD {WALLET.address(1001)} ETH: 0.25 (250000000000000000) of payment"
                f" {expired}, the payment is expired",
            ]
        )
        assert rig.token_balance("TD6", WALLET.address(1000)) == 5 * 10**6  # left in place


async def test_missing_credit_is_a_mismatch(
    write_config: Callable[..., Config], pool: asyncpg.Pool, anvil: AnvilProcess
) -> None:
    """Tokens at a deposit address that no transfer row accounts for."""
    async with make_rig(write_config, pool, anvil, tokens=True) as rig:
        await rig.pay_native(1000, ETH)
        rig.send_token("TD18", WALLET.address(1000), 10**18)  # never recorded
        rig.mine()
        report = await reconcile(rig.pool, rig.rpc, rig.chain)
        assert [(m.asset, m.expected, m.actual) for m in report.mismatches] == [("TD18", 0, 10**18)]


async def test_sweep_in_flight_is_listed_not_compared(
    write_config: Callable[..., Config], pool: asyncpg.Pool, anvil: AnvilProcess
) -> None:
    async with make_rig(write_config, pool, anvil) as rig:
        await rig.pay_native(1000, ETH)
        await rig.pay_native(1001, ETH)
        rig.mine()
        with pytest.raises(InjectedCrash):
            await rig.sweeper(crash_at=Step.SENT).run_once()
        rig.mine(2)
        # Both sweeps are signed, the first is mined: its row is not final, so no comparison.
        report = await reconcile(rig.pool, rig.rpc, rig.chain)
        assert sorted(report.in_flight) == sorted([WALLET.address(1000), WALLET.address(1001)])
        assert (report.mismatches, report.addresses) == ([], 0)
        await rig.settle(rig.sweeper())
        report = await reconcile(rig.pool, rig.rpc, rig.chain)
        assert (report.in_flight, report.mismatches, report.addresses) == ([], [], 2)


async def test_unknown_chain_is_refused(
    write_config: Callable[..., Config],
    pool: asyncpg.Pool,
    anvil: AnvilProcess,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with make_rig(write_config, pool, anvil) as rig:
        assert await run_cli(rig, "--chain", "nope") == 1
        assert "unknown chain 'nope'" in capsys.readouterr().err
