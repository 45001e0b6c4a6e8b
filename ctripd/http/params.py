"""Query parameters and JSON answers of the `/v1/` list endpoints, checked the same way by each."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from aiohttp import web

from ctripd.http.problems import Problem


def short(value: Any) -> str:
    """A client's value quoted in an error, cut to a readable length."""
    text = repr(value)
    return text if len(text) <= 66 else text[:63] + "…'"


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, content_type="application/json", headers=headers
    )


def refuse_unknown_params(request: web.Request, allowed: Sequence[str]) -> None:
    for name in request.query:
        if name not in allowed:
            raise Problem(
                400,
                f"unknown query parameter {short(name)} (allowed: {', '.join(allowed)})",
                field=name[:100],
            )


def query_param(request: web.Request, name: str) -> str | None:
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise Problem(400, f"query parameter {name} given more than once", field=name)
    return values[0] if values else None


def status_param(request: web.Request, statuses: Sequence[str]) -> str | None:
    status = query_param(request, "status")
    if status is not None and status not in statuses:
        raise Problem(400, f"status must be one of {', '.join(statuses)}", field="status")
    return status


def limit_param(request: web.Request, default: int, most: int) -> int:
    raw = query_param(request, "limit")
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= most:
        raise Problem(400, f"limit must be an integer from 1 to {most}", field="limit")
    return int(raw)
