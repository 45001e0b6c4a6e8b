"""API keys: `ctk_<random>` bearer tokens, stored only as SHA-256, each owned by a merchant.

The key is shown once at creation; the database keeps its hash and a short prefix for listings.
A key is looked up by its hash (an index lookup that reveals nothing about near misses) and the
stored hash is compared again in constant time before it is trusted.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import re
import secrets
import sys
from dataclasses import dataclass
from typing import Any

import asyncpg

from ctripd.cli import with_connection
from ctripd.db import queries
from ctripd.errors import CtripdError, NotFoundError
from ctripd.payments import iso

Q = queries("apikeys")

KEY_PREFIX = "ctk_"
_KEY = re.compile(r"ctk_[A-Za-z0-9_-]{43}")
_MERCHANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# Shown in listings so an operator can tell keys apart; 8 random characters identify nothing.
SHOWN_PREFIX_LEN = len(KEY_PREFIX) + 8


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: int
    merchant: str


def generate_key() -> str:
    """A new key: 256 bits from the OS CSPRNG, URL-safe, recognisable by its `ctk_` prefix."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def well_formed(key: str) -> bool:
    return _KEY.fullmatch(key) is not None


def check_merchant(merchant: str) -> str:
    if not _MERCHANT.fullmatch(merchant):
        raise ValueError("merchant must be 1-64 letters, digits, '_', '.' or '-'")
    return merchant


async def create_key(
    conn: asyncpg.Connection, name: str, merchant: str
) -> tuple[str, dict[str, Any]]:
    """Store a new key's hash; returns the key (to show once) and its listing row."""
    if not name.strip() or len(name) > 100:
        raise ValueError("name must be 1-100 characters")
    key = generate_key()
    row = await conn.fetchrow(
        Q["insert_key"], name, check_merchant(merchant), key[:SHOWN_PREFIX_LEN], hash_key(key)
    )
    assert row is not None
    return key, dict(row)


async def authenticate(conn: asyncpg.Connection | asyncpg.Pool, key: str) -> ApiKey | None:
    """The live key matching `key`, or None (unknown, revoked or malformed)."""
    if not well_formed(key):
        return None
    digest = hash_key(key)
    row = await conn.fetchrow(Q["key_by_hash"], digest)
    if row is None or not hmac.compare_digest(bytes(row["key_hash"]), digest):
        return None
    return ApiKey(row["id"], row["merchant"])


async def list_keys(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    return [dict(r) for r in await conn.fetch(Q["list_keys"])]


async def revoke_key(conn: asyncpg.Connection, key_id: int) -> None:
    """Revoke a key; it stops working on the next request. Revoking twice is an error."""
    if await conn.fetchval(Q["revoke_key"], key_id) is not None:
        return
    exists = await conn.fetchrow(Q["key_exists"], key_id)
    if exists is None:
        raise NotFoundError(f"no API key with id {key_id}")
    raise CtripdError(f"API key {key_id} was already revoked at {iso(exists['revoked_at'])}")


# --- command line -------------------------------------------------------------------------------


def cmd_create(args: argparse.Namespace) -> int:
    from ctripd.cli import CliError

    async def work(conn: asyncpg.Connection) -> tuple[str, dict[str, Any]]:
        return await create_key(conn, args.name, args.merchant)

    try:
        key, row = asyncio.run(with_connection(args, work))
    except ValueError as exc:
        raise CliError(str(exc)) from None
    print(key)
    print(
        f"API key {row['id']} ({row['name']!r}, merchant {row['merchant']!r}) created; "
        "it is shown only this once.",
        file=sys.stderr,
    )
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    rows: list[dict[str, Any]] = asyncio.run(with_connection(args, list_keys))
    for row in rows:
        row["created_at"] = iso(row["created_at"])
        row["revoked_at"] = iso(row["revoked_at"])
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    header = ("ID", "NAME", "MERCHANT", "PREFIX", "CREATED", "REVOKED")
    table = [header] + [
        (
            str(r["id"]),
            r["name"],
            r["merchant"],
            r["prefix"] + "…",
            r["created_at"] or "",
            r["revoked_at"] or "-",
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for line in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    async def work(conn: asyncpg.Connection) -> None:
        await revoke_key(conn, args.id)

    asyncio.run(with_connection(args, work))
    print(f"API key {args.id} revoked")
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("api-key", help="create, list and revoke API keys")
    ksub = parser.add_subparsers(dest="api_key_command", required=True)
    create = ksub.add_parser("create", help="create a key and print it (shown once)")
    create.add_argument("--name", required=True, help="what the key is for")
    create.add_argument("--merchant", default="default", help="owner of its payments")
    create.set_defaults(func=cmd_create)
    listing = ksub.add_parser("list", help="list keys (prefixes only)")
    listing.add_argument("--json", action="store_true", help="JSON output")
    listing.set_defaults(func=cmd_list)
    revoke = ksub.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("id", type=int)
    revoke.set_defaults(func=cmd_revoke)
