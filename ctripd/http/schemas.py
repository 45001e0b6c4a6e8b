"""The OpenAPI description of the `/v1/` resources, kept apart from their handlers. Each public
function gives the (paths, schemas) of one resource for `openapi.document`."""

from __future__ import annotations

from ctripd.config import Config
from ctripd.http import endpoints, events, openapi, payments, pricing
from ctripd.http.openapi import Doc
from ctripd.ledger.events import EVENT_TYPES
from ctripd.ledger.events import STATUSES as DELIVERY_STATUSES
from ctripd.ledger.objects import LATEST_TRANSFERS
from ctripd.ledger.objects import STATUSES as PAYMENT_STATUSES


def payment_docs(config: Config) -> tuple[Doc, Doc]:
    return _payment_paths(config), _payment_schemas(config)


def event_docs() -> tuple[Doc, Doc]:
    return _event_paths(), _event_schemas()


def endpoint_docs() -> tuple[Doc, Doc]:
    return _endpoint_paths(), _endpoint_schemas()


def chain_docs() -> tuple[Doc, Doc]:
    return _CHAIN_PATHS, _CHAIN_SCHEMAS


def checkout_docs() -> tuple[Doc, Doc]:
    return _CHECKOUT_PATHS, _CHECKOUT_SCHEMAS


