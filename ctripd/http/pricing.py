"""Create requests priced in fiat (SPEC §15): `{price: {amount, currency}, accept: [...]}`
parsed, and each accepted option quoted from the rate book and locked."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson

from ctripd.config import ChainConfig, Config
from ctripd.http.params import short
from ctripd.http.problems import Problem, validation
from ctripd.ledger.fiat import Option
from ctripd.ledger.payments import NewPayment
from ctripd.money import AmountError, to_base_units, units_due
from ctripd.rates.book import RateBook

PRICED_FIELDS = ("price", "accept", "expires_in", "order_id", "metadata")
# A price has at most this many decimals (fractions of a cent allowed).
PRICE_DECIMALS = 6
PRICE_MAX_LEN = 40
ACCEPT_MAX = 16


@dataclass(frozen=True, slots=True)
class Accepted:
    chain: ChainConfig
    asset: str
    token_address: str | None
    decimals: int


@dataclass(frozen=True, slots=True)
class PricedRequest:
    """A validated create request priced in fiat."""

    price: Decimal
    currency: str
    accept: list[Accepted]
    fields: dict[str, Any]


def parse_price(value: Any) -> tuple[Decimal, str]:
    if not isinstance(value, dict) or set(value) != {"amount", "currency"}:
        raise validation("price", 'must be an object {"amount": "25.00", "currency": "USD"}')
    amount, currency = value["amount"], value["currency"]
    if not isinstance(amount, str) or len(amount) > PRICE_MAX_LEN or not amount.isascii():
        raise validation("price.amount", 'must be a decimal string such as "25.00"')
    try:
        to_base_units(amount, PRICE_DECIMALS)
    except AmountError as exc:
        raise validation("price.amount", str(exc)) from None
    if not isinstance(currency, str) or len(currency) != 3 or not currency.isupper():
        raise validation("price.currency", 'must be a currency code such as "USD"')
    if not currency.isascii() or not currency.isalpha():
        raise validation("price.currency", 'must be a currency code such as "USD"')
    return Decimal(amount), currency


def parse_accept(value: Any, config: Config, currency: str) -> list[Accepted]:
    if not isinstance(value, list) or not 1 <= len(value) <= ACCEPT_MAX:
        raise validation("accept", f'must list 1 to {ACCEPT_MAX} options such as "ethereum:USDC"')
    accepted: list[Accepted] = []
    for i, item in enumerate(value):
        field = f"accept[{i}]"
        if not isinstance(item, str) or ":" not in item:
            raise validation(field, 'must be "<chain>:<asset>", such as "ethereum:USDC"')
        chain_name, _, symbol = item.partition(":")
        chain = config.chain(chain_name)
        if chain is None:
            known = ", ".join(c.name for c in config.chains)
            raise validation(field, f"unknown chain {short(chain_name)} (configured: {known})")
        asset = chain.asset(symbol)
        if asset is None:
            known = ", ".join([chain.native.symbol, *chain.tokens])
            raise validation(field, f"unknown asset {short(symbol)} on {chain.name} ({known})")
        if config.rates.pair(symbol, currency) is None:
            raise validation(field, f"no rate source is configured for {symbol} in {currency}")
        if any(a.chain.name == chain.name and a.asset == symbol for a in accepted):
            raise validation(field, f"{item} is listed twice")
        accepted.append(Accepted(chain, symbol, *asset))
    return accepted


def parse_priced(body: dict[str, Any], config: Config) -> PricedRequest:
    """Validate a create request priced in fiat; every problem is a 422 naming its field."""
    for name in body:
        if name not in PRICED_FIELDS:
            raise validation(
                str(name)[:100],
                f"unknown field of a payment priced in fiat (allowed: {', '.join(PRICED_FIELDS)})",
            )
    fields = {k: v for k, v in body.items() if v is not None}
    for name in ("price", "accept"):
        if name not in fields:
            raise validation(name, "is required")
    price, currency = parse_price(fields["price"])
    return PricedRequest(price, currency, parse_accept(fields["accept"], config, currency), fields)


async def quote(book: RateBook, request: PricedRequest) -> list[Option]:
    """Every accepted option with its quote locked (or why it has none); 503
    `rates-unavailable` when none at all can be quoted."""
    pairs = sorted({(a.asset, request.currency) for a in request.accept})
    quotes = await book.quotes(pairs)
    options: list[Option] = []
    for a in request.accept:
        found = quotes[(a.asset, request.currency)]
        base = (a.chain.name, a.chain.chain_id, a.asset, a.token_address, a.decimals)
        if isinstance(found, str):
            options.append(Option(*base, a.chain.confirmations, unavailable=found))
            continue
        options.append(
            Option(
                *base,
                a.chain.confirmations,
                amount=units_due(request.price, found.rate, a.decimals),
                rate=found.rate,
                sources=found.sources_json(),
                fetched_at=found.fetched_at,
            )
        )
    if all(o.rate is None for o in options):
        details = "; ".join(f"{o.chain}:{o.asset}: {o.unavailable}" for o in options)
        raise Problem(
            503,
            f"no accepted option can be quoted now: {details}"[:1000],
            slug="rates-unavailable",
            headers={"Retry-After": "30"},
        )
    return options


def new_payment(
    request: PricedRequest,
    options: list[Option],
    common: tuple[int, str | None, Any, bytes],
    merchant: str,
    idempotency_key: str | None,
) -> NewPayment:
    """The payment's asset columns: its first quoted option's."""
    first = next(o for o in options if o.amount is not None)
    assert first.amount is not None
    expires_in, order_id, metadata, metadata_json = common
    request_hash = None
    if idempotency_key is not None:
        request_hash = hashlib.sha256(
            orjson.dumps(request.fields, option=orjson.OPT_SORT_KEYS)
        ).digest()
    return NewPayment(
        merchant=merchant,
        chain=first.chain,
        chain_id=first.chain_id,
        asset=first.asset,
        token_address=first.token_address,
        decimals=first.decimals,
        amount=first.amount,
        confirmations_required=first.confirmations_required,
        expires_in=expires_in,
        order_id=order_id,
        metadata=metadata,
        metadata_json=metadata_json.decode(),
        idempotency_key=idempotency_key,
        request_hash=request_hash,
    )
