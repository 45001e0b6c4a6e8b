"""The sweep delegate (contracts/SweepDelegate.sol, EIP-7702): its committed artifact, the code a
deployment for a treasury must have, the call data and logs ctripd uses, and whether a chain
accepts EIP-7702 at all.

A deposit address delegated to it can only have its whole balance of a token (or of the native
coin) moved to the treasury written in the delegate's code. The artifact is rebuilt by
`make delegate`; ctripd needs no compiler at run time.
"""

from __future__ import annotations

import importlib.resources
import json
from functools import cache
from typing import Any

from eth_account import Account
from eth_hash.auto import keccak
from eth_typing import HexAddress, HexStr
from web3.types import Nonce
from web3.utils.address import get_create_address

from ctripd.chain.rpc import RpcClient, RpcNodeError

ARTIFACT = importlib.resources.files(__package__).joinpath("contracts", "SweepDelegate.json")
# EIP-7702: the code of a delegated account is this prefix and the delegate's address.
DELEGATION_PREFIX = "0xef0100"
NATIVE = "0x" + "00" * 20
SWEEP_MANY_SELECTOR = keccak(b"sweepMany(address[],address[])")[:4].hex()
SWEPT_TOPIC = "0x" + keccak(b"Swept(address,uint256)").hex()
# A fixed throw-away key whose authorization the support probe estimates (never funded).
_PROBE_KEY = keccak(b"ctripd eip-7702 probe")


@cache
def _artifact() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(ARTIFACT.read_text())
    return loaded


def _word(value: int | str) -> str:
    if isinstance(value, str):
        return value.lower().removeprefix("0x").rjust(64, "0")
    return f"{value:064x}"


def creation_data(treasury: str) -> str:
    """The deployment transaction's data: creation code and the constructor's treasury."""
    return str(_artifact()["bytecode"]) + _word(treasury)


def runtime_code(treasury: str) -> str:
    """The code a delegate deployed for `treasury` has: the compiled runtime code with the
    treasury written where the immutable sits."""
    code = bytearray(bytes.fromhex(str(_artifact()["runtime"])[2:]))
    word = bytes.fromhex(_word(treasury))
    for offset in _artifact()["treasury_offsets"]:
        code[offset : offset + 32] = word
    return "0x" + code.hex()


def code_hash(code: str) -> str:
    return "0x" + keccak(bytes.fromhex(code.removeprefix("0x"))).hex()


def is_delegate_for(code: str | None, treasury: str) -> bool:
    """Whether `code` (from eth_getCode) is the delegate's, sweeping to `treasury`."""
    return code is not None and code_hash(code) == code_hash(runtime_code(treasury))


def delegation_code(delegate: str) -> str:
    """The code of an account delegated to `delegate`."""
    return DELEGATION_PREFIX + delegate.lower().removeprefix("0x")


def delegated_to(code: str | None) -> str | None:
    """The address an account's code delegates to, or None (no code, or a contract's own)."""
    if code is None or not code.lower().startswith(DELEGATION_PREFIX) or len(code) != 48:
        return None
    return "0x" + code[len(DELEGATION_PREFIX) :].lower()


def create_address(sender: str, nonce: int) -> str:
    """The address of the contract `sender` creates with `nonce` (lower case)."""
    return get_create_address(HexAddress(HexStr(sender)), Nonce(nonce)).lower()


def sweep_many_data(deposits: list[str], tokens: list[str | None]) -> str:
    """Call data of `sweepMany(deposits, tokens)`; a None token is the native coin."""
    n = len(deposits)
    head = _word(64) + _word(64 + 32 * (n + 1))

    def array(items: list[str]) -> str:
        return _word(n) + "".join(_word(a) for a in items)

    return (
        "0x"
        + SWEEP_MANY_SELECTOR
        + head
        + array(deposits)
        + array([t if t is not None else NATIVE for t in tokens])
    )


def swept_topics(token: str | None) -> list[str]:
    """The topics of the delegate's `Swept` event for `token` (None: the native coin)."""
    return [SWEPT_TOPIC, "0x" + _word(token if token is not None else NATIVE)]


def swept_amount(receipt: dict[str, Any], deposit: str, token: str | None) -> int | None:
    """The amount the delegate's `Swept` event at `deposit` reports for `token`, or None."""
    for entry in receipt.get("logs") or []:
        topics = [t.lower() for t in entry.get("topics") or []]
        if (
            topics == swept_topics(token)
            and str(entry.get("address", "")).lower() == deposit.lower()
        ):
            return int(entry.get("data") or "0x0", 16)
    return None


def sign_authorization(key: bytes, chain_id: int, delegate: str, nonce: int) -> Any:
    """An EIP-7702 authorization by `key`'s account to run `delegate`'s code."""
    return Account.sign_authorization(
        {"chainId": chain_id, "address": delegate, "nonce": nonce}, key
    )


async def supports_7702(rpc: RpcClient, chain_id: int) -> bool:
    """Whether the chain accepts type-4 transactions: an eth_estimateGas of one carrying a
    throw-away authorization. A node that answers with an error does not; a node that cannot be
    reached raises (RpcError)."""
    auth = sign_authorization(_PROBE_KEY, chain_id, NATIVE, 0)
    probe = Account.from_key(_PROBE_KEY).address
    item = {
        "chainId": hex(chain_id),
        "address": NATIVE,
        "nonce": "0x0",
        "yParity": hex(auth.y_parity),
        "r": hex(auth.r),
        "s": hex(auth.s),
    }
    try:
        await rpc.call(
            "eth_estimateGas", [{"from": probe, "to": probe, "authorizationList": [item]}]
        )
    except RpcNodeError:
        return False
    return True
