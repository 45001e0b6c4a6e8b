"""JSON-RPC client of one chain: batching and failover across the chain's URLs."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from ctripd.errors import CtripdError


class RpcError(CtripdError):
    """Every RPC URL of a chain failed, or the node answered with an error."""


@dataclass
class Endpoint:
    url: str
    ok: bool = True
    last_error: str | None = None
    latency_ms: float | None = None
    requests: int = 0
    errors: int = 0


@dataclass
class RpcClient:
    """Calls go to the first healthy URL, in configured order; a failure moves on to the next."""

    chain: str
    urls: list[str]
    session: aiohttp.ClientSession
    timeout: float = 10.0
    endpoints: list[Endpoint] = field(init=False)
    _ids: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.endpoints = [Endpoint(u) for u in self.urls]

    async def call(self, method: str, params: list[Any] | None = None) -> Any:
        (result,) = await self.batch([(method, params or [])])
        return result

    async def batch(self, calls: list[tuple[str, list[Any]]]) -> list[Any]:
        """Send calls as one JSON-RPC batch; results in call order."""
        if not calls:
            return []
        first = self._ids
        self._ids += len(calls)
        body = orjson.dumps(
            [
                {"jsonrpc": "2.0", "id": first + i, "method": m, "params": p}
                for i, (m, p) in enumerate(calls)
            ]
        )
        errors: list[str] = []
        for endpoint in self.endpoints:
            try:
                answers = await self._post(endpoint, body)
            except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
                endpoint.ok = False
                endpoint.errors += 1
                endpoint.last_error = f"{type(exc).__name__}: {exc}"[:200]
                errors.append(f"{endpoint.url}: {endpoint.last_error}")
                continue
            endpoint.ok = True
            endpoint.last_error = None
            by_id = {a.get("id"): a for a in answers if isinstance(a, dict)}
            results = []
            for i, (method, _) in enumerate(calls):
                answer = by_id.get(first + i)
                if answer is None:
                    raise RpcError(f"{self.chain}: no answer to {method}")
                if "error" in answer:
                    raise RpcError(f"{self.chain}: {method}: {answer['error']}")
                results.append(answer.get("result"))
            return results
        raise RpcError(f"{self.chain}: every RPC URL failed: {'; '.join(errors)}")

    async def _post(self, endpoint: Endpoint, body: bytes) -> list[Any]:
        started = time.perf_counter()
        endpoint.requests += 1
        async with self.session.post(
            endpoint.url,
            data=body,
            headers={"Content-Type": "application/json"},
            timeout=aiohttp.ClientTimeout(total=self.timeout),
        ) as resp:
            resp.raise_for_status()
            raw = await resp.read()
        endpoint.latency_ms = (time.perf_counter() - started) * 1000
        answers = orjson.loads(raw)
        if isinstance(answers, dict):
            answers = [answers]
        if not isinstance(answers, list):
            raise ValueError("JSON-RPC answer is not a list")
        return answers

    async def chain_id(self) -> int:
        return int(await self.call("eth_chainId"), 16)

    async def block_number(self) -> int:
        return int(await self.call("eth_blockNumber"), 16)
