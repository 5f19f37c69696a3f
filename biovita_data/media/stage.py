"""The materialize stage: manifests -> OUT/media/<modality>/shard-*.parquet + index, resumably."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import polars as pl
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
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
from biovita_data.core.budget import BudgetExceeded, over_budget
from biovita_data.core.progress import LogProgress
from biovita_data.core.tables import write_json_atomic
from biovita_data.crawl.http import HttpClient
from biovita_data.media import engines, shards
from biovita_data.media.index import build_index, merge_failures, write_if_changed
from biovita_data.media.settings import MaterializeSettings
from biovita_data.media.store import STORE_FILE, MediaStore


@dataclass
class ModalityResult:
    """What one modality's run left in OUT."""

    modality: str
    records: int = 0  # manifest records
    kept: int = 0  # records stored, duplicates excluded
    files: int = 0  # stored files of kept records (a segmented recording has several)
    failed: dict[str, int] = field(default_factory=dict)  # by reason (duplicate included)
    failed_hosts: dict[str, int] = field(default_factory=dict)  # host:port -> failed (not dups)
    bytes: int = 0  # stored bytes of kept files
    downloaded: int = 0  # bytes downloaded by this run
    shards: int = 0
    shards_reused: int = 0  # finished by an earlier run: not redone
    seconds: float = 0.0
    stored_new: int = 0  # bytes of media stored by this run's workers


@dataclass
class MaterializeResult:
    engine: str
    modalities: list[ModalityResult]
    seconds: float
    media_root: str = ""  # where the shards are (OUT/media, a folder or an fsspec URL)
    driver_bytes: int = 0  # what the workers sent the driver (pickled reports, no media)
    nodes: int = 0  # machines (Ray nodes) that did shards in this run

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
    """Download, verify, convert, hash and store every manifest record; resumable; idempotent.

    Everything is written first (shards, index, failures, summary); then BudgetExceeded if a
    modality's failed share exceeds `settings.max_failed`. A shard with `host_unreachable`
    failures is done again by the next run."""
    console = console or Console(stderr=True)
    http = http or HttpClient(
        retries=settings.retries, backoff_s=settings.backoff_s, throttle=settings.throttle
    )
    t0 = time.monotonic()
    ps = settings.process()
    store = use_store(out, settings.media_root)
    plans = {m: shards.plan(out, m, settings.shard_size, ps, store) for m in settings.modalities}
    results = {m: ModalityResult(m, records=sum(len(s.items) for s in plans[m])) for m in plans}
    pending = []
    for m, specs in plans.items():
        shards.remove_partial(store, m)
        todo = [s for s in specs if not shards.is_done(store, s)]
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
    # in a log: a plain line every 5 % or 30 s (core.progress)
    with LogProgress(*columns, console=console, transient=False, unit="records") as progress:
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

        run = engines.ENGINES[settings.engine]
        received = engines.Received()
        known: dict[str, dict[int, pl.DataFrame]] = {m: {} for m in plans}
        for report in run(pending, settings, http, store, on, received) if pending else ():
            known[report.modality][report.index] = report.rows
            results[report.modality].stored_new += report.stored
            results[report.modality].seconds = time.monotonic() - started[report.modality]
    duplicates = {}
    for m, specs in plans.items():
        shards.remove_stale(store, m, len(specs))
        index, duplicates[m] = build_index(store, specs, known[m])
        write_if_changed(index, layout.media_index_path(out, m))
        kept = pl.from_arrow(index).filter(pl.col("kept"))
        results[m].kept = kept.select("source", "record_id").n_unique() if len(kept) else 0
        results[m].files, results[m].bytes = len(kept), int(kept["size"].sum() or 0)
    failures = pl.from_arrow(merge_failures(out, store, plans, duplicates))
    for m in plans:
        mine = failures.filter(pl.col("modality") == m)
        results[m].failed = dict(sorted(Counter(mine["reason"].to_list()).items()))
        results[m].failed_hosts = failed_hosts(out, m, mine)
    seconds = time.monotonic() - t0
    result = MaterializeResult(
        settings.engine,
        list(results.values()),
        seconds,
        store.url,
        received.bytes,
        len(received.nodes),
    )
    write_json_atomic(_summary(settings, result), out / "media" / "materialize.json")
    console.print(summary_table(result, http))
    for line in unreachable_lines(result, http):
        console.print(line, markup=False, highlight=False)
    over = [
        line
        for m in result.modalities
        if (line := over_budget(m.modality, m.records, m.failed, settings.max_failed,
                                m.failed_hosts))
    ]  # fmt: skip
    if over:
        raise BudgetExceeded(
            f"materialize: {'; '.join(over)}. What was stored and the failures are kept "
            f"(shards in {result.media_root}, {out}/manifests/failures.parquet) and the bench "
            "was not drawn again: rerun materialize once the hosts answer (it resumes), or pass "
            "--max-failed 1.0 to accept the losses"
        )
    return result


