"""Responses shaped like the real services' (see ../shared/reference/): what the crawl keeps."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import ClassVar

import polars as pl
import pytest

from biovita_data.crawl.sources.inat_open_data import OpenDataSource
from biovita_data.crawl.sources.inaturalist import parse_observation
from biovita_data.crawl.sources.xeno_canto import parse_recording
from biovita_data.crawl.taxa import Target, ancestors_of
from biovita_data.curate.backbone import InatBackbone

ALLOWED = ("cc0", "cc-by", "cc-by-sa", "cc-by-nc", "cc-by-nc-sa")

# XC API v3 /recordings, recording XC254462 (jonner/xenocanto-rs), with API v2's
# protocol-relative `url` and sonogram URLs (jamilat/bird-caller-id, XC631977).
XC_V3 = {
    "id": "254462",
    "gen": "Passerina",
    "sp": "amoena",
    "ssp": "",
    "grp": "birds",
    "en": "Lazuli Bunting",
    "rec": "Jonathon Jongsma",
    "cnt": "United States",
    "loc": "Prairie Trail, Custer State Park, South Dakota",
    "lat": "43.6571",
    "lon": "-103.4143",
    "alt": "1300",
    "type": "song",
    "sex": "male, female",
    "stage": "",
    "method": "field recording",
    "url": "//xeno-canto.org/254462",
    "file": "https://xeno-canto.org/254462/download",
    "file-name": "XC254462-JMJ-20150623-031744-150623_16-USA-SD-CusterStatePark-LABU.mp3",
    "sono": {
        "small": "//xeno-canto.org/sounds/uploaded/BUGKVZBWKF/ffts/XC254462-small.png",
        "med": "//xeno-canto.org/sounds/uploaded/BUGKVZBWKF/ffts/XC254462-med.png",
        "large": "//xeno-canto.org/sounds/uploaded/BUGKVZBWKF/ffts/XC254462-large.png",
        "full": None,
    },
    "osci": {"small": None, "med": None, "large": None},
    "lic": "https://creativecommons.org/licenses/by-sa/4.0/",
    "q": "A",
    "length": "4:13",
    "time": "07:17",
    "date": "2015-06-23",
    "uploaded": "2015-06-29",
    "also": ["Pipilo maculatus"],
    "rmk": "Songs from a bird perched atop a ponderosa pine.\r\n\r\nFiltered lightly below 1kHz.",
    "animal-seen": "yes",
    "playback-used": "no",
    "temp": None,
    "regnr": "",
    "auto": "no",
    "dvc": "",
    "mic": "",
    "smp": "48000",
    "annotation-set": [],
}


def test_xeno_canto_fields_are_kept_and_urls_get_a_scheme() -> None:
    row = parse_recording(XC_V3, "gen:Passerina", ALLOWED)
    assert row["background_species"] == ["Pipilo maculatus"]
    assert row["locality"] == "Prairie Trail, Custer State Park, South Dakota"
    assert row["altitude"] == 1300.0 and row["recording_method"] == "field recording"
    assert row["remarks"].startswith("Songs from") and "\r\n" in row["remarks"]
    assert (row["animal_seen"], row["playback_used"], row["automatic_recording"]) == (
        True,
        False,
        False,
    )
    assert row["device"] is None and row["microphone"] is None  # "" is unknown
    assert row["page_url"] == "https://xeno-canto.org/254462"
    assert row["sonogram_url"] == (
        "https://xeno-canto.org/sounds/uploaded/BUGKVZBWKF/ffts/XC254462-large.png"
    )


def test_xeno_canto_v2_names_and_empty_background_entries() -> None:
    """API v2 wrote `lng` and `bird-seen`, and `also: [""]` when nothing else was heard."""
    v2 = {k: v for k, v in XC_V3.items() if k not in ("lon", "animal-seen", "method", "auto")}
    v2.update({"lng": "-122.7494", "bird-seen": "no", "also": [""], "alt": "?"})
    row = parse_recording(v2, "q", ALLOWED)
    assert row["longitude"] == -122.7494 and row["animal_seen"] is False
    assert row["background_species"] == [] and row["altitude"] is None
    assert row["recording_method"] is None and row["automatic_recording"] is None


def _observation(**over: object) -> dict:
    """The shape of pyinaturalist's get_observation.json (trimmed to what the crawl reads)."""
    obs = {
        "id": 16227955,
        "quality_grade": "research",
        "geoprivacy": None,
        "taxon_geoprivacy": None,
        "obscured": False,
        "positional_accuracy": 23,
        "public_positional_accuracy": 23,
        "location": "50.646894,4.360086",
        "observed_on": "2018-09-05",
        "created_at": "2018-09-05T14:08:09+02:00",
        "updated_at": "2018-09-22T19:19:27+02:00",
        "uri": "https://www.inaturalist.org/observations/16227955",
        "user": {"login": "niconoe"},
        "taxon": {
            "id": 493595,
            "name": "Lixus bardanae",
            "rank": "species",
            "ancestry": "48460/1/47120/372739/47158/184884/47208/71130/507383/71157",
        },
        "photos": [
            {
                "id": 24355315,
                "license_code": "cc-by",
                "url": "https://static.inaturalist.org/photos/24355315/square.jpeg?1536150664",
                "original_dimensions": {"width": 1445, "height": 2048},
            }
        ],
        "sounds": [],
    }
    obs.update(over)
    return obs