def metrics_docs(public: bool) -> tuple[Doc, Doc]:
    responses = {
        "200": {
            "description": "Prometheus text format (OpenMetrics if the Accept header asks)",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
        **({} if public else openapi.problem_responses(401, 403)),
    }
    operation = {
        "summary": "Prometheus metrics",
        "operationId": "metrics",
        "responses": responses,
        **({"security": []} if public else {}),
    }
    return {"/metrics": {"get": operation}}, {}


def limit_parameter(default: int, most: int) -> Doc:
    return {
        "name": "limit",
        "in": "query",
        "schema": {"type": "integer", "minimum": 1, "maximum": most, "default": default},
    }


def page_response(schema: str) -> Doc:
    return {"description": "A page", "content": openapi.json_content(openapi.ref(schema))}


def _page_of(item: str) -> Doc:
    """A page of a list endpoint: `data` of `item`s, newest first, and the cursor to the next."""
    return {
        "type": "object",
        "required": ["data", "has_more", "next_cursor"],
        "properties": {
            "data": {"type": "array", "items": openapi.ref(item)},
            "has_more": {"type": "boolean"},
            "next_cursor": {
                "type": "string",
                "nullable": True,
                "description": "Pass as `cursor` for the next (older) page.",
            },
        },
    }


CURSOR_PARAMETER: Doc = {
    "name": "cursor",
    "in": "query",
    "schema": {"type": "string"},
    "description": "`next_cursor` of the previous page, unchanged.",
}


def _payment_schemas(config: Config) -> Doc:
    decimal = {"type": "string", "pattern": payments.DECIMAL_PATTERN, "example": "12.5"}
    units = {"type": "string", "pattern": "^(0|[1-9][0-9]*)$", "example": "12500000"}
    time = {"type": "string", "format": "date-time"}
    nullable_time = {**time, "nullable": True}
    address = {"type": "string", "pattern": "^0x[0-9a-fA-F]{40}$"}
    text = {
        "type": "string",
        "minLength": 1,
        "maxLength": payments.ORDER_ID_MAX,
        "pattern": "^[^\\u0000]*$",
    }
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
                    "maxLength": payments.AMOUNT_MAX_LEN,
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
                    "description": f"Any JSON object up to {payments.METADATA_MAX_BYTES} bytes, "
                    f"nested at most {payments.METADATA_MAX_DEPTH} levels, numbers within the "
                    "64-bit integer range.",
                },
            },
        },
        "Transfer": {
            "type": "object",
            "required": [
                "chain",
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
                "count",
            ],
            "description": "An incoming transfer to the deposit address, in its own asset, "
            "which may differ from the payment's: tokens sent to a native payment, or coin to a "
            "token payment, are recorded and shown but never count towards the payment's sums. "
            "Transfers below their asset's `min_credit` (dust) are recorded in aggregate: one "
            "transfer of kind `dust` per block, payment and asset stands for `count` of them, "
            "with their total `amount`; its `tx_hash`, `log_index` and `from` are the last "
            "one's. Dust counts towards the sums like any transfer, but announces no "
            "`payment.transfer_received`. A transfer on another configured chain than the "
            "payment's (the deposit address is the same on every EVM chain, and payers do pick "
            "the wrong network) is recorded and reported with that `chain`, held at the address "
            "and never counted.",
            "properties": {
                "chain": {
                    "type": "string",
                    "description": "The chain the transfer was made on: the payment's own, or "
                    "another configured chain (sent on the wrong network).",
                },
                "tx_hash": {"type": "string"},
                "log_index": {
                    "type": "integer",
                    "description": "Log index of a token transfer; -1 for a top-level native "
                    "transfer; the trace position of an internal one.",
                },
                "kind": {"type": "string", "enum": ["native", "token", "internal", "dust"]},
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
                "count": {
                    "type": "integer",
                    "minimum": 1,
                    "description": "Transfers this one stands for: 1 but for kind `dust`.",
                },
            },
        },
        "TransferSummary": {
            "type": "object",
            "required": ["count", "dust_count", "orphaned_count", "assets", "has_more"],
            "description": "All of the payment's transfers, however many: `transfers` shows "
            "only the latest few.",
            "properties": {
                "count": {"type": "integer", "description": "Live transfers, dust included."},
                "dust_count": {
                    "type": "integer",
                    "description": "Live transfers below their asset's `min_credit`.",
                },
                "orphaned_count": {
                    "type": "integer",
                    "description": "Transfers a reorg removed from the chain.",
                },
                "assets": {
                    "type": "array",
                    "description": "Live transfers per chain and asset, the payment's own "
                    "first; those on another chain than the payment's are held, never counted.",
                    "items": {
                        "type": "object",
                        "required": [
                            "chain",
                            "asset",
                            "token_address",
                            "decimals",
                            "count",
                            "dust_count",
                            "amount",
                            "amount_base_units",
                        ],
                        "properties": {
                            "chain": {"type": "string"},
                            "asset": {"type": "string", "nullable": True},
                            "token_address": {**address, "nullable": True},
                            "decimals": {"type": "integer", "nullable": True},
                            "count": {"type": "integer"},
                            "dust_count": {"type": "integer"},
                            "amount": {**decimal, "nullable": True},
                            "amount_base_units": units,
                        },
                    },
                },
                "has_more": {
                    "type": "boolean",
                    "description": "Whether `transfers` leaves older ones out: they are at "
                    "`GET /v1/payments/{id}/transfers`.",
                },
            },
        },
        "TransferList": _page_of("Transfer"),
        "Payment": {
            "type": "object",
            "required": [
                "id",
                "merchant",
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
                "transfer_summary",
                "order_id",
                "metadata",
                "created_at",
                "expires_at",
                "detected_at",
                "confirmed_at",
                "sweep",
                "refund_status",
                "price",
                "options",
            ],
            "properties": {
                "id": {"type": "string", "pattern": "^pay_[0-9a-f]{32}$"},
                "merchant": {
                    "type": "string",
                    "description": "The merchant whose API key created it.",
                },
                "chain": {"type": "string"},
                "chain_id": {"type": "integer"},
                "asset": {"type": "string"},
                "token_address": {**address, "nullable": True},
                "decimals": {"type": "integer"},
                "amount": decimal,
                "amount_base_units": units,
                "address": {**address, "description": "The deposit address, fresh per payment."},
                "payment_uri": {"type": "string", "description": "EIP-681 URI for wallets."},
                "status": {"type": "string", "enum": list(PAYMENT_STATUSES)},
                "amount_received": decimal,
                "amount_received_base_units": units,
                "amount_confirmed": decimal,
                "amount_confirmed_base_units": units,
                "amount_overpaid": decimal,
                "amount_overpaid_base_units": units,
                "paid_late": {"type": "boolean"},
                "confirmations_required": {"type": "integer"},
                "transfers": {
                    "type": "array",
                    "items": openapi.ref("Transfer"),
                    "description": f"The latest {LATEST_TRANSFERS} transfers at most, oldest "
                    "first; `transfer_summary` counts and sums all of them, and "
                    "`GET /v1/payments/{id}/transfers` lists them.",
                },
                "transfer_summary": openapi.ref("TransferSummary"),
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
                                "refused",
                            ],
                        },
                        "tx_hash": {"type": "string", "nullable": True},
                    },
                },
                "refund_status": {
                    "type": "string",
                    "enum": ["partially_refunded", "refunded"],
                    "nullable": True,
                    "description": "Once refunds (`POST /v1/payments/{id}/refunds`) of a "
                    "confirmed payment's own asset gave back more than its overpaid part: "
                    "`partially_refunded`, or `refunded` when all it received went back; null "
                    "otherwise. `status` stays `confirmed`.",
                },
                "price": {
                    "allOf": [openapi.ref("Price")],
                    "nullable": True,
                    "description": "A payment priced in fiat: the price and what arrived at the "
                    "locked rates; null for one priced in asset units. Its `chain`, `asset` and "
                    "`amount…` fields are then those of its first quoted option.",
                },
                "options": {
                    "type": "array",
                    "items": openapi.ref("PaymentOption"),
                    "description": "A payment priced in fiat: each accepted chain and asset, in "
                    "the order of `accept`; empty for one priced in asset units.",
                },
            },
        },
        "PaymentList": _page_of("Payment"),
        **_priced_schemas(config, decimal, units, time),
    }


