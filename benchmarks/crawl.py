"""Crawl throughput: records/s parsed and written for a large synthetic Xeno-canto result set.

The sample world's bird recordings (as `responses.xc_recording` renders them, field for field like
Xeno-canto v3) are replicated under new unique ids until N, split into pre-serialised pages of
500, and served from a stdlib ThreadingHTTPServer on 127.0.0.1 running in a child process (so
serving costs the crawler neither GIL time nor memory). The real `biovita_data.crawl.fetch.fetch`
crawls them, unthrottled, into a temp dir. Separately, the pure parse + table + Parquet path is
timed on the same N recording dicts without HTTP.

    python3 benchmarks/crawl.py [--records 100000] [--repeat 3] [--quiet] [--profile]

The fetch is timed once (wall and process CPU); parse+write is the best of --repeat runs, since a
single run on a busy machine is noisy. The *_cpu_seconds fields are this process's CPU time.

stdout: exactly one JSON line; stderr: the crawl's progress and summary (unless --quiet), and
the cProfile report with --profile. Exit status 1 when the crawled row count is not N.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import multiprocessing as mp
import os
import pstats
import resource
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pyarrow.parquet as pq
from rich.console import Console

from biovita_data.core.layout import raw_records_path
from biovita_data.core.schemas import RAW_RECORD
from biovita_data.core.tables import to_table, write_table
from biovita_data.crawl.fetch import FetchSettings, fetch
from biovita_data.crawl.http import HttpClient
from biovita_data.crawl.licenses import DEFAULT_ALLOWED
from biovita_data.crawl.sources.base import BadRecord
from biovita_data.crawl.sources.xeno_canto import PER_PAGE, parse_recording
from biovita_data.sample import responses as R
from biovita_data.sample.world import World

BENCH_KEY = "crawl-benchmark-key"
QUERY = "grp:birds"  # what the Aves target asks Xeno-canto (biovita_data.crawl.taxa.CLASSES)
API_PATH = "/xeno-canto/api/3"
TARGET_RECORDS_PER_S = 20_000
FIRST_ID = 1_000_000  # synthetic ids: 1000000, 1000001, ... (distinct from the world's 6-digit)
TEMPLATE_ROOT = "http://template.invalid"  # replaced by the server's root in every replica


# ----------------------------------------------------------------------------- the data set
def templates() -> list[dict]:
    """The default world's bird recordings that the crawl keeps (so every replica is a row)."""
    world = World("default", seed=0)
    out = []
    for rec in world.xc_recordings():
        if world.species[rec.species_index].xc_group != "birds":
            continue
        obj = R.xc_recording(world, rec, TEMPLATE_ROOT)
        try:
            parse_recording(obj, QUERY, DEFAULT_ALLOWED)
        except BadRecord:  # licence not allowed, restricted: would be a failure, not a row
            continue
        out.append(obj)
    if not out:
        raise SystemExit("the sample world has no usable bird recordings")
    return out


def synthetic(base: list[dict], n: int, root: str) -> Iterator[dict]:
    """N recording objects: the templates round-robin, each under a new id and its own URLs."""
    for i in range(n):
        t = base[i % len(base)]
        old, new = t["id"], str(FIRST_ID + i)
        rec = dict(t)
        rec["id"] = new
        rec["url"] = f"{root}/xeno-canto/{new}"
        rec["file"] = f"{root}/xeno-canto/{new}/download"
        rec["file-name"] = t["file-name"].replace(f"XC{old}-", f"XC{new}-", 1)
        rec["sono"] = {
            k: (v.replace(TEMPLATE_ROOT, root).replace(f"/{old}/", f"/{new}/") if v else v)
            for k, v in t["sono"].items()
        }
        yield rec


