"""The signing policy: what the sweeper may sign, checked against the config and the ledger at
the moment it signs, never against the row it signs from (SPEC §12). Database write access
alone must not move funds: a row that asks for anything else is refused.

- A sweep (`native`, `token`) goes from a deposit address, derived at the index the ledger
  records for a payment with an asset on this chain at that address (its own, or an option of
  one priced in fiat), only to the treasury of that payment's merchant on this chain: its own,
  while the payment's binding to that merchant (made by the API at creation) and the approval
  the operator's CLI made for the treasury both verify under the wallet's approval key, else
  the chain's. An unbound payment (rewritten merchant, or made by a watch-only API) goes to the
  chain's treasury. Native coin at a token payment's address (the change of gas top-ups, the
  operator's) may also go to the chain's treasury. A token sweep only moves a configured token
  that a payment at that address is in.
- A gas top-up goes only from the gas wallet (or the former one, for a top-up it had in flight),
  only to the deposit address of a confirmed payment with a token asset on this chain, and at
  most the gas a token transfer may use (`TOPUP_GAS_CEILING`) at the chain's fee cap.
- A recovery (`recover`) carries out an operator's request exactly: from the payment's deposit
  address to the address the request names, at most the amount it names, only while the
  request's approval verifies under the wallet's approval key (which only the mnemonic gives)
  and the payment still holds that much in that asset.
- A refund or payout carries out exactly what an authenticated request recorded (and the
  operator approved, where approvals are on): `jobs.outgoing_policy`.
- With the gas wallet on its own account, what is left in the former one (the deposit chain's
  index `gas_wallet_index`) may go, as a native sweep, only to the treasury.
- EIP-7702 (SPEC §16): a `deploy` goes only from the gas wallet and creates the sweep delegate
  for the chain's treasury or a merchant's approved one on this chain. A `batch` goes only from
  the gas wallet to the delegate recorded for a treasury, whose code this process has read on
  chain and found to be the committed delegate's sweeping to that treasury; every deposit it
  sweeps (and authorizes to that delegate) is derived at the index the ledger records and holds
  a confirmed payment with that asset on this chain whose treasury is that one.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

import asyncpg

from ctripd.chain import delegate
from ctripd.chain.wallet import Wallet
from ctripd.config import ChainConfig
from ctripd.db import Conn, queries
from ctripd.errors import CtripdError
from ctripd.jobs import outgoing_policy
from ctripd.ledger import recoveries
from ctripd.ledger.merchants import binding_text, treasury_text

Q = queries("policy")

KINDS = ("native", "token", "gas_topup", "recover", "deploy", "batch", *outgoing_policy.KINDS)
# Kinds whose transaction sends no value (a contract creation, a call).
NO_VALUE = ("deploy", "batch")
# More gas than any ERC-20 transfer of a configured token needs; bounds a top-up's value.
TOPUP_GAS_CEILING = 300_000


class PolicyRefusal(CtripdError):
    """A transaction outside the signing policy; nothing was signed."""


@dataclass(frozen=True)
class Entry:
    """One deposit a batch sweeps: its whole balance of `token` (None: native coin), with an
    authorization to the delegate signed at `auth_nonce` (None: already delegated to it)."""

    address: str
    index: int
    token: str | None
    auth_nonce: int | None


@dataclass(frozen=True)
class Intent:
    """One transaction to sign, as the policy sees it."""

    kind: str
    index: int
    sender: str
    to: str
    token: str | None
    amount: int
    # The recovery a `recover` transaction carries out.
    ref: int | None = None
    # The deposits a `batch` sweeps.
    entries: tuple[Entry, ...] = ()


@dataclass(frozen=True)
class GasWallet:
    """Where top-ups come from: `address` at `index` of the hardened gas account, or of the
    deposit chain (`hardened` false); `legacy` is the deposit-chain address it replaced."""

    index: int
    address: str
    legacy: str | None

    @property
    def hardened(self) -> bool:
        return self.legacy is not None

    @classmethod
    def of(cls, wallet: Wallet, index: int, hardened: bool) -> GasWallet:
        if hardened:
            return cls(index, wallet.gas_address(index), wallet.address(index))
        return cls(index, wallet.address(index), None)


def treasury_of(wallet: Wallet, chain: ChainConfig, payment: asyncpg.Record) -> str:
    """Where a payment's sweep on `chain` goes: its merchant's own treasury on that chain while
    the payment's binding to that merchant verifies, else the chain's. The binding names the
    payment's own chain (a payment priced in fiat is swept on each chain of its options: its
    deposit index, bound with it, derives the same address on all of them). A bound merchant's
    treasury row whose approval does not verify was not written by the operator's CLI: refused."""
    if payment["treasury"] is None or payment["merchant_binding"] is None:
        return chain.treasury
    merchant = payment["merchant"]
    bound = binding_text(payment["id"], merchant, payment["chain"], int(payment["address_index"]))
    if not hmac.compare_digest(wallet.approve(bound), bytes(payment["merchant_binding"])):
        return chain.treasury
    text = treasury_text(merchant, chain.name, payment["treasury"])
    if not hmac.compare_digest(wallet.approve(text), bytes(payment["approval"])):
        raise PolicyRefusal(
            f"the treasury of merchant {merchant!r} on chain {chain.name} has no valid approval"
        )
    return str(payment["treasury"])


