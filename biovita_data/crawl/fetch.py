"""The crawl stage: run each source's queries page by page, resumably, into OUT/raw/<source>/."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from biovita_data.core import layout
from biovita_data.core.schemas import FAILURE, RAW_KEY, RAW_RECORD
from biovita_data.core.tables import (
    read_table,
    replace_failures,
    to_table,
    write_json_atomic,
    write_table,
)
from biovita_data.crawl.http import FetchError, HttpClient
from biovita_data.crawl.licenses import DEFAULT_ALLOWED
from biovita_data.crawl.sources.base import Page, Source, SourceResult, SplitQuery
from biovita_data.crawl.sources.gbif import MAX_OFFSET, GbifSource
from biovita_data.crawl.sources.inat_open_data import OpenDataSource
from biovita_data.crawl.sources.inaturalist import INaturalistSource
from biovita_data.crawl.sources.xeno_canto import XenoCantoSource, api_key
from biovita_data.crawl.taxa import TaxonResolver

SOURCES = ("xeno-canto", "inaturalist", "inat-open-data", "gbif")


@dataclass
class FetchSettings:
    taxa: list[str]
    sources: list[str] = field(default_factory=lambda: ["xeno-canto", "inaturalist"])
    since: str | None = None
    licenses: tuple[str, ...] = DEFAULT_ALLOWED
    max_per_species: int | None = None
    max_records: int | None = None
    xeno_canto_url: str = "https://xeno-canto.org/api/3"
    inaturalist_url: str = "https://api.inaturalist.org/v1"
    open_data_url: str = "https://inaturalist-open-data.s3.amazonaws.com"
    gbif_url: str = "https://api.gbif.org/v1"
    gbif_datasets: list[str] = field(default_factory=list)  # none: the Animal Sound Archive
    media: str = "sound"  # what GBIF is asked for: sound | image | both
    gbif_max_offset: int = MAX_OFFSET
    throttle: bool = True
    retries: int = 6
    backoff_s: float = 0.5

    def fingerprint(self, source: str) -> str:
        """What makes a run's state reusable: the same query for the same source."""
        key = [sorted(self.taxa), self.since, sorted(self.licenses), source]
        if source == "gbif":
            key += [sorted(self.gbif_datasets), self.media]
        return hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]


class CrawlState:
    """OUT/raw/<source>/state.json + one Parquet part per finished page: what a resume needs."""

    def __init__(self, directory: Path, fingerprint: str, restart: bool = False) -> None:
        self.dir = directory
        self.path = directory / "state.json"
        self.parts = directory / "parts"
        state = json.loads(self.path.read_text()) if self.path.exists() else None
        if state and state.get("fingerprint") != fingerprint:
            if not restart:
                raise FetchError(
                    f"{directory} holds an unfinished crawl with other settings; finish it with "
                    "the same command, or pass --restart to discard it"
                )
            state = None
        if state is None:
            shutil.rmtree(self.parts, ignore_errors=True)
            state = {"fingerprint": fingerprint, "queries": [], "progress": {}}
        self.state = state

    def save(self) -> None:
        write_json_atomic(self.state, self.path)

    def part_path(self, query: str, seq: int, kind: str) -> Path:
        qid = hashlib.sha256(query.encode()).hexdigest()[:12]
        return self.parts / f"{qid}-{seq:06d}.{kind}.parquet"

    def clear(self) -> None:
        shutil.rmtree(self.parts, ignore_errors=True)
        self.path.unlink(missing_ok=True)


