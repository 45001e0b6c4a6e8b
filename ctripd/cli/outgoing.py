"""`ctripd refunds list|show` and `ctripd payouts list|show|approve|reject|wallet`: what
merchants asked to send, and the operator's approvals (signed here with the wallet's approval
key: the sweeper of the running daemon sends only what verifies)."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import aiohttp
import asyncpg

from ctripd.chain.evm import balance_of_data
from ctripd.chain.rpc import RpcClient, RpcError
from ctripd.chain.wallet import from_config
from ctripd.cli.common import (
    CliError,
    add_limit,
    clean,
    listing_limit,
    load,
    print_json,
    print_table,
    run_on_database,
)
from ctripd.config import Config
from ctripd.jobs.outgoing_policy import PayoutWallet
from ctripd.ledger import payouts, refunds
from ctripd.money import to_decimal_string


def _show(item: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(item)
        return
    for key, value in item.items():
        print(f"{key}: {clean(value)}")


def cmd_refunds_list(args: argparse.Namespace) -> int:
    limit = listing_limit(None, (), args.limit, refunds.MAX_LIST)

    async def work(config: Config, pool: asyncpg.Pool) -> list[dict[str, Any]]:
        return await refunds.listing(pool, limit)

    found = run_on_database(args, work)
    if args.json:
        print_json(found)
        return 0
    print_table(
        ("ID", "PAYMENT", "STATUS", "AMOUNT", "ASSET", "TO", "SOURCE", "TX"),
        [
            (
                r["id"],
                r["payment_id"],
                r["status"],
                r["amount"],
                r["asset"],
                r["to"],
                r["source"] or "",
                r["tx_hash"] or "",
            )
            for r in found
        ],
    )
    return 0


def cmd_refunds_show(args: argparse.Namespace) -> int:
    async def work(config: Config, pool: asyncpg.Pool) -> dict[str, Any] | None:
        return await refunds.get(pool, args.refund_id, None)

    found = run_on_database(args, work)
    if found is None:
        raise CliError(f"no refund {clean(args.refund_id)!r}")
    _show(found, args.json)
    return 0


def cmd_payouts_list(args: argparse.Namespace) -> int:
    limit = listing_limit(args.status, payouts.STATUSES, args.limit, payouts.MAX_LIST)

    async def work(config: Config, pool: asyncpg.Pool) -> list[dict[str, Any]]:
        page, _ = await payouts.page(pool, None, status=args.status, limit=limit)
        return page

    found = run_on_database(args, work)
    if args.json:
        print_json(found)
        return 0
    print_table(
        ("ID", "MERCHANT", "STATUS", "AMOUNT", "ASSET", "CHAIN", "TO", "REASON"),
        [
            (
                p["id"],
                p["merchant"],
                p["status"],
                p["amount"],
                p["asset"],
                p["chain"],
                p["to"],
                p["reason"] or "",
            )
            for p in found
        ],
    )
    return 0


def cmd_payouts_show(args: argparse.Namespace) -> int:
    async def work(config: Config, pool: asyncpg.Pool) -> dict[str, Any] | None:
        return await payouts.get(pool, args.payout_id, None)

    found = run_on_database(args, work)
    if found is None:
        raise CliError(f"no payout {clean(args.payout_id)!r}")
    _show(found, args.json)
    return 0


def _decide(approve: bool) -> Any:
    def cmd(args: argparse.Namespace) -> int:
        async def work(config: Config, pool: asyncpg.Pool) -> dict[str, Any]:
            return await payouts.decide(
                pool,
                from_config(config),
                args.payout_id,
                approve,
                operator_url=bool(config.webhooks.url),
            )

        payout = run_on_database(args, work)
        if args.json:
            print_json(payout)
        else:
            print(
                f"payout {payout['id']} {'approved' if approve else 'rejected'}: "
                f"{payout['amount']} {payout['asset']} on {payout['chain']} to {payout['to']}"
            )
        return 0

    return cmd


async def _balances(config: Config, address: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as session:
        for chain in config.chains:
            rpc = RpcClient(chain.name, list(chain.rpc), session, timeout=chain.rpc_timeout)
            assets = [(chain.native.symbol, None, chain.native.decimals)] + [
                (t.symbol, t.address, t.decimals) for t in chain.tokens.values()
            ]
            calls: list[tuple[str, list[Any]]] = [
                ("eth_getBalance", [address, "latest"])
                if token is None
                else ("eth_call", [{"to": token, "data": balance_of_data(address)}, "latest"])
                for _, token, _ in assets
            ]
            try:
                answers = await rpc.batch(calls)
            except RpcError as exc:
                rows.append({"chain": chain.name, "error": str(exc)})
                continue
            for (symbol, _, decimals), answer in zip(assets, answers, strict=True):
                units = int(answer, 16) if answer not in (None, "0x") else 0
                rows.append(
                    {
                        "chain": chain.name,
                        "asset": symbol,
                        "balance": to_decimal_string(units, decimals),
                        "balance_base_units": str(units),
                    }
                )
    return rows


def cmd_payouts_wallet(args: argparse.Namespace) -> int:
    config = load(args)
    wallet = PayoutWallet.of(from_config(config), config.payouts.wallet_index)
    rows = asyncio.run(_balances(config, wallet.address))
    if args.json:
        print_json({"address": wallet.address, "index": wallet.index, "balances": rows})
        return 0
    print(f"payout wallet {wallet.address} (m/44'/60'/1'/0/{wallet.index})")
    for r in rows:
        print(
            f"  {r['chain']}: error {r['error']}"
            if "error" in r
            else f"  {r['chain']} {r['asset']}: {r['balance']}"
        )
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    refunds_parser = sub.add_parser("refunds", help="refunds merchants asked for")
    rsub = refunds_parser.add_subparsers(dest="refunds_command", required=True)
    listing = rsub.add_parser("list", help="every refund, oldest first")
    add_limit(listing, refunds.MAX_LIST, refunds.MAX_LIST)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_refunds_list)
    show = rsub.add_parser("show", help="one refund")
    show.add_argument("refund_id", help="refund id (ref_…)")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_refunds_show)

    payouts_parser = sub.add_parser("payouts", help="payouts: list, approve, the payout wallet")
    psub = payouts_parser.add_subparsers(dest="payouts_command", required=True)
    listing = psub.add_parser("list", help="payouts, newest first")
    listing.add_argument("--status", help=f"one of {', '.join(payouts.STATUSES)}")
    add_limit(listing, 20, payouts.MAX_LIST)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_payouts_list)
    show = psub.add_parser("show", help="one payout")
    show.add_argument("payout_id", help="payout id (po_…)")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_payouts_show)
    for name, approve, what in (
        ("approve", True, "approve a payout waiting for approval (signed with the wallet)"),
        ("reject", False, "reject a payout waiting for approval"),
    ):
        decide = psub.add_parser(name, help=what)
        decide.add_argument("payout_id", help="payout id (po_…)")
        decide.add_argument("--json", action="store_true")
        decide.set_defaults(func=_decide(approve))
    wallet = psub.add_parser(
        "wallet", help="the payout wallet's address and balances (fund it on every chain)"
    )
    wallet.add_argument("--json", action="store_true")
    wallet.set_defaults(func=cmd_payouts_wallet)
