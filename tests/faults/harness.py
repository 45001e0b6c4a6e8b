"""The fault suite's rig: real `ctripd run` processes, a webhook receiver, the ground truth of what
the test sent on chain, and one invariant checker that every scenario ends with.

Nothing here imitates ctripd: processes are started with `python -m ctripd --config X run`
against a real Postgres database and real Anvil nodes; the checker recomputes what the database
should hold from the chain (receipts of the transactions the test sent) and the payment policy,
and compares. Size: `CTRIPD_FAULTS_FULL=1` runs the long version (`make faults`); by default a
short one runs inside `make test`. `CTRIPD_FAULTS_SEED` replays a run's random choices (what to
pay, when and where to kill, which faults); the timing of processes and nodes stays their own.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import os
import random
import signal
import sys
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import yaml
from aiohttp import web
from eth_account import Account
from mnemonic import Mnemonic
from standardwebhooks import Webhook

from ctripd.chain.evm import TRANSFER_TOPIC, transfer_data
from ctripd.chain.wallet import Wallet
from ctripd.dev.devnet import free_port
from ctripd.http import auth as apikeys

FULL = os.environ.get("CTRIPD_FAULTS_FULL") == "1"
REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
# Anvil's unlocked accounts 2..5 of the test mnemonic pay; account 0 deploys and mints.
PAYERS = [
    "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC",
    "0x90F79bf6EB2c4f870365E785982E1f101E93b906",
    "0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65",
    "0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc",
]
DEPLOYER = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"


# --- randomness and reporting -------------------------------------------------------------------


def seeded(scenario: str) -> tuple[random.Random, int]:
    """The scenario's random generator; its seed is printed (and reported) for a replay."""
    raw = os.environ.get("CTRIPD_FAULTS_SEED")
    seed = int(raw) if raw else random.SystemRandom().randrange(2**32)
    print(f"[{scenario}] seed {seed} (replay: CTRIPD_FAULTS_SEED={seed})", flush=True)
    return random.Random(seed), seed


def report(scenario: str, figures: dict[str, Any]) -> None:
    """Print the scenario's figures and keep them in test-artifacts/faults-<scenario>-<size>.json
    (size: full or short)."""
    text = json.dumps({"scenario": scenario, "full": FULL, **figures}, indent=2, default=str)
    print(text, flush=True)
    ARTIFACTS.mkdir(exist_ok=True)
    size = "full" if FULL else "short"
    (ARTIFACTS / f"faults-{scenario}-{size}.json").write_text(text + "\n")


# --- chain access -------------------------------------------------------------------------------


class RpcFailed(Exception):
    pass


class Node:
    """JSON-RPC straight to an Anvil node (never through a fault proxy): the test's ground truth."""

    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self.url = url
        self.session = session

    async def rpc(self, method: str, params: list[Any] | None = None) -> Any:
        (result,) = await self.batch([(method, params or [])])
        return result

    async def batch(self, calls: list[tuple[str, list[Any]]]) -> list[Any]:
        if not calls:
            return []
        body = [
            {"jsonrpc": "2.0", "id": i, "method": m, "params": p} for i, (m, p) in enumerate(calls)
        ]
        async with self.session.post(self.url, json=body, timeout=aiohttp.ClientTimeout(30)) as r:
            answers = await r.json(content_type=None)
        by_id = {a["id"]: a for a in answers}
        out = []
        for i, (method, _) in enumerate(calls):
            if "error" in by_id[i]:
                raise RpcFailed(f"{method}: {by_id[i]['error']}")
            out.append(by_id[i]["result"])
        return out

    async def head(self) -> int:
        return int(await self.rpc("eth_blockNumber"), 16)

    async def balance(self, address: str) -> int:
        return int(await self.rpc("eth_getBalance", [address, "latest"]), 16)

    async def token_balance(self, token: str, owner: str) -> int:
        data = "0x70a08231" + owner.lower().removeprefix("0x").rjust(64, "0")
        return int(await self.rpc("eth_call", [{"to": token, "data": data}, "latest"]), 16)

    async def nonce(self, address: str) -> int:
        return int(await self.rpc("eth_getTransactionCount", [address, "latest"]), 16)

    async def send(self, sender: str, to: str, token: str | None, amount: int) -> str:
        """A native or token transfer from an unlocked account; returns the tx hash (unmined)."""
        if token is None:
            tx = {"from": sender, "to": to, "value": hex(amount)}
        else:
            tx = {"from": sender, "to": token, "data": transfer_data(to, amount), "gas": "0x186a0"}
        tx_hash: str = await self.rpc("eth_sendTransaction", [tx])
        return tx_hash


@dataclass
class ChainSpec:
    """One chain as ctripd sees it (`rpc`, maybe through a proxy) and as the test does (`node`)."""

    name: str
    chain_id: int
    node_url: str
    treasury: str
    rpc: list[str] = field(default_factory=list)
    confirmations: int = 2
    poll_interval: float = 0.3
    tokens: dict[str, tuple[str, int]] = field(default_factory=dict)
    rpc_timeout: float = 5.0
    # Interval-mined (Anvil --block-time); otherwise the test mines every block itself.
    interval_mining: bool = True
    symbol: str = "ETH"
    replace_after: int = 120
    block_time: float = 2.0
    stall_after: int = 120
    # Asset symbol → min_credit (base units): smaller transfers are dust, recorded in aggregate.
    min_credit: dict[str, int] = field(default_factory=dict)
    # The scenarios written before EIP-7702 sweeps check the top-up path.
    sweep_mode: str = "topup"

    def entry(self) -> dict[str, Any]:
        def credit(symbol: str) -> dict[str, int]:
            return {"min_credit": self.min_credit[symbol]} if symbol in self.min_credit else {}

        return {
            "name": self.name,
            "chain_id": self.chain_id,
            "rpc": self.rpc or [self.node_url],
            "confirmations": self.confirmations,
            "poll_interval": self.poll_interval,
            "rpc_timeout": self.rpc_timeout,
            "native": {"symbol": self.symbol, "decimals": 18, **credit(self.symbol)},
            "tokens": {
                s: {"address": a, "decimals": d, **credit(s)} for s, (a, d) in self.tokens.items()
            },
            "treasury": self.treasury,
            "replace_after": self.replace_after,
            "block_time": self.block_time,
            "stall_after": self.stall_after,
            "sweep_mode": self.sweep_mode,
        }

    def asset(self, symbol: str) -> tuple[str | None, int]:
        if symbol == self.symbol:
            return None, 18
        return self.tokens[symbol]

    def min_credit_of(self, token: str | None) -> int:
        if token is None:
            return self.min_credit.get(self.symbol, 0)
        symbol = next(s for s, (a, _) in self.tokens.items() if a.lower() == token.lower())
        return self.min_credit.get(symbol, 0)


