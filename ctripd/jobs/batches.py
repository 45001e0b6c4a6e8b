"""EIP-7702 batch sweeps (SPEC §16): the gas wallet sends one type-4 transaction that carries the
authorizations of deposits not yet delegated to the treasury's sweep delegate and a
`sweepMany` call over up to `sweep_batch_size` deposits. This module holds what a batch is made
of and how its receipt is read; the sweeper (`jobs.sweeper`) plans, signs and follows it
through the same engine as every other transaction.

An entry counts as swept only by its effect in the receipt: the delegate's `Swept` event at the
deposit for at least the planned amount and, for a token, the token's own Transfer of that
amount from the deposit to the treasury. A deposit re-delegated elsewhere after the batch was
signed (its authorization's nonce is then stale) shows no such effect: the entry fails, and its
payments are planned again, with a fresh authorization.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eth_utils import to_checksum_address

from ctripd.chain import delegate
from ctripd.chain.evm import transfer_logged
from ctripd.chain.fees import Fee
from ctripd.chain.wallet import Wallet
from ctripd.jobs.policy import Entry, Intent
from ctripd.money import to_decimal_string


def authorizations(wallet: Wallet, chain_id: int, intent: Intent) -> list[Any]:
    """The signed authorizations of a batch's entries that need one, all to `intent.to`."""
    return [
        delegate.sign_authorization(
            wallet.private_key(e.index), chain_id, to_checksum_address(intent.to), e.auth_nonce
        )
        for e in intent.entries
        if e.auth_nonce is not None
    ]


def call_data(intent: Intent) -> str:
    return delegate.sweep_many_data(
        [e.address for e in intent.entries], [e.token for e in intent.entries]
    )


def transaction(
    wallet: Wallet, chain_id: int, intent: Intent, nonce: int, gas: int, fee: Fee
) -> dict[str, Any]:
    """The batch's transaction: type 4 with authorizations, type 2 when every deposit is
    already delegated."""
    auths = authorizations(wallet, chain_id, intent)
    tx: dict[str, Any] = {
        "chainId": chain_id,
        "nonce": nonce,
        "to": to_checksum_address(intent.to),
        "value": 0,
        "data": call_data(intent),
        "gas": gas,
        "type": 4 if auths else 2,
        "maxFeePerGas": fee.per_gas,
        "maxPriorityFeePerGas": fee.tip if fee.tip is not None else fee.per_gas,
    }
    if auths:
        tx["authorizationList"] = auths
    return tx


def estimate_params(wallet: Wallet, chain_id: int, intent: Intent) -> dict[str, Any]:
    """eth_estimateGas parameters of the batch (the node needs the signed authorizations)."""
    params: dict[str, Any] = {"from": intent.sender, "to": intent.to, "data": call_data(intent)}
    auths = authorizations(wallet, chain_id, intent)
    if auths:
        params["authorizationList"] = [
            {
                "chainId": hex(a.chain_id),
                "address": to_checksum_address(a.address),
                "nonce": hex(a.nonce),
                "yParity": hex(a.y_parity),
                "r": hex(a.r),
                "s": hex(a.s),
            }
            for a in auths
        ]
    return params


def chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def moved(entry: Entry, planned: int, treasury: str, receipt: dict[str, Any]) -> int | None:
    """What the batch moved from the entry's deposit to `treasury`, or None when the receipt
    does not show at least the planned amount arriving."""
    amount = delegate.swept_amount(receipt, entry.address, entry.token)
    if amount is None or amount < planned:
        return None
    if entry.token is not None and not transfer_logged(
        receipt, entry.token, entry.address, treasury, amount
    ):
        return None
    return amount


def entry_facts(
    sweep: Any, address: str, token: str | None, treasury: str, amount: int, decimals: int
) -> dict[str, Any]:
    """What `payment.swept` tells the merchant about its deposit's part of a batch: the batch
    transaction, the deposit's amount, and the whole batch's fee (paid by the gas wallet)."""
    return {
        "id": sweep["id"],
        "kind": "batch",
        "tx_hash": sweep["tx_hash"],
        "block_number": sweep["block_number"],
        "from": address,
        "to": treasury,
        "token_address": token,
        "amount": to_decimal_string(amount, decimals),
        "amount_base_units": str(amount),
        "fee_base_units": str(int(sweep["fee"])),
        "delegate": sweep["to_address"],
    }
