"""Downloads through the project's HttpClient; failures become (reason, detail) pairs."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from biovita_data.crawl.http import (
    HOST_FAILURES,
    BlockedAddress,
    FetchError,
    HostPolicy,
    HostUnreachable,
    HttpClient,
)
from biovita_data.crawl.sources import MEDIA_POLICIES
from biovita_data.media.records import ItemFailure
from biovita_data.media.settings import WorkItem

_STATUS = re.compile(r"HTTP (\d{3}) for")  # the last status retried, in a give-up message


def fetch_item(http: HttpClient, item: WorkItem) -> bytes:
    """The record's bytes (retried and rate-limited by `http`), or ItemFailure.

    A media URL comes from data: its host must resolve to public addresses at every hop
    (`blocked_address` otherwise); a host the client gave up fails as `host_unreachable`."""
    if not item.media_url:
        raise ItemFailure("no_media_url", "the manifest row has no media_url")
    try:
        data = http.get(item.media_url, policy=MEDIA_POLICIES.get(item.source), guard=True)
    except HostUnreachable as exc:
        raise ItemFailure("host_unreachable", str(exc)) from None
    except BlockedAddress as exc:
        raise ItemFailure("blocked_address", str(exc)) from None
    except FetchError as exc:
        if exc.status is None and "size cap" in str(exc):
            raise ItemFailure("too_large", str(exc)) from None
        last = exc.status or next(iter(_STATUS.findall(str(exc))[-1:]), None)
        status = f"status {last}: " if last else ""
        raise ItemFailure("http_error", f"{status}{exc}") from None
    if not data:
        raise ItemFailure("undecodable", "empty response body")
    return data


@dataclass(frozen=True)
class HttpSpec:
    """A picklable recipe for an HttpClient like another one (for Ray tasks on other hosts)."""

    policies: tuple[tuple[str, HostPolicy], ...]
    retries: int
    backoff_s: float
    max_backoff_s: float
    timeout: tuple[float, float]
    max_bytes: int
    throttle: bool
    deadline_s: float = 900.0
    download_deadline_s: float = 6 * 3600.0
    host_failures: int = HOST_FAILURES
    allow_loopback: bool = False  # taken from the driver's client, not the worker's environment
    run: str = ""  # a materialize run: workers that outlive a run start the next one afresh

    @classmethod
    def of(cls, http: HttpClient, run: str = "") -> HttpSpec:
        return cls(
            policies=tuple(sorted(http.policies.items())),
            retries=http.retries,
            backoff_s=http.backoff_s,
            max_backoff_s=http.max_backoff_s,
            timeout=http.timeout,
            max_bytes=http.max_bytes,
            throttle=http.throttle,
            deadline_s=http.deadline_s,
            download_deadline_s=http.download_deadline_s,
            host_failures=http.host_failures,
            allow_loopback=http.allow_loopback,
            run=run,
        )

    def shared_by(self, n: int) -> HttpSpec:
        """The spec for one of `n` independent clients that together keep each host's limits."""
        if n <= 1:
            return self
        policies = tuple(
            (
                name,
                replace(
                    p,
                    per_second=p.per_second / n if p.per_second else None,
                    max_concurrency=max(1, p.max_concurrency // n),
                ),
            )
            for name, p in self.policies
        )
        return replace(self, policies=policies)

    def client(self) -> HttpClient:
        return HttpClient(
            dict(self.policies),
            retries=self.retries,
            backoff_s=self.backoff_s,
            max_backoff_s=self.max_backoff_s,
            timeout=self.timeout,
            max_bytes=self.max_bytes,
            throttle=self.throttle,
            deadline_s=self.deadline_s,
            download_deadline_s=self.download_deadline_s,
            host_failures=self.host_failures,
            allow_loopback=self.allow_loopback,
        )
