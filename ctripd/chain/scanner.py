"""Read a block range and pick out the transfers to watched addresses.

Native transfers come from full blocks (top-level `to` + value, failed transactions dropped by
their receipt), token transfers from one `eth_getLogs` over the configured token contracts, and
internal transfers from `debug_traceBlockByHash` (callTracer) where the chain enables traces.
Matching is local, against an in-memory set of 20-byte addresses; every answer is checked to
belong to the same block hashes, so a reorg during the read is noticed, never half-applied.
"""

from __future__ import annotations

import asyncio
from collections.abc import Container, Iterator
from dataclasses import dataclass
from typing import Any

from eth_utils import to_checksum_address

from ctripd.chain.evm import TRANSFER_TOPIC
from ctripd.chain.rpc import RpcClient, RpcNodeError
from ctripd.config import ChainConfig
from ctripd.errors import CtripdError

# callTracer frame types that move value to their `to`; DELEGATECALL's value is only inherited.
_VALUE_FRAMES = frozenset({"CALL", "CREATE", "CREATE2", "SELFDESTRUCT"})
NATIVE_POSITION = -1


class ChainMovedError(CtripdError):
    """The node's chain changed while a range was being read; read it again."""


@dataclass(frozen=True, slots=True)
class Block:
    number: int
    hash: str
    parent_hash: str
    timestamp: int


@dataclass(frozen=True, slots=True)
class Transfer:
    """An incoming transfer; `position` is the log index, -1 (top-level) or the trace position."""

    kind: str
    tx_hash: str
    position: int
    block_number: int
    block_hash: str
    timestamp: int
    from_address: str
    to_address: str
    token_address: str | None
    amount: int


@dataclass(frozen=True, slots=True)
class RangeScan:
    blocks: list[Block]
    transfers: list[Transfer]

    @property
    def last(self) -> Block:
        return self.blocks[-1]


def _addr(hex_address: str) -> bytes:
    return bytes.fromhex(hex_address[2:])


async def scan_range(
    rpc: RpcClient, chain: ChainConfig, first: int, last: int, watched: Container[bytes]
) -> RangeScan:
    """Blocks first..last and the transfers they hold to `watched` addresses.

    Every request of the range is sent with priority `first`: an earlier range goes first.
    """
    calls = [("eth_getBlockByNumber", [hex(n), True]) for n in range(first, last + 1)]
    tokens = {t.address.lower(): t.address for t in chain.tokens.values()}
    # Hash of the last block of each eth_getLogs answer, as the node that answered knows it.
    covered: dict[int, str | None] = {}
    if tokens:
        raw_blocks, logs = await asyncio.gather(
            rpc.batch(calls, first),
            rpc.get_logs(first, last, list(tokens), [TRANSFER_TOPIC], first, seen=covered),
        )
    else:
        raw_blocks, logs = await rpc.batch(calls, first), []

    blocks: list[Block] = []
    native: list[tuple[dict[str, Any], Block]] = []
    traced: list[tuple[dict[str, Any], Block]] = []
    for raw in raw_blocks:
        if raw is None:
            raise ChainMovedError(f"{chain.name}: block {first + len(blocks)} is gone")
        block = Block(
            int(raw["number"], 16), raw["hash"], raw["parentHash"], int(raw["timestamp"], 16)
        )
        if blocks and block.parent_hash != blocks[-1].hash:
            raise ChainMovedError(f"{chain.name}: block {block.number} does not extend its parent")
        blocks.append(block)
        txs = raw["transactions"]
        if chain.trace and txs:
            traced.append((raw, block))
        for tx in txs:
            to = tx.get("to")
            if to and tx.get("value", "0x0") != "0x0" and _addr(to) in watched:
                native.append((tx, block))
    by_number = {b.number: b for b in blocks}
    for number, block_hash in covered.items():
        if block_hash is None or by_number[number].hash != block_hash:
            raise ChainMovedError(f"{chain.name}: logs up to block {number} are of another view")

    transfers = list(_token_transfers(logs, by_number, tokens, watched))
    transfers.extend(await _successful_native(rpc, native, first))
    if traced:
        transfers.extend(await _internal_transfers(rpc, traced, watched, first))
    transfers.sort(key=lambda t: (t.block_number, t.tx_hash, t.kind, t.position))
    return RangeScan(blocks, transfers)


