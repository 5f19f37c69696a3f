"""TreeOfLife-200M: the sample world's catalog + provenance view and `import-tol`."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
import requests
from typer.testing import CliRunner

from biovita_data.app.cli import app
from biovita_data.crawl.sources.treeoflife import excluded_images, import_tol
from biovita_data.sample.treeoflife import photo_uuid, tol_photos, write_tol_view
from biovita_data.sample.world import is_allowed

runner = CliRunner()
TAXA = ["Aves", "Amphibia", "Mammalia", "Insecta"]


def _records(out: Path) -> pl.DataFrame:
    return pl.read_parquet(out / "raw" / "treeoflife_200m" / "records.parquet")


def _failures(out: Path) -> pl.DataFrame:
    fails = pl.read_parquet(out / "manifests" / "failures.parquet")
    return fails.filter(pl.col("source") == "treeoflife-200m")


def test_export_and_import_through_the_cli(tmp_path: Path, sample_server, tiny_world) -> None:
    view, out = tmp_path / "tol", tmp_path / "out"
    res = runner.invoke(app, ["sample", "export-tol", str(view), "--root", sample_server.root,
                              "--size", "tiny"])  # fmt: skip
    assert res.exit_code == 0, res.output
    catalog = pl.read_parquet(view / "catalog.parquet")
    provenance = pl.read_parquet(view / "provenance.parquet")
    assert catalog.columns[:3] == ["uuid", "source_url", "kingdom"]
    assert {"license_name", "copyright_owner", "license_link"} <= set(provenance.columns)
    photos = tol_photos(tiny_world)
    assert catalog.height == provenance.height == len(photos) + 3  # + 3 outside the world

    taxa = [a for t in TAXA for a in ("--taxa", t)]
    res = runner.invoke(app, ["import-tol", str(view / "catalog.parquet"),
                              str(view / "provenance.parquet"), "--out", str(out),
                              "--per-species", "3", *taxa])  # fmt: skip
    assert res.exit_code == 0, res.output
    recs, fails = _records(out), _failures(out)
    # per species: the walk in random order takes allowed photos until it has 3; every
    # disallowed photo it meets is a failure, so kept = min(3, allowed) and nothing is lost
    by_uuid = {photo_uuid(p.id): p for p in photos}
    for sp in tiny_world.species:
        mine = [p for p in photos if p.species_index == sp.index]
        allowed = [p for p in mine if is_allowed(p.license)]
        kept = recs.filter(pl.col("raw_scientific_name") == sp.name)
        assert kept.height == min(3, len(allowed)), sp.name
        failed = fails.filter(pl.col("name") == sp.name)
        assert set(failed["reason"]) <= {"license_not_allowed"}
        assert all(not is_allowed(by_uuid[u].license) for u in failed["record_id"])
        if len(allowed) < 3:  # the walk went through every photo
            assert kept.height + failed.height == len(mine)
    # licence, attribution, page and URL come through; the URL serves the world's photo
    row = recs.row(0, named=True)
    photo = by_uuid[row["record_id"]]
    login = tiny_world.observation_by_id[photo.observation_id].login
    assert row["license"].startswith(("cc", "cc0"))
    assert row["attribution"] in (login, None)
    assert row["page_url"].startswith("https://www.gbif.org/occurrence/")
    assert row["file_format"] == photo.fmt
    assert requests.get(row["media_url"], timeout=10).content == tiny_world.photo_bytes(photo.id)
    # an owner written "not provided" is unknown, not a name
    assert "not provided" not in set(recs["attribution"].drop_nulls())
    assert recs["attribution"].null_count() > 0
    # the outside-the-world bird is in Aves too: drawn (align leaves it unmatched)
    assert "Turdus merula" in set(recs["raw_scientific_name"])
    assert "Lacerta agilis" not in set(recs["raw_scientific_name"])  # Reptilia not asked for
    summary = json.loads((out / "raw" / "treeoflife_200m" / "import.json").read_text())
    assert summary["per_species"] == 3


def test_the_draw_is_seeded_and_reproducible(tmp_path: Path, tiny_world) -> None:
    cat, prov = write_tol_view(tiny_world, "http://127.0.0.1:9", tmp_path / "tol")
    runs = {}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        import_tol(cat, prov, tmp_path / name, per_species=2, seed=seed, taxa=TAXA)
        runs[name] = _records(tmp_path / name)
    assert runs["a"].equals(runs["b"])
    assert (tmp_path / "a/raw/treeoflife_200m/records.parquet").read_bytes() == (
        tmp_path / "b/raw/treeoflife_200m/records.parquet"
    ).read_bytes()
    assert set(runs["a"]["record_id"]) != set(runs["c"]["record_id"])
    # a re-run into the same folder replaces, never appends
    import_tol(cat, prov, tmp_path / "a", per_species=2, seed=1, taxa=TAXA)
    assert _records(tmp_path / "a").equals(runs["b"])


def test_draw_keys_are_the_same_on_every_machine_and_version() -> None:
    """The draw's keys are pinned values: no library upgrade reshuffles a seeded draw."""
    from biovita_data.core.draws import uuid_keys

    same = ["8f14e45f-ceea-467a-9575-7a1c6a2e4b21", "8F14E45FCEEA467A95757A1C6A2E4B21"]
    assert uuid_keys(pl.Series([*same, "u0"]), 0).to_list() == [
        6015432870255919567, 6015432870255919567, 2463591911506514800
    ]  # fmt: skip
    assert uuid_keys(pl.Series(same[:1]), 1).to_list() == [17524911362667803612]


