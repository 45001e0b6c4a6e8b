"""JSON-RPC client of one chain: batching, retries, failover across URLs, adaptive eth_getLogs.

A lean aiohttp + orjson path rather than web3's providers: `python -m bench.scan` measures web3's
batch requests barely faster than its one-call-per-block loop (its result formatters dominate),
and the same batches sent by this client 1.4-1.9x faster. web3 remains the tool for ABI work.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import random
import re
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
import structlog

from ctripd.errors import CtripdError
from ctripd.retry_after import parse_retry_after

log = structlog.get_logger(__name__)

Call = tuple[str, list[Any]]


class RpcError(CtripdError):
    """Base of every chain RPC failure."""


class RpcUnavailableError(RpcError):
    """No URL of the chain answered (network, timeout, HTTP or malformed answers), after retries."""


class RpcNodeError(RpcError):
    """The node answered a call with a JSON-RPC error."""

    def __init__(self, chain: str, method: str, code: int | None, message: str) -> None:
        self.method = method
        self.code = code
        self.message = message
        super().__init__(f"{chain}: {method}: error {code}: {message}"[:500])


class RpcRangeError(RpcNodeError):
    """eth_getLogs refused the block range or the result size; retry with a smaller range."""


# Providers word their eth_getLogs limits differently: "block range too large", "exceed maximum
# block range: 5000", "query returned more than 10000 results", "Log response size exceeded", …
_RANGE_LIMIT = re.compile(
    r"range|too (many|large|wide|big)|more than \d+|size exceed|exceed|limit", re.IGNORECASE
)
# Infura / EIP-1474 "limit exceeded".
_LIMIT_CODE = -32005

# Rate limits and quotas, worded like range limits ("limit exceeded") and sharing their code.
_RATE_LIMIT = re.compile(
    r"rate.?limit|too many requests|quota|credits|capacity|daily|per second", re.IGNORECASE
)

# JSON-RPC errors that are the node's trouble, not the request's: another URL may well answer.
# Internal error, resource unavailable, limit exceeded (quota, rate), method not found (a node
# without the debug namespace: a backup may have it).
_NODE_SIDE_CODES = frozenset({-32603, -32002, _LIMIT_CODE, -32601, 429, -32029, -32090})
# Providers put the same troubles under the generic -32000 too; the request errors there
# (nonce too low, underpriced, insufficient funds, execution reverted, ...) match none of these.
_NODE_SIDE_MESSAGE = re.compile(
    r"header not found|unknown block|missing trie node|not (yet )?synced|syncing|pruned"
    r"|internal error|timed? ?out|unavailable|overload|busy|try again|upstream|backend|"
    + _RATE_LIMIT.pattern,
    re.IGNORECASE,
)


# Statuses whose `Retry-After` says when the provider takes requests again (RFC 9110, 6585).
_RETRY_AFTER_STATUSES = (429, 503)


class _TransportError(Exception):
    """One URL failed to give a usable answer; the caller moves on to the next. `retry_after`:
    the seconds its provider asked us to wait (429/503 with a valid `Retry-After`)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def display_url(url: str) -> str:
    """The URL without credentials, path or query: providers put API keys there."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if parts.port:
        host = f"{host}:{parts.port}"
    hidden = "/…" if parts.path.strip("/") or parts.query else ""
    return f"{parts.scheme}://{host}{hidden}"


def _error_parts(error: Any) -> tuple[int | None, str]:
    if not isinstance(error, dict):
        return None, str(error)
    code = error.get("code")
    return (code if isinstance(code, int) else None), str(error.get("message"))


def _is_range_error(method: str, code: int | None, message: str) -> bool:
    """eth_getLogs refused for its range or result size; a rate limit or an exhausted quota
    (which share wording and code -32005 with it) is the node's trouble instead."""
    if method != "eth_getLogs" or _RATE_LIMIT.search(message):
        return False
    return code == _LIMIT_CODE or bool(_RANGE_LIMIT.search(message))


