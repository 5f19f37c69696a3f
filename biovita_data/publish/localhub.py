"""A self-hosted Hub on loopback: bare git repos served by `olah` (offline), for `HF_ENDPOINT`.

`biovita-data publish --git-remote file://HUB/mirrors/datasets/NS/NAME` pushes a published folder
into such a repo (Parquet through git-LFS); `biovita-data hub --root HUB` serves it, and
`load_dataset("NS/NAME")` with `HF_ENDPOINT` pointing at the server loads it by repo id, with no
internet and no token.

olah serves a local mirror's LFS objects from `<repo>/.git/lfs/objects` (a bare repo keeps them
in `<repo>/lfs/objects`: `serve` links the one to the other), but answers a Range request with
the whole file and status 200, which breaks streaming (`load_dataset(..., streaming=True)`,
`hf://` reads from pyarrow, DuckDB, Polars). So the endpoint is a small proxy: ranged GETs of
`resolve` URLs of a local repo are answered from the repo itself (206, Content-Range); every
other request goes to olah unchanged.
"""

from __future__ import annotations

import http.client
import importlib.util
import io
import json
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from biovita_data.publish.upload import check_repo_id


class HubError(RuntimeError):
    """The local hub could not start or answer."""


def available() -> bool:
    """Whether the `olah` server is installed."""
    return importlib.util.find_spec("olah") is not None


def repo_path(root: Path, repo_id: str, repo_type: str = "datasets") -> Path:
    """The bare git repository of `repo_id` under a hub root (`datasets`, or `models`: olah
    serves model repos from ROOT/mirrors/models the same way)."""
    if repo_type not in ("datasets", "models"):
        raise ValueError(f"repo_type must be datasets or models, not {repo_type!r}")
    namespace, name = check_repo_id(repo_id).split("/")
    return Path(root).resolve() / "mirrors" / repo_type / namespace / name


def init_repo(root: Path, repo_id: str, repo_type: str = "datasets") -> str:
    """Create (once) the bare repository of `repo_id`; its `file://` URL for `--git-remote`."""
    bare = repo_path(root, repo_id, repo_type)
    if not (bare / "HEAD").is_file():
        bare.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["git", "init", "-q", "--bare", "-b", "main", str(bare)],
            check=True,
            capture_output=True,
        )
    return f"file://{bare}"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(root: Path, port: int, netloc: str | None = None) -> Path:
    """olah's TOML: serve ROOT/mirrors offline on 127.0.0.1:port, its cache in ROOT/cache;
    `netloc`: the address clients use (the range proxy in front of olah)."""
    root = Path(root).resolve()
    netloc = netloc or f"127.0.0.1:{port}"
    config = root / "olah.toml"
    config.write_text(
        f'[basic]\nhost = "127.0.0.1"\nport = {port}\n'
        f"repos-path = {json.dumps(str(root / 'cache'))}\n"
        f"mirrors-path = [{json.dumps(str(root / 'mirrors'))}]\n"
        f'mirror-netloc = "{netloc}"\nmirror-lfs-netloc = "{netloc}"\n\n'
        "[accessibility]\noffline = true\n"
    )
    return config


