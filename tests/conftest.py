"""Shared fixtures: the tiny sample world and a loopback sample server serving it."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pytest

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
