"""sd_notify datagrams over real Unix sockets: a path, an abstract name, none at all."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

import pytest

from ctripd import sdnotify


def receiver(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(5)
    return sock


def test_notify_sends_to_a_socket_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(tmp_path / "notify.sock")
    with receiver(path) as sock:
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        assert sdnotify.notify("READY=1")
        assert sock.recv(4096) == b"READY=1"


def test_notify_sends_to_an_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"ctripd-test-{uuid.uuid4().hex}"
    with receiver("\0" + name) as sock:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.notify("WATCHDOG=1")
        assert sock.recv(4096) == b"WATCHDOG=1"


def test_notify_without_systemd_or_listener_is_false(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not sdnotify.notify("READY=1")
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody.sock"))
    assert not sdnotify.notify("READY=1")


@pytest.mark.parametrize(
    ("usec", "pid", "period"),
    [
        ("30000000", None, 15.0),
        ("30000000", "self", 15.0),
        ("30000000", "1", None),  # meant for another process
        ("0", None, None),
        ("soon", None, None),
        (None, None, None),
    ],
)
def test_watchdog_period_is_half_of_watchdog_usec(
    usec: str | None, pid: str | None, period: float | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", pid)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, str(os.getpid()) if value == "self" else value)
    assert sdnotify.watchdog_period() == period
