"""The one HTTP client of every source: per-host rate limits, retries, timeouts, size cap."""

from __future__ import annotations

import contextlib
import json
import os
import random
import threading
from collections import Counter
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from pyrate_limiter import Duration, Limiter, Rate
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from biovita_data import __version__

USER_AGENT = (
    f"biovita/{__version__} (+https://github.com/biovita/biovita; biodiversity corpus builder)"
)
RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}


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


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


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
    ) -> None:
        self.policies = dict(DEFAULT_POLICIES if policies is None else policies)
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.secrets = tuple(s for s in secrets if s)
        self.throttle = throttle
        self.stats: Counter = Counter()
        self._local = threading.local()
        self._lock = threading.Lock()
        self._limiters: dict[str, Limiter] = {}
        self._slots: dict[str, threading.BoundedSemaphore] = {}

    # ------------------------------------------------------------------ plumbing
    def redact(self, text: str) -> str:
        for s in self.secrets:
            text = text.replace(s, "***")
        return text

    def _session(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = requests.Session()
            s.headers["User-Agent"] = USER_AGENT
            self._local.session = s
        return s

    def _gates(self, policy: str) -> tuple[Limiter | None, threading.BoundedSemaphore]:
        with self._lock:
            if policy not in self._slots:
                p = self.policies.get(policy, HostPolicy())
                self._slots[policy] = threading.BoundedSemaphore(p.max_concurrency)
                if p.per_second and self.throttle:
                    # one permit per 1/rate seconds, so requests are spread, not bursted
                    ms = max(1, round(1000 / p.per_second))
                    self._limiters[policy] = Limiter(Rate(1, Duration.SECOND * ms / 1000))
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
            self.stats[f"error: {str(exc).split(' for ', 1)[0][:60]}"] += 1

    # ------------------------------------------------------------------ API
    def get(self, url: str, params: dict | None = None, *, policy: str | None = None) -> bytes:
        """The body of a 200 response; FetchError once retries are exhausted or on a 4xx."""
        return self._fetch(url, params, policy, None)

    def download(self, url: str, dest: Path, *, policy: str | None = None) -> Path:
        """Stream a (large) 200 body to `dest` atomically, without the in-memory size cap."""
        self._fetch(url, None, policy, dest)
        return dest

    def _fetch(self, url: str, params: dict | None, policy: str | None, dest: Path | None) -> bytes:
        name = policy or urlsplit(url).hostname or ""
        limiter, slot = self._gates(name)
        where = url.split("?", 1)[0]

        def attempt() -> bytes:
            if limiter is not None:
                limiter.try_acquire(name)
            with slot:
                with self._lock:
                    self.stats["requests"] += 1
                try:
                    resp = self._session().get(
                        url, params=params, timeout=self.timeout, stream=True
                    )
                except (requests.ConnectionError, requests.Timeout) as exc:
                    raise _Retryable(f"{type(exc).__name__} for {where}") from None
                try:
                    if resp.status_code in RETRY_STATUS:
                        ra = _retry_after(resp.headers.get("Retry-After"))
                        raise _Retryable(f"HTTP {resp.status_code} for {where}", ra)
                    declared = int(resp.headers.get("Content-Length") or 0)
                    to_file = dest is not None and resp.status_code == 200
                    if declared > self.max_bytes and not to_file:
                        raise FetchError(f"{declared} bytes exceed the size cap: {where}")
                    body = bytearray()
                    tmp = dest.with_name(f".{dest.name}.part") if to_file else None
                    try:
                        with open(tmp, "wb") if tmp else contextlib.nullcontext() as sink:
                            for chunk in resp.iter_content(1 << 20):
                                if sink is not None:
                                    sink.write(chunk)
                                    continue
                                body += chunk
                                if len(body) > self.max_bytes:
                                    raise FetchError(f"body exceeds the size cap: {where}")
                    except (
                        requests.ConnectionError,
                        requests.exceptions.ChunkedEncodingError,
                        requests.Timeout,
                    ) as exc:
                        raise _Retryable(
                            f"truncated body ({type(exc).__name__}) for {where}"
                        ) from None
                    if resp.status_code != 200:
                        text = self.redact(body[:300].decode(errors="replace"))
                        raise FetchError(
                            f"HTTP {resp.status_code} for {where}: {text}", resp.status_code
                        )
                    if tmp is not None:
                        os.replace(tmp, dest)
                    return bytes(body)
                finally:
                    resp.close()

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

    def get_json(self, url: str, params: dict | None = None, *, policy: str | None = None) -> Any:
        body = self.get(url, params, policy=policy)
        try:
            return json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise FetchError(f"invalid JSON from {url.split('?', 1)[0]}: {exc}") from None
