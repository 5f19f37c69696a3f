"""Media URLs to loopback, link-local, private or multicast addresses are refused after DNS
resolution and at every redirect hop (`blocked_address`); loopback only with the explicit
allowance (BIOVITA_ALLOW_LOOPBACK=1, which conftest sets for the sample world)."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import polars as pl
import pytest
from rich.console import Console

from biovita_data.core import layout
from biovita_data.crawl.guard import ALLOW_LOOPBACK_ENV
from biovita_data.crawl.http import BlockedAddress, HttpClient, check_address
from biovita_data.media import MaterializeSettings, materialize
from biovita_data.media.download import fetch_item
from biovita_data.media.records import ItemFailure
from biovita_data.media.settings import WorkItem
from biovita_data.sample.server import SampleServer
from biovita_data.sample.world import World

RESOLVES = {
    "metadata.example": "169.254.169.254",
    "intranet.example": "10.1.2.3",
    "multicast.example": "224.0.0.251",
    "cgnat.example": "100.64.0.1",
    "v6local.example": "fe80::1",
    "mapped.example": "::ffff:127.0.0.1",
    "public.example": "93.184.216.34",
}


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """getaddrinfo answers RESOLVES for the *.example names (no network needed)."""
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host in RESOLVES:
            ip = RESOLVES[host]
            family = socket.AF_INET6 if ":" in ip else socket.AF_INET
            addr = (ip, port or 80, 0, 0) if family == socket.AF_INET6 else (ip, port or 80)
            return [(family, socket.SOCK_STREAM, 6, "", addr)]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.mark.parametrize(
    ("host", "kind"),
    [
        ("metadata.example", "link-local"),
        ("intranet.example", "private"),
        ("multicast.example", "multicast"),
        ("cgnat.example", "non-global"),
        ("v6local.example", "link-local"),
        ("mapped.example", "loopback"),
        ("127.0.0.1", "loopback"),
        ("0.0.0.0", "unspecified"),
    ],
)
def test_non_public_addresses_are_refused(fake_dns, host: str, kind: str) -> None:
    with pytest.raises(BlockedAddress, match=f"resolves to .*, a {kind} address: refused"):
        check_address(f"http://{host}/latest/meta-data/")


def test_loopback_only_with_the_explicit_allowance(fake_dns) -> None:
    check_address("http://public.example/a.jpg")  # a public address passes
    check_address("http://127.0.0.1:8000/a.jpg", allow_loopback=True)
    check_address("http://mapped.example/a.jpg", allow_loopback=True)
    with pytest.raises(BlockedAddress, match="private"):  # loopback only, never private
        check_address("http://intranet.example/a.jpg", allow_loopback=True)


def test_the_allowance_is_never_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ALLOW_LOOPBACK_ENV, raising=False)
    assert HttpClient().allow_loopback is False
    monkeypatch.setenv(ALLOW_LOOPBACK_ENV, "1")
    assert HttpClient().allow_loopback is True
    assert HttpClient(allow_loopback=False).allow_loopback is False


class _Redirect(BaseHTTPRequestHandler):
    """Every GET answers 302 to the cloud metadata address."""

    def do_GET(self) -> None:
        self.send_response(302)
        self.send_header("Location", "http://metadata.example/latest/meta-data/iam")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def _serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[int]:
    """A loopback server of `handler` for the block; yields its port."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


@pytest.fixture
def redirector() -> Iterator[str]:
    with _serving(_Redirect) as port:
        yield f"http://127.0.0.1:{port}"


def _item(url: str) -> WorkItem:
    return WorkItem("image", "inaturalist", "1", url, "jpg", "Parus major")


