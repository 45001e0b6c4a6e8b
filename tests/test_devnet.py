"""Starting Anvil: a port taken between picking it and Anvil's bind is retried elsewhere."""

from __future__ import annotations

import socket

import pytest

from ctripd.dev import devnet


def test_a_taken_port_is_one_clear_error_or_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        with pytest.raises(devnet.AnvilExitedError, match=f"port {port}"):
            devnet.start_anvil(port=port)

        picks = iter([port, devnet.free_port()])
        monkeypatch.setattr(devnet, "free_port", lambda: next(picks))
        anvil = devnet.start_anvil()
        try:
            assert anvil.port != port
            assert int(anvil.rpc("eth_chainId"), 16) == 31337
        finally:
            anvil.stop()
