"""API keys and the `/v1/` auth middleware. Keys are `ctk_<random>` bearer tokens, stored only
as SHA-256, each owned by a merchant and limited to its scopes (`http.scopes`).

The key is shown once at creation; the database keeps its hash and a short prefix for listings.
A key is looked up by its hash (an index lookup that reveals nothing about near misses) and the
stored hash is compared again in constant time before it is trusted.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiohttp import web

from ctripd.config import INT_MAX
from ctripd.db import Conn, queries
from ctripd.errors import CtripdError, NotFoundError
from ctripd.formats import iso
from ctripd.http.keys import API_POOL, CONFIG, MERCHANT, RATE_LIMITS
from ctripd.http.problems import Handler, Problem
from ctripd.http.scopes import SCOPES, check_scopes, required_scope
from ctripd.ledger.merchants import check_merchant_id

Q = queries("apikeys")

KEY_PREFIX = "ctk_"
_KEY = re.compile(r"ctk_[A-Za-z0-9_-]{43}")
# Shown in listings so an operator can tell keys apart; 8 random characters identify nothing.
SHOWN_PREFIX_LEN = len(KEY_PREFIX) + 8


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: int
    merchant: str
    scopes: frozenset[str]
    # Requests per rate-limit window; None: the configured default.
    rate_limit: int | None


def generate_key() -> str:
    """A new key: 256 bits from the OS CSPRNG, URL-safe, recognisable by its `ctk_` prefix."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def well_formed(key: str) -> bool:
    return _KEY.fullmatch(key) is not None


async def create_key(
    conn: Conn | asyncpg.Pool,
    name: str,
    merchant: str,
    scopes: Sequence[str] = SCOPES,
    rate_limit: int | None = None,
) -> tuple[str, dict[str, Any]]:
    """Store a new key's hash; returns the key (to show once) and its listing row. The merchant
    must exist (`ctripd merchants create`); the key may do what its `scopes` allow (all of them
    by default), `rate_limit` requests per window (None: `server.rate_limit`; 0: no limit)."""
    if not name.strip() or len(name) > 100:
        raise ValueError("name must be 1-100 characters")
    if rate_limit is not None and not 0 <= rate_limit <= INT_MAX:
        raise ValueError(f"rate limit must be between 0 and {INT_MAX}")
    key = generate_key()
    try:
        row = await conn.fetchrow(
            Q["insert_key"],
            name,
            check_merchant_id(merchant),
            key[:SHOWN_PREFIX_LEN],
            hash_key(key),
            check_scopes(list(scopes)),
            rate_limit,
        )
    except asyncpg.ForeignKeyViolationError:
        raise NotFoundError(
            f"no merchant {merchant!r}: create it first with `ctripd merchants create`"
        ) from None
    assert row is not None
    return key, dict(row)


async def authenticate(conn: Conn | asyncpg.Pool, key: str) -> ApiKey | None:
    """The live key matching `key`, or None (unknown, revoked, malformed, or its merchant
    disabled)."""
    if not well_formed(key):
        return None
    digest = hash_key(key)
    row = await conn.fetchrow(Q["key_by_hash"], digest)
    if row is None or not hmac.compare_digest(bytes(row["key_hash"]), digest):
        return None
    return ApiKey(row["id"], row["merchant"], frozenset(row["scopes"]), row["rate_limit"])


async def list_keys(conn: Conn | asyncpg.Pool) -> list[dict[str, Any]]:
    return [dict(r) for r in await conn.fetch(Q["list_keys"])]


async def revoke_key(conn: Conn | asyncpg.Pool, key_id: int) -> None:
    """Revoke a key; it stops working on the next request. Revoking twice is an error."""
    if await conn.fetchval(Q["revoke_key"], key_id) is not None:
        return
    exists = await conn.fetchrow(Q["key_exists"], key_id)
    if exists is None:
        raise NotFoundError(f"no API key with id {key_id}")
    raise CtripdError(f"API key {key_id} was already revoked at {iso(exists['revoked_at'])}")


def _unauthorized(detail: str) -> Problem:
    return Problem(
        401, detail, headers={"WWW-Authenticate": 'Bearer realm="ctripd", error="invalid_token"'}
    )


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Paths under /v1/ need `Authorization: Bearer <live key>` holding the route's scope and
    within its rate limit; binds the key's merchant."""
    if request.path.startswith("/v1/"):
        header = request.headers.get("Authorization")
        if not header:
            raise _unauthorized("missing header Authorization: Bearer <API key>")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not well_formed(token):
            raise _unauthorized("malformed Authorization header: expected Bearer ctk_…")
        key = await authenticate(request.app[API_POOL], token)
        if key is None:
            raise _unauthorized("unknown or revoked API key")
        scope = required_scope(request)
        if scope is not None and scope not in key.scopes:
            raise Problem(403, f"this API key lacks the scope {scope}", scope=scope)
        request[MERCHANT] = key.merchant
        return await _within_rate_limit(request, key, handler)
    return await handler(request)


async def _within_rate_limit(
    request: web.Request, key: ApiKey, handler: Handler
) -> web.StreamResponse:
    """Spend one request of the key's bucket; every answer carries the RateLimit fields."""
    server = request.app[CONFIG].server
    quota = server.rate_limit if key.rate_limit is None else key.rate_limit
    if quota == 0:
        return await handler(request)
    verdict = request.app[RATE_LIMITS].take(key.id, quota, server.rate_limit_window)
    if not verdict.allowed:
        raise Problem(
            429,
            f"this API key's rate limit of {quota} requests per {server.rate_limit_window} s "
            f"is spent; retry after {verdict.headers['Retry-After']} s",
            headers=verdict.headers,
        )
    try:
        response = await handler(request)
    except Problem as exc:
        exc.headers.update(verdict.headers)
        raise
    response.headers.update(verdict.headers)
    return response
