"""Workers forked from the forkserver find the main script already run; dedup's pool sizes
Polars for its share of the cores even when that server already runs."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = """
import os, sys
from concurrent.futures import ProcessPoolExecutor

print("main script run in", os.getpid(), file=sys.stderr, flush=True)

def pid() -> int:
    return os.getpid()

def polars_threads() -> int:
    import polars as pl
    return pl.thread_pool_size()

if __name__ == "__main__":
    from biovita_data.core import forkserver
    from biovita_data.media.dedup import worker_pool
    ctx = forkserver.context(["polars"])
    with ProcessPoolExecutor(2, mp_context=ctx) as pool:
        pids = {pool.submit(pid).result() for _ in range(4)}
    print("workers", *sorted(pids))
    with worker_pool(1, 1) as pool:
        print("dedup threads", pool.submit(polars_threads).result())
"""


def test_workers_skip_the_main_script_and_dedup_sizes_polars(tmp_path: Path) -> None:
    script = tmp_path / "main.py"
    script.write_text(textwrap.dedent(SCRIPT))
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=True
    )
    runs = [line for line in done.stderr.splitlines() if line.startswith("main script run in")]
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    workers = lines["workers"].split()
    ran_in = {line.rsplit(" ", 1)[1] for line in runs}
    assert workers and not ran_in & set(workers)  # no worker ran it again
    # the parent, the forkserver (once, for all workers) and the spawned dedup worker
    assert len(runs) == 3, done.stderr
    assert lines["dedup"] == "threads 1"
