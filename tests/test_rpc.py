"""The JSON-RPC client against a real Anvil, with a fault-injecting proxy in front of it:
batching, error mapping, retries, failover and back, timeouts, a provider's Retry-After,
adaptive eth_getLogs ranges."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any, NamedTuple

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from structlog.testing import capture_logs
from test_scanner_support import (
    ETH,
    SENDER,
    Rig,
    chain_entry,
    insert_payment,
    payment,
    send_native,
)

from ctripd.chain.evm import TRANSFER_TOPIC
from ctripd.chain.rpc import (
    RpcClient,
    RpcNodeError,
    RpcUnavailableError,
    display_url,
)
from ctripd.dev import tokens as devtokens
from ctripd.dev.devnet import free_port


class Refusal(NamedTuple):
    """An HTTP error answer, with its `Retry-After` header if any, sent once `after` is set."""

    status: int
    retry_after: str | None = None
    after: asyncio.Event | None = None


class Proxy:
    """Forwards JSON-RPC to Anvil unless told to fail: `refusals` answer the next requests in
    turn, `down` answers 503, `delay` stalls, `hold` parks requests until released,
    `max_logs_span` refuses wider eth_getLogs ranges the way hosted providers do, `node_error`
    answers every call with HTTP 200 and that JSON-RPC error object, `frozen_at` answers as a
    node stuck at that block (its head; later blocks unknown)."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.refusals: list[Refusal] = []
        # Set once a request waits for its refusal's `after`.
        self.parked = asyncio.Event()
        self.down = False
        self.delay = 0.0
        # While set and not yet released, requests wait here (a node that stopped answering).
        self.hold: asyncio.Event | None = None
        self.max_logs_span: int | None = None
        self.node_error: dict[str, Any] | None = None
        self.frozen_at: int | None = None
        self.requests = 0
        # time.monotonic() of each request's arrival: the clock of the client under test.
        self.arrivals: list[float] = []
        self.calls: list[tuple[str, list[Any]]] = []
        self.logs_spans: list[int] = []
        self.server: TestServer | None = None
        self.session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("/"))

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/", self.handle)
        self.server = TestServer(app)
        await self.server.start_server()
        self.session = aiohttp.ClientSession()

    async def close(self) -> None:
        assert self.server is not None and self.session is not None
        await self.session.close()
        await self.server.close()

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        self.arrivals.append(time.monotonic())
        if self.refusals:
            refusal = self.refusals.pop(0)
            if refusal.after is not None:
                self.parked.set()
                await refusal.after.wait()
            headers = {} if refusal.retry_after is None else {"Retry-After": refusal.retry_after}
            return web.Response(status=refusal.status, headers=headers, text="slow down")
        if self.hold is not None:
            await self.hold.wait()
        if self.down:
            return web.Response(status=503, text="unavailable")
        if self.delay:
            await asyncio.sleep(self.delay)
        body = await request.read()
        calls = orjson.loads(body)
        if self.node_error is not None:
            error = self.node_error
            return web.json_response(
                [{"jsonrpc": "2.0", "id": c["id"], "error": error} for c in calls]
            )
        if self.frozen_at is not None:
            return web.json_response([await self._frozen(c, self.frozen_at) for c in calls])
        for call in calls if isinstance(calls, list) else [calls]:
            self.calls.append((call["method"], call["params"]))
            if call["method"] == "eth_getLogs":
                query = call["params"][0]
                span = int(query["toBlock"], 16) - int(query["fromBlock"], 16) + 1
                self.logs_spans.append(span)
                if self.max_logs_span is not None and span > self.max_logs_span:
                    error = {"code": -32005, "message": "query returned more than 10000 results"}
                    return web.json_response([{"jsonrpc": "2.0", "id": call["id"], "error": error}])
        assert self.session is not None
        async with self.session.post(
            self.target, data=body, headers={"Content-Type": "application/json"}
        ) as resp:
            return web.Response(body=await resp.read(), content_type="application/json")

    async def _frozen(self, call: dict[str, Any], head: int) -> dict[str, Any]:
        """One call answered as a node stuck at block `head` would."""
        method, params = call["method"], list(call["params"])
        if method == "eth_blockNumber":
            return {"jsonrpc": "2.0", "id": call["id"], "result": hex(head)}
        if method == "eth_getBlockByNumber":
            if params[0] == "latest":
                params[0] = hex(head)
            elif int(params[0], 16) > head:
                return {"jsonrpc": "2.0", "id": call["id"], "result": None}
        assert self.session is not None
        forwarded = {**call, "params": params}
        async with self.session.post(self.target, json=forwarded) as resp:
            answer: dict[str, Any] = await resp.json()
            return answer


