"""Shared test rig: a real Postgres (template-cloned per test) and a real Anvil node."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlparse

import asyncpg
import pytest
from test_sweeper import Rig, make_rig

from ctripd import db
from ctripd.dev.devnet import AnvilProcess, start_anvil

TESTS_DIR = Path(__file__).parent
# The npm-installed Anvil (`make test` exports it too), for a plain `pytest` run in a checkout.
os.environ.setdefault(
    "CTRIPD_ANVIL",
    str(TESTS_DIR.parent / "tools/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"),
)


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
    """The worker's Anvil, reverted after the test to the state it had before.

    A block of now is mined first: Anvil mines only on demand, and `evm_revert` also turns its
    clock back, so after the tests before its blocks would carry times minutes old: a node behind
    its chain, or a stalled one (`block_time`, `stall_after`).
    """
    latest = int(anvil_node.rpc("eth_getBlockByNumber", ["latest", False])["timestamp"], 16)
    anvil_node.rpc("evm_setNextBlockTimestamp", [max(int(time.time()), latest + 1)])
    anvil_node.rpc("evm_mine")
    snapshot = anvil_node.rpc("evm_snapshot")
    yield anvil_node
    anvil_node.rpc("evm_revert", [snapshot])


@pytest.fixture
def write_config(tmp_path: Path, db_dsn: str, anvil: AnvilProcess):  # type: ignore[no-untyped-def]
    """Write ctripd.toml + chains.yaml for one test and load them.

    `toml` adds sections/keys (dict of section → dict); `chains` replaces the chain list.
    The default chain is the worker's Anvil as "anvil" (chain id 31337, 2 confirmations).
    """
    import tomllib  # noqa: F401  (documents the format written below)

    import yaml

    from ctripd.config import load_config
    from ctripd.dev.devnet import TEST_MNEMONIC

    def make(
        toml: dict[str, dict[str, object]] | None = None,
        chains: list[dict[str, object]] | None = None,
        mnemonic: str = TEST_MNEMONIC,
    ):  # type: ignore[no-untyped-def]
        mnemonic_file = tmp_path / "mnemonic"
        mnemonic_file.write_text(mnemonic + "\n")
        mnemonic_file.chmod(0o600)
        sections: dict[str, dict[str, object]] = {
            "daemon": {"state_dir": str(tmp_path / "state"), "migrate_on_start": False},
            "database": {"dsn": db_dsn},
            "wallet": {"mnemonic_file": str(mnemonic_file)},
            "log": {"format": "json"},
        }
        for section, values in (toml or {}).items():
            sections.setdefault(section, {}).update(values)
        if "xpub" in sections["wallet"]:
            sections["wallet"].pop("mnemonic_file", None)
        lines = []
        for section, values in sections.items():
            lines.append(f"[{section}]")
            for key, value in values.items():
                lines.append(f"{key} = {_toml_value(value)}")
        (tmp_path / "ctripd.toml").write_text("\n".join(lines) + "\n")
        default_chain = {
            "name": "anvil",
            "chain_id": 31337,
            "rpc": [anvil.url],
            "confirmations": 2,
            "poll_interval": 1,
            # Anvil mines on demand: a head read a minute after its block still shows the chain.
            "block_time": 30,
            "native": {"symbol": "ETH", "decimals": 18},
            "treasury": "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
        }
        (tmp_path / "chains.yaml").write_text(yaml.safe_dump({"chains": chains or [default_chain]}))
        return load_config(tmp_path / "ctripd.toml", env={})

    return make


def _toml_value(value: object) -> str:
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):  # an inline table
        items = (f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(value)


@pytest.fixture
async def make_client():  # type: ignore[no-untyped-def]
    """Start the app (no background scheduler) on a test server; returns a TestClient."""
    from aiohttp.test_utils import TestClient, TestServer

    from ctripd.http.app import AppOptions, create_app

    clients: list[TestClient] = []

    async def make(config):  # type: ignore[no-untyped-def]
        app = create_app(config, AppOptions(dsn=config.database.dsn, background=False))
        client = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


# The sweeper's rigs (tests/test_sweeper.py): its own tests, the sweep-safety, recovery and
# reconciliation tests share them.
@pytest.fixture
async def rig(write_config, pool: asyncpg.Pool, anvil: AnvilProcess) -> AsyncIterator[Rig]:  # type: ignore[no-untyped-def]
    async with make_rig(write_config, pool, anvil) as r:
        yield r


@pytest.fixture
async def token_rig(write_config, pool: asyncpg.Pool, anvil: AnvilProcess) -> AsyncIterator[Rig]:  # type: ignore[no-untyped-def]
    async with make_rig(write_config, pool, anvil, tokens=True) as r:
        yield r


@pytest.fixture
def embedded_state_dir() -> Iterator[Path]:
    """A `[daemon] state_dir` for ctripd's embedded Postgres. Outside pytest's temporary root, which
    any pytest session starting on the machine makes 0700 again: run as root, Postgres runs as the
    `pgserver` user, which must reach its data. A server that a killed test left running is shut
    down (SIGQUIT: immediate) before the directory goes."""
    path = Path(tempfile.mkdtemp(prefix="ctstate"))
    yield path
    pid_file = path / "postgres" / "postmaster.pid"
    if pid_file.exists():
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pid_file.read_text().splitlines()[0]), signal.SIGQUIT)
    shutil.rmtree(path, ignore_errors=True)
