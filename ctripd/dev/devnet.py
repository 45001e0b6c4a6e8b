"""A local Anvil node as a child process, for `ctripd dev` and the test suite."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ctripd.errors import CtripdError

TEST_MNEMONIC = "test test test test test test test test test test test junk"


def anvil_binary() -> str:
    """$CTRIPD_ANVIL (the Makefile sets it to the npm-installed binary), else `anvil` on PATH."""
    for candidate in (os.environ.get("CTRIPD_ANVIL"), shutil.which("anvil")):
        if candidate and Path(candidate).is_file():
            return candidate
    raise CtripdError(
        "anvil not found: set CTRIPD_ANVIL or put anvil on PATH (`make dev` installs it from npm)"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def rpc_call(url: str, method: str, params: list[Any] | None = None, timeout: float = 10) -> Any:
    """A blocking JSON-RPC call, for set-up code outside the event loop."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []})
    req = urllib.request.Request(
        url, data=body.encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        answer = json.loads(resp.read())
    if "error" in answer:
        raise RuntimeError(f"{method}: {answer['error']}")
    return answer["result"]


def wait_receipt(url: str, tx_hash: str, timeout: float = 30) -> dict[str, Any]:
    """The transaction's receipt once mined: Anvil's automine may answer eth_sendTransaction
    just before the block with it exists."""
    deadline = time.monotonic() + timeout
    while (receipt := rpc_call(url, "eth_getTransactionReceipt", [tx_hash])) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{tx_hash} not mined within {timeout:g} s")
        time.sleep(0.01)
    result: dict[str, Any] = receipt
    return result


@dataclass
class AnvilProcess:
    process: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rpc(self, method: str, params: list[Any] | None = None) -> Any:
        return rpc_call(self.url, method, params)

    def receipt(self, tx_hash: str) -> dict[str, Any]:
        return wait_receipt(self.url, tx_hash)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_anvil(
    port: int | None = None,
    mnemonic: str = TEST_MNEMONIC,
    chain_id: int = 31337,
    block_time: float | None = None,
    extra_args: list[str] | None = None,
) -> AnvilProcess:
    """Start Anvil and wait until it answers JSON-RPC.

    Without a given port, a free one is picked; another process may take it between the pick
    and Anvil's bind (Anvil then exits at once), so a few fresh ports are tried.
    """
    for _ in range(2):
        try:
            return _start_anvil(port or free_port(), mnemonic, chain_id, block_time, extra_args)
        except AnvilExitedError:
            if port is not None:
                raise
    return _start_anvil(port or free_port(), mnemonic, chain_id, block_time, extra_args)


class AnvilExitedError(CtripdError):
    """Anvil exited before answering (e.g. its port was taken)."""


def _start_anvil(
    port: int,
    mnemonic: str,
    chain_id: int,
    block_time: float | None,
    extra_args: list[str] | None,
) -> AnvilProcess:
    args = [
        anvil_binary(),
        "--port",
        str(port),
        "--host",
        "127.0.0.1",
        "--chain-id",
        str(chain_id),
        "--mnemonic",
        mnemonic,
        "--silent",
    ]
    if block_time:
        args += ["--block-time", str(block_time)]
    args += extra_args or []
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    anvil = AnvilProcess(proc, port)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AnvilExitedError(f"anvil exited with code {proc.returncode} (port {port})")
        try:
            anvil.rpc("eth_chainId")
            return anvil
        except OSError:
            time.sleep(0.05)
    anvil.stop()
    raise CtripdError("anvil did not answer within 20 s")
