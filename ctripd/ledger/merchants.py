"""Merchants: the tenants that own API keys, payments, webhook endpoints and optionally a
treasury per chain. Created and disabled by the operator's CLI; a disabled merchant's keys stop
working on the next request.

A merchant's treasury is approved by the wallet's approval key when the operator sets it, and
each payment is bound to its merchant by that key when the API creates it: the signing policy
sends a payment's sweep to its merchant's treasury only while both verify (`treasury_text`,
`binding_text`). A watch-only API (`[wallet] xpub`) holds no approval key, so its payments are
unbound and always swept to the chain's treasury."""

from __future__ import annotations

import re
from typing import Any

import asyncpg

from ctripd.chain.wallet import Wallet
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
    """The merchant with its treasuries (chain → address; chains not named use their own)."""
    row = await conn.fetchrow(Q["list_merchants"], merchant)
    if row is None:
        raise NotFoundError(f"no merchant {merchant!r}")
    treasuries = await conn.fetch(Q["treasuries"], merchant)
    return {**dict(row), "treasuries": {t["chain"]: t["address"] for t in treasuries}}


def treasury_text(merchant: str, chain: str, address: str) -> str:
    """What a treasury's approval signs: every field that decides where a sweep goes."""
    return f"treasury|{merchant}|{chain}|{address.lower()}"


def binding_text(payment_id: str, merchant: str, chain: str, index: int) -> str:
    """What a payment's binding to its merchant signs: the payment, its owner and its address."""
    return f"payment|{payment_id}|{merchant}|{chain}|{index}"


def binding(wallet: Wallet, payment_id: str, merchant: str, chain: str, index: int) -> bytes | None:
    """The new payment's binding to its merchant; None from a watch-only wallet (no approval
    key), which leaves the payment to the chain's treasury."""
    if wallet.watch_only:
        return None
    return wallet.approve(binding_text(payment_id, merchant, chain, index))


async def set_treasury(
    conn: Conn | asyncpg.Pool, wallet: Wallet, merchant: str, chain: str, address: str
) -> dict[str, Any]:
    """Sweep the merchant's payments on `chain` to `address` (checksummed) from now on."""
    await get_merchant(conn, merchant)
    approval = wallet.approve(treasury_text(merchant, chain, address))
    await conn.execute(Q["set_treasury"], merchant, chain, address, approval)
    return await get_merchant(conn, merchant)


async def unset_treasury(conn: Conn | asyncpg.Pool, merchant: str, chain: str) -> dict[str, Any]:
    """Sweep the merchant's payments on `chain` to the chain's treasury again."""
    if await conn.fetchval(Q["unset_treasury"], merchant, chain) is None:
        await get_merchant(conn, merchant)
        raise CtripdError(f"merchant {merchant!r} has no treasury of its own on {chain}")
    return await get_merchant(conn, merchant)


async def disable_merchant(conn: Conn | asyncpg.Pool, merchant: str) -> dict[str, Any]:
    """Disable a merchant: its keys are refused from now on. Disabling twice is an error."""
    disabled = await conn.fetchval(Q["disable_merchant"], merchant) is not None
    row = await get_merchant(conn, merchant)
    if not disabled:
        raise CtripdError(f"merchant {merchant!r} was already disabled")
    return row
