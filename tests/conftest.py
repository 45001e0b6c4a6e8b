"""Shared test rig: a real Postgres (template-cloned per test) and a real Anvil node."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlparse

import asyncpg
import pytest

from ctripd import db
from ctripd.devnet import AnvilProcess, start_anvil

TESTS_DIR = Path(__file__).parent


def _with_db(dsn: str, name: str) -> str:
    return urlparse(dsn)._replace(path=f"/{name}").geturl()


@pytest.fixture(scope="session")
def pg_server_dsn() -> Iterator[str]:
    """CTRIPD_TEST_DSN if set, else an embedded Postgres private to this test worker."""
    if dsn := os.environ.get("CTRIPD_TEST_DSN"):
        yield dsn
        return
    import pgserver

    data_dir = tempfile.mkdtemp(prefix="ctpg")
    server = pgserver.get_server(data_dir, cleanup_mode="stop")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def template_db(pg_server_dsn: str) -> Iterator[str]:
    """A database migrated once per worker, cloned by `db_dsn` for each test."""
    name = f"ctripd_tpl_{uuid.uuid4().hex[:12]}"

    async def create() -> None:
        conn = await asyncpg.connect(pg_server_dsn)
        await conn.execute(f'CREATE DATABASE "{name}"')
        await conn.close()

    asyncio.run(create())
    db.migrate(_with_db(pg_server_dsn, name))
    yield name

    async def drop() -> None:
        conn = await asyncpg.connect(pg_server_dsn)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()

    asyncio.run(drop())


@pytest.fixture
async def db_dsn(pg_server_dsn: str, template_db: str) -> AsyncIterator[str]:
    """A fresh, fully migrated database for one test."""
    name = f"ctripd_t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(pg_server_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    finally:
        await conn.close()
    yield _with_db(pg_server_dsn, name)
    conn = await asyncpg.connect(pg_server_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
async def pool(db_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await db.create_pool(db_dsn, min_size=1, max_size=5)
    yield pool
    await pool.close()


@pytest.fixture(scope="session")
def anvil_node() -> Iterator[AnvilProcess]:
    """One Anvil per test worker, with the well-known test mnemonic."""
    node = start_anvil()
    yield node
    node.stop()


@pytest.fixture
def anvil(anvil_node: AnvilProcess) -> Iterator[AnvilProcess]:
    """The worker's Anvil, reverted after the test to the state it had before."""
    snapshot = anvil_node.rpc("evm_snapshot")
    yield anvil_node
    anvil_node.rpc("evm_revert", [snapshot])