def serialise_pages(base: list[dict], n: int, root: str) -> list[bytes]:
    recs = list(synthetic(base, n, root))
    n_pages = max(1, -(-n // PER_PAGE))
    species = len({(r["gen"], r["sp"], r["ssp"]) for r in base[: min(n, len(base))]})
    return [
        json.dumps(
            {
                "numRecordings": str(n),
                "numSpecies": str(species),
                "page": k,
                "numPages": n_pages,
                "recordings": recs[(k - 1) * PER_PAGE : k * PER_PAGE],
            },
            ensure_ascii=False,
        ).encode()
        for k in range(1, n_pages + 1)
    ]


# ----------------------------------------------------------------------------- the server
class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: one connection for the whole crawl
    server_version = "BioVITABench/1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        pages: list[bytes] = self.server.pages  # type: ignore[attr-defined]
        url = urlsplit(self.path)
        qs = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        if url.path != f"{API_PATH}/recordings":
            return self._send(404, {"error": "not found"})
        if qs.get("key") != BENCH_KEY:
            return self._send(401, R.XC_ERROR_KEY)
        if qs.get("query") != QUERY or qs.get("per_page") != str(PER_PAGE):
            return self._send(400, {"error": "client_error", "message": f"unexpected {qs}"})
        page = int(qs["page"]) if qs.get("page", "").isdigit() else 0
        if not 1 <= page <= len(pages):
            return self._send(400, {"error": "client_error", "message": f"page {page}"})
        self._send(200, pages[page - 1])

    def _send(self, status: int, body: bytes | dict) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def serve(conn, base: list[dict], n: int) -> None:  # the child process
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    root = "http://{}:{}".format(*httpd.server_address[:2])
    httpd.pages = serialise_pages(base, n, root)  # type: ignore[attr-defined]
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    conn.send((root, len(httpd.pages), sum(map(len, httpd.pages))))
    conn.recv()  # stop
    httpd.shutdown()
    httpd.server_close()
    conn.send(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


# ----------------------------------------------------------------------------- measurements
def rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    return round(resource.getrusage(who).ru_maxrss / 1024, 1)  # Linux: KiB


def run_fetch(root: str, out: Path, n: int, quiet: bool) -> dict:
    settings = FetchSettings(
        taxa=["Aves"],
        sources=["xeno-canto"],
        throttle=False,
        xeno_canto_url=f"{root}{API_PATH}",
        inaturalist_url=f"{root}/inaturalist/v1",  # a class needs no /taxa lookup: never asked
    )
    http = HttpClient(retries=0, throttle=False)
    with open(os.devnull, "w") as null:
        console = Console(file=null) if quiet else Console(stderr=True)
        t0, c0 = time.perf_counter(), time.process_time()
        results = fetch(settings, out, console=console, http=http)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    rows = pq.read_metadata(raw_records_path(out, "xeno-canto")).num_rows
    if len(results) != 1 or results[0].kept != n or results[0].dropped:
        print(f"unexpected fetch result: {results}", file=sys.stderr)
    return {"seconds": seconds, "cpu": cpu, "rows": rows, "http": dict(http.stats)}


def parse_write(recs: list[dict], path: Path) -> dict[str, float]:
    c0 = time.process_time()
    t0 = time.perf_counter()
    rows = [parse_recording(r, QUERY, DEFAULT_ALLOWED) for r in recs]
    t1 = time.perf_counter()
    table = to_table(rows, RAW_RECORD)
    t2 = time.perf_counter()
    write_table(table, path)
    t3 = time.perf_counter()
    cpu = time.process_time() - c0
    return {"parse": t1 - t0, "table": t2 - t1, "write": t3 - t2, "total": t3 - t0, "cpu": cpu}


def profiled(label: str, fn: Callable[[], object]) -> None:
    """Run `fn` under cProfile; the top functions (by cumulative and own time) go to stderr."""
    prof = cProfile.Profile()
    prof.runcall(fn)
    report = io.StringIO()
    print(f"===== cProfile: {label}", file=report)
    pstats.Stats(prof, stream=report).sort_stats("cumulative").print_stats(35)
    pstats.Stats(prof, stream=report).sort_stats("tottime").print_stats(25)
    print(report.getvalue(), file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=100_000, help="recordings to crawl (N)")
    ap.add_argument("--repeat", type=int, default=3, help="parse+write runs; the best is kept")
    ap.add_argument("--quiet", action="store_true", help="no progress/summary on stderr")
    ap.add_argument(
        "--profile", action="store_true", help="cProfile fetch and parse+write to stderr"
    )
    args = ap.parse_args(argv)
    n = args.records
    if n < 1:
        ap.error("--records must be >= 1")
    os.environ["XENO_CANTO_API_KEY"] = BENCH_KEY

    base = templates()
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe()
    server = ctx.Process(target=serve, args=(child, base, n), daemon=True)
    server.start()
    root, n_pages, page_bytes = parent.recv()
    try:
        with tempfile.TemporaryDirectory(prefix="biovita-bench-crawl-") as tmp:
            f = run_fetch(root, Path(tmp) / "out", n, args.quiet)
            fetch_rss = rss_mb()
            if args.profile:
                profiled("fetch", lambda: run_fetch(root, Path(tmp) / "profiled", n, True))
            parent.send("stop")
            server_rss = round(parent.recv() / 1024, 1)

            recs = list(synthetic(base, n, root))
            best: dict[str, float] = {}
            for i in range(max(1, args.repeat)):
                path = Path(tmp) / f"parse_write_{i}.parquet"
                t = parse_write(recs, path)
                pw_rows = pq.read_metadata(path).num_rows
                best = t if not best or t["total"] < best["total"] else best
            if args.profile:
                profiled("parse+write", lambda: parse_write(recs, Path(tmp) / "profiled.parquet"))
    finally:
        server.join(timeout=5)
        if server.is_alive():
            server.terminate()

    pw_rate = n / best["total"]
    ok = f["rows"] == n and pw_rows == n
    result = {
        "benchmark": "crawl",
        "records": n,
        "pages": n_pages,
        "page_mb": round(page_bytes / 2**20, 1),
        "templates": len(base),
        "http_requests": f["http"].get("requests", 0),
        "http_retries": f["http"].get("retries", 0),
        "fetch_seconds": round(f["seconds"], 3),
        "fetch_cpu_seconds": round(f["cpu"], 3),
        "fetch_records_per_s": round(n / f["seconds"], 1),
        "parse_seconds": round(best["parse"], 3),
        "table_seconds": round(best["table"], 3),
        "write_seconds": round(best["write"], 3),
        "parse_write_seconds": round(best["total"], 3),
        "parse_write_cpu_seconds": round(best["cpu"], 3),
        "parse_write_records_per_s": round(pw_rate, 1),
        "parse_write_repeat": max(1, args.repeat),
        "fetch_peak_rss_mb": fetch_rss,
        "peak_rss_mb": rss_mb(),
        "server_peak_rss_mb": server_rss,
        "rows_verified": ok,
        "target_records_per_s": TARGET_RECORDS_PER_S,
        "meets_target": pw_rate >= TARGET_RECORDS_PER_S,
    }
    print(json.dumps(result), flush=True)
    if not ok:
        print(
            f"row count mismatch: crawled {f['rows']}, parse+write {pw_rows}, want {n}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
