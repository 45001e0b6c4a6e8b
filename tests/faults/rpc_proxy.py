"""A fault-injecting JSON-RPC proxy in front of an Anvil node (an aiohttp server in the test).

Each path (`/a`, `/b`, …) is one "provider" URL for ctripd's chain config. Every request draws
its fate: passed through, or one fault of the enabled kinds, as a flaky hosted provider or a load
balancer with unhealthy backends would answer:

- `timeout`: the answer comes later than the client waits (sometimes after the node did the work)
- `http_429`: Too Many Requests with `Retry-After`
- `http_5xx`: 500/502/503 (sometimes after the node did the work: the answer is lost)
- `malformed`: a 200 whose body is not JSON-RPC at all
- `truncated`: the node's real answer, cut in half
- `lagging`: answered by a node `lag` blocks behind: its head, blocks, receipts and logs stop
  there; state reads past it fail ("header not found"), `eth_getLogs` is silently clamped to it
- `wrong_chain`: answered by a node of another chain

A lagging or wrong-chain fault is either one request routed to a bad backend, or an episode:
that URL answers so for the next 0.5 to 2.5 s, every request.
- `shuffled`: a batch answer in another order than asked (correct, as JSON-RPC allows)

Apart from the random faults, `frozen` makes a URL a node stuck at a given block: every request
to it is answered as of that head, however far the chain moves on.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from ctripd.dev.devnet import free_port

KINDS = (
    "timeout",
    "http_429",
    "http_5xx",
    "malformed",
    "truncated",
    "lagging",
    "wrong_chain",
    "shuffled",
)
# Methods whose block parameter is at this position.
_BLOCK_PARAM = {
    "eth_getBalance": 1,
    "eth_getTransactionCount": 1,
    "eth_call": 1,
    "eth_getCode": 1,
    "eth_getStorageAt": 2,
    "eth_getBlockByNumber": 0,
}
_TAGS = ("latest", "pending")


class RpcProxy:
    def __init__(
        self,
        target: str,
        other_chain: str,
        rng: random.Random,
        *,
        hold: float = 3.0,
        lag: tuple[int, int] = (1, 6),
    ) -> None:
        self.target = target
        self.other_chain = other_chain
        self.rng = rng
        self.hold = hold
        self.lag = lag
        # Share of requests that get a fault; the kind is drawn among `kinds`.
        self.rate = 0.0
        self.kinds: tuple[str, ...] = KINDS
        self.injected: Counter[str] = Counter()
        # URL path → the block its node is stuck at.
        self.frozen: dict[str, int] = {}
        self.episodes: Counter[str] = Counter()
        self.requests = 0
        # Per URL path: (kind, until time.monotonic(), lag) of a bad backend's episode.
        self._episode: dict[str, tuple[str, float, int]] = {}
        self.port = free_port()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    async def start(self) -> None:
        app = web.Application(client_max_size=2**26)
        app.router.add_post("/{path}", self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        self._session = aiohttp.ClientSession()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _forward(self, body: bytes, to: str | None = None) -> bytes:
        assert self._session is not None
        async with self._session.post(
            to or self.target, data=body, headers={"Content-Type": "application/json"}
        ) as resp:
            return await resp.read()

    def _fate(self, path: str) -> tuple[str | None, int]:
        """The fault for a request on `path` (or None), and the lag of a lagging node."""
        lag = self.rng.randint(*self.lag)
        episode = self._episode.get(path)
        if episode is not None and self.rate and time.monotonic() < episode[1]:
            return episode[0], episode[2]
        if not (self.rate and self.rng.random() < self.rate):
            return None, lag
        kind = self.rng.choice(self.kinds)
        if kind in ("lagging", "wrong_chain") and self.rng.random() < 0.5:
            self._episode[path] = (kind, time.monotonic() + self.rng.uniform(0.5, 2.5), lag)
            self.episodes[kind] += 1
        return kind, lag

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests += 1
        if (stuck := self.frozen.get(request.match_info["path"])) is not None:
            return _json(await self._as_of(body, stuck))
        fate, lag = self._fate(request.match_info["path"])
        if fate == "shuffled" and not body.lstrip().startswith(b"["):
            fate = None
        if fate is None:
            return _json(await self._forward(body))
        self.injected[fate] += 1
        after_work = self.rng.random() < 0.5
        if fate == "timeout":
            if after_work:
                await self._forward(body)
            await asyncio.sleep(self.hold)
            return web.Response(status=504)
        if fate == "http_429":
            return web.Response(status=429, headers={"Retry-After": "1"}, text="slow down")
        if fate == "http_5xx":
            if after_work:
                await self._forward(body)
            return web.Response(status=self.rng.choice((500, 502, 503)), text="upstream error")
        if fate == "malformed":
            if after_work:
                await self._forward(body)
            junk = self.rng.choice((b"<html><body>502 Bad Gateway</body></html>", b"", b'{"id"'))
            return _json(junk)
        if fate == "truncated":
            answer = await self._forward(body)
            return _json(answer[: max(1, len(answer) // 2)])
        if fate == "wrong_chain":
            return _json(await self._forward(body, self.other_chain))
        if fate == "shuffled":
            answers = orjson.loads(await self._forward(body))
            self.rng.shuffle(answers)
            return _json(orjson.dumps(answers))
        assert fate == "lagging"
        return _json(await self._lagging(body, lag))

    async def head(self) -> int:
        """The real node's head."""
        answer = orjson.loads(
            await self._forward(
                orjson.dumps({"jsonrpc": "2.0", "id": 0, "method": "eth_blockNumber"})
            )
        )
        return int(answer["result"], 16)

    async def _lagging(self, body: bytes, lag: int) -> bytes:
        """Answer as a node `lag` blocks behind the real head would."""
        return await self._as_of(body, max(0, await self.head() - lag))

    async def _as_of(self, body: bytes, head: int) -> bytes:
        """Answer as a node whose head is block `head` would."""
        calls = orjson.loads(body)
        single = isinstance(calls, dict)
        calls = [calls] if single else calls
        local: dict[Any, dict[str, Any]] = {}
        forward = []
        for call in calls:
            answer = _behind(call, head)
            if answer is not None:
                local[call["id"]] = answer
            else:
                forward.append(call)
        answers = orjson.loads(await self._forward(orjson.dumps(forward))) if forward else []
        by_id = {a.get("id"): a for a in answers}
        out = []
        for call in calls:
            answer = local.get(call["id"]) or by_id.get(call["id"])
            if answer is not None and "result" in answer:
                answer["result"] = _hide_newer(call["method"], answer["result"], head)
            out.append(answer)
        return orjson.dumps(out[0] if single else out)


