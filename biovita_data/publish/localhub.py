"""A self-hosted Hub on loopback: bare git repos served by `olah` (offline), for `HF_ENDPOINT`.

`biovita-data publish --git-remote file://HUB/mirrors/datasets/NS/NAME` pushes a published folder
into such a repo; `biovita-data hub --root HUB` serves it, and `load_dataset("NS/NAME")` with
`HF_ENDPOINT` pointing at the server loads it by repo id, with no internet and no token.
"""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
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


def write_config(root: Path, port: int) -> Path:
    """olah's TOML: serve ROOT/mirrors offline on 127.0.0.1:port, its cache in ROOT/cache."""
    root = Path(root).resolve()
    netloc = f"127.0.0.1:{port}"
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
    """Run olah over ROOT/mirrors for the `with` block; yields the endpoint URL (HF_ENDPOINT)."""
    if not available():
        raise HubError("the local hub needs the `olah` package: pip install olah")
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    config = write_config(root, port)
    log_path = root / "olah.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "olah.server", "-c", str(config), "--log-path", str(root)],
            cwd=root,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            _wait(server, url, wait_repo, log_path, timeout)
            yield url
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


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
