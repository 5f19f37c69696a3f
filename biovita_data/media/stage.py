"""The materialize stage: manifests -> OUT/media/<modality>/shard-*.parquet + index, resumably."""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import polars as pl
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from biovita_data.core import layout
from biovita_data.core.tables import write_json_atomic
from biovita_data.crawl.http import HttpClient
from biovita_data.media import engines, shards
from biovita_data.media.index import build_index, merge_failures, write_if_changed
from biovita_data.media.settings import MaterializeSettings


@dataclass
class ModalityResult:
    """What one modality's run left in OUT."""

    modality: str
    records: int = 0  # manifest records
    kept: int = 0  # records stored, duplicates excluded
    files: int = 0  # stored files of kept records (a segmented recording has several)
    failed: dict[str, int] = field(default_factory=dict)  # by reason (duplicate included)
    bytes: int = 0  # stored bytes of kept files
    downloaded: int = 0  # bytes downloaded by this run
    shards: int = 0
    shards_reused: int = 0  # finished by an earlier run: not redone
    seconds: float = 0.0


@dataclass
class MaterializeResult:
    engine: str
    modalities: list[ModalityResult]
    seconds: float

    def by_modality(self, modality: str) -> ModalityResult:
        return next(m for m in self.modalities if m.modality == modality)


class RateColumn(ProgressColumn):
    """Records per second (and MB/s downloaded) of a task."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        elapsed = task.finished_time or task.elapsed or 0.0
        mb = task.fields.get("downloaded", 0) / 2**20
        if not speed:
            return Text("-/s", style="progress.data.speed")
        rate = f" {mb / elapsed:.1f} MB/s" if elapsed > 0 else ""
        return Text(f"{speed:.1f}/s{rate}", style="progress.data.speed")


def materialize(
    out: Path,
    settings: MaterializeSettings,
    *,
    console: Console | None = None,
    http: HttpClient | None = None,
) -> MaterializeResult:
    """Download, verify, convert, hash and store every manifest record; resumable; idempotent."""
    console = console or Console(stderr=True)
    http = http or HttpClient(
        retries=settings.retries, backoff_s=settings.backoff_s, throttle=settings.throttle
    )
    t0 = time.monotonic()
    ps = settings.process()
    plans = {m: shards.plan(out, m, settings.shard_size, ps) for m in settings.modalities}
    results = {m: ModalityResult(m, records=sum(len(s.items) for s in plans[m])) for m in plans}
    pending = []
    for m, specs in plans.items():
        shards.remove_partial(out, m)
        todo = [s for s in specs if not shards.is_done(out, s)]
        results[m].shards, results[m].shards_reused = len(specs), len(specs) - len(todo)
        pending += todo
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    started = {m: time.monotonic() for m in plans}
    left = Counter()
    for s in pending:
        left[s.modality] += len(s.items)
    with Progress(*columns, console=console, transient=False) as progress:
        tasks = {
            m: progress.add_task(
                f"{m} ({settings.engine})",
                total=results[m].records,
                completed=results[m].records - left[m],
                downloaded=0,
            )
            for m in plans
        }

        def on(modality: str, records: int, downloaded: int) -> None:
            results[modality].downloaded += downloaded
            progress.update(
                tasks[modality], advance=records, downloaded=results[modality].downloaded
            )

        def write(done: engines.ShardDone) -> None:
            shards.write_shard(out, done.spec, done.files, done.failures)
            results[done.spec.modality].seconds = time.monotonic() - started[done.spec.modality]

        run = engines.ENGINES[settings.engine]
        # one writer thread: Parquet encoding (GIL released) overlaps the engine's next records
        with ThreadPoolExecutor(1, "materialize-write") as writer:
            done_shards = run(pending, settings, http, on) if pending else ()
            writes = [writer.submit(write, done) for done in done_shards]
        for w in writes:
            w.result()  # a failed write is an error of the run
    duplicates = {}
    for m, specs in plans.items():
        shards.remove_stale(out, m, len(specs))
        index, duplicates[m] = build_index(out, specs)
        write_if_changed(index, layout.media_index_path(out, m))
        kept = pl.from_arrow(index).filter(pl.col("kept"))
        results[m].kept = kept.select("source", "record_id").n_unique() if len(kept) else 0
        results[m].files, results[m].bytes = len(kept), int(kept["size"].sum() or 0)
    failures = pl.from_arrow(merge_failures(out, plans, duplicates))
    for m in plans:
        mine = failures.filter(pl.col("modality") == m)
        results[m].failed = dict(sorted(Counter(mine["reason"].to_list()).items()))
    result = MaterializeResult(settings.engine, list(results.values()), time.monotonic() - t0)
    write_json_atomic(_summary(settings, result), out / "media" / "materialize.json")
    console.print(summary_table(result, http))
    return result


def _summary(settings: MaterializeSettings, result: MaterializeResult) -> dict:
    """OUT/media/materialize.json: settings and counts (no timings: a re-run writes the same)."""
    keep = ("records", "kept", "files", "failed", "bytes", "shards")
    return {
        "settings": asdict(settings.process()) | {"shard_size": settings.shard_size},
        "modalities": {m.modality: {k: getattr(m, k) for k in keep} for m in result.modalities},
    }


def summary_table(result: MaterializeResult, http: HttpClient) -> Table:
    table = Table(title=f"materialize summary ({result.engine})")
    cols = ("modality", "records", "kept", "files", "failed (by reason)", "stored MB",
            "shards new/reused", "seconds", "records/s")  # fmt: skip
    for col in cols:
        table.add_column(col)
    for m in result.modalities:
        failed = ", ".join(f"{k}: {v}" for k, v in m.failed.items()) or "-"
        new = m.shards - m.shards_reused
        done = m.records * new / m.shards if m.shards else 0
        rate = f"{done / m.seconds:.1f}" if m.seconds > 0 and new else "-"
        table.add_row(
            m.modality, str(m.records), str(m.kept), str(m.files), failed,
            f"{m.bytes / 2**20:.1f}", f"{new}/{m.shards_reused}", f"{m.seconds:.1f}", rate,
        )  # fmt: skip
    got = sum(m.downloaded for m in result.modalities) / 2**20
    table.caption = (
        f"{result.seconds:.1f} s in all; downloaded {got:.1f} MB; "
        f"requests {http.stats['requests']}, "
        f"retries {http.stats['retries']}, failed {http.stats['failed']}"
    )
    return table