def _priced_schemas(config: Config, decimal: Doc, units: Doc, time: Doc) -> Doc:
    """The create request priced in fiat, the price and the options of a payment object."""
    fiat = {"type": "string", "pattern": "^(0|[1-9][0-9]*)\\.[0-9]+$", "example": "25.00"}
    options = sorted(
        f"{c.name}:{symbol}"
        for c in config.chains
        for symbol in (c.native.symbol, *c.tokens)
        if any(p.asset == symbol for p in config.rates.pairs)
    )
    currencies = sorted({p.currency for p in config.rates.pairs}) or ["USD"]
    problem = {
        "type": "object",
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string", "nullable": True},
        },
    }
    return {
        "PaymentCreatePriced": {
            "type": "object",
            "additionalProperties": False,
            "required": ["price", "accept"],
            "properties": {
                "price": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["amount", "currency"],
                    "properties": {
                        "amount": {
                            **decimal,
                            "maxLength": pricing.PRICE_MAX_LEN,
                            "example": "25.00",
                            "description": "The price in `currency`, greater than zero, at most "
                            f"{pricing.PRICE_DECIMALS} decimals; a string.",
                        },
                        "currency": {"type": "string", "enum": currencies},
                    },
                },
                "accept": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": pricing.ACCEPT_MAX,
                    "uniqueItems": True,
                    "items": {"type": "string", **({"enum": options} if options else {})},
                    "description": "`<chain>:<asset>` options the payer may pay in, each with a "
                    "rate pair configured for the currency (`[rates.pairs]`).",
                },
                "expires_in": {"type": "integer", "nullable": True},
                "order_id": {"type": "string", "nullable": True, "minLength": 1, "maxLength": 255},
                "metadata": {"type": "object", "nullable": True, "additionalProperties": True},
            },
        },
        "Price": {
            "type": "object",
            "required": [
                "amount",
                "currency",
                "amount_received",
                "amount_confirmed",
                "amount_overpaid",
                "amount_remaining",
            ],
            "properties": {
                "amount": fiat,
                "currency": {"type": "string"},
                "amount_received": {
                    **fiat,
                    "description": "Value of the live transfers in accepted options at their "
                    "locked rates, rounded down.",
                },
                "amount_confirmed": fiat,
                "amount_overpaid": fiat,
                "amount_remaining": fiat,
            },
        },
        "PaymentOption": {
            "type": "object",
            "required": [
                "chain",
                "chain_id",
                "asset",
                "token_address",
                "decimals",
                "confirmations_required",
                "amount_received",
                "amount_received_base_units",
                "amount_confirmed",
                "amount_confirmed_base_units",
                "available",
            ],
            "properties": {
                "chain": {"type": "string"},
                "chain_id": {"type": "integer"},
                "asset": {"type": "string"},
                "token_address": {"type": "string", "nullable": True},
                "decimals": {"type": "integer"},
                "confirmations_required": {"type": "integer"},
                "amount_received": decimal,
                "amount_received_base_units": units,
                "amount_confirmed": decimal,
                "amount_confirmed_base_units": units,
                "available": {
                    "type": "boolean",
                    "description": "Quoted and locked; false: no valid rate at creation "
                    "(`problem`), and funds in it are held, not counted.",
                },
                "amount": {**decimal, "description": "Asset units that pay the price."},
                "amount_base_units": units,
                "payment_uri": {"type": "string", "description": "EIP-681 URI for wallets."},
                "rate": {"type": "string", "description": "The locked rate: currency per unit."},
                "quote": {
                    "type": "object",
                    "required": ["rate", "currency", "sources", "fetched_at", "locked_until"],
                    "properties": {
                        "rate": {"type": "string"},
                        "currency": {"type": "string"},
                        "sources": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["source", "rate", "at"],
                                "properties": {
                                    "source": {"type": "string"},
                                    "rate": {"type": "string"},
                                    "at": time,
                                },
                            },
                        },
                        "fetched_at": time,
                        "locked_until": {
                            **time,
                            "description": "The payment's expiry: the rate holds for its window "
                            "and its late window.",
                        },
                    },
                },
                "value_received": {**fiat, "description": "amount_received at the locked rate."},
                "problem": {**problem, "description": "Why the option has no quote."},
            },
        },
    }


