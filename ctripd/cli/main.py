"""The `ctripd` command line."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from ctripd.cli import (
    daemon,
    dev,
    events,
    keys,
    merchants,
    outgoing,
    payments,
    reconcile,
    recover,
    wallet,
)
from ctripd.cli.common import EXIT_CONFIG, CliError
from ctripd.config import ConfigError
from ctripd.errors import CtripdError

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ctripd", description=__doc__)
    parser.add_argument(
        "--config",
        default=os.environ.get("CTRIPD_CONFIG", "ctripd.toml"),
        help="path of ctripd.toml (default: $CTRIPD_CONFIG or ./ctripd.toml)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (
        daemon,
        dev,
        events,
        keys,
        merchants,
        wallet,
        reconcile,
        recover,
        payments,
        outgoing,
    ):
        module.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Handler = args.func
    try:
        return handler(args)
    except ConfigError as exc:
        print(f"ctripd: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except (CliError, CtripdError) as exc:
        print(f"ctripd: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
