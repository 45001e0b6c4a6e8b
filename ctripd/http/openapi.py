"""`/openapi.json` (OpenAPI 3.0.3), assembled from per-resource pieces, and `/docs` rendering it.

The app factory adds each resource's paths and schemas (from `http.schemas`) with
`openapi.document(app, paths, schemas)`. Shared pieces: `problem_responses(...)`,
`json_content(...)`, `ref(...)`, and the `Problem` schema. `/docs` is plain server-rendered HTML
(no script, no external CDN).
"""

from __future__ import annotations

import html
import json
import re
from typing import Any

import orjson
from aiohttp import web

from ctripd.http.keys import OPENAPI
from ctripd.http.problems import CONTENT_TYPE as PROBLEM_CONTENT_TYPE
from ctripd.http.problems import TYPE_PREFIX, TYPES
from ctripd.http.scopes import ROUTE_SCOPES

Doc = dict[str, Any]

_STATUS_TEXT = {
    400: "Malformed request (bad JSON, query parameter or cursor)",
    401: "Missing, malformed, unknown or revoked API key",
    403: "The API key may not do this (`detail` says why)",
    404: "Not found (or owned by another merchant)",
    405: "Method not allowed",
    409: "Conflict with the current state",
    413: "Request body larger than `server.max_body_bytes`",
    415: "Content-Type is not application/json",
    422: "A request field is invalid; `field` names it",
    429: "The API key's rate limit is spent; `Retry-After` says when to retry",
    503: "The database is unavailable; retry later",
}


def ref(name: str) -> Doc:
    return {"$ref": f"#/components/schemas/{name}"}


def json_content(schema: Doc, media_type: str = "application/json") -> Doc:
    return {media_type: {"schema": schema}}


def problem_responses(*statuses: int) -> Doc:
    """Response objects of the given error statuses (503 is always added)."""
    return {
        str(status): {
            "description": _STATUS_TEXT[status],
            "content": json_content(ref("Problem"), PROBLEM_CONTENT_TYPE),
        }
        for status in sorted({*statuses, 503})
    }


def base_document() -> Doc:
    """The document without any module's routes: info, security, Problem, and the public routes
    of the foundation (/healthz, /readyz) and of this module."""
    problem_types = "\n".join(f"- `{TYPE_PREFIX}{slug}`: {title}" for slug, title in TYPES.items())
    text = {"type": "object", "additionalProperties": True}
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "ctripd",
            "version": "1",
            "description": (
                "Self-hosted crypto payment gateway for EVM chains.\n\n"
                "Authenticate with `Authorization: Bearer <key>` (keys come from "
                "`ctripd api-key create`). Amounts are decimal strings in asset units, with "
                "`*_base_units` integer strings beside them. Errors are RFC 9457 "
                "`application/problem+json`; problem types:\n\n" + problem_types
            ),
        },
        "security": [{"bearerAuth": []}],
        "paths": {
            "/healthz": {
                "get": {
                    "summary": "The process is up",
                    "operationId": "healthz",
                    "security": [],
                    "responses": {"200": {"description": "Up", "content": json_content(text)}},
                }
            },
            "/readyz": {
                "get": {
                    "summary": "Database and every chain's RPC answer correctly",
                    "operationId": "readyz",
                    "security": [],
                    "responses": {
                        "200": {"description": "Ready", "content": json_content(text)},
                        "503": {"description": "Not ready", "content": json_content(text)},
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "operationId": "openapi",
                    "security": [],
                    "responses": {
                        "200": {"description": "OpenAPI 3.0.3", "content": json_content(text)}
                    },
                }
            },
            "/docs": {
                "get": {
                    "summary": "This document as HTML",
                    "operationId": "docs",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "HTML",
                            "content": {"text/html": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key `ctk_…` from `ctripd api-key create`.",
                }
            },
            "schemas": {
                "Problem": {
                    "type": "object",
                    "description": "RFC 9457 problem details.",
                    "required": ["type", "title", "status", "detail"],
                    "properties": {
                        "type": {"type": "string", "enum": [TYPE_PREFIX + s for s in TYPES]},
                        "title": {"type": "string"},
                        "status": {"type": "integer"},
                        "detail": {"type": "string"},
                        "instance": {"type": "string"},
                        "field": {
                            "type": "string",
                            "description": "The offending request field, for validation errors.",
                        },
                        "scope": {
                            "type": "string",
                            "description": "The scope the API key lacks, on a 403.",
                        },
                    },
                }
            },
        },
    }


def document(app: web.Application, paths: Doc, schemas: Doc | None = None) -> None:
    """Add a module's paths and component schemas to the app's document."""
    if OPENAPI not in app:
        app[OPENAPI] = base_document()
    doc = app[OPENAPI]
    for path, operations in paths.items():
        target = doc["paths"].setdefault(path, {})
        for method, operation in operations.items():
            if method in target:
                raise ValueError(f"OpenAPI: {method.upper()} {path} documented twice")
            target[method] = _with_scope(method, path, operation)
    for name, schema in (schemas or {}).items():
        if name in doc["components"]["schemas"]:
            raise ValueError(f"OpenAPI: schema {name} defined twice")
        doc["components"]["schemas"][name] = schema


def _with_scope(method: str, path: str, operation: Doc) -> Doc:
    """The operation with the API-key scope it needs (`x-scope`, its description, and the 403
    of a key without it), and the 429 of a key over its rate limit."""
    scope = ROUTE_SCOPES.get((method.upper(), path))
    if scope is None:
        return operation
    note = f"Needs an API key with the scope `{scope}`."
    description = operation.get("description")
    return {
        **operation,
        "description": f"{description}\n\n{note}" if description else note,
        "x-scope": scope,
        "responses": {**operation["responses"], **problem_responses(403, 429)},
    }


async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(body=orjson.dumps(request.app[OPENAPI]), content_type="application/json")


async def docs(request: web.Request) -> web.Response:
    return web.Response(text=render_html(request.app[OPENAPI]), content_type="text/html")


def render_html(doc: Doc) -> str:
    """The document as one static page: operations with parameters, bodies and responses."""
    esc = html.escape
    out: list[str] = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        "<meta name=viewport content='width=device-width,initial-scale=1'>",
        f"<title>{esc(doc['info']['title'])} API</title><style>{_CSS}</style></head><body>",
        f"<h1>{esc(doc['info']['title'])} API v{esc(doc['info']['version'])}</h1>",
        "<p><a href='/openapi.json'>openapi.json</a></p>",
        f"<div class=desc>{_md(doc['info']['description'])}</div>",
        "<h2>Operations</h2><ul class=toc>",
    ]
    operations = [
        (path, method, op)
        for path, item in sorted(doc["paths"].items())
        for method, op in item.items()
    ]
    for path, method, op in operations:
        anchor = op.get("operationId", f"{method}-{path}")
        out.append(
            f"<li><a href='#{esc(anchor)}'><b class=m>{method.upper()}</b> {esc(path)}</a> "
            f"{esc(op.get('summary', ''))}</li>"
        )
    out.append("</ul>")
    for path, method, op in operations:
        out.append(_render_operation(doc, path, method, op))
    out.append("<h2>Schemas</h2>")
    for name, schema in doc["components"]["schemas"].items():
        out.append(f"<h3 id='schema-{esc(name)}'>{esc(name)}</h3><pre>{_linked_json(schema)}</pre>")
    out.append("</body></html>")
    return "\n".join(out)