@pytest.fixture
async def proxies(anvil) -> AsyncIterator[Any]:  # type: ignore[no-untyped-def]
    started: list[Proxy] = []

    async def make() -> Proxy:
        proxy = Proxy(anvil.url)
        await proxy.start()
        started.append(proxy)
        return proxy

    yield make
    for proxy in started:
        await proxy.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}/"


async def test_batch_answers_in_call_order(anvil, proxies, session) -> None:  # type: ignore[no-untyped-def]
    anvil.rpc("anvil_mine", ["0xa"])
    proxy = await proxies()
    rpc = RpcClient("anvil", [proxy.url], session, batch_size=3)
    blocks = await rpc.batch([("eth_getBlockByNumber", [hex(n), False]) for n in range(10, 0, -1)])
    assert [int(b["number"], 16) for b in blocks] == list(range(10, 0, -1))
    assert proxy.requests == 4  # 3 + 3 + 3 + 1 calls per HTTP request
    assert await rpc.batch([]) == []


async def test_waiting_requests_go_in_priority_order(anvil, proxies, session) -> None:  # type: ignore[no-untyped-def]
    anvil.rpc("anvil_mine", ["0x5"])
    proxy = await proxies()
    proxy.delay = 0.3
    rpc = RpcClient("anvil", [proxy.url], session, concurrency=1)
    busy = asyncio.create_task(rpc.call("eth_chainId"))
    await asyncio.sleep(0.05)  # it holds the only slot
    waiting = [
        asyncio.create_task(rpc.call("eth_getBlockByNumber", [hex(n), False], priority=n))
        for n in (5, 1, 4, 3)
    ]
    await asyncio.sleep(0.05)
    waiting[2].cancel()  # a canceled waiter gives up its turn
    await busy
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert isinstance(results[2], asyncio.CancelledError)
    assert [int(r["number"], 16) for i, r in enumerate(results) if i != 2] == [5, 1, 3]
    numbers = [int(p[0], 16) for m, p in proxy.calls if m == "eth_getBlockByNumber"]
    assert numbers == [1, 3, 5]


async def test_request_errors_are_mapped_and_not_retried(anvil, proxies, session) -> None:  # type: ignore[no-untyped-def]
    proxy = await proxies()
    rpc = RpcClient("anvil", [proxy.url, anvil.url], session)
    with pytest.raises(RpcNodeError) as caught:
        await rpc.call("eth_getBlockByNumber", ["not a block"])
    assert caught.value.method == "eth_getBlockByNumber" and caught.value.code is not None
    assert proxy.requests == 1  # the node answered about the request: no retry, no failover
    assert rpc.endpoints[0].ok
    for message in ("nonce too low", "replacement transaction underpriced", "execution reverted"):
        proxy.node_error = {"code": -32000, "message": message}
        with pytest.raises(RpcNodeError, match=message):
            await rpc.call("eth_sendRawTransaction", ["0x00"])
        assert rpc.endpoints[0].ok
    assert proxy.requests == 4


# What providers answer with HTTP 200 when the trouble is theirs: quota, rate, a block the node
# behind the balancer lacks, an internal error, a node without the debug namespace.
NODE_SIDE = [
    {"code": -32005, "message": "daily request count exceeded, request rate limited"},
    {"code": 429, "message": "Too Many Requests"},
    {"code": -32000, "message": "header not found"},
    {"code": -32603, "message": "internal error"},
    {"code": -32000, "message": "Your app has exceeded its compute units per second capacity"},
    {"code": -32601, "message": "the method debug_traceBlockByHash does not exist"},
]


