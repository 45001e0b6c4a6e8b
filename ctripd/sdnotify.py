"""systemd's service notifications (sd_notify(3)) without libsystemd: one datagram to the socket
named by $NOTIFY_SOCKET per message. Outside a `Type=notify` unit the variable is unset and
every call does nothing."""

from __future__ import annotations

import asyncio
import os
import socket

import structlog

log = structlog.get_logger(__name__)


def notify(message: str) -> bool:
    """Send `message` (e.g. "READY=1"); False when not under systemd or the send failed."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket: its name starts with a NUL byte
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            # Never block the event loop: a send systemd cannot take now is a failed one.
            sock.setblocking(False)
            sock.sendto(message.encode(), address)
    except OSError as exc:
        log.warning("sdnotify.failed", message=message, error=str(exc))
        return False
    return True


def watchdog_period() -> float | None:
    """Seconds between WATCHDOG=1 pings (half of systemd's WatchdogSec=, as sd_watchdog_enabled(3)
    advises), or None when systemd expects none from this process."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2 / 1_000_000


async def keep_watchdog(period: float) -> None:
    """Ping from the event loop itself: a loop that is wedged stops pinging, and systemd restarts
    the service after WatchdogSec=."""
    while True:
        notify("WATCHDOG=1")
        await asyncio.sleep(period)
