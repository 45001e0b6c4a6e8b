"""Benchmark: sweeping 100 USDT-like token deposits and 100 native deposits, in top-up mode and in
EIP-7702 mode, in one run.

    .venv/bin/python -m bench.sweeps [--deposits 100]

Each mode gets a fresh Anvil (Prague; the bench mines a block after each sweeper round, with
`confirmations: 2`) and a fresh database (CTRIPD_TEST_DSN's server, else
an embedded pgserver). Payments are inserted as confirmed, each with the transfer (a mint or a
coin transfer on the node) that paid it; then the chain's `Sweeper.run_once()` runs, one block
mined after each round, until every payment is swept and nothing is in flight. Figures per asset:
transactions sent, total gas and gas per deposit, what the gas wallet spent, native wei left on
the deposit addresses, and wall time from the first round to the last payment swept. A last
figure measures native deposits swept through the delegate directly (what ctripd does not do:
see README, "Gas-less sweeps").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import aiohttp
import asyncpg
from eth_account import Account
from eth_utils import to_checksum_address

from ctripd import db
from ctripd.chain import delegate
from ctripd.chain.rpc import RpcClient
from ctripd.chain.wallet import Wallet
from ctripd.config import ChainConfig, NativeAsset, Token
from ctripd.dev import tokens as devtokens
from ctripd.dev.devnet import TEST_MNEMONIC, AnvilProcess, start_anvil
from ctripd.jobs.sweeper import Sweeper

FUNDER = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
TREASURY = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
WALLET = Wallet.from_mnemonic(TEST_MNEMONIC)
ETH = 10**18


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    if dsn := os.environ.get("CTRIPD_TEST_DSN"):
        yield dsn
        return
    import pgserver

    data_dir = tempfile.mkdtemp(prefix="ctbench")
    server = pgserver.get_server(data_dir, cleanup_mode="stop")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(data_dir, ignore_errors=True)


@contextlib.asynccontextmanager
async def database(server: str) -> AsyncIterator[str]:
    name = f"ctripd_bench_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(server)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    dsn = urlparse(server)._replace(path=f"/{name}").geturl()
    await asyncio.to_thread(db.migrate, dsn)
    try:
        yield dsn
    finally:
        conn = await asyncpg.connect(server)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


@dataclass
class Figures:
    mode: str
    txs: dict[str, int] = field(default_factory=dict)
    gas: dict[str, int] = field(default_factory=dict)
    gas_wallet_spend: dict[str, int] = field(default_factory=dict)
    left_wei: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


async def insert_payment(
    pool: asyncpg.Pool, index: int, token: str | None, amount: int, receipt: dict[str, Any]
) -> str:
    payment_id = f"pay_bench{index}"
    log_index = -1
    if token is not None:
        log_index = int(receipt["logs"][0]["logIndex"], 16)
    address = WALLET.address(index)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO payments (id, merchant, chain, chain_id, asset, token_address,"
            " decimals, amount, address, address_index, status, amount_received,"
            " amount_confirmed, confirmations_required, expires_at, detected_at,"
            " confirmed_at) VALUES ($1, 'default', 'anvil', 31337, $2, $3, $4, $5, $6, $7,"
            " 'confirmed', $5, $5, 2, now() + interval '1 hour', now(), now())",
            payment_id,
            "USDTL" if token else "ETH",
            token,
            6 if token else 18,
            amount,
            address,
            index,
        )
        await conn.execute(
            "INSERT INTO transfers (chain, tx_hash, kind, log_index, payment_id, token_address,"
            " from_address, to_address, amount, block_number, block_hash)"
            " VALUES ('anvil', $1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            receipt["transactionHash"],
            "token" if token else "native",
            log_index,
            payment_id,
            token,
            FUNDER,
            address,
            amount,
            int(receipt["blockNumber"], 16),
            receipt["blockHash"],
        )
    return payment_id


async def run_mode(server: str, mode: str, deposits: int) -> Figures:
    anvil = start_anvil()
    try:
        return await _run_mode(server, anvil, mode, deposits)
    finally:
        anvil.stop()


async def _run_mode(server: str, anvil: AnvilProcess, mode: str, deposits: int) -> Figures:
    token = devtokens.deploy_token(anvil.url, "usdt", FUNDER)
    chain = ChainConfig(
        name="anvil",
        chain_id=31337,
        rpc=[anvil.url],
        native=NativeAsset("ETH"),
        treasury=TREASURY,
        confirmations=2,
        poll_interval=1.0,
        tokens={"USDTL": Token("USDTL", token, 6)},
        sweep_mode=mode,
        sweep_batch_size=100,
    )
    gas = WALLET.gas_address(0)
    anvil.rpc("anvil_setBalance", [gas, hex(1000 * ETH)])
    async with database(server) as dsn:
        pool = await db.create_pool(dsn, min_size=1, max_size=4)
        await pool.execute(db.queries("chains")["upsert_chain"], "anvil", 31337)
        kinds: dict[str, str] = {}
        for i in range(deposits):
            index = 2000 + i
            devtokens.mint(anvil.url, token, WALLET.address(index), 25 * 10**6 + i, FUNDER)
            receipt = anvil.rpc(
                "eth_getTransactionReceipt",
                [anvil.rpc("eth_getBlockByNumber", ["latest", False])["transactions"][0]],
            )
            kinds[await insert_payment(pool, index, token, 25 * 10**6 + i, receipt)] = "token"
            index = 3000 + i
            tx_hash = anvil.rpc(
                "eth_sendTransaction",
                [{"from": FUNDER, "to": WALLET.address(index), "value": hex(ETH // 10 + i)}],
            )
            receipt = anvil.receipt(tx_hash)
            kinds[await insert_payment(pool, index, None, ETH // 10 + i, receipt)] = "native"
        anvil.rpc("evm_mine")
        gas_before = int(anvil.rpc("eth_getBalance", [gas, "latest"]), 16)
        figures = Figures(mode)
        async with aiohttp.ClientSession() as session:
            rpc = RpcClient("anvil", [anvil.url], session)
            sweeper = Sweeper(chain, dsn, pool, rpc, WALLET, 0, operator_url=False)
            start = time.monotonic()
            try:
                for _ in range(60):
                    await sweeper.run_once()
                    anvil.rpc("evm_mine")
                    rows = await pool.fetch(
                        "SELECT id, amount_confirmed <= sweep_covered AS done FROM payments"
                    )
                    for kind in ("token", "native"):
                        if kind not in figures.seconds and all(
                            r["done"] for r in rows if kinds[r["id"]] == kind
                        ):
                            figures.seconds[kind] = time.monotonic() - start
                    busy = await pool.fetchval(
                        "SELECT count(*) FROM sweeps WHERE status IN ('signed', 'broadcast')"
                    )
                    if len(figures.seconds) == 2 and not busy:
                        break
            finally:
                await sweeper.close()
        sweeps = await pool.fetch("SELECT * FROM sweeps WHERE block_number IS NOT NULL")
        # Attribute each mined transaction to an asset: what it swept (or topped up for).
        links = await pool.fetch("SELECT sweep_id, payment_id FROM sweep_payments")
        asset_of: dict[int, str] = {}
        for link in links:
            asset_of[link["sweep_id"]] = kinds[link["payment_id"]]
        for s in sweeps:
            asset = asset_of.get(s["id"], "token")  # deploy, change: the token path's
            figures.txs[asset] = figures.txs.get(asset, 0) + 1
            figures.gas[asset] = figures.gas.get(asset, 0) + int(s["gas_used"])
            if s["from_address"] == gas:
                spend = int(s["fee"]) + int(s["amount"]) * (s["kind"] == "gas_topup")
                figures.gas_wallet_spend[asset] = figures.gas_wallet_spend.get(asset, 0) + spend
        gas_after = int(anvil.rpc("eth_getBalance", [gas, "latest"]), 16)
        assert gas_before - gas_after == sum(figures.gas_wallet_spend.values())
        for kind, base in (("token", 2000), ("native", 3000)):
            figures.left_wei[kind] = sum(
                int(anvil.rpc("eth_getBalance", [WALLET.address(base + i), "latest"]), 16)
                for i in range(deposits)
            )
        await pool.close()
    return figures


def native_through_delegate(deposits: int) -> int:
    """Gas per native deposit swept by one batch through a delegate (authorizations included):
    the alternative to the self-paid native sweep, measured, not used."""
    anvil = start_anvil()
    try:
        gas = Account.create()
        anvil.rpc("anvil_setBalance", [gas.address, hex(10 * ETH)])
        fee = {"maxFeePerGas": 10**10, "maxPriorityFeePerGas": 1, "chainId": 31337}
        deploy = gas.sign_transaction(
            {"type": 2, "nonce": 0, "value": 0, "gas": 1_000_000, **fee}
            | {"data": delegate.creation_data(TREASURY)}
        )
        receipt = anvil.receipt(
            anvil.rpc("eth_sendRawTransaction", [deploy.raw_transaction.to_0x_hex()])
        )
        address = receipt["contractAddress"]
        keys = [Account.create() for _ in range(deposits)]
        for k in keys:
            anvil.rpc("anvil_setBalance", [k.address, hex(ETH // 10)])
        auths = [delegate.sign_authorization(k.key, 31337, address, 0) for k in keys]
        data = delegate.sweep_many_data([k.address for k in keys], [None] * deposits)
        batch = gas.sign_transaction(
            {"type": 4, "nonce": 1, "value": 0, "gas": 15_000_000, "data": data, **fee}
            | {"to": to_checksum_address(address), "authorizationList": auths}
        )
        receipt = anvil.receipt(
            anvil.rpc("eth_sendRawTransaction", [batch.raw_transaction.to_0x_hex()])
        )
        assert all(int(anvil.rpc("eth_getBalance", [k.address, "latest"]), 16) == 0 for k in keys)
        return int(receipt["gasUsed"], 16) // deposits
    finally:
        anvil.stop()


def table(results: list[Figures], deposits: int) -> str:
    lines = [
        "| | " + " | ".join(f"{f.mode}: {a}" for f in results for a in ("token", "native")) + " |",
        "| --- |" + " --- |" * (2 * len(results)),
    ]

    def row(label: str, value: Any) -> str:
        cells = [value(f, a) for f in results for a in ("token", "native")]
        return f"| {label} | " + " | ".join(cells) + " |"

    lines.append(row("transactions sent", lambda f, a: f"{f.txs.get(a, 0):,}"))
    lines.append(row("total gas", lambda f, a: f"{f.gas.get(a, 0):,}"))
    lines.append(row("gas per deposit", lambda f, a: f"{f.gas.get(a, 0) // deposits:,}"))
    lines.append(row("gas-wallet spend (wei)", lambda f, a: f"{f.gas_wallet_spend.get(a, 0):,}"))
    lines.append(row("native wei left on deposits", lambda f, a: f"{f.left_wei.get(a, 0):,}"))
    lines.append(
        row("wall time confirmed→swept", lambda f, a: f"{f.seconds.get(a, float('nan')):.2f} s")
    )
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deposits", type=int, default=100)
    args = parser.parse_args()
    with postgres_server() as server:
        results = [await run_mode(server, mode, args.deposits) for mode in ("topup", "eip7702")]
    print(table(results, args.deposits))
    topup, eip = results
    ratio = (eip.gas["token"] / args.deposits) / (topup.gas["token"] / args.deposits)
    print(f"token gas per deposit, eip7702 ÷ topup: {ratio:.3f} (target ≤ 0.85)")
    print(f"token transactions in eip7702 mode: {eip.txs['token']} (target ≤ 3)")
    print(
        "native through the delegate instead (measured, not used): "
        f"{native_through_delegate(args.deposits):,} gas per deposit"
    )


if __name__ == "__main__":
    asyncio.run(main())
