"""Background work that is awaited at shutdown and whose failures are logged, never lost."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import structlog

log = structlog.get_logger(__name__)

# How long work cut short at shutdown gets to unwind after its cancellation.
CANCEL_WAIT = 5.0


class TaskSet:
    """Holds running tasks; a done-callback logs failures; `drain()` waits for the in-flight."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self.closed = False
        # Called at the start of a stop: whatever claims new work stops claiming it.
        self.on_stop: list[Callable[[], None]] = []
        self._deadline: float | None = None

    def begin_stop(self, grace: float) -> None:
        """Stop taking work now and start the one grace period that every drain shares, so the
        HTTP, job and webhook drains together stay within `grace` (and systemd's stop timeout)."""
        if self._deadline is not None:
            return
        self._deadline = asyncio.get_running_loop().time() + grace
        self.closed = True
        for stop_claiming in self.on_stop:
            stop_claiming()

    def remaining(self, grace: float) -> float:
        """Seconds left of the stop's grace period (all of `grace` if no stop began)."""
        if self._deadline is None:
            return grace
        return max(0.0, self._deadline - asyncio.get_running_loop().time())

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any] | None:
        if self.closed:
            coro.close()
            return None
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("task.failed", task=task.get_name(), error=f"{type(exc).__name__}: {exc}")

    def job(self, name: str, fn: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[None]]:
        """A scheduler job that starts `fn` as a tracked task and returns at once.

        A tick that finds the previous run still going skips it (the next tick after that run
        picks up what came meanwhile). The scheduler's own run thus never overlaps itself, which
        APScheduler would log as a warning on every long scan, and never outlives the tick, so
        shutting the scheduler down finds no run of it to cancel (and log as a failed job)."""
        current: asyncio.Task[Any] | None = None

        async def run() -> None:
            nonlocal current
            if current is not None and not current.done():
                return

            async def wrapped() -> None:
                await fn()

            current = self.spawn(wrapped(), name)

        return run

    async def drain(self, grace: float) -> None:
        """Stop starting work, give what runs up to `grace` s, then cancel what is left.

        A run the (already paused) scheduler submitted but has not started yet starts on this
        call's first turn of the loop, finds the set closed and returns: shutting the scheduler
        down afterwards finds nothing to cancel (APScheduler 3's AsyncIOExecutor cancels every
        job still running whatever `shutdown(wait=...)` says, and logs each as a job error)."""
        self.closed = True
        await asyncio.sleep(0)
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
        if pending:
            log.warning(
                "tasks.cancelled",
                tasks=sorted(task.get_name() for task in pending),
                grace_seconds=round(grace, 1),
            )
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=CANCEL_WAIT)