def test_a_redirect_hop_to_a_blocked_address_is_a_blocked_address_failure(
    fake_dns, redirector: str
) -> None:
    http = HttpClient(throttle=False, retries=0, allow_loopback=True)
    with pytest.raises(ItemFailure) as exc:
        fetch_item(http, _item(f"{redirector}/photo.jpg"))
    assert exc.value.reason == "blocked_address"
    assert "metadata.example resolves to 169.254.169.254, a link-local address" in exc.value.detail
    assert http.stats["requests"] == 1 and http.stats["redirects"] == 1  # never requested


def test_an_api_call_is_not_guarded(tiny_world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Configured API bases are trusted (the sample world's included); only media are guarded."""
    monkeypatch.delenv(ALLOW_LOOPBACK_ENV)
    http = HttpClient(throttle=False, retries=0)
    with SampleServer(tiny_world) as server:
        body = http.get(f"{server.urls['BIOVITA_TRAITS_URL']}/AVONET1_BirdLife.csv")
        with pytest.raises(BlockedAddress):
            http.get(f"{server.urls['BIOVITA_TRAITS_URL']}/AVONET1_BirdLife.csv", guard=True)
    assert body and http.stats["requests"] == 1


def test_materialize_without_the_allowance_refuses_loopback_media(
    tiny_world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ALLOW_LOOPBACK_ENV)
    out = tmp_path / "out"
    with SampleServer(tiny_world) as server:
        urls = [f"{server.root}/inaturalist-static/photos/{k}/medium.jpg" for k in range(1, 4)]
        manifest = pl.DataFrame(
            {
                "source": ["inaturalist"] * 3,
                "record_id": ["1", "2", "3"],
                "media_url": urls,
                "file_format": ["jpg"] * 3,
                "raw_scientific_name": ["Parus major"] * 3,
                "scientific_name": ["Parus major"] * 3,
            }
        )
        path = layout.media_manifest_path(out, "image")
        path.parent.mkdir(parents=True)
        manifest.write_parquet(path)
        settings = MaterializeSettings(workers=1, modalities=("image",), max_failed=1.0)
        result = materialize(out, settings, console=Console(quiet=True))
    failures = pl.read_parquet(layout.failures_path(out))
    assert failures["reason"].to_list() == ["blocked_address"] * 3
    assert failures["detail"].str.contains("127.0.0.1, a loopback address: refused").all()
    assert failures["detail"].str.contains(f"set {ALLOW_LOOPBACK_ENV}=1").all()
    assert result.by_modality("image").kept == 0


class _Ok(BaseHTTPRequestHandler):
    """Every GET answers 200 "ok" on a kept-alive connection."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


def test_a_guarded_connection_goes_to_the_address_it_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """DNS rebinding: a name answers loopback (allowed here) once and a private address after.
    The guarded client resolves it once, when its connection opens, connects to that checked
    answer, and reuses the connection without another lookup."""
    answers: list[str] = []
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host != "rebind.example":
            return real(host, port, *args, **kwargs)
        answers.append("10.1.2.3" if answers else "127.0.0.1")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers[-1], port))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    with _serving(_Ok) as port:
        http = HttpClient(throttle=False, retries=0, timeout=(2.0, 5.0), allow_loopback=True)
        url = f"http://rebind.example:{port}"
        assert [http.get(f"{url}/{k}.jpg", guard=True) for k in range(3)] == [b"ok"] * 3
    assert answers == ["127.0.0.1"]


def test_a_guarded_host_answering_a_blocked_address_is_never_connected_to(
    fake_dns, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The refusal comes before any connection: no socket is opened to the metadata address."""
    import urllib3.util.connection as u3

    opened: list[object] = []
    real = u3.create_connection
    monkeypatch.setattr(u3, "create_connection", lambda *a, **k: opened.append(a) or real(*a, **k))
    http = HttpClient(throttle=False, retries=0, allow_loopback=True)
    with pytest.raises(BlockedAddress, match=r"169\.254\.169\.254, a link-local address: refused"):
        http.get("http://metadata.example/latest/meta-data/", guard=True)
    assert opened == [] and http.stats["requests"] == 0
