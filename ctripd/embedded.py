"""The embedded PostgreSQL (PyPI `pgserver`) under `<state_dir>/postgres`, used when
`[database] dsn` is empty, and its supervision by the daemon.

The server is shared: every ctripd process and command on the data directory joins the one that
runs, and the last of them to exit stops it. Nothing else watches it, so the daemon does: when the
postmaster dies (the OOM killer, a crash), `Supervisor` starts it again with backoff and logs what
the server's own log said. Restarts take pgserver's inter-process lock, the one its start-or-join
takes, so processes sharing the data directory that all see the death start it once, and the
others join the new server. The DSN stays the same (same socket directory and port), so pools
simply reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import psutil
import structlog

from ctripd.errors import DatabaseError

log = structlog.get_logger(__name__)

# How often the daemon checks that the postmaster lives.
CHECK_INTERVAL = 1.0
# Seconds before the next restart attempt after 1, 2, ... failed ones (the last one repeats).
RESTART_BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
LOG_TAIL_LINES = 12
_LOG_READ_LIMIT = 64 * 1024
_PR_SET_CHILD_SUBREAPER = 36


class RestartFailed(DatabaseError):
    """One attempt to start the server again did not succeed; the supervisor tries again."""


def _pgserver() -> Any:
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset, as under systemd; it is harmless.
        warnings.simplefilter("ignore")
        import pgserver

    return pgserver


def adopt_orphans() -> None:
    """Make this process the parent of the postmaster it starts (Linux's child subreaper).

    pg_ctl starts the postmaster and exits, so the postmaster goes to the nearest subreaper, else
    to PID 1. An init that reaps nothing (a container's, or a sandbox's) keeps a dead postmaster
    as a zombie, whose PID in postmaster.pid then stops any new postmaster from starting. As its
    parent, the daemon reaps it itself, and the backends it leaves behind too.
    """
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        log.warning("embedded_postgres.no_subreaper", errno=ctypes.get_errno())


class EmbeddedPostgres:
    """The embedded server as this process started or joined it."""

    def __init__(self, server: Any) -> None:
        self._server = server
        self.data_dir: Path = server.pgdata
        self.log_file: Path = server.log
        self.postmaster = psutil.Process(self.pid)

    @classmethod
    def start(cls, state_dir: Path) -> EmbeddedPostgres:
        """Start (or join) the server under `state_dir`/postgres; its data survives.

        The server stops when the last process using it exits.
        """
        data_dir = state_dir / "postgres"
        data_dir.mkdir(parents=True, exist_ok=True)
        try:
            server = _pgserver().get_server(str(data_dir), cleanup_mode="stop")
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            tail = _tail_lines(data_dir / "log", 3)
            reason = " | ".join(tail) if tail else str(exc)
            raise DatabaseError(
                f"the embedded PostgreSQL in {data_dir} did not start: {reason}"
            ) from None
        return cls(server)

    @property
    def dsn(self) -> str:
        uri: str = self._server.get_uri()
        return uri

    @property
    def pid(self) -> int:
        pid: int = self._server.get_pid()
        return pid

    def died(self) -> str | None:
        """None while the postmaster runs; else how it ended. Reaps it when it is a child."""
        pid = self.postmaster.pid
        with contextlib.suppress(ChildProcessError):
            reaped, status = os.waitpid(pid, os.WNOHANG)
            if reaped:
                return _ending(os.waitstatus_to_exitcode(status))
        try:
            if self.postmaster.is_running() and self.postmaster.status() != psutil.STATUS_ZOMBIE:
                return None
        except psutil.NoSuchProcess:
            pass
        return "gone"

    def restart(self) -> bool:
        """Start the server again, or join the one a peer has started meanwhile; True if this
        process started it. Blocks for up to pg_ctl's wait."""
        pgserver = _pgserver()
        self.reap_orphans()
        try:
            with pgserver.PostgresServer._lock:
                info = pgserver.utils.PostmasterInfo.read_from_pgdata(self.data_dir)
                if info is not None and _is_zombie(info.pid):
                    # pgserver would take it for a running server; Postgres refuses to start.
                    raise RestartFailed(f"postmaster {info.pid} is dead but not reaped yet")
                started = info is None or not info.is_running()
                self._server.ensure_postgres_running()
        except (subprocess.SubprocessError, AssertionError, OSError, RuntimeError) as exc:
            # pgserver asserts that the server it started runs; RuntimeError: no socket dir.
            raise RestartFailed(f"the server did not start: {exc}") from None
        self.postmaster = psutil.Process(self.pid)
        self.reap_orphans()
        return started

    def reap_orphans(self) -> None:
        """Reap the dead Postgres processes left to this process (see `adopt_orphans`)."""
        for child in psutil.Process().children():
            with contextlib.suppress(psutil.Error, ChildProcessError):
                if child.status() == psutil.STATUS_ZOMBIE and child.name() == "postgres":
                    os.waitpid(child.pid, os.WNOHANG)

    def log_size(self) -> int:
        try:
            return self.log_file.stat().st_size
        except OSError:
            return 0

    def log_since(self, offset: int) -> list[str]:
        """The last lines the server logged after byte `offset` of its log."""
        return _tail_lines(self.log_file, LOG_TAIL_LINES, offset)


def _ending(code: int) -> str:
    """How a process ended, from its exit code (negative: the signal that killed it)."""
    if code >= 0:
        return f"exit {code}"
    try:
        return f"killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"killed by signal {-code}"


def _is_zombie(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def _tail_lines(path: Path, count: int, offset: int = 0) -> list[str]:
    """The last `count` non-empty lines of `path` after byte `offset` (0: the whole file)."""
    try:
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            start = offset if offset <= size else 0  # a smaller file was replaced: read it all
            f.seek(max(start, size - _LOG_READ_LIMIT))
            text = f.read().decode(errors="replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if line.strip()][-count:]


class Supervisor:
    """Restarts the embedded server when its postmaster dies; `run_once()` checks once."""

    def __init__(self, server: EmbeddedPostgres) -> None:
        self.server = server
        self.down_since: float | None = None
        self.failures = 0
        self._next_attempt = 0.0
        self._log_offset = 0

    async def run(self) -> None:
        while True:
            await self.run_once()
            await asyncio.sleep(CHECK_INTERVAL)

    async def run_once(self) -> None:
        server = self.server
        if self.down_since is None:
            how = server.died()
            if how is None:
                return
            self.down_since = self._next_attempt = time.monotonic()
            self.failures = 0
            self._log_offset = server.log_size()
            log.error(
                "embedded_postgres.died",
                pid=server.postmaster.pid,
                how=how,
                data_dir=str(server.data_dir),
                log_tail=server.log_since(0),
            )
        if time.monotonic() < self._next_attempt:
            return
        try:
            started = await asyncio.to_thread(server.restart)
        except RestartFailed as exc:
            self.failures += 1
            delay = RESTART_BACKOFF[min(self.failures, len(RESTART_BACKOFF)) - 1]
            self._next_attempt = time.monotonic() + delay
            log.warning(
                "embedded_postgres.restart_failed",
                attempt=self.failures,
                error=str(exc),
                retry_in=delay,
                log_tail=server.log_since(self._log_offset),
            )
            return
        log.warning(
            "embedded_postgres.restarted" if started else "embedded_postgres.rejoined",
            pid=server.pid,
            attempts=self.failures + 1,
            down_seconds=round(time.monotonic() - self.down_since, 2),
            log_tail=server.log_since(self._log_offset),
        )
        self.down_since = None
