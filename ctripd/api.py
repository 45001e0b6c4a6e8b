"""HTTP API v1 (SPEC §5): bearer-key auth, create/read/list/cancel payments, problem+json errors.

Every path under `/v1/` needs a live API key (checked by middleware, so routes added by other
modules are covered too); the key's merchant scopes every read and write.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import math
import re
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
from aiohttp import web

from ctripd import apikeys, db, openapi, payments
from ctripd.app import CONFIG, WALLET
from ctripd.config import Config
from ctripd.money import AmountError, to_base_units
from ctripd.problems import Handler, Problem, problem_middleware, validation

Q = db.queries("api")
MERCHANT = web.RequestKey("merchant", str)

STATUSES = ("pending", "detected", "confirmed", "expired", "canceled")
CREATE_FIELDS = ("chain", "asset", "amount", "expires_in", "order_id", "metadata")
LIST_PARAMS = ("status", "chain", "order_id", "limit", "cursor")
METADATA_MAX_BYTES = 4096
METADATA_MAX_DEPTH = 16
ORDER_ID_MAX = 255
# 2^256-1 has 78 digits; with a point and up to 36 decimals an amount fits in 115 characters.
AMOUNT_MAX_LEN = 120
DEFAULT_LIMIT = 20
MAX_LIMIT = 100
INT64 = 2**63
DECIMAL_PATTERN = r"^(0|[1-9][0-9]*)(\.[0-9]+)?$"
_PAYMENT_ID = re.compile(r"pay_[0-9a-f]{32}")
_IDEMPOTENCY_KEY = re.compile(r"[\x20-\x7e]{1,255}")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Derivation indexes fetched from the sequence per round trip; unused ones at exit are skipped.
INDEX_BATCH = 100


@dataclass
class IndexPool:
    """Fresh derivation indexes from `address_index_seq`, fetched in batches."""

    batch: int
    free: deque[int] = field(default_factory=deque)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def take(self, pool: asyncpg.Pool) -> int:
        while not self.free:
            async with self.lock:
                if not self.free:
                    self.free.extend(await payments.next_address_indexes(pool, self.batch))
        return self.free.popleft()


@dataclass
class ApiState:
    indexes: IndexPool
    cursor_key: bytes | None = None


API_STATE = web.AppKey("api_state", ApiState)
POOL = web.AppKey("api_pool", asyncpg.Pool)


async def _no_session_reset(conn: asyncpg.Connection) -> None:
    """The API's statements leave no session state (no SET, LISTEN, cursor or advisory lock), so
    the reset query asyncpg sends on every release by default is skipped: it was one of the three
    round trips of a payment's creation (bench/). asyncpg still rolls back an open transaction."""


def _pool_ctx(dsn: str) -> Callable[[web.Application], AsyncIterator[None]]:
    """The API's own pool (the app's pool keeps the default reset for session-level users)."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        cfg = app[CONFIG].database
        app[POOL] = await asyncpg.create_pool(
            dsn,
            min_size=cfg.pool_min,
            max_size=cfg.pool_max,
            init=db._init_connection,
            reset=_no_session_reset,
            server_settings=db.SERVER_SETTINGS,
        )
        yield
        await app[POOL].close()

    return ctx


# --- auth ---------------------------------------------------------------------------------------


def _unauthorized(detail: str) -> Problem:
    return Problem(
        401, detail, headers={"WWW-Authenticate": 'Bearer realm="ctripd", error="invalid_token"'}
    )


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Paths under /v1/ need `Authorization: Bearer <live key>`; binds the key's merchant."""
    if request.path.startswith("/v1/"):
        header = request.headers.get("Authorization")
        if not header:
            raise _unauthorized("missing header Authorization: Bearer <API key>")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not apikeys.well_formed(token):
            raise _unauthorized("malformed Authorization header: expected Bearer ctk_…")
        key = await apikeys.authenticate(request.app[POOL], token)
        if key is None:
            raise _unauthorized("unknown or revoked API key")
        request[MERCHANT] = key.merchant
    return await handler(request)


# --- request parsing ----------------------------------------------------------------------------


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