@pytest.mark.parametrize("error", NODE_SIDE, ids=[e["message"][:24] for e in NODE_SIDE])
async def test_node_side_errors_fail_over_with_cooldown(anvil, proxies, session, error) -> None:  # type: ignore[no-untyped-def]
    primary = await proxies()
    primary.node_error = error
    rpc = RpcClient("anvil", [primary.url, anvil.url], session)
    assert await rpc.block_number() >= 0
    first, second = rpc.health()
    assert not first["ok"] and error["message"] in first["last_error"] and second["ok"]
    assert await rpc.chain_id() == 31337
    assert primary.requests == 1  # cooling down: traffic stays on the backup


async def test_node_side_errors_everywhere_end_unavailable(proxies, session) -> None:  # type: ignore[no-untyped-def]
    a, b = await proxies(), await proxies()
    a.node_error = b.node_error = {"code": -32603, "message": "internal error"}
    rpc = RpcClient("anvil", [a.url, b.url], session, retries=1, backoff_base=0.01)
    with pytest.raises(RpcUnavailableError, match="internal error"):
        await rpc.block_number()
    assert (a.requests, b.requests) == (2, 2)


async def test_an_incomplete_batch_answer_fails_over(anvil, proxies, session) -> None:  # type: ignore[no-untyped-def]
    async def half(request: web.Request) -> web.Response:
        calls = orjson.loads(await request.read())
        return web.json_response([{"jsonrpc": "2.0", "id": calls[0]["id"], "result": "0x1"}])

    app = web.Application()
    app.router.add_post("/", half)
    server = TestServer(app)
    await server.start_server()
    try:
        rpc = RpcClient("anvil", [str(server.make_url("/")), anvil.url], session)
        blocks = await rpc.batch([("eth_getBlockByNumber", [hex(n), False]) for n in (0, 0)])
        assert [b["number"] for b in blocks] == ["0x0", "0x0"]
        assert rpc.endpoints[0].last_error == "no answer to eth_getBlockByNumber in the batch"
    finally:
        await server.close()


async def test_dead_first_url_fails_over(anvil, session) -> None:  # type: ignore[no-untyped-def]
    rpc = RpcClient("anvil", [dead_url(), anvil.url], session)
    assert await rpc.chain_id() == 31337
    first, second = rpc.health()
    assert not first["ok"] and first["last_error"].startswith("cannot connect")
    assert first["errors"] == 1 and second["ok"] and second["latency_ms"] is not None
    assert await rpc.block_number() >= 0
    assert rpc.endpoints[0].requests == 1  # cooling down: the dead URL is not asked again


async def test_traffic_returns_to_the_first_url_when_it_recovers(anvil, proxies, session) -> None:  # type: ignore[no-untyped-def]
    primary = await proxies()
    rpc = RpcClient("anvil", [primary.url, anvil.url], session, cooldown_cap=0.1)
    primary.down = True
    assert await rpc.chain_id() == 31337
    assert rpc.endpoints[0].last_error == "HTTP 503" and rpc.endpoints[1].requests == 1
    primary.down = False
    await asyncio.sleep(0.15)  # the cool-down passes
    assert await rpc.chain_id() == 31337
    assert rpc.endpoints[0].ok and rpc.endpoints[1].requests == 1
    assert primary.requests == 2


async def test_retries_then_unavailable(proxies, session) -> None:  # type: ignore[no-untyped-def]
    a, b = await proxies(), await proxies()
    a.down = b.down = True
    rpc = RpcClient("anvil", [a.url, b.url], session, retries=2, backoff_base=0.01)
    with pytest.raises(RpcUnavailableError) as caught:
        await rpc.block_number()
    assert (a.requests, b.requests) == (3, 3)  # a first round and two retries, each URL in turn
    assert "HTTP 503" in str(caught.value)


def http_date(seconds: float) -> str:
    return format_datetime(datetime.now(UTC) + timedelta(seconds=seconds), usegmt=True)


