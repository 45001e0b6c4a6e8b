"""Per-chain watcher: leadership, watched addresses, cursor, reorgs; `run_once()` per tick.

Only the process holding the chain's advisory lock scans it. The lock is session-level, on a
connection the watcher keeps for itself and also writes with: if that connection dies, the lock
goes with it and another process takes the chain on its next tick, while the write in flight
rolls back. Every range is applied with a compare-and-set of the cursor, so even two writers
could never apply one range twice.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import structlog
from asyncpg.pool import PoolConnectionProxy

from ctripd import db
from ctripd.chain.heads import HeadSubscription
from ctripd.chain.rpc import Head, RpcClient
from ctripd.chain.scanner import ChainMovedError, RangeScan, scan_range
from ctripd.config import ChainConfig, PaymentsConfig
from ctripd.db import Conn
from ctripd.errors import DatabaseError
from ctripd.jobs.watched import WatchedAddresses
from ctripd.ledger.chains import ensure_cursor, stalled
from ctripd.ledger.crediting import Policy, credit_range, orphan_after

Q = db.queries("chains")
log = structlog.get_logger(__name__)

# Blocks per step: one step is one database transaction and bounds the memory a range takes.
STEP_BLOCKS = 100
# Steps being read at once (the one to apply next included).
PIPELINE = 3
# A head younger than this many block times shows the chain as of the moment it was read.
HEAD_TRUST_BLOCKS = 2
# Block hashes kept for reorg detection, at least; chains with many confirmations keep 2x those.
MIN_WINDOW = 64


class LostRaceError(DatabaseError):
    """The cursor moved under this watcher: another process applied the range first."""


@dataclass
class WatchState:
    """What `/v1/chains` shows of this process's view of the chain."""

    leader: bool = False
    watched: int = 0
    last_error: str | None = None
    # The head block this process last saw was older than the chain's `stall_after`.
    stalled: bool = False
    # Whether the chain's `ws` subscription to new heads is up (None: the chain has no `ws`).
    ws_connected: bool | None = None