def _check_answers(answers: list[Any], methods: dict[int, str]) -> None:
    """Fail the URL (not the request) when its answer lacks one of our calls or carries a
    node-side error: quota, rate limit, a block it does not have yet, an internal error.
    Range refusals of eth_getLogs and errors about the request itself are the caller's."""
    by_id = {a.get("id"): a for a in answers if isinstance(a, dict)}
    whole_batch = len(answers) == 1 and isinstance(answers[0], dict) and "error" in answers[0]
    for call_id, method in methods.items():
        answer = by_id.get(call_id)
        if answer is None:
            if not whole_batch:
                raise _TransportError(f"no answer to {method} in the batch")
            answer = answers[0]
        if "error" not in answer:
            continue
        code, message = _error_parts(answer["error"])
        if _is_range_error(method, code, message):
            continue
        if code in _NODE_SIDE_CODES or _NODE_SIDE_MESSAGE.search(message):
            raise _TransportError(f"{method}: node error {code}: {message}"[:200])


@dataclass(frozen=True)
class Head:
    """A chain head as a node reported it: its number and its block's own timestamp."""

    number: int
    timestamp: int


def _head(chain: str, block: Any) -> Head:
    try:
        return Head(int(block["number"], 16), int(block["timestamp"], 16))
    except (TypeError, KeyError, ValueError):
        raise RpcNodeError(chain, "eth_getBlockByNumber", None, "no latest block") from None


class _PriorityGate:
    """At most `limit` requests in flight; waiters go lowest `priority` first, FIFO on ties.

    The scanner reads several block ranges at once and passes each range's first block as the
    priority, so the receipts that finish an early range are not queued behind later ranges'
    blocks: ranges complete in order and their database writes overlap the reading.
    """

    def __init__(self, limit: int) -> None:
        self._free = limit
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    @contextlib.asynccontextmanager
    async def slot(self, priority: int) -> AsyncIterator[None]:
        if self._free > 0 and not self._waiters:
            self._free -= 1
        else:
            granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            heapq.heappush(self._waiters, (priority, next(self._order), granted))
            try:
                await granted
            except asyncio.CancelledError:
                if granted.done() and not granted.cancelled():
                    self._release()  # granted as we were cancelled: pass the slot on
                raise
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        while self._waiters:
            _, _, granted = heapq.heappop(self._waiters)
            if not granted.done():
                granted.set_result(None)
                return
        self._free += 1


@dataclass
class Endpoint:
    """One RPC URL and its health, as `/v1/chains` shows it."""

    url: str
    ok: bool = True
    last_error: str | None = None
    last_error_at: float | None = None
    latency_ms: float | None = None
    requests: int = 0
    errors: int = 0
    consecutive_failures: int = 0
    # time.monotonic() before which this URL is only tried when every other URL failed too.
    down_until: float = 0.0
    # time.monotonic() before which this URL is not called at all: its provider's Retry-After.
    held_until: float = 0.0

    def health(self) -> dict[str, Any]:
        return {
            "url": display_url(self.url),
            "ok": self.ok,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 1),
            "requests": self.requests,
            "errors": self.errors,
        }