async def test_retry_after_holds_the_url_then_traffic_returns(anvil, proxies, session) -> None:  # type: ignore[no-untyped-def]
    primary = await proxies()
    primary.refusals = [Refusal(429, "1")]
    rpc = RpcClient("anvil", [primary.url, anvil.url], session)
    first, second = rpc.endpoints
    before = time.monotonic()
    with capture_logs() as logs:
        assert await rpc.chain_id() == 31337
    after = time.monotonic()
    assert first.last_error == "HTTP 429" and second.requests == 1
    assert before + 1 <= first.held_until <= after + 1
    (failed,) = [e for e in logs if e["event"] == "rpc.failed"]
    assert failed["cooldown_reason"] == "retry_after" and failed["retry_after"] == 1
    assert failed["cooldown_s"] == 1

    # Calls during the hold fail over; the first one after it goes to the primary again.
    for _ in range(200):
        assert await rpc.block_number() >= 0
        if primary.requests > 1:
            break
        await asyncio.sleep(0.05)
    assert primary.requests == 2 and primary.arrivals[1] >= first.held_until
    assert second.requests > 1, "the calls within the hold went to the second URL"
    assert first.ok and first.consecutive_failures == 0


async def test_every_url_held_waits_for_the_first_to_come_back(proxies, session) -> None:  # type: ignore[no-untyped-def]
    a, b = await proxies(), await proxies()
    a.refusals = [Refusal(503, "1")]
    b.refusals = [Refusal(429, "20")]
    rpc = RpcClient("anvil", [a.url, b.url], session, retries=1)
    assert await rpc.chain_id() == 31337
    assert (a.requests, b.requests) == (2, 1)  # no request within a hold, no spin
    held_a, held_b = (e.held_until for e in rpc.endpoints)
    assert held_a <= a.arrivals[1] < held_b, "waited for the first hold to end, not the last"


@pytest.mark.parametrize(
    ("retry_after", "cap", "expected"),
    [
        (lambda: http_date(20), 30.0, 20),
        (lambda: "86400", 5.0, 5),
        (lambda: http_date(10 * 86400), 5.0, 5),
    ],
    ids=["http-date", "huge-seconds-capped", "far-http-date-capped"],
)
async def test_retry_after_forms_and_cap(  # type: ignore[no-untyped-def]
    proxies, session, retry_after: Callable[[], str], cap: float, expected: int
) -> None:
    primary, other = await proxies(), await proxies()
    primary.refusals = [Refusal(429, retry_after())]
    other.down = True
    rpc = RpcClient(
        "anvil", [primary.url, other.url], session, cooldown_cap=cap, retries=1, backoff_base=0.01
    )
    before = time.monotonic()
    with pytest.raises(RpcUnavailableError):
        await rpc.chain_id()
    after = time.monotonic()
    # An HTTP-date has whole seconds: up to one less than asked.
    assert before + expected - 2 <= rpc.endpoints[0].held_until <= after + expected
    # Held, it is not asked again, not even in the retry round after the other URL failed too.
    assert (primary.requests, other.requests) == (1, 2)


@pytest.mark.parametrize(
    ("status", "retry_after"),
    [(429, "soon"), (429, "-3"), (503, "1.5"), (429, "²"), (429, None), (500, "1")],
)
async def test_no_valid_retry_after_keeps_the_doubling_cooldown(  # type: ignore[no-untyped-def]
    proxies, session, status: int, retry_after: str | None
) -> None:
    a, b = await proxies(), await proxies()
    a.refusals = [Refusal(status, retry_after)] * 2
    b.down = True
    rpc = RpcClient("anvil", [a.url, b.url], session, retries=1, backoff_base=0.01)
    with capture_logs() as logs, pytest.raises(RpcUnavailableError):
        await rpc.chain_id()
    after = time.monotonic()
    first = rpc.endpoints[0]
    assert a.requests == 2, "a plain cool-down does not keep the URL from a retry round"
    assert first.held_until == 0 and first.consecutive_failures == 2
    assert a.arrivals[1] + 2 <= first.down_until <= after + 2
    mine = [e for e in logs if e["event"] == "rpc.failed" and e["url"] == display_url(a.url)]
    assert [(e["cooldown_reason"], e["cooldown_s"]) for e in mine] == [
        ("failures", 1.0),
        ("failures", 2.0),
    ]


