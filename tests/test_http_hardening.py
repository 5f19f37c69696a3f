"""What bad servers do to the HTTP client: redirects, trickled bodies, echoed keys, rate limits."""

from __future__ import annotations

import gzip
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import version
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest

from biovita_data.crawl.http import FetchError, HostPolicy, HttpClient

KEY = "k3y/with+odd=chars&more"


class Scripted:
    """A loopback server whose handler is a function of the request path."""

    def __init__(self, handle) -> None:
        self.paths: list[str] = []
        self.peers: list[tuple[str, int]] = []  # each request's client address (connection)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: object) -> None:
                pass

            def do_GET(self) -> None:
                outer.paths.append(self.path)
                outer.peers.append(self.client_address)
                handle(self, outer)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _reply(h: BaseHTTPRequestHandler, status: int, body: bytes = b"", **headers: str) -> None:
    h.send_response(status)
    h.send_header("Content-Length", str(len(body)))
    for k, v in headers.items():
        h.send_header(k.replace("_", "-"), v)
    h.end_headers()
    h.wfile.write(body)


@pytest.fixture
def server(request: pytest.FixtureRequest):
    srv = Scripted(request.param)
    yield srv
    srv.close()


def _to_file_scheme(h, srv) -> None:
    _reply(h, 302, Location="file:///etc/passwd")


def _loop(h, srv) -> None:
    _reply(h, 302, Location=f"/hop{len(srv.paths)}")


def _to_other_host(h, srv) -> None:
    if h.path == "/start":
        _reply(h, 302, Location=f"http://localhost:{srv.port}/final")
    else:
        _reply(h, 200, b"landed")


@pytest.mark.parametrize("server", [_to_file_scheme], indirect=True)
def test_redirect_to_another_scheme_is_refused(server: Scripted) -> None:
    http = HttpClient(retries=0, throttle=False)
    with pytest.raises(FetchError, match="not an http"):
        http.get(f"{server.url}/start")
    assert server.paths == ["/start"]


@pytest.mark.parametrize("server", [_loop], indirect=True)
def test_redirect_loop_is_bounded(server: Scripted) -> None:
    http = HttpClient(retries=0, throttle=False)
    with pytest.raises(FetchError, match="redirects"):
        http.get(f"{server.url}/start")
    assert len(server.paths) == 11  # the first request and 10 redirects


@pytest.mark.parametrize("server", [_to_other_host], indirect=True)
def test_redirect_to_another_host_goes_through_that_hosts_policy(server: Scripted) -> None:
    http = HttpClient({"svc": HostPolicy(per_second=None, max_concurrency=1)}, throttle=False)
    assert http.get(f"{server.url}/start", policy="svc") == b"landed"
    assert server.paths == ["/start", "/final"]
    assert set(http._slots) == {"svc", "localhost"}  # the hop was gated as its own host
    assert http.stats["redirects"] == 1


def test_initial_url_checks() -> None:
    http = HttpClient(retries=0, throttle=False)
    for bad in ("ftp://127.0.0.1/x", "file:///etc/passwd", "http:///nohost"):
        with pytest.raises(FetchError, match="not an http"):
            http.get(bad)


def _trickle(h, srv) -> None:
    h.send_response(200)
    h.send_header("Content-Length", "200")
    h.end_headers()
    try:
        for _ in range(200):
            h.wfile.write(b"x")
            h.wfile.flush()
            time.sleep(0.2)
    except OSError:
        pass  # the client hung up


@pytest.mark.parametrize("server", [_trickle], indirect=True)
def test_a_trickling_body_hits_the_overall_deadline(server: Scripted, tmp_path: Path) -> None:
    # each read gets a byte well within the read timeout; only an overall deadline ends it
    http = HttpClient(retries=2, throttle=False, timeout=(5.0, 5.0), deadline_s=1.0)
    t0 = time.monotonic()
    with pytest.raises(FetchError, match="deadline"):
        http.get(f"{server.url}/slow")
    assert time.monotonic() - t0 < 20  # the body alone would take 40 s
    assert len(server.paths) == 1  # a deadline is final, not retried
    http.download_deadline_s = 1.0
    with pytest.raises(FetchError, match="deadline"):
        http.download(f"{server.url}/table.gz", tmp_path / "t.gz")
    assert list(tmp_path.iterdir()) == []  # no partial file left behind


def _echo(h, srv) -> None:
    # servers echo the query back in every form: raw, %-encoded (upper and lower), +, JSON \/
    raw = h.path.split("key=", 1)[1]
    escaped = KEY.replace("/", "\\/")
    body = f"bad key {raw} / {raw.lower()} / {KEY} / {quote_plus(KEY)} / {escaped}"
    _reply(h, 401, body.encode())


@pytest.mark.parametrize("server", [_echo], indirect=True)
def test_a_key_is_redacted_in_every_form(server: Scripted) -> None:
    http = HttpClient(retries=0, throttle=False, secrets=(KEY,))
    with pytest.raises(FetchError) as info:
        http.get(f"{server.url}/recordings", {"key": KEY})
    text = str(info.value)
    assert "bad key" in text
    for form in (KEY, quote(KEY, safe=""), quote(KEY, safe="").lower(), quote_plus(KEY), "k3y"):
        assert form not in text, form
    assert http.redact(f"?key={quote(KEY, safe='')}") == "?key=***"


def test_pyrate_limiter_4_waits_for_the_next_permit() -> None:
    """A second request inside the rate window waits for its permit (3.x raised instead)."""
    assert int(version("pyrate-limiter").split(".")[0]) == 4
    hits: list[float] = []

    def ok(h, srv) -> None:
        hits.append(time.monotonic())
        _reply(h, 200, b"ok")

    srv = Scripted(ok)
    try:
        http = HttpClient({"p": HostPolicy(per_second=4, max_concurrency=1)}, retries=0)
        assert [http.get(f"{srv.url}/{i}", policy="p") for i in range(3)] == [b"ok"] * 3
        assert http.stats["retries"] == 0 and len(hits) == 3
        assert hits[2] - hits[0] >= 0.45  # two waits of one 250 ms window each
    finally:
        srv.close()


