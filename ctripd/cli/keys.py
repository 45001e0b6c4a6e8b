"""`ctripd api-key create|list|revoke`."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import asyncpg

from ctripd.cli.common import CliError, print_json, print_table, run_on_database
from ctripd.config import Config
from ctripd.formats import iso
from ctripd.http.auth import create_key, list_keys, revoke_key
from ctripd.http.scopes import SCOPES
from ctripd.ledger.merchants import DEFAULT


def cmd_create(args: argparse.Namespace) -> int:
    async def work(config: Config, pool: asyncpg.Pool) -> tuple[str, dict[str, Any]]:
        return await create_key(
            pool, args.name, args.merchant, args.scope or SCOPES, args.rate_limit
        )

    try:
        key, row = run_on_database(args, work)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    print(key)
    print(
        f"API key {row['id']} ({row['name']!r}, merchant {row['merchant']!r}, scopes "
        f"{' '.join(row['scopes'])}) created; it is shown only this once.",
        file=sys.stderr,
    )
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    async def work(config: Config, pool: asyncpg.Pool) -> list[dict[str, Any]]:
        return await list_keys(pool)

    rows = run_on_database(args, work)
    for row in rows:
        row["created_at"] = iso(row["created_at"])
        row["revoked_at"] = iso(row["revoked_at"])
    if args.json:
        print_json(rows)
        return 0
    print_table(
        ("ID", "NAME", "MERCHANT", "SCOPES", "RATE LIMIT", "PREFIX", "CREATED", "REVOKED"),
        [
            (
                r["id"],
                r["name"],
                r["merchant"],
                "all" if list(r["scopes"]) == list(SCOPES) else ",".join(r["scopes"]),
                "default" if r["rate_limit"] is None else r["rate_limit"],
                r["prefix"] + "…",
                r["created_at"] or "",
                r["revoked_at"] or "-",
            )
            for r in rows
        ],
    )
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    async def work(config: Config, pool: asyncpg.Pool) -> None:
        await revoke_key(pool, args.id)

    run_on_database(args, work)
    print(f"API key {args.id} revoked")
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("api-key", help="create, list and revoke API keys")
    ksub = parser.add_subparsers(dest="api_key_command", required=True)
    create = ksub.add_parser("create", help="create a key and print it (shown once)")
    create.add_argument("--name", required=True, help="what the key is for")
    create.add_argument("--merchant", default=DEFAULT, help="owner of its payments")
    create.add_argument(
        "--scope",
        action="append",
        choices=SCOPES,
        help="what the key may do; repeat for several (default: every scope)",
    )
    create.add_argument(
        "--rate-limit",
        type=int,
        metavar="N",
        help="requests per server.rate_limit_window (default: server.rate_limit; 0: none)",
    )
    create.set_defaults(func=cmd_create)
    listing = ksub.add_parser("list", help="list keys (prefixes only)")
    listing.add_argument("--json", action="store_true", help="JSON output")
    listing.set_defaults(func=cmd_list)
    revoke = ksub.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("id", type=int)
    revoke.set_defaults(func=cmd_revoke)
