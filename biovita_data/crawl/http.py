"""The one HTTP client of every source: per-host rate limits, retries, timeouts, size cap.

Redirects are followed by the client itself, so every hop gets the checks of the first URL
(http/https only, no https -> http downgrade, the address guard of a `guard=True` call) and the
rate limit of the host it lands on.

Circuit breaker: after HOST_FAILURES connection failures in a row to one host (connection
refused, DNS failure, TLS failure, connect timeout; no answer of any status in between), the
client gives that host up: every later request to it fails at once with HostUnreachable, never
retried. The count is per client, so shared by the threads of a materialize worker. Answers with
a retryable status (429, 5xx, Retry-After) keep the usual backoff and reset the count.

Address guard (`guard=True`, media URLs taken from catalogs and API answers): at every hop the
host is resolved when its connection opens, a loopback, link-local (169.254.169.254), private,
shared, multicast, reserved or unspecified address is refused with BlockedAddress, and the
connection goes to the very addresses checked (crawl/guard.py; through a proxy the name is
checked beforehand). Loopback is allowed
only by an explicit setting: `HttpClient(allow_loopback=True)`, or BIOVITA_ALLOW_LOOPBACK=1 in
the environment (which the loopback test world's servers, pipelines and demo set, and the tests).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus, urljoin, urlsplit

import urllib3
from pyrate_limiter import Limiter, Rate
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt
from urllib3.exceptions import (
    ConnectTimeoutError,
    NameResolutionError,
    NewConnectionError,
    ProtocolError,
    ProxyError,
    ReadTimeoutError,
    SSLError,
)
from urllib3.exceptions import HTTPError as Urllib3Error

from biovita_data import __version__
from biovita_data.crawl.guard import (
    Refused,
    allow_loopback_from_env,
    checked_addresses,
)
from biovita_data.crawl.transport import MissingBundle, Transport

USER_AGENT = (
    f"biovita/{__version__} (+https://github.com/biovita/biovita; biodiversity corpus builder)"
)
RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
REDIRECT_STATUS = {301, 302, 303, 307, 308}
MAX_REDIRECTS = 10
HOST_FAILURES = 5  # connection failures in a row after which a host is given up (per client)


@dataclass(frozen=True)
class HostPolicy:
    """Politeness for one host: requests per second (None: unthrottled) and concurrency cap."""

    per_second: float | None = None
    max_concurrency: int = 4


# The services' etiquette: Xeno-canto about 1 request/s, iNaturalist 60/min, the bucket unthrottled.
# Each source names its policy when it calls the client; a call without one is limited per host.
DEFAULT_POLICIES = {
    "xeno-canto": HostPolicy(per_second=1.0, max_concurrency=1),
    "inaturalist": HostPolicy(per_second=1.0, max_concurrency=2),
    "inat-static": HostPolicy(per_second=None, max_concurrency=8),
    "inat-open-data": HostPolicy(per_second=None, max_concurrency=8),
    # GBIF asks for modest, sequential use of the occurrence API; media hosts vary per dataset
    "gbif": HostPolicy(per_second=2.0, max_concurrency=1),
    "gbif-media": HostPolicy(per_second=None, max_concurrency=4),
}


class FetchError(RuntimeError):
    """A request that failed for good (after retries, or a non-retryable status)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class HostUnreachable(FetchError):
    """A request to a host the circuit breaker gave up: every connection to it failed."""

    def __init__(self, message: str, host: str) -> None:
        super().__init__(message)
        self.host = host


class BlockedAddress(FetchError):
    """A guarded URL whose host resolves to an address the client may not reach."""