@pytest.mark.parametrize("late", [Refusal(503), Refusal(429, "1")], ids=["plain", "shorter"])
async def test_a_concurrent_failure_does_not_cut_a_hold_short(  # type: ignore[no-untyped-def]
    anvil, proxies, session, late: Refusal
) -> None:
    primary = await proxies()
    released = asyncio.Event()
    primary.refusals = [late._replace(after=released), Refusal(429, "20")]
    rpc = RpcClient("anvil", [primary.url, anvil.url], session)
    slow = asyncio.create_task(rpc.chain_id())
    await primary.parked.wait()
    before = time.monotonic()
    assert await rpc.chain_id() == 31337  # told to come back in 20 s
    released.set()
    assert await slow == 31337  # its answer comes after the hold was set
    assert rpc.endpoints[0].held_until >= before + 20
    assert await rpc.block_number() >= 0
    assert primary.requests == 2


async def test_slow_url_times_out_and_fails_over(anvil, proxies, session) -> None:  # type: ignore[no-untyped-def]
    slow = await proxies()
    slow.delay = 2.5
    rpc = RpcClient("anvil", [slow.url, anvil.url], session, timeout=1.0)
    assert await rpc.chain_id() == 31337
    assert rpc.endpoints[0].last_error == "timeout after 1 s"


async def test_get_logs_range_shrinks_and_grows_again(anvil, proxies, session) -> None:  # type: ignore[no-untyped-def]
    token = devtokens.deploy_token(anvil.url, "erc20_6", SENDER)
    start = int(anvil.rpc("eth_blockNumber"), 16) + 1
    devtokens.mint(anvil.url, token, SENDER, 10**12, SENDER)
    for i in range(10):
        devtokens.token_transfer(anvil.url, token, SENDER, f"0x{i + 1:040x}", 1000 + i)
    end = int(anvil.rpc("eth_blockNumber"), 16)
    query = {"fromBlock": hex(start), "toBlock": hex(end), "address": [token]}
    direct = anvil.rpc("eth_getLogs", [{**query, "topics": [TRANSFER_TOPIC]}])
    assert len(direct) == 11

    proxy = await proxies()
    proxy.max_logs_span = 3
    rpc = RpcClient("anvil", [proxy.url], session, max_logs_span=16)
    logs = await rpc.get_logs(start, end, [token], [TRANSFER_TOPIC])
    assert logs == direct
    refused = [s for s in proxy.logs_spans if s > 3]
    assert refused and refused[0] == end - start + 1  # asked whole at first, then split

    proxy.max_logs_span = None
    for _ in range(3):
        assert await rpc.get_logs(start, end, [token], [TRANSFER_TOPIC]) == direct
    assert rpc.logs_span == 16  # doubled back after runs of answers


async def test_one_block_refused_is_an_error(anvil, proxies, session) -> None:  # type: ignore[no-untyped-def]
    proxy = await proxies()
    proxy.max_logs_span = 0
    rpc = RpcClient("anvil", [proxy.url], session, max_logs_span=4)
    with pytest.raises(RpcNodeError, match="more than 10000 results"):
        await rpc.get_logs(1, 4, [SENDER], [TRANSFER_TOPIC])


async def test_watcher_scans_through_a_dead_first_url(write_config, pool, anvil) -> None:  # type: ignore[no-untyped-def]
    config = write_config(chains=[chain_entry(anvil, rpc=[dead_url(), anvil.url])])
    rig = Rig()
    try:
        watcher = rig.watcher(config)
        await watcher.run_once()
        pid, address = await insert_payment(pool, config, ETH)
        send_native(anvil, address, ETH)
        await watcher.run_once()
        assert (await payment(pool, pid))["status"] == "detected"
        assert not watcher.rpc.endpoints[0].ok and watcher.rpc.endpoints[1].ok
    finally:
        await rig.close()


