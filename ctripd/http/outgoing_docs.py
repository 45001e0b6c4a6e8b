"""OpenAPI paths and schemas of refunds and payouts (`http.outgoing`)."""

from __future__ import annotations

from typing import Any

from ctripd.config import Config
from ctripd.http import openapi, payments
from ctripd.http.outgoing import REFERENCE_MAX
from ctripd.http.schemas import CURSOR_PARAMETER, limit_parameter, page_response
from ctripd.ledger import payouts, refunds

Doc = dict[str, Any]

_DECIMAL = {"type": "string", "pattern": payments.DECIMAL_PATTERN, "example": "12.5"}
_UNITS = {"type": "string", "pattern": "^(0|[1-9][0-9]*)$", "example": "12500000"}
_ADDRESS = {"type": "string", "pattern": "^0x[0-9a-fA-F]{40}$"}
_TIME = {"type": "string", "format": "date-time"}
_NULLABLE_TIME = {**_TIME, "nullable": True}
_NULLABLE_UNITS = {**_UNITS, "nullable": True}
_IDEMPOTENCY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[\\x20-\\x7e]+$"},
    "description": "Any unique string per intended request: the same key and body give the "
    "same answer (200, `Idempotent-Replayed: true`), another body 409.",
}
_ALLOW_DEPOSIT = {
    "type": "boolean",
    "description": "Allow `to` to be one of this gateway's deposit addresses (refused otherwise).",
}
_TO = {
    **_ADDRESS,
    "description": "EIP-55 checksummed or all-lowercase hex; not the zero address.",
}


def outgoing_docs(config: Config) -> tuple[Doc, Doc]:
    return _paths(), _schemas(config)


def _common(extra: Doc) -> Doc:
    """The fields refunds and payouts share, as shown."""
    return {
        "chain": {"type": "string"},
        "asset": {"type": "string"},
        "token_address": {**_ADDRESS, "nullable": True},
        "decimals": {"type": "integer"},
        "to": _ADDRESS,
        "amount": _DECIMAL,
        "amount_base_units": _UNITS,
        "from": {
            **_ADDRESS,
            "nullable": True,
            "description": "The sending address once signed.",
        },
        "tx_hash": {"type": "string", "nullable": True},
        "block_number": {"type": "integer", "nullable": True},
        "fee_base_units": {**_NULLABLE_UNITS, "description": "Network fee paid, once mined."},
        "created_at": _TIME,
        "updated_at": _TIME,
        "confirmed_at": _NULLABLE_TIME,
        **extra,
    }


def _schemas(config: Config) -> Doc:
    symbols = sorted(
        {c.native.symbol for c in config.chains} | {t for c in config.chains for t in c.tokens}
    )
    refund_props = _common(
        {
            "id": {"type": "string", "pattern": "^ref_[0-9a-f]{32}$"},
            "payment_id": {"type": "string"},
            "status": {"type": "string", "enum": list(refunds.STATUSES)},
            "source": {
                "type": "string",
                "enum": ["deposit", "payout_wallet"],
                "nullable": True,
                "description": "Sent from the payment's deposit address (funds not swept) or "
                "from the payout wallet (swept); null until signed.",
            },
            "amount_sent_base_units": {
                **_NULLABLE_UNITS,
                "description": "What the transaction sends: the amount, or less by its fee for "
                "native coin refunded from a deposit address that holds nothing else.",
            },
            "error": {"type": "string", "nullable": True},
        }
    )
    payout_props = _common(
        {
            "id": {"type": "string", "pattern": "^po_[0-9a-f]{32}$"},
            "merchant": {"type": "string"},
            "reference": {"type": "string", "nullable": True},
            "status": {"type": "string", "enum": list(payouts.STATUSES)},
            "reason": {
                "type": "string",
                "nullable": True,
                "description": "Why a pending payout waits (e.g. the payout wallet's balance), "
                "or why it failed or was rejected.",
            },
            "approved_at": _NULLABLE_TIME,
        }
    )
    return {
        "RefundCreate": {
            "type": "object",
            "additionalProperties": False,
            "required": ["to"],
            "properties": {
                "to": _TO,
                "amount": {
                    **_DECIMAL,
                    "maxLength": payments.AMOUNT_MAX_LEN,
                    "description": "Asset units. Default: the part not needed to settle the "
                    "payment (its overpaid part; all of it in another asset than the payment's, "
                    "or of an expired or canceled payment). At most what the payment received "
                    "in the asset less what was refunded; a confirmed payment's due amount too.",
                },
                "asset": {
                    "type": "string",
                    "enum": symbols,
                    "description": "Default: the payment's asset.",
                },
                "allow_deposit_address": _ALLOW_DEPOSIT,
            },
        },
        "Refund": {
            "type": "object",
            "required": sorted(refund_props),
            "properties": refund_props,
        },
        "RefundList": {
            "type": "object",
            "required": ["data"],
            "properties": {"data": {"type": "array", "items": openapi.ref("Refund")}},
        },
        "PayoutCreate": {
            "type": "object",
            "additionalProperties": False,
            "required": ["chain", "asset", "to", "amount"],
            "properties": {
                "chain": {"type": "string", "enum": [c.name for c in config.chains]},
                "asset": {"type": "string", "enum": symbols},
                "to": _TO,
                "amount": {**_DECIMAL, "maxLength": payments.AMOUNT_MAX_LEN},
                "reference": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": REFERENCE_MAX,
                    "pattern": "^[^\\u0000]*$",
                },
                "allow_deposit_address": _ALLOW_DEPOSIT,
            },
        },
        "Payout": {
            "type": "object",
            "required": sorted(payout_props),
            "properties": payout_props,
        },
        "PayoutList": {
            "type": "object",
            "required": ["data", "has_more", "next_cursor"],
            "properties": {
                "data": {"type": "array", "items": openapi.ref("Payout")},
                "has_more": {"type": "boolean"},
                "next_cursor": {"type": "string", "nullable": True},
            },
        },
    }


