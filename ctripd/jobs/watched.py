"""The watched addresses of a process: one set, loaded once, shared by every chain's watcher.

Every chain watches every payment's address (funds sent on the wrong network are recorded and
held), so one set serves them all: one load at start and one incremental refresh per poll, not
one per chain.
"""

from __future__ import annotations

import asyncio
import math
import time

import structlog

from ctripd import db
from ctripd.chain.addresses import AddressSet
from ctripd.config import ScannerConfig
from ctripd.db import Conn

QS = db.queries("scanner")
log = structlog.get_logger(__name__)


class WatchedAddresses:
    """The addresses the scanners match transfers against, kept current by `refresh`."""

    def __init__(self, config: ScannerConfig | None = None) -> None:
        self.config = config or ScannerConfig()
        self.addresses = AddressSet()
        self._xmin: str | None = None
        self._lock = asyncio.Lock()
        # time.monotonic() before the last refresh's snapshot was taken.
        self._fresh_as_of = -math.inf

    def __len__(self) -> int:
        return len(self.addresses)

    async def refresh(self, conn: Conn, as_of: float) -> None:
        """Make sure every payment committed before `as_of` (a `time.monotonic()`) is in the set.

        The first call loads the set; later ones add the payments committed since the last one,
        by any process. A refresh that another watcher started after `as_of` already did it.

        Each read is one REPEATABLE READ snapshot whose xmin is remembered: a payment that
        snapshot did not see was written by a transaction id >= xmin, so the next refresh, which
        asks for `created_xid >= xmin`, sees it. Exact however long a transaction took to commit.
        """
        async with self._lock:
            if self._fresh_as_of >= as_of:
                return
            started = time.monotonic()
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                xmin = await conn.fetchval(QS["watch_snapshot"])
                if self._xmin is None:
                    self.addresses = await self._load(conn)
                else:
                    for row in await conn.fetch(QS["watched_addresses_since"], self._xmin):
                        self.addresses.add(row[0])
            self._xmin = xmin
            self._fresh_as_of = started

    async def _load(self, conn: Conn) -> AddressSet:
        """The whole set, as Postgres groups it into buckets (65,536 rows however many)."""
        started = time.monotonic()
        loaded = AddressSet()
        rows = await conn.fetch(QS["watched_addresses"], self.config.watch_after_sweep_days)
        for index, suffixes in rows:
            loaded.load_bucket(index, suffixes)
        log.info(
            "watched.loaded",
            addresses=len(loaded),
            seconds=round(time.monotonic() - started, 2),
            watch_after_sweep_days=self.config.watch_after_sweep_days,
        )
        return loaded
