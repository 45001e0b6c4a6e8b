"""`ctripd dev` and `ctripd dev pay`."""

from __future__ import annotations

import argparse
from pathlib import Path

from ctripd.dev.run import pay, run_dev


def cmd_dev(args: argparse.Namespace) -> int:
    return run_dev(Path(args.state_dir), chain_id=args.chain_id, port=args.port)


def cmd_dev_pay(args: argparse.Namespace) -> int:
    print(pay(Path(args.state_dir), args.payment_id, args.amount))
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dev = sub.add_parser("dev", help="embedded Postgres + local Anvil + throw-away wallet")
    dev.add_argument("--state-dir", default=".state/dev")
    dev.add_argument("--chain-id", type=int, default=31337)
    dev.add_argument("--port", type=int, default=8080)
    dev.set_defaults(func=cmd_dev)
    dev_sub = dev.add_subparsers(dest="dev_command")
    dev_pay = dev_sub.add_parser("pay", help="pay a payment from a funded devnet account")
    dev_pay.add_argument("payment_id")
    dev_pay.add_argument("--amount", help="asset units (default: what is still due)")
    dev_pay.set_defaults(func=cmd_dev_pay)