def failed_hosts(out: Path, modality: str, failures: pl.DataFrame) -> dict[str, int]:
    """host:port of the media URL -> failed records of `modality` (duplicates not counted)."""
    path = layout.media_manifest_path(out, modality)
    bad = failures.filter(pl.col("reason") != "duplicate").select("source", "record_id")
    if not len(bad) or not path.exists():
        return {}
    urls = pl.read_parquet(path, columns=["source", "record_id", "media_url"])
    parts = pl.col("media_url").str.extract_groups(r"^(?i)(https?)://(?:[^@/?#]*@)?([^/?#]+)")
    scheme, netloc = pl.col("_p").struct.field("1"), pl.col("_p").struct.field("2")
    default_port = pl.when(scheme.str.to_lowercase() == "https").then(pl.lit(":443"))
    host = (  # host:port, as the HTTP client's circuit breaker names hosts
        pl.when(netloc.str.contains(r":\d+$"))
        .then(netloc)
        .otherwise(netloc + default_port.otherwise(pl.lit(":80")))
        .str.to_lowercase()
        .fill_null("(no URL)")
    )
    hosts = (
        bad.join(urls.unique(["source", "record_id"]), on=["source", "record_id"], how="left")
        .with_columns(parts.alias("_p"))
        .select(host.alias("host"))
        .group_by("host")
        .len()
        .sort(["len", "host"], descending=[True, False])
    )
    return dict(hosts.iter_rows())


def unreachable_lines(result: MaterializeResult, http: HttpClient) -> list[str]:
    """One line per host the workers gave up (the circuit breaker), with its failed records."""
    hosts = sorted(k.split(": ", 1)[1] for k in http.stats if k.startswith("unreachable host: "))
    lines = []
    for host in hosts:
        n = sum(m.failed_hosts.get(host, 0) for m in result.modalities)
        lines.append(
            f"host {host} unreachable (every connection failed; given up after "
            f"{http.host_failures} in a row): {n} records failed as host_unreachable or http_error"
        )
    return lines


def use_store(out: Path, media_root: str | None) -> MediaStore:
    """The run's media store; a `media_root` is recorded in OUT/media/store.json, so later runs
    and `publish` find the shards there without being told again."""
    store = MediaStore.of(out, media_root)
    record = out / "media" / STORE_FILE
    if media_root:
        write_json_atomic({"media_root": store.url}, record)
    return store


def _summary(settings: MaterializeSettings, result: MaterializeResult) -> dict:
    """OUT/media/materialize.json: settings and counts (no timings: a re-run writes the same)."""
    keep = ("records", "kept", "files", "failed", "failed_hosts", "bytes", "shards")
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
        f"{result.seconds:.1f} s in all; downloaded {got:.1f} MB; shards in {result.media_root} "
        f"(the driver received {result.driver_bytes / 2**10:.0f} KB); "
        f"requests {http.stats['requests']}, "
        f"retries {http.stats['retries']}, failed {http.stats['failed']}"
    )
    return table
