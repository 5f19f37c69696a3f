"""`update`: re-crawl each source from where the last crawl stands and merge the changes into raw.

Per source, what its service offers (OUT/raw/crawl.json holds each query's count, highest id and
latest modification from the last crawl):
- Xeno-canto: `QUERY since:DATE` (upload date) lists the new recordings; one more request reads
  the query's count. When count == last count + new ones, nothing was withdrawn; otherwise (and
  for a crawl without counts) the query is listed again in full, which also finds licence changes.
- iNaturalist: `updated_since` lists new and changed observations (all their media replaced); an
  id-only listing (`only_id=true`, 10,000 ids a page) finds the deleted ones.
- GBIF: `lastInterpreted` from the last crawl's latest lists the changed occurrences; a count
  (`limit=0`) proves nothing was deleted, else the query is crawled again.
- iNaturalist Open Data: the bucket's newer snapshot (its tables downloaded again).
Removed records (withdrawn, licence no longer allowed, taken down) leave raw and are written to
OUT/raw/removed.parquet; OUT/raw/takedown.txt keeps the takedown list.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
from rich.console import Console
from rich.table import Table

from biovita_data.core import layout
from biovita_data.core.budget import DEFAULT_MAX_FAILED, BudgetExceeded, budget_line, failed_counts
from biovita_data.core.schemas import FAILURE, RAW_KEY, RAW_RECORD, REMOVED
from biovita_data.core.tables import read_table, replace_failures, write_json_atomic, write_table
from biovita_data.crawl.fetch import FetchSettings, _natural, build_sources, settings_from_env
from biovita_data.crawl.http import FetchError, HttpClient
from biovita_data.crawl.sources.base import Page, SplitQuery
from biovita_data.crawl.sources.gbif import parse_query

LICENCE_REASONS = ("license_not_allowed", "license_unknown")
ID_PAGE = 10_000  # iNaturalist's page size for only_id=true
KEY = list(RAW_KEY)


class UpdateError(ValueError):
    """An OUT that cannot be updated (no finished crawl, an unfinished fetch, a bad list)."""


@dataclass
class Takedown:
    """The takedown list: (source or None, record_id) -> reason."""

    entries: dict[tuple[str | None, str], str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str, where: str) -> Takedown:
        """One id a line (`source:record_id` or `record_id`); `# reason` after an id is its
        reason, a line holding only `# reason` gives the reason of the ids below it."""
        from biovita_data.crawl.fetch import SOURCES

        entries: dict[tuple[str | None, str], str] = {}
        reason = "takedown request"
        for n, line in enumerate(text.splitlines(), 1):
            body, _, comment = line.partition("#")
            body, comment = body.strip(), comment.strip()
            if not body:
                if comment:
                    reason = comment
                continue
            if len(body.split()) != 1:
                raise UpdateError(f"{where}:{n}: one record id a line, got {body!r}")
            source, _, rid = body.rpartition(":")
            if source and source not in SOURCES:
                raise UpdateError(
                    f"{where}:{n}: unknown source {source!r} (use {', '.join(SOURCES)})"
                )
            entries[(source or None, rid)] = comment or reason
        return cls(entries)

    def merge(self, other: Takedown) -> Takedown:
        return Takedown({**self.entries, **other.entries})

    def text(self) -> str:
        lines = ["# biovita takedown list: source:record_id  # reason"]
        for (source, rid), reason in sorted(
            self.entries.items(), key=lambda e: (e[0][0] or "", e[0][1])
        ):
            lines.append(f"{source + ':' if source else ''}{rid}  # {reason}")
        return "\n".join(lines) + "\n"

    def frame(self) -> pl.DataFrame:
        return pl.DataFrame(
            [
                {"t_source": s, "record_id": r, "t_reason": why}
                for (s, r), why in self.entries.items()
            ],
            schema={"t_source": pl.String, "record_id": pl.String, "t_reason": pl.String},
        )

    def matches(self, df: pl.DataFrame) -> pl.DataFrame:
        """Rows of `df` (source, modality, record_id) the list names, with `t_reason`."""
        t = self.frame()
        if not len(t) or not len(df):
            return df.head(0).with_columns(pl.lit(None, pl.String).alias("t_reason"))
        j = df.join(t, on="record_id", how="inner")
        return j.filter(
            pl.col("t_source").is_null() | (pl.col("t_source") == pl.col("source"))
        ).drop("t_source")


def load_takedown(out: Path) -> Takedown:
    path = layout.takedown_path(out)
    return Takedown.parse(path.read_text(), str(path)) if path.exists() else Takedown()


@dataclass
class Delta:
    """What a source's re-crawl found: rows to (re)place, failures, and what was listed."""

    rows: list[pa.Table] = field(default_factory=list)
    failures: list[pa.Table] = field(default_factory=list)
    replace_units: set = field(default_factory=set)  # units (record, observation, occurrence)
    full_queries: set[str] = field(default_factory=set)  # queries listed again in full
    gone_units: set = field(default_factory=set)  # units the service no longer lists
    listings: dict[str, dict] = field(default_factory=dict)  # new crawl.json entries
    requests: int = 0


