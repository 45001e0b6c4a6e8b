"""structlog set-up: JSON lines off a terminal, readable lines on one; bound ids ride along."""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson
import structlog


def _orjson_dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=default).decode()


def configure_logging(level: str = "info", fmt: str = "auto") -> None:
    """`fmt` is auto (JSON unless stdout is a TTY), json or console."""
    as_json = fmt == "json" or (fmt == "auto" and not sys.stdout.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_orjson_dumps)
        if as_json
        # Plain tracebacks: a rich one would print every frame's locals, request headers
        # (`Authorization: Bearer …`) and secrets included.
        else structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback)
    )
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info if as_json else structlog.dev.set_exc_info,
        renderer,
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=False,
    )
    # Route stdlib loggers (aiohttp, apscheduler) through the same renderer at warning and up, so
    # that their tracebacks (aiohttp logs one for every malformed request) stay one JSON line.
    # Like basicConfig, this leaves a logging set-up that is already there (pytest's) alone.
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(
            structlog.stdlib.ProcessorFormatter(
                foreign_pre_chain=[
                    structlog.stdlib.add_logger_name,
                    structlog.processors.add_log_level,
                    structlog.processors.TimeStamper(fmt="iso", utc=True),
                ],
                processors=[
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    # The console renderer formats exc_info itself.
                    *([structlog.processors.format_exc_info] if as_json else []),
                    renderer,
                ],
            )
        )
        root.addHandler(handler)
        root.setLevel(logging.WARNING)
