"""align, split and stats on the sample world, checked against its ground truth."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from rich.console import Console

from biovita_data.app.pipeline import sample_trait_tables
from biovita_data.app.stages import run_build
from biovita_data.core import layout
from biovita_data.core.names import closest_epithet, parse_name
from biovita_data.core.vocab import TRAIT_COLUMNS
from biovita_data.crawl.fetch import fetch, settings_from_env
from biovita_data.crawl.http import HttpClient
from biovita_data.curate.align import AlignSettings, align
from biovita_data.curate.backbone import csv_backbone
from biovita_data.curate.split import split
from biovita_data.curate.stats import stats
from biovita_data.sample.server import SampleServer
from biovita_data.sample.trait_tables import TABLES, expected_labels
from biovita_data.sample.world import Expected, World

QUIET = Console(quiet=True)
TAXA = ["Aves", "Amphibia", "Mammalia", "Insecta"]
KIND_OF_VARIANT = {
    "none": "exact",
    "case_space": "exact",
    "old_genus": "synonym",
    "subspecies": "subspecies",
    "spelling": "fuzzy",
}


@pytest.fixture(scope="module")
def server(default_world: World) -> Iterator[SampleServer]:
    srv = SampleServer(default_world, port=0).start()
    try:
        yield srv
    finally:
        srv.stop()


def _settings(server: SampleServer, **kw) -> AlignSettings:
    return AlignSettings(inaturalist_url=server.urls["INATURALIST_API_URL"], throttle=False, **kw)


@pytest.fixture(scope="module")
def crawled(server: SampleServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """OUT with the three sources crawled from the default world (no media)."""
    out = tmp_path_factory.mktemp("crawl")
    settings = settings_from_env(
        taxa=TAXA,
        sources=["xeno-canto", "inaturalist", "inat-open-data"],
        throttle=False,
        xeno_canto_url=server.urls["XENO_CANTO_API_URL"],
        inaturalist_url=server.urls["INATURALIST_API_URL"],
        open_data_url=server.urls["INATURALIST_OPEN_DATA_URL"],
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XENO_CANTO_API_KEY", "sample-world-key")
        fetch(settings, out, console=QUIET)
    return out


@pytest.fixture(scope="module")
def built(crawled: Path, server: SampleServer, tmp_path_factory) -> Path:
    """A copy of `crawled` with align, traits, split and stats run."""
    import shutil

    out = tmp_path_factory.mktemp("built")
    shutil.copytree(crawled, out, dirs_exist_ok=True)
    sections = {
        "align": {"throttle": False},
        "traits": {"tables": sample_trait_tables("default", 0, out)},
    }
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INATURALIST_API_URL", server.urls["INATURALIST_API_URL"])
        run_build(out, sections, QUIET, stages=("align", "traits", "split", "stats"))
    return out


def _resolves(world: World, e: Expected, known: set[int]) -> bool:
    """Whether a record's name aligns: a misspelled Xeno-canto name only by fuzzy match against a
    species the iNaturalist records already put in the backbone."""
    misspelled = (
        e.source == "xeno-canto" and world.species[e.species_index].name_variant == "spelling"
    )
    return not misspelled or e.species_index in known


def _unresolved(world: World) -> list[Expected]:
    """The kept records whose names do not align (see `_resolves`)."""
    kept = [e for e in world.expected() if e.fetch == "keep"]
    known = {e.species_index for e in kept if e.source == "inaturalist"}
    return [e for e in kept if not _resolves(world, e, known)]


def _truth(world: World) -> dict[str, set[int]]:
    kept = [e for e in world.expected() if e.fetch == "keep"]
    known = {e.species_index for e in kept if e.source == "inaturalist"}
    audio, image = set(), set()
    for e in kept:
        if _resolves(world, e, known):
            (audio if e.modality == "audio" else image).add(e.species_index)
    return {"audio": audio, "image": image}


def test_species_set_equals_ground_truth(built: Path, default_world: World) -> None:
    truth = _truth(default_world)
    species = pl.read_parquet(layout.species_path(built))
    want = {default_world.species[i].taxon_id for i in truth["audio"] & truth["image"]}
    assert set(species["species_id"]) == want
    by_id = {s.taxon_id: s for s in default_world.species}
    for row in species.iter_rows(named=True):
        sp = by_id[row["species_id"]]
        assert row["scientific_name"] == sp.name == row["species"]
        assert (row["class"], row["order"], row["family"], row["genus"]) == (
            sp.class_name,
            sp.order,
            sp.family,
            sp.genus,
        )
        assert row["kingdom"] == "Animalia" and row["phylum"] in ("Chordata", "Arthropoda")
        assert row["common_name"] == sp.common_name
        assert row["backbone"] == "inat"
    # counts per modality agree with the media manifests
    for m in ("audio", "image"):
        media = pl.read_parquet(layout.media_manifest_path(built, m))
        n = media.group_by("species_id").len()
        joined = species.join(n, on="species_id")
        assert (joined[f"n_{m}"] == joined["len"]).all()


def test_every_record_lands_on_its_species_with_the_right_match_kind(
    built: Path, default_world: World
) -> None:
    truth = {(e.source, str(e.record_id)): e for e in default_world.expected()}
    kinds_seen = set()
    for m in ("audio", "image"):
        media = pl.read_parquet(layout.media_manifest_path(built, m))
        for row in media.iter_rows(named=True):
            e = truth[(row["source"], row["record_id"])]
            sp = default_world.species[e.species_index]
            assert row["species_id"] == sp.taxon_id, row
            want = KIND_OF_VARIANT[sp.name_variant] if row["source"] == "xeno-canto" else "exact"
            assert row["match_kind"] == want, (row["raw_scientific_name"], sp.name_variant)
            kinds_seen.add(row["match_kind"])
    assert kinds_seen == {"exact", "synonym", "subspecies", "fuzzy"}


def test_one_source_species_are_reported(built: Path, default_world: World) -> None:
    truth = _truth(default_world)
    report = json.loads((built / "manifests" / "align_report.json").read_text())
    names = lambda idx: sorted(default_world.species[i].name for i in idx)  # noqa: E731
    assert report["audio_only"] == names(truth["audio"] - truth["image"])
    assert report["image_only"] == names(truth["image"] - truth["audio"])
    assert report["audio_only"] and report["image_only"]
    fails = pl.read_parquet(built / "manifests" / "failures.parquet").filter(stage="align")
    below = fails.filter(reason="species_below_minimum")
    unresolved = _unresolved(default_world)
    assert below.height == sum(
        1
        for e in default_world.expected()
        if e.fetch == "keep"
        and e.species_index not in truth["audio"] & truth["image"]
        and e not in unresolved
    )
    # a misspelled name of a species only Xeno-canto has: nothing to fuzzy-match it against
    unmatched = fails.filter(reason="unmatched_name")
    assert sorted(unmatched["record_id"]) == sorted(str(e.record_id) for e in unresolved)
    assert all(d.endswith("no_match") for d in unmatched["detail"])


def test_open_data_photos_are_duplicates_of_the_api_photos(built: Path) -> None:
    fails = pl.read_parquet(built / "manifests" / "failures.parquet").filter(stage="align")
    dup = fails.filter(reason="duplicate_across_sources")
    assert dup.height > 0 and set(dup["source"]) == {"inat-open-data"}
    image = pl.read_parquet(layout.media_manifest_path(built, "image"))
    assert set(image["source"]) == {"inaturalist"}
    assert image["record_id"].is_unique().all()


def test_traits_equal_ground_truth_where_a_table_gives_them(
    built: Path, default_world: World
) -> None:
    species = pl.read_parquet(layout.species_path(built))
    tax = default_world.taxonomy
    truth: dict[str, dict] = {}
    for table in TABLES:
        for name, labels in expected_labels(tax, table).items():
            merged = truth.setdefault(name, dict.fromkeys(TRAIT_COLUMNS))
            for col, v in labels.items():
                if v is not None:
                    assert merged[col] in (None, v)
                    merged[col] = v
    assert species.height > 100
    for row in species.iter_rows(named=True):
        want = truth.get(row["scientific_name"], dict.fromkeys(TRAIT_COLUMNS))
        assert {c: row[c] for c in TRAIT_COLUMNS} == want, row["scientific_name"]
    coverage = json.loads((built / "manifests" / "traits_coverage.json").read_text())
    assert coverage


def test_unmatched_names_are_kept_with_counts(
    crawled: Path, server: SampleServer, default_world: World, tmp_path: Path
) -> None:
    import shutil

    shutil.copytree(crawled, tmp_path, dirs_exist_ok=True)
    path = tmp_path / "raw" / "xeno_canto" / "records.parquet"
    raw = pl.read_parquet(path)
    bad = raw.head(4).with_columns(
        record_id=pl.Series(["x1", "x2", "x3", "x4"]),
        raw_scientific_name=pl.Series(
            ["Nonexistus fabulosus", "Nonexistus fabulosus", "Anas a × Anas b", "Larus sp."]
        ),
    )
    pl.concat([raw, bad]).write_parquet(path)
    result = align(tmp_path, _settings(server), console=QUIET)
    unmatched = pl.read_parquet(layout.unmatched_path(tmp_path)).sort("name")
    # besides the world's own: misspelled names of species only Xeno-canto has
    own = _unresolved(default_world)
    own_names = Counter(e.raw_name for e in own)
    assert unmatched.select("name", "count", "reason").rows() == sorted(
        [
            ("Anas a × Anas b", 1, "hybrid"),
            ("Larus sp.", 1, "not_species"),
            ("Nonexistus fabulosus", 2, "no_match"),
            *((name, n, "no_match") for name, n in own_names.items()),
        ]
    )
    assert result.unmatched_records == 4 + len(own)
    fails = pl.read_parquet(tmp_path / "manifests" / "failures.parquet")
    got = fails.filter(stage="align", reason="unmatched_name")
    assert sorted(got["record_id"]) == sorted(
        ["x1", "x2", "x3", "x4", *(str(e.record_id) for e in own)]
    )
    assert "Nonexistus fabulosus" in got.filter(record_id="x1")["detail"][0]


def test_rerun_is_offline_and_byte_identical(
    crawled: Path, server: SampleServer, tmp_path: Path
) -> None:
    import shutil

    shutil.copytree(crawled, tmp_path, dirs_exist_ok=True)
    first = align(tmp_path, _settings(server), console=QUIET)
    assert first.requests > 0
    files = ["species.parquet", "audio.parquet", "image.parquet", "unmatched.parquet"]
    before = {f: (tmp_path / "manifests" / f).read_bytes() for f in files}
    # the second run asks iNaturalist nothing: a dead URL proves it
    again = align(
        tmp_path,
        AlignSettings(inaturalist_url="http://127.0.0.1:9/none", throttle=False),
        http=HttpClient(retries=0),
        console=QUIET,
    )
    assert again.requests == 0
    assert {f: (tmp_path / "manifests" / f).read_bytes() for f in files} == before


def _backbone_csv(world: World, path: Path) -> Path:
    """A GBIF-style backbone of the world: accepted species plus the old-genus synonyms."""
    rows = []
    for s in world.species:
        rows.append(
            {"taxonID": str(s.taxon_id), "canonicalName": s.name, "taxonRank": "species",
             "taxonomicStatus": "accepted", "acceptedNameUsageID": "", "kingdom": "Animalia",
             "phylum": "x", "class": s.class_name, "order": s.order, "family": s.family,
             "genus": s.genus, "vernacularName": s.common_name}
        )  # fmt: skip
    for name, tid in world.taxonomy.synonyms.items():
        sp = next(s for s in world.species if s.taxon_id == tid)
        rows.append(
            {"taxonID": "9" + str(tid), "canonicalName": name, "taxonRank": "species",
             "taxonomicStatus": "synonym", "acceptedNameUsageID": str(tid), "kingdom": "Animalia",
             "phylum": "x", "class": sp.class_name, "order": sp.order, "family": sp.family,
             "genus": name.split()[0], "vernacularName": ""}
        )  # fmt: skip
    pl.DataFrame(rows).write_csv(path, separator="\t")
    return path


def test_csv_backbone_gives_the_same_corpus_without_http(
    built: Path, crawled: Path, default_world: World, tmp_path: Path
) -> None:
    import shutil

    out = tmp_path / "out"
    shutil.copytree(crawled, out)
    backbone = _backbone_csv(default_world, tmp_path / "Taxon.tsv")
    align(
        out,
        AlignSettings(backbone=str(backbone), inaturalist_url="http://127.0.0.1:9/none"),
        http=HttpClient(retries=0),
        console=QUIET,
    )
    cols = ["source", "record_id", "species_id", "match_kind"]
    for m in ("audio", "image"):
        a = pl.read_parquet(layout.media_manifest_path(out, m)).select(cols)
        b = pl.read_parquet(layout.media_manifest_path(built, m)).select(cols)
        assert a.equals(b)
    species = pl.read_parquet(layout.species_path(out))
    assert set(species["backbone"]) == {"csv:Taxon.tsv"}


def test_csv_backbone_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "b.csv"
    bad.write_text("foo,bar\n1,2\n")
    with pytest.raises(ValueError, match=r"b\.csv.*name"):
        csv_backbone(bad)


def test_align_without_raw_records_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="biovita-data fetch"):
        align(tmp_path, AlignSettings(), console=QUIET)


def test_min_counts_and_image_cap(crawled: Path, server: SampleServer, tmp_path: Path) -> None:
    import shutil

    shutil.copytree(crawled, tmp_path, dirs_exist_ok=True)
    align(tmp_path, _settings(server, min_audio=5, min_images=3, max_images_per_species=4),
          console=QUIET)  # fmt: skip
    species = pl.read_parquet(layout.species_path(tmp_path))
    assert (species["n_audio"] >= 5).all() and (species["n_image_available"] >= 3).all()
    assert (species["n_image"] <= 4).all()
    assert (species["n_image"] == species["n_image_available"].clip(upper_bound=4)).all()
    image = pl.read_parquet(layout.media_manifest_path(tmp_path, "image"))
    fails = pl.read_parquet(tmp_path / "manifests" / "failures.parquet").filter(stage="align")
    capped = fails.filter(reason="over_image_cap")
    assert capped.height == int((species["n_image_available"] - species["n_image"]).sum())
    assert set(capped["record_id"]).isdisjoint(image["record_id"])


def test_image_cap_moves_no_other_photo_when_photos_come_and_go(
    crawled: Path, server: SampleServer, tmp_path: Path
) -> None:
    """The cap's seeded photos are chosen by a keyed hash per photo and kept from one build to
    the next: a photo withdrawn from one species changes no other species' photos, its place
    goes to the next in the species' queue, and when it comes back the photos kept meanwhile
    stay (an update downloads nothing it does not need)."""
    import shutil

    import pyarrow.parquet as pq

    shutil.copytree(crawled, tmp_path, dirs_exist_ok=True)
    settings = _settings(server, min_audio=5, min_images=3, max_images_per_species=4)

    def kept() -> dict[int, set[tuple[str, str]]]:
        image = pl.read_parquet(layout.media_manifest_path(tmp_path, "image"))
        groups = image.group_by("species_id").agg(pl.struct("source", "record_id"))
        return {sid: {(r["source"], r["record_id"]) for r in rs} for sid, rs in groups.rows()}

    align(tmp_path, settings, console=QUIET)
    before = kept()
    species = pl.read_parquet(layout.species_path(tmp_path))
    capped = species.filter(pl.col("n_image_available") > 4)["species_id"].sort().to_list()
    assert len(capped) >= 5 and len(before) > len(capped)
    target = capped[len(capped) // 2]
    source, record_id = sorted(before[target])[0]
    gone = (pl.col("record_id") == record_id) & (pl.col("modality") == "image")
    files = sorted(layout.raw_root(tmp_path).glob("*/records.parquet"))
    raws = {p: pl.read_parquet(p) for p in files}
    assert sum(raw.filter(gone).height for raw in raws.values()) >= 1
    for path, raw in raws.items():  # withdrawn: by every route (the API and the Open Data)
        pq.write_table(raw.filter(~gone).to_arrow(), path)

    align(tmp_path, settings, console=QUIET)
    after = kept()
    assert {s: v for s, v in after.items() if s != target} == {
        s: v for s, v in before.items() if s != target
    }
    assert len(after[target]) == 4 and before[target] - {(source, record_id)} < after[target]
    assert record_id not in {r for _, r in after[target]}

    for path, raw in raws.items():  # back again: the photo kept meanwhile stays
        pq.write_table(raw.to_arrow(), path)
    align(tmp_path, settings, console=QUIET)
    assert kept() == after
    fails = pl.read_parquet(tmp_path / "manifests" / "failures.parquet")
    capped_now = fails.filter(reason="over_image_cap")
    assert (source, record_id) in set(capped_now.select("source", "record_id").rows())


# ---- names ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "normalized", "problem"),
    [
        ("Turdus merula", "Turdus merula", None),
        ("  turdus   Merula ", "Turdus merula", None),
        ("Turdus merula merula", "Turdus merula merula", None),
        ("Turdus merula ssp. azorensis", "Turdus merula azorensis", None),
        ("Turdus merula Linnaeus, 1758", "Turdus merula", None),
        ("Parus (Poecile) montanus (Conrad, 1827)", "Parus montanus", None),
        ("Turdus sp.", "Turdus", "not_species"),
        ("Anas platyrhynchos × Anas acuta", None, "hybrid"),
        ("Anas platyrhynchos x acuta", None, "hybrid"),
        ("Larus cf. argentatus", None, "uncertain"),
        ("", None, "empty"),
        ("123 abc", None, "unparsable"),
    ],
)
def test_parse_name(raw: str, normalized: str | None, problem: str | None) -> None:
    p = parse_name(raw)
    assert (p.normalized, p.problem) == (normalized, problem)


def test_fuzzy_epithets_are_conservative() -> None:
    assert closest_epithet("ruficollis", {"ruficollis", "ruficolis"}) == ("ruficollis", "exact")
    assert closest_epithet("ruficolis", {"ruficollis", "nigra"}) == ("ruficollis", "fuzzy")
    assert closest_epithet("alba", {"albus", "nigra"}) == ("albus", "fuzzy")  # gender ending
    assert closest_epithet("bairdi", {"bairdii"}) == ("bairdii", "fuzzy")
    assert closest_epithet("alba", {"albus", "album"}) == (None, "ambiguous")
    assert closest_epithet("minor", {"major"})[0] is None  # two valid species, never merged
    assert closest_epithet("nigra", {"nigrans", "nigrum"})[1] == "ambiguous"
    assert closest_epithet("abc", {"xyz"}) == (None, "no_match")


# ---- split and stats ---------------------------------------------------------------------------


def test_split_properties(built: Path, default_world: World) -> None:
    species = pl.read_parquet(layout.species_path(built))
    unseen = set(species.filter(split_group="unseen")["species_id"])
    assert unseen == set(species.filter(pl.col("n_audio") <= 2)["species_id"]) and unseen
    # the world's rare species (1-2 recordings in all) are held out: 50+ unseen species
    rare = {default_world.species[i].taxon_id for i in default_world.rare_species}
    assert rare & set(species["species_id"]) <= unseen and len(unseen) >= 50
    for m in ("audio", "image"):
        media = pl.read_parquet(layout.media_manifest_path(built, m))
        assert media["split"].null_count() == 0
        assert set(media.filter(pl.col("species_id").is_in(list(unseen)))["split"]) == {"unseen"}
        seen = media.filter(~pl.col("species_id").is_in(list(unseen)))
        assert set(seen["split"]) == {"train", "test"}
        # one observation never spans train and test
        obs = seen.filter(pl.col("observation_id").is_not_null())
        assert (obs.group_by("observation_id").agg(pl.col("split").n_unique())["split"] == 1).all()
        # every seen species with two or more groups has a test item; about 10 % overall
        share = (seen["split"] == "test").mean()
        assert 0.05 < share < 0.3, share


def test_split_is_deterministic_and_seeded(built: Path, tmp_path: Path) -> None:
    import shutil

    shutil.copytree(built / "manifests", tmp_path / "manifests")
    before = (tmp_path / "manifests" / "audio.parquet").read_bytes()
    split(tmp_path, seed=0, console=QUIET)
    assert (tmp_path / "manifests" / "audio.parquet").read_bytes() == before
    split(tmp_path, seed=1, console=QUIET)  # the kept assignment holds whatever the seed
    assert (tmp_path / "manifests" / "audio.parquet").read_bytes() == before
    split(tmp_path, seed=1, redraw=True, console=QUIET)
    assert (tmp_path / "manifests" / "audio.parquet").read_bytes() != before
    with pytest.raises(ValueError, match="test-fraction"):
        split(tmp_path, test_fraction=1.5, console=QUIET)


def test_stats_agree_with_the_manifests(built: Path) -> None:
    s = stats(built, QUIET)
    assert json.loads((built / "stats.json").read_text()) == json.loads(json.dumps(s))
    species = pl.read_parquet(layout.species_path(built))
    audio = pl.read_parquet(layout.media_manifest_path(built, "audio"))
    assert s["species"] == species.height and s["audio"] == audio.height
    assert sum(r["species"] for r in s["per_class"]) == species.height
    assert {r["class"] for r in s["per_class"]} == {"Aves", "Amphibia", "Mammalia", "Insecta"}
    assert sum(s["licenses"]["audio"].values()) == audio.height
    assert s["splits"]["audio"] == dict(sorted(audio.group_by("split").len().iter_rows()))
    assert 0 < s["trait_coverage"]["species_with_any_label"] <= 1
    assert s["records_per_species"]["audio"]["quantiles"]["p100"] == species["n_audio"].max()
