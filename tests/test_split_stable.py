"""Stable splits (issue 23): surviving items keep their side across builds, unseen species stay
unseen, new items fill each seen species' test quota, duplicate groups are one unit."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from release_helpers import KEY, base_corpus, make_items, quiet, write_manifests
from rich.console import Console
from typer.testing import CliRunner

from biovita_data.app.cli import app
from biovita_data.core import layout
from biovita_data.core.schemas import DUPLICATES
from biovita_data.core.tables import write_table
from biovita_data.curate.split import split

FRACTION = 0.1


def assignment(out: Path) -> pl.DataFrame:
    frames = [pl.read_parquet(layout.media_manifest_path(out, m)) for m in ("audio", "image")]
    return pl.concat(f.select(*KEY, "species_id", "observation_id", "split") for f in frames)


def rebuild(out: Path, items: pl.DataFrame, **kw) -> pl.DataFrame:
    """A new build in the same OUT: manifests rewritten (split null, as align does), split again."""
    write_manifests(out, items)
    split(out, console=quiet(), **kw)
    return assignment(out)


def quota(n: int) -> int:
    return 0 if n < 2 else max(1, int(np.floor(n * FRACTION + 0.5)))


def check_test_shares(df: pl.DataFrame) -> None:
    """Every seen species' test units (observation groups) within 1 of round(units x fraction)."""
    unit = pl.coalesce(pl.col("observation_id").cast(pl.String), pl.col("record_id"))
    units = df.filter(pl.col("split") != "unseen").with_columns(
        _u=pl.format("{}:{}", "source", unit)
    )
    per = units.group_by("modality", "species_id").agg(
        n=pl.col("_u").n_unique(), test=pl.col("_u").filter(pl.col("split") == "test").n_unique()
    )
    for m, sp, n, test in per.iter_rows():
        assert abs(test - quota(n)) <= 1, (m, sp, n, test, quota(n))


def evolve(v1: pl.DataFrame, withdraw: float, add: float, seed: int) -> pl.DataFrame:
    """v1 minus a share of its items (at random), plus new items of existing species (seen and
    unseen) and of a few new species."""
    rng = np.random.default_rng(seed)
    keep = v1.filter(pl.Series(rng.random(v1.height) >= withdraw))
    species = v1["species_id"].unique().sort().to_list()
    old = make_items(rng, species, 9 * 10**8, int(v1.height * add * 0.9))
    new_species = [5000, 5001, 5002, 5003]
    new = make_items(rng, new_species, 9 * 10**8 + 10**7, int(v1.height * add * 0.1) + 8)
    return pl.concat([keep, old, new])


@pytest.fixture(scope="module")
def corpus() -> pl.DataFrame:
    return base_corpus()


@pytest.mark.parametrize(("withdraw", "add"), [(0.05, 0.10), (0.05, 0.50)])
def test_survivors_keep_their_side(
    corpus: pl.DataFrame, tmp_path: Path, withdraw: float, add: float
) -> None:
    out = tmp_path / "out"
    v1 = rebuild(out, corpus)
    assert v1["split"].null_count() == 0 and set(v1["split"]) == {"train", "test", "unseen"}
    check_test_shares(v1)
    v2_items = evolve(corpus, withdraw, add, seed=1)
    log = io.StringIO()
    write_manifests(out, v2_items)
    result = split(out, console=Console(file=log, width=300))
    v2 = assignment(out)
    both = v1.join(v2, on=KEY, suffix="_2")
    assert both.height > 0.9 * (1 - withdraw) * v1.height
    assert both.filter(pl.col("split") != pl.col("split_2")).height == 0  # issue 23's target
    assert result.moved == {} and result.kept == both.height
    assert result.new == v2.height - both.height
    assert f"kept {both.height} items where they were" in log.getvalue()
    # unseen species stay unseen, new items included; the others' test shares hold
    unseen = set(v1.filter(pl.col("split") == "unseen")["species_id"])
    assert set(v2.filter(pl.col("species_id").is_in(list(unseen)))["split"]) == {"unseen"}
    grew = v2.filter(pl.col("species_id").is_in(list(unseen))).group_by("species_id").len()
    assert grew["len"].max() > 2  # some crossed the threshold and stayed unseen all the same
    check_test_shares(v2)
    # new species: the threshold rule
    species = pl.read_parquet(layout.species_path(out))
    fresh = species.filter(pl.col("species_id") >= 5000)
    for n_audio, group in fresh.select("n_audio", "split_group").iter_rows():
        assert group == ("unseen" if n_audio <= 2 else "seen")
    # the kept assignment: every item, present now or not
    kept = pl.read_parquet(layout.assignment_path(out))
    assert kept.height == v2.height + v1.join(v2, on=KEY, how="anti").height
    assert kept.filter(~pl.col("present")).height == v1.height - both.height


