"""Background work that is awaited at shutdown and whose failures are logged, never lost."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import structlog

log = structlog.get_logger(__name__)


class TaskSet:
    """Holds running tasks; a done-callback logs failures; `drain()` waits for the in-flight."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self.closed = False

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
        """A scheduler job that runs `fn` as a tracked task, skipped once shutdown began."""

        async def run() -> None:
            async def wrapped() -> None:
                await fn()

            task = self.spawn(wrapped(), name)
            if task is not None:
                await asyncio.wait({task})

        return run

    async def drain(self, grace: float) -> None:
        """Stop accepting work and wait up to `grace` s for what is running, then cancel it."""
        self.closed = True
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)
