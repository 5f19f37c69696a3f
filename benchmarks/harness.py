"""What the media benchmarks share: a loopback HTTP server of numbered bodies, and a CPU clock
of a process tree. Standard library only, so another tool's interpreter (img2dataset's venv) can
import it too (with benchmarks/ on its PYTHONPATH)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Handler(BaseHTTPRequestHandler):
    """GET .../<i>.<ext> answers body i of the server's list (404 past its end)."""

    protocol_version = "HTTP/1.1"
    server_version = "BioVITABench/1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        bodies: list[bytes] = self.server.bodies  # type: ignore[attr-defined]
        name = self.path.rsplit("/", 1)[-1].split(".")[0]
        if not name.isdigit() or int(name) >= len(bodies):
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = bodies[int(name)]
        self.send_response(200)
        self.send_header("Content-Type", self.server.content_type)  # type: ignore[attr-defined]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def serve(conn, make_bodies: Callable[[int], list[bytes]], n: int, content_type: str) -> None:
    """A child process's job: serve make_bodies(n) on 127.0.0.1, send (root URL, mean body
    bytes) through `conn`, and stop when `conn` receives anything."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.request_queue_size = 128
    httpd.bodies = make_bodies(n)  # type: ignore[attr-defined]
    httpd.content_type = content_type  # type: ignore[attr-defined]
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    root = "http://{}:{}".format(*httpd.server_address[:2])
    conn.send((root, sum(map(len, httpd.bodies)) / n))  # type: ignore[attr-defined]
    conn.recv()
    httpd.shutdown()


def tree_ticks(exclude: set[int] | None = None) -> dict[int, int]:
    """Clock ticks (user + sys) of each live process of this process's tree (but `exclude` and
    their descendants), from /proc."""
    exclude = exclude or set()
    procs = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            procs[int(name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    mine, todo = set(), [os.getpid()]
    while todo:
        pid = todo.pop()
        mine.add(pid)
        todo += [
            p for p, (ppid, _) in procs.items()
            if ppid == pid and p not in mine and p not in exclude
        ]  # fmt: skip
    return {p: procs[p][1] for p in mine if p in procs}


def tree_cpu_seconds() -> float:
    """CPU seconds so far of this process and its live descendants (one /proc scan)."""
    return sum(tree_ticks().values()) / os.sysconf("SC_CLK_TCK")


class TreeCpu:
    """CPU seconds (user + sys) of this process and its descendants (but `exclude` and theirs),
    sampled from /proc at 20 Hz, so short-lived workers are counted too. The sampling thread's
    own CPU is left out: each /proc scan costs ~0.8 ms here, 0.3 CPU-s over a 10 s run, which
    the measured work did not spend."""

    def __init__(self, exclude: set[int] | None = None) -> None:
        self.tick = os.sysconf("SC_CLK_TCK")
        self.exclude = exclude or set()
        self.base = self._scan()
        self.last = dict(self.base)
        self.own = 0.0  # the sampling thread's CPU seconds (time.thread_time, read in it)
        self.descendants_s = 0.0  # set by stop()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _scan(self) -> dict[int, int]:
        return tree_ticks(self.exclude)

    def _loop(self) -> None:
        while not self.stopped.wait(0.05):
            self.last.update(self._scan())
            self.own = time.thread_time()
        self.own = time.thread_time()

    def stop(self) -> float:
        """Stop sampling; the CPU seconds used since the clock started (`descendants_s`: the
        part of them that this process's descendants used, its own being the rest)."""
        self.stopped.set()
        self.thread.join()
        self.last.update(self._scan())
        spent = {p: t - self.base.get(p, 0) for p, t in self.last.items()}
        me = os.getpid()
        self.descendants_s = sum(t for p, t in spent.items() if p != me) / self.tick
        return max(0.0, sum(spent.values()) / self.tick - self.own)