async def _read_json(request: web.Request) -> Any:
    limit = request.app[CONFIG].server.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise Problem(413, f"request body exceeds {limit} bytes")
    if request.content_type != "application/json":
        raise Problem(415, f"Content-Type must be application/json, not {request.content_type!r}")
    body = await request.read()
    try:
        return json.loads(body, parse_constant=_reject_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as exc:
        raise Problem(400, f"malformed JSON: {exc}"[:300]) from None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 66 else text[:63] + "…'"


def _check_text(value: str, name: str) -> None:
    """Postgres TEXT holds neither NUL nor lone surrogates; refuse them instead of failing."""
    if "\x00" in value:
        raise validation(name, "must not contain NUL characters")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise validation(name, "must be valid Unicode (no lone surrogates)") from None


def _check_json_value(value: Any, name: str, depth: int) -> None:
    if depth > METADATA_MAX_DEPTH:
        raise validation("metadata", f"nests deeper than {METADATA_MAX_DEPTH} levels")
    if isinstance(value, str):
        _check_text(value, name)
    elif isinstance(value, bool) or value is None:
        pass
    elif isinstance(value, int | float):
        # Floats too: Postgres keeps 1e20 as the number 100000000000000000000, which reads back
        # as an int that no longer fits the 64 bits our JSON encoder writes.
        if not -INT64 <= value < INT64:
            raise validation(
                name, "numbers must be within the 64-bit integer range; send big numbers as strings"
            )
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key, name)
            _check_json_value(item, f"{name}.{key}"[:300], depth + 1)
    else:
        for i, item in enumerate(value):
            _check_json_value(item, f"{name}[{i}]", depth + 1)


def parse_create(
    body: Any, config: Config, merchant: str, idempotency_key: str | None
) -> payments.NewPayment:
    """Validate a create request; every problem is a 422 naming its field."""
    if not isinstance(body, dict):
        raise Problem(422, "the request body must be a JSON object")
    for name in body:
        if name not in CREATE_FIELDS:
            raise validation(
                str(name)[:100], f"unknown field (allowed: {', '.join(CREATE_FIELDS)})"
            )
    fields = {k: v for k, v in body.items() if v is not None}
    for name in ("chain", "asset", "amount"):
        if name not in fields:
            raise validation(name, "is required")

    chain_name = fields["chain"]
    chain = config.chain(chain_name) if isinstance(chain_name, str) else None
    if chain is None:
        known = ", ".join(c.name for c in config.chains)
        raise validation("chain", f"unknown chain {_short(chain_name)} (configured: {known})")
    symbol = fields["asset"]
    asset = chain.asset(symbol) if isinstance(symbol, str) else None
    if asset is None:
        known = ", ".join([chain.native.symbol, *chain.tokens])
        raise validation(
            "asset", f"unknown asset {_short(symbol)} on {chain.name} (known: {known})"
        )
    token_address, decimals = asset

    amount = fields["amount"]
    if isinstance(amount, int | float):
        raise validation("amount", 'must be a decimal string such as "12.5", not a JSON number')
    if not isinstance(amount, str):
        raise validation("amount", 'must be a decimal string such as "12.5"')
    if len(amount) > AMOUNT_MAX_LEN or not amount.isascii() or amount.endswith("\n"):
        raise validation("amount", 'must be a plain decimal string such as "12.5"')
    try:
        units = to_base_units(amount, decimals)
    except AmountError as exc:
        raise validation("amount", f"{exc} (asset {symbol} has {decimals} decimals)") from None

    p = config.payments
    expires_in = fields.get("expires_in", p.default_expiry)
    if isinstance(expires_in, bool) or not isinstance(expires_in, int):
        raise validation("expires_in", "must be an integer number of seconds")
    if not p.min_expiry <= expires_in <= p.max_expiry:
        raise validation("expires_in", f"must be between {p.min_expiry} and {p.max_expiry} seconds")

    order_id = fields.get("order_id")
    if order_id is not None:
        if not isinstance(order_id, str) or not 1 <= len(order_id) <= ORDER_ID_MAX:
            raise validation("order_id", f"must be a string of 1 to {ORDER_ID_MAX} characters")
        _check_text(order_id, "order_id")

    metadata = fields.get("metadata", {})
    if not isinstance(metadata, dict):
        raise validation("metadata", "must be a JSON object")
    _check_json_value(metadata, "metadata", 1)
    metadata_json = orjson.dumps(metadata)
    if len(metadata_json) > METADATA_MAX_BYTES:
        raise validation(
            "metadata", f"is {len(metadata_json)} bytes as JSON; at most {METADATA_MAX_BYTES}"
        )

    request_hash = None
    if idempotency_key is not None:
        request_hash = hashlib.sha256(orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)).digest()
    return payments.NewPayment(
        merchant=merchant,
        chain=chain.name,
        chain_id=chain.chain_id,
        asset=symbol,
        token_address=token_address,
        decimals=decimals,
        amount=units,
        confirmations_required=chain.confirmations,
        expires_in=expires_in,
        order_id=order_id,
        metadata=metadata,
        metadata_json=metadata_json.decode(),
        idempotency_key=idempotency_key,
        request_hash=request_hash,
    )


