"""The committed test contracts, deployed and exercised on a real Anvil."""

from __future__ import annotations

import pytest
from web3 import Web3

from ctripd.dev import tokens as devtokens
from ctripd.dev.devnet import AnvilProcess

DEPLOYER = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"  # Anvil account 0
ALICE = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"  # Anvil account 1
BOB = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"  # Anvil account 2
TRANSFER_TOPIC = Web3.keccak(text="Transfer(address,address,uint256)").to_0x_hex()


def _topic(address: str) -> str:
    return "0x" + address.lower().removeprefix("0x").rjust(64, "0")


def _call(anvil: AnvilProcess, to: str, contract: str, fn: str, *args: object) -> str:
    data = Web3().eth.contract(abi=devtokens.abi(contract)).encode_abi(fn, args=list(args))
    result: str = anvil.rpc("eth_call", [{"from": DEPLOYER, "to": to, "data": data}, "latest"])
    return result


def _balance(anvil: AnvilProcess, address: str) -> int:
    return int(anvil.rpc("eth_getBalance", [address, "latest"]), 16)


@pytest.mark.parametrize(
    ("kind", "contract", "symbol", "decimals"),
    [
        ("erc20_18", "TestToken", "TD18", 18),
        ("erc20_6", "TestToken", "TD6", 6),
        ("usdt", "UsdtLikeToken", "USDTL", 6),
    ],
)
def test_token_deploys_with_symbol_and_decimals(
    anvil: AnvilProcess, kind: str, contract: str, symbol: str, decimals: int
) -> None:
    address = devtokens.deploy_token(anvil.url, kind, DEPLOYER)
    assert address == Web3.to_checksum_address(address)
    token = Web3(Web3.HTTPProvider(anvil.url)).eth.contract(
        address=address, abi=devtokens.abi(contract)
    )
    assert token.functions.symbol().call() == symbol
    assert token.functions.decimals().call() == decimals
    assert token.functions.totalSupply().call() == 0


def test_deploy_test_tokens_returns_config_shape(anvil: AnvilProcess) -> None:
    tokens = devtokens.deploy_test_tokens(anvil.url, DEPLOYER)
    assert {symbol: dec for symbol, (_, dec) in tokens.items()} == {
        "TD18": 18,
        "TD6": 6,
        "USDTL": 6,
    }
    assert len({address for address, _ in tokens.values()}) == 3


@pytest.mark.parametrize("kind", ["erc20_18", "erc20_6", "usdt"])
def test_mint_and_transfer_move_balances_and_log(anvil: AnvilProcess, kind: str) -> None:
    token = devtokens.deploy_token(anvil.url, kind, DEPLOYER)
    devtokens.mint(anvil.url, token, ALICE, 1_000_000, DEPLOYER)
    assert devtokens.token_balance(anvil.url, token, ALICE) == 1_000_000

    tx_hash = devtokens.token_transfer(anvil.url, token, ALICE, BOB, 250_000)

    assert devtokens.token_balance(anvil.url, token, ALICE) == 750_000
    assert devtokens.token_balance(anvil.url, token, BOB) == 250_000
    receipt = anvil.rpc("eth_getTransactionReceipt", [tx_hash])
    assert receipt["status"] == "0x1"
    [log] = receipt["logs"]
    assert log["address"].lower() == token.lower()
    assert log["topics"] == [TRANSFER_TOPIC, _topic(ALICE), _topic(BOB)]
    assert int(log["data"], 16) == 250_000


def test_transfer_return_data_differs_between_erc20_and_usdt(anvil: AnvilProcess) -> None:
    usdt = devtokens.deploy_token(anvil.url, "usdt", DEPLOYER)
    erc20 = devtokens.deploy_token(anvil.url, "erc20_6", DEPLOYER)
    for token in (usdt, erc20):
        devtokens.mint(anvil.url, token, DEPLOYER, 10, DEPLOYER)

    assert _call(anvil, usdt, "UsdtLikeToken", "transfer", BOB, 1) == "0x"
    assert int(_call(anvil, erc20, "TestToken", "transfer", BOB, 1), 16) == 1  # ABI bool true


def test_forwarder_pays_targets_by_internal_calls(anvil: AnvilProcess) -> None:
    forwarder = devtokens.deploy_forwarder(anvil.url, DEPLOYER)
    contract = Web3(Web3.HTTPProvider(anvil.url)).eth.contract(
        address=forwarder, abi=devtokens.abi("Forwarder")
    )
    alice_before, bob_before = _balance(anvil, ALICE), _balance(anvil, BOB)

    for call, value in (
        (contract.functions.forward(ALICE), 10**18),
        (contract.functions.forwardTwice(ALICE, BOB), 3),
    ):
        anvil.receipt(call.transact({"from": DEPLOYER, "value": value}).to_0x_hex())

    assert _balance(anvil, ALICE) == alice_before + 10**18 + 1
    assert _balance(anvil, BOB) == bob_before + 2  # the odd wei goes to the second target
    assert _balance(anvil, forwarder) == 0


def test_revert_after_send_leaves_target_unpaid(anvil: AnvilProcess) -> None:
    forwarder = devtokens.deploy_forwarder(anvil.url, DEPLOYER)
    data = (
        Web3()
        .eth.contract(abi=devtokens.abi("Forwarder"))
        .encode_abi("revertAfterSend", args=[BOB])
    )
    bob_before = _balance(anvil, BOB)

    # Explicit gas: estimation would fail on the revert and the tx would never be sent.
    tx_hash = anvil.rpc(
        "eth_sendTransaction",
        [{"from": DEPLOYER, "to": forwarder, "value": hex(10**18), "data": data, "gas": "0x30000"}],
    )

    receipt = anvil.receipt(tx_hash)
    assert receipt["status"] == "0x0"
    assert _balance(anvil, BOB) == bob_before
    assert _balance(anvil, forwarder) == 0
