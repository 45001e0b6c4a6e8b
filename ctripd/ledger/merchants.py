"""Merchants: the tenants that own API keys, payments and webhook endpoints. Created and
disabled by the operator's CLI; a disabled merchant's keys stop working on the next request."""

from __future__ import annotations

import re
from typing import Any

import asyncpg

from ctripd.db import Conn, queries
from ctripd.errors import CtripdError, NotFoundError

Q = queries("merchants")

DEFAULT = "default"
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def check_merchant_id(merchant: str) -> str:
    if not _ID.fullmatch(merchant):
        raise ValueError("merchant must be 1-64 letters, digits, '_', '.' or '-'")
    return merchant


async def create_merchant(conn: Conn | asyncpg.Pool, merchant: str, name: str) -> dict[str, Any]:
    """A new merchant row; an id already taken is an error."""
    check_merchant_id(merchant)
    if not name.strip() or len(name) > 100:
        raise ValueError("name must be 1-100 characters")
    row = await conn.fetchrow(Q["insert_merchant"], merchant, name)
    if row is None:
        raise CtripdError(f"merchant {merchant!r} exists already")
    return {**dict(row), "keys": 0}


async def list_merchants(conn: Conn | asyncpg.Pool) -> list[dict[str, Any]]:
    return [dict(r) for r in await conn.fetch(Q["list_merchants"], None)]


async def get_merchant(conn: Conn | asyncpg.Pool, merchant: str) -> dict[str, Any]:
    row = await conn.fetchrow(Q["list_merchants"], merchant)
    if row is None:
        raise NotFoundError(f"no merchant {merchant!r}")
    return dict(row)


async def disable_merchant(conn: Conn | asyncpg.Pool, merchant: str) -> dict[str, Any]:
    """Disable a merchant: its keys are refused from now on. Disabling twice is an error."""
    disabled = await conn.fetchval(Q["disable_merchant"], merchant) is not None
    row = await get_merchant(conn, merchant)
    if not disabled:
        raise CtripdError(f"merchant {merchant!r} was already disabled")
    return row