def test_inaturalist_geoprivacy_and_accuracy_are_kept() -> None:
    (row,), _ = parse_observation(_observation(), "taxon_id=1", ALLOWED)
    assert row["positional_accuracy"] == 23.0 and row["coordinates_obscured"] is False
    assert (row["latitude"], row["longitude"]) == (50.646894, 4.360086)
    hidden = _observation(
        geoprivacy="obscured",
        obscured=True,
        positional_accuracy=5,
        public_positional_accuracy=28954,
    )
    (row,), _ = parse_observation(hidden, "taxon_id=1", ALLOWED)
    assert row["geoprivacy"] == "obscured" and row["coordinates_obscured"] is True
    assert row["positional_accuracy"] == 28954.0  # the accuracy of the coordinates stored
    by_taxon = _observation(taxon_geoprivacy="private", location=None)
    (row,), _ = parse_observation(by_taxon, "taxon_id=1", ALLOWED)
    assert row["taxon_geoprivacy"] == "private" and row["coordinates_obscured"] is True
    assert row["latitude"] is None
    # get_observation_with_sounds.json writes `location` as a [lat, lon] list
    (row,), _ = parse_observation(_observation(location=[51.601234, -1.122952]), "q", ALLOWED)
    assert (row["latitude"], row["longitude"]) == (51.601234, -1.122952)


def test_photo_formats_share_one_vocabulary() -> None:
    """The API's photo URLs say `.jpeg`; Open Data's `extension` says `jpg` or `jpeg`."""
    (row,), _ = parse_observation(_observation(), "q", ALLOWED)
    assert row["file_format"] == "jpg"
    assert row["media_url"].endswith("/original.jpeg?1536150664")  # the URL itself is untouched


def test_ancestor_ids_with_or_without_the_taxon_itself() -> None:
    assert ancestors_of({"id": 5, "ancestor_ids": [1, 2, 3, 4, 5]}) == [1, 2, 3, 4]
    assert ancestors_of({"id": 5, "ancestor_ids": [1, 2, 3, 4]}) == [1, 2, 3, 4]
    assert ancestors_of({"id": 5, "ancestor_ids": None}) == []


class _Taxa:
    """/taxa/{ids} answers; `ancestor_ids` of the species and subspecies lack their own id."""

    TAXA: ClassVar[dict[int, tuple[str, str, list[int]]]] = {
        1: ("Animalia", "kingdom", [1]),
        2: ("Chordata", "phylum", [1, 2]),
        3: ("Aves", "class", [1, 2, 3]),
        4: ("Passeriformes", "order", [1, 2, 3, 4]),
        5: ("Cardinalidae", "family", [1, 2, 3, 4, 5]),
        6: ("Passerina", "genus", [1, 2, 3, 4, 5, 6]),
        7: ("Passerina amoena", "species", [1, 2, 3, 4, 5, 6]),  # no 7
        8: ("Passerina amoena ssp", "subspecies", [1, 2, 3, 4, 5, 6, 7]),  # no 8
    }

    def __init__(self) -> None:
        self.asked: list[str] = []

    def get_json(self, url: str, params=None, *, policy=None) -> dict:
        ids = [int(i) for i in url.rsplit("/", 1)[1].split(",")]
        self.asked.append(url)
        results = [
            {"id": i, "name": n, "rank": r, "ancestor_ids": a, "is_active": True}
            for i in ids
            for n, r, a in [self.TAXA[i]]
        ]
        return {"results": results}


