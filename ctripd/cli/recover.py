"""`ctripd recover PAYMENT --to ADDRESS`: send a payment's held funds (another asset than the
payment's, or funds at an expired or canceled payment) to an address the operator names.

The request is approved here with the wallet's approval key and recorded; the sweep job carries
it out through the signing policy, which checks that approval and the payment's held funds
again when it signs. `ctripd reconcile` lists every recovery."""

from __future__ import annotations

import argparse
import sys

import asyncpg
from eth_utils import is_checksum_address, is_hex_address, to_checksum_address

from ctripd.chain.wallet import from_config
from ctripd.cli.common import CliError, clean, configured_chain, run_on_database
from ctripd.config import Config
from ctripd.ledger import recoveries
from ctripd.ledger.objects import load_payment
from ctripd.ledger.reconcile import asset_of
from ctripd.money import AmountError, to_base_units, to_decimal_string


def cmd_recover(args: argparse.Namespace) -> int:
    to = args.to
    if not is_checksum_address(to):
        hint = f": use {to_checksum_address(to)}" if is_hex_address(to) else ""
        raise CliError(f"--to {clean(to)!r} is not a checksummed address{hint}")

    async def work(config: Config, pool: asyncpg.Pool) -> str:
        wallet = from_config(config)
        payment = await load_payment(pool, args.payment_id)
        if payment is None:
            raise CliError(f"no payment {clean(args.payment_id)!r}")
        chain = configured_chain(config, payment["chain"])
        held = await recoveries.held(pool, payment["id"])
        if not held:
            raise CliError(f"payment {payment['id']} holds no funds to recover")
        if args.asset is None:
            if len(held) > 1:
                names = ", ".join(asset_of(chain, t)[0] for t in held)
                raise CliError(f"payment {payment['id']} holds several assets ({names}): --asset")
            token = next(iter(held))
        else:
            asset = chain.asset(args.asset)
            if asset is None:
                raise CliError(f"--asset {clean(args.asset)!r} is not an asset of {chain.name}")
            token = asset[0].lower() if asset[0] else None
        if token is None:
            symbol, decimals, checksummed = chain.native.symbol, chain.native.decimals, None
        else:
            found = chain.token_at(token)
            if found is None:
                raise CliError(f"{token} is not a configured token of {chain.name}: add it first")
            symbol, decimals, checksummed = found.symbol, found.decimals, found.address
        available = held.get(token, 0)
        if available <= 0:
            raise CliError(f"payment {payment['id']} holds no {symbol}")
        amount = available
        if args.amount is not None:
            try:
                amount = to_base_units(args.amount, decimals)
            except AmountError as exc:
                raise CliError(f"--amount {clean(args.amount)!r}: {exc}") from None
            if amount > available:
                shown = to_decimal_string(available, decimals)
                raise CliError(f"--amount is more than the {shown} {symbol} the payment holds")
        approval = wallet.approve(
            recoveries.request_text(chain.name, payment["id"], checksummed, to, amount)
        )
        recovery_id = await recoveries.record(
            pool, chain.name, payment["id"], checksummed, to, amount, approval
        )
        return (
            f"recovery #{recovery_id}: {to_decimal_string(amount, decimals)} {symbol} of "
            f"payment {payment['id']} from {payment['address']} to {to}"
        )

    print(run_on_database(args, work))
    print(
        "approved and recorded; the sweep job of the running daemon sends it "
        "(`ctripd reconcile` lists it)",
        file=sys.stderr,
    )
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "recover", help="send a payment's held funds to an address (approved here, sent by run)"
    )
    parser.add_argument("payment_id", help="payment id (pay_…)")
    parser.add_argument("--to", required=True, help="checksummed address to send them to")
    parser.add_argument("--asset", help="asset symbol, when the payment holds several")
    parser.add_argument("--amount", help="asset units (default: all it holds in that asset)")
    parser.set_defaults(func=cmd_recover)