def test_a_gzip_encoded_body_is_decoded_as_it_arrives() -> None:
    """The deadline-aware reader still undoes Content-Encoding: gzip (as iNaturalist sends)."""
    body = b'{"results": "' + b"x" * 300_000 + b'"}'
    srv = Scripted(lambda h, s: _reply(h, 200, gzip.compress(body), Content_Encoding="gzip"))
    try:
        assert HttpClient(throttle=False).get_json(f"{srv.url}/x") == {"results": "x" * 300_000}
    finally:
        srv.close()


def test_ray_workers_get_the_same_client_settings() -> None:
    """A Ray task rebuilds the driver's client from HttpSpec: deadlines included, limits shared."""
    from biovita_data.crawl.http import HostPolicy, HttpClient
    from biovita_data.media.download import HttpSpec

    http = HttpClient(
        {"h": HostPolicy(per_second=4.0, max_concurrency=4)},
        retries=2,
        deadline_s=12.5,
        download_deadline_s=99.0,
        throttle=False,
    )
    worker = HttpSpec.of(http).shared_by(2).client()
    assert (worker.deadline_s, worker.download_deadline_s) == (12.5, 99.0)
    assert worker.retries == 2 and worker.throttle is False
    assert worker.policies["h"] == HostPolicy(per_second=2.0, max_concurrency=2)


def _as_proxy(h, srv) -> None:
    _reply(h, 200, b"via proxy " + h.path.encode())


@pytest.mark.parametrize("server", [_as_proxy], indirect=True)
def test_the_environment_is_read_once_and_applied(server: Scripted, monkeypatch, tmp_path) -> None:
    """The client reads the environment once, at its first request, and applies it as
    requests would: the CA bundle it names, proxies and NO_PROXY."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "CURL_CA_BUNDLE"):
        for key in (name, name.lower()):
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "no-such-bundle.pem"))
    client = HttpClient(retries=2, backoff_s=0.0)
    with pytest.raises(FetchError, match=r"no-such-bundle\.pem .*does not exist"):
        client.get("https://127.0.0.1:9/x")  # the bundle is the one used
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")  # read once: the client keeps what it read
    with pytest.raises(FetchError, match=r"no-such-bundle\.pem"):
        client.get("https://127.0.0.1:9/x")
    assert not client.stats["requests"] and not client.stats["retries"]  # never sent, nor retried

    monkeypatch.setenv("HTTP_PROXY", server.url)
    monkeypatch.setenv("NO_PROXY", "bypassed.invalid")
    client = HttpClient(retries=0)
    assert client.get("http://example.invalid/photo.jpg") == (
        b"via proxy http://example.invalid/photo.jpg"
    )
    with pytest.raises(FetchError):  # NO_PROXY: resolved directly, and there is no such host
        client.get("http://bypassed.invalid/photo.jpg")


def _echo_path(h, srv) -> None:
    _reply(h, 200, h.path.encode())


@pytest.mark.parametrize("server", [_echo_path], indirect=True)
def test_params_are_encoded_as_requests_did_and_one_connection_is_kept(server: Scripted) -> None:
    """Query parameters join the URL's own query (None dropped, a list repeated, reserved
    characters escaped, the fragment never sent), and a client's guarded GETs to one host reuse
    one kept-alive connection (apart from its unguarded ones: those were never checked)."""
    client = HttpClient(retries=0, throttle=False, allow_loopback=True)
    params = {"query": "Turdus merula", "page": 2, "ids": [3, 4], "none": None, "odd": "a&b=c/d"}
    assert client.get(f"{server.url}/q?fixed=1#frag", params) == (
        b"/q?fixed=1&query=Turdus+merula&page=2&ids=3&ids=4&odd=a%26b%3Dc%2Fd"
    )
    for k in range(5):
        assert client.get(f"{server.url}/media/{k}.mp3", guard=True) == f"/media/{k}.mp3".encode()
    # the guarded GETs share one kept-alive connection, never the unguarded GET's
    assert len(server.peers) == 6 and len(set(server.peers[1:])) == 1
    assert server.peers[0] != server.peers[1]


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (subject alternative name) and its key, as PEM files."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_https_trusts_the_bundle_the_environment_names_and_counts_tls_failures(
    monkeypatch, tmp_path
) -> None:
    """A self-signed server: trusted through REQUESTS_CA_BUNDLE, refused with certifi's bundle
    (a TLS failure, which the circuit breaker counts like a refused connection)."""
    import ssl

    from biovita_data.crawl.http import HostUnreachable

    cert, key = _self_signed(tmp_path)
    srv = Scripted(lambda h, s: _reply(h, 200, b"over TLS " + h.path.encode()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    srv.httpd.socket = context.wrap_socket(srv.httpd.socket, server_side=True)
    url = f"https://127.0.0.1:{srv.port}/a.mp3"
    try:
        monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
        assert HttpClient(retries=0, allow_loopback=True).get(url, guard=True) == b"over TLS /a.mp3"

        monkeypatch.delenv("REQUESTS_CA_BUNDLE")
        client = HttpClient(retries=0, host_failures=2, allow_loopback=True)
        with pytest.raises(FetchError, match=r"TLS failure for https://127\.0\.0\.1"):
            client.get(url)
        with pytest.raises(HostUnreachable, match=r"unreachable: 2 connections .*TLS failure"):
            client.get(url)
    finally:
        srv.close()