def _idempotency_key(request: web.Request) -> str | None:
    value = request.headers.get("Idempotency-Key")
    if value is None:
        return None
    if not _IDEMPOTENCY_KEY.fullmatch(value.strip()):
        raise Problem(
            400,
            "Idempotency-Key must be 1 to 255 printable ASCII characters",
            field="Idempotency-Key",
        )
    return value.strip()


# --- cursors ------------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _cursor_mac(key: bytes, merchant: str, payload: bytes) -> bytes:
    return hmac.digest(key, merchant.encode() + b"\x00" + payload, "sha256")[:16]


def encode_cursor(key: bytes, merchant: str, position: payments.Position) -> str:
    """An opaque cursor: the page position, signed so that a changed cursor is refused."""
    micros = (position.created_at - _EPOCH) // timedelta(microseconds=1)
    payload = orjson.dumps([micros, position.id])
    return f"{_b64(payload)}.{_b64(_cursor_mac(key, merchant, payload))}"


def decode_cursor(key: bytes, merchant: str, cursor: str) -> payments.Position:
    invalid = Problem(400, "invalid cursor: pass next_cursor back unchanged", field="cursor")
    body, _, mac = cursor.partition(".")
    try:
        payload, given = _unb64(body), _unb64(mac)
    except (binascii.Error, ValueError):
        raise invalid from None
    # Base64 decoding ignores stray padding bits: only the exact text we issued is accepted.
    canonical = _b64(payload) == body and _b64(given) == mac
    if not canonical or not hmac.compare_digest(given, _cursor_mac(key, merchant, payload)):
        raise invalid
    micros, payment_id = orjson.loads(payload)
    return payments.Position(_EPOCH + timedelta(microseconds=micros), payment_id)


async def _cursor_key(request: web.Request) -> bytes:
    state = request.app[API_STATE]
    if state.cursor_key is None:
        state.cursor_key = bytes(await request.app[POOL].fetchval(Q["cursor_key"]))
    return state.cursor_key


# --- handlers -----------------------------------------------------------------------------------


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, content_type="application/json", headers=headers
    )


def _not_found(payment_id: str) -> Problem:
    return Problem(404, f"no payment {_short(payment_id)}")


async def create_payment(request: web.Request) -> web.Response:
    app = request.app
    merchant = request[MERCHANT]
    idempotency_key = _idempotency_key(request)
    body = await _read_json(request)
    new = parse_create(body, app[CONFIG], merchant, idempotency_key)
    pool = app[POOL]
    index = await app[API_STATE].indexes.take(pool)
    payment = await payments.insert_payment(pool, new, index, app[WALLET].address(index))
    if payment is not None:
        return _json(payment, 201, {"Location": f"/v1/payments/{payment['id']}"})
    assert idempotency_key is not None and new.request_hash is not None
    earlier = await payments.payment_by_idempotency_key(pool, merchant, idempotency_key)
    if earlier is None:  # the first request's transaction rolled back meanwhile
        raise Problem(409, "a request with this Idempotency-Key is in progress; retry")
    payment_id, request_hash = earlier
    if not hmac.compare_digest(request_hash, new.request_hash):
        raise Problem(
            409,
            f"Idempotency-Key already used for payment {payment_id} with a different request",
            slug="idempotency-conflict",
            field="Idempotency-Key",
        )
    existing = await payments.load_payment(pool, payment_id)
    assert existing is not None
    existing.pop("merchant")
    return _json(
        existing, 200, {"Idempotent-Replayed": "true", "Location": f"/v1/payments/{payment_id}"}
    )


async def get_payment(request: web.Request) -> web.Response:
    payment_id = request.match_info["id"]
    if not _PAYMENT_ID.fullmatch(payment_id):
        raise _not_found(payment_id)
    payment = await payments.load_payment(request.app[POOL], payment_id)
    if payment is None or payment.pop("merchant") != request[MERCHANT]:
        raise _not_found(payment_id)
    return _json(payment)


