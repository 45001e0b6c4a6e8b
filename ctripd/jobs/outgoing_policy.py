"""The signing policy's rules for refunds and payouts (SPEC §12): a `refund` or `payout`
transaction carries out exactly what an authenticated API request recorded, and where approvals
are on, what the operator approved. `jobs.policy` asks `refusal` and refuses what it names.

- A refund goes to the address its request names, in its asset, at most its amount, from its
  payment's deposit address (derived at the index the ledger records) or from the payout
  wallet, only while the request's binding (an HMAC under the wallet's approval key over what
  the request recorded) verifies and its payment still has that much to refund in that asset.
- A payout goes from the payout wallet to the address its request names, in its asset, at
  most its amount, only while its binding verifies and, with `[payouts] require_approval`, the
  operator's approval does too.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

import asyncpg

from ctripd.chain.wallet import Wallet
from ctripd.config import ChainConfig
from ctripd.db import Conn, queries
from ctripd.ledger import payouts, refunds

RQ = queries("refunds")
PQ = queries("payouts")

KINDS = ("refund", "payout")


@dataclass(frozen=True)
class PayoutWallet:
    """Where payouts (and refunds of funds already swept) come from: the gas wallet's account
    at `[payouts] wallet_index`."""

    index: int
    address: str

    @classmethod
    def of(cls, wallet: Wallet, index: int) -> PayoutWallet:
        return cls(index, wallet.gas_address(index))


@dataclass(frozen=True)
class Rules:
    payout: PayoutWallet
    require_approval: bool


def _same(a: str | None, b: str | None) -> bool:
    return (a or "").lower() == (b or "").lower()


def _verifies(wallet: Wallet, text: str, mac: bytes | None) -> bool:
    return mac is not None and hmac.compare_digest(wallet.approve(text), bytes(mac))


async def refusal(
    conn: Conn | asyncpg.Pool,
    chain: ChainConfig,
    wallet: Wallet,
    rules: Rules,
    *,
    kind: str,
    ref: int | None,
    index: int,
    sender: str,
    to: str,
    token: str | None,
    amount: int,
) -> str | None:
    """Why the policy refuses this refund or payout transaction, or None when it allows it."""
    if kind == "refund":
        return await _refund(conn, chain, wallet, rules, ref, index, sender, to, token, amount)
    return await _payout(conn, chain, wallet, rules, ref, index, sender, to, token, amount)


async def _refund(
    conn: Conn | asyncpg.Pool,
    chain: ChainConfig,
    wallet: Wallet,
    rules: Rules,
    ref: int | None,
    index: int,
    sender: str,
    to: str,
    token: str | None,
    amount: int,
) -> str | None:
    row = await conn.fetchrow(RQ["policy_row"], ref) if ref is not None else None
    if row is None or row["status"] not in ("requested", "signed") or row["chain"] != chain.name:
        return f"no open refund {ref} on chain {chain.name}"
    if row["merchant"] != row["payment_merchant"] or row["payment_chain"] != chain.name:
        return f"refund {row['public_id']} is not of its merchant's payment on this chain"
    text = refunds.request_text(
        row["public_id"],
        row["merchant"],
        row["payment_id"],
        row["token_address"],
        row["to_address"],
        int(row["amount"]),
    )
    if not _verifies(wallet, text, row["binding"]):
        return f"the binding of refund {row['public_id']} does not verify"
    if not _same(to, row["to_address"]) or not _same(token, row["token_address"]):
        return f"refund {row['public_id']} names another recipient or asset"
    if amount > int(row["amount"]):
        return f"more than refund {row['public_id']} asked for"
    from_deposit = (sender, index) == (row["address"], row["address_index"])
    if from_deposit and wallet.address(index) != sender:
        return f"index {index} does not derive {sender}"
    if not from_deposit and (index, sender) != (rules.payout.index, rules.payout.address):
        return f"refund {row['public_id']} from {sender}: neither its deposit nor the payout wallet"
    key = token.lower() if token else None
    left = (await refunds.figures(conn, row["payment_id"], excluding=row["id"])).get(key)
    if left is None or left.refundable < int(row["amount"]):
        return f"payment {row['payment_id']} no longer has that much to refund"
    return None


async def _payout(
    conn: Conn | asyncpg.Pool,
    chain: ChainConfig,
    wallet: Wallet,
    rules: Rules,
    ref: int | None,
    index: int,
    sender: str,
    to: str,
    token: str | None,
    amount: int,
) -> str | None:
    row = await conn.fetchrow(PQ["policy_row"], ref) if ref is not None else None
    if row is None or row["status"] not in ("pending", "signed") or row["chain"] != chain.name:
        return f"no open payout {ref} on chain {chain.name}"
    binding = bytes(row["binding"])
    text = payouts.request_text(
        row["public_id"],
        row["merchant"],
        row["chain"],
        row["token_address"],
        row["to_address"],
        int(row["amount"]),
    )
    if not _verifies(wallet, text, binding):
        return f"the binding of payout {row['public_id']} does not verify"
    approval = payouts.approval_text(row["public_id"], binding)
    if rules.require_approval and not _verifies(wallet, approval, row["approval"]):
        return f"payout {row['public_id']} has no valid approval"
    if (index, sender) != (rules.payout.index, rules.payout.address):
        return f"a payout from {sender}, not the payout wallet"
    if not _same(to, row["to_address"]) or not _same(token, row["token_address"]):
        return f"payout {row['public_id']} names another recipient or asset"
    if amount > int(row["amount"]):
        return f"more than payout {row['public_id']} asked for"
    return None
