"""Importing the original BioVITA release's audio metadata table: round trip, bad rows, bytes."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from biovita_data.crawl.sources.release_table import COLUMNS, import_official
from biovita_data.sample.release_table import (
    OFFICIAL_COLUMNS,
    official_metadata_csv,
    write_official_metadata,
)
from biovita_data.sample.world import World

ROOT = "http://127.0.0.1:9"
CODES = {"xeno-canto": "xc", "inaturalist": "inat"}


@pytest.fixture(scope="module")
def world() -> World:
    return World("tiny")


def kept_audio(world: World) -> list:
    return [e for e in world.expected() if e.modality == "audio" and e.fetch == "keep"]


def raw(out: Path, name: str) -> pl.DataFrame:
    return pl.read_parquet(out / "raw" / "official" / name)


def failures(out: Path) -> pl.DataFrame:
    return pl.read_parquet(out / "manifests" / "failures.parquet")


def test_sample_csv_is_deterministic_and_has_release_header(world: World) -> None:
    data = official_metadata_csv(world, ROOT)
    assert data == official_metadata_csv(World("tiny"), ROOT)
    assert data.decode("utf-8").splitlines()[0] == ",".join(OFFICIAL_COLUMNS)
    assert OFFICIAL_COLUMNS == COLUMNS
    sources = set(pl.read_csv(data, infer_schema=False)["source"])
    assert sources == {"xc", "inat"}


def test_round_trip(world: World, tmp_path: Path) -> None:
    csv_path = write_official_metadata(world, ROOT, tmp_path / "meta.csv")
    out = tmp_path / "out"
    res = import_official(csv_path, out)
    expected = kept_audio(world)
    recs = raw(out, "records.parquet")
    assert res.source == "official" and res.kept == len(expected) == recs.height
    assert res.dropped == {}
    assert set(recs["source"]) == {"official"} and set(recs["modality"]) == {"audio"}
    by_id = {r["record_id"]: r for r in recs.iter_rows(named=True)}
    for e in expected:
        r = by_id[f"{CODES[e.source]}:{e.record_id}"]
        rec = world.recording_by_id[(e.source, e.record_id)]
        assert r["raw_scientific_name"] == e.raw_name
        assert r["common_name"] == world.species[e.species_index].common_name
        assert r["source_group"] == CODES[e.source]
        assert r["file_format"] == rec.fmt
        assert r["media_url"].startswith(ROOT + "/")
    names = raw(out, "names.parquet")
    accepted = dict(zip(names["record_id"], names["accepted_name"], strict=True))
    for e in expected:
        assert accepted[f"{CODES[e.source]}:{e.record_id}"] == world.species[e.species_index].name
    taxonomy = raw(out, "taxonomy.parquet")
    species = {world.species[e.species_index] for e in expected}
    assert taxonomy.height == len(species) == taxonomy["accepted_name"].n_unique()
    rows = {r["accepted_name"]: r for r in taxonomy.iter_rows(named=True)}
    for sp in species:
        assert rows[sp.name] == {
            "accepted_name": sp.name,
            "class": sp.class_name,
            "order": sp.order,
            "family": sp.family,
            "genus": sp.genus,
        }
    assert failures(out).filter(pl.col("source") == "official").height == 0


def test_bad_rows_become_failures(world: World, tmp_path: Path) -> None:
    lines = official_metadata_csv(world, ROOT).decode().splitlines()
    good = lines[1:]
    first = dict(zip(COLUMNS, good[0].split(","), strict=True))

    def row(**changes: str) -> str:
        return ",".join({**first, **changes}[c] for c in COLUMNS)

    bad = [
        row(recording_id="900001", download_url=f"{ROOT}/xeno-canto/../../etc/passwd"),
        row(recording_id=""),
        row(source="zz", recording_id="900002"),
        good[0],  # the first good row again
        row(recording_id="900003", scientific_name=""),
    ]
    # bad rows interleaved after the header and at the end; line 1 is the header
    text = "\n".join([lines[0], bad[0], *good[:3], bad[1], *good[3:], *bad[2:]]) + "\n"
    csv_path = tmp_path / "meta.csv"
    csv_path.write_text(text, encoding="utf-8")
    out = tmp_path / "out"
    res = import_official(csv_path, out)
    assert res.kept == len(good) == raw(out, "records.parquet").height
    n = len(good) + 3  # lines before the trailing bad rows
    got = {
        (r["reason"], r["record_id"], r["detail"].split(":", 1)[0])
        for r in failures(out).filter(pl.col("source") == "official").iter_rows(named=True)
    }
    first_id = f"xc:{first['recording_id']}"
    assert got == {
        ("bad_media_url", "xc:900001", "line 2"),
        ("malformed", None, "line 6"),
        ("unknown_source", "zz:900002", f"line {n + 1}"),
        ("duplicate", first_id, f"line {n + 2}"),
        ("malformed", "xc:900003", f"line {n + 3}"),
    }
    dup = failures(out).filter(pl.col("reason") == "duplicate")["detail"][0]
    assert dup.endswith(f"{first_id} is listed on line 3")
    assert set(failures(out)["stage"]) == {"fetch"}
    assert res.dropped == {"bad_media_url": 1, "duplicate": 1, "malformed": 2, "unknown_source": 1}


def test_quoted_multiline_cell_keeps_line_numbers(world: World, tmp_path: Path) -> None:
    lines = official_metadata_csv(world, ROOT).decode().splitlines()
    first = dict(zip(COLUMNS, lines[1].split(","), strict=True))
    multi = ",".join(f'"{first[c]}\nx"' if c == "com" else first[c] for c in COLUMNS)
    bad = ",".join("" if c == "recording_id" else first[c] for c in COLUMNS)
    csv_path = tmp_path / "meta.csv"
    csv_path.write_text("\n".join([lines[0], multi, bad]) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    import_official(csv_path, out)
    assert failures(out)["detail"].to_list() == ["line 4: no recording_id"]


def test_lineage_conflict_is_reported_and_record_kept(world: World, tmp_path: Path) -> None:
    lines = official_metadata_csv(world, ROOT).decode().splitlines()
    first = dict(zip(COLUMNS, lines[1].split(","), strict=True))
    other = ",".join({**first, "recording_id": "900004", "family": "Otheridae"}[c] for c in COLUMNS)
    csv_path = tmp_path / "meta.csv"
    csv_path.write_text("\n".join([lines[0], lines[1], other]) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    res = import_official(csv_path, out)
    assert res.kept == 2 and res.dropped == {}
    fails = failures(out)
    assert fails["reason"].to_list() == ["lineage_conflict"]
    assert fails["record_id"].to_list() == ["xc:900004"]
    assert raw(out, "taxonomy.parquet")["family"].to_list() == [first["family"]]


def test_missing_column_is_a_clear_error(world: World, tmp_path: Path) -> None:
    df = pl.read_csv(official_metadata_csv(world, ROOT), infer_schema=False)
    csv_path = tmp_path / "meta.csv"
    df.drop("download_url").write_csv(csv_path)
    with pytest.raises(ValueError, match="download_url"):
        import_official(csv_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_import_twice_gives_identical_bytes(world: World, tmp_path: Path) -> None:
    text = official_metadata_csv(world, ROOT).decode()
    csv_path = tmp_path / "meta.csv"
    csv_path.write_text(text + text.splitlines()[1] + "\n", encoding="utf-8")  # one duplicate
    out = tmp_path / "out"
    files = [
        out / "raw" / "official" / n
        for n in ("records.parquet", "names.parquet", "taxonomy.parquet")
    ] + [out / "manifests" / "failures.parquet"]
    import_official(csv_path, out)
    before = [f.read_bytes() for f in files]
    import_official(csv_path, out)
    assert [f.read_bytes() for f in files] == before
    assert failures(out).height == 1