def _payment_paths(config: Config) -> Doc:
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
                    "content": openapi.json_content(
                        {
                            "oneOf": [
                                openapi.ref("PaymentCreate"),
                                openapi.ref("PaymentCreatePriced"),
                            ]
                        }
                    ),
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
                        "schema": {"type": "string", "enum": list(PAYMENT_STATUSES)},
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
                            "maxLength": payments.ORDER_ID_MAX,
                            "pattern": "^[^\\u0000]*$",
                        },
                    },
                    limit_parameter(payments.DEFAULT_LIMIT, payments.MAX_LIMIT),
                    CURSOR_PARAMETER,
                ],
                "responses": {
                    "200": page_response("PaymentList"),
                    **openapi.problem_responses(400, 401),
                },
            },
        },
        "/v1/payments/export.csv": {
            "get": {
                "summary": "Export payments as CSV for the books",
                "operationId": "exportPayments",
                "description": (
                    "The merchant's payments created in [`from`, `to`), oldest first: one row per "
                    "payment (fiat price, locked rates, asset amounts, confirmation time, sweep "
                    "transactions and fees), or per transfer with `transfers=true` (with its "
                    "value at the locked rate)."
                ),
                "parameters": [
                    *(
                        {
                            "name": name,
                            "in": "query",
                            "schema": {"type": "string", "format": "date-time"},
                            "description": what,
                        }
                        for name, what in (
                            ("from", "Created at or after (ISO 8601 date or date-time; UTC)."),
                            ("to", "Created before (default: now)."),
                        )
                    ),
                    {
                        "name": "transfers",
                        "in": "query",
                        "schema": {"type": "string", "enum": ["true", "false"]},
                    },
                ],
                "responses": {
                    "200": {
                        "description": "CSV with a header row",
                        "content": {"text/csv": {"schema": {"type": "string"}}},
                    },
                    **openapi.problem_responses(400, 401, 403),
                },
            }
        },
        "/v1/payments/{id}": {
            "get": {
                "summary": "Get a payment",
                "operationId": "getPayment",
                "parameters": [payment_id],
                "responses": {"200": payment, **openapi.problem_responses(401, 404)},
            }
        },
        "/v1/payments/{id}/transfers": {
            "get": {
                "summary": "List a payment's transfers, newest first",
                "operationId": "listPaymentTransfers",
                "description": (
                    "Every transfer recorded for the payment, orphaned ones too, newest block "
                    "first; a `dust` aggregate is one entry standing for `count` transfers."
                ),
                "parameters": [
                    payment_id,
                    limit_parameter(payments.DEFAULT_LIMIT, payments.MAX_LIMIT),
                    CURSOR_PARAMETER,
                ],
                "responses": {
                    "200": page_response("TransferList"),
                    **openapi.problem_responses(400, 401, 404),
                },
            }
        },
        "/v1/payments/{id}/cancel": {
            "post": {
                "summary": "Cancel a pending payment",
                "operationId": "cancelPayment",
                "description": (
                    "Only a `pending` payment can be canceled (409 otherwise); canceling a "
                    "canceled payment answers 200 again. Emits `payment.canceled`. Funds that "
                    "still arrive are recorded and reported. The cancel takes effect once the "
                    "payment's chain is scanned past the time of the request (a transfer mined "
                    "before it must not be unread): the request waits for that up to two scan "
                    "intervals (10 s at most), then answers 409 with `payment_status: pending` "
                    "and `Retry-After`; retry then."
                ),
                "parameters": [payment_id],
                "responses": {"200": payment, **openapi.problem_responses(401, 404, 409)},
            }
        },
    }


