"""Regressions found by the fault suite (tests/faults), each reproduced here small and exactly.

- A provider URL that answers for another chain (a load balancer routing to the wrong backend)
  was believed: its blocks looked like a reorg deeper than the window, everything recent was
  un-counted, and the other chain's transfers to our deposit addresses were credited (phantoms);
  the sweeper took another chain's nonce for "used by another transaction". Now every request
  carries an eth_chainId whose answer must be the configured chain's.
- A node behind the head answers eth_getLogs for a range past its head without an error (geth
  and Anvil clamp the range): a token transfer in the blocks it lacked was missed for good.
- A node behind the head does not know the head block: that read as "the tip was replaced", and
  a rewind whose blocks that node did not know walked past them (or, all unknown, to the bottom
  of the window), reporting reorgs that never happened.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from structlog.testing import capture_logs
from test_scanner_support import (
    ETH,
    SENDER,
    Rig,
    chain_entry,
    event_types,
    fresh_address,
    head,
    insert_payment,
    mine,
    payment,
    send_native,
    signed_native,
    transfers,
    wait_mined,
)
from test_sweeper import make_rig

from ctripd.chain.rpc import RpcClient, RpcUnavailableError
from ctripd.dev import tokens as devtokens
from ctripd.dev.devnet import AnvilProcess, free_port, start_anvil
from ctripd.http.keys import RPC


class BadBackend:
    """A proxy in front of Anvil that can answer as another chain's node (`other`), or, for
    requests holding one of `methods` (and `full` flag of eth_getBlockByNumber, if given), as a
    node `behind` blocks behind the head: past it, blocks are unknown, eth_getLogs is
    clamped to it without a word, and state reads (eth_getBalance) fail as geth's do."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.other: str | None = None
        self.behind = 0
        self.methods: set[str] = set()
        self.full: bool | None = None
        self.port = free_port()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/", self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        self._session = aiohttp.ClientSession()

    async def close(self) -> None:
        assert self._session is not None and self._runner is not None
        await self._session.close()
        await self._runner.cleanup()

    async def _post(self, url: str, calls: Any) -> Any:
        assert self._session is not None
        headers = {"Content-Type": "application/json"}
        async with self._session.post(url, data=orjson.dumps(calls), headers=headers) as resp:
            return orjson.loads(await resp.read())

    def _lags(self, call: dict[str, Any]) -> bool:
        if call["method"] not in self.methods:
            return False
        return self.full is None or call["params"][1] is self.full

    async def handle(self, request: web.Request) -> web.Response:
        calls = orjson.loads(await request.read())
        if self.other is not None:
            answer = await self._post(self.other, calls)
        elif self.behind and any(self._lags(c) for c in calls):
            ask = [{"jsonrpc": "2.0", "id": 0, "method": "eth_blockNumber"}]
            (tip,) = await self._post(self.target, ask)
            known = int(tip["result"], 16) - self.behind
            unknown, missing = [], []
            for call in calls:
                if call["method"] == "eth_getLogs":
                    query = call["params"][0]
                    query["toBlock"] = hex(min(int(query["toBlock"], 16), known))
                elif call["method"] == "eth_getBlockByNumber":
                    # "latest" goes to an up-to-date backend: the scanner's head is the tip.
                    if call["params"][0] != "latest" and int(call["params"][0], 16) > known:
                        unknown.append(call["id"])
                elif call["method"] == "eth_getBalance" and int(call["params"][1], 16) > known:
                    missing.append(call["id"])
            answer = await self._post(self.target, calls)
            for a in answer:
                if a["id"] in unknown:
                    a["result"] = None
                elif a["id"] in missing:
                    del a["result"]
                    a["error"] = {"code": -32000, "message": "header not found"}
        else:
            answer = await self._post(self.target, calls)
        return web.Response(body=orjson.dumps(answer), content_type="application/json")


@pytest.fixture(scope="module")
def other_chain() -> Iterator[AnvilProcess]:
    node = start_anvil(chain_id=31338)
    yield node
    node.stop()


@pytest.fixture
async def backend(anvil: AnvilProcess) -> AsyncIterator[BadBackend]:
    proxy = BadBackend(anvil.url)
    await proxy.start()
    yield proxy
    await proxy.close()


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    r = Rig()
    yield r
    await r.close()


async def test_answers_of_another_chain_are_refused(
    write_config, make_client, anvil, other_chain, backend
) -> None:  # type: ignore[no-untyped-def]
    backend.other = other_chain.url
    async with aiohttp.ClientSession() as session:
        both = RpcClient("anvil", [backend.url, anvil.url], session, expected_chain_id=31337)
        assert await both.block_number() == head(anvil)  # from the honest URL
        assert "chain id 31338, expected 31337" in str(both.endpoints[0].last_error)
        alone = RpcClient("anvil", [backend.url], session, expected_chain_id=31337, retries=0)
        with pytest.raises(RpcUnavailableError, match="chain id 31338"):
            await alone.call("eth_getBlockByNumber", ["latest", False])
    # The daemon's own clients check it.
    config = write_config(chains=[chain_entry(anvil, rpc=[backend.url])])
    client = await make_client(config)
    with pytest.raises(RpcUnavailableError, match="chain id 31338"):
        await client.server.app[RPC]["anvil"].block_number()


