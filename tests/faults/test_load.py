"""Load (issue 7): concurrent clients creating and reading payments against a real `ctripd run`
while its chain watcher scans an Anvil that mines a block a second and pays some of the payments.

Every client loops: create a payment (with an Idempotency-Key), read it back, now and then list
by its order id, list the newest page, or replay the create. Nothing may fail: no error status,
no transport error, every answer the payment created. Afterwards the database holds exactly the
created payments, each with its own address and `payment.created` event, pagination returns each
once, and every payment paid during the load is confirmed.

Size: `CTRIPD_FAULTS_FULL=1` runs 200 clients for 60 s; by default 50 clients for 5 s, for
`make test`. p50/p99 latency and throughput are printed (run with `-s`) and kept in
test-artifacts/faults-load.json, never asserted. `CTRIPD_FAULTS_SEED` replays the workload.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from harness import FULL, Daemon, report, seeded

from ctripd.dev import tokens as devtokens
from ctripd.dev.devnet import AnvilProcess, free_port
from ctripd.http import auth as apikeys

CLIENTS = 200 if FULL else 50
SECONDS = 60 if FULL else 5
ACCOUNT0 = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
TREASURY = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def _log_entries(log: Path) -> list[dict[str, Any]]:
    """The server's log, every line of which must be one JSON object (tracebacks included)."""
    entries = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("--- "):  # the harness's mark of a new process
            continue
        try:
            entries.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"not a JSON log line: {line!r}") from None
    return entries


# Looks at an answer with the expected status; returns what is wrong with it, or None.
Check = Callable[[aiohttp.ClientResponse, Any], "str | None"]