def _token_transfers(
    logs: list[dict[str, Any]],
    by_number: dict[int, Block],
    tokens: dict[str, str],
    watched: Container[bytes],
) -> Iterator[Transfer]:
    for entry in logs:
        topics = entry.get("topics") or []
        # An indexed recipient is the standard; anything else is not an ERC-20 Transfer.
        if len(topics) != 3 or topics[0] != TRANSFER_TOPIC or entry.get("removed"):
            continue
        to = "0x" + topics[2][-40:]
        if _addr(to) not in watched:
            continue
        amount = int(entry["data"], 16) if entry["data"] not in ("0x", "") else 0
        if amount == 0:
            continue  # zero-value transfers are address-poisoning spam, not payments
        block = by_number.get(int(entry["blockNumber"], 16))
        if block is None or block.hash != entry["blockHash"]:
            raise ChainMovedError(f"log of block {entry['blockNumber']} is from another chain")
        token = tokens.get(entry["address"].lower())
        if token is None:
            continue
        yield Transfer(
            kind="token",
            tx_hash=entry["transactionHash"],
            position=int(entry["logIndex"], 16),
            block_number=block.number,
            block_hash=block.hash,
            timestamp=block.timestamp,
            from_address=to_checksum_address("0x" + topics[1][-40:]),
            to_address=to,
            token_address=token,
            amount=amount,
        )


async def _successful_native(
    rpc: RpcClient, candidates: list[tuple[dict[str, Any], Block]], priority: int
) -> list[Transfer]:
    """Top-level transfers whose transaction succeeded (receipt status 1)."""
    if not candidates:
        return []
    receipts = await rpc.batch(
        [("eth_getTransactionReceipt", [tx["hash"]]) for tx, _ in candidates], priority
    )
    found = []
    for (tx, block), receipt in zip(candidates, receipts, strict=True):
        if receipt is None or receipt.get("blockHash") != block.hash:
            raise ChainMovedError(f"receipt of {tx['hash']} is not in block {block.number}")
        if receipt.get("status") != "0x1":
            continue
        found.append(_coin("native", tx, NATIVE_POSITION, block, tx["from"], tx["to"], tx["value"]))
    return found


def _coin(
    kind: str, tx: dict[str, Any], position: int, block: Block, sender: str, to: str, value: str
) -> Transfer:
    """A transfer of the chain's native coin: top-level ("native") or by an inner call."""
    return Transfer(
        kind=kind,
        tx_hash=tx["hash"],
        position=position,
        block_number=block.number,
        block_hash=block.hash,
        timestamp=block.timestamp,
        from_address=to_checksum_address(sender),
        to_address=to.lower(),
        token_address=None,
        amount=int(value, 16),
    )


async def _internal_transfers(
    rpc: RpcClient,
    traced: list[tuple[dict[str, Any], Block]],
    watched: Container[bytes],
    priority: int,
) -> list[Transfer]:
    """Value-moving inner calls of successful frames; a reverted frame voids its whole subtree."""
    results = await rpc.batch(
        [("debug_traceBlockByHash", [b.hash, {"tracer": "callTracer"}]) for _, b in traced],
        priority,
    )
    found: list[Transfer] = []
    for (raw, block), traces in zip(traced, results, strict=True):
        txs = raw["transactions"]
        if not isinstance(traces, list) or len(traces) != len(txs):
            raise RpcNodeError(rpc.chain, "debug_traceBlockByHash", None, "incomplete traces")
        for tx, trace in zip(txs, traces, strict=True):
            root = trace.get("result") if isinstance(trace, dict) else None
            if root is None:
                raise RpcNodeError(
                    rpc.chain, "debug_traceBlockByHash", None, f"no trace of {tx['hash']}"
                )
            if root.get("error"):
                continue
            for position, frame in _inner_frames(root):
                to = frame.get("to")
                value = frame.get("value") or "0x0"
                if (
                    frame.get("type") in _VALUE_FRAMES
                    and to
                    and value != "0x0"
                    and _addr(to) in watched
                ):
                    found.append(_coin("internal", tx, position, block, frame["from"], to, value))
    return found


def _inner_frames(root: dict[str, Any]) -> Iterator[tuple[int, dict[str, Any]]]:
    """(pre-order position, frame) of every frame below the root that did not revert.

    The root is position 0 and is the top-level transfer, counted from the block itself.
    """
    position = 0
    stack: list[dict[str, Any]] = list(reversed(root.get("calls") or []))
    while stack:
        frame = stack.pop()
        position += 1
        if frame.get("error"):
            position += _count(frame) - 1
            continue
        yield position, frame
        stack.extend(reversed(frame.get("calls") or []))


def _count(frame: dict[str, Any]) -> int:
    return 1 + sum(_count(c) for c in frame.get("calls") or [])
