"""The address guard of media URLs: a host must resolve to public addresses only.

A media URL comes from data (catalogs, API answers), so it may name the cloud's metadata
service, a private network or the machine itself. A guarded connection resolves its host once,
refuses it when any address is loopback, link-local, private, shared, multicast, reserved or
unspecified (loopback only with the explicit allowance), and then connects to the very addresses
it checked: a name that answers differently a moment later (DNS rebinding) cannot slip past, and
a kept-alive connection needs no lookup at all.
"""

from __future__ import annotations

import ipaddress
import os
import socket

from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

ALLOW_LOOPBACK_ENV = "BIOVITA_ALLOW_LOOPBACK"  # "1": guarded calls may reach 127.0.0.1 / ::1


class Refused(Exception):
    """A guarded host that resolves to an address the client may not reach (not an OSError,
    so urllib3 passes it through instead of retrying it as a connection failure)."""


def allow_loopback_from_env() -> bool:
    """BIOVITA_ALLOW_LOOPBACK=1 (or true/yes): the explicit loopback allowance."""
    return os.environ.get(ALLOW_LOOPBACK_ENV, "").strip().lower() in ("1", "true", "yes")


def address_kind(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why an address is not a public one (loopback, link-local, ...), or None."""
    mapped = getattr(ip, "ipv4_mapped", None)
    if mapped is not None:
        ip = mapped
    checks = (
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("unspecified", ip.is_unspecified),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
        ("non-global", not ip.is_global),
    )
    return next((kind for kind, hit in checks if hit), None)


def checked_addresses(host: str, port: int, allow_loopback: bool) -> list[str]:
    """The addresses `host` resolves to, in the resolver's order; Refused when any of them is
    not public (loopback passes with the allowance). socket.gaierror when it does not resolve."""
    found: list[str] = []
    for *_, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        address = str(sockaddr[0]).split("%", 1)[0]
        kind = address_kind(ipaddress.ip_address(address))
        if kind is not None and not (kind == "loopback" and allow_loopback):
            hint = f" (set {ALLOW_LOOPBACK_ENV}=1 to allow it)" if kind == "loopback" else ""
            raise Refused(f"{host} resolves to {address}, a {kind} address: refused{hint}")
        if address not in found:
            found.append(address)
    return found


class GuardedHTTPConnection(HTTPConnection):
    """An HTTP connection to the addresses its host was checked to resolve to."""

    allow_loopback = False

    def _new_conn(self) -> socket.socket:
        addresses = checked_addresses(self._dns_host, self.port, self.allow_loopback)
        host = self._dns_host  # urllib3 connects to _dns_host; Host, SNI and TLS use self.host
        failure: Exception | None = None
        try:
            for address in addresses:  # as urllib3 would, one address after another
                self._dns_host = address
                try:
                    return super()._new_conn()
                except (NewConnectionError, ConnectTimeoutError) as exc:
                    failure = exc
        finally:
            self._dns_host = host
        raise failure or NewConnectionError(self, f"{host} resolves to no address")


class GuardedHTTPSConnection(GuardedHTTPConnection, HTTPSConnection):
    """The same over TLS (the certificate still checked against the host's name)."""


def guarded_pools(allow_loopback: bool) -> dict[str, type[HTTPConnectionPool]]:
    """urllib3 pool classes by scheme whose connections are guarded (loopback as allowed)."""
    flag = {"allow_loopback": allow_loopback}
    http = type("GuardedHTTP", (GuardedHTTPConnection,), flag)
    https = type("GuardedHTTPS", (GuardedHTTPSConnection,), flag)
    return {
        "http": type("GuardedHTTPPool", (HTTPConnectionPool,), {"ConnectionCls": http}),
        "https": type("GuardedHTTPSPool", (HTTPSConnectionPool,), {"ConnectionCls": https}),
    }
