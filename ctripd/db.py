"""Postgres access: the pool, the embedded server, migrations and the named SQL blocks.

Queries live in `ctripd/sql/*.sql` as blocks headed `-- name: <name>`, loaded once.
asyncpg errors are translated to `ctripd.errors` here, at one boundary.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import subprocess
import warnings
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import asyncpg
import structlog

from ctripd.errors import ConflictError, DatabaseError

log = structlog.get_logger(__name__)

SQL_DIR = Path(__file__).parent / "sql"
MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)

Pool = asyncpg.Pool
Connection = asyncpg.Connection


@functools.cache
def queries(module: str) -> Mapping[str, str]:
    """Named SQL blocks of `ctripd/sql/<module>.sql`."""
    text = (SQL_DIR / f"{module}.sql").read_text()
    parts = _NAME.split(text)
    blocks = {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}
    if not blocks:
        raise ValueError(f"no named blocks in {module}.sql")
    return blocks


def embedded_dsn(state_dir: Path) -> str:
    """Start (or join) the embedded Postgres under `state_dir`/postgres; its data survives.

    The server stops when the last process using it exits.
    """
    data_dir = state_dir / "postgres"
    data_dir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset, as under systemd; it is harmless.
        warnings.simplefilter("ignore")
        import pgserver

        try:
            server = pgserver.get_server(str(data_dir), cleanup_mode="stop")
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            log_file = data_dir / "log"
            text = log_file.read_text(errors="replace") if log_file.exists() else ""
            tail = text.strip().splitlines()[-3:]
            reason = " | ".join(tail) if tail else str(exc)
            raise DatabaseError(
                f"the embedded PostgreSQL in {data_dir} did not start: {reason}"
            ) from None
    uri: str = server.get_uri()
    return uri


def yoyo_url(dsn: str) -> str:
    """yoyo speaks psycopg 3 through the `postgresql+psycopg` scheme."""
    parsed = urlparse(dsn)
    scheme = "postgresql+psycopg"
    return parsed._replace(scheme=scheme).geturl()


def migrate(dsn: str, rollback_all: bool = False) -> list[str]:
    """Apply pending migrations (or roll them all back); returns the ids that changed."""
    from yoyo import get_backend, read_migrations

    backend = get_backend(yoyo_url(dsn))
    migrations = read_migrations(str(MIGRATIONS_DIR))
    with backend.lock():
        if rollback_all:
            todo = backend.to_rollback(migrations)
            backend.rollback_migrations(todo)
        else:
            todo = backend.to_apply(migrations)
            backend.apply_migrations(todo)
    backend.connection.close()
    return [m.id for m in todo]


def pending_migrations(dsn: str) -> list[str]:
    """Ids of the migrations not applied yet, in the order they would be."""
    from yoyo import get_backend, read_migrations

    backend = get_backend(yoyo_url(dsn))
    try:
        return [m.id for m in backend.to_apply(read_migrations(str(MIGRATIONS_DIR)))]
    finally:
        backend.connection.close()


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def connect(dsn: str) -> asyncpg.Connection:
    """One connection with the daemon's codecs, for commands that do a little work and exit."""
    conn = await asyncpg.connect(dsn)
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


async def create_pool(dsn: str, min_size: int = 2, max_size: int = 10) -> asyncpg.Pool:
    try:
        pool = await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            init=_init_connection,
            server_settings=SERVER_SETTINGS,
        )
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        raise DatabaseError(f"cannot connect to the database: {exc}") from exc
    assert pool is not None
    return pool


@contextlib.asynccontextmanager
async def translate_errors() -> AsyncIterator[None]:
    """Map asyncpg failures to ctripd's exception tree."""
    try:
        yield
    except asyncpg.UniqueViolationError as exc:
        raise ConflictError(str(exc)) from exc
    except (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, OSError) as exc:
        raise DatabaseError(str(exc)) from exc


def dsn_summary(dsn: str) -> str:
    """A DSN without its password, for logs and `ctripd check`."""
    parsed = urlparse(dsn)
    host = parsed.hostname or parse_qs(parsed.query).get("host", ["local socket"])[0]
    return f"{parsed.username or ''}@{host}/{parsed.path.lstrip('/')}"
