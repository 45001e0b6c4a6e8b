"""`ctripd run`, `ctripd migrate` and `ctripd check`."""

from __future__ import annotations

import argparse
import asyncio

import structlog

from ctripd import db, embedded
from ctripd.cli.check import run_checks
from ctripd.cli.common import check_secrets, load
from ctripd.http.app import serve
from ctripd.log import configure_logging

log = structlog.get_logger(__name__)


def cmd_run(args: argparse.Namespace) -> int:
    config = load(args)
    configure_logging(config.log.level, config.log.format)
    check_secrets(config)
    server = None
    if not config.database.dsn:
        embedded.adopt_orphans()
        server = embedded.EmbeddedPostgres.start(config.state_dir)
    dsn = server.dsn if server is not None else config.database.dsn
    if config.daemon.migrate_on_start:
        applied = db.migrate(dsn)
        if applied:
            log.info("migrations.applied", migrations=applied)
    return serve(config, dsn, server)


def cmd_migrate(args: argparse.Namespace) -> int:
    config = load(args)
    applied = db.migrate(db.database_dsn(config))
    print(f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else ""))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    return asyncio.run(run_checks(args.config))


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sub.add_parser("run", help="run the daemon").set_defaults(func=cmd_run)
    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=cmd_migrate)
    sub.add_parser("check", help="check config, database and every RPC").set_defaults(
        func=cmd_check
    )
