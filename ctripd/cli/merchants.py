"""`ctripd merchants create|list|show|disable|set-treasury|unset-treasury`."""

from __future__ import annotations

import argparse
from typing import Any

import asyncpg
from eth_utils import is_checksum_address, is_hex_address, to_checksum_address

from ctripd.chain.wallet import from_config
from ctripd.cli.common import (
    CliError,
    clean,
    configured_chain,
    print_json,
    print_table,
    run_on_database,
)
from ctripd.config import Config
from ctripd.formats import iso
from ctripd.ledger.merchants import (
    create_merchant,
    disable_merchant,
    get_merchant,
    list_merchants,
    set_treasury,
    unset_treasury,
)


def _shown(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "created_at": iso(row["created_at"]),
        "disabled_at": iso(row["disabled_at"]),
        "keys": row["keys"],
        # Chains not named sweep this merchant's payments to their own treasury.
        "treasuries": row.get("treasuries", {}),
    }


def _print(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print_json(rows)
        return
    print_table(
        ("ID", "NAME", "KEYS", "CREATED", "DISABLED"),
        [(r["id"], r["name"], r["keys"], r["created_at"], r["disabled_at"] or "-") for r in rows],
    )


def cmd_create(args: argparse.Namespace) -> int:
    async def work(config: Config, pool: asyncpg.Pool) -> dict[str, Any]:
        return await create_merchant(pool, args.id, args.name or args.id)

    try:
        row = run_on_database(args, work)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    _print([_shown(row)], args.json)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    async def work(config: Config, pool: asyncpg.Pool) -> list[dict[str, Any]]:
        return await list_merchants(pool)

    _print([_shown(r) for r in run_on_database(args, work)], args.json)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    async def work(config: Config, pool: asyncpg.Pool) -> dict[str, Any]:
        return await get_merchant(pool, args.id)

    _print_one(_shown(run_on_database(args, work)), args.json)
    return 0


def cmd_disable(args: argparse.Namespace) -> int:
    async def work(config: Config, pool: asyncpg.Pool) -> dict[str, Any]:
        return await disable_merchant(pool, args.id)

    _print([_shown(run_on_database(args, work))], args.json)
    return 0


def cmd_set_treasury(args: argparse.Namespace) -> int:
    address = args.address
    if not is_checksum_address(address):
        hint = f": use {to_checksum_address(address)}" if is_hex_address(address) else ""
        raise CliError(f"{clean(address)!r} is not a checksummed address{hint}")

    async def work(config: Config, pool: asyncpg.Pool) -> dict[str, Any]:
        chain = configured_chain(config, args.chain)
        return await set_treasury(pool, from_config(config), args.id, chain.name, address)

    _print_one(_shown(run_on_database(args, work)), args.json)
    return 0


def cmd_unset_treasury(args: argparse.Namespace) -> int:
    async def work(config: Config, pool: asyncpg.Pool) -> dict[str, Any]:
        return await unset_treasury(pool, args.id, configured_chain(config, args.chain).name)

    _print_one(_shown(run_on_database(args, work)), args.json)
    return 0


def _print_one(row: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(row)
        return
    _print([row], False)
    for chain, address in row["treasuries"].items():
        print(f"treasury on {chain}: {address}")


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("merchants", help="create, list, show and disable merchants")
    msub = parser.add_subparsers(dest="merchants_command", required=True)
    create = msub.add_parser("create", help="create a merchant")
    create.add_argument("id", help="the merchant's id, as keys and payments name it")
    create.add_argument("--name", help="display name (default: the id)")
    create.set_defaults(func=cmd_create)
    listing = msub.add_parser("list", help="list merchants")
    listing.set_defaults(func=cmd_list)
    show = msub.add_parser("show", help="show one merchant")
    show.add_argument("id")
    show.set_defaults(func=cmd_show)
    disable = msub.add_parser("disable", help="disable a merchant: its API keys stop working")
    disable.add_argument("id")
    disable.set_defaults(func=cmd_disable)
    set_treasury_ = msub.add_parser(
        "set-treasury",
        help="sweep the merchant's payments on a chain to its own treasury (needs the mnemonic)",
    )
    set_treasury_.add_argument("id")
    set_treasury_.add_argument("address", help="checksummed address")
    set_treasury_.add_argument("--chain", required=True)
    set_treasury_.set_defaults(func=cmd_set_treasury)
    unset = msub.add_parser(
        "unset-treasury", help="sweep the merchant's payments on a chain to the chain's treasury"
    )
    unset.add_argument("id")
    unset.add_argument("--chain", required=True)
    unset.set_defaults(func=cmd_unset_treasury)
    for command in (create, listing, show, disable, set_treasury_, unset):
        command.add_argument("--json", action="store_true", help="JSON output")
