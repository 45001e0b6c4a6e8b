"""HD wallet: BIP-39/BIP-44 derivation against Anvil's accounts and eth-account, xpub watch-only."""

from __future__ import annotations

import asyncio

import pytest
from eth_account import Account
from eth_utils import to_checksum_address

from ctripd.chain.wallet import Wallet, from_config
from ctripd.cli import main as cli
from ctripd.config import ConfigError
from ctripd.dev.devnet import TEST_MNEMONIC
from ctripd.http import auth as apikeys

# Anvil's account 0 private key for the test mnemonic, published in Foundry's docs.
ANVIL_KEY_0 = "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"


@pytest.fixture(scope="module")
def wallet() -> Wallet:
    return Wallet.from_mnemonic(TEST_MNEMONIC)


def test_mnemonic_gives_anvils_accounts(wallet: Wallet, anvil) -> None:  # type: ignore[no-untyped-def]
    accounts = [to_checksum_address(a) for a in anvil.rpc("eth_accounts")[:10]]
    assert len(accounts) == 10
    assert [wallet.address(i) for i in range(10)] == accounts


def test_config_with_xpub_derives_what_the_mnemonic_does(write_config) -> None:  # type: ignore[no-untyped-def]
    signing = from_config(write_config())
    watch = from_config(write_config(toml={"wallet": {"xpub": signing.xpub()}}))
    assert watch.watch_only
    assert [watch.address(i) for i in range(1000, 1010)] == [
        signing.address(i) for i in range(1000, 1010)
    ]


def test_invalid_mnemonic_checksum_is_a_clear_config_error(write_config) -> None:  # type: ignore[no-untyped-def]
    words = " ".join(["test"] * 12)  # all valid words, wrong checksum
    with pytest.raises(ConfigError) as caught:
        from_config(write_config(mnemonic=words))
    assert caught.value.key == "wallet.mnemonic_file"
    assert "checksum" in caught.value.problem and "test" not in caught.value.problem


def test_unknown_word_refused(write_config) -> None:  # type: ignore[no-untyped-def]
    words = TEST_MNEMONIC.replace("junk", "junky")
    with pytest.raises(ConfigError, match="unknown word or bad checksum") as caught:
        from_config(write_config(mnemonic=words))
    assert "junk" not in caught.value.problem


def test_bad_xpub_in_config_names_the_key(write_config) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=r"wallet\.xpub: not a Base58Check"):
        from_config(write_config(toml={"wallet": {"xpub": "xpub123"}}))


async def test_wallet_xpub_command(write_config, capsys) -> None:  # type: ignore[no-untyped-def]
    config = write_config()
    code = await asyncio.to_thread(cli.main, ["--config", config.path, "wallet", "xpub"])
    assert code == 0
    assert capsys.readouterr().out.strip() == Wallet.from_mnemonic(TEST_MNEMONIC).xpub()


async def test_wallet_gas_command(write_config, capsys) -> None:  # type: ignore[no-untyped-def]
    """The gas wallet's own hardened account (m/44'/60'/1'/0/i), as eth-account derives it; the
    former one (the deposit chain's index) is named for the operator."""
    Account.enable_unaudited_hdwallet_features()
    for toml, expected, former in (
        ({}, "m/44'/60'/1'/0/3", "m/44'/60'/0'/0/3"),
        ({"wallet": {"gas_wallet": "deposit-branch"}}, "m/44'/60'/0'/0/3", None),
    ):
        config = write_config(toml={"wallet": {"gas_wallet_index": 3, **toml.get("wallet", {})}})
        code = await asyncio.to_thread(cli.main, ["--config", config.path, "wallet", "gas"])
        assert code == 0
        out, err = capsys.readouterr()
        assert out.strip() == Account.from_mnemonic(TEST_MNEMONIC, account_path=expected).address
        if former is None:
            assert err == ""
        else:
            address = Account.from_mnemonic(TEST_MNEMONIC, account_path=former).address
            assert f"former gas wallet {address}" in err


async def test_watch_only_daemon_creates_payments_at_the_mnemonics_addresses(
    write_config, make_client, pool
) -> None:  # type: ignore[no-untyped-def]
    signing = Wallet.from_mnemonic(TEST_MNEMONIC)
    client = await make_client(write_config(toml={"wallet": {"xpub": signing.xpub()}}))
    async with pool.acquire() as conn:
        key, _ = await apikeys.create_key(conn, "w", "default")
    resp = await client.post(
        "/v1/payments",
        json={"chain": "anvil", "asset": "ETH", "amount": "1"},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert resp.status == 201, await resp.text()
    body = await resp.json()
    index = await pool.fetchval("SELECT address_index FROM payments WHERE id = $1", body["id"])
    assert index >= 1000
    assert body["address"] == signing.address(index)
