"""The sample world by epoch: deterministic evolution, its ground truth, the services' filters."""

from __future__ import annotations

import datetime as dt

import httpx
import pytest
from typer.testing import CliRunner

from biovita_data.app.cli import app
from biovita_data.sample import gbif
from biovita_data.sample.responses import open_data_table
from biovita_data.sample.server import DEFAULT_XC_KEY, SampleServer
from biovita_data.sample.world import SNAPSHOT, World, is_allowed


@pytest.fixture(scope="module")
def world1() -> World:
    return World("tiny", 0, epoch=1)


def test_epoch_zero_is_todays_world(tiny_world: World) -> None:
    zero = World("tiny", 0, epoch=0)
    assert zero.recordings == tiny_world.recordings and zero.photos == tiny_world.photos
    assert zero.observations == tiny_world.observations and zero.as_of == SNAPSHOT
    assert zero.evolution == [] and zero.deleted_observations == []
    for table in ("observations", "photos", "taxa"):
        assert open_data_table(zero, table, zero.as_of) == open_data_table(
            tiny_world, table, SNAPSHOT
        )
    with pytest.raises(ValueError, match="epoch"):
        World("tiny", 0, epoch=-1)


def test_evolution_is_deterministic_and_cumulative(world1: World) -> None:
    again = World("tiny", 0, epoch=1)
    assert again.recordings == world1.recordings and again.evolution == world1.evolution
    two = World("tiny", 0, epoch=2)
    assert two.evolution[0] == world1.evolution[0] and len(two.evolution) == 2
    assert two.as_of == SNAPSHOT + dt.timedelta(days=60)
    assert set(two.changes(0, 2)["added"]) >= set(two.changes(1, 2)["added"])


def test_ground_truth_of_epoch_one(tiny_world: World, world1: World) -> None:
    truth = world1.changes(0, 1)
    log = truth["log"][0]
    reasons = set(truth["removed"].values())
    assert reasons == {"withdrawn", "licence"}
    # every removal, addition and change is explained by the log
    new = [world1.recording_by_id[("xeno-canto", i)] for i in log["xc_added"]]
    xc_added = {("xeno-canto", "audio", str(r.id)) for r in new}
    kept = {("xeno-canto", "audio", str(r.id)) for r in new if is_allowed(r.license)}
    assert kept and kept == xc_added & set(truth["added"])
    gone = {("xeno-canto", "audio", str(i)) for i in log["xc_withdrawn"]}
    assert gone <= set(truth["removed"])
    for rid, lic in log["xc_relicensed"].items():
        key = ("xeno-canto", "audio", str(rid))
        assert (truth["removed"].get(key) == "licence") is (not is_allowed(lic))
        assert key in truth["removed"] or key in truth["changed"]
    deleted = set(log["obs_deleted"])
    assert deleted == {i for i, _ in world1.deleted_observations}
    assert not deleted & set(world1.observation_by_id)
    # the split's new species, the lumped name a synonym, re-identifications with new names
    split, lump = log["split"], log["lump"]
    assert (
        world1.species[-1].name == split["new"]
        and len(world1.species) == len(tiny_world.species) + 1
    )
    assert world1.taxonomy.synonyms[lump["from"]] == world1.taxonomy.by_name(lump["into"]).id
    assert not next(t for t in world1.taxonomy.taxa.values() if t.name == lump["from"]).active
    assert all(old != new for old, new in truth["reidentified"].values())
    # the rare species now has recordings enough to pass the unseen threshold (2)
    name = log["crossed_unseen"]
    idx = next(s.index for s in world1.species if s.name == name)
    audio = [k for k in world1.kept_records() if k[1] == "audio"]
    count = sum(1 for k in audio if world1.recording_by_id[(k[0], int(k[2]))].species_index == idx)
    assert count > 2
    # every change is dated inside the epoch
    for r in world1.recordings:
        if r.source == "xeno-canto" and r.id in log["xc_added"]:
            assert SNAPSHOT < r.uploaded <= world1.as_of
    for oid in log["obs_added"]:
        o = world1.observation_by_id[oid]
        assert SNAPSHOT < o.created_at.date() <= world1.as_of


def test_services_filter_by_modification_time(world1: World) -> None:
    log = world1.evolution[0]
    with SampleServer(world1, xc_key=DEFAULT_XC_KEY) as server:
        root, c = server.root, httpx.Client()
        got: set[int] = set()
        for grp in ("birds", "frogs", "bats", "grasshoppers", '"land mammals"'):
            r = c.get(
                f"{root}/xeno-canto/api/3/recordings",
                params={"query": f"grp:{grp} since:{SNAPSHOT + dt.timedelta(days=1)}",
                        "key": DEFAULT_XC_KEY, "per_page": 500},
            ).json()  # fmt: skip
            got |= {int(x["id"]) for x in r["recordings"]}
        assert got == set(log["xc_added"])
        since = f"{SNAPSHOT}T00:00:00Z"
        r = c.get(f"{root}/inaturalist/v1/observations/deleted", params={"since": since}).json()
        assert set(r["results"]) == set(log["obs_deleted"])
        r = c.get(
            f"{root}/inaturalist/v1/observations",
            params={"updated_since": since, "per_page": 200, "only_id": "true"},
        ).json()
        updated = {x["id"] for x in r["results"]}
        assert set(log["obs_added"]) | set(log["reidentified"]) | set(log["coordinates"]) <= updated
        assert all(set(x) == {"id"} for x in r["results"])
        assert c.get(f"{root}/inaturalist/v1/observations/deleted").status_code == 422
        qs = {"lastInterpreted": [f"{SNAPSHOT},*"], "limit": ["300"]}
        occ = gbif.search(world1, root, world1.as_of, qs, 100_000)
        keys = {o["key"] for o in occ["results"]}
        relicensed = {gbif.GBIF_ID_BASE[gbif.XENO_CANTO] + rid for rid in log["xc_relicensed"]}
        assert relicensed <= keys


def test_sample_serve_rejects_a_negative_epoch() -> None:
    result = CliRunner().invoke(app, ["sample", "serve", "--epoch", "-1"])
    assert result.exit_code == 2 and "epoch" in result.output.lower()
