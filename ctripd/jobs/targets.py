"""Where merchants' webhook endpoints may point (SSRF guard): `https` URLs of public hosts.

Plain `http`, loopback (`localhost`, `*.localhost`, 127.0.0.0/8, ::1), private, link-local and
other non-public addresses are refused unless `webhooks.allow_private_targets` (as `ctripd dev`
and the tests set) allows them: an endpoint's answers are readable through `GET /v1/events`, so
any reachable internal service would be. IPv6 forms that carry an IPv4 address (IPv4-mapped,
IPv4-compatible ::/96, NAT64 64:ff9b::/96, 6to4 2002::/16) are judged by that address. A host
name must be a valid IDNA name (what delivery encodes). The URL is checked when an endpoint is
created, and every address its host resolves to is checked again at each delivery
(`GuardedResolver`), so a DNS name that later points inside the network is refused too.
Redirects are never followed.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

MAX_URL_LENGTH = 2048
_LOOPBACK_NAMES = ("localhost", "localhost.")
# IPv6 prefixes whose addresses embed an IPv4 one in their low 32 bits.
_EMBEDDING_V4 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("::/96"))
_6TO4 = ipaddress.IPv6Network("2002::/16")


class TargetRefused(OSError):
    """The target's address is not one endpoints may reach."""


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address `host` names, as the IPv4 address it carries if it carries one."""
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    if not isinstance(ip, ipaddress.IPv6Address):
        return ip
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _6TO4:
        assert ip.sixtofour is not None
        return ip.sixtofour
    if any(ip in net for net in _EMBEDDING_V4) and ip != ipaddress.IPv6Address("::1"):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def _loopback(host: str) -> bool:
    ip = _ip(host)
    if ip is None:
        return host.lower() in _LOOPBACK_NAMES or host.lower().endswith(".localhost")
    return ip.is_loopback


def address_refused(address: str, allow_private: bool) -> bool:
    """Whether a delivery may not connect to `address` (an IP literal)."""
    ip = _ip(address)
    if ip is None or allow_private:
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
    if _ip(host) is None:
        try:
            host.encode("idna")
        except UnicodeError:
            raise ValueError(f"has an invalid host name {host!r}") from None
    if parts.scheme == "http" and not allow_private:
        raise ValueError("must use https (plain http only with webhooks.allow_private_targets)")
    if _loopback(host) and not allow_private:
        raise ValueError(
            f"points at the loopback host {host}: refused (webhooks.allow_private_targets)"
        )
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
