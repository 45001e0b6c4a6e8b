"""Postgres access: the pool, the DSN (the configured one or the embedded server's), migrations
and the named SQL blocks.

Queries live in `ctripd/sql/*.sql` as blocks headed `-- name: <name>`, loaded once; migrations in
`ctripd/migrations/`. Both ship inside the package and are read with `importlib.resources`, so an
installed wheel migrates from any directory. A database that cannot be reached is a
`DatabaseError` from here; the API (`http.problems`) and the CLI (`cli.main`) answer it.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.resources
import json
import re
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias
from urllib.parse import parse_qs, urlparse

import asyncpg
import structlog
from yoyo import get_backend, read_migrations

from ctripd.config import Config
from ctripd.embedded import EmbeddedPostgres
from ctripd.errors import DatabaseError

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

log = structlog.get_logger(__name__)

_PACKAGE = importlib.resources.files("ctripd")
_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)

# What query functions take as "the connection": a bare one or one acquired from the pool (a
# string: PoolConnectionProxy is not subscriptable at run time).
Conn: TypeAlias = "asyncpg.Connection | PoolConnectionProxy[asyncpg.Record]"


class NoMigrationsError(DatabaseError):
    """The package holds no migrations: a broken install, never "nothing to do"."""


@functools.cache
def queries(module: str) -> Mapping[str, str]:
    """Named SQL blocks of `ctripd/sql/<module>.sql`."""
    text = _PACKAGE.joinpath("sql", f"{module}.sql").read_text()
    parts = _NAME.split(text)
    blocks = {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}
    if not blocks:
        raise ValueError(f"no named blocks in {module}.sql")
    return blocks


def database_dsn(config: Config) -> str:
    """The configured DSN, or the embedded Postgres under the state directory."""
    if config.database.dsn:
        return config.database.dsn
    return EmbeddedPostgres.start(config.state_dir).dsn


def yoyo_url(dsn: str) -> str:
    """yoyo speaks psycopg 3 through the `postgresql+psycopg` scheme."""
    parsed = urlparse(dsn)
    scheme = "postgresql+psycopg"
    return parsed._replace(scheme=scheme).geturl()


@contextlib.contextmanager
def migrations_dir() -> Iterator[Path]:
    """The package's migrations as a directory yoyo can read; refuses to find none."""
    with importlib.resources.as_file(_PACKAGE.joinpath("migrations")) as path:
        if not path.is_dir() or not any(path.glob("*.sql")):
            raise NoMigrationsError(f"no migrations in {path}: the ctripd install is incomplete")
        yield path


def migrate(dsn: str, rollback_all: bool = False) -> list[str]:
    """Apply pending migrations (or roll them all back); returns the ids that changed."""
    with migrations_dir() as path:
        migrations = read_migrations(str(path))
        backend = get_backend(yoyo_url(dsn))
        try:
            with backend.lock():
                if rollback_all:
                    todo = backend.to_rollback(migrations)
                    backend.rollback_migrations(todo)
                else:
                    todo = backend.to_apply(migrations)
                    backend.apply_migrations(todo)
        finally:
            backend.connection.close()
    return [m.id for m in todo]


def pending_migrations(dsn: str) -> list[str]:
    """Ids of the migrations not applied yet, in the order they would be."""
    with migrations_dir() as path:
        migrations = read_migrations(str(path))
        backend = get_backend(yoyo_url(dsn))
        try:
            return [m.id for m in backend.to_apply(migrations)]
        finally:
            backend.connection.close()


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def connect(dsn: str) -> asyncpg.Connection:
    """One connection with the daemon's codecs, for commands that do a little work and exit."""
    try:
        conn = await asyncpg.connect(dsn)
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        raise DatabaseError(f"cannot connect to the database: {exc}") from exc
    await _init_connection(conn)
    return conn


# Server-side TCP keepalives for the daemon's sessions: when a ctripd host vanishes (power,
# network), Postgres ends its sessions in about 25 s instead of the OS default of over two
# hours, releasing the chain leadership and sweep locks they hold so that another process takes
# over. Ignored on Unix-socket connections, where a dead peer is seen at once.
SERVER_SETTINGS = {
    "tcp_keepalives_idle": "10",
    "tcp_keepalives_interval": "5",
    "tcp_keepalives_count": "3",
}


class _Pool(asyncpg.Pool):
    """A pool whose every acquisition gives up after `acquire_timeout` seconds (asyncpg waits
    for ever by default): a starved pool is an error that is logged and answered, never a hang.
    `pool.fetch()` and the other shortcuts acquire through here too."""

    acquire_timeout: float = 10.0

    def acquire(self, *, timeout: float | None = None) -> Any:
        return super().acquire(timeout=self.acquire_timeout if timeout is None else timeout)


# What asyncpg.create_pool() passes to the Pool it makes, for the settings not chosen here.
_CREATE_POOL_DEFAULTS: dict[str, Any] = {
    "connection_class": asyncpg.Connection,
    "record_class": asyncpg.Record,
    "max_queries": 50_000,
    "max_inactive_connection_lifetime": 300.0,
    "connect": None,
    "setup": None,
    "loop": None,
}


async def create_pool(
    dsn: str,
    min_size: int = 2,
    max_size: int = 10,
    reset: Callable[[asyncpg.Connection], Awaitable[None]] | None = None,
    acquire_timeout: float = 10.0,
) -> asyncpg.Pool:
    """A pool with the daemon's codecs, keepalives and acquisition timeout; `reset` replaces
    asyncpg's reset query on release, for users that leave no session state."""
    pool = _Pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        reset=reset,
        server_settings=SERVER_SETTINGS,
        **_CREATE_POOL_DEFAULTS,
    )
    pool.acquire_timeout = acquire_timeout
    try:
        await pool
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        raise DatabaseError(f"cannot connect to the database: {exc}") from exc
    return pool


def dsn_summary(dsn: str) -> str:
    """A DSN without its password, for logs and `ctripd check`."""
    parsed = urlparse(dsn)
    host = parsed.hostname or parse_qs(parsed.query).get("host", ["local socket"])[0]
    return f"{parsed.username or ''}@{host}/{parsed.path.lstrip('/')}"
