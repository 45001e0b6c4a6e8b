"""A real `ctripd run` under a `Type=notify` unit's protocol: the test binds $NOTIFY_SOCKET and sees
READY=1 once the daemon serves, WATCHDOG=1 pings from its event loop, and STOPPING=1 at SIGTERM."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from pathlib import Path

from test_process import Daemon

from ctripd.dev.devnet import free_port


class NotifySocket:
    """What systemd would receive: every datagram, in order."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages: list[str] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096)
            except OSError:
                return
            if not data:  # shut down by close()
                return
            self.messages.append(data.decode())

    def wait_for(self, message: str, count: int = 1, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while self.messages.count(message) < count:
            assert time.monotonic() < deadline, f"{count} x {message}: got {self.messages}"
            time.sleep(0.05)

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(timeout=5)


def test_run_notifies_ready_watchdog_and_stopping(  # type: ignore[no-untyped-def]
    write_config, anvil, tmp_path: Path
) -> None:
    port = free_port()
    config = write_config(toml={"server": {"port": port}})
    notify = NotifySocket(tmp_path / "notify.sock")
    # WatchdogSec=0.4s: a ping every 0.2 s.
    env = {"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "400000"}
    daemon = Daemon(str(config.path), env=env)
    try:
        notify.wait_for("READY=1")
        # Ready means serving: the HTTP server answers at once.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
            assert resp.status == 200
        ready_at = notify.messages.index("READY=1")
        notify.wait_for("WATCHDOG=1", count=ready_at + 3)  # the ones before READY=1, and 3 after
        assert daemon.stop(timeout=60) == 0, "".join(daemon.raw)[-3000:]
    finally:
        if daemon.proc.poll() is None:
            daemon.proc.kill()
        notify.close()
    messages = notify.messages
    assert messages.count("READY=1") == 1
    assert "STOPPING=1" in messages[ready_at:], messages
    assert set(messages) == {"READY=1", "WATCHDOG=1", "STOPPING=1"}, messages
    events = [line["event"] for line in daemon.lines()]
    assert events.index("scheduler.started") < events.index("ctripd.ready")
