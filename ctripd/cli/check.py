"""`ctripd check`: config, database and every RPC URL, one line per check."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp
import asyncpg

from ctripd import db
from ctripd.chain import delegate
from ctripd.chain.rpc import RpcClient, display_url
from ctripd.chain.tokens import decimals_mismatches
from ctripd.cli.common import EXIT_CONFIG, check_secrets
from ctripd.config import ChainConfig, ConfigError, load_config
from ctripd.errors import CtripdError


async def run_checks(config_path: str) -> int:
    failures = 0

    def report(ok: bool, what: str, detail: str) -> None:
        nonlocal failures
        failures += 0 if ok else 1
        print(f"{'ok  ' if ok else 'FAIL'} {what}: {detail}")

    try:
        config = load_config(config_path)
        check_secrets(config)
    except ConfigError as exc:
        report(False, "config", str(exc))
        return EXIT_CONFIG
    report(True, "config", f"{config.path} and {config.daemon.chains_file}")

    try:
        dsn = await asyncio.to_thread(db.database_dsn, config)
        conn = await asyncio.wait_for(asyncpg.connect(dsn), timeout=10)
        try:
            version = await conn.fetchval("SHOW server_version")
        finally:
            await conn.close()
        report(True, "database", f"{db.dsn_summary(dsn)} (PostgreSQL {version})")
        pending = await asyncio.to_thread(db.pending_migrations, dsn)
        if not pending:
            report(True, "migrations", "all applied")
        elif config.daemon.migrate_on_start:
            report(True, "migrations", f"{_listed(pending)} pending, applied when ctripd starts")
        else:
            report(False, "migrations", f"{_listed(pending)} pending: run `ctripd migrate`")
    except (OSError, asyncpg.PostgresError, TimeoutError, CtripdError) as exc:
        report(False, "database", f"{type(exc).__name__}: {exc}")

    async with aiohttp.ClientSession() as session:
        for chain in config.chains:
            failed_before = failures
            for url in chain.rpc:
                client = RpcClient(chain.name, [url], session, timeout=chain.rpc_timeout)
                # Provider URLs carry API keys in their paths and queries: never printed.
                what = f"chain {chain.name} rpc {display_url(url)}"
                try:
                    got = await client.chain_id()
                    head = await client.block_number()
                except CtripdError as exc:
                    report(False, what, str(exc))
                    continue
                if got != chain.chain_id:
                    report(False, what, f"chain id {got}, configured {chain.chain_id}")
                    continue
                report(True, what, f"chain id {got}, head {head}")
            if chain.tokens and failures == failed_before:
                await check_tokens(chain, RpcClient(chain.name, list(chain.rpc), session), report)
            if failures == failed_before:
                rpc = RpcClient(chain.name, list(chain.rpc), session)
                await check_sweep_mode(chain, rpc, report)
    print("all checks passed" if not failures else f"{failures} check(s) failed")
    return 0 if not failures else 1


async def check_tokens(
    chain: ChainConfig, rpc: RpcClient, report: Callable[[bool, str, str], None]
) -> None:
    """decimals() of every configured token against its configuration."""
    try:
        wrong = {m.token.symbol: m for m in await decimals_mismatches(rpc, chain)}
    except CtripdError as exc:
        report(False, f"chain {chain.name} tokens", str(exc))
        return
    for symbol, token in sorted(chain.tokens.items()):
        what = f"chain {chain.name} token {symbol}"
        if symbol in wrong:
            report(False, what, wrong[symbol].problem())
        else:
            report(True, what, f"{token.decimals} decimals")


async def check_sweep_mode(
    chain: ChainConfig, rpc: RpcClient, report: Callable[[bool, str, str], None]
) -> None:
    """Whether the chain takes EIP-7702 transactions, as `auto` and `eip7702` need, and the
    configured delegate's code."""
    what = f"chain {chain.name} sweep_mode {chain.sweep_mode}"
    try:
        supported = chain.sweep_mode != "topup" and await delegate.supports_7702(
            rpc, chain.chain_id
        )
        code = None
        if chain.sweep_delegate is not None:
            code = await rpc.call("eth_getCode", [chain.sweep_delegate, "latest"])
    except CtripdError as exc:
        report(False, what, str(exc))
        return
    if chain.sweep_mode == "topup":
        report(True, what, "gas top-ups")
    elif supported:
        report(True, what, "EIP-7702 batches (the node takes type-4 transactions)")
    elif chain.sweep_mode == "auto":
        report(True, what, "gas top-ups (the node refuses EIP-7702 transactions)")
    else:
        report(False, what, "the node refuses EIP-7702 (type-4) transactions")
    if chain.sweep_delegate is not None:
        ok = delegate.is_delegate_for(code, chain.treasury)
        report(
            ok,
            f"chain {chain.name} sweep_delegate {chain.sweep_delegate}",
            "the sweep delegate's code for the treasury"
            if ok
            else "its code is not the sweep delegate's sweeping to the chain's treasury",
        )


def _listed(ids: list[str]) -> str:
    return f"{len(ids)} ({', '.join(ids)})"