def random_address(rng: random.Random) -> str:
    return Account.from_key(rng.randbytes(32)).address


# --- configuration ------------------------------------------------------------------------------


@dataclass
class Setup:
    config_path: Path
    wallet: Wallet
    webhook_secret: str

    @property
    def gas_wallet(self) -> str:
        return self.wallet.gas_address(0)


def write_config(
    directory: Path,
    *,
    dsn: str,
    chains: list[ChainSpec],
    rng: random.Random,
    webhook_url: str,
    port: int,
    payments: dict[str, Any] | None = None,
    wallet: dict[str, Any] | None = None,
) -> Setup:
    """ctripd.toml + chains.yaml, a fresh mnemonic and webhook secret in 0600 files."""
    directory.mkdir(parents=True, exist_ok=True)
    words = Mnemonic("english").to_mnemonic(rng.randbytes(16))
    secret = "whsec_" + base64.b64encode(rng.randbytes(24)).decode()
    for name, value in (("mnemonic", words), ("webhook-secret", secret)):
        path = directory / name
        path.write_text(value + "\n")
        path.chmod(0o600)
    sections: dict[str, dict[str, Any]] = {
        "daemon": {
            "state_dir": str(directory / "state"),
            "migrate_on_start": False,
            "shutdown_timeout": 10,
        },
        "server": {"host": "127.0.0.1", "port": port, "max_lag_blocks": 1000},
        "database": {"dsn": dsn, "pool_min": 1, "pool_max": 6},
        "wallet": {"mnemonic_file": str(directory / "mnemonic"), **(wallet or {})},
        "payments": {"min_expiry": 1, "expiry_interval": 1, **(payments or {})},
        "webhooks": {
            "url": webhook_url,
            "secret_file": str(directory / "webhook-secret"),
            "retry_schedule": [1, 1, 2, 2, 3, 3, 5, 5, 5, 10, 10, 10, 30, 60],
            "timeout": 2,
        },
        "log": {"level": "info", "format": "json"},
    }
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    (directory / "ctripd.toml").write_text("\n".join(lines) + "\n")
    (directory / "chains.yaml").write_text(yaml.safe_dump({"chains": [c.entry() for c in chains]}))
    return Setup(directory / "ctripd.toml", Wallet.from_mnemonic(words), secret)


async def api_key(dsn: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        key, _ = await apikeys.create_key(conn, "faults", "default")
    finally:
        await conn.close()
    return key


# --- ctripd processes ---------------------------------------------------------------------------


LogLine = dict[str, Any]


class Daemon:
    """One `ctripd run` process slot: started, SIGKILLed and restarted; its JSON log lines are
    kept (with the incarnation they came from) and can be waited for."""

    def __init__(self, name: str, config: Path, port: int, log_dir: Path) -> None:
        self.name = name
        self.config = config
        self.port = port
        self.log_path = log_dir / f"{name}.log"
        self.proc: asyncio.subprocess.Process | None = None
        self.incarnation = 0
        self.lines: list[LogLine] = []
        self._reader: asyncio.Task[None] | None = None
        self._waiters: list[tuple[Callable[[LogLine], bool], asyncio.Future[LogLine]]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self, ready_within: float = 120) -> None:
        assert not self.alive
        self.incarnation += 1
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "CTRIPD_SERVER__PORT": str(self.port)}
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "ctripd",
            "--config",
            str(self.config),
            "run",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            cwd=REPO,
            limit=2**22,
        )
        self._reader = asyncio.create_task(self._read(self.proc, self.incarnation))
        await self._wait_ready(ready_within)

    async def _wait_ready(self, within: float) -> None:
        deadline = time.monotonic() + within
        async with aiohttp.ClientSession() as http:
            while True:
                if not self.alive:
                    await self._drain()
                    raise AssertionError(f"{self.name} exited at start:\n{self.tail()}")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.get(f"{self.url}/healthz", timeout=aiohttp.ClientTimeout(2)):
                        return
                if time.monotonic() > deadline:
                    raise AssertionError(f"{self.name} not ready in {within} s:\n{self.tail()}")
                await asyncio.sleep(0.1)

    async def _read(self, proc: asyncio.subprocess.Process, incarnation: int) -> None:
        assert proc.stdout is not None
        with self.log_path.open("ab") as out:
            out.write(f"--- {self.name} incarnation {incarnation} ---\n".encode())
            async for raw in proc.stdout:
                out.write(raw)
                out.flush()
                if not raw.startswith(b"{"):
                    continue
                try:
                    line = json.loads(raw)
                except ValueError:
                    continue
                line["_incarnation"] = incarnation
                line["_t"] = time.monotonic()
                self.lines.append(line)
                for predicate, future in self._waiters:
                    if not future.done() and predicate(line):
                        future.set_result(line)

    async def _drain(self) -> None:
        if self._reader is not None:
            await self._reader

    async def wait_log(self, predicate: Callable[[LogLine], bool], within: float) -> LogLine | None:
        """The next log line (from now on) matching `predicate`, or None after `within` s."""
        future: asyncio.Future[LogLine] = asyncio.get_running_loop().create_future()
        entry = (predicate, future)
        self._waiters.append(entry)
        try:
            return await asyncio.wait_for(future, within)
        except TimeoutError:
            return None
        finally:
            self._waiters.remove(entry)

    async def kill(self) -> None:
        """SIGKILL: no cleanup of any kind runs in the process."""
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()
        await self._drain()

    async def stop(self) -> int:
        """SIGTERM, the graceful stop; returns the exit code."""
        assert self.proc is not None
        if self.alive:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 60)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        await self._drain()
        assert self.proc.returncode is not None
        return self.proc.returncode

    def tail(self, chars: int = 4000) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-chars:]

    def errors(self) -> Counter[str]:
        """Error-level log events by name, across incarnations (reported, not asserted)."""
        return Counter(
            line.get("event", "?") for line in self.lines if line.get("level") == "error"
        )


@contextlib.asynccontextmanager
async def running(daemons: Iterable[Daemon]) -> AsyncIterator[None]:
    """Kill whatever is still running at the end, whatever happened."""
    try:
        yield
    finally:
        for daemon in daemons:
            await daemon.kill()


# --- the webhook receiver -----------------------------------------------------------------------


