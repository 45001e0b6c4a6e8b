"""Operator views on the command line: `ctripd payments list|show` across every merchant (the API
shows a merchant only its own) and `ctripd chains`, the data of `GET /v1/chains`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from datetime import UTC, datetime
from typing import Any

import aiohttp
import asyncpg

from ctripd.chain.rpc import RpcClient, RpcError
from ctripd.cli.common import (
    CliError,
    add_limit,
    clean,
    configured_chain,
    listing_limit,
    logs_to_stderr,
    print_json,
    print_table,
    run_on_database,
)
from ctripd.config import ChainConfig, Config
from ctripd.http.chains import chain_status
from ctripd.ledger.chains import chain_rows
from ctripd.ledger.export import export_csv
from ctripd.ledger.objects import STATUSES, load_payment
from ctripd.ledger.payments import list_all_payments

DEFAULT_LIMIT = 20
# A listing is rendered in memory at once.
MAX_LIMIT = 10_000


# --- payments -----------------------------------------------------------------------------------


def cmd_payments_list(args: argparse.Namespace) -> int:
    limit = listing_limit(args.status, STATUSES, args.limit, MAX_LIMIT)

    async def work(config: Config, pool: asyncpg.Pool) -> list[dict[str, Any]]:
        if args.chain is not None:
            configured_chain(config, args.chain)
        return await list_all_payments(
            pool,
            merchant=args.merchant,
            status=args.status,
            chain=args.chain,
            order_id=args.order_id,
            limit=limit,
        )

    found = run_on_database(args, work)
    if args.json:
        print_json(found)
        return 0
    print_table(
        ("ID", "MERCHANT", "CHAIN", "AMOUNT", "RECEIVED", "STATUS", "SWEEP", "ORDER", "CREATED"),
        [
            (
                p["id"],
                p["merchant"],
                p["chain"],
                f"{p['amount']} {p['asset']}",
                p["amount_received"],
                p["status"] + (" (late)" if p["paid_late"] else ""),
                p["sweep"]["status"],
                p["order_id"] or "-",
                p["created_at"],
            )
            for p in found
        ],
    )
    return 0


def cmd_payments_show(args: argparse.Namespace) -> int:
    async def work(config: Config, pool: asyncpg.Pool) -> dict[str, Any] | None:
        return await load_payment(pool, args.id)

    payment = run_on_database(args, work)
    if payment is None:
        raise CliError(f"no payment {clean(args.id)!r}")
    if args.json:
        print_json(payment)
        return 0
    asset = payment["asset"]
    token = payment["token_address"]
    sweep = payment["sweep"]
    fields = [
        ("id", payment["id"]),
        ("merchant", payment["merchant"]),
        ("status", payment["status"] + (" (paid late)" if payment["paid_late"] else "")),
        ("chain", f"{payment['chain']} (chain id {payment['chain_id']})"),
        ("asset", f"{asset} ({token})" if token else f"{asset} (native)"),
        ("amount", f"{payment['amount']} {asset} ({payment['amount_base_units']} base units)"),
        ("received", f"{payment['amount_received']} {asset}"),
        ("confirmed", f"{payment['amount_confirmed']} {asset}"),
        ("overpaid", f"{payment['amount_overpaid']} {asset}"),
        ("transfers", _transfer_counts(payment["transfer_summary"])),
        ("address", payment["address"]),
        ("payment_uri", payment["payment_uri"]),
        ("confirmations_required", payment["confirmations_required"]),
        ("order_id", payment["order_id"] or "-"),
        ("metadata", json.dumps(payment["metadata"])),
        ("created_at", payment["created_at"]),
        ("expires_at", payment["expires_at"]),
        ("detected_at", payment["detected_at"] or "-"),
        ("confirmed_at", payment["confirmed_at"] or "-"),
        ("sweep", sweep["status"] + (f" {sweep['tx_hash']}" if sweep["tx_hash"] else "")),
    ]
    width = max(len(name) for name, _ in fields)
    for name, value in fields:
        print(f"{name.ljust(width)}  {clean(value)}")
    if payment["transfers"]:
        print()
        print_table(
            ("TX", "LOG", "BLOCK", "FROM", "AMOUNT", "CONFIRMATIONS", "STATUS"),
            [
                (
                    t["tx_hash"],
                    t["log_index"],
                    t["block_number"],
                    t["from"],
                    # A transfer may be in another asset than the payment's: always say which.
                    (
                        f"{t['amount']} {t['asset']}"
                        if t["amount"] is not None
                        else f"{t['amount_base_units']} base units"
                    )
                    # A dust aggregate: its tx is the last of the transfers it stands for.
                    + (f" ({t['count']} dust transfers)" if t["kind"] == "dust" else ""),
                    t["confirmations"],
                    t["status"],
                )
                for t in payment["transfers"]
            ],
        )
    return 0


def _transfer_counts(summary: dict[str, Any]) -> str:
    """The transfer summary in a line; the table below shows only the latest transfers."""
    text = f"{summary['count']} live ({summary['dust_count']} dust)"
    if summary["orphaned_count"]:
        text += f", {summary['orphaned_count']} orphaned"
    return text + (", latest shown below" if summary["has_more"] else "")


# --- chains -------------------------------------------------------------------------------------


async def probe_rpc(chain: ChainConfig, session: aiohttp.ClientSession) -> list[dict[str, Any]]:
    """Health of each RPC URL after one `eth_blockNumber` to it now (no retries)."""
    clients = [
        RpcClient(chain.name, [url], session, timeout=chain.rpc_timeout, retries=0)
        for url in chain.rpc
    ]

    async def probe(client: RpcClient) -> None:
        with contextlib.suppress(RpcError):  # recorded in the client's health
            await client.block_number()

    await asyncio.gather(*(probe(c) for c in clients))
    return [c.health()[0] for c in clients]


def cmd_chains(args: argparse.Namespace) -> int:
    async def work(config: Config, pool: asyncpg.Pool) -> list[dict[str, Any]]:
        rows = await chain_rows(pool)
        async with aiohttp.ClientSession() as session:
            health = await asyncio.gather(*(probe_rpc(c, session) for c in config.chains))
        return [
            chain_status(chain, rows.get(chain.name), None, rpc)
            for chain, rpc in zip(config.chains, health, strict=True)
        ]

    with logs_to_stderr():
        chains = run_on_database(args, work)
    if args.json:
        print_json(chains)
        return 0

    def rpc_cell(endpoint: dict[str, Any]) -> str:
        if endpoint["ok"]:
            return f"{endpoint['url']} ok {endpoint['latency_ms']} ms"
        return f"{endpoint['url']} FAILED ({endpoint['last_error']})"

    print_table(
        ("NAME", "CHAIN ID", "HEAD", "SCANNED", "LAG", "CONFIRMATIONS", "SCANNED AT", "RPC"),
        [
            (
                c["name"],
                c["chain_id"],
                "-" if c["head"] is None else c["head"],
                "-" if c["scanned_block"] is None else c["scanned_block"],
                "-" if c["lag"] is None else c["lag"],
                c["confirmations"],
                c["scanned_at"] or "-",
                ", ".join(rpc_cell(e) for e in c["rpc"]),
            )
            for c in chains
        ],
    )
    return 0


def cmd_payments_export(args: argparse.Namespace) -> int:
    def moment(text: str | None, default: datetime) -> datetime:
        if text is None:
            return default
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise CliError(f"{text!r} is not an ISO 8601 date or date-time") from None
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)

    start = moment(args.start, datetime(1970, 1, 1, tzinfo=UTC))
    end = moment(args.end, datetime.now(UTC))

    async def work(config: Config, pool: asyncpg.Pool) -> str:
        return await export_csv(pool, args.merchant, start, end, transfers=args.transfers)

    sys.stdout.write(run_on_database(args, work))
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("payments", help="list and show payments of every merchant")
    psub = parser.add_subparsers(dest="payments_command", required=True)
    listing = psub.add_parser("list", help="payments, newest first")
    listing.add_argument("--status", help=f"only this status ({', '.join(STATUSES)})")
    listing.add_argument("--chain", help="only this chain")
    listing.add_argument("--order-id", help="only payments with this order_id")
    listing.add_argument("--merchant", help="only this merchant's payments")
    add_limit(listing, DEFAULT_LIMIT, MAX_LIMIT)
    listing.add_argument("--json", action="store_true", help="JSON: an array of payment objects")
    listing.set_defaults(func=cmd_payments_list)
    show = psub.add_parser("show", help="one payment with its transfers")
    show.add_argument("id", help="payment id (pay_…)")
    show.add_argument("--json", action="store_true", help="JSON: the payment object")
    show.set_defaults(func=cmd_payments_show)
    exporting = psub.add_parser(
        "export", help="CSV for the books: fiat price, locked rates, amounts, sweeps and fees"
    )
    exporting.add_argument("--csv", action="store_true", required=True, help="CSV (the format)")
    exporting.add_argument("--from", dest="start", help="created at or after (ISO 8601)")
    exporting.add_argument("--to", dest="end", help="created before (ISO 8601)")
    exporting.add_argument("--merchant", help="only this merchant's payments")
    exporting.add_argument("--transfers", action="store_true", help="one row per transfer")
    exporting.set_defaults(func=cmd_payments_export)
    chains = sub.add_parser(
        "chains", help="per chain: head, last scanned block, lag and RPC health (as /v1/chains)"
    )
    chains.add_argument("--json", action="store_true", help="JSON: an array of chain objects")
    chains.set_defaults(func=cmd_chains)