async def test_watcher_scans_through_a_first_url_out_of_quota(  # type: ignore[no-untyped-def]
    write_config, pool, anvil, proxies
) -> None:
    primary = await proxies()
    config = write_config(chains=[chain_entry(anvil, rpc=[primary.url, anvil.url])])
    rig = Rig()
    try:
        watcher = rig.watcher(config)
        await watcher.run_once()
        pid, address = await insert_payment(pool, config, ETH)
        primary.node_error = {"code": -32005, "message": "project ID request rate exceeded"}
        send_native(anvil, address, ETH)
        await watcher.run_once()
        assert (await payment(pool, pid))["status"] == "detected"
        assert not watcher.rpc.endpoints[0].ok and watcher.rpc.endpoints[1].ok
    finally:
        await rig.close()


async def test_head_fails_over_from_a_node_that_lags_the_others(anvil, proxies, session) -> None:  # type: ignore[no-untyped-def]
    stuck = await proxies()
    stuck.frozen_at = int(anvil.rpc("eth_blockNumber"), 16)
    anvil.rpc("anvil_mine", ["0xa"])
    real = int(anvil.rpc("eth_blockNumber"), 16)
    rpc = RpcClient("anvil", [stuck.url, anvil.url], session)
    head = await rpc.head()
    assert head.number == real
    first, second = rpc.health()
    assert not first["ok"] and first["last_error"] == "10 blocks behind another URL"
    assert second["ok"]
    block = await rpc.call("eth_getBlockByNumber", [hex(real), False])
    assert int(block["number"], 16) == real  # asked of the node that has it
    assert stuck.requests == 1

    # Still stuck at the next scan: the cool-down doubles, the probe's good answer clears nothing.
    await rpc.head()
    assert rpc.endpoints[0].consecutive_failures == 2
    assert rpc.endpoints[0].down_until - time.monotonic() > 1.5

    stuck.frozen_at = None  # caught up again: the head agrees, traffic returns to the first URL
    assert (await rpc.head()).number == real
    assert rpc.endpoints[0].ok


async def test_head_within_the_lag_tolerance_is_the_lowest(anvil, proxies, session) -> None:  # type: ignore[no-untyped-def]
    behind = await proxies()
    behind.frozen_at = int(anvil.rpc("eth_blockNumber"), 16)
    anvil.rpc("anvil_mine", ["0x2"])
    rpc = RpcClient("anvil", [anvil.url, behind.url], session)
    # Two blocks behind is tolerated; the head is one every URL knows.
    assert (await rpc.head()).number == behind.frozen_at
    assert all(e["ok"] for e in rpc.health())


async def test_watcher_sees_payments_past_a_stuck_first_url(  # type: ignore[no-untyped-def]
    write_config, pool, anvil, proxies
) -> None:
    stuck = await proxies()
    config = write_config(chains=[chain_entry(anvil, rpc=[stuck.url, anvil.url])])
    rig = Rig()
    try:
        watcher = rig.watcher(config)
        await watcher.run_once()
        stuck.frozen_at = int(anvil.rpc("eth_blockNumber"), 16)
        pid, address = await insert_payment(pool, config, ETH)
        send_native(anvil, address, ETH)
        anvil.rpc("anvil_mine", ["0x5"])
        await watcher.run_once()
        assert (await payment(pool, pid))["status"] == "confirmed"
        assert not watcher.rpc.endpoints[0].ok
    finally:
        await rig.close()


async def test_a_rate_limited_get_logs_fails_over_without_shrinking(
    anvil, proxies, session
) -> None:  # type: ignore[no-untyped-def]
    """Rate limits share wording ("limit exceeded") and code -32005 with range refusals: taken
    for one, they halved the span down to one block instead of moving to the backup URL."""
    primary = await proxies()
    primary.node_error = {"code": -32005, "message": "daily request rate limit exceeded"}
    rpc = RpcClient("anvil", [primary.url, anvil.url], session, max_logs_span=16)
    end = int(anvil.rpc("eth_blockNumber"), 16)
    start = max(0, end - 10)
    logs = await rpc.get_logs(start, end, [SENDER], [TRANSFER_TOPIC])
    assert logs == anvil.rpc(
        "eth_getLogs",
        [
            {
                "fromBlock": hex(start),
                "toBlock": hex(end),
                "address": [SENDER],
                "topics": [TRANSFER_TOPIC],
            }
        ],
    )
    assert rpc.logs_span == 16 and not rpc.endpoints[0].ok
