"""Query parameters, JSON bodies and JSON answers of the `/v1/` endpoints, checked the same way
by each."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import orjson
from aiohttp import web

from ctripd.http.keys import CONFIG
from ctripd.http.problems import Problem, validation


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


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


async def read_json(request: web.Request) -> Any:
    """The request's JSON body: within `server.max_body_bytes`, finite numbers only."""
    limit = request.app[CONFIG].server.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise Problem(413, f"request body exceeds {limit} bytes")
    if request.content_type != "application/json":
        raise Problem(415, f"Content-Type must be application/json, not {request.content_type!r}")
    body = await request.read()
    try:
        return json.loads(body, parse_constant=_reject_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as exc:
        raise Problem(400, f"malformed JSON: {exc}"[:300]) from None


def check_text(value: str, name: str) -> None:
    """Postgres TEXT holds neither NUL nor lone surrogates; refuse them instead of failing."""
    if "\x00" in value:
        raise validation(name, "must not contain NUL characters")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise validation(name, "must be valid Unicode (no lone surrogates)") from None
