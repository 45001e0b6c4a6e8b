"""`ctripd wallet xpub|gas`."""

from __future__ import annotations

import argparse
import sys

from ctripd.chain.wallet import from_config
from ctripd.cli.common import load
from ctripd.jobs.policy import GasWallet


def cmd_xpub(args: argparse.Namespace) -> int:
    print(from_config(load(args)).xpub())
    return 0


def cmd_gas(args: argparse.Namespace) -> int:
    config = load(args)
    hardened = config.wallet.gas_wallet == "hardened"
    gas = GasWallet.of(from_config(config), config.wallet.gas_wallet_index, hardened)
    print(gas.address)
    if gas.legacy is not None:
        print(
            f"former gas wallet {gas.legacy} (deposit chain, index {gas.index}): what is left "
            "there goes to each chain's treasury",
            file=sys.stderr,
        )
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    wallet = sub.add_parser("wallet", help="the HD wallet")
    wsub = wallet.add_subparsers(dest="wallet_command", required=True)
    wsub.add_parser(
        "xpub", help="print the xpub of m/44'/60'/0'/0, for a watch-only [wallet] xpub"
    ).set_defaults(func=cmd_xpub)
    wsub.add_parser(
        "gas", help="print the gas wallet's address (fund it on every chain with tokens)"
    ).set_defaults(func=cmd_gas)
