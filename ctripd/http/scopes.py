"""Scopes of API keys, and the scope each `/v1/` route needs: one table, so that a route without
a scope is caught by a test rather than left open."""

from __future__ import annotations

from aiohttp import web

SCOPES = (
    "payments:write",
    "payments:read",
    "events:read",
    "events:write",
    "refunds:write",
    "payouts:write",
    "webhooks:manage",
)

# (method, route) → the scope it needs; HEAD is checked as GET.
ROUTE_SCOPES: dict[tuple[str, str], str] = {
    ("POST", "/v1/payments"): "payments:write",
    ("GET", "/v1/payments"): "payments:read",
    ("GET", "/v1/payments/{id}"): "payments:read",
    ("GET", "/v1/payments/export.csv"): "payments:read",
    ("GET", "/v1/payments/{id}/transfers"): "payments:read",
    ("POST", "/v1/payments/{id}/cancel"): "payments:write",
    ("POST", "/v1/payments/{id}/refunds"): "refunds:write",
    ("GET", "/v1/payments/{id}/refunds"): "payments:read",
    ("GET", "/v1/refunds/{id}"): "payments:read",
    ("POST", "/v1/payouts"): "payouts:write",
    ("GET", "/v1/payouts"): "payouts:write",
    ("GET", "/v1/payouts/{id}"): "payouts:write",
    ("GET", "/v1/chains"): "payments:read",
    ("GET", "/v1/events"): "events:read",
    ("POST", "/v1/events/{id}/redeliver"): "events:write",
    ("POST", "/v1/webhook-endpoints"): "webhooks:manage",
    ("GET", "/v1/webhook-endpoints"): "webhooks:manage",
    ("GET", "/v1/webhook-endpoints/{id}"): "webhooks:manage",
    ("DELETE", "/v1/webhook-endpoints/{id}"): "webhooks:manage",
    ("POST", "/v1/webhook-endpoints/{id}/rotate-secret"): "webhooks:manage",
    ("POST", "/v1/webhook-endpoints/{id}/test"): "webhooks:manage",
}


def check_scopes(scopes: list[str]) -> list[str]:
    """The scopes in their canonical order; ValueError for an unknown one or none at all."""
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise ValueError(f"unknown scope {', '.join(unknown)} (known: {', '.join(SCOPES)})")
    if not scopes:
        raise ValueError("a key needs at least one scope")
    return [s for s in SCOPES if s in scopes]


def required_scope(request: web.Request) -> str | None:
    """The scope the matched route needs; None where no route matched (a 404 or 405 follows)."""
    resource = request.match_info.route.resource
    if resource is None:
        return None
    method = "GET" if request.method == "HEAD" else request.method
    return ROUTE_SCOPES.get((method, resource.canonical))
