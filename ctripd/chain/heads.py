"""New heads of a chain over a WebSocket (`eth_subscribe` newHeads), to wake its scanner early.

A head only says "scan now": the scanner still reads the head and every block from its cursor
over JSON-RPC, so a notification lost, duplicated or out of order loses no block. While the
socket is down the chain's polling goes on as it would without one; reconnects back off (1 s
doubling to `backoff_cap`, with jitter).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import structlog

from ctripd.chain.rpc import display_url
from ctripd.errors import CtripdError

log = structlog.get_logger(__name__)

# Seconds the node gets to answer the subscription request.
SUBSCRIBE_TIMEOUT = 10.0


class HeadsError(CtripdError):
    """The node refused the subscription or sent something that is no JSON-RPC message."""


class HeadSubscription:
    """Follows one chain's newHeads until `stop()`."""

    def __init__(
        self,
        chain: str,
        url: str,
        session: aiohttp.ClientSession,
        backoff_cap: float = 30.0,
        heartbeat: float = 30.0,
    ) -> None:
        self.chain = chain
        self.url = url
        self.session = session
        self.backoff_cap = backoff_cap
        self.heartbeat = heartbeat
        self.connected = False
        self._on_status: Callable[[bool], None] = lambda connected: None
        self._task: asyncio.Task[Any] | None = None
        self._stopped = False

    def stop(self) -> None:
        """End `follow()` (it is cancelled where it waits)."""
        self._stopped = True
        if self._task is not None:
            self._task.cancel()

    async def follow(
        self,
        on_head: Callable[[int], Awaitable[None]],
        on_status: Callable[[bool], None] = lambda connected: None,
    ) -> None:
        """Await `on_head(number)` for each head announced, reconnecting, until `stop()`;
        `on_status(connected)` hears each subscription made and lost."""
        self._task = asyncio.current_task()
        self._on_status = on_status
        failures = 0
        try:
            while not self._stopped:
                try:
                    await self.listen(on_head)
                    error = "closed by the node"
                except (aiohttp.ClientError, OSError, TimeoutError, HeadsError) as exc:
                    error = f"{type(exc).__name__}: {exc}"[:200]
                if self.connected:
                    failures = 0  # it was subscribed: the backoff starts afresh
                self._set_connected(False)
                failures += 1
                delay = min(self.backoff_cap, 2.0 ** (failures - 1)) * random.uniform(0.5, 1)
                log.warning(
                    "heads.down",
                    chain=self.chain,
                    url=display_url(self.url),
                    error=error,
                    retry_in_s=round(delay, 2),
                )
                await asyncio.sleep(delay)
        finally:
            self._set_connected(False)
            self._task = None

    def _set_connected(self, connected: bool) -> None:
        self.connected = connected
        self._on_status(connected)

    async def listen(self, on_head: Callable[[int], Awaitable[None]]) -> None:
        """One connection: subscribe, then pass on heads until the socket closes."""
        async with self.session.ws_connect(self.url, heartbeat=self.heartbeat) as ws:
            request = {"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe", "params": ["newHeads"]}
            await ws.send_str(orjson.dumps(request).decode())
            reply = _message(await ws.receive(timeout=SUBSCRIBE_TIMEOUT))
            subscription = reply.get("result")
            if reply.get("id") != 1 or not isinstance(subscription, str):
                raise HeadsError(f"eth_subscribe refused: {str(reply.get('error'))[:150]}")
            self._set_connected(True)
            log.info("heads.subscribed", chain=self.chain, url=display_url(self.url))
            async for msg in ws:
                params = _message(msg).get("params")
                if not isinstance(params, dict) or params.get("subscription") != subscription:
                    continue
                number = _head_number(params.get("result"))
                if number is not None:
                    await on_head(number)


def _message(msg: aiohttp.WSMessage) -> dict[str, Any]:
    if msg.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
        raise HeadsError(f"socket {msg.type.name.lower()}")
    try:
        decoded = orjson.loads(msg.data)
    except orjson.JSONDecodeError:
        raise HeadsError("a message that is not JSON") from None
    if not isinstance(decoded, dict):
        raise HeadsError("a message that is not a JSON-RPC object")
    return decoded


def _head_number(header: Any) -> int | None:
    try:
        return int(header["number"], 16)
    except (TypeError, KeyError, ValueError):
        return None
