"""`ctripd dev`: embedded Postgres + a local Anvil + a throw-away wallet, in the foreground.

Everything it makes lives under the state directory (default `.state/dev`). The devnet chain and
its database are fresh on every start; the throw-away mnemonic is kept (mode 0600) so deposit
addresses stay recognisable between runs. It never runs on a public network's chain id.

Payments priced in USD work out of the box: the test tokens are pegged 1:1 to the dollar, and
ETH is quoted by a PriceFeed aggregator deployed on the devnet (answered once, at start).
"""

from __future__ import annotations

import asyncio
import json
import shlex
import sys
from pathlib import Path

import asyncpg
import structlog
import yaml
from eth_utils import to_checksum_address
from mnemonic import Mnemonic

from ctripd import db, embedded
from ctripd.chain.wallet import Wallet
from ctripd.config import PUBLIC_CHAIN_IDS, Config, PayoutsConfig, load_config
from ctripd.dev.devnet import AnvilProcess, start_anvil
from ctripd.dev.pay import dev_pay
from ctripd.dev.tokens import deploy_price_feed, deploy_test_tokens, mint, set_feed_answer
from ctripd.errors import CtripdError
from ctripd.http.app import serve
from ctripd.http.auth import create_key

log = structlog.get_logger(__name__)

DEV_DATABASE = "ctripd_dev"
# What the devnet's gas wallet starts with, for the top-ups of token sweeps.
DEV_GAS_FUNDS = 100 * 10**18
# The devnet's ETH/USD price feed: its answer (8 decimals, as Chainlink's USD feeds).
DEV_ETH_USD = 2000
FEED_DECIMALS = 8
# Its one answer is given at start: it must stay fresh for the whole session.
DEV_RATES_MAX_AGE = 365 * 86400
# What the payout wallet gets of each test token, in whole tokens (and DEV_GAS_FUNDS of coin):
# refunds after a sweep and payouts work out of the box.
DEV_PAYOUT_TOKENS = 1_000_000


class DevError(CtripdError):
    """`ctripd dev` cannot set up its devnet."""


def ensure_mnemonic(state_dir: Path) -> Path:
    """A throw-away mnemonic, generated once, readable by the owner only."""
    path = state_dir / "mnemonic"
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(Mnemonic("english").generate(strength=128) + "\n")
    path.chmod(0o600)
    return path


