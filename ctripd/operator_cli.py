"""Operator views on the command line: `ctripd payments list|show` across every merchant (the API
shows a merchant only its own) and `ctripd chains`, the data of `GET /v1/chains`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, TypeVar

import aiohttp
import asyncpg
import structlog

from ctripd import db, payments
from ctripd.api import STATUSES
from ctripd.chains_api import chain_rows, chain_status
from ctripd.cli import CliError, database_dsn, listing_limit, load
from ctripd.config import ChainConfig, Config
from ctripd.rpc import RpcClient, RpcError

Q = db.queries("operator_cli")
DEFAULT_LIMIT = 20
# A listing is rendered in memory at once.
MAX_LIMIT = 10_000
T = TypeVar("T")


async def _with_pool(
    args: argparse.Namespace, work: Callable[[Config, asyncpg.Pool], Awaitable[T]]
) -> T:
    """Run `work` on a one-connection pool (so jsonb decodes as in the daemon)."""
    config = load(args)
    dsn = await asyncio.to_thread(database_dsn, config)
    pool = await db.create_pool(dsn, min_size=1, max_size=1)
    try:
        return await work(config, pool)
    except asyncpg.UndefinedTableError:
        raise CliError("the database is not migrated yet: run `ctripd migrate` first") from None
    finally:
        await pool.close()


async def list_all_payments(
    pool: asyncpg.Pool,
    *,
    merchant: str | None = None,
    status: str | None = None,
    chain: str | None = None,
    order_id: str | None = None,
    limit: int = DEFAULT_LIMIT,
) -> list[dict[str, Any]]:
    """Payment objects of every merchant (or one), newest first, each with its `merchant`."""
    rows = await pool.fetch(Q["list_payments"], merchant, status, chain, order_id, limit)
    rendered = await payments.render_rows(pool, rows)
    return [{**p, "merchant": r["merchant"]} for r, p in zip(rows, rendered, strict=True)]


# --- output -------------------------------------------------------------------------------------


def _clean(value: Any) -> str:
    """Text for a terminal: merchants choose order ids, so control characters become '?'."""
    text = "" if value is None else str(value)
    return "".join(c if c.isprintable() else "?" for c in text)


def _print_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    table = [list(header)] + [[_clean(cell) for cell in row] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for line in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


# --- payments -----------------------------------------------------------------------------------


def cmd_payments_list(args: argparse.Namespace) -> int:
    limit = listing_limit(args.status, STATUSES, args.limit, MAX_LIMIT)

    async def work(config: Config, pool: asyncpg.Pool) -> list[dict[str, Any]]:
        if args.chain is not None and config.chain(args.chain) is None:
            names = ", ".join(c.name for c in config.chains)
            raise CliError(f"unknown chain {args.chain!r} (configured: {names})")
        return await list_all_payments(
            pool,
            merchant=args.merchant,
            status=args.status,
            chain=args.chain,
            order_id=args.order_id,
            limit=limit,
        )

    found = asyncio.run(_with_pool(args, work))
    if args.json:
        _print_json(found)
        return 0
    _print_table(
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
        return await payments.load_payment(pool, args.id)

    payment = asyncio.run(_with_pool(args, work))
    if payment is None:
        raise CliError(f"no payment {_clean(args.id)!r}")
    if args.json:
        _print_json(payment)
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
        print(f"{name.ljust(width)}  {_clean(value)}")
    if payment["transfers"]:
        print()
        _print_table(
            ("TX", "LOG", "BLOCK", "FROM", "AMOUNT", "CONFIRMATIONS", "STATUS"),
            [
                (
                    t["tx_hash"],
                    t["log_index"],
                    t["block_number"],
                    t["from"],
                    # A transfer may be in another asset than the payment's: always say which.
                    f"{t['amount']} {t['asset']}"
                    if t["amount"] is not None
                    else f"{t['amount_base_units']} base units",
                    t["confirmations"],
                    t["status"],
                )
                for t in payment["transfers"]
            ],
        )
    return 0


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


@contextlib.contextmanager
def _logs_to_stderr() -> Iterator[None]:
    """structlog prints to stdout by default; stdout is for the listing (and its JSON)."""
    saved = structlog.get_config()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    try:
        yield
    finally:
        structlog.configure(**saved)


def cmd_chains(args: argparse.Namespace) -> int:
    async def work(config: Config, pool: asyncpg.Pool) -> list[dict[str, Any]]:
        rows = await chain_rows(pool)
        async with aiohttp.ClientSession() as session:
            health = await asyncio.gather(*(probe_rpc(c, session) for c in config.chains))
        return [
            chain_status(chain, rows.get(chain.name), None, rpc)
            for chain, rpc in zip(config.chains, health, strict=True)
        ]

    with _logs_to_stderr():
        chains = asyncio.run(_with_pool(args, work))
    if args.json:
        _print_json(chains)
        return 0

    def rpc_cell(endpoint: dict[str, Any]) -> str:
        if endpoint["ok"]:
            return f"{endpoint['url']} ok {endpoint['latency_ms']} ms"
        return f"{endpoint['url']} FAILED ({endpoint['last_error']})"

    _print_table(
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


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("payments", help="list and show payments of every merchant")
    psub = parser.add_subparsers(dest="payments_command", required=True)
    listing = psub.add_parser("list", help="payments, newest first")
    listing.add_argument("--status", help=f"only this status ({', '.join(STATUSES)})")
    listing.add_argument("--chain", help="only this chain")
    listing.add_argument("--order-id", help="only payments with this order_id")
    listing.add_argument("--merchant", help="only this merchant's payments")
    listing.add_argument(
        "--limit",
        default=str(DEFAULT_LIMIT),
        help=f"at most this many ({DEFAULT_LIMIT}, at most {MAX_LIMIT})",
    )
    listing.add_argument("--json", action="store_true", help="JSON: an array of payment objects")
    listing.set_defaults(func=cmd_payments_list)
    show = psub.add_parser("show", help="one payment with its transfers")
    show.add_argument("id", help="payment id (pay_…)")
    show.add_argument("--json", action="store_true", help="JSON: the payment object")
    show.set_defaults(func=cmd_payments_show)
    chains = sub.add_parser(
        "chains", help="per chain: head, last scanned block, lag and RPC health (as /v1/chains)"
    )
    chains.add_argument("--json", action="store_true", help="JSON: an array of chain objects")
    chains.set_defaults(func=cmd_chains)