def _event_schemas() -> Doc:
    time = {"type": "string", "format": "date-time"}
    nullable_time = {**time, "nullable": True}
    nullable_text = {"type": "string", "nullable": True}
    return {
        "EventPayload": {
            "type": "object",
            "description": (
                "The webhook body, byte for byte as delivered (and signed) on every attempt."
            ),
            "required": ["id", "type", "created_at", "data"],
            "properties": {
                "id": {"type": "string", "description": "`evt_…`; the `webhook-id` header."},
                "type": {"type": "string", "enum": list(EVENT_TYPES)},
                "created_at": time,
                "merchant": {
                    "type": "string",
                    "description": "The payment's merchant, the one whose endpoint receives it.",
                },
                "data": {
                    "type": "object",
                    "description": (
                        "`payment` for `payment.*` and `refund.*` events (with `transfer`, "
                        "`refund` where they apply); `payout` for `payout.*` events."
                    ),
                    "properties": {
                        "payment": openapi.ref("Payment"),
                        "transfer": openapi.ref("Transfer"),
                        "refund": openapi.ref("Refund"),
                        "payout": openapi.ref("Payout"),
                    },
                },
            },
        },
        "DeliveryAttempt": {
            "type": "object",
            "properties": {
                "attempted_at": time,
                "url": {"type": "string", "description": "Without user info or query string."},
                "http_status": {"type": "integer", "nullable": True},
                "latency_ms": {"type": "integer"},
                "error": {**nullable_text, "description": "Null on a 2xx answer."},
                "response_body": {
                    **nullable_text,
                    "description": "The first 1 KiB of the answer, as UTF-8.",
                },
            },
        },
        "Delivery": {
            "type": "object",
            "description": "The event's delivery to one endpoint, with its own retries and log.",
            "properties": {
                "id": {"type": "string", "description": "`dlv_…`."},
                "endpoint_id": {
                    **nullable_text,
                    "description": (
                        "The webhook endpoint (`we_…`); null for the default merchant's "
                        "`[webhooks] url` of the config."
                    ),
                },
                "status": {
                    "type": "string",
                    "enum": list(DELIVERY_STATUSES),
                    "description": (
                        "`pending`: queued or retrying; `delivered`: a 2xx answer; `failed`: "
                        "every retry of the schedule failed, or its endpoint was deleted "
                        "(redeliver it by hand)."
                    ),
                },
                "next_attempt_at": {
                    **nullable_time,
                    "description": (
                        "Set while pending; null while it waits for an earlier delivery of its "
                        "payment to the same endpoint that is being retried (a payment's events "
                        "reach each endpoint in order)."
                    ),
                },
                "delivered_at": nullable_time,
                "last_error": nullable_text,
                "attempts": {"type": "array", "items": openapi.ref("DeliveryAttempt")},
            },
        },
        "Event": {
            "type": "object",
            "properties": {
                "id": {
                    "type": "string",
                    "description": "`evt_…`: the `webhook-id` every endpoint receives it with.",
                },
                "type": {"type": "string", "enum": list(EVENT_TYPES)},
                "payment_id": {
                    "type": "string",
                    "nullable": True,
                    "description": "Null for `payout.*` events.",
                },
                "status": {
                    "type": "string",
                    "enum": [*DELIVERY_STATUSES, "none"],
                    "description": (
                        "Of its deliveries: `pending` while any is, else `failed` if any failed, "
                        "else `delivered`; `none` when no endpoint took it (the merchant had no "
                        "live endpoint for its type)."
                    ),
                },
                "created_at": time,
                "deliveries": {"type": "array", "items": openapi.ref("Delivery")},
                "payload": openapi.ref("EventPayload"),
            },
        },
        "EventList": {
            "type": "object",
            "properties": {
                "data": {"type": "array", "items": openapi.ref("Event")},
                "has_more": {"type": "boolean"},
                "next_cursor": nullable_text,
            },
        },
    }


