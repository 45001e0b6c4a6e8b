"""Deploy and drive the test contracts (sources in `contracts/`) on a dev node (Anvil).

Set-up code for `ctripd dev` and the test suite: it sends from unlocked accounts with
`eth_sendTransaction`, so it needs a node that holds the sender's key, as Anvil does for its
mnemonic accounts. The compiled artifacts are committed (rebuilt by `make tokens`), so no
compiler is needed at run time.
"""

from __future__ import annotations

import importlib.resources
import json
from functools import cache
from typing import Any, NamedTuple

from eth_typing import ChecksumAddress
from hexbytes import HexBytes
from web3 import Web3
from web3.contract import Contract

BUILD_DIR = importlib.resources.files(__package__).joinpath("contracts", "build")


class TokenSpec(NamedTuple):
    contract: str
    name: str
    symbol: str
    decimals: int


TOKEN_KINDS: dict[str, TokenSpec] = {
    "erc20_18": TokenSpec("TestToken", "Test Dollar 18", "TD18", 18),
    "erc20_6": TokenSpec("TestToken", "Test Dollar 6", "TD6", 6),
    # UsdtLikeToken has its 6 decimals built in; its constructor takes no decimals.
    "usdt": TokenSpec("UsdtLikeToken", "Tether-like", "USDTL", 6),
}


def _artifact(name: str, ext: str) -> str:
    """Read build/<file>_sol_<contract>.<ext>, as solcjs names it (one contract per file)."""
    return BUILD_DIR.joinpath(f"{name}_sol_{name}.{ext}").read_text()


@cache
def abi(name: str) -> list[dict[str, Any]]:
    """The ABI of a test contract ("TestToken", "UsdtLikeToken", "Forwarder", "FalseToken",
    "PriceFeed")."""
    loaded: list[dict[str, Any]] = json.loads(_artifact(name, "abi"))
    return loaded


@cache
def _web3(rpc_url: str) -> Web3:
    """One client per node, reused across the many calls a test set-up makes."""
    return Web3(Web3.HTTPProvider(rpc_url))


def _token(rpc_url: str, token: str) -> Contract:
    # Both token contracts share the ERC-20 functions used here; only return data differs,
    # and transactions never decode it.
    return _web3(rpc_url).eth.contract(
        address=Web3.to_checksum_address(token), abi=abi("TestToken")
    )


def _wait_ok(rpc_url: str, tx_hash: HexBytes, what: str) -> ChecksumAddress | None:
    """Wait for the receipt and fail loudly on a revert; returns the created contract, if any."""
    receipt = _web3(rpc_url).eth.wait_for_transaction_receipt(tx_hash, timeout=30)
    if receipt["status"] != 1:
        raise RuntimeError(f"{what} reverted: {tx_hash.to_0x_hex()}")
    created: ChecksumAddress | None = receipt.get("contractAddress")
    return created


def _deploy(rpc_url: str, name: str, deployer: str, *args: Any) -> str:
    factory = _web3(rpc_url).eth.contract(abi=abi(name), bytecode=_artifact(name, "bin"))
    tx_hash = factory.constructor(*args).transact({"from": Web3.to_checksum_address(deployer)})
    address = _wait_ok(rpc_url, tx_hash, f"deploy {name}")
    if address is None:
        raise RuntimeError(f"deploy {name}: receipt has no contract address")
    return Web3.to_checksum_address(address)


def deploy_token(rpc_url: str, kind: str, deployer: str) -> str:
    """Deploy one test token ("erc20_18", "erc20_6" or "usdt"); returns its checksummed address."""
    spec = TOKEN_KINDS[kind]
    args: tuple[Any, ...] = (spec.name, spec.symbol)
    if spec.contract == "TestToken":
        args += (spec.decimals,)
    return _deploy(rpc_url, spec.contract, deployer, *args)


def deploy_test_tokens(rpc_url: str, deployer: str) -> dict[str, tuple[str, int]]:
    """Deploy every test token: symbol → (address, decimals), as a chain's token config wants."""
    return {
        spec.symbol: (deploy_token(rpc_url, kind, deployer), spec.decimals)
        for kind, spec in TOKEN_KINDS.items()
    }


def deploy_false_token(rpc_url: str, deployer: str) -> str:
    """Deploy the FalseToken (6 decimals), whose `transfer` returns false and moves nothing."""
    return _deploy(rpc_url, "FalseToken", deployer)


def deploy_forwarder(rpc_url: str, deployer: str) -> str:
    """Deploy the Forwarder, which pays native coin by internal calls (seen only in traces)."""
    return _deploy(rpc_url, "Forwarder", deployer)


def mint(rpc_url: str, token: str, to: str, amount: int, sender: str) -> None:
    """Mint `amount` base units to `to`; anyone may mint a test token. Waits until mined."""
    fn = _token(rpc_url, token).functions.mint(Web3.to_checksum_address(to), amount)
    tx_hash = fn.transact({"from": Web3.to_checksum_address(sender)})
    _wait_ok(rpc_url, tx_hash, "mint")


def token_transfer(
    rpc_url: str, token: str, sender: str, to: str, amount: int, *, wait: bool = True
) -> str:
    """Transfer from an unlocked account; returns the 0x tx hash.

    wait=False only sends, for nodes that mine on demand (`--no-mining`, then `evm_mine`).
    """
    fn = _token(rpc_url, token).functions.transfer(Web3.to_checksum_address(to), amount)
    tx_hash = fn.transact({"from": Web3.to_checksum_address(sender)})
    if wait:
        _wait_ok(rpc_url, tx_hash, "token transfer")
    return tx_hash.to_0x_hex()


def spray(rpc_url: str, token: str, sender: str, to: str, amount: int, count: int) -> str:
    """`count` transfers of `amount` base units from an unlocked account to `to`, in one
    transaction of TestToken (as a spammer sends dust); returns the 0x tx hash once mined."""
    fn = _token(rpc_url, token).functions.spray(Web3.to_checksum_address(to), amount, count)
    tx_hash = fn.transact({"from": Web3.to_checksum_address(sender)})
    _wait_ok(rpc_url, tx_hash, "spray")
    return tx_hash.to_0x_hex()


def token_balance(rpc_url: str, token: str, owner: str) -> int:
    """balanceOf(owner) in base units at the latest block."""
    balance: int = (
        _token(rpc_url, token).functions.balanceOf(Web3.to_checksum_address(owner)).call()
    )
    return balance


def deploy_price_feed(rpc_url: str, deployer: str, decimals: int, description: str) -> str:
    """Deploy a PriceFeed (a Chainlink-style aggregator the deployer sets answers of)."""
    return _deploy(rpc_url, "PriceFeed", deployer, decimals, description)


def set_feed_answer(rpc_url: str, feed: str, sender: str, answer: int, updated_at: int = 0) -> None:
    """A new round of the feed: `answer` (in its decimals), updated at `updated_at` (unix time;
    0: the block's). Waits until mined."""
    contract = _web3(rpc_url).eth.contract(
        address=Web3.to_checksum_address(feed), abi=abi("PriceFeed")
    )
    tx_hash = contract.functions.setAnswer(answer, updated_at).transact(
        {"from": Web3.to_checksum_address(sender)}
    )
    _wait_ok(rpc_url, tx_hash, "set feed answer")