class ChainWatcher:
    """Scans one chain when this process holds its lock; the scheduler calls `run_once()`."""

    def __init__(
        self,
        chain: ChainConfig,
        dsn: str,
        rpc: RpcClient,
        payments: PaymentsConfig,
        watched: WatchedAddresses | None = None,
        step: int = STEP_BLOCKS,
        *,
        operator_url: bool,
    ) -> None:
        """`operator_url`: `[webhooks] url` is set (see `record_event`)."""
        self.chain = chain
        self.dsn = dsn
        self.rpc = rpc
        self.policy = Policy.from_config(payments, operator_url)
        self.step = max(1, min(step, chain.max_range))
        self.window = max(MIN_WINDOW, 2 * chain.confirmations)
        # Seconds a head block is taken to show the chain as of the moment it was read.
        self.head_trust = HEAD_TRUST_BLOCKS * chain.block_time
        self.state = WatchState(ws_connected=False if chain.ws else None)
        # Addresses of every payment, of this chain and of the others (funds sent on the wrong
        # network are recorded and held): the process's one set, shared by its chains' watchers.
        self.watched = watched if watched is not None else WatchedAddresses()
        self.heads = HeadSubscription(chain.name, chain.ws, rpc.session) if chain.ws else None
        # The highest head the WebSocket announced: a run that ends below it scans again.
        self._announced = -1
        self._pool: asyncpg.Pool | None = None
        self._conn: PoolConnectionProxy[asyncpg.Record] | None = None

    async def close(self) -> None:
        """Give up leadership (releasing the connection drops its lock) and close the pool."""
        await self._resign(failed=False)
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def run_once(self) -> int:
        """Scan from the cursor to the current head in steps; returns the blocks applied.

        A head the WebSocket announced during the scan, past the head it scanned to, is scanned
        right away (a run that starts meanwhile is skipped by the scheduler's job)."""
        scanned = 0
        try:
            conn = await self._lead()
            if conn is None:
                return 0
            head = -1
            while True:
                applied, reached = await self._scan(conn)
                scanned += applied
                if self._announced <= reached or reached <= head:
                    break
                head = reached
        except Exception as exc:
            self.state.last_error = f"{type(exc).__name__}: {exc}"[:300]
            if self._conn is not None and (
                self._conn.is_closed() or isinstance(exc, asyncpg.PostgresConnectionError)
            ):
                await self._resign()
            raise
        self.state.last_error = None
        return scanned

    async def follow_heads(self, scan: Callable[[], Awaitable[object]]) -> None:
        """Until `stop_heads()`: await `scan` (which starts a run) on every head the chain's
        WebSocket announces. Polling goes on meanwhile, and alone while the socket is down."""
        assert self.heads is not None, "the chain has no ws URL"

        async def announced(number: int) -> None:
            self._announced = max(self._announced, number)
            await scan()

        await self.heads.follow(announced, self._ws_status)

    def stop_heads(self) -> None:
        if self.heads is not None:
            self.heads.stop()

    def _ws_status(self, connected: bool) -> None:
        self.state.ws_connected = connected

    # --- leadership -------------------------------------------------------------------------

    async def _lead(self) -> Conn | None:
        """The leader connection, after checking it still lives; None if another process leads."""
        if self._conn is not None:
            try:
                await self._conn.fetchval("SELECT 1")
                return self._conn
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                await self._resign()
        if self._pool is None:
            self._pool = await db.create_pool(self.dsn, min_size=0, max_size=1)
        conn = await self._pool.acquire()
        try:
            got = await conn.fetchval(Q["try_lock"], self.chain.name)
        except BaseException:
            await self._pool.release(conn)
            raise
        if not got:
            await self._pool.release(conn)
            return None
        self._conn = conn
        self.state.leader = True
        await conn.execute(Q["upsert_chain"], self.chain.name, self.chain.chain_id)
        log.info("chain.leader", chain=self.chain.name, leader=True)
        return conn

    async def _resign(self, failed: bool = True) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        self.state.leader = False
        (log.warning if failed else log.info)("chain.leader", chain=self.chain.name, leader=False)
        assert self._pool is not None
        errors = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)
        try:
            await conn.execute(Q["unlock"], self.chain.name, timeout=5)
        except errors:
            pass  # a dead session holds no lock
        try:
            await self._pool.release(conn, timeout=5)
        except errors:
            conn.terminate()

    # --- scanning ---------------------------------------------------------------------------

    async def _scan(self, conn: Conn) -> tuple[int, int]:
        """(blocks applied, the head scanned towards)."""
        name = self.chain.name
        # The head is read before the watched set: every block up to it was mined after its
        # payments committed, so the set, refreshed as of after the head was read, holds their
        # addresses.
        latest = await self.rpc.head()
        as_of = time.monotonic()
        head = latest.number
        head_time = datetime.fromtimestamp(latest.timestamp, UTC)
        await conn.execute(Q["record_head"], name, head, head_time, self.head_trust)
        self._watch_stall(latest, head_time)
        await self.watched.refresh(conn, as_of)
        self.state.watched = len(self.watched)
        cursor = await conn.fetchval(Q["chain_cursor"], name)
        if cursor is None:
            cursor = await ensure_cursor(conn, self.chain, head)
        expected = await conn.fetchval(Q["block_hash"], name, cursor)
        if cursor >= head and await self._tip_replaced(conn, head):
            try:
                cursor = await self._rewind(conn, cursor)
            except ChainMovedError as exc:
                log.warning("chain.moved", chain=name, detail=str(exc))
                return 0, head
            expected = await conn.fetchval(Q["block_hash"], name, cursor)
        applied = 0
        # Steps read ahead while earlier ones are written; their requests share the client's
        # concurrency, so the node is kept busy across step boundaries.
        ahead: deque[asyncio.Task[RangeScan]] = deque()
        queued = cursor
        try:
            while cursor < head:
                while len(ahead) < PIPELINE and queued < head:
                    last = min(head, queued + self.step)
                    ahead.append(
                        asyncio.create_task(
                            scan_range(
                                self.rpc, self.chain, queued + 1, last, self.watched.addresses
                            )
                        )
                    )
                    queued = last
                try:
                    scan = await ahead.popleft()
                except ChainMovedError as exc:
                    log.warning("chain.moved", chain=name, detail=str(exc))
                    break
                if expected is not None and scan.blocks[0].parent_hash != expected:
                    await _cancel(ahead)
                    try:
                        cursor = queued = await self._rewind(conn, cursor)
                    except ChainMovedError as exc:
                        log.warning("chain.moved", chain=name, detail=str(exc))
                        break
                    expected = await conn.fetchval(Q["block_hash"], name, cursor)
                    continue
                await self._apply(conn, cursor, scan)
                applied += len(scan.blocks)
                cursor, expected = scan.last.number, scan.last.hash
        finally:
            await _cancel(ahead)
        if applied:
            log.info("chain.scanned", chain=name, blocks=applied, scanned=cursor, head=head)
        return applied, head

    def _watch_stall(self, latest: Head, head_time: datetime) -> None:
        """Log the moments the chain's head block gets older than `stall_after`, and fresh again."""
        now = datetime.now(UTC)
        is_stalled = stalled(head_time, self.chain.stall_after, now)
        if is_stalled and not self.state.stalled:
            log.warning(
                "chain.stalled",
                chain=self.chain.name,
                head=latest.number,
                head_age_s=round((now - head_time).total_seconds()),
                stall_after=self.chain.stall_after,
            )
        elif self.state.stalled and not is_stalled:
            log.info("chain.resumed", chain=self.chain.name, head=latest.number)
        self.state.stalled = is_stalled

    async def _apply(self, conn: Conn, cursor: int, scan: RangeScan) -> None:
        """Credit a range, keep its recent block hashes, move the cursor: one transaction."""
        name = self.chain.name
        last = scan.last.number
        kept = [b for b in scan.blocks if b.number > last - self.window]
        async with conn.transaction():
            if not await conn.fetchval(Q["lock_cursor"], name, cursor):
                raise LostRaceError(f"{name}: cursor moved from {cursor} by another process")
            credited = await credit_range(conn, self.chain, scan.transfers, last, self.policy)
            await conn.execute(
                Q["store_blocks"],
                name,
                [b.number for b in kept],
                [b.hash for b in kept],
                [b.parent_hash for b in kept],
            )
            await conn.execute(Q["prune_blocks"], name, last - self.window)
            await conn.execute(Q["move_cursor"], name, cursor, last, self.head_trust)
        if credited:
            log.info("chain.credited", chain=name, transfers=credited, first=scan.blocks[0].number)

    async def _tip_replaced(self, conn: Conn, head: int) -> bool:
        """With no new block to check a parent hash on, compare the head block itself. A node
        that does not know the block (one behind the node that told the head) proves nothing."""
        stored = await conn.fetchval(Q["block_hash"], self.chain.name, head)
        if stored is None:
            return False
        block = await self.rpc.call("eth_getBlockByNumber", [hex(head), False])
        return block is not None and block["hash"] != stored

    async def _rewind(self, conn: Conn, cursor: int) -> int:
        """A parent-hash mismatch: walk back to the fork point and un-count what came after."""
        name = self.chain.name
        stored = await conn.fetch(Q["stored_blocks"], name)
        nodes = await self.rpc.batch(
            [("eth_getBlockByNumber", [hex(r["number"]), False]) for r in stored]
        )
        fork = None
        for row, node in zip(stored, nodes, strict=True):
            if node is None:
                # Unknown to the node that answered, which is behind: no evidence of a fork,
                # and un-counting on it would report reorgs that never happened.
                raise ChainMovedError(f"{name}: the node does not know block {row['number']}")
            if node["hash"] == row["hash"]:
                fork = row["number"]
                break
        if fork is None:
            fork = stored[-1]["number"] - 1
            log.error(
                "chain.reorg_deeper_than_window", chain=name, window=self.window, rewound_to=fork
            )
        async with conn.transaction():
            if not await conn.fetchval(Q["lock_cursor"], name, cursor):
                raise LostRaceError(f"{name}: cursor moved from {cursor} by another process")
            orphaned = await orphan_after(conn, self.chain, fork, self.policy)
            await conn.execute(Q["drop_blocks_after"], name, fork)
            await conn.execute(Q["move_cursor"], name, cursor, fork, self.head_trust)
        log.warning(
            "chain.reorg", chain=name, fork_block=fork, depth=cursor - fork, orphaned=orphaned
        )
        return int(fork)


async def _cancel(tasks: deque[asyncio.Task[RangeScan]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    tasks.clear()
