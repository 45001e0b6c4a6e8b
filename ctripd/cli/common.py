"""What every subcommand shares: the config, the database, its mistakes and its output."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, TypeVar

import asyncpg
import structlog

from ctripd import db
from ctripd.config import ChainConfig, Config, load_config, read_secret
from ctripd.jobs.signing import Signer

EXIT_CONFIG = 2
T = TypeVar("T")


class CliError(Exception):
    """A failure worth one line on stderr and a non-zero exit."""


def load(args: argparse.Namespace) -> Config:
    return load_config(args.config)


def check_secrets(config: Config) -> None:
    """Refuse unsafe secret files at start-up, before anything else happens."""
    if config.wallet.mnemonic_file:
        read_secret(config.path, "wallet.mnemonic_file", config.wallet.mnemonic_file)
    if config.webhooks.secret_file or config.webhooks.previous_secret_file:
        Signer.from_config(config)  # file modes, and the whsec_<base64> format


async def _with_pool(
    args: argparse.Namespace, work: Callable[[Config, asyncpg.Pool], Awaitable[T]]
) -> T:
    config = load(args)
    dsn = await asyncio.to_thread(db.database_dsn, config)
    pool = await db.create_pool(dsn, min_size=1, max_size=1)
    try:
        return await work(config, pool)
    except asyncpg.UndefinedTableError:
        raise CliError("the database is not migrated yet: run `ctripd migrate` first") from None
    finally:
        await pool.close()


def run_on_database(
    args: argparse.Namespace, work: Callable[[Config, asyncpg.Pool], Awaitable[T]]
) -> T:
    """Run `work(config, pool)` on a one-connection pool to the configured database (so jsonb
    decodes as in the daemon), for a command that does a little work and exits."""
    return asyncio.run(_with_pool(args, work))


def listing_limit(status: str | None, statuses: Sequence[str], limit: str, most: int) -> int:
    """A list command's `--limit` as a number, after checking it and `--status`: a mistake is
    one line and exit code 1, like every other CLI mistake (argparse's own checks exit 2)."""
    if status is not None and status not in statuses:
        raise CliError(f"--status must be one of {', '.join(statuses)}, not {status!r}")
    if not (limit.isascii() and limit.isdigit()) or not 1 <= int(limit) <= most:
        raise CliError(f"--limit must be an integer from 1 to {most}, not {limit!r}")
    return int(limit)


def add_limit(parser: argparse.ArgumentParser, default: int, most: int) -> None:
    parser.add_argument(
        "--limit", default=str(default), help=f"at most this many ({default}, at most {most})"
    )


def clean(value: Any) -> str:
    """Text for a terminal: merchants choose order ids, so control characters become '?'."""
    text = "" if value is None else str(value)
    return "".join(c if c.isprintable() else "?" for c in text)


def print_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    table = [list(header)] + [[clean(cell) for cell in row] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for line in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


@contextlib.contextmanager
def logs_to_stderr() -> Iterator[None]:
    """structlog prints to stdout by default; stdout is for the listing (and its JSON)."""
    saved = structlog.get_config()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    try:
        yield
    finally:
        structlog.configure(**saved)


def configured_chain(config: Config, name: str) -> ChainConfig:
    chain = config.chain(name)
    if chain is None:
        names = ", ".join(c.name for c in config.chains)
        raise CliError(f"unknown chain {name!r} in {config.daemon.chains_file} (known: {names})")
    return chain
