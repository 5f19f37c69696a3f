"""The HTTP client, licence normalisation, and what the sources do with malformed input."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import polars as pl
import pytest

from biovita_data.crawl.fetch import FetchSettings, fetch
from biovita_data.crawl.http import FetchError, HostPolicy, HttpClient
from biovita_data.crawl.licenses import UnknownLicense, is_allowed, normalize_license
from biovita_data.crawl.sources.base import BadRecord, check_media_url
from biovita_data.crawl.sources.inaturalist import parse_observation
from biovita_data.crawl.sources.xeno_canto import parse_length, parse_recording
from biovita_data.sample.server import SampleServer
from biovita_data.sample.world import World

ALLOWED = ("cc0", "cc-by", "cc-by-sa", "cc-by-nc", "cc-by-nc-sa")


class Canned:
    """A loopback server answering every GET with the next canned (status, headers, body)."""

    def __init__(self, replies: list[tuple[int, dict, bytes]]) -> None:
        self.replies = list(replies)
        self.seen: list[tuple[float, str]] = []
        canned = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: object) -> None:
                pass

            def do_GET(self) -> None:
                canned.seen.append((time.monotonic(), self.path))
                status, headers, body = (
                    canned.replies.pop(0) if canned.replies else (200, {}, b"{}")
                )
                self.send_response(status)
                for k, v in {"Content-Length": str(len(body)), **headers}.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_rate_limit_spaces_requests() -> None:
    srv = Canned([])
    try:
        http = HttpClient({"slow": HostPolicy(per_second=5, max_concurrency=1)})
        for _ in range(6):
            http.get(f"{srv.url}/x", policy="slow")
        times = [t for t, _ in srv.seen]
        assert times[-1] - times[0] >= 0.9  # 6 requests at 5/s take at least ~1 s
    finally:
        srv.close()


def test_retry_after_is_honoured_and_counted() -> None:
    srv = Canned([(429, {"Retry-After": "1"}, b"slow down"), (200, {}, b"ok")])
    try:
        http = HttpClient(retries=3, backoff_s=0.01, throttle=False)
        assert http.get(f"{srv.url}/y") == b"ok"
        (t0, _), (t1, _) = srv.seen
        assert t1 - t0 >= 0.95
        assert http.stats["retries"] == 1 and http.stats["requests"] == 2
    finally:
        srv.close()


def test_client_errors_are_not_retried_and_secrets_redacted() -> None:
    srv = Canned([(401, {}, b'{"error": "client_error", "message": "bad key s3cr3t"}')])
    try:
        http = HttpClient(retries=3, secrets=("s3cr3t",), throttle=False)
        with pytest.raises(FetchError) as info:
            http.get(f"{srv.url}/recordings", {"key": "s3cr3t"})
        assert info.value.status == 401 and "s3cr3t" not in str(info.value)
        assert len(srv.seen) == 1
    finally:
        srv.close()


def test_size_cap_invalid_json_and_streamed_download(tmp_path: Path) -> None:
    srv = Canned([(200, {}, b"x" * 5000), (200, {}, b"{not json"), (200, {}, b"y" * 5000)])
    try:
        http = HttpClient(max_bytes=1000, throttle=False)
        with pytest.raises(FetchError, match="size cap"):
            http.get(f"{srv.url}/big")
        with pytest.raises(FetchError, match="invalid JSON"):
            http.get_json(f"{srv.url}/bad")
        # big tables stream to disk: the in-memory cap does not apply, the bytes are intact
        path = http.download(f"{srv.url}/table.csv.gz", tmp_path / "t.gz")
        assert path.read_bytes() == b"y" * 5000
        assert [p.name for p in tmp_path.iterdir()] == ["t.gz"]
    finally:
        srv.close()


def test_user_agent_names_the_project() -> None:
    seen = {}

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a: object) -> None:
            pass

        def do_GET(self) -> None:
            seen["ua"] = self.headers["User-Agent"]
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        HttpClient(throttle=False).get(f"http://127.0.0.1:{httpd.server_address[1]}/")
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert seen["ua"].startswith("biovita/")


@pytest.mark.parametrize(
    ("raw", "code", "allowed"),
    [
        ("//creativecommons.org/licenses/by-nc-sa/4.0/", "cc-by-nc-sa-4.0", True),
        ("https://creativecommons.org/licenses/by-nc-nd/2.5/", "cc-by-nc-nd-2.5", False),
        ("//creativecommons.org/publicdomain/zero/1.0/", "cc0-1.0", True),
        ("cc-by-nc", "cc-by-nc-4.0", True),
        ("CC-BY-ND", "cc-by-nd-4.0", False),
        (None, "all-rights-reserved", False),
    ],
)
def test_licenses(raw: str | None, code: str, allowed: bool) -> None:
    assert normalize_license(raw) == code
    assert is_allowed(code, ALLOWED) is allowed


def test_unknown_license() -> None:
    with pytest.raises(UnknownLicense):
        normalize_license("//example.org/my-licence/")


def test_media_url_checks() -> None:
    assert check_media_url("//xeno-canto.org/1/download") == "https://xeno-canto.org/1/download"
    for bad, reason in [
        ("", "missing_media"),
        ("ftp://h/x", "bad_media_url"),
        ("http://h/a/../../etc/passwd", "bad_media_url"),
        ("http://h/a b", "bad_media_url"),
        ("../x.mp3", "bad_media_url"),
    ]:
        with pytest.raises(BadRecord) as info:
            check_media_url(bad)
        assert info.value.reason == reason


def _xc(**over: object) -> dict:
    rec = {
        "id": "42",
        "gen": "Foo",
        "sp": "bar",
        "ssp": "",
        "lic": "//creativecommons.org/licenses/by/4.0/",
        "file": "https://xc.example/42/download",
        "file-name": "XC42-x.mp3",
        "length": "1:02:03",
        "smp": "44100",
        "lat": "",
        "lon": "?",
        "date": "2015-06-00",
        "q": "no score",
    }
    rec.update(over)
    return rec


def test_xc_record_parsing_and_bad_records() -> None:
    row = parse_recording(_xc(), "grp:birds", ALLOWED)
    assert row["duration_s"] == 3723.0 and row["sample_rate"] == 44100
    assert row["latitude"] is None and row["longitude"] is None and row["date"] is None
    assert row["raw_scientific_name"] == "Foo bar" and row["file_format"] == "mp3"
    assert parse_length("4:13") == 253.0 and parse_length("?") is None
    cases = {
        "malformed": _xc(id="abc"),
        "license_unknown": _xc(lic="some licence"),
        "license_not_allowed": _xc(lic="//creativecommons.org/licenses/by-nd/4.0/"),
        "restricted": _xc(file=""),
        "bad_media_url": _xc(file="https://xc.example/../../etc/passwd"),
    }
    for reason, rec in cases.items():
        with pytest.raises(BadRecord) as info:
            parse_recording(rec, "q", ALLOWED)
        assert info.value.reason == reason
    with pytest.raises(BadRecord, match="no scientific name"):
        parse_recording(_xc(gen=None), "q", ALLOWED)


def test_inat_observation_with_bad_media_keeps_the_good_ones() -> None:
    obs = {
        "id": 7,
        "taxon": {"id": 3, "name": "Foo bar"},
        "photos": [
            {
                "id": 1,
                "license_code": "cc-by",
                "url": "https://s.example/photos/1/square.jpg?9",
                "original_dimensions": {"width": 10, "height": 20},
            },
            {"id": 2, "license_code": "weird", "url": "https://s.example/photos/2/square.jpg"},
            {"id": "x", "license_code": "cc0", "url": "https://s.example/photos/3/square.jpg"},
        ],
        "sounds": "oops",
    }
    rows, fails = parse_observation(obs, "taxon_id=3", ALLOWED)
    assert [r["record_id"] for r in rows] == ["1"]
    assert rows[0]["media_url"] == "https://s.example/photos/1/original.jpg?9"
    assert sorted(f["reason"] for f in fails) == ["license_unknown", "malformed", "malformed"]
    with pytest.raises(BadRecord):
        parse_observation({"id": 8, "taxon": None}, "q", ALLOWED)


def test_malformed_pages_fail_clearly_and_bad_records_become_failures(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("XENO_CANTO_API_KEY", "k")
    good = _xc(id="1", file="https://xc.example/1/download")
    page = {
        "numRecordings": "3",
        "numSpecies": "1",
        "page": 1,
        "numPages": 1,
        "recordings": [good, _xc(id="2", file="../../../etc/passwd"), "junk"],
    }
    srv = Canned([(200, {}, json.dumps(page).encode()), (200, {}, b"<html>oops</html>")])
    try:
        s = FetchSettings(
            taxa=["Aves"],
            sources=["xeno-canto"],
            xeno_canto_url=srv.url,
            inaturalist_url=srv.url,
            throttle=False,
        )
        fetch(s, tmp_path / "a")
        with pytest.raises(FetchError, match="invalid JSON"):
            fetch(s, tmp_path / "b")
    finally:
        srv.close()
    rows = pl.read_parquet(tmp_path / "a" / "raw" / "xeno_canto" / "records.parquet")
    assert rows["record_id"].to_list() == ["1"]
    fails = pl.read_parquet(tmp_path / "a" / "manifests" / "failures.parquet")
    assert sorted(fails["reason"]) == ["bad_media_url", "malformed"]
    assert "2" in fails["record_id"].to_list()
    assert not any(p.name == "passwd" for p in tmp_path.rglob("*"))


def test_too_large_query_is_split(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XENO_CANTO_API_KEY", "k")
    world = World("tiny")
    with SampleServer(world, xc_key="k", xc_max_results=10) as server:
        s = FetchSettings(
            taxa=["Aves"],
            sources=["xeno-canto"],
            throttle=False,
            xeno_canto_url=server.urls["XENO_CANTO_API_URL"],
            inaturalist_url=server.urls["INATURALIST_API_URL"],
        )
        fetch(s, tmp_path / "split")
    with SampleServer(world, xc_key="k") as server:
        s.xeno_canto_url = server.urls["XENO_CANTO_API_URL"]
        fetch(s, tmp_path / "whole")
    split = pl.read_parquet(tmp_path / "split" / "raw" / "xeno_canto" / "records.parquet")
    whole = pl.read_parquet(tmp_path / "whole" / "raw" / "xeno_canto" / "records.parquet")
    assert split["record_id"].to_list() == whole["record_id"].to_list()
    assert set(split["query"]) > {"grp:birds q:A"}