def crawl_source(
    src: Source, state: CrawlState, progress: Progress, max_records: int | None
) -> tuple[pa.Table, pa.Table, int]:
    """Run every query of `src` to the end (resuming from `state`); return all rows + failures."""
    st = state.state
    if not st["queries"]:
        st["queries"] = src.plan()
        state.save()
    task = progress.add_task(src.name, total=None)
    kept = sum(p.get("kept", 0) for p in st["progress"].values())
    progress.update(task, completed=kept)
    i = 0
    while i < len(st["queries"]):
        q = st["queries"][i]
        prog = st["progress"].setdefault(q, {"cursor": None, "seq": 0, "done": False, "kept": 0})
        while not prog["done"] and not (max_records and kept >= max_records):
            progress.update(task, description=f"{src.name}: {q[:40]}")
            try:
                page: Page = src.fetch_page(q, prog["cursor"])
            except SplitQuery as split:
                st["queries"][i + 1 : i + 1] = [s for s in split.queries if s not in st["queries"]]
                write_table(to_table([], RAW_RECORD), state.part_path(q, prog["seq"], "rows"))
                fail_part = to_table(split.failures, FAILURE)
                write_table(fail_part, state.part_path(q, prog["seq"], "fail"))
                prog.update(done=True, split=split.note, seq=prog["seq"] + 1)
                state.save()
                break
            write_table(to_table(page.rows, RAW_RECORD), state.part_path(q, prog["seq"], "rows"))
            write_table(to_table(page.failures, FAILURE), state.part_path(q, prog["seq"], "fail"))
            kept += len(page.rows)
            prog.update(cursor=page.cursor, seq=prog["seq"] + 1, done=page.done)
            note_listing(prog, page)
            prog["kept"] += len(page.rows)
            state.save()
            progress.update(task, completed=kept)
        i += 1
    rows, fails = [], []
    for q in st["queries"]:
        for seq in range(st["progress"].get(q, {}).get("seq", 0)):
            rows.append(read_table(state.part_path(q, seq, "rows"), RAW_RECORD))
            fails.append(read_table(state.part_path(q, seq, "fail"), FAILURE))
    # a split query's one part holds what no narrower query reaches, not a page
    pages = sum(p["seq"] - bool(p.get("split")) for p in st["progress"].values())
    return (
        pa.concat_tables([RAW_RECORD.empty_table(), *rows]),
        pa.concat_tables([FAILURE.empty_table(), *fails]),
        pages,
    )


def note_listing(prog: dict, page: Page) -> None:
    """Keep what `update` continues from: the query's count (first page's), its highest id and
    latest modification time."""
    if page.total is not None and "total" not in prog:
        prog["total"] = page.total
    if page.max_id is not None:
        prog["max_id"] = max(prog.get("max_id") or page.max_id, page.max_id)
    if page.watermark is not None:
        prog["watermark"] = max(prog.get("watermark") or page.watermark, page.watermark)


def listing_record(state: CrawlState) -> dict:
    """Per query of a finished crawl: its count, highest id, latest modification (crawl.json)."""
    keep = ("total", "max_id", "watermark", "split")
    return {
        q: {k: p[k] for k in keep if k in p}
        for q, p in state.state["progress"].items()
        if q in state.state["queries"]
    }


def write_crawl_record(out: Path, settings: FetchSettings, sources: dict[str, dict]) -> None:
    """OUT/raw/crawl.json: the settings and, per source, each query's listing record; sources
    crawled before keep their entries."""
    path = layout.crawl_record_path(out)
    old = json.loads(path.read_text()) if path.exists() else {}
    keep = ("taxa", "sources", "since", "licenses", "max_per_species", "max_records",
            "gbif_datasets", "media", "gbif_max_offset")  # fmt: skip
    record = {
        "settings": {k: getattr(settings, k) for k in keep},
        "sources": {**old.get("sources", {}), **sources},
    }
    record["settings"]["sources"] = sorted(
        set(old.get("settings", {}).get("sources", [])) | set(settings.sources)
    )
    write_json_atomic(record, path)


def _natural(df: pl.DataFrame) -> pl.DataFrame:
    """Sort by key with numeric ids in numeric order (deterministic output bytes)."""
    return df.sort(
        [pl.col("source"), pl.col("modality"), pl.col("record_id").str.len_chars(), "record_id"]
    )