class Receiver:
    """The merchant's endpoint: verifies every signature, records each event once (by
    webhook-id) in order of first arrival; may refuse a share of deliveries (500, or 429 with
    Retry-After) so that retries happen too."""

    def __init__(self, rng: random.Random, fail_rate: float = 0.0) -> None:
        self.verifier: Webhook | None = None
        self.rng = rng
        self.fail_rate = fail_rate
        self.received: dict[str, dict[str, Any]] = {}
        self.order: list[str] = []
        self.arrivals = 0
        self.refused: Counter[str] = Counter()
        self.bad: list[str] = []
        # Called with the payload after it is recorded and before the answer (a test kills the
        # sender there: the event was processed, its acknowledgement is lost).
        self.before_ack: Callable[[dict[str, Any]], Awaitable[None]] | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self.port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def trust(self, secret: str) -> None:
        """The endpoint's copy of the webhook secret (known once the config is written)."""
        self.verifier = Webhook(secret)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.arrivals += 1
        try:
            assert self.verifier is not None
            self.verifier.verify(body, dict(request.headers))
        except Exception as exc:  # the verifier raises its own error types
            self.bad.append(f"{request.headers.get('webhook-id')}: {exc}")
            return web.Response(status=400)
        if self.fail_rate and self.rng.random() < self.fail_rate:
            if self.rng.random() < 0.5:
                self.refused["429"] += 1
                return web.Response(status=429, headers={"Retry-After": "1"})
            self.refused["500"] += 1
            return web.Response(status=500)
        payload = json.loads(body)
        event_id = request.headers["webhook-id"]
        if payload.get("id") != event_id:
            self.bad.append(f"{event_id}: body id {payload.get('id')}")
        if event_id not in self.received:
            self.received[event_id] = payload
            self.order.append(event_id)
        if self.before_ack is not None:
            await self.before_ack(payload)
        return web.Response(status=204)


# --- the merchant's API client ------------------------------------------------------------------


class Api:
    """Merchant calls that retry through restarts: creates carry an Idempotency-Key, so a
    request whose answer was lost with a killed process is simply repeated."""

    def __init__(
        self, session: aiohttp.ClientSession, key: str, bases: Callable[[], list[str]]
    ) -> None:
        self.session = session
        self.headers = {"Authorization": f"Bearer {key}"}
        self.bases = bases
        # Any 5xx answer is a server error: collected, and asserted empty by the scenarios.
        self.server_errors: list[str] = []
        self.retries = 0

    async def _call(
        self, method: str, path: str, deadline: float = 180, **kwargs: Any
    ) -> tuple[int, Any]:
        end = time.monotonic() + deadline
        headers = {**self.headers, **kwargs.pop("headers", {})}
        attempt = 0
        while True:
            bases = self.bases()
            base = bases[attempt % len(bases)] if bases else None
            attempt += 1
            if base is not None:
                try:
                    async with self.session.request(
                        method,
                        base + path,
                        headers=headers,
                        timeout=aiohttp.ClientTimeout(15),
                        **kwargs,
                    ) as resp:
                        body = await resp.json(content_type=None)
                        if resp.status >= 500:
                            self.server_errors.append(f"{method} {path}: {resp.status} {body}")
                        elif not (
                            resp.status == 409
                            # An idempotent create still running; a cancel before the scanner
                            # has read the chain past it.
                            and any(w in str(body.get("detail")) for w in ("in progress", "retry"))
                        ):
                            return resp.status, body
                except (aiohttp.ClientError, TimeoutError, ValueError):
                    pass
            self.retries += 1
            if time.monotonic() > end:
                raise AssertionError(f"{method} {path}: no answer in {deadline} s")
            await asyncio.sleep(0.2)

    async def create(self, idempotency_key: str, body: dict[str, Any]) -> dict[str, Any]:
        status, payment = await self._call(
            "POST", "/v1/payments", json=body, headers={"Idempotency-Key": idempotency_key}
        )
        assert status in (200, 201), (status, payment)
        return dict(payment)

    async def cancel(self, payment_id: str) -> bool:
        """True once canceled (a repeat answers like the first cancel), False if not pending."""
        status, body = await self._call("POST", f"/v1/payments/{payment_id}/cancel")
        assert status in (200, 409), (status, body)
        return status == 200

    async def get(self, payment_id: str) -> dict[str, Any]:
        status, body = await self._call("GET", f"/v1/payments/{payment_id}")
        assert status == 200, (status, body)
        return dict(body)


# --- ground truth and the workload --------------------------------------------------------------


@dataclass
class Sent:
    """A transfer the test sent to a deposit address."""

    chain: str
    tx_hash: str
    to: str
    token: str | None
    amount: int
    payment_id: str
    raw: str | None = None


@dataclass
class Created:
    id: str
    chain: str
    asset: str
    token: str | None
    address: str
    amount: int
    plan: str


@dataclass
class Policy:
    tolerance_bps: int = 0
    late_window: float = 86400.0

    def payments_config(self) -> dict[str, Any]:
        return {
            "underpayment_tolerance_bps": self.tolerance_bps,
            "late_window": int(self.late_window),
        }


@dataclass
class World:
    """Everything the invariant checker compares: what the test did and where to look."""

    dsn: str
    setup: Setup
    chains: list[ChainSpec]
    session: aiohttp.ClientSession
    receiver: Receiver
    policy: Policy
    sent: list[Sent] = field(default_factory=list)
    created: dict[str, Created] = field(default_factory=dict)
    canceled: set[str] = field(default_factory=set)
    # Balances before the run: (chain, token or None) → treasury balance; chain → gas wallet.
    treasury_start: dict[tuple[str, str | None], int] = field(default_factory=dict)
    gas_start: dict[str, int] = field(default_factory=dict)
    payers: dict[str, list[str]] = field(default_factory=dict)
    # Keys of one-off senders; when there are some, payments are sent with them.
    senders: list[bytes] = field(default_factory=list)
    payer_locks: defaultdict[str, asyncio.Lock] = field(
        default_factory=lambda: defaultdict(asyncio.Lock)
    )
    sweeping: bool = True

    def node(self, chain: str) -> Node:
        spec = self.spec(chain)
        return Node(spec.node_url, self.session)

    def spec(self, chain: str) -> ChainSpec:
        return next(c for c in self.chains if c.name == chain)

    async def record_start(self) -> None:
        for c in self.chains:
            node = self.node(c.name)
            self.treasury_start[(c.name, None)] = await node.balance(c.treasury)
            for address, _ in c.tokens.values():
                self.treasury_start[(c.name, address.lower())] = await node.token_balance(
                    address, c.treasury
                )
            self.gas_start[c.name] = await node.balance(self.setup.gas_wallet)


