"""The `ctripd` command line."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import structlog

from ctripd import db
from ctripd.config import Config, ConfigError, load_config, read_secret
from ctripd.errors import CtripdError
from ctripd.log import configure_logging

log = structlog.get_logger(__name__)

EXIT_CONFIG = 2
Handler = Callable[[argparse.Namespace], int]


class CliError(Exception):
    """A failure worth one line on stderr and a non-zero exit."""


def listing_limit(status: str | None, statuses: Sequence[str], limit: str, most: int) -> int:
    """A list command's `--limit` as a number, after checking it and `--status`: a mistake is
    one line and exit code 1, like every other CLI mistake (argparse's own checks exit 2)."""
    if status is not None and status not in statuses:
        raise CliError(f"--status must be one of {', '.join(statuses)}, not {status!r}")
    if not (limit.isascii() and limit.isdigit()) or not 1 <= int(limit) <= most:
        raise CliError(f"--limit must be an integer from 1 to {most}, not {limit!r}")
    return int(limit)


def load(args: argparse.Namespace) -> Config:
    return load_config(args.config)


def database_dsn(config: Config) -> str:
    """The configured DSN, or the embedded Postgres under the state directory."""
    if config.database.dsn:
        return config.database.dsn
    return db.embedded_dsn(config.state_dir)


async def with_connection(args: argparse.Namespace, work: Any) -> Any:
    """Run `work(conn)` on a connection to the configured database, for CLI commands."""
    dsn = await asyncio.to_thread(database_dsn, load(args))
    conn = await db.connect(dsn)
    try:
        return await work(conn)
    except asyncpg.UndefinedTableError:
        raise CliError("the database is not migrated yet: run `ctripd migrate` first") from None
    finally:
        await conn.close()


def check_secrets(config: Config) -> None:
    """Refuse unsafe secret files at start-up, before anything else happens."""
    if config.wallet.mnemonic_file:
        read_secret(config.path, "wallet.mnemonic_file", config.wallet.mnemonic_file)
    if config.webhooks.secret_file or config.webhooks.previous_secret_file:
        from ctripd.signing import Signer

        Signer.from_config(config)  # file modes, and the whsec_<base64> format


def cmd_run(args: argparse.Namespace) -> int:
    config = load(args)
    configure_logging(config.log.level, config.log.format)
    check_secrets(config)
    dsn = database_dsn(config)
    if config.daemon.migrate_on_start:
        applied = db.migrate(dsn)
        if applied:
            log.info("migrations.applied", migrations=applied)
    return serve(config, dsn)


def serve(config: Config, dsn: str) -> int:
    """Run the daemon in the foreground until SIGINT/SIGTERM, then stop gracefully."""
    from aiohttp import web

    from ctripd.app import AppOptions, create_app

    configure_logging(config.log.level, config.log.format)
    app = create_app(config, AppOptions(dsn=dsn))
    log.info("ctripd.starting", host=config.server.host, port=config.server.port)
    web.run_app(
        app,
        host=config.server.host,
        port=config.server.port,
        shutdown_timeout=config.daemon.shutdown_timeout,
        print=None,
        access_log=None,
    )
    log.info("ctripd.stopped")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    config = load(args)
    applied = db.migrate(database_dsn(config))
    print(f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else ""))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from ctripd.check import run_checks

    return asyncio.run(run_checks(args.config))


def cmd_dev(args: argparse.Namespace) -> int:
    from ctripd.dev import run_dev

    return run_dev(Path(args.state_dir), chain_id=args.chain_id, port=args.port)


def cmd_dev_pay(args: argparse.Namespace) -> int:
    from ctripd.dev import pay

    print(pay(Path(args.state_dir), args.payment_id, args.amount))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ctripd", description=__doc__)
    parser.add_argument(
        "--config",
        default=os.environ.get("CTRIPD_CONFIG", "ctripd.toml"),
        help="path of ctripd.toml (default: $CTRIPD_CONFIG or ./ctripd.toml)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="run the daemon").set_defaults(func=cmd_run)
    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=cmd_migrate)
    sub.add_parser("check", help="check config, database and every RPC").set_defaults(
        func=cmd_check
    )
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
    from ctripd import events_api

    events_api.add_commands(sub)
    from ctripd import apikeys, wallet

    apikeys.add_commands(sub)
    wallet.add_commands(sub)
    from ctripd import reconcile

    reconcile.add_commands(sub)
    from ctripd import operator_cli

    operator_cli.add_commands(sub)
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
