"""The loopback sample server: Xeno-canto v3, iNaturalist v1 and Open Data, field for field."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import math
from collections import Counter

import pytest
import requests
from PIL import Image

from biovita_data.sample.faults import FaultPlan
from biovita_data.sample.responses import OPEN_DATA_LICENSE
from biovita_data.sample.server import DEFAULT_XC_KEY, SampleServer
from biovita_data.sample.world import World

# Field names and JSON value types of the real services, generated once from public response
# samples (Xeno-canto v3: jonner/xenocanto-rs; iNaturalist v1: pyinat/pyinaturalist
# test/sample_data/v1; Open Data: inaturalist/inaturalist-open-data Metadata/README.md).
# "a|b": the samples disagree; "null" alone: every sample had null (so any type will do).
# *_OPTIONAL: keys that only some of the real records carry.
XC_PAGE = {
    "numRecordings": "str",
    "numSpecies": "str",
    "page": "int",
    "numPages": "int",
    "recordings": "list",
}
XC_RECORDING = {
    "id": "str",
    "gen": "str",
    "sp": "str",
    "ssp": "str",
    "grp": "str",
    "en": "str",
    "rec": "str",
    "cnt": "str",
    "loc": "str",
    "lat": "str",
    "lon": "str",
    "alt": "str",
    "type": "str",
    "sex": "str",
    "stage": "str",
    "method": "str",
    "url": "str",
    "file": "str",
    "file-name": "str",
    "sono": "dict",
    "osci": "dict",
    "lic": "str",
    "q": "str",
    "length": "str",
    "time": "str",
    "date": "str",
    "uploaded": "str",
    "also": "list",
    "rmk": "str",
    "animal-seen": "str",
    "playback-used": "str",
    "temp": "null",
    "regnr": "str",
    "auto": "str",
    "dvc": "str",
    "mic": "str",
    "smp": "str",
    "annotation-set": "list",
}
XC_SONO = {
    "small": "str",
    "med": "str",
    "large": "str",
    "full": "null",
}
XC_OSCI = {
    "small": "null",
    "med": "null",
    "large": "null",
}
XC_ERROR = {
    "error": "str",
    "message": "str",
}
INAT_PAGE = {
    "total_results": "int",
    "page": "int",
    "per_page": "int",
    "results": "list",
}
INAT_OBSERVATION = {
    "quality_grade": "str",
    "taxon_geoprivacy": "str",
    "annotations": "list",
    "uuid": "str",
    "observed_on_details": "dict",
    "id": "int",
    "cached_votes_total": "int",
    "identifications_most_agree": "bool",
    "created_at": "str",
    "created_at_details": "dict",
    "created_time_zone": "str",
    "time_zone_offset": "str",
    "time_observed_at": "str",
    "observed_on": "str",
    "observed_time_zone": "str",
    "observed_on_string": "str",
    "updated_at": "str",
    "species_guess": "str",
    "identifications_most_disagree": "bool",
    "tags": "list",
    "positional_accuracy": "int|null",
    "comments_count": "int",
    "site_id": "int",
    "license_code": "str",
    "quality_metrics": "list",
    "public_positional_accuracy": "int|null",
    "reviewed_by": "list",
    "oauth_application_id": "int|null",
    "flags": "list",
    "description": "null|str",
    "project_ids_with_curator_id": "list",
    "sounds": "list",
    "place_ids": "list",
    "captive": "bool",
    "taxon": "dict",
    "ident_taxon_ids": "list",
    "outlinks": "list",
    "faves_count": "int",
    "ofvs": "list",
    "num_identification_agreements": "int",
    "preferences": "dict",
    "comments": "list",
    "map_scale": "int|null",
    "uri": "str",
    "project_ids": "list",
    "community_taxon_id": "int|null",
    "geojson": "dict",
    "owners_identification_from_vision": "bool",
    "identifications_count": "int",
    "obscured": "bool",
    "num_identification_disagreements": "int",
    "geoprivacy": "null|str",  # the samples are all null; iNaturalist writes obscured, private
    "location": "list|str",
    "private_location": "str",
    "votes": "list",
    "spam": "bool",
    "user": "dict",
    "mappable": "bool",
    "identifications_some_agree": "bool",
    "project_ids_without_curator_id": "list",
    "place_guess": "str",
    "identifications": "list",
    "project_observations": "list",
    "photos": "list",
    "observation_photos": "list",
    "faves": "list",
    "non_owner_ids": "list",
    "out_of_range": "null",
    "id_please": "bool",
    "observation_sounds": "list",
}
INAT_OBSERVATION_OPTIONAL = frozenset(
    [
        "created_at_details",
        "created_time_zone",
        "id_please",
        "ident_taxon_ids",
        "observation_sounds",
        "observed_on_details",
        "observed_on_string",
        "observed_time_zone",
        "out_of_range",
        "private_location",
        "taxon_geoprivacy",
        "time_zone_offset",
    ]
)
INAT_OBS_TAXON = {
    "is_active": "bool",
    "ancestry": "str",
    "min_species_ancestry": "str",
    "endemic": "bool",
    "iconic_taxon_id": "int",
    "min_species_taxon_id": "int",
    "threatened": "bool",
    "rank_level": "int",
    "introduced": "bool",
    "native": "bool",
    "parent_id": "int",
    "name": "str",
    "rank": "str",
    "extinct": "bool",
    "id": "int",
    "ancestor_ids": "list",
    "photos_locked": "bool",
    "taxon_schemes_count": "int",
    "wikipedia_url": "null|str",
    "current_synonymous_taxon_ids": "null",
    "created_at": "str",
    "taxon_changes_count": "int",
    "complete_species_count": "null",
    "universal_search_rank": "int",
    "observations_count": "int",
    "flag_counts": "dict",
    "atlas_id": "int|null",
    "default_photo": "dict",
    "iconic_taxon_name": "str",
    "preferred_common_name": "str",
    "conservation_status": "dict",
}
INAT_OBS_TAXON_OPTIONAL = frozenset(
    [
        "conservation_status",
        "min_species_taxon_id",
        "photos_locked",
        "preferred_common_name",
        "universal_search_rank",
    ]
)
INAT_PHOTO = {
    "id": "int",
    "license_code": "str",
    "url": "str",
    "attribution": "str",
    "original_dimensions": "dict",
    "flags": "list",
}
INAT_DIMENSIONS = {
    "width": "int",
    "height": "int",
}
INAT_OBSERVATION_PHOTO = {
    "id": "int",
    "position": "int",
    "uuid": "str",
    "photo": "dict",
}
INAT_SOUND = {
    "id": "int",
    "license_code": "str",
    "attribution": "str",
    "native_sound_id": "null",
    "secret_token": "null",
    "file_url": "str",
    "file_content_type": "str",
    "play_local": "bool",
    "subtype": "null",
    "flags": "list",
}
INAT_OBSERVATION_SOUND = {
    "id": "int",
    "uuid": "str",
    "sound": "dict",
}
INAT_USER = {
    "site_id": "int",
    "created_at": "str",
    "id": "int",
    "login": "str",
    "spam": "bool",
    "suspended": "bool",
    "preferences": "dict",
    "login_autocomplete": "str",
    "login_exact": "str",
    "name": "null|str",
    "name_autocomplete": "null|str",
    "orcid": "null",
    "icon": "null|str",
    "observations_count": "int",
    "identifications_count": "int",
    "journal_posts_count": "int",
    "activity_count": "int",
    "species_count": "int",
    "universal_search_rank": "int",
    "roles": "list",
    "icon_url": "null|str",
}
INAT_USER_OPTIONAL = frozenset(
    ["created_at", "orcid", "preferences", "species_count", "universal_search_rank"]
)
INAT_GEOJSON = {
    "coordinates": "list",
    "type": "str",
}
INAT_DATE_DETAILS = {
    "date": "str",
    "week": "int",
    "month": "int",
    "hour": "int",
    "year": "int",
    "day": "int",
}
INAT_TAXA_RESULT = {
    "observations_count": "int",
    "taxon_schemes_count": "int",
    "ancestry": "str",
    "is_active": "bool",
    "flag_counts": "dict",
    "wikipedia_url": "null|str",
    "current_synonymous_taxon_ids": "null",
    "iconic_taxon_id": "int",
    "rank_level": "int",
    "taxon_changes_count": "int",
    "atlas_id": "null",
    "complete_species_count": "int|null",
    "parent_id": "int",
    "name": "str",
    "rank": "str",
    "extinct": "bool",
    "id": "int",
    "default_photo": "dict|null",
    "ancestor_ids": "list",
    "matched_term": "str",
    "iconic_taxon_name": "str",
    "preferred_common_name": "str",
    "vision": "bool",
    "complete_rank": "str",
}
INAT_TAXA_RESULT_OPTIONAL = frozenset(["complete_rank", "preferred_common_name"])
INAT_FLAG_COUNTS = {
    "unresolved": "int",
    "resolved": "int",
}
OPEN_DATA_HEADERS = {
    "observations": (
        "observation_uuid",
        "observer_id",
        "latitude",
        "longitude",
        "positional_accuracy",
        "taxon_id",
        "quality_grade",
        "observed_on",
        "anomaly_score",
    ),
    "photos": (
        "photo_uuid",
        "photo_id",
        "observation_uuid",
        "observer_id",
        "extension",
        "license",
        "width",
        "height",
        "position",
    ),
    "taxa": ("taxon_id", "ancestry", "rank_level", "rank", "name", "active"),
    "observers": ("observer_id", "login", "name"),
}
# The reference samples are all openly licensed, but iNaturalist answers license_code null for
# "all rights reserved" (and the world has such records); the /taxa reference shows a taxon's
# default_photo can be null.
NULL_LICENSE = frozenset({"license_code"})
NULL_DEFAULT_PHOTO = frozenset({"default_photo"})
LIFE = 48460  # the root: no parent, no ancestry, no iconic taxon (as on iNaturalist)
TIMEOUT = 10


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    return {bool: "bool", int: "int", float: "float", str: "str", list: "list", dict: "dict"}[
        type(value)
    ]


def _check_fields(
    obj: dict,
    ref: dict[str, str],
    optional: frozenset[str] = frozenset(),
    nullable: frozenset[str] = frozenset(),
    where: str = "",
) -> None:
    """obj has the reference's keys (all required ones, no others) with the reference's types."""
    keys = set(obj)
    assert not (set(ref) - optional) - keys, f"{where}: missing {(set(ref) - optional) - keys}"
    assert not keys - set(ref), f"{where}: not in the reference: {keys - set(ref)}"
    for key, value in obj.items():
        allowed = ref[key].split("|")
        got = _json_type(value)
        if allowed == ["null"] or (got == "null" and key in nullable):
            continue
        if got == "int" and "float" in allowed:  # JSON has one number type
            continue
        assert got in allowed, f"{where}.{key}: {got} ({value!r}), reference has {allowed}"


def _get(url: str, **params: object) -> requests.Response:
    return requests.get(url, params=params, timeout=TIMEOUT)


def _xc(server: SampleServer, query: str, key: str | None = DEFAULT_XC_KEY, **params):
    params = {"query": query, **({"key": key} if key is not None else {}), **params}
    return _get(f"{server.urls['XENO_CANTO_API_URL']}/recordings", **params)


def _xc_ids(server: SampleServer, query: str, per_page: int = 500) -> list[int]:
    """All recording ids of a query, over all pages."""
    ids, page, pages = [], 1, 1
    while page <= pages:
        r = _xc(server, query, per_page=per_page, page=page)
        assert r.status_code == 200, r.text
        body = r.json()
        pages = body["numPages"]
        ids += [int(rec["id"]) for rec in body["recordings"]]
        page += 1
    return ids


def _inat(server: SampleServer, path: str, **params: object) -> requests.Response:
    return _get(f"{server.urls['INATURALIST_API_URL']}/{path}", **params)


def _open_data(server: SampleServer, name: str) -> list[dict[str, str]]:
    r = _get(f"{server.urls['INATURALIST_OPEN_DATA_URL']}/{name}.csv.gz")
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/gzip"
    text = gzip.decompress(r.content).decode("utf-8")
    assert '"' not in text and text.endswith("\n")
    lines = text.splitlines()
    assert tuple(lines[0].split("\t")) == OPEN_DATA_HEADERS[name]
    rows = list(csv.DictReader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE))
    assert all(len(row) == len(OPEN_DATA_HEADERS[name]) and None not in row for row in rows)
    return rows


def _xc_group(world: World, rec) -> str | None:
    return world.species[rec.species_index].xc_group


# ----------------------------------------------------------------------------- Xeno-canto
def test_xc_recordings_match_the_reference_fields(sample_server, tiny_world: World) -> None:
    groups = Counter(_xc_group(tiny_world, r) for r in tiny_world.xc_recordings())
    assert len(groups) >= 3
    seen = 0
    for group, n in groups.items():
        r = _xc(sample_server, f'grp:"{group}"', per_page=500)
        assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
        body = r.json()
        _check_fields(body, XC_PAGE, where="page")
        assert (body["numRecordings"], body["page"], body["numPages"]) == (str(n), 1, 1)
        species = {
            r.species_index for r in tiny_world.xc_recordings() if _xc_group(tiny_world, r) == group
        }
        assert body["numSpecies"] == str(len(species))
        for rec in body["recordings"]:
            _check_fields(rec, XC_RECORDING, where=f"recording {rec['id']}")
            _check_fields(rec["sono"], XC_SONO, where="sono")
            _check_fields(rec["osci"], XC_OSCI, where="osci")
            assert all(
                isinstance(v, str)
                for k, v in rec.items()
                if k not in ("sono", "osci", "also", "annotation-set", "temp")
            )
            world_rec = tiny_world.recording_by_id[("xeno-canto", int(rec["id"]))]
            sp = tiny_world.species[world_rec.species_index]
            names = (sp.xc_gen, sp.xc_sp, sp.xc_ssp, group)
            assert (rec["gen"], rec["sp"], rec["ssp"], rec["grp"]) == names
            assert rec["lic"] == world_rec.license and rec["smp"] == str(world_rec.sample_rate)
            minutes, seconds = rec["length"].split(":")
            assert int(minutes) * 60 + int(seconds) == round(world_rec.duration_s)
            assert rec["uploaded"] == world_rec.uploaded.isoformat()
            assert (rec["file"] == "") == world_rec.restricted
            seen += 1
    assert seen == len(tiny_world.xc_recordings())


def test_xc_download_serves_the_recording(sample_server, tiny_world: World) -> None:
    recs = {r.id: r for r in tiny_world.xc_recordings()}
    body = _xc(sample_server, "grp:birds", per_page=500).json()
    shortest = min(
        (r for r in body["recordings"] if r["file"]), key=lambda r: recs[int(r["id"])].duration_s
    )
    rec = recs[int(shortest["id"])]
    r = _get(shortest["file"])
    assert r.status_code == 200
    assert r.content == tiny_world.audio_bytes("xeno-canto", rec.id)
    assert shortest["file-name"].endswith(f".{rec.fmt}")
    restricted = next(r for r in tiny_world.xc_recordings() if r.restricted)
    assert _get(f"{sample_server.root}/xeno-canto/{restricted.id}/download").status_code == 404


@pytest.mark.parametrize("key", [None, "", "wrong-key"])
def test_xc_without_a_valid_key_is_401(sample_server, key: str | None) -> None:
    r = _xc(sample_server, "grp:birds", key=key)
    assert r.status_code == 401
    body = r.json()
    _check_fields(body, XC_ERROR, where="error")
    assert body["error"] == "client_error"
    assert "key" in body["message"]


def test_xc_paging_visits_every_bird_recording_once(default_world: World) -> None:
    birds = {r.id for r in default_world.xc_recordings() if _xc_group(default_world, r) == "birds"}
    with SampleServer(default_world) as server:
        first = _xc(server, "grp:birds", per_page=50).json()
        assert first["numRecordings"] == str(len(birds))
        assert first["numPages"] == math.ceil(len(birds) / 50) >= 5
        pages = []
        for page in range(1, first["numPages"] + 1):
            body = _xc(server, "grp:birds", per_page=50, page=page).json()
            assert (body["page"], body["numRecordings"]) == (page, first["numRecordings"])
            pages.append([int(rec["id"]) for rec in body["recordings"]])
        beyond = _xc(server, "grp:birds", per_page=50, page=first["numPages"] + 1)
        assert beyond.status_code == 400
    assert all(len(p) == 50 for p in pages[:-1]) and 0 < len(pages[-1]) <= 50
    flat = [i for p in pages for i in p]
    assert len(flat) == len(set(flat))  # pages are disjoint
    assert set(flat) == birds


def test_xc_tag_filters_select_the_matching_recordings(sample_server, tiny_world: World) -> None:
    w = tiny_world
    recs = w.xc_recordings()
    sp = {r.id: w.species[r.species_index] for r in recs}
    case_space = next(s for s in w.species if s.name_variant == "case_space")
    subspecies = next(s for s in w.species if s.name_variant == "subspecies")
    country = Counter(r.country for r in recs).most_common(1)[0][0]
    cut = sorted(r.uploaded for r in recs)[len(recs) // 2]
    cases = {
        "grp:frogs": lambda r: sp[r.id].xc_group == "frogs",
        # the audio source's own (odd-cased, space-prefixed) genus and epithet, any case
        f"gen:{case_space.genus.upper()}": lambda r: (
            sp[r.id].xc_gen.lower() == case_space.genus.lower()
        ),
        f"gen:{case_space.genus} sp:{case_space.epithet}": lambda r: sp[r.id] == case_space,
        f"ssp:{subspecies.xc_ssp}": lambda r: sp[r.id] == subspecies,
        f'cnt:"{country}"': lambda r: r.country == country,
        "q:A": lambda r: r.quality == "A",
        'q:">C"': lambda r: r.quality in ("A", "B"),
        "len:5-10": lambda r: 5 <= r.duration_s <= 10,
        'len:">15"': lambda r: r.duration_s > 15,
        f"since:{cut.isoformat()}": lambda r: r.uploaded >= cut,
        f"grp:birds since:{cut.isoformat()} q:A": lambda r: (
            sp[r.id].xc_group == "birds" and r.uploaded >= cut and r.quality == "A"
        ),
    }
    for query, keep in cases.items():
        expected = {r.id for r in recs if keep(r)}
        assert 0 < len(expected) < len(recs), query
        ids = _xc_ids(sample_server, query, per_page=50)
        assert sorted(ids) == sorted(expected), query


@pytest.mark.parametrize("query", ["", "Passerina amoena", "grp:birds colour:red", "len:abc"])
def test_xc_bad_queries_are_400(sample_server, query: str) -> None:
    r = _xc(sample_server, query)
    assert r.status_code == 400 and r.json()["error"] == "client_error"


def test_xc_too_many_results_is_a_client_error(tiny_world: World) -> None:
    birds = [r for r in tiny_world.xc_recordings() if _xc_group(tiny_world, r) == "birds"]
    with SampleServer(tiny_world, xc_max_results=len(birds) - 1) as server:
        r = _xc(server, "grp:birds")
        assert r.status_code == 400
        body = r.json()
        assert body["error"] == "client_error" and str(len(birds)) in body["message"]
        genus = tiny_world.species[birds[0].species_index].xc_gen
        narrow = _xc(server, f"grp:birds gen:{genus}")
        assert narrow.status_code == 200 and 0 < int(narrow.json()["numRecordings"]) < len(birds)


# ----------------------------------------------------------------------------- iNaturalist
def test_inat_observations_match_the_reference_fields(sample_server, tiny_world: World) -> None:
    r = _inat(sample_server, "observations", per_page=200)
    assert r.status_code == 200
    body = r.json()
    _check_fields(body, INAT_PAGE, where="page")
    assert body["total_results"] == len(body["results"]) == len(tiny_world.observations)
    kinds = Counter()
    for obs in body["results"]:
        _check_fields(obs, INAT_OBSERVATION, INAT_OBSERVATION_OPTIONAL, NULL_LICENSE, "obs")
        _check_fields(
            obs["taxon"], INAT_OBS_TAXON, INAT_OBS_TAXON_OPTIONAL, NULL_DEFAULT_PHOTO, "obs.taxon"
        )
        _check_fields(obs["taxon"]["flag_counts"], INAT_FLAG_COUNTS, where="flag_counts")
        _check_fields(obs["user"], INAT_USER, INAT_USER_OPTIONAL, where="obs.user")
        _check_fields(obs["geojson"], INAT_GEOJSON, where="obs.geojson")
        for key in ("observed_on_details", "created_at_details"):
            _check_fields(obs[key], INAT_DATE_DETAILS, where=key)
        for photo in obs["photos"]:
            _check_fields(photo, INAT_PHOTO, nullable=NULL_LICENSE, where="photo")
            _check_fields(photo["original_dimensions"], INAT_DIMENSIONS, where="dimensions")
            kinds["photo"] += 1
        for op in obs["observation_photos"]:
            _check_fields(op, INAT_OBSERVATION_PHOTO, where="observation_photo")
            assert op["photo"] in obs["photos"] and op["uuid"] == obs["uuid"]
        for sound in obs["sounds"]:
            _check_fields(sound, INAT_SOUND, nullable=NULL_LICENSE, where="sound")
            kinds["sound"] += 1
        for osound in obs.get("observation_sounds", []):
            _check_fields(osound, INAT_OBSERVATION_SOUND, where="observation_sound")
            assert osound["sound"] in obs["sounds"]
        world_obs = tiny_world.observation_by_id[obs["id"]]
        assert obs["uuid"] == world_obs.uuid and obs["license_code"] == world_obs.license
        assert [p["id"] for p in obs["photos"]] == list(world_obs.photo_ids)
        assert [s["id"] for s in obs["sounds"]] == list(world_obs.sound_ids)
        assert obs["taxon"]["id"] == tiny_world.species[world_obs.species_index].taxon_id
    assert kinds["photo"] == len(tiny_world.photos)
    assert kinds["sound"] == sum(r.source == "inaturalist" for r in tiny_world.recordings)


def test_inat_taxa_match_the_reference_fields(sample_server, tiny_world: World) -> None:
    taxa = tiny_world.taxonomy.taxa
    species = tiny_world.species[0]
    checked = 0
    for params in (
        {"q": "Aves"},
        {"q": "Insecta"},
        {"q": species.genus},
        {"q": species.common_name.split()[-1]},
        {"rank": "species", "per_page": 200},
    ):
        body = _inat(sample_server, "taxa", **params).json()
        _check_fields(body, INAT_PAGE, where="taxa page")
        assert body["results"], params
        for t in body["results"]:
            _check_fields(t, INAT_TAXA_RESULT, INAT_TAXA_RESULT_OPTIONAL, where=f"taxa {params}")
            _check_fields(t["flag_counts"], INAT_FLAG_COUNTS, where="flag_counts")
            assert t["ancestor_ids"][-1] == t["id"] and t["ancestor_ids"][0] == LIFE
            checked += 1
    assert checked > len(tiny_world.species)
    by_name = _inat(sample_server, "taxa", q=species.name).json()["results"]
    assert by_name[0]["id"] == species.taxon_id
    assert by_name[0]["preferred_common_name"] == species.common_name
    # /taxa/{ids}: every taxon below the root, in the observation-embedded form
    ids = sorted(i for i in taxa if i != LIFE)
    body = _inat(sample_server, "taxa/" + ",".join(map(str, ids))).json()
    assert [t["id"] for t in body["results"]] == ids and body["total_results"] == len(ids)
    for t in body["results"]:
        _check_fields(t, INAT_OBS_TAXON, INAT_OBS_TAXON_OPTIONAL, NULL_DEFAULT_PHOTO, "taxa/id")
        assert t["parent_id"] == taxa[t["id"]].parent_id
        assert ("preferred_common_name" in t) == (taxa[t["id"]].common_name is not None)
    iconic = {t["id"]: t["iconic_taxon_name"] for t in body["results"]}
    assert [iconic[1], iconic[2], iconic[3]] == ["Animalia", "Animalia", "Aves"]
    assert iconic[species.taxon_id] == species.class_name


def test_inat_per_page_is_capped_at_200(default_world: World) -> None:
    with SampleServer(default_world) as server:
        body = _inat(server, "observations", per_page=500).json()
    assert body["per_page"] == 200 and len(body["results"]) == 200
    assert body["total_results"] == len(default_world.observations) > 200


def _research(world: World, taxon_id: int) -> set[int]:
    """Research-grade observations of the taxon or its descendants."""
    taxa = world.taxonomy.taxa
    out = set()
    for o in world.observations:
        t = taxa[world.species[o.species_index].taxon_id]
        if o.quality_grade == "research" and taxon_id in (*t.ancestor_ids, t.id):
            out.add(o.id)
    return out


def _page_by_id(server: SampleServer, per_page: int, **params: object) -> list[int]:
    """All ids of a query with order_by=id&order=asc&id_above=<last id seen>."""
    seen, last, left = [], 0, None
    while True:
        body = _inat(
            server,
            "observations",
            order_by="id",
            order="asc",
            id_above=last,
            per_page=per_page,
            **params,
        ).json()
        ids = [o["id"] for o in body["results"]]
        if not ids:
            return seen
        assert ids == sorted(ids) and ids[0] > last
        if left is not None:  # total_results counts what is left above id_above
            assert body["total_results"] == left
        left = body["total_results"] - len(ids)
        seen += ids
        last = ids[-1]


def test_inat_id_above_paging_visits_each_research_observation_once(tiny_world: World) -> None:
    birds = _research(tiny_world, 3)
    with SampleServer(tiny_world, inat_window=20) as server:
        seen = _page_by_id(server, 4, taxon_id=3, quality_grade="research")
        # with page-based paging the same query stops at the window
        assert _inat(server, "observations", taxon_id=3, per_page=4, page=5).status_code == 200
        r = _inat(server, "observations", taxon_id=3, per_page=4, page=6)
        assert r.status_code == 403 and "id_above" in r.json()["error"]
        everything = _page_by_id(server, 7)
    assert len(seen) == len(set(seen)) and set(seen) == birds
    assert len(birds) > 20  # more than the window
    assert sorted(everything) == sorted(o.id for o in tiny_world.observations)


def test_inat_page_paging_past_the_window_is_403(sample_server) -> None:
    ok = _inat(sample_server, "observations", per_page=200, page=50)
    assert ok.status_code == 200 and ok.json()["results"] == []
    r = _inat(sample_server, "observations", per_page=200, page=51)  # 10,200 > 10,000
    assert r.status_code == 403
    assert r.json()["status"] == 403


@pytest.mark.parametrize("cls", ["Aves", "Amphibia", "Mammalia", "Insecta"])
def test_inat_taxon_id_includes_descendants(sample_server, tiny_world: World, cls: str) -> None:
    class_id = tiny_world.taxonomy.by_name(cls).id
    body = _inat(sample_server, "observations", taxon_id=class_id, per_page=200).json()
    assert body["total_results"] == len(body["results"]) > 0
    assert all(class_id in o["taxon"]["ancestor_ids"] for o in body["results"])
    assert {
        tiny_world.species[tiny_world.observation_by_id[o["id"]].species_index].class_name
        for o in body["results"]
    } == {cls}
    assert body["total_results"] == sum(
        tiny_world.species[o.species_index].class_name == cls for o in tiny_world.observations
    )


def test_inat_taxon_id_of_a_genus_and_of_several_taxa(sample_server, tiny_world: World) -> None:
    sp = tiny_world.species[0]
    genus = _inat(sample_server, "observations", taxon_id=sp.genus_taxon_id, per_page=200).json()
    assert {o["taxon"]["ancestor_ids"][-2] for o in genus["results"]} == {sp.genus_taxon_id}
    assert {o["id"] for o in genus["results"]} == {
        o.id
        for o in tiny_world.observations
        if tiny_world.species[o.species_index].genus == sp.genus
    }
    both = _inat(sample_server, "observations", taxon_id="3,20978", per_page=200).json()
    aves = _inat(sample_server, "observations", taxon_id=3, per_page=200).json()
    frogs = _inat(sample_server, "observations", taxon_id=20978, per_page=200).json()
    assert both["total_results"] == aves["total_results"] + frogs["total_results"]


@pytest.mark.parametrize("licenses", ["cc-by", "cc0,cc-by-sa", "cc-by-nd"])
def test_inat_photo_license_filter(sample_server, tiny_world: World, licenses: str) -> None:
    wanted = set(licenses.split(","))
    body = _inat(sample_server, "observations", photo_license=licenses.upper(), per_page=200).json()
    expected = {
        o.id
        for o in tiny_world.observations
        if any(tiny_world.photo_by_id[i].license in wanted for i in o.photo_ids)
    }
    assert expected and {o["id"] for o in body["results"]} == expected
    assert all(any(p["license_code"] in wanted for p in o["photos"]) for o in body["results"])


def test_inat_photo_size_words(sample_server, tiny_world: World) -> None:
    obs = _inat(sample_server, "observations", per_page=200).json()["results"]
    photos = {p["id"]: p for o in obs for p in o["photos"]}
    ok = [p for p in tiny_world.photos if p.flaw is None]
    sample = [
        max(ok, key=lambda p: p.width * p.height),  # > 1024 px
        min(ok, key=lambda p: max(p.width, p.height)),  # < 500 px
        next(p for p in ok if p.fmt == "png" and p.height > p.width),
    ]
    limits = {"small": 240, "medium": 500, "large": 1024}
    for p in sample:
        square_url = photos[p.id]["url"]
        # iNaturalist's own URLs write a JPEG as .jpeg or .jpg (the sample: .jpeg for even ids)
        ext = "jpeg" if p.fmt == "jpg" and p.id % 2 == 0 else p.fmt
        assert f"/square.{ext}?" in square_url
        assert photos[p.id]["original_dimensions"] == {"width": p.width, "height": p.height}
        for size in ("square", "small", "medium", "large", "original"):
            r = _get(square_url.replace("/square.", f"/{size}."))
            assert r.status_code == 200
            im = Image.open(io.BytesIO(r.content))
            assert im.format == {"jpg": "JPEG", "png": "PNG"}[p.fmt]
            assert r.headers["Content-Type"] == Image.MIME[im.format]
            if size == "square":
                assert im.size == (75, 75)
            elif size == "original":
                assert im.size == (p.width, p.height)
                assert r.content == tiny_world.photo_bytes(p.id)
            else:
                long_side = min(limits[size], max(p.width, p.height))
                assert max(im.size) == long_side, (p, size, im.size)
                assert im.size[0] / im.size[1] == pytest.approx(p.width / p.height, rel=0.02)
    unknown = _get(photos[sample[0].id]["url"].replace("/square.", "/huge."))
    assert unknown.status_code == 404


def test_inat_sound_files_are_served(sample_server, tiny_world: World) -> None:
    body = _inat(sample_server, "observations", sounds="true", per_page=200).json()
    sounds = [s for o in body["results"] for s in o["sounds"]]
    assert len(sounds) == sum(r.source == "inaturalist" for r in tiny_world.recordings)
    for s in sorted(sounds, key=lambda s: s["id"])[:3]:
        r = _get(s["file_url"])
        assert r.status_code == 200 and r.headers["Content-Type"] == s["file_content_type"]
        assert r.content == tiny_world.audio_bytes("inaturalist", s["id"])


# ----------------------------------------------------------------------------- Open Data
def test_open_data_tables_have_the_reference_headers_and_join(
    sample_server, tiny_world: World
) -> None:
    tables = {name: _open_data(sample_server, name) for name in OPEN_DATA_HEADERS}
    observations = {row["observation_uuid"]: row for row in tables["observations"]}
    assert len(observations) == len(tiny_world.observations)
    taxa = {int(row["taxon_id"]): row for row in tables["taxa"]}
    assert set(taxa) == set(tiny_world.taxonomy.taxa)
    observers = {row["observer_id"] for row in tables["observers"]}
    for row in observations.values():
        assert int(row["taxon_id"]) in taxa and row["observer_id"] in observers
        assert taxa[int(row["taxon_id"])]["rank"] == "species"
    photos = tables["photos"]
    openly = [p for p in tiny_world.photos if p.license is not None]
    assert sorted(int(row["photo_id"]) for row in photos) == sorted(p.id for p in openly)
    assert len(openly) < len(tiny_world.photos)  # all-rights-reserved photos are left out
    for row in photos:
        obs = observations[row["observation_uuid"]]  # every photo joins an observation
        assert row["observer_id"] == obs["observer_id"]
        assert row["license"] in OPEN_DATA_LICENSE.values()
        p = tiny_world.photo_by_id[int(row["photo_id"])]
        size = (int(row["width"]), int(row["height"]), int(row["position"]))
        assert size == (p.width, p.height, p.position)
        assert row["extension"] in ("jpg", "jpeg", "png")
    for row in taxa.values():
        if row["ancestry"]:
            parent = int(row["ancestry"].split("/")[-1])
            assert parent in taxa and int(taxa[parent]["rank_level"]) > int(row["rank_level"])
    row = photos[0]
    url = (
        f"{sample_server.urls['INATURALIST_OPEN_DATA_URL']}/photos/{row['photo_id']}"
        f"/medium.{row['extension']}"
    )
    assert _get(url).status_code == 200
    assert _get(f"{sample_server.urls['INATURALIST_OPEN_DATA_URL']}/nope.csv.gz").status_code == 404


# ----------------------------------------------------------------------------- as_of
def test_as_of_hides_later_records(tiny_world: World) -> None:
    recs = tiny_world.xc_recordings()
    cut = sorted(r.uploaded for r in recs)[len(recs) // 2]
    early_recs = {r.id for r in recs if r.uploaded <= cut}
    early_obs = {o.id for o in tiny_world.observations if o.created_at.date() <= cut}
    assert 0 < len(early_obs) < len(tiny_world.observations)
    with SampleServer(tiny_world, as_of=cut) as server:
        ids = [
            i
            for g in ("birds", "frogs", "bats", "grasshoppers")
            for i in _xc_ids(server, f"grp:{g}")
        ]
        assert sorted(ids) == sorted(early_recs)
        late = next(r for r in recs if r.uploaded > cut and not r.restricted)
        assert _get(f"{server.root}/xeno-canto/{late.id}/download").status_code == 404
        body = _inat(server, "observations", per_page=200).json()
        assert {o["id"] for o in body["results"]} == early_obs
        assert len(_open_data(server, "observations")) == len(early_obs)
        assert {int(r["photo_id"]) for r in _open_data(server, "photos")} == {
            p.id for p in tiny_world.photos if p.observation_id in early_obs and p.license
        }
        late_photo = next(p for p in tiny_world.photos if p.observation_id not in early_obs)
        url = f"{server.root}/inaturalist-static/photos/{late_photo.id}/square.{late_photo.fmt}"
        assert _get(url).status_code == 404
        late_sound = next(
            r
            for r in tiny_world.recordings
            if r.source == "inaturalist" and r.observation_id not in early_obs
        )
        url = f"{server.root}/inaturalist-static/sounds/{late_sound.id}.{late_sound.fmt}"
        assert _get(url).status_code == 404


# ----------------------------------------------------------------------------- faults
def _fast(plan: FaultPlan) -> FaultPlan:
    plan.retry_after, plan.slow_s = 0, 0.05
    return plan


def _urls(server: SampleServer, world: World) -> list[str]:
    """100 distinct cheap JSON requests."""
    xc, inat = server.urls["XENO_CANTO_API_URL"], server.urls["INATURALIST_API_URL"]
    urls = [f"{xc}/recordings?key={DEFAULT_XC_KEY}&query=nr:{r.id}" for r in world.recordings]
    urls = urls[:30] + [f"{inat}/observations?taxon_id={t}" for t in world.taxonomy.taxa]
    urls = sorted(set(urls[:70] + [f"{inat}/taxa/{t}" for t in world.taxonomy.taxa]))
    assert len(urls) >= 100
    return urls[:100]


def _attempt(session: requests.Session, url: str) -> tuple[str, requests.Response | None]:
    """One attempt: ("200", response), ("429", response), ..., ("reset"|"truncated", None)."""
    try:
        r = session.get(url, timeout=TIMEOUT)
    except requests.exceptions.ChunkedEncodingError:
        return "truncated", None
    except requests.exceptions.ConnectionError:
        return "reset", None
    return str(r.status_code), r


def _crawl(server: SampleServer, urls: list[str], retries: int) -> list[str]:
    """Fetch every URL, retrying at most `retries` times; the outcome of every attempt."""
    outcomes = []
    with requests.Session() as session:
        for url in urls:
            for _ in range(retries + 1):
                outcome, r = _attempt(session, url)
                outcomes.append(outcome)
                if outcome in ("429", "503"):
                    assert r.headers["Retry-After"] == "0"
                if outcome == "200":
                    assert r.json()
                    break
            else:
                pytest.fail(f"{url} still failing after {retries} retries: {outcomes[-3:]}")
    return outcomes


def test_heavy_faults_hit_every_kind_and_retries_get_through(tiny_world: World) -> None:
    plan = _fast(FaultPlan.named("heavy", seed=0))
    with SampleServer(tiny_world, faults=plan) as server:
        urls = _urls(server, tiny_world)
        outcomes = _crawl(server, urls, retries=plan.max_consecutive)
    counts = Counter(outcomes)
    assert len(urls) == 100 and counts["200"] == len(urls)
    for kind in ("429", "500", "503", "reset", "slow", "truncated"):
        assert plan.counts[kind] > 0, plan.counts
    for kind in ("429", "500", "503", "reset", "truncated"):
        assert counts[kind] == plan.counts[kind]
    assert plan.counts["requests"] == len(outcomes)


def test_the_same_seed_gives_the_same_faults(tiny_world: World) -> None:
    runs = []
    for seed in (7, 7, 8):
        plan = _fast(FaultPlan.named("heavy", seed=seed))
        with SampleServer(tiny_world, faults=plan) as server:
            runs.append((_crawl(server, _urls(server, tiny_world)[:40], 3), plan.counts))
    assert runs[0] == runs[1]
    assert runs[0][0] != runs[2][0]


def test_429_carries_retry_after_and_500_does_not(tiny_world: World) -> None:
    for kind, header in (("429", "0"), ("503", "0"), ("500", None)):
        plan = FaultPlan(rate=1.0, max_consecutive=1, kinds=(kind,), retry_after=0)
        with SampleServer(tiny_world, faults=plan) as server:
            url = f"{server.urls['INATURALIST_API_URL']}/taxa"
            r = _get(url)
            assert r.status_code == int(kind) and r.headers.get("Retry-After") == header
            assert r.json()["status"] == int(kind)
            assert _get(url).status_code == 200  # at most max_consecutive failures in a row
        assert plan.counts == Counter({"requests": 2, kind: 1})


def test_truncated_body_raises_in_requests(tiny_world: World) -> None:
    plan = FaultPlan(rate=1.0, max_consecutive=1, kinds=("truncated",))
    with SampleServer(tiny_world, faults=plan) as server:
        url = f"{server.urls['INATURALIST_API_URL']}/taxa"
        with pytest.raises(requests.exceptions.ChunkedEncodingError, match="IncompleteRead"):
            _get(url)
        full = _get(url)
        assert full.status_code == 200
        assert int(full.headers["Content-Length"]) == len(full.content)
    assert plan.counts["truncated"] == 1


def test_reset_is_a_connection_reset(tiny_world: World) -> None:
    plan = FaultPlan(rate=1.0, max_consecutive=2, kinds=("reset",))
    with SampleServer(tiny_world, faults=plan) as server:
        url = f"{server.urls['INATURALIST_API_URL']}/taxa"
        for _ in range(2):
            with pytest.raises(requests.exceptions.ConnectionError, match="reset by peer"):
                _get(url)
        assert _get(url).status_code == 200


def test_slow_fault_delays_the_answer(tiny_world: World) -> None:
    plan = FaultPlan(rate=1.0, max_consecutive=1, kinds=("slow",), slow_s=0.2)
    with SampleServer(tiny_world, faults=plan) as server:
        r = _get(f"{server.urls['INATURALIST_API_URL']}/taxa")
    assert r.status_code == 200 and r.elapsed >= dt.timedelta(seconds=0.2)
    assert plan.counts["slow"] == 1


def test_fault_levels() -> None:
    assert FaultPlan.named("none").decide("/x") is None
    light, heavy = FaultPlan.named("light"), FaultPlan.named("heavy")
    assert 0 < light.rate < heavy.rate and light.max_consecutive < heavy.max_consecutive
    with pytest.raises(ValueError, match="unknown fault level"):
        FaultPlan.named("apocalyptic")