def test_withdrawn_item_comes_back_to_its_side(corpus: pl.DataFrame, tmp_path: Path) -> None:
    out = tmp_path / "out"
    v1 = rebuild(out, corpus)
    gone = v1.filter(pl.col("split") == "test").head(5)
    rebuild(out, corpus.join(gone, on=KEY, how="anti"))
    v3 = rebuild(out, corpus)
    assert v3.join(v1, on=KEY).filter(pl.col("split") != pl.col("split_right")).height == 0


def test_independent_of_row_order_and_other_species(corpus: pl.DataFrame, tmp_path: Path) -> None:
    a = rebuild(tmp_path / "a", corpus)
    write_manifests(tmp_path / "b", corpus, order_seed=3)
    split(tmp_path / "b", console=quiet())
    b = assignment(tmp_path / "b")
    assert a.sort(KEY).equals(b.sort(KEY))
    # a fresh split of a corpus with other species added places the first ones the same way
    others = make_items(np.random.default_rng(5), [7000, 7001, 7002], 8 * 10**8, 300)
    c = rebuild(tmp_path / "c", pl.concat([others, corpus]))
    assert a.join(c, on=KEY).filter(pl.col("split") != pl.col("split_right")).height == 0


def test_rerun_is_byte_identical_and_redraw_says_so(corpus: pl.DataFrame, tmp_path: Path) -> None:
    out = tmp_path / "out"
    rebuild(out, corpus)
    before = layout.media_manifest_path(out, "audio").read_bytes()
    split(out, seed=1, console=quiet())  # another seed keeps what exists
    assert layout.media_manifest_path(out, "audio").read_bytes() == before
    log = io.StringIO()
    result = split(out, seed=1, redraw=True, console=Console(file=log, width=300))
    assert result.previous == "redraw" and result.moved["redraw"] > 0
    assert "--redraw: every item drawn afresh" in log.getvalue()
    assert layout.media_manifest_path(out, "audio").read_bytes() != before
    with pytest.raises(ValueError, match="exclude each other"):
        split(out, redraw=True, previous=out, console=quiet())


def test_previous_out(corpus: pl.DataFrame, tmp_path: Path) -> None:
    """--previous OLD_OUT: a new build folder starts from an old one's assignment."""
    old = tmp_path / "old"
    v1 = rebuild(old, corpus)
    new = tmp_path / "new"
    v2_items = evolve(corpus, 0.05, 0.1, seed=2)
    write_manifests(new, v2_items)
    result = split(new, previous=old, console=quiet())
    v2 = assignment(new)
    assert result.previous == str(layout.assignment_path(old))
    assert v1.join(v2, on=KEY).filter(pl.col("split") != pl.col("split_right")).height == 0
    # an old folder without assignment.parquet: its manifests' split column
    layout.assignment_path(old).unlink()
    shutil.rmtree(new)
    write_manifests(new, v2_items)
    assert split(new, previous=old, console=quiet()).moved == {}
    with pytest.raises(FileNotFoundError, match="--previous"):
        split(new, previous=tmp_path / "nothing", console=quiet())