@dataclass
class Tally:
    """What the clients saw: latencies per operation, errors, and the payments created."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: list[str] = field(default_factory=list)
    created: dict[str, dict[str, Any]] = field(default_factory=dict)

    async def call(
        self, op: str, expect: int, request: Any, check: Check | None = None
    ) -> dict[str, Any] | None:
        """Time one request; any other status, a transport error or a failed check is an error."""
        started = time.perf_counter()
        try:
            async with request as resp:
                body = await resp.json(content_type=None)
                self.latencies[op].append(time.perf_counter() - started)
                if resp.status != expect:
                    self.errors.append(f"{op}: {resp.status} {str(body)[:300]}")
                    return None
                if check is not None and (problem := check(resp, body)):
                    self.errors.append(f"{op}: {problem}")
                    return None
                result: dict[str, Any] = body
                return result
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self.errors.append(f"{op}: {type(exc).__name__}: {exc}")
            return None


def _is(want: dict[str, Any]) -> Check:
    """The answer is the payment created (as far as a read can tell)."""

    def check(resp: aiohttp.ClientResponse, got: Any) -> str | None:
        keys = ("id", "address", "amount", "asset", "order_id", "metadata")
        return None if all(got[k] == want[k] for k in keys) else f"{got} != {want}"

    return check


def _lists_only(payment_id: str) -> Check:
    def check(resp: aiohttp.ClientResponse, page: Any) -> str | None:
        ids = [p["id"] for p in page["data"]]
        return None if ids == [payment_id] else f"listed {ids}, not [{payment_id}]"

    return check


def _replays(payment_id: str) -> Check:
    def check(resp: aiohttp.ClientResponse, got: Any) -> str | None:
        if got["id"] != payment_id or resp.headers.get("Idempotent-Replayed") != "true":
            return f"replay answered {got['id']}, not {payment_id}"
        return None

    return check


async def _client(
    rng: random.Random, n: int, base: str, key: str, deadline: float, tally: Tally
) -> None:
    timeout = aiohttp.ClientTimeout(total=60)
    headers = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession(base, headers=headers, timeout=timeout) as http:
        i = 0
        while time.monotonic() < deadline:
            i += 1
            order_id = f"load-{n}-{i}"
            body = {
                "chain": "anvil",
                "asset": rng.choice(("ETH", "ETH", "TD6")),
                "amount": f"0.{rng.randrange(1, 10**6):06d}",
                "order_id": order_id,
                "metadata": {"client": n, "i": i},
            }
            idem = {"Idempotency-Key": order_id}
            create = http.post("/v1/payments", json=body, headers=idem)
            payment = await tally.call("create", 201, create)
            if payment is None:
                continue
            tally.created[payment["id"]] = payment
            pid = payment["id"]
            await tally.call("get", 200, http.get(f"/v1/payments/{pid}"), _is(payment))
            if i % 5 == 0:
                by_order = http.get("/v1/payments", params={"order_id": order_id})
                await tally.call("list_by_order", 200, by_order, _lists_only(pid))
            if i % 7 == 0:
                replay = http.post("/v1/payments", json=body, headers=idem)
                await tally.call("replay", 200, replay, _replays(pid))
            if i % 10 == 0:
                await tally.call("list", 200, http.get("/v1/payments", params={"limit": "20"}))


async def _rpc(http: aiohttp.ClientSession, url: str, method: str, params: list[Any]) -> Any:
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    async with http.post(url, json=body) as resp:
        answer = await resp.json()
    assert "error" not in answer, answer
    return answer["result"]


async def _chain_activity(
    rng: random.Random, anvil_url: str, tally: Tally, paid: list[str]
) -> None:
    """A block a second, each carrying the exact payment of one ETH payment created so far."""
    async with aiohttp.ClientSession() as http:
        while True:
            await asyncio.sleep(1)
            unpaid = [
                p for p in tally.created.values() if p["asset"] == "ETH" and p["id"] not in paid
            ]
            if unpaid:
                payment = rng.choice(unpaid)
                tx = {
                    "from": ACCOUNT0,
                    "to": payment["address"],
                    "value": hex(int(payment["amount_base_units"])),
                }
                await _rpc(http, anvil_url, "eth_sendTransaction", [tx])  # automine: one block
                paid.append(payment["id"])
            else:
                await _rpc(http, anvil_url, "evm_mine", [])


def _percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else 0


def _figures(tally: Tally, elapsed: float, paid: int, seed: int) -> dict[str, Any]:
    every = [v for values in tally.latencies.values() for v in values]
    latency = {
        op: {
            "n": len(values),
            "p50_ms": round(_percentile(values, 50) * 1000, 1),
            "p99_ms": round(_percentile(values, 99) * 1000, 1),
            "max_ms": round(max(values) * 1000, 1),
        }
        for op, values in [("all", every), *sorted(tally.latencies.items())]
    }
    return {
        "seed": seed,
        "clients": CLIENTS,
        "seconds": round(elapsed, 1),
        "requests": len(every),
        "requests_per_s": round(len(every) / elapsed),
        "payments_created": len(tally.created),
        "payments_per_s": round(len(tally.created) / elapsed),
        "paid_on_chain": paid,
        "errors": len(tally.errors),
        "latency": latency,
    }


async def _all_listed(base: str, key: str) -> list[str]:
    ids: list[str] = []
    params = {"limit": "100"}
    async with aiohttp.ClientSession(base, headers={"Authorization": f"Bearer {key}"}) as http:
        while True:
            async with http.get("/v1/payments", params=params) as resp:
                assert resp.status == 200, await resp.text()
                page = await resp.json()
            ids += [p["id"] for p in page["data"]]
            if not page["has_more"]:
                return ids
            params = {"limit": "100", "cursor": page["next_cursor"]}


async def _wait_confirmed(base: str, key: str, ids: list[str]) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession(base, headers=headers) as http:
        for payment_id in ids:
            while True:
                async with http.get(f"/v1/payments/{payment_id}") as resp:
                    status = (await resp.json())["status"]
                if status == "confirmed":
                    break
                assert time.monotonic() < deadline, f"{payment_id} still {status}"
                await asyncio.sleep(0.5)


async def test_concurrent_clients_create_and_read_payments_without_errors(
    write_config, pool, anvil: AnvilProcess, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    rng, seed = seeded("load")
    td6 = await asyncio.to_thread(devtokens.deploy_token, anvil.url, "erc20_6", ACCOUNT0)
    port = free_port()
    # A `[webhooks] url` (nothing listens; its first retry comes after the run) so that each
    # payment's payment.created is written as a delivery to it, counted below.
    (tmp_path / "webhook-secret").write_text(f"whsec_{'A' * 32}\n")
    (tmp_path / "webhook-secret").chmod(0o600)
    webhooks = {
        "url": f"http://127.0.0.1:{free_port()}/hook",
        "secret_file": str(tmp_path / "webhook-secret"),
        "retry_schedule": [3600],
    }
    config = write_config(
        toml={
            "server": {"port": port},
            "daemon": {"shutdown_timeout": 5},
            "webhooks": webhooks,
        },
        chains=[
            {
                "name": "anvil",
                "chain_id": 31337,
                "rpc": [anvil.url],
                "confirmations": 2,
                "poll_interval": 0.5,
                "native": {"symbol": "ETH", "decimals": 18},
                "tokens": {"TD6": {"address": td6, "decimals": 6}},
                "treasury": TREASURY,
            }
        ],
    )
    async with pool.acquire() as conn:
        key, _ = await apikeys.create_key(conn, "load", "default")
    tally, paid = Tally(), []
    daemon = Daemon("ctripd", Path(config.path), port, tmp_path)
    try:
        await daemon.start()
        chain = asyncio.create_task(_chain_activity(rng, anvil.url, tally, paid))
        started = time.monotonic()
        deadline = started + SECONDS
        clients = [random.Random(rng.getrandbits(64)) for _ in range(CLIENTS)]
        try:
            await asyncio.gather(
                *(_client(r, n, daemon.url, key, deadline, tally) for n, r in enumerate(clients))
            )
            elapsed = time.monotonic() - started
        finally:
            chain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await chain
        report("load", _figures(tally, elapsed, len(paid), seed))
        assert tally.errors == [], f"{len(tally.errors)} errors, first: {tally.errors[:10]}"
        assert paid, "no payment was paid during the load"
        for _ in range(3):
            anvil.rpc("evm_mine")
        await _wait_confirmed(daemon.url, key, paid)
        listed = await _all_listed(daemon.url, key)
        assert await daemon.stop() == 0, daemon.tail()
    finally:
        await daemon.kill()

    created = tally.created
    assert len(created) >= CLIENTS
    assert len(listed) == len(set(listed)) and set(listed) == set(created)
    stored = await pool.fetchrow(
        "SELECT count(*) AS n, count(DISTINCT address) AS addresses, "
        "count(DISTINCT address_index) AS indexes FROM payments"
    )
    assert stored is not None
    assert (stored["n"], stored["addresses"], stored["indexes"]) == (len(created),) * 3
    assert len({p["address"] for p in created.values()}) == len(created)
    events = await pool.fetchval("SELECT count(*) FROM events WHERE type = 'payment.created'")
    assert events == len(created)
    errors = [e for e in _log_entries(daemon.log_path) if e["level"] == "error"]
    assert not errors, errors[:5]