def _failures(records: pl.DataFrame, reason: str, detail: pl.Expr) -> pl.DataFrame:
    """Raw records as fetch-stage failure rows with one reason."""
    return records.select(
        pl.lit("fetch").alias("stage"),
        "source",
        "modality",
        "record_id",
        pl.col("raw_scientific_name").alias("name"),
        pl.lit(reason).alias("reason"),
        detail.alias("detail"),
    )


def finalize(
    out: Path, source: str, rows: pa.Table, fails: pa.Table, settings: FetchSettings
) -> SourceResult:
    """Dedupe, cap, merge into an existing records.parquet, and write records + failures."""
    df = pl.from_arrow(rows)
    fdf = pl.from_arrow(fails)
    dup = df.filter(
        pl.struct(list(RAW_KEY)).is_duplicated() & ~pl.struct(list(RAW_KEY)).is_first_distinct()
    )
    df = df.unique(subset=list(RAW_KEY), keep="first", maintain_order=True)
    extra = [_failures(dup, "duplicate", pl.format("listed again by query {}", pl.col("query")))]
    if settings.max_per_species:
        rank = pl.col("record_id").cum_count().over(["modality", "raw_scientific_name"])
        over = df.with_columns(rank.alias("_n")).filter(pl.col("_n") > settings.max_per_species)
        df = (
            df.with_columns(rank.alias("_n"))
            .filter(pl.col("_n") <= settings.max_per_species)
            .drop("_n")
        )
        cap = pl.lit(f"beyond --max-per-species {settings.max_per_species}")
        extra.append(_failures(over, "over_cap", cap))
    records_path = layout.raw_records_path(out, source)
    old = pl.from_arrow(read_table(records_path, RAW_RECORD))
    if len(old):
        # incremental merge: a record seen again is replaced by its newer version
        df = pl.concat([df, old], how="vertical_relaxed").unique(
            subset=list(RAW_KEY), keep="first", maintain_order=True
        )
    df = _natural(df)
    write_table(df.to_arrow().cast(RAW_RECORD), records_path)
    old_f = pl.from_arrow(read_table(layout.failures_path(out), FAILURE)).filter(
        (pl.col("stage") == "fetch") & (pl.col("source") == source)
    )
    allf = pl.concat([fdf, *[e.cast(fdf.schema) for e in extra], old_f], how="vertical_relaxed")
    # a record that is kept now (e.g. after a fix upstream) is no longer a failure
    kept_ids = df.select("modality", "record_id")
    allf = (
        allf.unique(subset=["modality", "record_id", "reason"], keep="first").join(
            kept_ids, on=["modality", "record_id"], how="anti"
        )
        if len(allf)
        else allf
    )
    replace_failures(out, "fetch", [source], allf.to_arrow().cast(FAILURE))
    dropped = dict(allf.group_by("reason").len().iter_rows()) if len(allf) else {}
    return SourceResult(source, kept=len(df), dropped=dropped)


def build_sources(settings: FetchSettings, http: HttpClient, out: Path) -> list[Source]:
    if "xeno-canto" in settings.sources:
        api_key()  # a missing key is an error before any request
    targets = []
    if set(settings.sources) - {"gbif"}:  # GBIF resolves names in its own backbone
        resolver = TaxonResolver(http, settings.inaturalist_url)
        targets = [resolver.resolve(t) for t in settings.taxa]
    crawlers = {
        "xeno-canto": (XenoCantoSource, settings.xeno_canto_url),
        "inaturalist": (INaturalistSource, settings.inaturalist_url),
    }
    built: list[Source] = []
    for name in settings.sources:
        if name in crawlers:
            cls, url = crawlers[name]
            built.append(cls(http, url, targets, since=settings.since, allowed=settings.licenses))
        elif name == "gbif":
            built.append(
                GbifSource(
                    http,
                    settings.gbif_url,
                    settings.taxa,
                    datasets=settings.gbif_datasets,
                    media=settings.media,
                    since=settings.since,
                    allowed=settings.licenses,
                    max_offset=settings.gbif_max_offset,
                )
            )
        elif name == "inat-open-data":
            url, tables = settings.open_data_url, layout.raw_dir(out, name) / "tables"
            built.append(OpenDataSource(http, url, targets, tables, allowed=settings.licenses))
        else:
            raise ValueError(f"unknown source {name!r}; choose from {', '.join(SOURCES)} or all")
    return built