async def open_world(
    directory: Path,
    dsn: str,
    session: aiohttp.ClientSession,
    rng: random.Random,
    chains: list[ChainSpec],
    *,
    port: int,
    policy: Policy,
    fail_rate: float = 0.0,
    sweeping: bool = True,
) -> World:
    """Receiver up, config written, gas wallet funded on every chain, balances noted."""
    receiver = Receiver(rng, fail_rate)
    await receiver.start()
    setup = write_config(
        directory,
        dsn=dsn,
        chains=chains,
        rng=rng,
        webhook_url=receiver.url,
        port=port,
        payments=policy.payments_config(),
        wallet={"sweep": sweeping},
    )
    receiver.trust(setup.webhook_secret)
    world = World(dsn, setup, chains, session, receiver, policy, sweeping=sweeping)
    for c in chains:
        await world.node(c.name).rpc("anvil_setBalance", [setup.gas_wallet, hex(1000 * 10**18)])
        world.payers[c.name] = PAYERS
    await world.record_start()
    return world


async def deploy_usdt(node: Node) -> str:
    """A USDT-like token (no return value from transfer), minted to the payers."""
    from ctripd.dev import tokens as devtokens

    token = await asyncio.to_thread(devtokens.deploy_token, node.url, "usdt", DEPLOYER)
    await fund_payers(node, PAYERS, [token], 10**15)
    return token


PLANS = ["exact", "exact", "partial", "split", "over", "tolerance", "none", "cancel"]
PLANS += ["cancel_then_pay", "late", "too_late"]