def test_lineage_is_right_when_ancestor_ids_lack_the_taxon(tmp_path: Path) -> None:
    """A species reached only through its subspecies keeps its genus."""
    bb = InatBackbone(_Taxa(), "http://127.0.0.1:9/v1", tmp_path)  # type: ignore[arg-type]
    bb.fetch_taxa([8])
    assert bb.species_for_taxon()[8] == (7, "subspecies")
    bb.complete([7])
    lineage = bb.species[7]
    assert lineage["genus"] == "Passerina" and lineage["family"] == "Cardinalidae"
    assert lineage["class"] == "Aves" and lineage["kingdom"] == "Animalia"


def _tsv(rows: list[tuple]) -> bytes:
    return gzip.compress("".join("\t".join(map(str, r)) + "\n" for r in rows).encode())


class _Bucket:
    """The Open Data bucket's tables (the real headers), one photo row malformed."""

    def __init__(self) -> None:
        obs_cols = ("observation_uuid", "observer_id", "latitude", "longitude",
                    "positional_accuracy", "taxon_id", "quality_grade", "observed_on",
                    "anomaly_score")  # fmt: skip
        photo_cols = ("photo_uuid", "photo_id", "observation_uuid", "observer_id", "extension",
                      "license", "width", "height", "position")  # fmt: skip
        self.tables = {
            "taxa": _tsv(
                [
                    ("taxon_id", "ancestry", "rank_level", "rank", "name", "active"),
                    (7, "1/2/3/4/5/6", 10, "species", "Passerina amoena", "true"),
                ]
            ),
            "observations": _tsv(
                [obs_cols, ("u1", 9, 43.6, -103.4, 12, 7, "research", "2015-06-23", "0.1")]
            ),
            "photos": _tsv(
                [
                    photo_cols,
                    ("p1", 101, "u1", 9, "jpeg", "CC-BY", 800, 600, 0),
                    ("p2", "1O2", "u1", 9, "jpg", "CC-BY", 800, 600, 1),  # letter O, not zero
                    ("p3", 103, "u1", 9, "jpg", "CC-BY", 800, 600, 2, "extra"),
                ]
            ),
            "observers": _tsv([("observer_id", "login", "name"), (9, "jj", 'J "the" J')]),
        }

    def download(self, url: str, dest: Path, *, policy=None) -> Path:
        dest.write_bytes(self.tables[url.rsplit("/", 1)[1].split(".")[0]])
        return dest


def test_a_malformed_open_data_row_becomes_a_failure(tmp_path: Path) -> None:
    target = Target("Passerina amoena", "species", 7, "Aves")
    src = OpenDataSource(_Bucket(), "http://127.0.0.1:9/b", [target], tmp_path)  # type: ignore[arg-type]
    page = src.fetch_page("taxon_id=7", None)
    assert [r["record_id"] for r in page.rows] == ["101", "103"]
    assert {r["file_format"] for r in page.rows} == {"jpg"}
    assert page.rows[0]["media_url"].endswith("/photos/101/original.jpeg")
    assert page.rows[0]["positional_accuracy"] == 12.0
    (fail,) = page.failures
    assert (fail["record_id"], fail["reason"]) == ("1O2", "malformed")
    assert "photo_id is not an integer" in fail["detail"]


@pytest.mark.parametrize("field", ["background_species", "coordinates_obscured", "sonogram_url"])
def test_new_fields_are_in_every_schema_on_the_way(field: str) -> None:
    from biovita_data.core.schemas import MEDIA, RAW_RECORD
    from biovita_data.publish.features import columns

    assert field in RAW_RECORD.names and field in MEDIA.names
    published = {c for c, _ in columns("audio")} & {c for c, _ in columns("audio", "urls")}
    assert field in published
    json.dumps([str(t) for _, t in columns("audio")])
    assert pl.from_arrow(RAW_RECORD.empty_table()).schema[field] is not None
