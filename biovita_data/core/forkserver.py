"""Worker processes forked from a server that has already run the main script.

A forkserver worker re-runs its parent's main script before it starts (so that functions
defined there can be found): for `biovita-data` that imports the whole CLI again, ~0.14 CPU-s
a worker, every run. multiprocessing's remedy, preloading '__main__' in the server, does nothing
before Python 3.14: the server is never told the script's path (it asks for a `main_path` key
that the preparation data names `init_main_from_path`). `context` tells it through the
environment instead, and this module, preloaded first, runs the script in the server once, as
the server would: each worker then finds it already run and skips it.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
from multiprocessing import forkserver, process, spawn
from multiprocessing.context import ForkServerContext

from biovita_data.core import environ

ENV = "BIOVITA_FORKSERVER_MAIN"  # the main script's path, set only while the server starts

log = logging.getLogger(__name__)


def context(preload: list[str]) -> ForkServerContext:
    """The forkserver context with its server running: `preload` imported there and the main
    script run there once (a server already running is kept as it is)."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__, *preload])
    main = spawn.get_preparation_data("main").get("init_main_from_path")
    with environ.scoped({ENV: main}):
        forkserver.ensure_running()
    return ctx


def _run_main_in_server() -> None:
    """In the server (importing this module): run the main script as each worker would."""
    path = os.environ.pop(ENV, None)  # not passed on to the workers' own children
    if not path or not os.path.isfile(path):
        return
    process.current_process()._inheriting = True  # as multiprocessing's own preload does
    try:
        spawn.import_main_path(path)
    except (Exception, SystemExit) as exc:  # the workers then run it as before, failing alike
        log.debug("main script %s not run in the forkserver: %s", path, exc)
    finally:
        del process.current_process()._inheriting


if ENV in os.environ and not hasattr(sys.modules["__main__"], "__file__"):  # the server's `-c`
    _run_main_in_server()
