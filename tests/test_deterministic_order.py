"""Row order that reaches an output is deterministic, not the order of an unordered group_by."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from biovita_data.crawl import dwca
from biovita_data.crawl.dwca import MEDIA_TERMS


def test_dwca_occurrences_come_in_file_order(tmp_path: Path, monkeypatch) -> None:
    """A partition's occurrences are parsed in the occurrence file's order (not in the order of
    the media grouped by gbifID), each with its media in the extension's order."""
    n = 5000
    rng = np.random.default_rng(1)
    ids = [str(10_000_000 + i) for i in rng.permutation(n)]
    occ = pl.DataFrame({"gbifID": ids})
    # media: every occurrence once, a third twice more, all in another order than the core's
    med_ids = [ids[i] for i in rng.permutation(n)] + ids[: n // 3] + ids[: n // 3]
    med = pl.DataFrame(
        {"gbifID": med_ids, "identifier": [f"m{k}" for k in range(len(med_ids))]}
    ).with_columns(*[pl.lit(None, pl.String).alias(t) for t in MEDIA_TERMS if t != "identifier"])
    occ.write_parquet(tmp_path / "occ.parquet")
    med.write_parquet(tmp_path / "med.parquet")

    def parse(occurrence: dict, *_args) -> tuple[list[dict], list[dict]]:
        urls = [m["identifier"] for m in occurrence["media"]]
        return [{"gbifID": occurrence["gbifID"], "media": urls}], []

    monkeypatch.setattr(dwca, "parse_occurrence", parse)
    got = [
        r
        for rows, _ in dwca._join_part(
            tmp_path / "occ.parquet", tmp_path / "med.parquet", "q", (), "both"
        )
        for r in rows
    ]
    assert [r["gbifID"] for r in got] == ids
    media_of = {r["gbifID"]: r["media"] for r in got}
    expected = med.group_by("gbifID", maintain_order=True).agg("identifier")
    assert media_of == dict(expected.iter_rows())
