"""HTTP API v1 payments (SPEC §5): create, read, list and cancel, scoped to the key's merchant."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiohttp import web

from ctripd.config import Config
from ctripd.db import queries
from ctripd.formats import PAYMENT_ID
from ctripd.http import pricing
from ctripd.http.keys import API_POOL, API_STATE, CONFIG, MERCHANT, RATES, WALLET
from ctripd.http.params import (
    check_text,
    json_response,
    limit_param,
    query_param,
    read_json,
    refuse_unknown_params,
    short,
    status_param,
)
from ctripd.http.problems import Problem, validation
from ctripd.ledger import export, fiat, payments
from ctripd.ledger.chains import cursor
from ctripd.ledger.objects import STATUSES, load_payment, transfers_page
from ctripd.money import AmountError, to_base_units

Q = queries("api")

CREATE_FIELDS = ("chain", "asset", "amount", "expires_in", "order_id", "metadata")
LIST_PARAMS = ("status", "chain", "order_id", "limit", "cursor")
TRANSFER_LIST_PARAMS = ("limit", "cursor")
METADATA_MAX_BYTES = 4096
METADATA_MAX_DEPTH = 16
ORDER_ID_MAX = 255
# 2^256-1 has 78 digits; with a point and up to 36 decimals an amount fits in 115 characters.
AMOUNT_MAX_LEN = 120
DEFAULT_LIMIT = 20
MAX_LIMIT = 100
INT64 = 2**63
DECIMAL_PATTERN = r"^(0|[1-9][0-9]*)(\.[0-9]+)?$"
_IDEMPOTENCY_KEY = re.compile(r"[\x20-\x7e]{1,255}")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# --- request parsing ----------------------------------------------------------------------------


def _check_json_value(value: Any, name: str, depth: int) -> None:
    if depth > METADATA_MAX_DEPTH:
        raise validation("metadata", f"nests deeper than {METADATA_MAX_DEPTH} levels")
    if isinstance(value, str):
        check_text(value, name)
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
            check_text(key, name)
            _check_json_value(item, f"{name}.{key}"[:300], depth + 1)
    else:
        for i, item in enumerate(value):
            _check_json_value(item, f"{name}[{i}]", depth + 1)


def parse_common(
    fields: dict[str, Any], config: Config
) -> tuple[int, str | None, dict[str, Any], bytes]:
    """expires_in, order_id, metadata (and its compact JSON) of a create request, checked."""
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
        check_text(order_id, "order_id")

    metadata = fields.get("metadata", {})
    if not isinstance(metadata, dict):
        raise validation("metadata", "must be a JSON object")
    _check_json_value(metadata, "metadata", 1)
    metadata_json = orjson.dumps(metadata)
    if len(metadata_json) > METADATA_MAX_BYTES:
        raise validation(
            "metadata", f"is {len(metadata_json)} bytes as JSON; at most {METADATA_MAX_BYTES}"
        )

    return expires_in, order_id, metadata, metadata_json


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
        raise validation("chain", f"unknown chain {short(chain_name)} (configured: {known})")
    symbol = fields["asset"]
    asset = chain.asset(symbol) if isinstance(symbol, str) else None
    if asset is None:
        known = ", ".join([chain.native.symbol, *chain.tokens])
        raise validation("asset", f"unknown asset {short(symbol)} on {chain.name} (known: {known})")
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

    expires_in, order_id, metadata, metadata_json = parse_common(fields, config)

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


_INVALID_CURSOR = "invalid cursor: pass next_cursor back unchanged"


def _sign(key: bytes, merchant: str, position: list[Any]) -> str:
    """An opaque cursor: a page position, signed so that a changed cursor is refused."""
    payload = orjson.dumps(position)
    return f"{_b64(payload)}.{_b64(_cursor_mac(key, merchant, payload))}"


def _verified(key: bytes, merchant: str, cursor: str) -> Any:
    """The position a cursor of `_sign` holds; 400 for any other text."""
    invalid = Problem(400, _INVALID_CURSOR, field="cursor")
    body, _, mac = cursor.partition(".")
    try:
        payload, given = _unb64(body), _unb64(mac)
    except (binascii.Error, ValueError):
        raise invalid from None
    # Base64 decoding ignores stray padding bits: only the exact text we issued is accepted.
    canonical = _b64(payload) == body and _b64(given) == mac
    if not canonical or not hmac.compare_digest(given, _cursor_mac(key, merchant, payload)):
        raise invalid
    return orjson.loads(payload)


def encode_cursor(key: bytes, merchant: str, position: payments.Position) -> str:
    micros = (position.created_at - _EPOCH) // timedelta(microseconds=1)
    return _sign(key, merchant, [micros, position.id])


def decode_cursor(key: bytes, merchant: str, cursor: str) -> payments.Position:
    position = _verified(key, merchant, cursor)
    # A transfers cursor is signed with the same key: its position has another shape.
    if not (isinstance(position, list) and len(position) == 2 and isinstance(position[1], str)):
        raise Problem(400, _INVALID_CURSOR, field="cursor")
    micros, payment_id = position
    return payments.Position(_EPOCH + timedelta(microseconds=micros), payment_id)


def _transfers_position(key: bytes, merchant: str, cursor: str) -> tuple[int, int]:
    """The (block, row id) of a transfers cursor, marked "t" apart from payments cursors."""
    position = _verified(key, merchant, cursor)
    if not (
        isinstance(position, list)
        and len(position) == 3
        and position[0] == "t"
        and all(isinstance(n, int) and not isinstance(n, bool) for n in position[1:])
    ):
        raise Problem(400, _INVALID_CURSOR, field="cursor")
    return position[1], position[2]


async def _cursor_key(request: web.Request) -> bytes:
    state = request.app[API_STATE]
    if state.cursor_key is None:
        state.cursor_key = bytes(await request.app[API_POOL].fetchval(Q["cursor_key"]))
    return state.cursor_key


async def _require_cursor(request: web.Request, chain: str) -> None:
    """Payments are taken on a chain only once its scan cursor exists: one made before would
    have its transfer in blocks the first scan starts after."""
    state = request.app[API_STATE]
    if chain in state.watched_chains:
        return
    if await cursor(request.app[API_POOL], chain) is None:
        raise Problem(
            503,
            f"chain {chain} is not watched yet (its node could not be reached); retry later",
            headers={"Retry-After": "5"},
        )
    state.watched_chains.add(chain)


# How long a cancel waits for the chain to be scanned past it, at most, and how often it looks.
CANCEL_WAIT_MAX = 10.0
CANCEL_RECHECK = 0.2


# --- handlers -----------------------------------------------------------------------------------


def _not_found(payment_id: str) -> Problem:
    return Problem(404, f"no payment {short(payment_id)}")


async def create_payment(request: web.Request) -> web.Response:
    app = request.app
    merchant = request[MERCHANT]
    idempotency_key = _idempotency_key(request)
    body = await read_json(request)
    if isinstance(body, dict) and "price" in body:
        return await _create_priced(request, body, idempotency_key)
    new = parse_create(body, app[CONFIG], merchant, idempotency_key)
    pool = app[API_POOL]
    await _require_cursor(request, new.chain)
    index = await app[API_STATE].indexes.take(pool)
    payment = await payments.insert_payment(
        pool, app[WALLET], new, index, operator_url=bool(app[CONFIG].webhooks.url)
    )
    if payment is not None:
        return json_response(payment, 201, {"Location": f"/v1/payments/{payment['id']}"})
    return await _replay(request, new)


async def _create_priced(
    request: web.Request, body: dict[str, Any], idempotency_key: str | None
) -> web.Response:
    """A payment priced in fiat: every accepted option quoted and locked for its window."""
    app = request.app
    config = app[CONFIG]
    priced = pricing.parse_priced(body, config)
    common = parse_common(priced.fields, config)
    pool = app[API_POOL]
    for chain in dict.fromkeys(a.chain.name for a in priced.accept):
        await _require_cursor(request, chain)
    options = await pricing.quote(app[RATES], priced)
    new = pricing.new_payment(priced, options, common, request[MERCHANT], idempotency_key)
    index = await app[API_STATE].indexes.take(pool)
    payment = await fiat.insert_fiat_payment(
        pool,
        app[WALLET],
        new,
        priced.price,
        priced.currency,
        options,
        index,
        operator_url=bool(config.webhooks.url),
    )
    if payment is not None:
        return json_response(payment, 201, {"Location": f"/v1/payments/{payment['id']}"})
    return await _replay(request, new)


async def _replay(request: web.Request, new: payments.NewPayment) -> web.Response:
    """The answer to a request whose Idempotency-Key the merchant used before: the earlier
    payment for the same request, 409 for another."""
    pool = request.app[API_POOL]
    merchant, idempotency_key = new.merchant, new.idempotency_key
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
    existing = await load_payment(pool, payment_id)
    assert existing is not None
    return json_response(
        existing, 200, {"Idempotent-Replayed": "true", "Location": f"/v1/payments/{payment_id}"}
    )


async def get_payment(request: web.Request) -> web.Response:
    payment_id = request.match_info["id"]
    if not PAYMENT_ID.fullmatch(payment_id):
        raise _not_found(payment_id)
    payment = await load_payment(request.app[API_POOL], payment_id)
    if payment is None or payment["merchant"] != request[MERCHANT]:
        raise _not_found(payment_id)
    return json_response(payment)


async def list_payments(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    merchant = request[MERCHANT]
    refuse_unknown_params(request, LIST_PARAMS)
    status = status_param(request, STATUSES)
    chain = query_param(request, "chain")
    if chain is not None and config.chain(chain) is None:
        names = ", ".join(c.name for c in config.chains)
        raise Problem(400, f"unknown chain {short(chain)} (configured: {names})", field="chain")
    order_id = query_param(request, "order_id")
    if order_id is not None:
        if not 1 <= len(order_id) <= ORDER_ID_MAX or "\x00" in order_id:
            raise Problem(400, f"order_id must be 1 to {ORDER_ID_MAX} characters", field="order_id")
    limit = limit_param(request, DEFAULT_LIMIT, MAX_LIMIT)
    cursor = query_param(request, "cursor")
    key = await _cursor_key(request)
    after = decode_cursor(key, merchant, cursor) if cursor is not None else None
    async with request.app[API_POOL].acquire() as conn:
        page, next_position = await payments.list_payments(
            conn, merchant, status=status, chain=chain, order_id=order_id, after=after, limit=limit
        )
    next_cursor = encode_cursor(key, merchant, next_position) if next_position else None
    return json_response(
        {"data": page, "has_more": next_cursor is not None, "next_cursor": next_cursor}
    )


async def cancel_payment(request: web.Request) -> web.Response:
    """Cancel once the chain is scanned past this request: with a healthy scanner that is its
    next round, so the request waits up to two of them before answering 409 (retry later)."""
    payment_id = request.match_info["id"]
    if not PAYMENT_ID.fullmatch(payment_id):
        raise _not_found(payment_id)
    pool = request.app[API_POOL]
    requested_at = await payments.database_now(pool)
    loop = asyncio.get_running_loop()
    started, poll = loop.time(), 1.0
    while True:
        blocked_by, chain = await payments.cancel_payment(
            pool,
            payment_id,
            request[MERCHANT],
            requested_at,
            operator_url=bool(request.app[CONFIG].webhooks.url),
        )
        if blocked_by != "scanning":
            break
        config = request.app[CONFIG].chain(chain or "")
        poll = config.poll_interval if config is not None else poll
        if loop.time() - started >= min(CANCEL_WAIT_MAX, 2 * poll + 1):
            break
        await asyncio.sleep(CANCEL_RECHECK)
    if blocked_by == "missing":
        raise _not_found(payment_id)
    if blocked_by == "scanning":
        raise Problem(
            409,
            "the payment's chain is not scanned past the time of this request yet: a transfer "
            "mined before it may still be unread; retry later",
            payment_status="pending",
            headers={"Retry-After": str(math.ceil(poll))},
        )
    if blocked_by not in (None, "canceled"):  # canceling twice answers like the first time
        raise Problem(
            409,
            f"payment is {blocked_by}; only a pending payment can be canceled",
            payment_status=blocked_by,
        )
    payment = await load_payment(pool, payment_id)
    assert payment is not None
    return json_response(payment)


async def list_transfers(request: web.Request) -> web.Response:
    """Every transfer row of a payment, newest first, in pages: the payment object shows only
    its latest few."""
    payment_id = request.match_info["id"]
    if not PAYMENT_ID.fullmatch(payment_id):
        raise _not_found(payment_id)
    merchant = request[MERCHANT]
    refuse_unknown_params(request, TRANSFER_LIST_PARAMS)
    limit = limit_param(request, DEFAULT_LIMIT, MAX_LIMIT)
    cursor = query_param(request, "cursor")
    key = await _cursor_key(request)
    after = _transfers_position(key, merchant, cursor) if cursor is not None else None
    found = await transfers_page(request.app[API_POOL], payment_id, limit, after)
    if found is None or found[0] != merchant:
        raise _not_found(payment_id)
    _, page, position = found
    next_cursor = _sign(key, merchant, ["t", *position]) if position else None
    return json_response(
        {"data": page, "has_more": next_cursor is not None, "next_cursor": next_cursor}
    )


EXPORT_PARAMS = ("from", "to", "transfers")


def _time_param(request: web.Request, name: str, default: datetime) -> datetime:
    """An ISO 8601 date or date-time query parameter (UTC unless it names its offset)."""
    value = query_param(request, name)
    if value is None:
        return default
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise Problem(400, f"{name} must be an ISO 8601 date or date-time", field=name) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


async def export_payments(request: web.Request) -> web.Response:
    """The merchant's payments created in [from, to) as CSV: one row per payment, or per
    transfer with `transfers=true`."""
    refuse_unknown_params(request, EXPORT_PARAMS)
    start = _time_param(request, "from", _EPOCH)
    end = _time_param(request, "to", datetime.now(UTC))
    transfers = query_param(request, "transfers")
    if transfers not in (None, "true", "false"):
        raise Problem(400, "transfers must be true or false", field="transfers")
    text = await export.export_csv(
        request.app[API_POOL], request[MERCHANT], start, end, transfers=transfers == "true"
    )
    return web.Response(
        text=text,
        content_type="text/csv",
        headers={"Content-Disposition": 'attachment; filename="payments.csv"'},
    )


def setup_routes(app: web.Application) -> None:
    app.router.add_post("/v1/payments", create_payment)
    app.router.add_get("/v1/payments", list_payments)
    app.router.add_get("/v1/payments/export.csv", export_payments)
    app.router.add_get("/v1/payments/{id}", get_payment)
    app.router.add_get("/v1/payments/{id}/transfers", list_transfers)
    app.router.add_post("/v1/payments/{id}/cancel", cancel_payment)