def _query_param(request: web.Request, name: str) -> str | None:
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise Problem(400, f"query parameter {name} given more than once", field=name)
    return values[0] if values else None


async def list_payments(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    merchant = request[MERCHANT]
    for name in request.query:
        if name not in LIST_PARAMS:
            raise Problem(
                400,
                f"unknown query parameter {_short(name)} (allowed: {', '.join(LIST_PARAMS)})",
                field=name[:100],
            )
    status = _query_param(request, "status")
    if status is not None and status not in STATUSES:
        raise Problem(400, f"status must be one of {', '.join(STATUSES)}", field="status")
    chain = _query_param(request, "chain")
    if chain is not None and config.chain(chain) is None:
        names = ", ".join(c.name for c in config.chains)
        raise Problem(400, f"unknown chain {_short(chain)} (configured: {names})", field="chain")
    order_id = _query_param(request, "order_id")
    if order_id is not None:
        if not 1 <= len(order_id) <= ORDER_ID_MAX or "\x00" in order_id:
            raise Problem(400, f"order_id must be 1 to {ORDER_ID_MAX} characters", field="order_id")
    raw_limit = _query_param(request, "limit")
    limit = DEFAULT_LIMIT
    if raw_limit is not None:
        if (
            not raw_limit.isascii()
            or not raw_limit.isdigit()
            or not 1 <= int(raw_limit) <= MAX_LIMIT
        ):
            raise Problem(400, f"limit must be an integer from 1 to {MAX_LIMIT}", field="limit")
        limit = int(raw_limit)
    cursor = _query_param(request, "cursor")
    key = await _cursor_key(request)
    after = decode_cursor(key, merchant, cursor) if cursor is not None else None
    async with request.app[POOL].acquire() as conn:
        page, next_position = await payments.list_payments(
            conn, merchant, status=status, chain=chain, order_id=order_id, after=after, limit=limit
        )
    next_cursor = encode_cursor(key, merchant, next_position) if next_position else None
    return _json({"data": page, "has_more": next_cursor is not None, "next_cursor": next_cursor})


async def cancel_payment(request: web.Request) -> web.Response:
    payment_id = request.match_info["id"]
    if not _PAYMENT_ID.fullmatch(payment_id):
        raise _not_found(payment_id)
    pool = request.app[POOL]
    blocked_by = await payments.cancel_payment(pool, payment_id, request[MERCHANT])
    if blocked_by == "missing":
        raise _not_found(payment_id)
    if blocked_by not in (None, "canceled"):  # canceling twice answers like the first time
        raise Problem(
            409,
            f"payment is {blocked_by}; only a pending payment can be canceled",
            payment_status=blocked_by,
        )
    payment = await payments.load_payment(pool, payment_id)
    assert payment is not None
    payment.pop("merchant")
    return _json(payment)


def setup_routes(app: web.Application, dsn: str) -> None:
    """Routes, middlewares (problem+json outermost, then auth), pool and OpenAPI document."""
    app.cleanup_ctx.append(_pool_ctx(dsn))
    app.middlewares.append(problem_middleware)
    app.middlewares.append(auth_middleware)
    app[API_STATE] = ApiState(indexes=IndexPool(INDEX_BATCH))
    app.router.add_post("/v1/payments", create_payment)
    app.router.add_get("/v1/payments", list_payments)
    app.router.add_get("/v1/payments/{id}", get_payment)
    app.router.add_post("/v1/payments/{id}/cancel", cancel_payment)
    openapi.setup_routes(app)
    openapi.document(app, _openapi_paths(app[CONFIG]), _openapi_schemas(app[CONFIG]))


# --- OpenAPI ------------------------------------------------------------------------------------


def _openapi_schemas(config: Config) -> dict[str, Any]:
    decimal = {"type": "string", "pattern": DECIMAL_PATTERN, "example": "12.5"}
    units = {"type": "string", "pattern": "^(0|[1-9][0-9]*)$", "example": "12500000"}
    time = {"type": "string", "format": "date-time"}
    nullable_time = {**time, "nullable": True}
    address = {"type": "string", "pattern": "^0x[0-9a-fA-F]{40}$"}
    text = {"type": "string", "minLength": 1, "maxLength": ORDER_ID_MAX, "pattern": "^[^\\u0000]*$"}
    symbols = sorted(
        {c.native.symbol for c in config.chains} | {t for c in config.chains for t in c.tokens}
    )
    p = config.payments
    return {
        "PaymentCreate": {
            "type": "object",
            "additionalProperties": False,
            "required": ["chain", "asset", "amount"],
            "properties": {
                "chain": {"type": "string", "enum": [c.name for c in config.chains]},
                "asset": {
                    "type": "string",
                    "enum": symbols,
                    "description": "The chain's native symbol or one of its token symbols.",
                },
                "amount": {
                    **decimal,
                    "maxLength": AMOUNT_MAX_LEN,
                    "description": "Asset units as a decimal string, greater than zero, with no "
                    "more decimals than the asset has; never a JSON number.",
                },
                "expires_in": {
                    "type": "integer",
                    "minimum": p.min_expiry,
                    "maximum": p.max_expiry,
                    "default": p.default_expiry,
                    "nullable": True,
                    "description": "Seconds until the payment expires; null means the default.",
                },
                "order_id": {**text, "nullable": True, "description": "Your reference."},
                "metadata": {
                    "type": "object",
                    "nullable": True,
                    "additionalProperties": True,
                    "description": f"Any JSON object up to {METADATA_MAX_BYTES} bytes, nested "
                    f"at most {METADATA_MAX_DEPTH} levels, numbers within the 64-bit integer "
                    "range.",
                },
            },
        },
        "Transfer": {
            "type": "object",
            "required": [
                "tx_hash",
                "log_index",
                "kind",
                "block_number",
                "block_hash",
                "from",
                "asset",
                "token_address",
                "decimals",
                "amount",
                "amount_base_units",
                "confirmations",
                "status",
            ],
            "description": "An incoming transfer to the deposit address, in its own asset, "
            "which may differ from the payment's: tokens sent to a native payment, or coin to a "
            "token payment, are recorded and shown but never count towards the payment's sums.",
            "properties": {
                "tx_hash": {"type": "string"},
                "log_index": {
                    "type": "integer",
                    "description": "Log index of a token transfer; -1 for a top-level native "
                    "transfer; the trace position of an internal one.",
                },
                "kind": {"type": "string", "enum": ["native", "token", "internal"]},
                "block_number": {"type": "integer"},
                "block_hash": {"type": "string"},
                "from": address,
                "asset": {
                    "type": "string",
                    "nullable": True,
                    "description": "Symbol of the transfer's asset. Null only for a transfer "
                    "in another asset than its payment's recorded before ctripd stored it "
                    "(migration 0006) and not identifiable from other payments.",
                },
                "token_address": {
                    **address,
                    "nullable": True,
                    "description": "The token contract; null for the chain's native coin.",
                },
                "decimals": {
                    "type": "integer",
                    "nullable": True,
                    "description": "Decimals of `asset`; null when `asset` is.",
                },
                "amount": {
                    **decimal,
                    "nullable": True,
                    "description": "In units of the transfer's own `asset` (not the payment's); "
                    "null when `asset` is.",
                },
                "amount_base_units": units,
                "confirmations": {"type": "integer", "minimum": 0},
                "status": {"type": "string", "enum": ["live", "orphaned"]},
            },
        },
        "Payment": {
            "type": "object",
            "required": [
                "id",
                "chain",
                "chain_id",
                "asset",
                "token_address",
                "decimals",
                "amount",
                "amount_base_units",
                "address",
                "payment_uri",
                "status",
                "amount_received",
                "amount_received_base_units",
                "amount_confirmed",
                "amount_confirmed_base_units",
                "amount_overpaid",
                "amount_overpaid_base_units",
                "paid_late",
                "confirmations_required",
                "transfers",
                "order_id",
                "metadata",
                "created_at",
                "expires_at",
                "detected_at",
                "confirmed_at",
                "sweep",
            ],
            "properties": {
                "id": {"type": "string", "pattern": "^pay_[0-9a-f]{32}$"},
                "chain": {"type": "string"},
                "chain_id": {"type": "integer"},
                "asset": {"type": "string"},
                "token_address": {**address, "nullable": True},
                "decimals": {"type": "integer"},
                "amount": decimal,
                "amount_base_units": units,
                "address": {**address, "description": "The deposit address, fresh per payment."},
                "payment_uri": {"type": "string", "description": "EIP-681 URI for wallets."},
                "status": {"type": "string", "enum": list(STATUSES)},
                "amount_received": decimal,
                "amount_received_base_units": units,
                "amount_confirmed": decimal,
                "amount_confirmed_base_units": units,
                "amount_overpaid": decimal,
                "amount_overpaid_base_units": units,
                "paid_late": {"type": "boolean"},
                "confirmations_required": {"type": "integer"},
                "transfers": {"type": "array", "items": openapi.ref("Transfer")},
                "order_id": {"type": "string", "nullable": True},
                "metadata": {"type": "object", "additionalProperties": True},
                "created_at": time,
                "expires_at": time,
                "detected_at": nullable_time,
                "confirmed_at": nullable_time,
                "sweep": {
                    "type": "object",
                    "required": ["status", "tx_hash"],
                    "properties": {
                        "status": {
                            "type": "string",
                            "enum": [
                                "none",
                                "signed",
                                "broadcast",
                                "confirmed",
                                "failed",
                            ],
                        },
                        "tx_hash": {"type": "string", "nullable": True},
                    },
                },
            },
        },
        "PaymentList": {
            "type": "object",
            "required": ["data", "has_more", "next_cursor"],
            "properties": {
                "data": {"type": "array", "items": openapi.ref("Payment")},
                "has_more": {"type": "boolean"},
                "next_cursor": {
                    "type": "string",
                    "nullable": True,
                    "description": "Pass as `cursor` for the next (older) page.",
                },
            },
        },
    }


def _openapi_paths(config: Config) -> dict[str, Any]:
    payment = {
        "description": "The payment",
        "content": openapi.json_content(openapi.ref("Payment")),
    }
    payment_id = {
        "name": "id",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": "Payment id (`pay_…`).",
    }
    location = {"Location": {"schema": {"type": "string"}, "description": "URL of the payment"}}
    return {
        "/v1/payments": {
            "post": {
                "summary": "Create a payment with a fresh deposit address",
                "operationId": "createPayment",
                "description": (
                    "With `Idempotency-Key`, repeating the same request returns the same payment "
                    "(200, header `Idempotent-Replayed: true`); the same key with a different "
                    "body is refused with 409. Emits `payment.created`."
                ),
                "parameters": [
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "schema": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": 255,
                            "pattern": "^[\\x20-\\x7e]+$",
                        },
                        "description": "Any unique string per intended payment, e.g. a UUID.",
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": openapi.json_content(openapi.ref("PaymentCreate")),
                },
                "responses": {
                    "201": {**payment, "description": "Created", "headers": location},
                    "200": {
                        **payment,
                        "description": "Replay of an earlier request with this Idempotency-Key",
                        "headers": location,
                    },
                    **openapi.problem_responses(400, 401, 409, 413, 415, 422),
                },
            },
            "get": {
                "summary": "List payments, newest first",
                "operationId": "listPayments",
                "parameters": [
                    {
                        "name": "status",
                        "in": "query",
                        "schema": {"type": "string", "enum": list(STATUSES)},
                    },
                    {
                        "name": "chain",
                        "in": "query",
                        "schema": {"type": "string", "enum": [c.name for c in config.chains]},
                    },
                    {
                        "name": "order_id",
                        "in": "query",
                        "schema": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": ORDER_ID_MAX,
                            "pattern": "^[^\\u0000]*$",
                        },
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": MAX_LIMIT,
                            "default": DEFAULT_LIMIT,
                        },
                    },
                    {
                        "name": "cursor",
                        "in": "query",
                        "schema": {"type": "string"},
                        "description": "`next_cursor` of the previous page, unchanged.",
                    },
                ],
                "responses": {
                    "200": {
                        "description": "A page",
                        "content": openapi.json_content(openapi.ref("PaymentList")),
                    },
                    **openapi.problem_responses(400, 401),
                },
            },
        },
        "/v1/payments/{id}": {
            "get": {
                "summary": "Get a payment",
                "operationId": "getPayment",
                "parameters": [payment_id],
                "responses": {"200": payment, **openapi.problem_responses(401, 404)},
            }
        },
        "/v1/payments/{id}/cancel": {
            "post": {
                "summary": "Cancel a pending payment",
                "operationId": "cancelPayment",
                "description": (
                    "Only a `pending` payment can be canceled (409 otherwise); canceling a "
                    "canceled payment answers 200 again. Emits `payment.canceled`. Funds that "
                    "still arrive are recorded and reported."
                ),
                "parameters": [payment_id],
                "responses": {"200": payment, **openapi.problem_responses(401, 404, 409)},
            }
        },
    }
