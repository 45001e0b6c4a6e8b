"""`ctripd check`: config, database and every RPC URL, one line per check."""

from __future__ import annotations

import asyncio

import aiohttp
import asyncpg

from ctripd import db
from ctripd.chain.rpc import RpcClient, display_url
from ctripd.cli.common import EXIT_CONFIG, check_secrets
from ctripd.config import ConfigError, load_config
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
                else:
                    report(True, what, f"chain id {got}, head {head}")
    print("all checks passed" if not failures else f"{failures} check(s) failed")
    return 0 if not failures else 1


def _listed(ids: list[str]) -> str:
    return f"{len(ids)} ({', '.join(ids)})"