def _event_paths() -> Doc:
    return {
        "/v1/events": {
            "get": {
                "summary": "List webhook events with their deliveries, newest first",
                "operationId": "listEvents",
                "parameters": [
                    {
                        "name": "payment_id",
                        "in": "query",
                        "schema": {"type": "string", "pattern": "^pay_[0-9a-f]{32}$"},
                    },
                    {
                        "name": "status",
                        "in": "query",
                        "schema": {"type": "string", "enum": list(DELIVERY_STATUSES)},
                        "description": "Only events with a delivery in this status.",
                    },
                    limit_parameter(events.DEFAULT_LIMIT, events.MAX_LIMIT),
                    CURSOR_PARAMETER,
                ],
                "responses": {
                    "200": {
                        **page_response("EventList"),
                        "links": {
                            "RedeliverEvent": {
                                "operationId": "redeliverEvent",
                                "parameters": {"id": "$response.body#/data/0/id"},
                                "description": "Redeliver an event of the page.",
                            }
                        },
                    },
                    **openapi.problem_responses(400, 401),
                },
            }
        },
        "/v1/events/{id}/redeliver": {
            "post": {
                "summary": "Send an event again to each endpoint that takes it",
                "operationId": "redeliverEvent",
                "description": (
                    "Each live endpoint whose filter takes the event gets it again as soon as a "
                    "worker is free, with a fresh retry schedule: its delivered or failed "
                    "delivery is queued again (earlier attempts stay in the log), and an "
                    "endpoint created since gets a new delivery. Endpoints with a delivery of it "
                    "pending are left alone. 409 when nothing was queued: every delivery is "
                    "pending, or no live endpoint takes the event."
                ),
                "parameters": [
                    {
                        "name": "id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                        "description": "Event id (`evt_…`).",
                    }
                ],
                "responses": {
                    "202": {
                        "description": "Queued",
                        "content": openapi.json_content(openapi.ref("Event")),
                    },
                    **openapi.problem_responses(401, 404, 409),
                },
            }
        },
    }


_NULLABLE_INT = {"type": "integer", "nullable": True}
_CHAIN_SCHEMAS: Doc = {
    "RpcEndpoint": {
        "type": "object",
        "properties": {
            "url": {
                "type": "string",
                "description": "Scheme, host and port only: paths and queries may hold API keys.",
            },
            "ok": {"type": "boolean", "description": "The last request to it succeeded."},
            "last_error": {"type": "string", "nullable": True},
            "last_error_at": {"type": "number", "nullable": True, "description": "Unix time."},
            "latency_ms": {"type": "number", "nullable": True, "description": "Last request."},
            "requests": {"type": "integer"},
            "errors": {"type": "integer"},
        },
    },
    "Chain": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "chain_id": {"type": "integer"},
            "head": {**_NULLABLE_INT, "description": "Latest block the node reported."},
            "head_seen_at": {"type": "string", "format": "date-time", "nullable": True},
            "head_time": {
                "type": "string",
                "format": "date-time",
                "nullable": True,
                "description": "The head block's own timestamp.",
            },
            "stalled": {
                "type": "boolean",
                "description": "The head block is older than the chain's `stall_after`.",
            },
            "scanned_block": {**_NULLABLE_INT, "description": "Last block fully scanned."},
            "scanned_at": {"type": "string", "format": "date-time", "nullable": True},
            "lag": {**_NULLABLE_INT, "description": "head − scanned_block."},
            "confirmations": {"type": "integer"},
            "scanner": {
                "type": "object",
                "properties": {
                    "leader": {
                        "type": "boolean",
                        "description": "This process holds the chain's scanner lock.",
                    },
                    "watched_addresses": {"type": "integer"},
                    "last_error": {"type": "string", "nullable": True},
                    "ws_connected": {
                        "type": "boolean",
                        "nullable": True,
                        "description": "The subscription to new heads over the chain's `ws` URL"
                        " is up (null: no `ws` configured); while it is down the chain is polled.",
                    },
                },
            },
            "rpc": {"type": "array", "items": openapi.ref("RpcEndpoint")},
        },
    },
}
_CHAIN_PATHS: Doc = {
    "/v1/chains": {
        "get": {
            "summary": "Chains: head, last scanned block, lag and RPC health",
            "operationId": "listChains",
            "responses": {
                "200": {
                    "description": "Every configured chain",
                    "content": openapi.json_content(
                        {
                            "type": "object",
                            "properties": {
                                "data": {"type": "array", "items": openapi.ref("Chain")}
                            },
                        }
                    ),
                },
                **openapi.problem_responses(401),
            },
        }
    }
}