@contextmanager
def serve(
    root: Path, *, port: int | None = None, wait_repo: str | None = None, timeout: float = 60
) -> Iterator[str]:
    """Run olah over ROOT/mirrors behind the range proxy for the `with` block; yields the
    endpoint URL (HF_ENDPOINT), on `port` (None: a free one)."""
    if not available():
        raise HubError("the local hub needs the `olah` package: pip install olah")
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    link_lfs_objects(root)
    proxy = RangeProxy(root, port or 0)
    olah_port = free_port()
    config = write_config(root, olah_port, f"127.0.0.1:{proxy.port}")
    log_path = root / "olah.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "olah.server", "-c", str(config), "--log-path", str(root)],
            cwd=root,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        proxy.upstream = ("127.0.0.1", olah_port)
        thread = threading.Thread(target=proxy.serve_forever, name="hub-range-proxy", daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{proxy.port}"
        try:
            _wait(server, url, wait_repo, log_path, timeout)
            yield url
        finally:
            proxy.shutdown()
            proxy.server_close()
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def link_lfs_objects(root: Path) -> None:
    """Let olah find each bare mirror's LFS objects: `<repo>/.git/lfs` -> `<repo>/lfs`."""
    for head in Path(root).glob("mirrors/*/*/*/HEAD"):
        bare = head.parent
        link = bare / ".git" / "lfs"
        if not link.exists() and not link.is_symlink():
            (bare / "lfs" / "objects").mkdir(parents=True, exist_ok=True)
            link.parent.mkdir(exist_ok=True)
            link.symlink_to(Path("..") / "lfs")


_RESOLVE = re.compile(r"^/(datasets|models)/([^/]+)/([^/]+)/resolve/([^/]+)/(.+)$")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_LFS_POINTER = re.compile(
    rb"^version https://git-lfs\.github\.com/spec/v1\noid sha256:([0-9a-f]{64})\n"
)
_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host"}


def _git(bare: Path, *args: str) -> bytes | None:
    proc = subprocess.run(["git", "--git-dir", str(bare), *args], capture_output=True)
    return proc.stdout if proc.returncode == 0 else None


class RangeProxy(ThreadingHTTPServer):
    """The hub's public address: ranged `resolve` GETs from the git repo, the rest to olah."""

    daemon_threads = True

    def __init__(self, root: Path, port: int) -> None:
        self.root = Path(root).resolve()
        self.upstream = ("127.0.0.1", 0)
        super().__init__(("127.0.0.1", port), _ProxyHandler)
        self.port = int(self.server_address[1])

    def blob(self, kind: str, repo: str, rev: str, path: str) -> tuple[str, str, Any] | None:
        """(commit, etag, opener) of a file of a local repo: an LFS object or a git blob."""
        bare = self.root / "mirrors" / kind / repo
        if not (bare / "HEAD").is_file():
            return None
        commit = _git(bare, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
        if commit is None:
            return None
        sha = commit.decode().strip()
        size = _git(bare, "cat-file", "-s", f"{sha}:{path}")
        if size is None:
            return None
        data = _git(bare, "cat-file", "blob", f"{sha}:{path}") if int(size) < 1024 else None
        pointer = _LFS_POINTER.match(data or b"")
        if pointer:
            oid = pointer.group(1).decode()
            obj = bare / "lfs" / "objects" / oid[:2] / oid[2:4] / oid
            return sha, oid, lambda: obj.open("rb")
        blob_id = (_git(bare, "rev-parse", f"{sha}:{path}") or b"").decode().strip()
        content = data if data is not None else _git(bare, "cat-file", "blob", f"{sha}:{path}")
        return sha, blob_id, lambda: io.BytesIO(content or b"")


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: RangeProxy

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if self.headers.get("Range") and self._ranged():
            return
        self._forward()

    def do_HEAD(self) -> None:
        self._forward()

    def do_POST(self) -> None:
        self._forward()

    def _ranged(self) -> bool:
        """Answer a ranged GET of a local repo's resolve URL; False: not one (forward it)."""
        parsed = urllib.parse.urlsplit(self.path)
        match = _RESOLVE.match(parsed.path)
        wanted = _RANGE.match(self.headers.get("Range", "").strip())
        if not match or not wanted:
            return False
        kind, ns, name, rev, path = (urllib.parse.unquote(g) for g in match.groups())
        found = self.server.blob(kind, f"{ns}/{name}", rev, path)
        if found is None:
            return False
        commit, etag, opener = found
        with opener() as f:
            f.seek(0, 2)
            size = f.tell()
            first, last = wanted.groups()
            if first == "":  # bytes=-N: the last N bytes
                start, end = max(0, size - int(last or 0)), size - 1
            else:
                start, end = int(first), min(size - 1, int(last) if last else size - 1)
            if start >= size or end < start:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return True
            self.send_response(206)
            for key, value in (
                ("Content-Type", "application/octet-stream"),
                ("Content-Range", f"bytes {start}-{end}/{size}"),
                ("Content-Length", str(end - start + 1)),
                ("Accept-Ranges", "bytes"),
                ("ETag", f'"{etag}"'),
                ("X-Repo-Commit", commit),
            ):
                self.send_header(key, value)
            self.end_headers()
            f.seek(start)
            left = end - start + 1
            while left > 0:
                chunk = f.read(min(left, 2**20))
                if not chunk:
                    break
                self.wfile.write(chunk)
                left -= len(chunk)
        return True

    def _forward(self) -> None:
        """The request to olah as it came; its answer back as it is."""
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
        conn = http.client.HTTPConnection(*self.server.upstream, timeout=600)
        try:
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            self.send_response(resp.status, resp.reason)
            known = resp.getheader("Content-Length")
            for key, value in resp.getheaders():
                if key.lower() not in _HOP:
                    self.send_header(key, value)
            if known is None:
                self.close_connection = True  # the body ends when the connection does
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                while chunk := resp.read(2**20):
                    self.wfile.write(chunk)
        except OSError as exc:
            self.send_error(502, f"local hub upstream: {exc}")
        finally:
            conn.close()


def _wait(
    server: subprocess.Popen, url: str, repo_id: str | None, log_path: Path, timeout: float
) -> None:
    """Until the server answers: for `repo_id`, its revision; else any HTTP answer at all."""
    probe = f"{url}/api/datasets/{repo_id}/revision/main" if repo_id else f"{url}/"
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(probe, timeout=2)
            return
        except urllib.error.HTTPError as exc:
            if repo_id is None:
                return
            error: OSError = exc
        except OSError as exc:
            error = exc
        if server.poll() is not None or time.monotonic() > deadline:
            tail = log_path.read_text(errors="replace")[-1500:]
            raise HubError(f"the local hub at {url} did not answer {probe}: {tail}") from error
        time.sleep(0.2)


def hub_env(endpoint: str | None, home: Path, base: dict[str, str]) -> dict[str, str]:
    """`base` without any HF_* / HUGGINGFACE* setting (no token, no mirror), with its own HF
    cache under `home`, loading from `endpoint` (None: the Hub's default)."""
    env = {k: v for k, v in base.items() if not k.startswith(("HF_", "HUGGINGFACE"))}
    if endpoint is not None:
        env["HF_ENDPOINT"] = endpoint
    env.update(
        HF_HOME=str(home),
        HF_HUB_OFFLINE="0",
        HF_DATASETS_OFFLINE="0",
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_XET="1",
    )
    return env


COUNT_SCRIPT = r"""
import json, sys
import datasets
repo = sys.argv[1]
report = {}
for config in sys.argv[2:]:
    ds = datasets.load_dataset(repo, config)
    report[config] = {}
    for split, part in ds.items():
        entry = {"rows": part.num_rows}
        if config in ("audio", "image") and part.num_rows:
            media = part[0][config]  # decodes: torchcodec for Audio, PIL for Image
            if config == "image":
                media.load()
                entry["first"] = list(media.size)
            else:
                entry["first"] = int(media.get_all_samples().data.shape[-1])
        report[config][split] = entry
print(json.dumps(report))
"""


def load_counts(
    repo_id: str, endpoint: str, home: Path, configs: tuple[str, ...], env: dict[str, str]
) -> dict[str, Any]:
    """`load_dataset(repo_id, config)` for each config in a fresh process against `endpoint`:
    rows per split, and the first audio/image decoded."""
    proc = subprocess.run(
        [sys.executable, "-c", COUNT_SCRIPT, repo_id, *configs],
        env=hub_env(endpoint, home, env),
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0:
        raise HubError(f"load_dataset({repo_id!r}) failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