def _json(body: bytes) -> web.Response:
    return web.Response(body=body, content_type="application/json")


def _number(tag: Any) -> int | None:
    if isinstance(tag, str) and tag.startswith("0x"):
        return int(tag, 16)
    return None


def _behind(call: dict[str, Any], head: int) -> dict[str, Any] | None:
    """Rewrite `call` in place for a node whose head is `head`; or answer it here."""
    method, params = call["method"], call.get("params") or []

    def result(value: Any) -> dict[str, Any]:
        return {"jsonrpc": "2.0", "id": call["id"], "result": value}

    if method == "eth_blockNumber":
        return result(hex(head))
    if method in _BLOCK_PARAM and len(params) > _BLOCK_PARAM[method]:
        i = _BLOCK_PARAM[method]
        number = _number(params[i])
        if params[i] in _TAGS:
            params[i] = hex(head)
        elif number is not None and number > head:
            if method == "eth_getBlockByNumber":
                return result(None)
            error = {"code": -32000, "message": "header not found"}
            return {"jsonrpc": "2.0", "id": call["id"], "error": error}
    if method == "eth_getLogs" and params:
        query = params[0]
        first = _number(query.get("fromBlock"))
        if first is not None and first > head:
            return result([])
        last = _number(query.get("toBlock"))
        if query.get("toBlock") in _TAGS or last is None or last > head:
            query["toBlock"] = hex(head)  # clamped without a word, as geth and Anvil do
    return None


def _hide_newer(method: str, value: Any, head: int) -> Any:
    """Transactions, receipts and blocks past the lagging head are unknown to that node."""
    if method in ("eth_getTransactionReceipt", "eth_getTransactionByHash", "eth_getBlockByHash"):
        if not isinstance(value, dict):
            return value
        number = value.get("blockNumber") or value.get("number")
        if number is not None and int(number, 16) > head:
            return None
    return value