@dataclass
class SourceUpdate:
    source: str
    added: int = 0
    changed: int = 0
    removed: dict[str, int] = field(default_factory=dict)
    kept: int = 0
    requests: int = 0
    full_listings: int = 0
    listed: int = 0  # records this crawl parsed (new, changed or listed again)
    failed: dict[str, int] = field(default_factory=dict)  # this crawl's failures by reason


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _page_all(src: Any, query: str, delta: Delta, prog: dict | None = None) -> list[str]:
    """Every page of `query`; returns narrower queries when the service asks for a split."""
    cursor, done = None, False
    while not done:
        try:
            page: Page = src.fetch_page(query, cursor)
        except SplitQuery as split:
            delta.failures.append(pa.Table.from_pylist(split.failures, schema=FAILURE))
            return list(split.queries)
        delta.rows.append(pa.Table.from_pylist(page.rows, schema=RAW_RECORD))
        delta.failures.append(pa.Table.from_pylist(page.failures, schema=FAILURE))
        if prog is not None:
            from biovita_data.crawl.fetch import note_listing

            note_listing(prog, page)
        cursor, done = page.cursor, page.done
    return []


def _frame(tables: list[pa.Table], schema: pa.Schema) -> pl.DataFrame:
    return pl.from_arrow(pa.concat_tables([schema.empty_table(), *tables]))


