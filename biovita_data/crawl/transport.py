"""The wire under HttpClient: urllib3 connection pools, set up from the environment once.

requests cost about 1.1 CPU-ms a GET on the benchmark machine and urllib3 alone 0.35-0.45
(benchmarks/README.md); over millions of media downloads that is hours of CPU, so the client
talks to urllib3 itself and does here the little of requests it relied on, reading the
environment once per client instead of on every request:

- TLS: the CA bundle of REQUESTS_CA_BUNDLE, else CURL_CA_BUNDLE, else certifi's (as requests);
- proxies: HTTP_PROXY / HTTPS_PROXY / ALL_PROXY and NO_PROXY (socks:// needs PySocks, as it
  does for requests);
- query parameters encoded as requests encodes them (None values dropped, lists repeated);
- gzip / deflate bodies decoded;
- guarded GETs (media URLs) connect only to checked public addresses (crawl/guard.py); through
  a proxy, which connects for us, the client checks the name beforehand instead.

Not carried over: credentials from a netrc file and cookies, which no source uses (keys come
from the environment, see crawl/sources).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from urllib.parse import SplitResult, urlencode, urlsplit, urlunsplit
from urllib.request import getproxies, proxy_bypass_environment

import certifi
import urllib3

from biovita_data.crawl.guard import guarded_pools

POOL_SIZE = 64  # connections kept per host: above any policy's concurrency


def ca_bundle_from_env() -> str | None:
    """The CA bundle the environment names for requests-style clients, if any."""
    return os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or None


def with_params(url: str, params: Mapping[str, object] | None) -> str:
    """`url` with `params` appended to its query (the fragment dropped: never sent)."""
    parts = urlsplit(url)
    pairs = [
        (k, v)
        for k, vs in (params or {}).items()
        for v in (vs if isinstance(vs, list | tuple) else [vs])
        if v is not None
    ]
    query = "&".join(q for q in (parts.query, urlencode(pairs)) if q)
    return urlunsplit(parts._replace(query=query, fragment=""))


class MissingBundle(OSError):
    """The environment names a CA bundle that does not exist (no TLS request can be verified)."""


class Transport:
    """GETs through one pool manager per proxy and guard (thread-safe: shared by a client's
    threads; guarded GETs never share an unguarded connection)."""

    def __init__(self, headers: Mapping[str, str], allow_loopback: bool = False) -> None:
        self.headers = dict(headers)
        self.allow_loopback = allow_loopback  # for guarded GETs
        self.bundle = ca_bundle_from_env()
        self.proxies = getproxies()  # scheme -> proxy URL; "no": NO_PROXY
        self._managers: dict[tuple[str | None, bool], urllib3.PoolManager] = {}
        self._lock = threading.Lock()

    def proxy_for(self, parts: SplitResult) -> str | None:
        """The proxy a URL goes through, or None (none set, or NO_PROXY names its host)."""
        proxy = self.proxies.get(parts.scheme) or self.proxies.get("all")
        if not proxy or proxy_bypass_environment(parts.hostname or "", self.proxies):
            return None
        return proxy

    def proxied(self, url: str) -> bool:
        """Whether a GET of `url` goes through a proxy."""
        return self.proxy_for(urlsplit(url)) is not None

    def get(
        self,
        url: str,
        params: Mapping[str, object] | None,
        timeout: tuple[float, float],
        guard: bool = False,
    ) -> urllib3.BaseHTTPResponse:
        """One GET, headers read, the body left to stream; redirects not followed, no retries
        (the client does both). urllib3's errors propagate (HTTPError and subclasses),
        MissingBundle for an https URL when the environment's CA bundle is missing, and
        guard.Refused for a guarded one whose host resolves to an address not allowed."""
        target = with_params(url, params)
        return self._manager(urlsplit(target), guard).request(
            "GET",
            target,
            timeout=urllib3.Timeout(connect=timeout[0], read=timeout[1]),
            preload_content=False,
            redirect=False,
            retries=False,
        )

    def _manager(self, parts: SplitResult, guard: bool) -> urllib3.PoolManager:
        if parts.scheme == "https" and self.bundle and not os.path.exists(self.bundle):
            raise MissingBundle(
                f"the CA bundle {self.bundle} (REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE) does not exist"
            )
        proxy = self.proxy_for(parts)
        guarded = guard and proxy is None  # a proxy's own address is not the media host's
        with self._lock:
            manager = self._managers.get((proxy, guarded))
            if manager is None:
                manager = self._managers[proxy, guarded] = self._make(proxy, guarded)
        return manager

    def _make(self, proxy: str | None, guarded: bool) -> urllib3.PoolManager:
        settings = {
            "maxsize": POOL_SIZE,
            "headers": self.headers,
            "ca_certs": self.bundle or certifi.where(),
        }
        if proxy is None:
            manager = urllib3.PoolManager(**settings)
            if guarded:  # connections that check the addresses they connect to
                manager.pool_classes_by_scheme = guarded_pools(self.allow_loopback)
            return manager
        if proxy.startswith("socks"):
            from urllib3.contrib.socks import SOCKSProxyManager  # PySocks, as requests needs

            return SOCKSProxyManager(proxy, **settings)
        return urllib3.ProxyManager(proxy, **settings)