@dataclass
class RpcClient:
    """Calls go to the first URL not cooling down, in configured order.

    A URL fails on a transport error, a bad HTTP status, a malformed or incomplete answer, or a
    JSON-RPC error that is the node's trouble (quota, rate limit, internal error, a block it
    lacks); an error about the request itself is raised to the caller as `RpcNodeError`.
    A failed URL cools down (1 s, doubling per consecutive failure, at most `cooldown_cap`);
    afterwards it is tried first again, so traffic returns to the primary once it recovers.
    A 429 or 503 with a valid `Retry-After` sets the cool-down instead (at most `cooldown_cap`,
    against a hostile or broken header) and makes it a hold: calling sooner risks the key being
    banned, so the URL is not called at all until then, where a plain cool-down only ranks it
    last. When every URL failed, the whole round is retried after a capped exponential backoff
    with full jitter, or once the first hold ends if every URL is held, `retries` times, before
    `RpcUnavailableError`.
    """

    chain: str
    urls: list[str]
    session: aiohttp.ClientSession
    timeout: float = 10.0
    retries: int = 3
    backoff_base: float = 0.25
    backoff_cap: float = 5.0
    cooldown_cap: float = 30.0
    # Calls per HTTP request and HTTP requests in flight (bench/scan measures both on Anvil).
    batch_size: int = 25
    concurrency: int = 3
    # eth_getLogs: the largest span asked for; the current span shrinks and grows within it.
    max_logs_span: int = 500
    # `head()`: a URL whose head is more blocks than this behind another URL's is failed.
    max_node_lag: int = 3
    # When set, every request also asks eth_chainId, and an answer from a node of another chain
    # fails like a dead URL: a provider or load balancer may route any request to such a node.
    expected_chain_id: int | None = None
    endpoints: list[Endpoint] = field(init=False)
    logs_span: int = field(init=False)
    _logs_streak: int = field(default=0, init=False)
    _ids: int = field(default=0, init=False)
    _gate: _PriorityGate = field(init=False)

    def __post_init__(self) -> None:
        self.endpoints = [Endpoint(u) for u in self.urls]
        self.logs_span = self.max_logs_span
        self._gate = _PriorityGate(self.concurrency)

    def health(self) -> list[dict[str, Any]]:
        return [e.health() for e in self.endpoints]

    async def call(self, method: str, params: list[Any] | None = None, priority: int = 0) -> Any:
        (result,) = await self._request([(method, params or [])], priority)
        return result

    async def batch(self, calls: Sequence[Call], priority: int = 0) -> list[Any]:
        """Results in call order; large lists go out as concurrent batches of `batch_size`.

        Lower `priority` values are sent first when requests wait for a slot.
        """
        if len(calls) <= self.batch_size:
            return await self._request(calls, priority)
        chunks = [calls[i : i + self.batch_size] for i in range(0, len(calls), self.batch_size)]
        parts = await asyncio.gather(*(self._request(c, priority) for c in chunks))
        return [r for part in parts for r in part]

    async def _request(self, calls: Sequence[Call], priority: int) -> list[Any]:
        if not calls:
            return []
        first = self._ids
        check = None if self.expected_chain_id is None else first + len(calls)
        self._ids += len(calls) + (check is not None)
        requests = [
            {"jsonrpc": "2.0", "id": first + i, "method": m, "params": p}
            for i, (m, p) in enumerate(calls)
        ]
        if check is not None:
            requests.append({"jsonrpc": "2.0", "id": check, "method": "eth_chainId", "params": []})
        body = orjson.dumps(requests)
        methods = {first + i: m for i, (m, _) in enumerate(calls)}
        async with self._gate.slot(priority):
            answers = await self._send(body, check, methods)
        by_id = {a.get("id"): a for a in answers if isinstance(a, dict)}
        results = []
        for i, (method, _) in enumerate(calls):
            # `_post` saw an answer to every call, or a whole-batch refusal without our ids.
            answer = by_id.get(first + i) or answers[0]
            if "error" in answer:
                raise self._node_error(method, answer["error"])
            results.append(answer.get("result"))
        return results

    def _node_error(self, method: str, error: Any) -> RpcNodeError:
        code, message = _error_parts(error)
        if _is_range_error(method, code, message):
            return RpcRangeError(self.chain, method, code, message)
        return RpcNodeError(self.chain, method, code, message)

    async def _send(
        self, body: bytes, check: int | None, methods: dict[int, str]
    ) -> list[dict[str, Any]]:
        """POST to the URLs in order of preference; retry rounds with backoff when all fail."""
        failures: list[str] = []
        for attempt in range(self.retries + 1):
            pause = 0.0
            if attempt:
                delay = min(self.backoff_cap, self.backoff_base * 2 ** (attempt - 1))
                pause = random.uniform(0, delay)
            await self._pause(pause)
            tried: set[int] = set()
            while (position := self._next_url(tried)) is not None:
                tried.add(position)
                endpoint = self.endpoints[position]
                try:
                    return await self._post(endpoint, body, check, methods)
                except _TransportError as exc:
                    failures.append(f"{display_url(endpoint.url)}: {exc}")
        log.warning("rpc.unavailable", chain=self.chain, errors=failures[-len(self.endpoints) :])
        raise RpcUnavailableError(
            f"{self.chain}: every RPC URL failed: {'; '.join(failures[-len(self.endpoints) :])}"
        )

    async def _pause(self, seconds: float) -> None:
        """Sleep `seconds`, or until the first hold ends when every URL is held (no longer)."""
        wake = time.monotonic() + seconds
        while True:
            # Holds may change while we sleep: other requests get answers meanwhile.
            wake = max(wake, min(e.held_until for e in self.endpoints))
            delay = wake - time.monotonic()
            if delay <= 0:
                return
            await asyncio.sleep(delay)

    def _next_url(self, tried: set[int]) -> int | None:
        """The position of the URL to try next this round, if any: one not tried yet and not held
        (checked at each step: a concurrent request may just have been told to wait), the URLs
        not cooling down first, in configured order, then the one coming back soonest."""
        now = time.monotonic()
        free = [i for i, e in enumerate(self.endpoints) if i not in tried and e.held_until <= now]
        return min(free, key=lambda i: max(self.endpoints[i].down_until, now), default=None)

    async def _post(
        self,
        endpoint: Endpoint,
        body: bytes,
        check: int | None,
        methods: dict[int, str],
        probe: bool = False,
    ) -> list[dict[str, Any]]:
        """One request to one URL. A good answer clears its cool-down, unless it is a `probe`
        whose content decides that (a head may be answered well and still lag)."""
        started = time.perf_counter()
        endpoint.requests += 1
        try:
            async with self.session.post(
                endpoint.url,
                data=body,
                headers={"Content-Type": "application/json"},
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            ) as resp:
                if resp.status != 200:
                    retry_after = None
                    if resp.status in _RETRY_AFTER_STATUSES:
                        header = resp.headers.get("Retry-After")
                        retry_after = parse_retry_after(header, datetime.now(UTC))
                    raise _TransportError(f"HTTP {resp.status}", retry_after)
                raw = await resp.read()
            answers = orjson.loads(raw)
            if isinstance(answers, dict):
                answers = [answers]
            if not isinstance(answers, list) or not answers:
                raise _TransportError("answer is not a JSON-RPC response")
            if check is not None:
                self._check_chain(answers, check)
            _check_answers(answers, methods)
        except _TransportError as exc:
            self._failed(endpoint, str(exc), exc.retry_after)
            raise
        except TimeoutError:
            self._failed(endpoint, f"timeout after {self.timeout:g} s")
            raise _TransportError(f"timeout after {self.timeout:g} s") from None
        except aiohttp.ClientConnectorError as exc:
            # Its text names host and port only, never the path that may hold a key.
            self._failed(endpoint, f"cannot connect: {exc.os_error}")
            raise _TransportError(f"cannot connect: {exc.os_error}") from None
        except (aiohttp.ClientError, orjson.JSONDecodeError) as exc:
            self._failed(endpoint, type(exc).__name__)
            raise _TransportError(type(exc).__name__) from None
        endpoint.latency_ms = (time.perf_counter() - started) * 1000
        if not probe:
            self._succeeded(endpoint)
        return answers

    def _succeeded(self, endpoint: Endpoint) -> None:
        if not endpoint.ok:
            log.info("rpc.recovered", chain=self.chain, url=display_url(endpoint.url))
        endpoint.ok = True
        endpoint.consecutive_failures = 0
        endpoint.down_until = 0.0

    def _check_chain(self, answers: list[Any], check: int) -> None:
        """The answer to the eth_chainId riding along must be the configured chain's id (a
        whole-batch refusal, which has no answer of ours at all, is left to the caller)."""
        found = next((a for a in answers if isinstance(a, dict) and a.get("id") == check), None)
        if found is None and len(answers) == 1 and "error" in answers[0]:
            return
        result = found.get("result") if found is not None else None
        try:
            chain_id = int(result, 16) if isinstance(result, str) else None
        except ValueError:
            chain_id = None
        if chain_id != self.expected_chain_id:
            raise _TransportError(
                f"answered for chain id {chain_id}, expected {self.expected_chain_id}"
            )

    def _failed(self, endpoint: Endpoint, error: str, retry_after: float | None = None) -> None:
        """Cool the URL down: as its provider asked (a hold), else 1 s doubling per failure."""
        endpoint.ok = False
        endpoint.errors += 1
        endpoint.consecutive_failures += 1
        endpoint.last_error = error[:200]
        endpoint.last_error_at = time.time()
        now = time.monotonic()
        if retry_after is None:
            reason = "failures"
            cooldown = min(self.cooldown_cap, 2.0 ** (endpoint.consecutive_failures - 1))
        else:
            reason = "retry_after"
            cooldown = min(self.cooldown_cap, retry_after)
            # Never shortened: another answer of the provider may have named a later time.
            endpoint.held_until = max(endpoint.held_until, now + cooldown)
        endpoint.down_until = now + cooldown
        log.warning(
            "rpc.failed",
            chain=self.chain,
            url=display_url(endpoint.url),
            error=error,
            cooldown_reason=reason,
            cooldown_s=round(max(endpoint.held_until - now, cooldown), 3),
            retry_after=retry_after,
        )

    async def chain_id(self) -> int:
        return int(await self.call("eth_chainId"), 16)

    async def block_number(self) -> int:
        return int(await self.call("eth_blockNumber"), 16)

    async def head(self) -> Head:
        """The latest block, as every URL not held knows it, asked of them all at once.

        A URL more than `max_node_lag` blocks behind the best answer is failed (cooled down), so
        that traffic moves to a node that keeps up; a node stuck at an old head would otherwise
        keep answering "nothing new". The head returned is the lowest among the URLs left, so
        that whichever of them answers next knows every block up to it.
        """
        now = time.monotonic()
        live = [e for e in self.endpoints if e.held_until <= now]
        heads: dict[int, Head] = {}
        if len(live) > 1:
            results = await asyncio.gather(
                *(self._latest_of(e) for e in live), return_exceptions=True
            )
            heads = {id(e): h for e, h in zip(live, results, strict=True) if isinstance(h, Head)}
        if not heads:
            # One URL to ask, or every one failed just now: the usual round of retries decides.
            block = await self.call("eth_getBlockByNumber", ["latest", False])
            return _head(self.chain, block)
        best = max(h.number for h in heads.values())
        for endpoint in live:
            head = heads.get(id(endpoint))
            if head is None:
                continue
            if best - head.number > self.max_node_lag:
                # Still lagging: its cool-down keeps doubling (the probe cleared nothing).
                self._failed(endpoint, f"{best - head.number} blocks behind another URL")
                del heads[id(endpoint)]
            else:
                self._succeeded(endpoint)
        return min(heads.values(), key=lambda h: h.number)

    async def _latest_of(self, endpoint: Endpoint) -> Head:
        """The latest block of one URL, outside the gate: a handful of small calls per tick."""
        first = self._ids
        check = None if self.expected_chain_id is None else first + 1
        self._ids += 2
        request = [
            {
                "jsonrpc": "2.0",
                "id": first,
                "method": "eth_getBlockByNumber",
                "params": ["latest", False],
            }
        ]
        if check is not None:
            request.append({"jsonrpc": "2.0", "id": check, "method": "eth_chainId", "params": []})
        methods = {first: "eth_getBlockByNumber"}
        answers = await self._post(endpoint, orjson.dumps(request), check, methods, probe=True)
        by_id = {a.get("id"): a for a in answers if isinstance(a, dict)}
        answer = by_id.get(first) or answers[0]  # `_post` saw ours, or a whole-batch refusal
        if "error" in answer:
            raise self._node_error("eth_getBlockByNumber", answer["error"])
        try:
            return _head(self.chain, answer.get("result"))
        except RpcError as exc:
            self._failed(endpoint, str(exc))
            raise

    async def get_logs(
        self,
        first: int,
        last: int,
        addresses: list[str],
        topics: list[Any],
        priority: int = 0,
        seen: dict[int, str | None] | None = None,
    ) -> list[dict[str, Any]]:
        """Logs of blocks first..last, in as many calls as the provider's limits require.

        The span halves on a range/size refusal and doubles again after four answers in a row.
        With `seen`, each call asks in the same request for its last block, and `seen` gets that
        block's hash as the answering node knows it (None: unknown to it). A node behind the
        range answers its logs without a word of the blocks it lacks (geth and Anvil clamp the
        range to their head), so only that hash tells whether the answer covers the range.
        """
        logs: list[dict[str, Any]] = []
        start = first
        while start <= last:
            end = min(last, start + self.logs_span - 1)
            query = {
                "fromBlock": hex(start),
                "toBlock": hex(end),
                "address": addresses,
                "topics": topics,
            }
            try:
                if seen is None:
                    part = await self.call("eth_getLogs", [query], priority)
                else:
                    part, block = await self._request(
                        [("eth_getLogs", [query]), ("eth_getBlockByNumber", [hex(end), False])],
                        priority,
                    )
                    seen[end] = block["hash"] if block else None
            except RpcRangeError:
                if end == start:
                    raise
                self.logs_span = max(1, (end - start + 1) // 2)
                self._logs_streak = 0
                log.info("rpc.logs_span_shrunk", chain=self.chain, span=self.logs_span)
                continue
            logs.extend(part)
            start = end + 1
            self._logs_streak += 1
            if self._logs_streak >= 4 and self.logs_span < self.max_logs_span:
                self.logs_span = min(self.max_logs_span, self.logs_span * 2)
                self._logs_streak = 0
        return logs
