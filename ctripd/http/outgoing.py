"""HTTP API v1 refunds and payouts (SPEC §13): a merchant's key records the request (bound to
it with the wallet's approval key, `ledger.refunds`/`ledger.payouts`); the sweeper sends it."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import orjson
from aiohttp import web
from eth_utils import is_checksum_address, is_hex_address, to_checksum_address

from ctripd.config import ChainConfig
from ctripd.db import queries
from ctripd.http.keys import API_POOL, CONFIG, MERCHANT, WALLET
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
from ctripd.http.payments import AMOUNT_MAX_LEN, _idempotency_key
from ctripd.http.problems import Problem, validation
from ctripd.ledger import payouts, refunds
from ctripd.money import AmountError, to_base_units

RQ = queries("refunds")

REFUND_FIELDS = ("to", "amount", "asset", "allow_deposit_address")
PAYOUT_FIELDS = ("chain", "asset", "to", "amount", "reference", "allow_deposit_address")
PAYOUT_LIST_PARAMS = ("status", "limit", "cursor")
REFERENCE_MAX = 255
ZERO = "0x" + "0" * 40
REFUND_ID = re.compile(r"ref_[0-9a-f]{32}")
PAYOUT_ID = re.compile(r"po_[0-9a-f]{32}")


def _fields(body: Any, allowed: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise Problem(422, "the request body must be a JSON object")
    for name in body:
        if name not in allowed:
            raise validation(str(name)[:100], f"unknown field (allowed: {', '.join(allowed)})")
    return {k: v for k, v in body.items() if v is not None}


async def _recipient(request: web.Request, fields: dict[str, Any]) -> str:
    """`to`, checked: EIP-55 or all-lowercase hex, not the zero address, not a deposit address
    of ours unless `allow_deposit_address` is true. Returned checksummed."""
    to = fields.get("to")
    if to is None:
        raise validation("to", "is required")
    if not isinstance(to, str) or not is_hex_address(to) or not to.startswith("0x"):
        raise validation("to", "must be an address: 0x and 40 hex digits")
    if to != to.lower() and not is_checksum_address(to):
        raise validation("to", f"bad EIP-55 checksum: use {to_checksum_address(to)} or lowercase")
    if to.lower() == ZERO:
        raise validation("to", "is the zero address")
    allow = fields.get("allow_deposit_address", False)
    if not isinstance(allow, bool):
        raise validation("allow_deposit_address", "must be true or false")
    if not allow and await request.app[API_POOL].fetchval(RQ["is_deposit_address"], to):
        raise validation(
            "to", "is one of this gateway's deposit addresses (allow_deposit_address: true)"
        )
    return str(to_checksum_address(to))


def _amount(fields: dict[str, Any], decimals: int, symbol: str) -> int | None:
    amount = fields.get("amount")
    if amount is None:
        return None
    if not isinstance(amount, str) or len(amount) > AMOUNT_MAX_LEN or not amount.isascii():
        raise validation("amount", 'must be a decimal string such as "12.5"')
    try:
        units = to_base_units(amount, decimals)
    except AmountError as exc:
        raise validation("amount", f"{exc} (asset {symbol} has {decimals} decimals)") from None
    if units <= 0:
        raise validation("amount", "must be more than 0")
    return units


def _asset(chain: ChainConfig, symbol: Any) -> tuple[str | None, int]:
    asset = chain.asset(symbol) if isinstance(symbol, str) else None
    if asset is None:
        known = ", ".join([chain.native.symbol, *chain.tokens])
        raise validation("asset", f"unknown asset {short(symbol)} on {chain.name} (known: {known})")
    return asset


def _request_hash(fields: dict[str, Any]) -> bytes:
    return hashlib.sha256(orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)).digest()


def _watch_only(request: web.Request) -> None:
    if request.app[WALLET].watch_only:
        raise Problem(
            409, "this gateway is watch-only ([wallet] xpub): it holds no keys to send funds"
        )


# --- refunds ------------------------------------------------------------------------------------


async def _payment_row(request: web.Request) -> Any:
    payment_id = request.match_info["id"]
    row = await request.app[API_POOL].fetchrow(RQ["payment_of"], payment_id)
    if row is None or row["merchant"] != request[MERCHANT]:
        raise Problem(404, f"no payment {short(payment_id)}")
    return row


async def create_refund(request: web.Request) -> web.Response:
    key = _idempotency_key(request)
    body = await read_json(request)
    payment = await _payment_row(request)
    _watch_only(request)
    fields = _fields(body, REFUND_FIELDS)
    chain = request.app[CONFIG].chain(payment["chain"])
    if chain is None:
        raise Problem(409, f"chain {payment['chain']} is no longer configured")
    symbol = fields.get("asset", payment["asset"])
    token, decimals = _asset(chain, symbol)
    to = await _recipient(request, fields)
    req = refunds.RefundRequest(
        merchant=request[MERCHANT],
        payment_id=payment["id"],
        to=to,
        amount=_amount(fields, decimals, symbol),
        asset=symbol,
        decimals=decimals,
        token=token,
        idempotency_key=key,
        request_hash=_request_hash(fields) if key is not None else None,
    )
    try:
        refund, new = await refunds.create(
            request.app[API_POOL],
            request.app[WALLET],
            req,
            operator_url=bool(request.app[CONFIG].webhooks.url),
        )
    except refunds.RefundRefused as exc:
        raise Problem(exc.status, str(exc), field=exc.field) from None
    headers = {"Location": f"/v1/refunds/{refund['id']}"}
    if not new:
        headers["Idempotent-Replayed"] = "true"
    return json_response(refund, 201 if new else 200, headers)


async def list_refunds(request: web.Request) -> web.Response:
    refuse_unknown_params(request, ())
    payment = await _payment_row(request)
    found = await refunds.of_payment(request.app[API_POOL], payment["id"], request[MERCHANT])
    return json_response({"data": found})


async def get_refund(request: web.Request) -> web.Response:
    refund_id = request.match_info["id"]
    found = None
    if REFUND_ID.fullmatch(refund_id):
        found = await refunds.get(request.app[API_POOL], refund_id, request[MERCHANT])
    if found is None:
        raise Problem(404, f"no refund {short(refund_id)}")
    return json_response(found)


# --- payouts ------------------------------------------------------------------------------------


async def create_payout(request: web.Request) -> web.Response:
    key = _idempotency_key(request)
    body = await read_json(request)
    _watch_only(request)
    config = request.app[CONFIG]
    fields = _fields(body, PAYOUT_FIELDS)
    for name in ("chain", "asset", "to", "amount"):
        if name not in fields:
            raise validation(name, "is required")
    chain_name = fields["chain"]
    chain = config.chain(chain_name) if isinstance(chain_name, str) else None
    if chain is None:
        known = ", ".join(c.name for c in config.chains)
        raise validation("chain", f"unknown chain {short(chain_name)} (configured: {known})")
    symbol = fields["asset"]
    token, decimals = _asset(chain, symbol)
    amount = _amount(fields, decimals, symbol)
    assert amount is not None
    reference = fields.get("reference")
    if reference is not None:
        if not isinstance(reference, str) or not 1 <= len(reference) <= REFERENCE_MAX:
            raise validation("reference", f"must be a string of 1 to {REFERENCE_MAX} characters")
        check_text(reference, "reference")
    to = await _recipient(request, fields)
    req = payouts.PayoutRequest(
        merchant=request[MERCHANT],
        chain=chain.name,
        asset=symbol,
        decimals=decimals,
        token=token,
        to=to,
        amount=amount,
        reference=reference,
        idempotency_key=key,
        request_hash=_request_hash(fields) if key is not None else None,
    )
    try:
        payout, new = await payouts.create(
            request.app[API_POOL],
            request.app[WALLET],
            config.payouts,
            req,
            operator_url=bool(config.webhooks.url),
        )
    except payouts.PayoutRefused as exc:
        raise Problem(exc.status, str(exc), field=exc.field) from None
    headers = {"Location": f"/v1/payouts/{payout['id']}"}
    if not new:
        headers["Idempotent-Replayed"] = "true"
    return json_response(payout, 201 if new else 200, headers)


async def list_payouts(request: web.Request) -> web.Response:
    refuse_unknown_params(request, PAYOUT_LIST_PARAMS)
    status = status_param(request, payouts.STATUSES)
    limit = limit_param(request, 20, payouts.MAX_LIST)
    cursor = query_param(request, "cursor")
    if cursor is not None and not PAYOUT_ID.fullmatch(cursor):
        raise Problem(400, "invalid cursor: pass next_cursor back unchanged", field="cursor")
    page, more = await payouts.page(
        request.app[API_POOL], request[MERCHANT], status=status, after=cursor, limit=limit
    )
    next_cursor = page[-1]["id"] if more else None
    return json_response({"data": page, "has_more": more, "next_cursor": next_cursor})


async def get_payout(request: web.Request) -> web.Response:
    payout_id = request.match_info["id"]
    found = None
    if PAYOUT_ID.fullmatch(payout_id):
        found = await payouts.get(request.app[API_POOL], payout_id, request[MERCHANT])
    if found is None:
        raise Problem(404, f"no payout {short(payout_id)}")
    return json_response(found)


def setup_routes(app: web.Application) -> None:
    app.router.add_post("/v1/payments/{id}/refunds", create_refund)
    app.router.add_get("/v1/payments/{id}/refunds", list_refunds)
    app.router.add_get("/v1/refunds/{id}", get_refund)
    app.router.add_post("/v1/payouts", create_payout)
    app.router.add_get("/v1/payouts", list_payouts)
    app.router.add_get("/v1/payouts/{id}", get_payout)
