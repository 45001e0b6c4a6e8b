"""Per-chain watcher job: one `run_once()` per scheduler tick."""

from __future__ import annotations

import asyncpg
import structlog

from ctripd.config import ChainConfig
from ctripd.db import queries
from ctripd.rpc import RpcClient

Q = queries("chains")
log = structlog.get_logger(__name__)


class ChainWatcher:
    def __init__(self, chain: ChainConfig, pool: asyncpg.Pool, rpc: RpcClient) -> None:
        self.chain = chain
        self.pool = pool
        self.rpc = rpc

    async def run_once(self) -> int:
        """Record the chain head; returns it."""
        head = await self.rpc.block_number()
        await self.pool.execute(Q["record_head"], self.chain.name, head)
        log.info("chain.head", chain=self.chain.name, head=head)
        return head
