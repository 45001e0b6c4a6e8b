"""HD wallet: BIP-39/BIP-44 derivation against Anvil's accounts and eth-account, xpub watch-only."""

from __future__ import annotations

import asyncio

import base58
import coincurve
import pytest
from eth_account import Account
from eth_utils import to_checksum_address

from ctripd.chain.wallet import HARDENED, XPUB_VERSION, Wallet, WalletError, _ckd_priv, from_config
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


def test_private_keys_match_addresses(wallet: Wallet) -> None:
    assert wallet.private_key(0).hex() == ANVIL_KEY_0
    for index in (1, 1000, 2**31 - 1):
        assert Account.from_key(wallet.private_key(index)).address == wallet.address(index)


def test_matches_eth_account_reference_derivation(wallet: Wallet) -> None:
    Account.enable_unaudited_hdwallet_features()
    for index in (1000, 1001, 987654):
        reference = Account.from_mnemonic(TEST_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")
        assert wallet.address(index) == reference.address
        assert wallet.private_key(index) == bytes(reference.key)


def test_xpub_is_watch_only_and_derives_the_same(wallet: Wallet) -> None:
    xpub = wallet.xpub()
    assert xpub.startswith("xpub")
    raw = base58.b58decode_check(xpub)
    assert raw[:4] == XPUB_VERSION and raw[4] == 4 and raw[9:13] == bytes(4)
    watch = Wallet.from_xpub(xpub)
    assert watch.watch_only and not wallet.watch_only
    assert watch.xpub() == xpub
    for index in (0, 9, 1000, 2**31 - 1):
        assert watch.address(index) == wallet.address(index)
    with pytest.raises(WalletError, match="watch-only"):
        watch.private_key(1000)


def test_account_level_xpub_is_accepted(wallet: Wallet) -> None:
    """Hardware wallets export m/44'/60'/0'; its public child 0 is the external chain."""
    seed_key, chain_code = _master()
    key = seed_key
    for index in (44 | HARDENED, 60 | HARDENED, 0 | HARDENED):
        parent = key
        key, chain_code = _ckd_priv(key, chain_code, index)
    from ctripd.chain.wallet import _hash160

    raw = (
        XPUB_VERSION
        + bytes([3])
        + _hash160(coincurve.PublicKey.from_valid_secret(parent).format())[:4]
        + HARDENED.to_bytes(4, "big")
        + chain_code
        + coincurve.PublicKey.from_valid_secret(key).format()
    )
    account = Wallet.from_xpub(base58.b58encode_check(raw).decode())
    assert account.xpub() == wallet.xpub()
    assert account.address(1000) == wallet.address(1000)


def _master() -> tuple[bytes, bytes]:
    import hmac

    from mnemonic import Mnemonic

    digest = hmac.digest(b"Bitcoin seed", Mnemonic.to_seed(TEST_MNEMONIC), "sha512")
    return digest[:32], digest[32:]


@pytest.mark.parametrize(
    ("xpub", "problem"),
    [
        ("not-an-xpub", "Base58Check"),
        ("tampered", "Base58Check"),
        ("xprv", "master"),
        ("depth2", "depth 2"),
    ],
)
def test_bad_xpub_refused(xpub: str, problem: str) -> None:
    seed_key, chain_code = _master()
    if xpub == "tampered":
        good = Wallet.from_mnemonic(TEST_MNEMONIC).xpub()
        xpub = good[:-1] + ("5" if good[-1] != "5" else "6")
    elif xpub == "xprv":
        raw = bytes.fromhex("0488ade4") + bytes(9) + chain_code + b"\x00" + seed_key
        xpub, problem = base58.b58encode_check(raw).decode(), "not a mainnet xpub"
    elif xpub == "depth2":
        raw = (
            XPUB_VERSION + bytes([2]) + bytes(8) + chain_code
            + coincurve.PublicKey.from_valid_secret(seed_key).format()
        )  # fmt: skip
        xpub = base58.b58encode_check(raw).decode()
    with pytest.raises(ValueError, match=problem):
        Wallet.from_xpub(xpub)


def test_index_out_of_range(wallet: Wallet) -> None:
    for index in (-1, 2**31):
        with pytest.raises(WalletError, match="out of range"):
            wallet.address(index)
        with pytest.raises(WalletError, match="out of range"):
            wallet.private_key(index)


def test_repr_shows_no_secret(wallet: Wallet) -> None:
    text = repr(wallet) + str(wallet)
    assert ANVIL_KEY_0 not in text and "test test" not in text
    assert wallet._private is not None and wallet._private.hex() not in text
    assert not hasattr(wallet, "__dict__")  # nothing else to dump by accident


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
