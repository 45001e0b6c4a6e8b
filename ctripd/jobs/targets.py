"""Where merchants' webhook endpoints may point (SSRF guard): `https` URLs of public hosts.

Plain `http` is accepted only for loopback hosts, and private, link-local and other non-public
addresses are refused, unless `webhooks.allow_private_targets` (as `ctripd dev` sets) allows
both. Loopback stays allowed either way. The URL is checked when an endpoint is created, and
every address its host resolves to is checked again at each delivery (`GuardedResolver`), so a
DNS name that later points inside the network is refused too. Redirects are never followed.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

MAX_URL_LENGTH = 2048
_LOOPBACK_NAMES = ("localhost", "localhost.")


class TargetRefused(OSError):
    """The target's address is not one endpoints may reach."""


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _loopback(host: str) -> bool:
    ip = _ip(host)
    if ip is None:
        return host.lower() in _LOOPBACK_NAMES or host.lower().endswith(".localhost")
    return ip.is_loopback


def address_refused(address: str, allow_private: bool) -> bool:
    """Whether a delivery may not connect to `address` (an IP literal)."""
    ip = _ip(address)
    if ip is None or ip.is_loopback or allow_private:
        return False
    return not ip.is_global or ip.is_multicast


def check_url(url: str, allow_private: bool) -> str:
    """`url` if an endpoint may have it; else ValueError saying why."""
    if len(url) > MAX_URL_LENGTH:
        raise ValueError(f"must be at most {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError:
        raise ValueError("is not a valid URL") from None
    host = parts.hostname or ""
    if parts.scheme not in ("https", "http") or not host:
        raise ValueError("must be an https:// URL with a host")
    if parts.scheme == "http" and not (allow_private or _loopback(host)):
        raise ValueError("must use https (plain http only for a loopback host)")
    if address_refused(host, allow_private):
        raise ValueError(
            f"points at the private address {host}: refused (webhooks.allow_private_targets)"
        )
    return url


class GuardedResolver(AbstractResolver):
    """Resolves like aiohttp's default resolver, then refuses the host if any of its addresses
    is one endpoints may not reach (aiohttp connects to IP literals without resolving them:
    `check_url` covers those)."""

    def __init__(self, allow_private: bool) -> None:
        self._inner = DefaultResolver()
        self._allow_private = allow_private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            if address_refused(result["host"], self._allow_private):
                raise TargetRefused(
                    f"{host} resolves to the private address {result['host']}: refused "
                    "(webhooks.allow_private_targets)"
                )
        return results

    async def close(self) -> None:
        await self._inner.close()