def parts_of(plan: str, amount: int, rng: random.Random, policy: Policy) -> list[int]:
    if plan in ("exact", "cancel_then_pay", "late", "too_late"):
        return [amount]
    if plan == "partial":
        return [max(1, amount * 2 // 5)]
    if plan == "split":
        first = rng.randint(1, amount - 1)
        return [first, amount - first]
    if plan == "over":
        return [amount + rng.randint(1, amount)]
    if plan == "tolerance":
        return [amount - amount * policy.tolerance_bps // 10_000]
    return []


async def pay_one(
    world: World,
    api: Api,
    rng: random.Random,
    key: str,
    chain: str,
    plan: str,
) -> Created:
    """Create a payment through the API and pay it on chain according to `plan`."""
    spec = world.spec(chain)
    asset = rng.choice([spec.symbol, *spec.tokens])
    token, decimals = spec.asset(asset)
    units = rng.randint(2, 500) * 10 ** (decimals - 4)
    late = plan in ("late", "too_late")
    body = {
        "chain": chain,
        "asset": asset,
        "amount": _decimal(units, decimals),
        "expires_in": 3 if late else 3600,
        "order_id": key,
    }
    payment = await api.create(key, body)
    created = Created(payment["id"], chain, asset, token, payment["address"], units, plan)
    world.created[created.id] = created
    if plan.startswith("cancel") and await api.cancel(created.id):
        world.canceled.add(created.id)
    if late:
        expires = datetime.fromisoformat(payment["expires_at"].replace("Z", "+00:00"))
        extra = rng.uniform(1, 3) if plan == "late" else world.policy.late_window + 3
        wait = (expires - datetime.now(UTC)).total_seconds() + extra
        await asyncio.sleep(max(0.0, wait))
    node = world.node(chain)
    payer = rng.choice(world.payers[chain])
    for part in parts_of(plan, units, rng, world.policy):
        if world.senders:
            sender = world.senders.pop()
            tx_hash = await send_signed(node, spec, sender, created.address, token, part)
        else:
            # One at a time per payer: the node numbers concurrent sends with the same nonce.
            async with world.payer_locks[payer]:
                tx_hash = await node.send(payer, created.address, token, part)
        world.sent.append(Sent(chain, tx_hash, created.address, token, part, created.id))
        await asyncio.sleep(rng.uniform(0, 0.8))
    return created


async def send_signed(
    node: Node, spec: ChainSpec, key: bytes, to: str, token: str | None, amount: int
) -> str:
    """A transfer signed by a one-off sender (nonce 0): it can be dropped from the chain or
    moved to another block without leaving a nonce gap behind it."""
    tx: dict[str, Any] = {
        "nonce": 0,
        "chainId": spec.chain_id,
        "maxFeePerGas": 100 * 10**9,
        "maxPriorityFeePerGas": 10**9,
        "type": 2,
    }
    if token is None:
        tx.update(to=to, value=amount, gas=21_000)
    else:
        tx.update(to=token, value=0, gas=100_000, data=transfer_data(to, amount))
    signed = Account.sign_transaction(tx, key)
    tx_hash: str = await node.rpc("eth_sendRawTransaction", [signed.raw_transaction.to_0x_hex()])
    return tx_hash


async def fund_senders(node: Node, keys: list[bytes], tokens: Iterable[str]) -> None:
    """Gas money and tokens for one-off senders (with automine on)."""
    for key in keys:
        address = Account.from_key(key).address
        await node.rpc("anvil_setBalance", [address, hex(10**18)])
        for token in tokens:
            data = "0x40c10f19" + transfer_data(address, 10**15)[10:]  # mint(address, uint256)
            await node.rpc("eth_sendTransaction", [{"from": DEPLOYER, "to": token, "data": data}])


def _decimal(units: int, decimals: int) -> str:
    whole, frac = divmod(units, 10**decimals)
    return f"{whole}.{frac:0{decimals}d}".rstrip("0").rstrip(".") if decimals else str(whole)


async def fund_payers(node: Node, payers: list[str], tokens: Iterable[str], amount: int) -> None:
    """Mint test tokens to each payer (they hold Anvil's 10,000 ETH already)."""
    from ctripd.dev import tokens as devtokens

    for token in tokens:
        for payer in payers:
            await asyncio.to_thread(devtokens.mint, node.url, token, payer, amount, DEPLOYER)


# --- settling -----------------------------------------------------------------------------------


async def mine_while(node: Node, stop: asyncio.Event, every: float = 0.3) -> None:
    """Mine a block every `every` s until `stop` (for nodes without interval mining)."""
    while not stop.is_set():
        await node.rpc("evm_mine")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)


async def settle(world: World, within: float = 150) -> dict[str, Any]:
    """Drive everything to completion: blocks are mined until every payment has what its
    transfers justify, every event is delivered and every sweep is final; then mining stops and
    the scanner catches up with the final head. Returns what still was not settled (empty when
    all is quiet; the checker then reports the details)."""
    deadline = time.monotonic() + within
    while True:
        busy = await _mining(world, until_quiet=deadline)
        if busy:
            return busy
        # Quiet while blocks came: now with the chains still, the scanner reaches their heads.
        await asyncio.sleep(max(c.poll_interval for c in world.chains) * 3 + 1)
        busy = await _busy(world)
        if not busy or time.monotonic() > deadline:
            return busy


async def _mining(world: World, until_quiet: float) -> dict[str, Any]:
    """Keep every chain producing blocks until all is quiet (returns {}) or the deadline
    (returns what is still busy); the chains are still when it returns."""
    stop = asyncio.Event()
    miners = []
    for c in world.chains:
        node = world.node(c.name)
        if c.interval_mining:
            await node.rpc("evm_setIntervalMining", [1])
        else:
            miners.append(asyncio.create_task(mine_while(node, stop)))
    try:
        while True:
            busy = await _busy(world)
            if not busy or time.monotonic() > until_quiet:
                return busy
            await asyncio.sleep(0.5)
    finally:
        for c in world.chains:
            if c.interval_mining:
                await world.node(c.name).rpc("evm_setIntervalMining", [0])
        stop.set()
        await asyncio.gather(*miners)


async def _busy(world: World, only: str | None = None) -> dict[str, Any]:
    """What is not yet final: scanning, payments, events, sweeps (of chain `only`, or all)."""
    busy: dict[str, Any] = {}
    conn = await asyncpg.connect(world.dsn)
    try:
        snap = await Snapshot.read(conn)
    finally:
        await conn.close()
    if only is not None:
        snap = snap.of_chain(only)
    for c in world.chains:
        if only is not None and c.name != only:
            continue
        head = await world.node(c.name).head()
        scanned = snap.scanned.get(c.name)
        if scanned is None or scanned < head - (c.confirmations if only else 0):
            busy[f"{c.name}.scanned"] = f"{scanned} of {head}"
    expected = await expected_transfers(world, snap)
    wrong = payment_problems(world, snap, expected)
    if wrong:
        busy["payments"] = wrong[:3]
    pending = [e["id"] for e in snap.events if e["status"] != "delivered"]
    if pending:
        busy["events"] = len(pending)
    unfinished = [s["id"] for s in snap.sweeps if s["status"] in ("signed", "broadcast")]
    if unfinished:
        busy["sweeps"] = unfinished
    due = [
        p["id"]
        for p in snap.payments
        if p["status"] == "confirmed" and p["amount_confirmed"] > p["sweep_covered"]
    ]
    if due and world.sweeping:
        busy["sweep_due"] = due
    return busy


async def quiet(world: World, chain: str) -> bool:
    """Chain `chain` is done with everything sent so far (its blocks keep coming)."""
    return not await _busy(world, chain)


# --- the invariant checker ----------------------------------------------------------------------


@dataclass
class Snapshot:
    """The database as one REPEATABLE READ transaction saw it."""

    now: datetime
    scanned: dict[str, int | None]
    payments: list[asyncpg.Record]
    transfers: list[asyncpg.Record]
    events: list[asyncpg.Record]
    sweeps: list[asyncpg.Record]
    links: list[asyncpg.Record]
    # The deposits of EIP-7702 batches (`sweep_entries`).
    entries: list[asyncpg.Record] = field(default_factory=list)

    @classmethod
    async def read(cls, conn: asyncpg.Connection) -> Snapshot:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            now = await conn.fetchval("SELECT now()")
            scanned = {r["name"]: r["scanned_block"] for r in await conn.fetch("TABLE chains")}
            payments = await conn.fetch("SELECT * FROM payments ORDER BY id")
            transfers = await conn.fetch("SELECT * FROM transfers ORDER BY id")
            # An event's status is its deliveries' (one each, to the configured URL, here).
            events = await conn.fetch(
                "SELECT e.seq, e.id, e.payment_id, e.type, payload::text AS payload,"
                " coalesce((SELECT CASE WHEN bool_or(d.status = 'pending') THEN 'pending'"
                " WHEN bool_or(d.status = 'failed') THEN 'failed' ELSE 'delivered' END"
                " FROM deliveries d WHERE d.event_id = e.id), 'none') AS status "
                "FROM events e ORDER BY e.seq"
            )
            sweeps = await conn.fetch("SELECT * FROM sweeps ORDER BY id")
            links = await conn.fetch("SELECT * FROM sweep_payments")
            entries = await conn.fetch("SELECT * FROM sweep_entries ORDER BY sweep_id, address")
        return cls(now, scanned, payments, transfers, events, sweeps, links, entries)

    def of_chain(self, chain: str) -> Snapshot:
        payments = [p for p in self.payments if p["chain"] == chain]
        ids = {p["id"] for p in payments}
        sweeps = [s for s in self.sweeps if s["chain"] == chain]
        sweep_ids = {s["id"] for s in sweeps}
        return Snapshot(
            self.now,
            {chain: self.scanned.get(chain)},
            payments,
            [t for t in self.transfers if t["chain"] == chain],
            [e for e in self.events if e["payment_id"] in ids],
            sweeps,
            [link for link in self.links if link["payment_id"] in ids],
            [e for e in self.entries if e["sweep_id"] in sweep_ids],
        )


@dataclass(frozen=True)
class Expected:
    """A transfer the chain holds now, from the receipt of a transaction the test sent; or the
    dust of one block to one payment in one asset, which ctripd records as one row of `count`."""

    key: tuple[Any, ...]
    payment_id: str
    to: str
    token: str | None
    amount: int
    block_number: int
    block_hash: str
    timestamp: int
    count: int = 1


def dust_key(block_hash: str, payment_id: str, token: str | None) -> tuple[str, ...]:
    """The checker's key of a dust aggregate (the transfers table keys it by block hash)."""
    return ("dust", block_hash.lower(), payment_id, (token or "").lower())


def _aggregate_dust(spec: ChainSpec, found: dict[Any, Expected]) -> dict[Any, Expected]:
    """Transfers below their asset's min_credit, summed per block, payment and asset."""
    out: dict[Any, Expected] = {}
    for key, t in found.items():
        if t.amount >= spec.min_credit_of(t.token):
            out[key] = t
            continue
        dust = dust_key(t.block_hash, t.payment_id, t.token)
        before = out.get(dust)
        if before is None:
            out[dust] = dataclasses.replace(t, key=dust)
        else:
            out[dust] = dataclasses.replace(
                before, amount=before.amount + t.amount, count=before.count + 1
            )
    return out


async def expected_transfers(world: World, snap: Snapshot) -> dict[str, dict[Any, Expected]]:
    """Per chain: the live transfers the database must hold (mined, successful, canonical,
    in a block the scanner has passed), keyed like the transfers table."""
    out: dict[str, dict[Any, Expected]] = {}
    for c in world.chains:
        if c.name not in snap.scanned:
            continue
        node = world.node(c.name)
        sent = [s for s in world.sent if s.chain == c.name]
        receipts = await node.batch([("eth_getTransactionReceipt", [s.tx_hash]) for s in sent])
        blocks: dict[str, Any] = {}
        wanted = {r["blockHash"] for r in receipts if r is not None}
        hashes = sorted(wanted)
        for h, b in zip(
            hashes,
            await node.batch([("eth_getBlockByHash", [h, False]) for h in hashes]),
            strict=True,
        ):
            blocks[h] = b
        scanned = snap.scanned.get(c.name)
        found: dict[Any, Expected] = {}
        for s, receipt in zip(sent, receipts, strict=True):
            if receipt is None or receipt["status"] != "0x1":
                continue
            number = int(receipt["blockNumber"], 16)
            if scanned is None or number > scanned:
                continue
            block = blocks.get(receipt["blockHash"])
            if block is None:  # reorged between the two reads; the next settle round sees it
                continue
            if s.token is None:
                keys = [((s.tx_hash.lower(), "native", -1), s.amount)]
            else:
                keys = [
                    ((s.tx_hash.lower(), "token", int(log["logIndex"], 16)), int(log["data"], 16))
                    for log in receipt["logs"]
                    if log["address"].lower() == s.token.lower()
                    and log["topics"][0] == TRANSFER_TOPIC
                    and log["topics"][2][-40:] == s.to.lower()[2:]
                ]
            for key, amount in keys:
                found[key] = Expected(
                    key,
                    s.payment_id,
                    s.to.lower(),
                    s.token.lower() if s.token else None,
                    amount,
                    number,
                    receipt["blockHash"],
                    int(block["timestamp"], 16),
                )
        out[c.name] = _aggregate_dust(c, found)
    return out


def expected_state(
    world: World, payment: asyncpg.Record, transfers: list[Expected], scanned: int, now: datetime
) -> tuple[str, int, int, bool]:
    """(status, received, confirmed, paid_late) that the live transfers and the policy justify,
    recomputed here from the SPEC, independently of ctripd's code."""
    token = (payment["token_address"] or "").lower() or None
    same = sorted(
        (t for t in transfers if t.token == token),
        key=lambda t: (t.block_number, t.key[0], t.key[2]),
    )
    received = sum(t.amount for t in same)
    depth = payment["confirmations_required"]
    confirmed = sum(t.amount for t in same if scanned - t.block_number + 1 >= depth)
    amount = int(payment["amount"])
    due = amount - amount * world.policy.tolerance_bps // 10_000
    expires = payment["expires_at"]
    if payment["id"] in world.canceled:
        return "canceled", received, confirmed, False
    if received >= due:
        running = 0
        completed = expires
        for t in same:
            running += t.amount
            if running >= due:
                completed = datetime.fromtimestamp(t.timestamp, UTC)
                break
        if completed > expires + timedelta(seconds=world.policy.late_window):
            return "expired", received, confirmed, False
        status = "confirmed" if confirmed >= due else "detected"
        return status, received, confirmed, completed > expires
    return ("expired" if now >= expires else "pending"), received, confirmed, False


def payment_problems(
    world: World, snap: Snapshot, expected: dict[str, dict[Any, Expected]]
) -> list[str]:
    # Only transfers on the payment's own chain count; those on another are held.
    by_payment: dict[tuple[str, str], list[Expected]] = defaultdict(list)
    for chain, found in expected.items():
        for t in found.values():
            by_payment[(chain, t.payment_id)].append(t)
    problems = []
    for p in snap.payments:
        scanned = snap.scanned.get(p["chain"]) or 0
        own = by_payment[(p["chain"], p["id"])]
        want = expected_state(world, p, own, scanned, snap.now)
        got = (
            p["status"],
            int(p["amount_received"]),
            int(p["amount_confirmed"]),
            p["paid_late"],
        )
        if want != got:
            plan = world.created[p["id"]].plan if p["id"] in world.created else "?"
            problems.append(f"payment {p['id']} ({plan}): expected {want}, database {got}")
    return problems


@dataclass
class Checked:
    """Figures of a passed check, for the scenario's report."""

    payments: int = 0
    transfers: int = 0
    events: int = 0
    sweeps: int = 0
    statuses: dict[str, int] = field(default_factory=dict)


async def check_invariants(world: World, reorgs: ReorgLog | None = None) -> Checked:
    """Every invariant of the fault suite; raises AssertionError listing every violation.

    Without `reorgs` the chains never reorganized: no transfer may ever have been un-counted
    (a phantom recorded, then taken back, would leave exactly that trace)."""
    conn = await asyncpg.connect(world.dsn)
    try:
        snap = await Snapshot.read(conn)
    finally:
        await conn.close()
    expected = await expected_transfers(world, snap)
    problems: list[str] = []
    problems += _transfer_problems(world, snap, expected)
    problems += payment_problems(world, snap, expected)
    problems += _event_problems(world, snap)
    if reorgs is not None:
        problems += reorgs.problems(snap)
    else:
        problems += [
            f"transfer {t['tx_hash']} of {t['payment_id']} orphaned without a reorg"
            for t in snap.transfers
            if t["status"] != "live"
        ]
        problems += [
            f"event {e['id']}: payment.reorged of {e['payment_id']} without a reorg"
            for e in snap.events
            if e["type"] == "payment.reorged"
        ]
    problems += await _sweep_problems(world, snap, reorgs is not None)
    problems += await _reconcile_problems(world)
    if problems:
        print("invariant violations:", *problems, sep="\n  ", flush=True)
        listing = "\n  ".join(problems[:60])
        more = f"\n  … and {len(problems) - 60} more" if len(problems) > 60 else ""
        raise AssertionError(f"{len(problems)} invariant violation(s):\n  {listing}{more}")
    return Checked(
        payments=len(snap.payments),
        transfers=sum(len(v) for v in expected.values()),
        events=len(snap.events),
        sweeps=len(snap.sweeps),
        statuses=dict(Counter(p["status"] for p in snap.payments)),
    )


def _transfer_problems(
    world: World, snap: Snapshot, expected: dict[str, dict[Any, Expected]]
) -> list[str]:
    """Every canonical transfer recorded exactly once and live; nothing else live."""
    problems = []
    ours = {p["id"] for p in snap.payments}
    if set(world.created) != ours:
        problems.append(
            f"payments: created by the test but missing {sorted(set(world.created) - ours)}, "
            f"in the database but never created {sorted(ours - set(world.created))}"
        )
    live: dict[str, dict[Any, asyncpg.Record]] = defaultdict(dict)
    for t in snap.transfers:
        if t["status"] == "live":
            key = (
                dust_key(t["block_hash"], t["payment_id"], t["token_address"])
                if t["kind"] == "dust"
                else (t["tx_hash"].lower(), t["kind"], t["log_index"])
            )
            live[t["chain"]][key] = t
    for c in world.chains:
        want, got = expected[c.name], live[c.name]
        for key in want.keys() - got.keys():
            problems.append(f"{c.name}: missed transfer {key} ({want[key].amount})")
        for key in got.keys() - want.keys():
            row = got[key]
            problems.append(
                f"{c.name}: phantom transfer {key} to {row['to_address']} amount {row['amount']} "
                f"block {row['block_number']}"
            )
        for key in want.keys() & got.keys():
            w, g = want[key], got[key]
            facts = (
                g["payment_id"],
                g["to_address"].lower(),
                int(g["amount"]),
                g["transfer_count"],
            )
            where = (g["block_number"], g["block_hash"])
            chain_facts = (w.payment_id, w.to, w.amount, w.count)
            if facts != chain_facts or where != (w.block_number, w.block_hash):
                problems.append(
                    f"{c.name}: transfer {key} recorded as {facts} at {where}, chain has "
                    f"{chain_facts} at {(w.block_number, w.block_hash)}"
                )
    return problems


def _event_problems(world: World, snap: Snapshot) -> list[str]:
    """Every outbox event received (once is enough) with its exact payload, in outbox order per
    payment; the outbox itself tells one consistent story per payment (no duplicate event)."""
    receiver = world.receiver
    problems = [f"receiver: bad delivery {b}" for b in receiver.bad]
    ids = {e["id"] for e in snap.events}
    for e in snap.events:
        if e["status"] != "delivered":
            problems.append(f"event {e['id']} {e['type']} is {e['status']}")
        got = receiver.received.get(e["id"])
        if got is None:
            problems.append(f"event {e['id']} {e['type']} of {e['payment_id']} never received")
        elif got != json.loads(e["payload"]):
            problems.append(f"event {e['id']}: received payload differs from the outbox")
    for event_id in receiver.received.keys() - ids:
        problems.append(f"received event {event_id} that is not in the outbox")
    arrival = {event_id: i for i, event_id in enumerate(receiver.order)}
    per_payment: dict[str, list[asyncpg.Record]] = defaultdict(list)
    for e in snap.events:
        per_payment[e["payment_id"]].append(e)
    statuses = {p["id"]: p for p in snap.payments}
    live = defaultdict(set)
    for t in snap.transfers:
        if t["status"] == "live" and t["kind"] != "dust":  # dust announces no transfer
            live[t["payment_id"]].add((t["tx_hash"].lower(), t["log_index"]))
    for payment_id, events in per_payment.items():
        seen = [e["id"] for e in events if e["id"] in arrival]
        if seen != sorted(seen, key=arrival.__getitem__):
            problems.append(f"payment {payment_id}: events received out of outbox order")
        problems += _replay(payment_id, events, statuses.get(payment_id), live[payment_id])
    return problems


def _replay(
    payment_id: str, events: list[asyncpg.Record], payment: asyncpg.Record | None, live: set[Any]
) -> list[str]:
    """Replay one payment's events: each transfer counted once per time it became live, each
    status change reported once, and the last event showing the payment's final status."""
    problems = []
    counted: set[Any] = set()
    paid = confirmed = False
    swept: set[Any] = set()
    last_status = None
    for i, e in enumerate(events):
        payload = json.loads(e["payload"])
        data = payload["data"]
        status = data["payment"]["status"]
        transfer = data.get("transfer")
        key = (transfer["tx_hash"].lower(), transfer["log_index"]) if transfer else None
        kind = e["type"]
        if transfer is not None and transfer["kind"] == "dust":
            # Dust came unannounced; its aggregate going with a reorg only moves the status.
            paid = status in ("detected", "confirmed")
            confirmed = status == "confirmed"
            last_status = status
            continue
        if kind == "payment.created" and i != 0:
            problems.append(f"payment {payment_id}: created is event {i}")
        elif kind == "payment.transfer_received":
            if key in counted:
                problems.append(f"payment {payment_id}: transfer {key} received twice")
            counted.add(key)
        elif kind == "payment.reorged":
            if key not in counted:
                problems.append(f"payment {payment_id}: reorged {key} that was not counted")
            counted.discard(key)
            paid = status in ("detected", "confirmed")
            confirmed = status == "confirmed"
        elif kind == "payment.detected":
            if paid:
                problems.append(f"payment {payment_id}: detected twice")
            paid = True
        elif kind == "payment.confirmed":
            if confirmed:
                problems.append(f"payment {payment_id}: confirmed twice")
            paid = confirmed = True
        elif kind in ("payment.expired", "payment.canceled") and last_status != "pending":
            # Only a pending payment expires or is canceled (again, after a reorg took its
            # late funds back): anything else is a duplicate or a change without its event.
            problems.append(f"payment {payment_id}: {kind} while {last_status}")
        elif kind == "payment.swept":
            # Someone else's trigger of the delegate has ids of its own.
            sweep = (data["sweep"]["kind"] == "outside", data["sweep"]["id"])
            if sweep in swept:
                problems.append(f"payment {payment_id}: swept by sweep {sweep} twice")
            swept.add(sweep)
        last_status = status
    if counted != live:
        problems.append(
            f"payment {payment_id}: events count transfers {sorted(counted)}, database has live "
            f"{sorted(live)}"
        )
    if payment is not None and last_status != payment["status"]:
        problems.append(
            f"payment {payment_id}: last event shows {last_status}, database {payment['status']}"
        )
    return problems


# Kinds the gas wallet sends and pays for: top-ups, delegate deployments, EIP-7702 batches.
GAS_WALLET_KINDS = ("gas_topup", "deploy", "batch")


def _entry_swept(entries: dict[tuple[int, str], asyncpg.Record], sweep: Any, address: str) -> bool:
    """Whether a confirmed sweep moved a payment's funds: a batch only through the swept entry
    of the payment's deposit."""
    if sweep["status"] != "confirmed":
        return False
    if sweep["kind"] != "batch":
        return True
    entry = entries.get((sweep["id"], address.lower()))
    return entry is not None and entry["status"] == "swept"


async def _sweep_problems(world: World, snap: Snapshot, reorged: bool) -> list[str]:
    """No funds leave a deposit address twice: every transaction a sweeper address ever sent is
    one mined sweep (a deposit's nonce also counts each authorization a mined batch carried for
    it); treasuries received exactly what the sweeps and swept batch entries say; the gas wallet
    spent exactly its top-ups, deployments and batches; confirmed payments swept."""
    problems = []
    by_id = {s["id"]: s for s in snap.sweeps}
    entries = {(e["sweep_id"], e["address"].lower()): e for e in snap.entries}
    links = defaultdict(list)
    for link in snap.links:
        links[link["payment_id"]].append(link)
    for s in snap.sweeps:
        if s["status"] in ("signed", "broadcast"):
            problems.append(f"sweep {s['id']} still {s['status']}")
    for e in snap.entries:
        sweep = by_id[e["sweep_id"]]
        if sweep["status"] in ("confirmed", "failed") and e["status"] == "pending":
            problems.append(f"batch {sweep['id']}: entry {e['address']} still pending")
        if e["status"] == "swept" and int(e["moved"]) < int(e["amount"]):
            problems.append(f"batch {sweep['id']}: entry {e['address']} moved less than planned")
    for c in world.chains:
        node = world.node(c.name)
        sweeps = [s for s in snap.sweeps if s["chain"] == c.name]
        mined = [s for s in sweeps if s["block_number"] is not None]
        receipts = await node.batch([("eth_getTransactionReceipt", [s["tx_hash"]]) for s in mined])
        for s, receipt in zip(mined, receipts, strict=True):
            if receipt is None:
                problems.append(f"sweep {s['id']} {s['tx_hash']} is not on chain")
            elif (
                receipt["from"].lower() != s["from_address"].lower()
                or (receipt["status"] == "0x1") != (s["status"] == "confirmed")
                or (int(receipt["blockNumber"], 16) != s["block_number"] and not reorged)
            ):
                # After a reorg deeper than the confirmations, a finished sweep may sit in
                # another block than the one it was confirmed in: the funds moved all the same.
                problems.append(f"sweep {s['id']}: receipt differs from the row")
        # A mined batch applies its authorizations even when its call reverts; each applied one
        # bumped its deposit's nonce once (the nonce it was signed at).
        mined_ids = {s["id"] for s in mined}
        authorized: dict[str, set[int]] = defaultdict(set)
        for e in snap.entries:
            if e["sweep_id"] in mined_ids and e["auth_nonce"] is not None:
                authorized[e["address"].lower()].add(int(e["auth_nonce"]))
        senders = sorted({s["from_address"] for s in sweeps} | {world.setup.gas_wallet})
        senders += sorted(
            {p["address"] for p in snap.payments if p["chain"] == c.name} - set(senders)
        )
        nonces = await node.batch([("eth_getTransactionCount", [a, "latest"]) for a in senders])
        for address, nonce in zip(senders, nonces, strict=True):
            sent = sum(1 for s in mined if s["from_address"].lower() == address.lower())
            auths = len(authorized[address.lower()])
            if int(nonce, 16) != sent + auths:
                problems.append(
                    f"{c.name}: {address} sent {int(nonce, 16)} transactions, {sent} are sweeps"
                    + (f" and {auths} batch authorizations" if auths else "")
                )
        swept_entries = [
            e
            for e in snap.entries
            if e["status"] == "swept" and by_id[e["sweep_id"]]["chain"] == c.name
        ]
        native = sum(
            int(s["amount"]) for s in sweeps if s["kind"] == "native" and s["status"] == "confirmed"
        ) + sum(int(e["moved"]) for e in swept_entries if e["token_address"] is None)
        delta = await node.balance(c.treasury) - world.treasury_start[(c.name, None)]
        if delta != native:
            problems.append(f"{c.name}: treasury got {delta} native, sweeps say {native}")
        for address, _ in c.tokens.values():
            swept = sum(
                int(s["amount"])
                for s in sweeps
                if s["kind"] == "token"
                and s["status"] == "confirmed"
                and (s["token_address"] or "").lower() == address.lower()
            ) + sum(
                int(e["moved"])
                for e in swept_entries
                if (e["token_address"] or "").lower() == address.lower()
            )
            delta = (
                await node.token_balance(address, c.treasury)
                - world.treasury_start[(c.name, address.lower())]
            )
            if delta != swept:
                problems.append(f"{c.name}: treasury got {delta} of {address}, sweeps say {swept}")
        spent = sum(
            int(s["amount"]) * (s["status"] == "confirmed") + int(s["fee"] or 0)
            for s in sweeps
            if s["kind"] in GAS_WALLET_KINDS and s["block_number"] is not None
        )
        gas_delta = world.gas_start[c.name] - await node.balance(world.setup.gas_wallet)
        if gas_delta != spent:
            problems.append(
                f"{c.name}: gas wallet spent {gas_delta}, its top-ups, deployments and batches"
                f" say {spent}"
            )
    for p in snap.payments:
        covered = sorted(
            int(link["covered"])
            for link in links[p["id"]]
            if by_id[link["sweep_id"]]["kind"] != "gas_topup"
            and _entry_swept(entries, by_id[link["sweep_id"]], p["address"])
        )
        if len(covered) != len(set(covered)):
            problems.append(f"payment {p['id']}: the same funds swept twice {covered}")
        if (
            world.sweeping
            and p["status"] == "confirmed"
            and int(p["sweep_covered"]) < int(p["amount_confirmed"])
        ):
            problems.append(f"payment {p['id']}: confirmed but not swept")
    return problems


async def _reconcile_problems(world: World) -> list[str]:
    problems = []
    for c in world.chains:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "ctripd",
            "--config",
            str(world.setup.config_path),
            "reconcile",
            "--chain",
            c.name,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=REPO,
        )
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            problems.append(f"reconcile --chain {c.name} exited {proc.returncode}: {out.decode()}")
    return problems


# --- reorg bookkeeping (the reorg storm) --------------------------------------------------------


@dataclass
class ReorgLog:
    """Block hashes each `anvil_reorg` replaced, with its depth, to judge confirmations by."""

    confirmations: int
    removed: dict[str, int] = field(default_factory=dict)
    depths: Counter[int] = field(default_factory=Counter)
    dropped: int = 0
    moved: int = 0
    identical: int = 0

    def replaced(self, depth: int, old: list[str], new: list[str]) -> None:
        """A reorg of `depth` replaced blocks `old` by `new`. A block rebuilt identically (same
        parent, transactions and timestamp) keeps its hash: it is not removed."""
        self.identical += len(set(old) & set(new))
        for h in old:
            self.removed[h] = depth
        for h in new:
            self.removed.pop(h, None)
        self.depths[depth] += 1

    def problems(self, snap: Snapshot) -> list[str]:
        """No payment confirmed on a transfer that a reorg shallower than the confirmation
        depth later removed: such a transfer never had the confirmations claimed for it."""
        problems = []
        for e in snap.events:
            if e["type"] != "payment.confirmed":
                continue
            payment = json.loads(e["payload"])["data"]["payment"]
            for t in payment["transfers"]:
                depth = self.removed.get(t["block_hash"])
                if (
                    t["status"] == "live"
                    and t["confirmations"] >= payment["confirmations_required"]
                    and depth is not None
                    and depth < self.confirmations
                ):
                    problems.append(
                        f"payment {payment['id']} confirmed on {t['tx_hash']} in block "
                        f"{t['block_number']} {t['block_hash']}, which a reorg of depth {depth} "
                        "removed"
                    )
        return problems
