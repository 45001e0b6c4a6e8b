"""New heads over a chain's `ws` URL wake its scanner; with the socket down, polling goes on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web
from test_scanner_support import ETH, Rig, chain_entry, insert_payment, payment, send_native

from ctripd.dev.devnet import AnvilProcess
from ctripd.jobs.chainwatch import ChainWatcher

# Safety bound on waits for the node; nothing asserts how long anything took.
PATIENCE = 30


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    r = Rig()
    yield r
    await r.close()


def ws_url(anvil: AnvilProcess) -> str:
    return f"ws://127.0.0.1:{anvil.port}"


async def until(event: asyncio.Event) -> None:
    async with asyncio.timeout(PATIENCE):
        await event.wait()


def connection_events(watcher: ChainWatcher) -> dict[bool, asyncio.Event]:
    """Events set when the subscription is made (True) and lost (False), each cleared by the
    other."""
    events = {True: asyncio.Event(), False: asyncio.Event()}
    report = watcher._ws_status

    def observed(connected: bool) -> None:
        report(connected)
        events[not connected].clear()
        events[connected].set()

    watcher._ws_status = observed  # type: ignore[method-assign]
    return events


def following(watcher: ChainWatcher, scan: Callable[[], Awaitable[object]]) -> asyncio.Task[None]:
    return asyncio.create_task(watcher.follow_heads(scan))


async def stop(watcher: ChainWatcher, task: asyncio.Task[None]) -> None:
    watcher.stop_heads()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_head_notification_runs_the_scan(write_config, pool, anvil, rig) -> None:  # type: ignore[no-untyped-def]
    config = write_config(chains=[chain_entry(anvil, ws=ws_url(anvil))])
    watcher = rig.watcher(config)
    assert watcher.state.ws_connected is False
    await watcher.run_once()  # first start: the cursor begins at the head
    pid, address = await insert_payment(pool, config, ETH)
    connected = connection_events(watcher)
    scanned = asyncio.Event()

    async def scan() -> None:  # what the scheduler's job does, minus the interval
        if await watcher.run_once():
            scanned.set()

    task = following(watcher, scan)
    try:
        await until(connected[True])
        assert watcher.state.ws_connected is True
        send_native(anvil, address, ETH)  # mined at once: the node announces its head
        await until(scanned)
        assert (await payment(pool, pid))["status"] == "detected"
    finally:
        await stop(watcher, task)
    assert watcher.state.ws_connected is False


class Relay:
    """A WebSocket relay to Anvil that the test can cut: the node's socket, closed under us."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.sockets: list[web.WebSocketResponse] = []
        self.refusing = False
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"ws://127.0.0.1:{port}/"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if self.refusing:
            raise web.HTTPServiceUnavailable()
        client = web.WebSocketResponse()
        await client.prepare(request)
        self.sockets.append(client)
        async with aiohttp.ClientSession() as session, session.ws_connect(self.target) as node:

            async def down() -> None:
                async for msg in node:
                    await client.send_str(msg.data)

            relay_down = asyncio.create_task(down())
            async for msg in client:
                await node.send_str(msg.data)
            relay_down.cancel()
        return client

    async def cut(self) -> None:
        self.refusing = True
        for socket in self.sockets:
            await socket.close()

    async def close(self) -> None:
        await self.cut()
        if self.runner is not None:
            await self.runner.cleanup()


async def test_socket_closed_falls_back_to_polling(write_config, pool, anvil, rig) -> None:  # type: ignore[no-untyped-def]
    relay = Relay(ws_url(anvil))
    await relay.start()
    config = write_config(chains=[chain_entry(anvil, ws=relay.url)])
    watcher = rig.watcher(config)
    assert watcher.heads is not None
    watcher.heads.backoff_cap = 0.05  # reconnect attempts without a pause worth waiting for
    await watcher.run_once()
    connected = connection_events(watcher)
    woken: list[int] = []

    async def scan() -> None:
        woken.append(1)

    task = following(watcher, scan)
    try:
        await until(connected[True])
        await relay.cut()
        await until(connected[False])
        assert watcher.state.ws_connected is False
        pid, address = await insert_payment(pool, config, ETH)
        send_native(anvil, address, ETH)
        assert woken == []  # no head came through the cut socket
        assert await watcher.run_once() == 1  # the poll finds the block all the same
        assert (await payment(pool, pid))["status"] == "detected"

        relay.refusing = False  # the node takes connections again: subscribed anew
        await until(connected[True])
        assert watcher.state.ws_connected is True
    finally:
        await stop(watcher, task)
        await relay.close()
