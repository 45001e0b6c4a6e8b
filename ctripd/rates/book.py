"""The rate book: every configured source read in the background and cached, and quotes made
from the cache: the median of a pair's fresh sources, or a pegged stablecoin's 1 guarded by its
sources. A create request waits for a refresh only when a quote it needs is missing, and only
up to `[rates] create_deadline`."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, localcontext

import aiohttp
import structlog

from ctripd.chain.rpc import RpcClient
from ctripd.config import RatesConfig
from ctripd.errors import CtripdError
from ctripd.formats import iso
from ctripd.rates.sources import Reading, read

log = structlog.get_logger(__name__)

ONE = Decimal(1)
# Exact arithmetic on rates: a feed's int256 answer has at most 77 digits.
PRECISION = 200
# A reading dated this far ahead of our clock (a skewed feed) is not fresh either.
CLOCK_SKEW = timedelta(seconds=60)


def median(values: list[Decimal]) -> Decimal:
    """The median, exact (the mean of the middle two for an even count)."""
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    with localcontext() as ctx:
        ctx.prec = PRECISION
        return (ordered[middle - 1] + ordered[middle]) / 2


@dataclass(frozen=True, slots=True)
class Quote:
    """A rate to lock: currency units per whole asset unit, the readings it was made of (a peg
    shows as the source "peg"), and the time of the oldest of them."""

    asset: str
    currency: str
    rate: Decimal
    sources: tuple[Reading, ...]
    fetched_at: datetime

    def sources_json(self) -> list[dict[str, str]]:
        return [{"source": r.source, "rate": str(r.rate), "at": iso(r.at)} for r in self.sources]


class RatesUnavailable(CtripdError):
    """No valid quote for a pair now (too few fresh sources, a depeg, none configured)."""


class RateBook:
    def __init__(
        self,
        config: RatesConfig,
        session: aiohttp.ClientSession,
        rpcs: dict[str, RpcClient],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.session = session
        self.rpcs = rpcs
        self.clock = clock
        self.readings: dict[str, Reading] = {}
        self.errors: dict[str, str] = {}
        self._running: asyncio.Task[None] | None = None
        # Whether a refresh has ever finished: until then a missing quote may just be unread.
        self._warm = False

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    @property
    def source_names(self) -> list[str]:
        return sorted({s for p in self.config.pairs for s in p.sources})

    async def run_once(self) -> None:
        """Read every source at once, each within `[rates] timeout`; keep what answered."""
        names = self.source_names
        results = await asyncio.gather(*(self._read(n) for n in names))
        for name, result in zip(names, results, strict=True):
            if isinstance(result, Reading):
                self.readings[name] = result
                self.errors.pop(name, None)
            else:
                self.errors[name] = result
        self._warm = True

    async def _read(self, name: str) -> Reading | str:
        try:
            async with asyncio.timeout(self.config.timeout):
                return await read(name, self.config, self.session, self.rpcs, self.now())
        except TimeoutError:
            error = f"no answer within {self.config.timeout} s"
        except (CtripdError, aiohttp.ClientError, ValueError) as exc:
            error = str(exc) or type(exc).__name__
        log.warning("rates.source_failed", source=name, error=error)
        return error

    async def run(self) -> None:
        """The background loop: a refresh every `refresh_interval` seconds."""
        while True:
            await self.refresh()
            await asyncio.sleep(self.config.refresh_interval)

    async def close(self) -> None:
        """Stop a refresh still running (at shutdown)."""
        if self._running is not None:
            self._running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._running

    async def refresh(self) -> None:
        """One run_once, shared by everyone who asks while it runs."""
        if self._running is None or self._running.done():
            self._running = asyncio.create_task(self.run_once(), name="rates-refresh")
        await asyncio.shield(self._running)

    def quote(self, asset: str, currency: str) -> Quote:
        """A quote from the cache, or RatesUnavailable saying why not."""
        pair = self.config.pair(asset, currency)
        if pair is None:
            raise RatesUnavailable(f"no rate source is configured for {asset} in {currency}")
        now = self.now()
        oldest = now - timedelta(seconds=self.config.max_age)
        fresh = [
            r
            for s in pair.sources
            if (r := self.readings.get(s)) is not None and oldest <= r.at <= now + CLOCK_SKEW
        ]
        if pair.peg:
            if fresh:
                market = median([r.rate for r in fresh])
                with localcontext() as ctx:
                    ctx.prec = PRECISION
                    off = abs(market - ONE) * 10_000
                if off > self.config.depeg_tolerance_bps:
                    raise RatesUnavailable(
                        f"{asset} is off its {currency} peg: its sources' median is {market}"
                    )
            peg = Reading("peg", ONE, now)
            return Quote(asset, currency, ONE, (peg, *fresh), min(r.at for r in (peg, *fresh)))
        need = pair.min_sources or min(self.config.min_sources, len(pair.sources))
        if len(fresh) < need:
            raise RatesUnavailable(
                f"{len(fresh)} of the {len(pair.sources)} rate sources of {asset} in {currency} "
                f"are fresh; {need} needed"
            )
        rate = median([r.rate for r in fresh])
        return Quote(asset, currency, rate, tuple(fresh), min(r.at for r in fresh))

    async def quotes(self, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], Quote | str]:
        """Quotes of `pairs` (a reason instead where none is valid). Only before the sources
        were ever read (the process just started) does a missing quote wait for their first
        reading, within `create_deadline`; afterwards a quote missing is a source outage, which
        the background refreshes see to, and no request waits for it."""
        found = self._from_cache(pairs)
        missing = any(isinstance(q, str) for q in found.values())
        if missing and not self._warm:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.create_deadline):
                    await self.refresh()
            found = self._from_cache(pairs)
        return found

    def _from_cache(self, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], Quote | str]:
        found: dict[tuple[str, str], Quote | str] = {}
        for asset, currency in pairs:
            try:
                found[(asset, currency)] = self.quote(asset, currency)
            except RatesUnavailable as exc:
                found[(asset, currency)] = str(exc)
        return found
