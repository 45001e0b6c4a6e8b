"""API fuzzing (issue 7): schemathesis against `/openapi.json` of a real `ctripd run`.

The server runs as its own process on a free port, with its scheduler on (the chain watcher scans
the worker's Anvil, which mines a block a second, and the sweeper and webhook worker run), on a
fresh database holding confirmed payments (then swept), a partly paid and a canceled one, and
delivered events, so responses carry transfers, sweeps and delivery attempts. Schemathesis runs
every phase (examples, coverage, fuzzing, stateful) in positive and negative mode with a real API
key, and every check but `positive_data_acceptance`, which takes any 4xx to a schema-valid
request as a failure: the API rightly refuses some of them for rules OpenAPI 3.0 cannot state (an
amount's decimals depend on the asset chosen, an amount is at most 2^256-1 base units, a cursor
must be one the server signed). The run passes with 0 server errors, every response matching the
document, and every line of the server's log one JSON object.

Size: `CTRIPD_FAULTS_FULL=1` runs ≥ 2,000 cases; by default a short run for `make test`. The
seed is printed (`CTRIPD_FAULTS_SEED` replays a run) and the figures are kept in
test-artifacts/faults-fuzz.json.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from harness import FULL, Daemon, report, seeded

from ctripd.dev import tokens as devtokens
from ctripd.dev.devnet import AnvilProcess, free_port
from ctripd.http import auth as apikeys
from ctripd.jobs.signing import generate_secret

# Examples per operation and phase; the stateful phase adds its own scenarios on top.
MAX_EXAMPLES = 300 if FULL else 6
MIN_CASES = 2000 if FULL else 150
ACCOUNT0 = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
TREASURY = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


@contextlib.asynccontextmanager
async def _webhook_receiver() -> AsyncIterator[str]:
    """A receiver that takes every event (204), so events end up delivered and redeliverable."""

    async def take(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", take)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/hook"
    finally:
        await runner.cleanup()


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


async def _mine_every_second(anvil_url: str) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "evm_mine", "params": []}
    async with aiohttp.ClientSession() as http:
        while True:
            async with http.post(anvil_url, json=body) as resp:
                resp.raise_for_status()
            await asyncio.sleep(1)


async def _seed_payments(base: str, auth: dict[str, str], anvil: AnvilProcess) -> None:
    """Paid native and token payments (one partly), confirmed, so responses carry transfers,
    sweeps and delivered events; plus a canceled one."""
    async with aiohttp.ClientSession(base, headers=auth) as http:

        async def create(asset: str, amount: str) -> dict[str, Any]:
            body = {"chain": "anvil", "asset": asset, "amount": amount, "order_id": "seed"}
            async with http.post("/v1/payments", json=body) as resp:
                assert resp.status == 201, await resp.text()
                created: dict[str, Any] = await resp.json()
                return created

        native = await create("ETH", "0.5")
        token = await create("TD6", "12.5")
        partial = await create("ETH", "2")
        canceled = await create("TD18", "1")
        # A cancel waits for the scanner to read past it; a busy machine may need a retry.
        deadline = time.monotonic() + 60
        while True:
            async with http.post(f"/v1/payments/{canceled['id']}/cancel") as resp:
                if resp.status == 200:
                    break
                assert resp.status == 409 and time.monotonic() < deadline, await resp.text()
                await asyncio.sleep(float(resp.headers["Retry-After"]))
        for payment, value in ((native, 5 * 10**17), (partial, 10**18)):
            anvil.rpc(
                "eth_sendTransaction",
                [{"from": ACCOUNT0, "to": payment["address"], "value": hex(value)}],
            )
        td6 = token["token_address"]
        await asyncio.to_thread(devtokens.mint, anvil.url, td6, ACCOUNT0, 10**9, ACCOUNT0)
        await asyncio.to_thread(
            devtokens.token_transfer, anvil.url, td6, ACCOUNT0, token["address"], 12_500_000
        )
        deadline = time.monotonic() + 60
        while True:
            statuses = []
            for payment in (native, token, partial):
                async with http.get(f"/v1/payments/{payment['id']}") as resp:
                    statuses.append((await resp.json())["status"])
            if statuses == ["confirmed", "confirmed", "pending"]:
                return
            assert time.monotonic() < deadline, f"seed payments stuck at {statuses}"
            await asyncio.sleep(0.5)


def _chain(anvil: AnvilProcess, tokens: dict[str, tuple[str, int]]) -> dict[str, Any]:
    return {
        "name": "anvil",
        "chain_id": 31337,
        "rpc": [anvil.url],
        "confirmations": 2,
        "poll_interval": 0.5,
        "native": {"symbol": "ETH", "decimals": 18},
        "tokens": {s: {"address": a, "decimals": d} for s, (a, d) in tokens.items()},
        "treasury": TREASURY,
    }


def _schemathesis_args(base: str, key: str, seed: int, json_report: Path) -> list[str]:
    return [
        *(sys.executable, "-m", "schemathesis.cli", "run", f"{base}/openapi.json"),
        *("--header", f"Authorization: Bearer {key}"),
        *("--checks", "all", "--exclude-checks", "positive_data_acceptance"),
        *("--max-examples", str(MAX_EXAMPLES), "--seed", str(seed), "--continue-on-failure"),
        *("--report", "json", "--report-json-path", str(json_report), "--request-timeout", "30"),
        # How fast hypothesis generates data depends on the machine's load, not on the API.
        *("--suppress-health-check", "too_slow"),
    ]


async def test_schemathesis_finds_no_server_error_and_no_schema_mismatch(
    write_config, pool, anvil, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    _, seed = seeded("fuzz")
    tokens = await asyncio.to_thread(devtokens.deploy_test_tokens, anvil.url, ACCOUNT0)
    secret_file = tmp_path / "webhook-secret"
    secret_file.write_text(generate_secret() + "\n")
    secret_file.chmod(0o600)
    async with pool.acquire() as conn:
        key, _ = await apikeys.create_key(conn, "fuzz", "default")
    json_report = tmp_path / "schemathesis.json"
    port = free_port()
    async with contextlib.AsyncExitStack() as stack:
        hook_url = await stack.enter_async_context(_webhook_receiver())
        config = write_config(
            toml={
                "server": {"port": port},
                "webhooks": {"url": hook_url, "secret_file": str(secret_file)},
                "daemon": {"shutdown_timeout": 5},
            },
            chains=[_chain(anvil, tokens)],
        )
        miner = asyncio.create_task(_mine_every_second(anvil.url))
        stack.callback(miner.cancel)
        daemon = Daemon("ctripd", Path(config.path), port, tmp_path)
        stack.push_async_callback(daemon.kill)  # whatever happens
        await daemon.start()
        await _seed_payments(daemon.url, {"Authorization": f"Bearer {key}"}, anvil)
        st = await asyncio.create_subprocess_exec(
            *_schemathesis_args(daemon.url, key, seed, json_report),
            cwd=tmp_path,  # hypothesis keeps its example database in the working directory
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "NO_COLOR": "1"},
        )
        try:
            output, _ = await asyncio.wait_for(st.communicate(), 1200 if FULL else 240)
        finally:
            if st.returncode is None:
                st.kill()
                await st.wait()
        assert await daemon.stop() == 0, daemon.tail()
    text = output.decode(errors="replace")
    print("\n".join(text.splitlines()[-25:]))
    summary = json.loads(json_report.read_text())
    cases = summary["test_cases"]["generated"]
    report(
        "fuzz",
        {
            "seed": seed,
            "cases": cases,
            "operations": summary["operations"]["tested"],
            "phases": {name: phase["status"] for name, phase in summary["phases"].items()},
            "failures": summary["failures"],
            "errors": summary["errors"],
        },
    )
    unhandled = [e for e in _log_entries(daemon.log_path) if e["event"] == "api.unhandled_error"]
    assert not unhandled, unhandled[:5]
    assert st.returncode == 0, text[-20000:]
    assert summary["failures"] == [] and summary["errors"] == [], summary
    assert summary["operations"]["tested"] == summary["operations"]["total"], summary
    assert cases >= MIN_CASES, summary["test_cases"]