def _id_parameter(what: str) -> Doc:
    return {
        "name": "id",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": what,
    }


def _one(schema: str, description: str) -> Doc:
    return {"description": description, "content": openapi.json_content(openapi.ref(schema))}


def _paths() -> Doc:
    payment_id = _id_parameter("Payment id (`pay_…`).")
    return {
        "/v1/payments/{id}/refunds": {
            "post": {
                "summary": "Refund funds a payment received",
                "operationId": "createRefund",
                "description": (
                    "Records the refund (`requested`; emits `refund.created`); the sweeper sends "
                    "it from the deposit address while the funds are there, else from the payout "
                    "wallet: `signed` → `broadcast` → `confirmed` | `failed` (`refund.confirmed`, "
                    "`refund.failed`). More than refundable → 422. Watch-only gateway → 409. "
                    "Needs the `refunds:write` scope."
                ),
                "parameters": [payment_id, _IDEMPOTENCY],
                "requestBody": {
                    "required": True,
                    "content": openapi.json_content(openapi.ref("RefundCreate")),
                },
                "responses": {
                    "201": _one("Refund", "Created"),
                    "200": _one("Refund", "Replay of an earlier request with this key"),
                    **openapi.problem_responses(400, 401, 403, 404, 409, 413, 415, 422),
                },
            },
            "get": {
                "summary": "List a payment's refunds, oldest first",
                "operationId": "listRefunds",
                "parameters": [payment_id],
                "responses": {
                    "200": _one("RefundList", "The refunds"),
                    **openapi.problem_responses(400, 401, 403, 404),
                },
            },
        },
        "/v1/refunds/{id}": {
            "get": {
                "summary": "Get a refund",
                "operationId": "getRefund",
                "parameters": [_id_parameter("Refund id (`ref_…`).")],
                "responses": {
                    "200": _one("Refund", "The refund"),
                    **openapi.problem_responses(401, 403, 404),
                },
            }
        },
        "/v1/payouts": {
            "post": {
                "summary": "Pay out from the payout wallet",
                "operationId": "createPayout",
                "description": (
                    "Records the payout (emits `payout.created`): `pending_approval` with "
                    "`[payouts] require_approval` until `ctripd payouts approve` (`payout."
                    "approved`) or `reject` (`payout.rejected`), then `pending` until the payout "
                    "wallet holds the whole amount (`reason` says what it lacks), `signed` → "
                    "`broadcast` → `confirmed` | `failed` (`payout.confirmed`, `payout.failed`). "
                    "Over the merchant's daily limit → 422. Watch-only gateway → 409. Needs the "
                    "`payouts:write` scope."
                ),
                "parameters": [_IDEMPOTENCY],
                "requestBody": {
                    "required": True,
                    "content": openapi.json_content(openapi.ref("PayoutCreate")),
                },
                "responses": {
                    "201": _one("Payout", "Created"),
                    "200": _one("Payout", "Replay of an earlier request with this key"),
                    **openapi.problem_responses(400, 401, 403, 409, 413, 415, 422),
                },
            },
            "get": {
                "summary": "List payouts, newest first",
                "operationId": "listPayouts",
                "parameters": [
                    {
                        "name": "status",
                        "in": "query",
                        "schema": {"type": "string", "enum": list(payouts.STATUSES)},
                    },
                    limit_parameter(20, payouts.MAX_LIST),
                    CURSOR_PARAMETER,
                ],
                "responses": {
                    "200": page_response("PayoutList"),
                    **openapi.problem_responses(400, 401, 403),
                },
            },
        },
        "/v1/payouts/{id}": {
            "get": {
                "summary": "Get a payout",
                "operationId": "getPayout",
                "parameters": [_id_parameter("Payout id (`po_…`).")],
                "responses": {
                    "200": _one("Payout", "The payout"),
                    **openapi.problem_responses(401, 403, 404),
                },
            }
        },
    }