async def test_logs_of_a_node_behind_do_not_lose_a_token_transfer(
    write_config, pool, anvil, backend, rig
) -> None:  # type: ignore[no-untyped-def]
    token = devtokens.deploy_token(anvil.url, "erc20_6", SENDER)
    devtokens.mint(anvil.url, token, SENDER, 10**12, SENDER)
    tokens = {"TD6": {"address": token, "decimals": 6}}
    config = write_config(chains=[chain_entry(anvil, rpc=[backend.url], tokens=tokens)])
    watcher = rig.watcher(config)
    await watcher.run_once()
    pid, address = await insert_payment(pool, config, 10**6, asset="TD6")
    tx_hash = devtokens.token_transfer(anvil.url, token, SENDER, address, 10**6)

    backend.behind, backend.methods = 1, {"eth_getLogs"}
    await watcher.run_once()  # the logs come from a node one block behind: nothing applied
    backend.behind = 0
    mine(anvil)
    await watcher.run_once()
    (t,) = await transfers(pool, pid)
    assert t["tx_hash"] == tx_hash and t["status"] == "live"
    assert (await payment(pool, pid))["status"] == "confirmed"


async def test_a_node_behind_is_no_reorg(write_config, pool, anvil, backend, rig) -> None:  # type: ignore[no-untyped-def]
    config = write_config(chains=[chain_entry(anvil, rpc=[backend.url])])
    watcher = rig.watcher(config)
    await watcher.run_once()
    pid, address = await insert_payment(pool, config, ETH)
    send_native(anvil, address, ETH)
    await watcher.run_once()
    assert (await payment(pool, pid))["status"] == "detected"

    # At the tip: the head block is unknown to the node answering for it. Nothing to rewind.
    backend.behind, backend.methods = 1, {"eth_getBlockByNumber"}
    with capture_logs() as logs:
        await watcher.run_once()
    assert [e["event"] for e in logs if e["event"].startswith("chain.")] == []
    backend.behind = 0
    mine(anvil)
    await watcher.run_once()
    assert (await payment(pool, pid))["status"] == "confirmed"
    assert [t["status"] for t in await transfers(pool, pid)] == ["live"]
    assert await event_types(pool, pid) == [
        "payment.transfer_received",
        "payment.detected",
        "payment.confirmed",
    ]


async def test_a_rewind_waits_for_a_node_that_knows_the_blocks(
    write_config, pool, anvil, backend, rig
) -> None:  # type: ignore[no-untyped-def]
    config = write_config(chains=[chain_entry(anvil, rpc=[backend.url])])
    watcher = rig.watcher(config)
    await watcher.run_once()
    old, old_address = await insert_payment(pool, config, ETH)
    send_native(anvil, old_address, ETH)
    mine(anvil, 3)
    pid, address = await insert_payment(pool, config, ETH)
    raw, _ = signed_native(anvil, address, ETH)
    wait_mined(anvil, anvil.rpc("eth_sendRawTransaction", [raw]))
    await watcher.run_once()

    # A real reorg of the last block (the transfer moves to the new one, with another
    # transaction, so the block cannot come out identical), noticed by the next block's parent
    # hash; the rewind's block reads go to a node that knows none of them yet.
    other, _ = signed_native(anvil, fresh_address(), 1)
    anvil.rpc("anvil_reorg", [1, [[raw, 0], [other, 0]]])
    mine(anvil)
    backend.behind, backend.methods, backend.full = 10_000, {"eth_getBlockByNumber"}, False
    await watcher.run_once()
    assert await event_types(pool, old) == [
        "payment.transfer_received",
        "payment.detected",
        "payment.confirmed",
    ]
    backend.behind = 0
    await watcher.run_once()
    assert await event_types(pool, old) == [
        "payment.transfer_received",
        "payment.detected",
        "payment.confirmed",
    ]
    (t,) = await transfers(pool, pid)
    assert t["status"] == "live"
    assert t["block_hash"] == anvil.rpc("eth_getTransactionReceipt", [t["tx_hash"]])["blockHash"]
    assert "payment.reorged" in await event_types(pool, pid)


async def test_a_node_behind_the_safe_block_defers_sweep_planning(  # type: ignore[no-untyped-def]
    write_config, pool, anvil, backend
) -> None:
    async with make_rig(write_config, pool, anvil, rpc=[backend.url]) as sweeping:
        await sweeping.pay_native(1000, ETH)
        sweeping.mine(3)
        backend.behind, backend.methods = 10, {"eth_getBalance"}
        sweeper = sweeping.sweeper()
        with capture_logs() as logs:
            await sweeper.run_once()
        assert "sweep.plan_deferred" in [e["event"] for e in logs]
        assert await sweeping.sweeps() == []

        backend.behind = 0
        await sweeping.settle(sweeper)
        (sweep,) = await sweeping.sweeps()
        assert sweep["status"] == "confirmed"
