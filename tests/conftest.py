"""Shared fixtures: the tiny sample world and a loopback sample server serving it."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pytest
import requests

from biovita_data.core import environ
from biovita_data.sample.server import SampleServer
from biovita_data.sample.world import World

# the model's on-disk caches (prompt embeddings) go to a fresh folder, never the user's
os.environ.setdefault("BIOVITA_CACHE", tempfile.mkdtemp(prefix="biovita-test-cache-"))
# every test talks to the sample world on 127.0.0.1: media downloads may reach loopback (the one
# explicit allowance; never the default, see crawl/http.py); test_blocked_address unsets it
os.environ["BIOVITA_ALLOW_LOOPBACK"] = "1"


@pytest.fixture(scope="session")
def tiny_world() -> World:
    """World("tiny"), built once per session (its media caches are shared by all tests)."""
    return World("tiny")


@pytest.fixture(scope="session")
def default_world() -> World:
    """World("default"), for checks that do not render media (it has many more records)."""
    return World("default")


@pytest.fixture
def sample_server(tiny_world: World) -> Iterator[SampleServer]:
    """SampleServer(tiny_world) running in-process on a free loopback port, stopped afterwards."""
    server = SampleServer(tiny_world, port=0).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def moto_s3() -> Iterator[str]:
    """An S3 endpoint on 127.0.0.1 (moto server mode) with bucket `media`; AWS_* env set.
    fsspec caches filesystems by their arguments, not by the environment they read: the cache is
    cleared on both sides, or an S3FileSystem() of an earlier module would still talk to its
    stopped server."""
    import socket

    server_mod = pytest.importorskip("moto.server", reason="moto[server] is a dev dependency")
    s3fs = pytest.importorskip("s3fs")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
    }
    try:
        with environ.scoped(env):
            s3fs.S3FileSystem.clear_instance_cache()
            try:
                # moto keeps its state per process, not per server: start from an empty S3
                requests.post(f"{endpoint}/moto-api/reset", timeout=10).raise_for_status()
                s3fs.S3FileSystem().mkdir("media")
                yield endpoint
            finally:
                s3fs.S3FileSystem.clear_instance_cache()
    finally:
        server.stop()