async def _fresh_database(server_dsn: str) -> str:
    conn = await asyncpg.connect(server_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{DEV_DATABASE}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{DEV_DATABASE}"')
    finally:
        await conn.close()
    return server_dsn.replace("/postgres?", f"/{DEV_DATABASE}?", 1)


def write_dev_config(
    state_dir: Path,
    dsn: str,
    anvil: AnvilProcess,
    chain_id: int,
    port: int,
    tokens: dict[str, tuple[str, int]],
    treasury: str,
    feed: str,
) -> Path:
    config_path = state_dir / "ctripd.toml"
    pegged = [f'[rates.pairs."{symbol}/USD"]\npeg = true' for symbol in tokens]
    config_path.write_text(
        "\n".join(
            [
                "# Written by `ctripd dev` on every start.",
                "[daemon]",
                'state_dir = "."',
                "[server]",
                f"port = {port}",
                "[database]",
                f"dsn = {json.dumps(dsn)}",
                "[wallet]",
                'mnemonic_file = "mnemonic"',
                "[webhooks]",
                "allow_private_targets = true",
                "[log]",
                'level = "info"',
                "# The test tokens are dollars; ETH is quoted by the devnet's price feed, whose",
                "# one answer (given at start) stays fresh for the session.",
                "[rates]",
                f"max_age = {DEV_RATES_MAX_AGE}",
                '[rates.pairs."ETH/USD"]',
                f'sources = ["feed:devnet:{feed}"]',
                "min_sources = 1",
                *pegged,
                "",
            ]
        )
    )
    chains = {
        "chains": [
            {
                "name": "devnet",
                "chain_id": chain_id,
                "rpc": [anvil.url],
                "confirmations": 2,
                "poll_interval": 1,
                "block_time": 2,
                "native": {"symbol": "ETH", "decimals": 18},
                "tokens": {
                    symbol: {"address": address, "decimals": decimals}
                    for symbol, (address, decimals) in tokens.items()
                },
                "treasury": treasury,
                "start_block": 0,
            }
        ]
    }
    (state_dir / "chains.yaml").write_text(yaml.safe_dump(chains, sort_keys=False))
    return config_path


def run_dev(state_dir: Path, chain_id: int, port: int) -> int:
    """Start the devnet, run the daemon until Ctrl-C, then stop everything it started."""
    if chain_id in PUBLIC_CHAIN_IDS:
        raise DevError(f"chain id {chain_id} is a public network; `ctripd dev` uses devnets only")
    state_dir = state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    mnemonic_file = ensure_mnemonic(state_dir)
    embedded.adopt_orphans()
    server = embedded.EmbeddedPostgres.start(state_dir)
    anvil = start_anvil(mnemonic=mnemonic_file.read_text().strip(), chain_id=chain_id, block_time=2)
    try:
        accounts: list[str] = anvil.rpc("eth_accounts")
        wallet = Wallet.from_mnemonic(mnemonic_file.read_text())
        anvil.rpc("anvil_setBalance", [wallet.gas_address(0), hex(DEV_GAS_FUNDS)])
        owner = to_checksum_address(accounts[0])
        tokens = deploy_test_tokens(anvil.url, owner)
        fund_payout_wallet(anvil, wallet, tokens, owner)
        feed = deploy_price_feed(anvil.url, owner, FEED_DECIMALS, "ETH / USD")
        set_feed_answer(anvil.url, feed, owner, DEV_ETH_USD * 10**FEED_DECIMALS)
        dsn = asyncio.run(_fresh_database(server.dsn))
        config_path = write_dev_config(
            state_dir, dsn, anvil, chain_id, port, tokens, to_checksum_address(accounts[1]), feed
        )
        config: Config = load_config(config_path)
        db.migrate(dsn)
        api_key = asyncio.run(_create_api_key(dsn))
        print(banner(config, anvil, tokens, api_key, state_dir), flush=True)
        return serve(config, dsn, server)
    finally:
        anvil.stop()


def fund_payout_wallet(
    anvil: AnvilProcess, wallet: Wallet, tokens: dict[str, tuple[str, int]], minter: str
) -> None:
    """The payout wallet (`[payouts] wallet_index`, default 1) gets coin and every test token."""
    payout = wallet.gas_address(PayoutsConfig().wallet_index)
    anvil.rpc("anvil_setBalance", [payout, hex(DEV_GAS_FUNDS)])
    for address, decimals in tokens.values():
        mint(anvil.url, address, payout, DEV_PAYOUT_TOKENS * 10**decimals, minter)


async def _create_api_key(dsn: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        key, _ = await create_key(conn, "dev", "default")
    finally:
        await conn.close()
    return key


def pay(state_dir: Path, payment_id: str, amount: str | None) -> str:
    """`ctripd dev pay`: pay a payment of the running devnet; returns the transaction hash."""
    config_path = state_dir.resolve() / "ctripd.toml"
    if not config_path.exists():
        raise DevError(f"no devnet under {state_dir}: start `ctripd dev` first")
    return asyncio.run(dev_pay(load_config(config_path), payment_id, amount))


def banner(
    config: Config,
    anvil: AnvilProcess,
    tokens: dict[str, tuple[str, int]],
    api_key: str,
    state_dir: Path,
) -> str:
    api = f"http://{config.server.host}:{config.server.port}"
    token_list = ", ".join(f"{s} {a}" for s, (a, _) in tokens.items())
    chain = config.chains[0].name
    accept = json.dumps([f"{chain}:{s}" for s in ("USDTL", "TD6", "ETH")])
    return "\n".join(
        [
            "ctripd dev — throw-away devnet (all data is reset on the next start)",
            f"  API:      {api}   (docs: {api}/docs)",
            f"  API key:  {api_key}",
            f"  Anvil:    {anvil.url} (chain id {config.chains[0].chain_id}, 2 s blocks)",
            f"  tokens:   {token_list}",
            f"  config:   {config.path}",
            "  stop:     Ctrl-C",
            "",
            "Create a payment:",
            f"  curl -s -X POST {api}/v1/payments -H 'Authorization: Bearer {api_key}' \\",
            "    -H 'Content-Type: application/json' \\",
            f'    -d \'{{"chain": "{chain}", "asset": "ETH", "amount": "0.05"}}\'',
            f"Or priced in dollars (test tokens pegged 1:1, ETH at {DEV_ETH_USD} USD by a price"
            " feed):",
            f"  curl -s -X POST {api}/v1/payments -H 'Authorization: Bearer {api_key}' \\",
            "    -H 'Content-Type: application/json' \\",
            f'    -d \'{{"price": {{"amount": "25.00", "currency": "USD"}}, "accept": {accept}}}\'',
            "Pay it from a funded devnet account, then watch it confirm:",
            f"  {_self_command()} dev --state-dir {state_dir} pay <payment id>",
            f"  curl -s {api}/v1/payments/<payment id> -H 'Authorization: Bearer {api_key}'",
            f"  open {api}/pay/<payment id> in a browser for the checkout page",
        ]
    )


def _self_command() -> str:
    """How this ctripd was started (`.venv/bin/ctripd` under `make dev`), so the printed
    command works as it is, also when `ctripd` is not on PATH."""
    script = Path(sys.argv[0])
    if script.name == "ctripd":
        return shlex.quote(str(script))
    return f"{shlex.quote(sys.executable)} -m ctripd"