def _known(out: Path, source: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    raw = pl.from_arrow(read_table(layout.raw_records_path(out, source), RAW_RECORD))
    fails = pl.from_arrow(read_table(layout.failures_path(out), FAILURE)).filter(
        (pl.col("stage") == "fetch") & (pl.col("source") == source)
    )
    return raw, fails


# ---------------------------------------------------------------------- per source
def xeno_canto_delta(
    src: Any, record: dict, raw: pl.DataFrame, delta: Delta, relist: bool = False
) -> None:
    """Per query: listed again in full when that costs at most the two requests of the
    `since:` + count check (up to RELIST_XC recordings), else `since:` and the count."""
    from biovita_data.crawl.sources.xeno_canto import PER_PAGE

    queries = [q for q, p in record.items() if not p.get("split")]
    for q in queries:
        p = record[q]
        prog: dict = {}
        known_max = p.get("max_id")
        total = p.get("total")
        if relist or known_max is None or total is None or total <= 2 * PER_PAGE:
            _full(src, q, delta, prog)
            continue
        uploaded = raw.filter(pl.col("record_id").cast(pl.Int64, strict=False) <= known_max)
        last = uploaded["uploaded"].max()
        since = (last or dt.date(1900, 1, 1)).isoformat()
        new: Delta = Delta()
        _page_all(src, f"{q} since:{since}", new)
        rows = _frame(new.rows, RAW_RECORD)
        fails = _frame(new.failures, FAILURE)
        ids = pl.concat([rows["record_id"], fails["record_id"].drop_nulls()])
        n_new = int((ids.cast(pl.Int64, strict=False) > known_max).sum())
        data = src.http.get_json(
            f"{src.base_url}/recordings",
            {"query": q, "key": src.key, "page": 1, "per_page": 50},
            policy="xeno-canto",
        )
        total = int(data.get("numRecordings", -1)) if isinstance(data, dict) else -1
        if total == p["total"] + n_new:
            fresh = rows.filter(pl.col("record_id").cast(pl.Int64, strict=False) > known_max)
            fresh = fresh.with_columns(pl.lit(q).alias("query"))
            ffresh = fails.filter(pl.col("record_id").cast(pl.Int64, strict=False) > known_max)
            delta.rows.append(fresh.to_arrow().cast(RAW_RECORD))
            delta.failures.append(ffresh.to_arrow().cast(FAILURE))
            delta.replace_units |= set(fresh["record_id"])
            max_id = max([known_max, *ids.cast(pl.Int64, strict=False).drop_nulls().to_list()])
            delta.listings[q] = {"total": total, "max_id": max_id}
        else:  # something was withdrawn (or relicensed): list the query again
            _full(src, q, delta, prog)


def _full(src: Any, query: str, delta: Delta, prog: dict) -> None:
    """List `query` again in full (and its narrower queries when it must be split)."""
    todo = [query]
    while todo:
        q = todo.pop(0)
        prog = {}
        narrower = _page_all(src, q, delta, prog)
        delta.full_queries.add(q)
        if narrower:
            delta.listings[q] = {"split": "split on update"}
            todo += narrower
        else:
            delta.listings[q] = prog


def inaturalist_delta(
    src: Any, record: dict, raw: pl.DataFrame, delta: Delta, relist: bool = False
) -> None:
    """`updated_since` per query; then one id-only listing of all the queries' taxa."""
    current: set[int] = set()
    for q, p in record.items():
        prog: dict = {}
        src.since = None if relist else p.get("watermark")
        if src.since is None:
            _full(src, q, delta, prog)
        else:
            _page_all(src, q, delta, prog)
            prog.setdefault("watermark", p["watermark"])
            delta.listings[q] = prog
    taxa = ",".join(q.split("=", 1)[1] for q in record)
    id_above = 0
    while record:  # the id-only listing: every observation the queries hold now
        data = src.http.get_json(
            f"{src.base_url}/observations",
            {"taxon_id": taxa, "quality_grade": "research", "only_id": "true",
             "order_by": "id", "order": "asc", "id_above": id_above, "per_page": ID_PAGE},
            policy="inaturalist",
        )  # fmt: skip
        results = data.get("results") if isinstance(data, dict) else None
        if not isinstance(results, list):
            raise FetchError(f"malformed iNaturalist id listing after id {id_above}")
        ids = [r["id"] for r in results if isinstance(r, dict) and isinstance(r.get("id"), int)]
        current |= set(ids)
        if len(results) < ID_PAGE:
            break
        id_above = max(ids)
    changed = _frame(delta.rows, RAW_RECORD)["observation_id"].drop_nulls()
    delta.replace_units |= set(changed.to_list())
    known = set(raw["observation_id"].drop_nulls().to_list())
    delta.gone_units |= known - current
    src.since = None


def gbif_delta(
    src: Any, record: dict, raw: pl.DataFrame, delta: Delta, relist: bool = False
) -> None:
    """Per query: crawled again when it fits one page, else `lastInterpreted` + a count."""
    from biovita_data.crawl.sources.gbif import PER_PAGE

    known_ids = set(raw["gbif_id"].drop_nulls().to_list())
    for q, p in record.items():
        if p.get("split"):
            continue
        stamp = raw.filter(pl.col("query") == q)["updated_at"].max()
        total = p.get("total")
        if relist or total is None or total <= PER_PAGE or stamp is None:
            _full(src, q, delta, {})
            continue
        params, hints = parse_query(q)
        from biovita_data.crawl.sources.gbif import make_query

        since = stamp.date().isoformat()
        changed_q = make_query({**params, "lastInterpreted": [f"{since},*"]}, hints)
        new = Delta()
        _page_all(src, changed_q, new)
        rows = _frame(new.rows, RAW_RECORD)
        n_new = len(set(rows["gbif_id"].drop_nulls().to_list()) - known_ids)
        count = src._search(params, limit=0)["count"]
        if count == p["total"] + n_new:
            delta.rows += [rows.with_columns(pl.lit(q).alias("query")).to_arrow().cast(RAW_RECORD)]
            delta.failures += new.failures
            delta.replace_units |= set(rows["gbif_id"].drop_nulls().to_list())
            delta.listings[q] = {"total": count}
        else:
            _full(src, q, delta, {})


def open_data_delta(
    src: Any, record: dict, raw: pl.DataFrame, delta: Delta, relist: bool = False
) -> None:
    shutil.rmtree(src.cache_dir, ignore_errors=True)  # the bucket's newer snapshot
    for q in record:
        _full(src, q, delta, {})


DELTAS = {
    "xeno-canto": (xeno_canto_delta, "record_id"),
    "inaturalist": (inaturalist_delta, "observation_id"),
    "gbif": (gbif_delta, "gbif_id"),
    "inat-open-data": (open_data_delta, "record_id"),
}


# ---------------------------------------------------------------------- merge
def merge(
    out: Path, source: str, delta: Delta, takedown: Takedown, now: str
) -> tuple[SourceUpdate, pl.DataFrame]:
    """The source's new raw table and its removed rows; written removed first, records next."""
    raw, old_fails = _known(out, source)
    unit = DELTAS[source][1]
    rows = _frame(delta.rows, RAW_RECORD).unique(subset=KEY, keep="first", maintain_order=True)
    fails = _frame(delta.failures, FAILURE)
    # what the re-crawl covers: whole queries listed again, changed units, gone units
    covered = pl.col("query").is_in(list(delta.full_queries)) | pl.col(unit).is_in(
        list(delta.replace_units | delta.gone_units)
    )
    if unit == "record_id":
        covered = pl.col("query").is_in(list(delta.full_queries)) | pl.col("record_id").is_in(
            [str(u) for u in delta.replace_units]
        )
    stay = raw.filter(~covered.fill_null(False))
    # a record listed again that now fails (e.g. its licence) leaves raw too
    stay = stay.join(
        fails.select("modality", "record_id").drop_nulls(), on=["modality", "record_id"], how="anti"
    )
    new = pl.concat([rows, stay], how="vertical_relaxed").unique(
        subset=KEY, keep="first", maintain_order=True
    )
    hits = takedown.matches(new.select("source", "modality", "record_id"))
    new = new.join(hits.select(KEY), on=KEY, how="anti")
    gone = raw.join(new.select(KEY), on=KEY, how="anti").select(KEY)
    lic = fails.filter(pl.col("reason").is_in(LICENCE_REASONS)).select(
        "modality", "record_id", pl.col("detail").alias("l_detail")
    )
    gone = (
        gone.join(
            # a record's first licence failure names it (keep="any" may pick another each run)
            lic.unique(subset=["modality", "record_id"], keep="first"),
            on=["modality", "record_id"],
            how="left",
        )
        .join(hits.select(*KEY, "t_reason"), on=KEY, how="left")
        .with_columns(
            reason=pl.when(pl.col("t_reason").is_not_null())
            .then(pl.lit("takedown"))
            .when(pl.col("l_detail").is_not_null())
            .then(pl.lit("licence"))
            .otherwise(pl.lit("withdrawn")),
            detail=pl.coalesce("t_reason", "l_detail", pl.lit("no longer listed by the source")),
            removed_at=pl.lit(now),
        )
        .select(REMOVED.names)
    )
    old_keys = raw.select(KEY)
    changed_cols = ["license", "raw_scientific_name", "latitude", "longitude", "media_url",
                    "observation_id", "raw_taxon_id"]  # fmt: skip
    both = new.join(old_keys, on=KEY, how="semi")
    cmp = both.select(*KEY, *changed_cols).join(
        raw.select(*KEY, *changed_cols), on=KEY, suffix="_old"
    )
    diff = pl.any_horizontal(
        *[pl.col(c).ne_missing(pl.col(f"{c}_old")) for c in changed_cols if c != "media_url"],
        _path(pl.col("media_url")).ne_missing(_path(pl.col("media_url_old"))),
    )
    result = SourceUpdate(
        source,
        added=len(new.join(old_keys, on=KEY, how="anti")),
        changed=int(cmp.select(diff.sum()).item() or 0),
        removed=dict(gone.group_by("reason").len().iter_rows()) if len(gone) else {},
        kept=len(new),
        requests=delta.requests,
        full_listings=len(delta.full_queries),
        listed=len(rows),
        failed=dict(fails.group_by("reason").len().iter_rows()) if len(fails) else {},
    )
    # failures: this crawl's, plus older ones of records it did not list again
    allf = pl.concat([fails, old_fails], how="vertical_relaxed")
    allf = allf.unique(subset=["modality", "record_id", "reason"], keep="first").join(
        new.select("modality", "record_id"), on=["modality", "record_id"], how="anti"
    ) if len(allf) else allf  # fmt: skip
    write_removed(out, gone, new.select(KEY))
    write_table(_natural(new).to_arrow().cast(RAW_RECORD), layout.raw_records_path(out, source))
    replace_failures(out, "fetch", [source], allf.to_arrow().cast(FAILURE))
    return result, gone


def _path(url: pl.Expr) -> pl.Expr:
    """A media URL without scheme and host: the same file moved to another host is unchanged."""
    return url.str.replace(r"^[a-z]+://[^/]+", "")


def write_removed(out: Path, gone: pl.DataFrame, present: pl.DataFrame) -> None:
    """Accumulate removed rows (one per record, the latest reason); a record back in raw leaves."""
    path = layout.removed_path(out)
    old = pl.from_arrow(read_table(path, REMOVED))
    merged = pl.concat([gone, old], how="vertical_relaxed").unique(
        subset=KEY, keep="first", maintain_order=True
    )
    merged = merged.join(present, on=KEY, how="anti") if len(present) else merged
    merged = _natural(merged)
    if path.exists() or len(merged):
        write_table(merged.to_arrow().cast(REMOVED), path)


# ---------------------------------------------------------------------- the command
def crawl_record(out: Path) -> dict:
    path = layout.crawl_record_path(out)
    if not path.exists():
        if layout.raw_root(out).is_dir():
            raise UpdateError(
                f"{out} has no record of its last crawl ({path.name}): it was crawled by an "
                "older version; run `biovita-data fetch` again (the crawl merges into raw), "
                "then update"
            )
        raise UpdateError(f"{out} holds no crawl: run `biovita-data fetch` (or `run`) first")
    return json.loads(path.read_text())


def check_resumable(out: Path, sources: list[str]) -> None:
    """Refuse an OUT whose last fetch stopped halfway (its raw would mix two crawls)."""
    for s in sources:
        state = layout.raw_dir(out, s) / "state.json"
        if state.exists():
            raise UpdateError(
                f"{layout.raw_dir(out, s)} holds an unfinished fetch: finish it first with the "
                "same `biovita-data fetch` command (or `fetch --restart`), then update"
            )


def update(
    out: Path,
    *,
    exclude: Path | None = None,
    console: Console | None = None,
    http: HttpClient | None = None,
    settings: FetchSettings | None = None,
    crawl: bool = True,
    relist: bool = False,
    max_failed: float = DEFAULT_MAX_FAILED,
) -> dict:
    """Re-crawl every source of OUT's last crawl from where it stands; merge; apply takedowns.

    BudgetExceeded, once all is merged and written, when more than `max_failed` of what a
    source's re-crawl parsed failed (as `fetch --max-failed`)."""
    console = console or Console(stderr=True)
    record = crawl_record(out)
    stored = record["settings"]
    settings = settings or settings_from_env(
        **{k: v for k, v in stored.items() if k != "max_records"}
    )
    settings.licenses = tuple(stored["licenses"])
    takedown = load_takedown(out)
    unknown: list[str] = []
    if exclude is not None:
        try:
            extra = Takedown.parse(exclude.read_text(), str(exclude))
        except OSError as exc:
            raise UpdateError(f"{exclude}: cannot read the takedown list: {exc.strerror}") from None
        takedown = takedown.merge(extra)
        known = pl.concat(
            [
                pl.from_arrow(read_table(layout.raw_records_path(out, s), RAW_RECORD)).select(
                    "source", "record_id"
                )
                for s in record["sources"]
            ]
            + [
                pl.from_arrow(read_table(layout.removed_path(out), REMOVED)).select(
                    "source", "record_id"
                )
            ]
        )
        for (source, rid), _ in extra.entries.items():
            hit = known.filter(pl.col("record_id") == rid)
            if source:
                hit = hit.filter(pl.col("source") == source)
            if not len(hit):
                unknown.append(f"{source + ':' if source else ''}{rid}")
    sources = [s for s in stored["sources"] if s in record["sources"]]
    check_resumable(out, sources)
    state_path = layout.update_state_path(out)
    prior = json.loads(state_path.read_text()) if state_path.exists() else {}
    resumed = prior.get("status") == "running"
    now = _now()
    write_json_atomic({"status": "running", "started": now, "sources": {}}, state_path)
    if exclude is not None:
        layout.takedown_path(out).parent.mkdir(parents=True, exist_ok=True)
        layout.takedown_path(out).write_text(takedown.text())
    http = http or HttpClient(
        retries=settings.retries, backoff_s=settings.backoff_s, throttle=settings.throttle
    )
    t0 = time.monotonic()
    results: list[SourceUpdate] = []
    settings.sources = sources
    built = {s.name: s for s in build_sources(settings, http, out)} if crawl and sources else {}
    for name in sources:
        before = http.stats["requests"]
        delta = Delta()
        if crawl:
            raw, _ = _known(out, name)
            queries = record["sources"][name]["queries"]
            try:
                DELTAS[name][0](built[name], queries, raw, delta, relist)
            except FetchError as exc:
                raise FetchError(f"{name}: {exc} (rerun `update` to resume)") from None
        else:
            delta.full_queries = set()
        delta.requests = http.stats["requests"] - before
        res, _ = merge(out, name, delta, takedown, now)
        results.append(res)
        if crawl:
            entry = record["sources"][name]["queries"]
            entry.update(delta.listings)
            record["sources"][name]["updated"] = now
            write_json_atomic(record, layout.crawl_record_path(out))
    summary = {
        "status": "done",
        "started": now,
        "resumed": resumed,
        "seconds": round(time.monotonic() - t0, 2),
        "requests": http.stats["requests"],
        "sources": {r.source: r.__dict__ for r in results},
        "takedown_unknown": unknown,
    }
    write_json_atomic(summary, state_path)
    console.print(summary_table(results, summary))
    for rid in unknown:
        console.print(f"[yellow]takedown: {rid} is not a record of {out} (kept on the list)")
    for r in results:
        if line := budget_line(f"update {r.source}", r.listed, r.failed, max_failed):
            raise BudgetExceeded(line)
    return summary


def summary_table(results: list[SourceUpdate], summary: dict) -> Table:
    table = Table(title="update summary")
    for col in ("source", "added", "changed", "removed (by reason)", "kept", "failed", "requests"):
        table.add_column(col)
    for r in results:
        removed = ", ".join(f"{k}: {v}" for k, v in sorted(r.removed.items())) or "-"
        failed = str(sum(failed_counts(r.failed).values()))
        table.add_row(
            r.source, str(r.added), str(r.changed), removed, str(r.kept), failed, str(r.requests)
        )
    table.caption = f"requests {summary['requests']}; {summary['seconds']:.1f} s"
    return table
