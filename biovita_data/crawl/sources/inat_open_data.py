"""iNaturalist Open Data: the bucket's TSV tables, filtered by ancestry and joined -> photo rows."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path
from typing import Any

import polars as pl

from biovita_data.core.tables import atomic_path
from biovita_data.crawl.http import FetchError, HttpClient
from biovita_data.crawl.licenses import DEFAULT_ALLOWED
from biovita_data.crawl.sources.base import (
    BadRecord,
    Page,
    TargetSource,
    check_license,
    failure,
    normalize_format,
    to_date,
    to_float,
)
from biovita_data.crawl.taxa import Target

NAME = "inat-open-data"
TABLES = ("taxa", "observations", "photos", "observers")


class OpenDataSource(TargetSource):
    """Downloads each table once (kept under `cache_dir`, resumable), then one page per target."""

    name = NAME

    def __init__(
        self,
        http: HttpClient,
        base_url: str,
        targets: list[Target],
        cache_dir: Path,
        *,
        allowed: tuple[str, ...] = DEFAULT_ALLOWED,
    ) -> None:
        super().__init__(http, base_url, targets, allowed=allowed)
        self.cache_dir = cache_dir

    def _table(self, name: str) -> pl.LazyFrame:
        """The table as a lazy scan: downloaded (streamed) and unpacked once, then cached."""
        tsv = self.cache_dir / f"{name}.tsv"
        if not tsv.exists():
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            url = f"{self.base_url}/{name}.csv.gz"
            gz = self.http.download(url, self.cache_dir / f"{name}.csv.gz", policy=NAME)
            try:
                with atomic_path(tsv) as part, gzip.open(gz, "rb") as src, open(part, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            except (OSError, EOFError) as exc:  # an HTML error page, a truncated file
                with open(gz, "rb") as f:
                    head = f.read(60).decode(errors="replace")
                gz.unlink()
                raise FetchError(
                    f"Open Data table {name}: {url} did not answer a gzipped table ({exc}; it "
                    f"starts {head!r}); nothing was kept, run the fetch again"
                ) from None
            gz.unlink()
        # The bucket's TSVs use no quoting at all; quotes inside fields are literal. A row with
        # too many fields is cut (its ids are then checked like any other row's).
        return pl.scan_csv(
            tsv, separator="\t", quote_char=None, infer_schema=False, truncate_ragged_lines=True
        )

    def fetch_page(self, query: str, cursor: Any) -> Page:
        taxon_id = query.split("=", 1)[1]
        taxa = self._table("taxa")
        anc = pl.concat_str([pl.lit("/"), pl.col("ancestry"), pl.lit("/")])
        wanted = taxa.filter(
            (pl.col("taxon_id") == taxon_id) | anc.str.contains(f"/{taxon_id}/", literal=True)
        )
        obs = self._table("observations").filter(pl.col("quality_grade") == "research")
        joined = (
            self._table("photos")
            .join(obs.drop("observer_id"), on="observation_uuid", how="inner")
            .join(wanted, on="taxon_id", how="inner")
            .join(self._table("observers"), on="observer_id", how="left")
            .with_columns(
                _pid=pl.col("photo_id").str.strip_chars().cast(pl.Int64, strict=False),
                _tid=pl.col("taxon_id").str.strip_chars().cast(pl.Int64, strict=False),
            )
            .sort("_pid", "photo_id", nulls_last=True)
            .collect(engine="streaming")
        )
        page = Page(cursor=None, done=True)
        for r in joined.iter_rows(named=True):
            try:
                page.rows.append(self._row(r, query))
            except BadRecord as exc:
                rid = r["photo_id"][:40] if isinstance(r["photo_id"], str) else None
                page.failures.append(failure(NAME, "image", rid, r["name"], exc))
        return page

    def _row(self, r: dict, query: str) -> dict:
        """One joined row -> a raw row; BadRecord for a malformed one (it must not stop the
        source: the tables are hundreds of millions of rows written without quoting)."""
        if r["_pid"] is None or r["_pid"] < 0:
            raise BadRecord("malformed", f"photo_id is not an integer: {r['photo_id']!r}")
        if r["_tid"] is None:
            raise BadRecord("malformed", f"taxon_id is not an integer: {r['taxon_id']!r}")
        pid, ext = r["_pid"], (r["extension"] or "").strip()
        if not ext.isalnum():
            raise BadRecord("malformed", f"photo {pid}: bad extension {r['extension']!r}")
        lic = check_license(r["license"], self.allowed)
        return {
            "source": NAME,
            "modality": "image",
            "record_id": str(pid),
            "raw_scientific_name": r["name"],
            "raw_taxon_id": r["_tid"],
            "raw_taxon_rank": r["rank"],
            "raw_ancestry": r["ancestry"],
            "license": lic,
            "license_raw": r["license"],
            "attribution": f"(c) {r['login'] or r['observer_id']}",
            "media_url": f"{self.base_url}/photos/{pid}/original.{ext}",
            "thumbnail_url": f"{self.base_url}/photos/{pid}/square.{ext}",
            "file_format": normalize_format(ext),
            "width": _int(r["width"]),
            "height": _int(r["height"]),
            "quality": r["quality_grade"],
            "latitude": to_float(r["latitude"]),
            "longitude": to_float(r["longitude"]),
            # the bucket's coordinates are the public ones; it does not say which are obscured
            "positional_accuracy": to_float(r["positional_accuracy"]),
            "query": query,
            "date": to_date(r["observed_on"]),
        }


def _int(v: str | None) -> int | None:
    return int(v) if v and v.isdigit() else None