_PAYMENT_ID_PARAM = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^pay_[0-9a-f]{32}$"},
}
_CHECKOUT_SCHEMAS: Doc = {
    "CheckoutStatus": {
        "type": "object",
        "description": "What the payer's page shows; no merchant data.",
        "properties": {
            "id": {"type": "string"},
            "status": {
                "type": "string",
                "enum": list(PAYMENT_STATUSES),
            },
            "asset": {"type": "string"},
            **{
                name: {"type": "string", "description": "A decimal string in asset units."}
                for name in ("amount", "amount_received", "amount_remaining")
            },
            "confirmations": {
                "type": "object",
                "properties": {"done": {"type": "integer"}, "required": {"type": "integer"}},
            },
            "expires_at": {"type": "string", "format": "date-time"},
            "expires_in": {"type": "integer", "description": "Seconds left (server clock)."},
            "paid_late": {"type": "boolean"},
            "options": {
                "type": "array",
                "description": "Priced in fiat only (then `asset` is the currency and the "
                "amounts are in it): each accepted option; `amount`, `amount_remaining` (what is "
                "still to send in it, at its locked rate), `rate` and `payment_uri` only when it "
                "was quoted (`available`).",
                "items": {
                    "type": "object",
                    "required": ["chain", "chain_id", "asset", "token_address", "available"],
                    "properties": {
                        "chain": {"type": "string"},
                        "chain_id": {"type": "integer"},
                        "asset": {"type": "string"},
                        "token_address": {"type": "string", "nullable": True},
                        "available": {"type": "boolean"},
                        "amount": {"type": "string"},
                        "amount_remaining": {"type": "string"},
                        "rate": {"type": "string"},
                        "payment_uri": {"type": "string"},
                    },
                },
            },
            "refund_status": {
                "type": "string",
                "enum": ["partially_refunded", "refunded"],
                "nullable": True,
            },
        },
    }
}
_CHECKOUT_PATHS: Doc = {
    "/pay/{id}": {
        "get": {
            "summary": "Checkout page for the payer (HTML, public)",
            "operationId": "checkoutPage",
            "security": [],
            "parameters": [_PAYMENT_ID_PARAM],
            "responses": {
                "200": {
                    "description": "HTML page",
                    "content": {"text/html": {"schema": {"type": "string"}}},
                },
                "404": {
                    "description": "No such payment (HTML page)",
                    "content": {"text/html": {"schema": {"type": "string"}}},
                },
            },
        }
    },
    "/pay/{id}/status": {
        "get": {
            "summary": "Payment status as the checkout page polls it (public)",
            "operationId": "checkoutStatus",
            "security": [],
            "parameters": [_PAYMENT_ID_PARAM],
            "responses": {
                "200": {
                    "description": "Status",
                    "content": openapi.json_content(openapi.ref("CheckoutStatus")),
                },
                **openapi.problem_responses(404),
            },
        }
    },
}