def host_key(url: str) -> str:
    """`host:port` of a URL (the port the scheme implies when none is given)."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = parts.hostname or ""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check_address(url: str, allow_loopback: bool = False) -> None:
    """BlockedAddress unless every address the URL's host resolves to is a public one: the
    check ahead of a guarded GET through a proxy (without one, the connection itself checks
    the addresses it connects to: crawl/guard.py).

    A name that does not resolve passes: the request itself then fails (a DNS failure)."""
    parts = urlsplit(url)
    try:
        checked_addresses(parts.hostname or "", parts.port or 80, allow_loopback)
    except Refused as exc:
        raise BlockedAddress(f"{exc} ({url.split('?', 1)[0][:120]})") from None
    except (socket.gaierror, UnicodeError, OSError):
        return


def _connect_failure(exc: Urllib3Error) -> str | None:
    """The kind of a failure to reach a host at all (the breaker counts these), else None.

    A proxy's failure is not the host's. urllib3's NewConnectionError is a ConnectTimeoutError
    too, so the order of the checks matters."""
    if isinstance(exc, ProxyError):
        return None
    if isinstance(exc, SSLError):
        return "TLS failure"
    if isinstance(exc, NameResolutionError):
        return "DNS failure"
    if isinstance(exc, NewConnectionError):
        return "connection refused" if "refused" in str(exc).lower() else "connection failed"
    if isinstance(exc, ConnectTimeoutError):
        return "connect timeout"
    return None


def _failure(exc: Urllib3Error) -> str:
    """A transport failure in words, for messages."""
    if isinstance(exc, ReadTimeoutError):
        return "read timeout"
    if isinstance(exc, ProtocolError):
        return f"connection broken ({exc.args[1] if len(exc.args) > 1 else exc})"
    return _connect_failure(exc) or type(exc).__name__


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def check_url(url: str, came_from: str | None = None) -> str:
    """An absolute http(s) URL with a host; a redirect may not go from https to http."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FetchError(f"not an http(s) URL: {url.split('?', 1)[0][:120]!r}")
    if came_from and urlsplit(came_from).scheme == "https" and parts.scheme == "http":
        raise FetchError(f"redirect from https to http refused: {url.split('?', 1)[0][:120]}")
    return url


def secret_forms(secret: str) -> list[str]:
    """The ways a server may echo a secret: as is, URL-encoded (%XX or +), JSON-escaped."""
    forms = {
        secret,
        quote(secret, safe=""),
        quote(secret),
        quote_plus(secret),
        secret.replace("/", "\\/"),
        json.dumps(secret)[1:-1],
    }
    return sorted((f for f in forms if f), key=len, reverse=True)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            import datetime as dt

            return max(
                0.0, (parsedate_to_datetime(value) - dt.datetime.now(dt.UTC)).total_seconds()
            )
        except (TypeError, ValueError):
            return None