def test_species_changes_move_only_as_far_as_required(corpus: pl.DataFrame, tmp_path: Path) -> None:
    out = tmp_path / "out"
    v1 = rebuild(out, corpus)
    per = v1.group_by("species_id").agg(pl.col("split").first(), n=pl.len()).sort("species_id")
    seen = per.filter(pl.col("split") != "unseen").sort("n", descending=True)["species_id"]
    unseen = per.filter(pl.col("split") == "unseen")["species_id"]
    big, lumped_into, reid_to = seen[0], seen[1], unseen[0]
    lumped = unseen[1]  # an unseen species lumped into a seen one: its items must move
    reid = v1.filter((pl.col("species_id") == big) & (pl.col("split") == "train")).head(1)
    items = corpus.with_columns(
        species_id=pl.when(pl.col("species_id") == lumped)
        .then(pl.lit(lumped_into))
        .when(pl.col("record_id").is_in(reid["record_id"].implode()))
        .then(pl.lit(reid_to))
        .otherwise(pl.col("species_id"))
    )
    write_manifests(out, items)
    result = split(out, console=quiet())
    v2 = assignment(out)
    moved = v1.join(v2, on=KEY).filter(pl.col("split") != pl.col("split_right"))
    n_lumped = v1.filter(pl.col("species_id") == lumped).height
    assert moved.height == n_lumped + 1 == result.moved["species_changed"]
    assert set(moved["species_id_right"]) == {lumped_into, reid_to}
    assert set(v2.filter(pl.col("species_id") == reid_to)["split"]) == {"unseen"}
    assert set(v2.filter(pl.col("species_id") == lumped_into)["split"]) <= {"train", "test"}


def test_duplicate_groups_are_one_unit(corpus: pl.DataFrame, tmp_path: Path) -> None:
    """Exact/near groups land on one side (a new group across sides is merged to the side most
    of its members had: counted as unit_merged); metadata groups bind nothing."""
    out = tmp_path / "out"
    v1 = rebuild(out, corpus)
    seen_audio = v1.filter((pl.col("modality") == "audio") & (pl.col("split") != "unseen"))
    train = seen_audio.filter(pl.col("split") == "train").sort("record_id")
    test = seen_audio.filter(pl.col("split") == "test").sort("record_id")
    near = pl.concat([train.head(2), test.head(1)]).with_columns(
        group_id=pl.lit("g-near"), kind=pl.lit("near")
    )
    meta = pl.concat([train[2:3], test[1:2]]).with_columns(
        group_id=pl.lit("g-meta"), kind=pl.lit("metadata")
    )
    dups = pl.concat([near, meta]).select(
        "group_id", "modality", "source", "record_id", "kind",
        score=pl.lit(1.0), evidence=pl.lit("test"), copy_of=pl.lit(None, pl.String),
    )  # fmt: skip
    write_table(dups.to_arrow().cast(DUPLICATES), layout.duplicates_path(out))
    result = split(out, console=quiet())
    v2 = assignment(out)
    assert set(v2.join(near, on=KEY)["split"]) == {"train"}  # two of three were train
    assert set(v2.join(meta, on=KEY)["split"]) == {"train", "test"}
    assert result.moved == {"unit_merged": 1}
    # a fresh split draws the group as one unit
    fresh = tmp_path / "fresh"
    write_manifests(fresh, corpus)
    shutil.copyfile(layout.duplicates_path(out), layout.duplicates_path(fresh))
    split(fresh, console=quiet())
    assert assignment(fresh).join(near, on=KEY)["split"].n_unique() == 1


def test_cli_split_reports_and_redraws(corpus: pl.DataFrame, tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_manifests(out, corpus)
    runner = CliRunner()
    first = runner.invoke(app, ["split", "--out", str(out)])
    assert first.exit_code == 0, first.output
    assert "first assignment" in first.output
    again = runner.invoke(app, ["split", "--out", str(out)])
    assert again.exit_code == 0 and f"kept {corpus.height} items where they were" in again.output
    redraw = runner.invoke(app, ["split", "--out", str(out), "--redraw", "--seed", "4"])
    assert redraw.exit_code == 0 and "--redraw: every item drawn afresh" in redraw.output
    bad = runner.invoke(app, ["split", "--out", str(out), "--previous", str(tmp_path / "none")])
    assert bad.exit_code == 2 and "--previous" in bad.output and "Traceback" not in bad.output