def test_a_reimport_keeps_its_draw_when_the_catalog_grows(tmp_path: Path, tiny_world) -> None:
    """A photo added to the catalog whose key would put it first does not displace the photos
    a re-import of the same seed drew before (an update downloads nothing new for that species);
    a fresh import does draw it."""
    import uuid

    from biovita_data.core.draws import uuid_keys

    cat, prov = write_tol_view(tiny_world, "http://127.0.0.1:9", tmp_path / "tol")
    out = tmp_path / "out"
    import_tol(cat, prov, out, per_species=2, seed=1, taxa=TAXA)
    first = _records(out)
    name = first["raw_scientific_name"].sort()[0]
    drawn = first.filter(pl.col("raw_scientific_name") == name)["record_id"]
    assert drawn.len() == 2
    lowest = min(uuid_keys(drawn, 1).to_list())
    new = next(u for k in range(10_000) if uuid_keys(pl.Series([u := str(uuid.uuid5(
        uuid.NAMESPACE_URL, f"new-photo-{k}"))]), 1)[0] < lowest)  # fmt: skip
    catalog, provenance = pl.read_parquet(cat), pl.read_parquet(prov)
    extra = catalog.filter(pl.col("uuid") == drawn[0]).with_columns(uuid=pl.lit(new))
    pl.concat([catalog, extra]).write_parquet(cat)
    extra = provenance.filter(pl.col("uuid") == drawn[0]).with_columns(uuid=pl.lit(new))
    pl.concat([provenance, extra]).write_parquet(prov)

    import_tol(cat, prov, out, per_species=2, seed=1, taxa=TAXA)
    assert _records(out).equals(first)  # every species' draw as before
    fresh = tmp_path / "fresh"
    import_tol(cat, prov, fresh, per_species=2, seed=1, taxa=TAXA)
    assert new in set(_records(fresh)["record_id"])


def test_corpus_species_come_from_the_crawled_audio(tmp_path: Path, tiny_world) -> None:
    cat, prov = write_tol_view(tiny_world, "http://127.0.0.1:9", tmp_path / "tol")
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="no corpus species"):
        import_tol(cat, prov, out)
    names = [tiny_world.species[0].name, tiny_world.species[1].name.upper() + " ssp. foo"]
    raw = pl.DataFrame(
        {"source": "xeno-canto", "modality": "audio", "record_id": ["1", "2"],
         "raw_scientific_name": names}
    )  # fmt: skip
    (out / "raw" / "xeno_canto").mkdir(parents=True)
    raw.write_parquet(out / "raw" / "xeno_canto" / "records.parquet")
    import_tol(cat, prov, out, per_species=50)
    got = set(_records(out)["raw_scientific_name"])
    want = {tiny_world.species[0].name, tiny_world.species[1].name}
    has_photos = {tiny_world.species[p.species_index].name for p in tol_photos(tiny_world)}
    assert got == want & has_photos and got


