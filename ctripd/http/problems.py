"""RFC 9457 problem details: every error the HTTP API answers is `application/problem+json`.

Handlers raise `Problem`; the middleware also turns aiohttp's own errors (404, 405, 413, …) and
anything unexpected into problem documents, so a client never has to parse another error shape.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

import asyncpg
import orjson
import structlog
from aiohttp import web

from ctripd.errors import DatabaseError
from ctripd.http.keys import CONFIG

log = structlog.get_logger(__name__)

CONTENT_TYPE = "application/problem+json"
# Problem type URIs are tag URIs (RFC 4151, as RFC 9457 §3.1.1 suggests for ones that are not
# meant to be dereferenced); /docs lists them.
TYPE_PREFIX = "tag:ctripd,2026:problem:"

# slug → title; the documented catalogue of problem types.
TYPES: dict[str, str] = {
    "bad-request": "Malformed request",
    "validation-error": "Invalid request field",
    "unauthorized": "Missing or invalid API key",
    "forbidden": "The API key may not do this",
    "not-found": "Not found",
    "method-not-allowed": "Method not allowed",
    "conflict": "Conflict",
    "idempotency-conflict": "Idempotency-Key reused with a different request",
    "payload-too-large": "Request body too large",
    "too-many-requests": "Rate limit exceeded",
    "unsupported-media-type": "Unsupported media type",
    "service-unavailable": "Service unavailable",
    "rates-unavailable": "No valid exchange rate",
    "internal-error": "Internal server error",
}

_SLUG_OF_STATUS = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    409: "conflict",
    413: "payload-too-large",
    415: "unsupported-media-type",
    422: "validation-error",
    429: "too-many-requests",
    503: "service-unavailable",
}


class Problem(Exception):
    """An error answer: status, problem type slug, human detail, and the offending field."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        slug: str | None = None,
        field: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug or _SLUG_OF_STATUS.get(status, "bad-request")
        self.detail = detail
        self.field = field
        self.headers = headers or {}
        self.extra = extra

    def response(self, instance: str | None = None) -> web.Response:
        body: dict[str, Any] = {
            "type": TYPE_PREFIX + self.slug,
            "title": TYPES[self.slug],
            "status": self.status,
            "detail": self.detail,
        }
        if self.field is not None:
            body["field"] = self.field
        if instance is not None:
            body["instance"] = instance
        body.update(self.extra)
        return web.Response(
            body=orjson.dumps(body),
            status=self.status,
            content_type=CONTENT_TYPE,
            headers=self.headers,
        )


def validation(field: str, detail: str) -> Problem:
    """422 naming the request field (dotted path) that is wrong."""
    return Problem(422, f"{field}: {detail}", field=field)


def _from_http_exception(exc: web.HTTPException, request: web.Request) -> Problem:
    headers: dict[str, str] = {}
    if exc.status == 405 and "Allow" in exc.headers:
        headers["Allow"] = exc.headers["Allow"]
    if exc.status == 413:
        detail = f"request body exceeds {request.app[CONFIG].server.max_body_bytes} bytes"
    elif exc.status == 404:
        detail = f"no route {request.path}"
    elif exc.status == 405:
        detail = f"{request.method} is not allowed on {request.path}"
    else:
        detail = exc.reason or HTTPStatus(exc.status).phrase
    return Problem(exc.status, detail, headers=headers)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# A database that cannot answer now: unreachable, or a server shutting down, crashed or starting
# up (crash recovery after a restart answers "the database system is starting up"), or a pooled
# connection whose server died mid-message (asyncpg refuses it with an InternalClientError until
# it sees the connection closed).
_UNAVAILABLE = (
    DatabaseError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
    OSError,
)


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map every raised error to problem+json; returned responses pass through untouched."""
    try:
        return await handler(request)
    except Problem as exc:
        return exc.response(request.path)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _from_http_exception(exc, request).response(request.path)
    except asyncio.CancelledError:
        raise
    except _UNAVAILABLE as exc:
        log.error("api.unavailable", path=request.path, error=f"{type(exc).__name__}: {exc}"[:200])
        problem = Problem(
            503, "the database is unavailable; retry later", headers={"Retry-After": "5"}
        )
        return problem.response(request.path)
    except Exception:
        log.exception("api.unhandled_error", method=request.method, path=request.path)
        return Problem(500, "unexpected error; it has been logged", slug="internal-error").response(
            request.path
        )