def _render_operation(doc: Doc, path: str, method: str, op: Doc) -> str:
    esc = html.escape
    anchor = op.get("operationId", f"{method}-{path}")
    public = op.get("security", doc.get("security")) == []
    parts = [
        f"<section id='{esc(anchor)}'><h3><b class=m>{method.upper()}</b> {esc(path)}</h3>",
        f"<p>{esc(op.get('summary', ''))}{' <i>(public)</i>' if public else ''}</p>",
    ]
    if "description" in op:
        parts.append(f"<div class=desc>{_md(op['description'])}</div>")
    params = op.get("parameters", [])
    if params:
        parts.append(
            "<table><tr><th>parameter</th><th>in</th><th>schema</th><th>description</th></tr>"
        )
        for p in params:
            parts.append(
                f"<tr><td><code>{esc(p['name'])}</code>{'*' if p.get('required') else ''}</td>"
                f"<td>{esc(p['in'])}</td><td><code>{_linked_json(p.get('schema', {}))}</code></td>"
                f"<td>{esc(p.get('description', ''))}</td></tr>"
            )
        parts.append("</table>")
    if "requestBody" in op:
        for media, content in op["requestBody"]["content"].items():
            parts.append(f"<p>Request body <code>{esc(media)}</code>:</p>")
            parts.append(f"<pre>{_linked_json(content['schema'])}</pre>")
    parts.append("<table><tr><th>status</th><th>description</th><th>body</th></tr>")
    for status, response in op["responses"].items():
        bodies = ", ".join(
            f"<code>{esc(media)}</code> {_linked_json(c.get('schema', {}))}"
            for media, c in response.get("content", {}).items()
        )
        parts.append(
            f"<tr><td>{esc(status)}</td><td>{esc(response['description'])}</td><td>{bodies}</td></tr>"
        )
    parts.append("</table></section>")
    return "\n".join(parts)


def _linked_json(schema: Doc) -> str:
    """Pretty JSON of a schema, with `$ref`s turned into links to the schema section."""
    text = html.escape(json.dumps(schema, indent=2, ensure_ascii=False))
    return _REF.sub(lambda m: f"<a href='#schema-{m[1]}'>{m[1]}</a>", text)


def _md(text: str) -> str:
    """The tiny Markdown subset used in descriptions: paragraphs, `- ` lists, `code`."""
    out = []
    for block in text.split("\n\n"):
        lines = block.split("\n")
        if all(line.startswith("- ") for line in lines):
            out.append(
                "<ul>" + "".join(f"<li>{_inline(line[2:])}</li>" for line in lines) + "</ul>"
            )
        else:
            out.append(f"<p>{_inline(block)}</p>")
    return "".join(out)


def _inline(text: str) -> str:
    return _CODE.sub(lambda m: f"<code>{m[1]}</code>", html.escape(text))


_REF = re.compile(r"&quot;\$ref&quot;: &quot;#/components/schemas/(\w+)&quot;")
_CODE = re.compile(r"`([^`]+)`")
_CSS = (
    "body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;"
    "color:#222}pre,code{font:13px ui-monospace,monospace;background:#f5f5f5}"
    "pre{padding:.5rem;overflow:auto}table{border-collapse:collapse;width:100%;margin:.5rem 0}"
    "td,th{border:1px solid #ddd;padding:.25rem .5rem;text-align:left;vertical-align:top}"
    "section{border-top:1px solid #ccc;margin-top:1.5rem}.m{color:#05a}.toc{columns:2}"
)


def setup_routes(app: web.Application) -> None:
    if OPENAPI not in app:
        app[OPENAPI] = base_document()
    app.router.add_get("/openapi.json", openapi_json)
    app.router.add_get("/docs", docs)