class HttpClient:
    """GET with retries (exponential backoff + jitter, honouring Retry-After) and rate limits.

    `policies` maps a policy name to a HostPolicy; a call names its policy (`policy=`, as every
    source does), or the URL's host name is the policy. `secrets` are redacted from every error
    message.
    """

    def __init__(
        self,
        policies: dict[str, HostPolicy] | None = None,
        *,
        retries: int = 6,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        timeout: tuple[float, float] = (10.0, 60.0),
        max_bytes: int = 512 * 2**20,
        secrets: tuple[str, ...] = (),
        throttle: bool = True,
        deadline_s: float = 900.0,
        download_deadline_s: float = 6 * 3600.0,
        host_failures: int = HOST_FAILURES,
        allow_loopback: bool | None = None,
    ) -> None:
        self.policies = dict(DEFAULT_POLICIES if policies is None else policies)
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.secrets = tuple(s for s in secrets if s)
        self.throttle = throttle
        # the most one call may take, retries included: a per-read timeout alone lets a server
        # that trickles a byte every few seconds hold a request for ever
        self.deadline_s = deadline_s
        self.download_deadline_s = download_deadline_s
        self.host_failures = max(1, int(host_failures))
        # guarded calls may reach loopback only when told so (None: BIOVITA_ALLOW_LOOPBACK)
        self.allow_loopback = (
            allow_loopback_from_env() if allow_loopback is None else allow_loopback
        )
        self.stats: Counter = Counter()
        self._failing: dict[str, int] = {}  # host:port -> connection failures in a row
        self.unreachable: dict[str, str] = {}  # host:port given up -> the kind of failure
        self._transport: Transport | None = None  # made at the first request (environment)
        self._lock = threading.Lock()
        self._limiters: dict[str, Limiter] = {}
        self._slots: dict[str, threading.BoundedSemaphore] = {}

    # ------------------------------------------------------------------ plumbing
    def redact(self, text: str) -> str:
        """`text` with every secret replaced by `***`, in any form a server may echo it."""
        forms = sorted({f for s in self.secrets for f in secret_forms(s)}, key=len, reverse=True)
        if not forms:
            return text
        return re.sub("|".join(map(re.escape, forms)), "***", text, flags=re.IGNORECASE)

    def transport(self) -> Transport:
        """The client's connection pools, made from the environment at the first request."""
        with self._lock:
            if self._transport is None:
                headers = urllib3.util.make_headers(accept_encoding=True, user_agent=USER_AGENT)
                self._transport = Transport({**headers, "Accept": "*/*"}, self.allow_loopback)
            return self._transport

    def _gates(self, policy: str) -> tuple[Limiter | None, threading.BoundedSemaphore]:
        with self._lock:
            if policy not in self._slots:
                p = self.policies.get(policy, HostPolicy())
                self._slots[policy] = threading.BoundedSemaphore(p.max_concurrency)
                if p.per_second and self.throttle:
                    # one permit per 1/rate seconds, so requests are spread, not bursted
                    ms = max(1, round(1000 / p.per_second))
                    self._limiters[policy] = Limiter(Rate(1, ms))
            return self._limiters.get(policy), self._slots[policy]

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        expo = min(self.max_backoff_s, self.backoff_s * 2 ** (state.attempt_number - 1))
        wait = random.uniform(0, expo)  # full jitter
        if isinstance(exc, _Retryable) and exc.retry_after is not None:
            wait = max(wait, min(exc.retry_after, self.max_backoff_s * 4))
        return wait

    def _note_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        with self._lock:
            self.stats["retries"] += 1
            self.stats[f"error: {self.redact(str(exc)).split(' for ', 1)[0][:60]}"] += 1

    # ------------------------------------------------------------------ API
    def get(
        self,
        url: str,
        params: dict | None = None,
        *,
        policy: str | None = None,
        guard: bool = False,
    ) -> bytes:
        """The body of a 200 response; FetchError once retries are exhausted or on a 4xx.

        `guard`: the URL comes from data (a media URL): refuse non-public addresses at every hop.
        """
        return self._fetch(url, params, policy, None, self.deadline_s, guard)

    def download(self, url: str, dest: Path, *, policy: str | None = None) -> Path:
        """Stream a (large) 200 body to `dest` atomically, without the in-memory size cap."""
        self._fetch(url, None, policy, dest, self.download_deadline_s, False)
        return dest

    def _acquire(self, name: str) -> threading.BoundedSemaphore:
        """Wait for a permit of policy `name` (pyrate-limiter 4 blocks); its concurrency slot."""
        limiter, slot = self._gates(name)
        if limiter is not None and not limiter.try_acquire(name, blocking=True):
            raise _Retryable(f"rate limiter refused a permit for {name}")
        return slot

    def _fetch(
        self,
        url: str,
        params: dict | None,
        policy: str | None,
        dest: Path | None,
        deadline_s: float,
        guard: bool = False,
    ) -> bytes:
        check_url(url)
        name = policy or urlsplit(url).hostname or ""
        start = time.monotonic()

        def attempt() -> bytes:
            target, query, gate = url, params, name
            for _ in range(MAX_REDIRECTS + 1):
                self._check_host(target)
                if guard and self.transport().proxied(target):
                    check_address(target, self.allow_loopback)
                with self._acquire(gate):
                    resp = self._request(target, query, start + deadline_s, guard)
                    if resp.status not in REDIRECT_STATUS or "Location" not in resp.headers:
                        return self._body(resp, target, dest, start + deadline_s)
                    resp.close()
                nxt = check_url(urljoin(target, resp.headers["Location"]), came_from=target)
                with self._lock:
                    self.stats["redirects"] += 1
                host = urlsplit(nxt).hostname
                if host != urlsplit(target).hostname:
                    gate = host or ""  # another host: its own (per-host) policy
                target, query = nxt, None
            raise FetchError(f"more than {MAX_REDIRECTS} redirects for {url.split('?', 1)[0]}")

        retrying = Retrying(
            retry=retry_if_exception(lambda e: isinstance(e, _Retryable)),
            stop=stop_after_attempt(self.retries + 1),
            wait=self._wait,
            before_sleep=self._note_retry,
            reraise=True,
        )
        try:
            return retrying(attempt)
        except _Retryable as exc:
            with self._lock:
                self.stats["failed"] += 1
            raise FetchError(
                self.redact(f"giving up after {self.retries} retries: {exc}")
            ) from None
        except FetchError as exc:
            exc.args = (self.redact(str(exc)),)  # keeps its class (HostUnreachable, ...)
            raise exc from None

    def _check_host(self, url: str) -> None:
        """HostUnreachable for a host the breaker gave up."""
        key = host_key(url)
        with self._lock:
            kind = self.unreachable.get(key)
            if kind is not None:
                self.stats["host_unreachable"] += 1
        if kind is not None:
            raise HostUnreachable(
                f"host {key} unreachable: {self.host_failures} connections in a row failed "
                f"({kind}); not requested",
                key,
            )

    def _connection_failed(self, url: str, kind: str) -> None:
        """Count a failure to reach the host; give it up (HostUnreachable) at the threshold."""
        key = host_key(url)
        with self._lock:
            n = self._failing[key] = self._failing.get(key, 0) + 1
            opened = n >= self.host_failures and key not in self.unreachable
            if opened:
                self.unreachable[key] = kind
                self.stats[f"unreachable host: {key}"] += 1
        if opened:
            raise HostUnreachable(
                f"host {key} unreachable: {n} connections in a row failed ({kind}); given up",
                key,
            )

    def _request(
        self, url: str, params: dict | None, deadline: float, guard: bool = False
    ) -> urllib3.BaseHTTPResponse:
        """One GET, redirects not followed, headers read; the body is left to `_body`.
        `guard`: connect only to public addresses (BlockedAddress when the host resolves to
        any other; not counted as a request: nothing was sent)."""
        where = url.split("?", 1)[0]
        left = deadline - time.monotonic()
        if left <= 0:
            raise FetchError(f"deadline exceeded before the request for {where}")
        connect, read = self.timeout
        sent = True
        try:
            resp = self.transport().get(url, params, (min(connect, left), min(read, left)), guard)
        except Refused as exc:
            sent = False
            raise BlockedAddress(f"{exc} ({where[:120]})") from None
        except ValueError as exc:  # a URL (LocationValueError) or header urllib3 refuses
            raise FetchError(f"{type(exc).__name__} for {where}: {exc}") from None
        except MissingBundle as exc:  # a setting to mend, not a host to retry or give up
            sent = False
            raise FetchError(f"{exc}: {where} not requested") from None
        except Urllib3Error as exc:
            kind = _connect_failure(exc)
            if kind is not None:
                self._connection_failed(url, kind)
            raise _Retryable(f"{_failure(exc)} for {where}") from None
        finally:
            if sent:
                with self._lock:
                    self.stats["requests"] += 1
        with self._lock:
            self._failing.pop(host_key(url), None)  # the host answered
        return resp

    def _chunks(self, resp: urllib3.BaseHTTPResponse, where: str, deadline: float):
        """The body as it arrives (not a fixed chunk size), checking the deadline in between.
        Decoded only when it is encoded: an identity body skips urllib3's decoded buffer
        (~0.05 CPU-ms a 270 KB GET)."""
        decode = bool(resp.headers.get("Content-Encoding"))
        while True:
            if time.monotonic() > deadline:
                raise FetchError(f"deadline exceeded while reading the body of {where}")
            chunk = resp.read1(1 << 20, decode_content=decode)
            if not chunk:
                return
            yield chunk

    def _body(
        self, resp: urllib3.BaseHTTPResponse, url: str, dest: Path | None, deadline: float
    ) -> bytes:
        """Read a response to the end: retryable statuses, size cap, streamed or in memory.
        A response read to its end gives its connection back to the pool; any other is closed."""
        where = url.split("?", 1)[0]
        whole = False
        try:
            if resp.status in RETRY_STATUS:
                ra = _retry_after(resp.headers.get("Retry-After"))
                raise _Retryable(f"HTTP {resp.status} for {where}", ra)
            declared = int(resp.headers.get("Content-Length") or 0)
            to_file = dest is not None and resp.status == 200
            if declared > self.max_bytes and not to_file:
                raise FetchError(f"{declared} bytes exceed the size cap: {where}")
            parts: list[bytes] = []  # joined once at the end: no copy per chunk
            size = 0
            tmp = dest.with_name(f".{dest.name}.part") if to_file and dest else None
            try:
                with open(tmp, "wb") if tmp else contextlib.nullcontext() as sink:
                    for chunk in self._chunks(resp, where, deadline):
                        if sink is not None:
                            sink.write(chunk)
                            continue
                        parts.append(chunk)
                        size += len(chunk)
                        if size > self.max_bytes:
                            raise FetchError(f"body exceeds the size cap: {where}")
            except (Urllib3Error, OSError) as exc:
                if tmp is not None:
                    tmp.unlink(missing_ok=True)
                what = _failure(exc) if isinstance(exc, Urllib3Error) else type(exc).__name__
                raise _Retryable(f"truncated body ({what}) for {where}") from None
            except FetchError:
                if tmp is not None:
                    tmp.unlink(missing_ok=True)
                raise
            whole = True
            body = parts[0] if len(parts) == 1 else b"".join(parts)
            if resp.status != 200:
                text = self.redact(body[:300].decode(errors="replace"))
                raise FetchError(f"HTTP {resp.status} for {where}: {text}", resp.status)
            if tmp is not None and dest is not None:
                os.replace(tmp, dest)
            return bytes(body)
        finally:
            if whole:
                resp.release_conn()
            else:
                resp.close()

    def get_json(self, url: str, params: dict | None = None, *, policy: str | None = None) -> Any:
        body = self.get(url, params, policy=policy)
        try:
            return json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise FetchError(f"invalid JSON from {url.split('?', 1)[0]}: {exc}") from None