class SigningPolicy:
    def __init__(
        self,
        chain: ChainConfig,
        wallet: Wallet,
        gas: GasWallet,
        outgoing: outgoing_policy.Rules | None = None,
    ) -> None:
        self.chain = chain
        self.wallet = wallet
        self.gas = gas
        # Refunds and payouts (`jobs.outgoing_policy`); None: refused.
        self.outgoing = outgoing
        # Delegates whose code this process read on chain and found right: address → treasury.
        # Kept in memory, never in the database: a row pointing elsewhere is not trusted.
        self._delegates: dict[str, str] = {}

    def trust_delegate(self, address: str, treasury: str, code: str | None) -> bool:
        """Remember `address` as the delegate of `treasury` if `code` (read from the chain at
        that address) is the committed delegate's sweeping there; returns whether it is."""
        if not delegate.is_delegate_for(code, treasury):
            return False
        self._delegates[address.lower()] = treasury
        return True

    def trusted_treasury(self, address: str) -> str | None:
        return self._delegates.get(address.lower())

    async def check(self, conn: Conn | asyncpg.Pool, intent: Intent) -> None:
        """Raise PolicyRefusal, naming the rule, unless the policy allows `intent`."""
        if intent.kind not in KINDS:
            raise PolicyRefusal(f"unknown kind {intent.kind!r}")
        if intent.kind in NO_VALUE:
            if intent.amount != 0:
                raise PolicyRefusal(f"a {intent.kind} sends no value, not {intent.amount}")
        elif intent.amount <= 0:
            raise PolicyRefusal(f"amount {intent.amount} is not positive")
        if intent.kind == "deploy":
            await self._check_deploy(conn, intent)
        elif intent.kind == "batch":
            await self._check_batch(conn, intent)
        elif intent.kind == "gas_topup":
            await self._check_top_up(conn, intent)
        elif intent.kind == "recover":
            await self._check_recovery(conn, intent)
        elif intent.kind in outgoing_policy.KINDS:
            await self._check_outgoing(conn, intent)
        else:
            await self._check_sweep(conn, intent)

    async def _check_sweep(self, conn: Conn | asyncpg.Pool, intent: Intent) -> None:
        if self.wallet.address(intent.index) != intent.sender:
            raise PolicyRefusal(f"index {intent.index} does not derive {intent.sender}")
        if intent.sender == self.gas.legacy and intent.index == self.gas.index:
            if intent.to != self.chain.treasury:
                raise PolicyRefusal(f"{intent.to} is not the treasury of chain {self.chain.name}")
            if intent.kind != "native":
                raise PolicyRefusal("only native coin leaves the former gas wallet")
            return
        if intent.kind == "token":
            if intent.token is None or self.chain.token_at(intent.token) is None:
                raise PolicyRefusal(f"{intent.token} is not a token of chain {self.chain.name}")
        elif intent.token is not None:
            raise PolicyRefusal("a native sweep names a token")
        deposit = await conn.fetchrow(
            Q["deposit_of"], self.chain.name, intent.sender, intent.index, intent.token
        )
        if deposit is None:
            raise PolicyRefusal(
                f"{intent.sender} (index {intent.index}) holds no payment of this chain in "
                "this asset"
            )
        allowed = {treasury_of(self.wallet, self.chain, deposit)}
        if intent.kind == "native" and deposit["token_payment"]:
            allowed.add(self.chain.treasury)
        if intent.to not in allowed:
            raise PolicyRefusal(
                f"{intent.to} is not the treasury of merchant {deposit['merchant']!r} on chain "
                f"{self.chain.name}"
            )

    def _check_gas_sender(self, intent: Intent) -> None:
        if (intent.index, intent.sender) != (self.gas.index, self.gas.address):
            raise PolicyRefusal(f"a {intent.kind} from {intent.sender}, not the gas wallet")

    async def _treasury_allowed(self, conn: Conn | asyncpg.Pool, treasury: str) -> bool:
        """The chain's treasury, or a merchant's on this chain with a valid approval."""
        if treasury == self.chain.treasury:
            return True
        for row in await conn.fetch(Q["merchant_treasuries_at"], self.chain.name, treasury):
            text = treasury_text(row["merchant"], self.chain.name, row["address"])
            if hmac.compare_digest(self.wallet.approve(text), bytes(row["approval"])):
                return True
        return False

    async def _check_deploy(self, conn: Conn | asyncpg.Pool, intent: Intent) -> None:
        self._check_gas_sender(intent)
        if intent.token is not None or intent.entries:
            raise PolicyRefusal("a delegate deployment names a token or deposits")
        if not await self._treasury_allowed(conn, intent.to):
            raise PolicyRefusal(f"{intent.to} is no treasury on chain {self.chain.name}")

    async def _check_batch(self, conn: Conn | asyncpg.Pool, intent: Intent) -> None:
        self._check_gas_sender(intent)
        treasury = self.trusted_treasury(intent.to)
        if treasury is None:
            raise PolicyRefusal(f"{intent.to} is no delegate whose code was checked")
        recorded = await conn.fetchval(Q["delegate_of"], self.chain.name, treasury)
        if recorded is None or recorded.lower() != intent.to.lower():
            raise PolicyRefusal(f"{intent.to} is not the recorded delegate of {treasury}")
        if intent.token is not None or not intent.entries:
            raise PolicyRefusal("a batch names a token or no deposits")
        if len({e.address.lower() for e in intent.entries}) != len(intent.entries):
            raise PolicyRefusal("a batch names a deposit twice")
        for e in intent.entries:
            if self.wallet.address(e.index) != e.address:
                raise PolicyRefusal(f"index {e.index} does not derive {e.address}")
            if e.token is not None and self.chain.token_at(e.token) is None:
                raise PolicyRefusal(f"{e.token} is not a token of chain {self.chain.name}")
            deposit = await conn.fetchrow(
                Q["confirmed_deposit"], self.chain.name, e.address, e.index, e.token
            )
            if deposit is None:
                raise PolicyRefusal(
                    f"{e.address} holds no confirmed payment of this chain in this asset"
                )
            if treasury_of(self.wallet, self.chain, deposit) != treasury:
                raise PolicyRefusal(
                    f"{treasury} is not the treasury of merchant {deposit['merchant']!r} on "
                    f"chain {self.chain.name}"
                )

    async def _check_top_up(self, conn: Conn | asyncpg.Pool, intent: Intent) -> None:
        # The former gas wallet only ever re-signs a top-up it had in flight at the upgrade.
        if intent.index != self.gas.index or intent.sender not in (
            self.gas.address,
            self.gas.legacy,
        ):
            raise PolicyRefusal(f"a top-up from {intent.sender}, not the gas wallet")
        if intent.token is not None:
            raise PolicyRefusal("a top-up names a token")
        ceiling = TOPUP_GAS_CEILING * self.chain.max_fee_per_gas
        if intent.amount > ceiling:
            raise PolicyRefusal(f"top-up of {intent.amount} above the ceiling {ceiling}")
        if not await conn.fetchval(Q["top_up_target"], self.chain.name, intent.to):
            raise PolicyRefusal(f"{intent.to} is no deposit address of a confirmed token payment")

    async def _check_recovery(self, conn: Conn | asyncpg.Pool, intent: Intent) -> None:
        row = await conn.fetchrow(Q["recovery"], intent.ref) if intent.ref is not None else None
        if row is None or row["status"] != "approved" or row["chain"] != self.chain.name:
            raise PolicyRefusal(f"no approved recovery {intent.ref} on chain {self.chain.name}")
        token = row["token_address"]
        text = recoveries.request_text(
            self.chain.name, row["payment_id"], token, row["to_address"], int(row["amount"])
        )
        if not hmac.compare_digest(self.wallet.approve(text), bytes(row["approval"])):
            raise PolicyRefusal(f"the approval of recovery {row['id']} does not verify")
        if (intent.sender, intent.index) != (row["address"], row["address_index"]):
            raise PolicyRefusal(f"recovery {row['id']} is not from {intent.sender}")
        if self.wallet.address(intent.index) != intent.sender:
            raise PolicyRefusal(f"index {intent.index} does not derive {intent.sender}")
        if intent.to != row["to_address"] or (intent.token or "").lower() != (token or "").lower():
            raise PolicyRefusal(f"recovery {row['id']} names another recipient or asset")
        if intent.amount > int(row["amount"]):
            raise PolicyRefusal(f"more than recovery {row['id']} approved")
        held = await recoveries.held(conn, row["payment_id"], excluding=row["id"])
        if int(row["amount"]) > held.get(token.lower() if token else None, 0):
            raise PolicyRefusal(f"payment {row['payment_id']} no longer holds that much")

    async def _check_outgoing(self, conn: Conn | asyncpg.Pool, intent: Intent) -> None:
        if self.outgoing is None:
            raise PolicyRefusal(f"no payout wallet is set up to check a {intent.kind}")
        reason = await outgoing_policy.refusal(
            conn,
            self.chain,
            self.wallet,
            self.outgoing,
            kind=intent.kind,
            ref=intent.ref,
            index=intent.index,
            sender=intent.sender,
            to=intent.to,
            token=intent.token,
            amount=intent.amount,
        )
        if reason is not None:
            raise PolicyRefusal(reason)
