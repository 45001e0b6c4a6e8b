"""HD wallet derivation, pure: BIP-39/BIP-44 against eth-account, xpub watch-only, bad input."""

from __future__ import annotations

import base58
import coincurve
import pytest
from eth_account import Account

from ctripd.chain.wallet import HARDENED, XPUB_VERSION, Wallet, WalletError, _ckd_priv
from ctripd.dev.devnet import TEST_MNEMONIC

# Anvil's account 0 private key for the test mnemonic, published in Foundry's docs.
ANVIL_KEY_0 = "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"


@pytest.fixture(scope="module")
def wallet() -> Wallet:
    return Wallet.from_mnemonic(TEST_MNEMONIC)


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