def _endpoint_schemas() -> Doc:
    time = {"type": "string", "format": "date-time"}
    nullable_text = {"type": "string", "nullable": True}
    types = {
        "type": "array",
        "items": {"type": "string", "enum": list(EVENT_TYPES)},
        "minItems": 1,
        "nullable": True,
        "description": "Event types delivered to it; null: every type.",
    }
    required = ["id", "url", "description", "event_types", "created_at"]
    properties: Doc = {
        "id": {"type": "string", "description": "`we_…`"},
        "url": {"type": "string"},
        "description": nullable_text,
        "event_types": types,
        "created_at": time,
        "previous_secret_expires_at": {
            **time,
            "nullable": True,
            "description": "While a rotation overlaps: until when the old secret signs too.",
        },
    }
    endpoint: Doc = {"type": "object", "required": required, "properties": properties}
    return {
        "WebhookEndpointCreate": {
            "type": "object",
            "required": ["url"],
            "additionalProperties": False,
            "properties": {
                "url": {
                    "type": "string",
                    "maxLength": 2048,
                    "description": (
                        "The `https` URL events are POSTed to (plain `http` only on a loopback "
                        "host); redirects are not followed, private addresses are refused "
                        "unless the operator allows them."
                    ),
                },
                "event_types": types,
                "description": {
                    **nullable_text,
                    "maxLength": endpoints.DESCRIPTION_MAX,
                    "pattern": "^[^\\u0000]*$",
                },
            },
        },
        "WebhookEndpoint": endpoint,
        "WebhookEndpointWithSecret": {
            "type": "object",
            "required": [*required, "secret"],
            "properties": {
                **properties,
                "secret": {
                    "type": "string",
                    "description": "`whsec_…` Standard Webhooks signing secret; shown only now.",
                },
            },
        },
        "WebhookEndpointList": {
            "type": "object",
            "properties": {"data": {"type": "array", "items": openapi.ref("WebhookEndpoint")}},
        },
        "WebhookTestResult": {
            "type": "object",
            "properties": {
                "id": {"type": "string", "description": "The test message's `webhook-id`."},
                "delivered": {"type": "boolean", "description": "The endpoint answered 2xx."},
                "http_status": {"type": "integer", "nullable": True},
                "latency_ms": {"type": "integer"},
                "error": nullable_text,
            },
        },
    }


def _endpoint_paths() -> Doc:
    id_param = {
        "name": "id",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": "Endpoint id (`we_…`).",
    }

    def with_secret(description: str, status: str) -> Doc:
        return {
            status: {
                "description": description,
                "content": openapi.json_content(openapi.ref("WebhookEndpointWithSecret")),
            }
        }

    return {
        "/v1/webhook-endpoints": {
            "post": {
                "summary": "Add a webhook endpoint; its signing secret is shown only now",
                "operationId": "createWebhookEndpoint",
                "description": (
                    f"At most {endpoints.MAX_ENDPOINTS} per merchant. Every later event of the "
                    "merchant whose type it takes is delivered to it, as its own delivery."
                ),
                "requestBody": {
                    "required": True,
                    "content": openapi.json_content(openapi.ref("WebhookEndpointCreate")),
                },
                "responses": {
                    **with_secret("Created", "201"),
                    **openapi.problem_responses(400, 401, 409, 413, 415, 422),
                },
            },
            "get": {
                "summary": "List the merchant's webhook endpoints",
                "operationId": "listWebhookEndpoints",
                "responses": {
                    "200": {
                        "description": "Every live endpoint, oldest first",
                        "content": openapi.json_content(openapi.ref("WebhookEndpointList")),
                    },
                    **openapi.problem_responses(401),
                },
            },
        },
        "/v1/webhook-endpoints/{id}": {
            "get": {
                "summary": "One webhook endpoint",
                "operationId": "getWebhookEndpoint",
                "parameters": [id_param],
                "responses": {
                    "200": {
                        "description": "The endpoint",
                        "content": openapi.json_content(openapi.ref("WebhookEndpoint")),
                    },
                    **openapi.problem_responses(401, 404),
                },
            },
            "delete": {
                "summary": "Delete a webhook endpoint: its pending deliveries fail, nothing more "
                "is sent to it",
                "operationId": "deleteWebhookEndpoint",
                "parameters": [id_param],
                "responses": {
                    "204": {"description": "Deleted"},
                    **openapi.problem_responses(401, 404),
                },
            },
        },
        "/v1/webhook-endpoints/{id}/rotate-secret": {
            "post": {
                "summary": "Replace the signing secret; the old one keeps signing for a while",
                "operationId": "rotateWebhookEndpointSecret",
                "description": (
                    "Deliveries carry both signatures until `previous_secret_expires_at` "
                    "(`webhooks.secret_overlap` seconds, one day by default)."
                ),
                "parameters": [id_param],
                "responses": {
                    **with_secret("The endpoint with its new secret", "200"),
                    **openapi.problem_responses(401, 404),
                },
            }
        },
        "/v1/webhook-endpoints/{id}/test": {
            "post": {
                "summary": "Send a signed `webhook.test` message to the endpoint now",
                "operationId": "testWebhookEndpoint",
                "parameters": [id_param],
                "responses": {
                    "200": {
                        "description": "How the endpoint answered",
                        "content": openapi.json_content(openapi.ref("WebhookTestResult")),
                    },
                    **openapi.problem_responses(401, 404),
                },
            }
        },
    }