def fetch(
    settings: FetchSettings,
    out: Path,
    *,
    console: Console | None = None,
    restart: bool = False,
    http: HttpClient | None = None,
) -> list[SourceResult]:
    """Crawl every selected source into OUT; resumable; prints a summary table."""
    console = console or Console(stderr=True)
    http = http or HttpClient(
        retries=settings.retries, backoff_s=settings.backoff_s, throttle=settings.throttle
    )
    results = []
    t0 = time.monotonic()
    sources = build_sources(settings, http, out)
    listings: dict[str, dict] = {}
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed} records"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        for src in sources:
            start = time.monotonic()
            state = CrawlState(
                layout.raw_dir(out, src.name), settings.fingerprint(src.name), restart
            )
            rows, fails, pages = crawl_source(src, state, progress, settings.max_records)
            res = finalize(out, src.name, rows, fails, settings)
            listings[src.name] = {"queries": listing_record(state)}
            res.pages, res.seconds = pages, time.monotonic() - start
            res.splits = [
                f"{q}: {p['split']}"
                for q, p in state.state["progress"].items()
                if isinstance(p.get("split"), str)
            ]
            write_crawl_record(out, settings, listings)
            state.clear()
            results.append(res)
    run = {
        "sources": [r.__dict__ for r in results],
        "http": dict(http.stats),
        "seconds": round(time.monotonic() - t0, 2),
        "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    summary_path = layout.fetch_summary_path(out)
    old = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    # the last run at the top level; every run (this one last) in `history`
    history = [*old.get("history", [{k: v for k, v in old.items() if k != "history"}]), run]
    write_json_atomic({**run, "history": [h for h in history if h]}, summary_path)
    console.print(summary_table(results, http))
    for r in results:
        for note in r.splits:
            console.print(f"{r.source}: split {note}")
    return results


def summary_table(results: list[SourceResult], http: HttpClient) -> Table:
    table = Table(title="fetch summary")
    for col in ("source", "kept", "dropped (by reason)", "pages", "seconds"):
        table.add_column(col)
    for r in results:
        dropped = ", ".join(f"{k}: {v}" for k, v in sorted(r.dropped.items())) or "-"
        table.add_row(r.source, str(r.kept), dropped, str(r.pages), f"{r.seconds:.1f}")
    errors = {k[7:]: v for k, v in http.stats.items() if k.startswith("error: ")}
    table.caption = f"requests {http.stats['requests']}, retries {http.stats['retries']}" + (
        f"; errors retried: {', '.join(f'{k} x{v}' for k, v in errors.items())}" if errors else ""
    )
    return table


def settings_from_env(**overrides: Any) -> FetchSettings:
    import os

    env: dict[str, Any] = {
        "xeno_canto_url": os.environ.get("XENO_CANTO_API_URL"),
        "inaturalist_url": os.environ.get("INATURALIST_API_URL"),
        "open_data_url": os.environ.get("INATURALIST_OPEN_DATA_URL"),
        "gbif_url": os.environ.get("GBIF_API_URL"),
    }
    if cap := os.environ.get("GBIF_MAX_OFFSET"):  # a GBIF mirror with another offset cap
        env["gbif_max_offset"] = int(cap)
    return FetchSettings(**{**{k: v for k, v in env.items() if v}, **overrides})
