"""Helpers shared by the chain watcher tests (test_scanner*, test_crediting*, test_reorg*,
test_multiprocess*); this module holds no tests itself.

Payments are inserted with SQL, as the payments API would write them, at fresh made-up deposit
addresses: the watcher matches on the address alone.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
from eth_account import Account
from eth_utils import to_checksum_address

from ctripd.chain.rpc import RpcClient
from ctripd.config import Config
from ctripd.dev.devnet import AnvilProcess
from ctripd.http.keys import WATCHERS
from ctripd.jobs.chainwatch import ChainWatcher
from ctripd.jobs.watched import WatchedAddresses

# Anvil's account 0 of the test mnemonic (public, well-known test key).
SENDER = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
SENDER_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
TREASURY = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
ETH = 10**18


def chain_entry(anvil: AnvilProcess, **overrides: Any) -> dict[str, Any]:
    """A chains.yaml entry for an Anvil node (2 confirmations, like the conftest default)."""
    entry: dict[str, Any] = {
        "name": "anvil",
        "chain_id": 31337,
        "rpc": [anvil.url],
        "confirmations": 2,
        "poll_interval": 1,
        # Anvil mines on demand: a head read a minute after its block still shows the chain.
        "block_time": 30,
        "native": {"symbol": "ETH", "decimals": 18},
        "treasury": TREASURY,
    }
    entry.update(overrides)
    return entry


def fresh_address() -> str:
    return to_checksum_address(os.urandom(20))


async def insert_payment(
    pool: asyncpg.Pool | asyncpg.Connection,
    config: Config,
    amount: int,
    *,
    chain: str = "anvil",
    asset: str | None = None,
    status: str = "pending",
    expires_at: datetime | None = None,
) -> tuple[str, str]:
    """A payment row as the API creates it; returns (id, deposit address)."""
    cfg = config.chain(chain)
    assert cfg is not None
    symbol = asset or cfg.native.symbol
    found = cfg.asset(symbol)
    assert found is not None
    token_address, decimals = found
    payment_id = f"pay_{uuid.uuid4().hex}"
    address = fresh_address()
    await pool.execute(
        """
        INSERT INTO payments (id, merchant, chain, chain_id, asset, token_address, decimals,
                              amount, address, address_index, status, confirmations_required,
                              expires_at)
        VALUES ($1, 'default', $2, $3, $4, $5, $6, $7, $8, nextval('address_index_seq'), $9,
                $10, $11)
        """,
        payment_id,
        chain,
        cfg.chain_id,
        symbol,
        token_address,
        decimals,
        amount,
        address,
        status,
        cfg.confirmations,
        expires_at or datetime.now(UTC) + timedelta(hours=1),
    )
    return payment_id, address


def send_native(anvil: AnvilProcess, to: str, value: int, **fields: Any) -> str:
    """An automined transfer from the unlocked account 0, once mined; returns the tx hash."""
    tx = {"from": SENDER, "to": to, "value": hex(value), **fields}
    return wait_mined(anvil, anvil.rpc("eth_sendTransaction", [tx]))


def wait_mined(anvil: AnvilProcess, tx_hash: str) -> str:
    """The hash, once its transaction is mined."""
    anvil.receipt(tx_hash)
    return tx_hash


def signed_tx(anvil: AnvilProcess, **fields: Any) -> tuple[str, str]:
    """(raw tx, hash) of a transaction of the sender signed offline (next nonce), so that
    `anvil_reorg` can re-include it."""
    nonce = int(anvil.rpc("eth_getTransactionCount", [SENDER, "pending"]), 16)
    tx = {
        "maxFeePerGas": 100 * 10**9,
        "maxPriorityFeePerGas": 10**9,
        "nonce": nonce,
        "chainId": 31337,
        "type": 2,
        **fields,
    }
    signed = Account.sign_transaction(tx, SENDER_KEY)
    return signed.raw_transaction.to_0x_hex(), signed.hash.to_0x_hex()


def signed_native(anvil: AnvilProcess, to: str, value: int) -> tuple[str, str]:
    """(raw tx, hash) of a transfer signed offline, so it can be re-included by `anvil_reorg`."""
    return signed_tx(anvil, to=to, value=value, gas=21_000)


def mine(anvil: AnvilProcess, blocks: int = 1) -> None:
    anvil.rpc("anvil_mine", [hex(blocks)])


def head(anvil: AnvilProcess) -> int:
    return int(anvil.rpc("eth_blockNumber"), 16)


async def payment(pool: asyncpg.Pool, payment_id: str) -> asyncpg.Record:
    row = await pool.fetchrow("SELECT * FROM payments WHERE id = $1", payment_id)
    assert row is not None
    return row


async def event_types(pool: asyncpg.Pool, payment_id: str) -> list[str]:
    rows = await pool.fetch(
        "SELECT type FROM events WHERE payment_id = $1 AND type <> 'payment.created' ORDER BY seq",
        payment_id,
    )
    return [r["type"] for r in rows]


async def transfers(pool: asyncpg.Pool, payment_id: str) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT * FROM transfers WHERE payment_id = $1 ORDER BY block_number, log_index",
        payment_id,
    )


class Rig:
    """Watchers on their own RPC clients and HTTP session; `close()` ends them all."""

    def __init__(self) -> None:
        self.session = aiohttp.ClientSession()
        self.watchers: list[ChainWatcher] = []

    def watcher(
        self,
        config: Config,
        chain: str = "anvil",
        watched: WatchedAddresses | None = None,
        **rpc: Any,
    ) -> ChainWatcher:
        cfg = config.chain(chain)
        assert cfg is not None
        client = RpcClient(cfg.name, list(cfg.rpc), self.session, timeout=cfg.rpc_timeout, **rpc)
        # The events' rows are what these tests read: the config endpoint's delivery is written.
        watcher = ChainWatcher(
            cfg, config.database.dsn, client, config.payments, watched, operator_url=True
        )
        self.watchers.append(watcher)
        return watcher

    async def close(self) -> None:
        for watcher in self.watchers:
            await watcher.close()
        await self.session.close()


async def cancel(client: Any, payment_id: str, headers: dict[str, str]) -> Any:
    """POST the payment's cancel while the app's chain watchers scan, as its scheduler would: a
    cancel waits until its chain is scanned past the request."""
    request = asyncio.ensure_future(
        client.post(f"/v1/payments/{payment_id}/cancel", headers=headers)
    )
    while not request.done():
        for watcher in client.server.app[WATCHERS].values():
            await watcher.run_once()
        await asyncio.wait({request}, timeout=0.1)
    return await request