def test_other_column_names_missing_provenance_and_unknown_licences(tmp_path: Path) -> None:
    """A release that names columns differently (no scientific_name: genus + epithet), a row
    without provenance, free-text and unknown licences: records or failures, nothing lost."""
    cat = pl.DataFrame(
        {
            "UUID": [f"u{i}" for i in range(6)],
            "identifier": [f"https://img.example.org/p/{i}.jpeg" for i in range(5)] + ["ftp://x"],
            "Genus": ["Turdus"] * 6,
            "species": ["merula"] * 6,
            "basis_of_record": ["HUMAN_OBSERVATION"] * 6,
        }
    )
    prov = pl.DataFrame(
        {
            "uuid": ["u0", "u1", "u2", "u3", "u5"],  # u4 has no provenance
            "license": ["cc-by", "CC BY-NC 4.0 whatever", "cc-by-nd", "cc0", "cc-by"],
            "owner": ["Ann", "Bob", "Cy", "not provided", "Di"],
        }
    )
    cat.write_parquet(tmp_path / "c.parquet")
    prov.write_parquet(tmp_path / "p.parquet")
    out = tmp_path / "out"
    res = import_tol(tmp_path / "c.parquet", tmp_path / "p.parquet", out, taxa=["Turdidae",
                     "Turdus"], per_species=10)  # fmt: skip
    recs, fails = _records(out), _failures(out)
    assert sorted(recs["record_id"]) == ["u0", "u3"]
    assert recs.filter(pl.col("record_id") == "u3")["attribution"].to_list() == [None]
    assert recs["license"].to_list() and set(recs["license"]) == {"cc-by-4.0", "cc0-1.0"}
    assert recs["raw_scientific_name"].unique().to_list() == ["Turdus merula"]
    reasons = dict(zip(fails["record_id"], fails["reason"], strict=True))
    assert reasons == {
        "u1": "license_unknown",
        "u2": "license_not_allowed",
        "u4": "no_provenance",
        "u5": "bad_media_url",
    }
    assert res.kept == 2 and sum(res.dropped.values()) == 4
    # a catalog without any uuid column is refused with the columns it has
    cat.drop("UUID").write_parquet(tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="no column for uuid"):
        import_tol(tmp_path / "bad.parquet", tmp_path / "p.parquet", out, taxa=["Turdus"])


def test_an_image_listed_under_two_names_is_named_as_drawn(tmp_path: Path) -> None:
    """A uuid the catalog lists under two corpus species is one image, drawn for the first in
    name order; its record carries that species' name (not whichever catalog row came first),
    so it counts for the species it was drawn for."""
    cat = pl.DataFrame(
        {
            "uuid": ["u0", "u1", "u0", "u2"],
            "source_url": [f"https://img.example.org/p/{i}.jpeg" for i in (0, 1, 0, 2)],
            "scientific_name": ["Turdus philomelos", "Turdus philomelos", "Turdus merula",
                                "Turdus merula"],
            "genus": ["Turdus"] * 4,
        }
    )  # fmt: skip
    prov = pl.DataFrame({"uuid": ["u0", "u1", "u2"], "license_name": ["cc-by"] * 3})
    cat.write_parquet(tmp_path / "c.parquet")
    prov.write_parquet(tmp_path / "p.parquet")
    out = tmp_path / "out"
    import_tol(tmp_path / "c.parquet", tmp_path / "p.parquet", out, taxa=["Turdus"])
    names = dict(_records(out).select("record_id", "raw_scientific_name").rows())
    assert names == {"u0": "Turdus merula", "u1": "Turdus philomelos", "u2": "Turdus merula"}


def test_exclusive_moves_other_photos_to_failures(tmp_path: Path, tiny_world) -> None:
    """--exclusive: the crawled photos leave their source's records as failures, once."""
    from biovita_data.core.schemas import FAILURE, RAW_RECORD
    from biovita_data.core.tables import replace_failures, to_table, write_table

    out = tmp_path / "out"
    rows = [
        {"source": "inaturalist", "modality": m, "record_id": str(i),
         "raw_scientific_name": tiny_world.species[0].name}
        for i, m in enumerate(("audio", "image", "image"))
    ]  # fmt: skip
    write_table(to_table(rows, RAW_RECORD), out / "raw" / "inaturalist" / "records.parquet")
    earlier = {"stage": "fetch", "source": "inaturalist", "modality": "image", "record_id": "9",
               "name": None, "reason": "license_not_allowed", "detail": "x"}  # fmt: skip
    replace_failures(out, "fetch", ["inaturalist"], to_table([earlier], FAILURE))
    cat, prov = write_tol_view(tiny_world, "http://127.0.0.1:9", tmp_path / "tol")
    for _ in range(2):  # idempotent
        import_tol(cat, prov, out, per_species=2, exclusive=True)
    kept = pl.read_parquet(out / "raw" / "inaturalist" / "records.parquet")
    assert kept["modality"].to_list() == ["audio"]
    fails = pl.read_parquet(out / "manifests" / "failures.parquet").filter(
        pl.col("source") == "inaturalist"
    )
    assert sorted(zip(fails["record_id"], fails["reason"], strict=True)) == [
        ("1", "image_source_excluded"),
        ("2", "image_source_excluded"),
        ("9", "license_not_allowed"),
    ]
    assert excluded_images(out) == {"inaturalist": 2}  # what the demo's summary reports
    summary = json.loads((out / "raw" / "treeoflife_200m" / "import.json").read_text())
    assert summary["species_wanted"] == 1 and _records(out).height == 2
