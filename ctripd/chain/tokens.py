"""Configured tokens checked against their contracts: a token configured with 6 decimals that has
18 (as BSC-USD has) would price every payment in it 10^12 times too low."""

from __future__ import annotations

from dataclasses import dataclass

from ctripd.chain.evm import DECIMALS_CALL
from ctripd.chain.rpc import RpcClient
from ctripd.config import ChainConfig, Token


@dataclass(frozen=True)
class DecimalsMismatch:
    token: Token
    on_chain: int | None  # None: the contract has no decimals() (or no code at the address)

    def problem(self) -> str:
        if self.on_chain is None:
            return f"{self.token.address} answers no decimals(): is it the token's address?"
        return (
            f"the contract at {self.token.address} has {self.on_chain} decimals, "
            f"configured {self.token.decimals}"
        )


async def decimals_mismatches(rpc: RpcClient, chain: ChainConfig) -> list[DecimalsMismatch]:
    """Every configured token whose contract's decimals() differs from its configuration, in one
    batch. RpcError propagates: the caller decides what an unreachable node means."""
    tokens = sorted(chain.tokens.values(), key=lambda t: t.symbol)
    if not tokens:
        return []
    answers = await rpc.batch(
        [("eth_call", [{"to": t.address, "data": DECIMALS_CALL}, "latest"]) for t in tokens]
    )
    found = []
    for token, answer in zip(tokens, answers, strict=True):
        on_chain = _uint(answer)
        if on_chain != token.decimals:
            found.append(DecimalsMismatch(token, on_chain))
    return found


def _uint(answer: object) -> int | None:
    if not isinstance(answer, str) or not answer.startswith("0x") or len(answer) != 66:
        return None
    return int(answer, 16)
