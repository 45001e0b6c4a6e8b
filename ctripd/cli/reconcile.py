"""`ctripd reconcile --chain C`: on-chain balances of the deposit addresses against the books."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

import aiohttp
import asyncpg

from ctripd.chain.rpc import RpcClient
from ctripd.chain.wallet import from_config
from ctripd.cli.common import configured_chain, run_on_database
from ctripd.config import Config
from ctripd.jobs.outgoing_policy import PayoutWallet
from ctripd.ledger.reconcile import Report, reconcile


def cmd_reconcile(args: argparse.Namespace) -> int:
    async def work(config: Config, pool: asyncpg.Pool) -> Report:
        chain = configured_chain(config, args.chain)
        async with aiohttp.ClientSession() as session:
            rpc = RpcClient(
                chain.name,
                list(chain.rpc),
                session,
                timeout=chain.rpc_timeout,
                expected_chain_id=chain.chain_id,
            )
            wallet = from_config(config)
            payout = (
                None
                if wallet.watch_only
                else PayoutWallet.of(wallet, config.payouts.wallet_index).address
            )
            return await reconcile(pool, rpc, chain, payout)

    report = run_on_database(args, work)
    if args.json:
        print(json.dumps(asdict(report)))
        return 1 if report.mismatches else 0
    print(
        f"reconcile {report.chain} at block {report.block}: {report.addresses} addresses, "
        f"{report.balances} balances, {len(report.mismatches)} mismatches, "
        f"{len(report.held)} held, {len(report.recoveries)} recoveries"
    )
    for m in report.mismatches:
        print(m.line())
    for address in report.in_flight:
        print(f"IN FLIGHT {address}: a sweep is unfinished, not compared")
    for held in report.held:
        print(held.line())
    for recovery in report.recoveries:
        print(recovery.line())
    for total in report.totals:
        print(total.line())
    for flow in report.payout_wallet:
        print(flow.line())
    return 1 if report.mismatches else 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "reconcile", help="compare deposit addresses' balances with credits and sweeps"
    )
    parser.add_argument("--chain", required=True, help="chain name from chains.yaml")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(func=cmd_reconcile)
