"""`ctripd wallet xpub`."""

from __future__ import annotations

import argparse

from ctripd.chain.wallet import from_config
from ctripd.cli.common import load


def cmd_xpub(args: argparse.Namespace) -> int:
    print(from_config(load(args)).xpub())
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    wallet = sub.add_parser("wallet", help="the HD wallet")
    wsub = wallet.add_subparsers(dest="wallet_command", required=True)
    wsub.add_parser(
        "xpub", help="print the xpub of m/44'/60'/0'/0, for a watch-only [wallet] xpub"
    ).set_defaults(func=cmd_xpub)
